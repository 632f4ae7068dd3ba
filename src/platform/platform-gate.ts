// The Gate the HTTP layer calls on every API request: who is asking (keys), may they (allow-list,
// balance, rate limits), and what did it cost (ledger, balance, token-limit settle).
import { randomUUID, timingSafeEqual } from 'node:crypto';
import { InferaError } from '../errors/index.ts';
import type { ConsumeResult, CounterCheck, CounterStore, KeyRecord, LedgerRow, PlatformStore } from '../storage/types.ts';
import { PlatformAdmin } from './admin.ts';
import type { Limits, ModelKind, PlatformConfig } from './config.ts';
import type { Admission, AdmissionRequest, Endpoint, Gate, GateHealth, Principal, UsageReport, WorstCase } from './gate.ts';
import { hashSecret, isLoopback, sameHash } from './keys.ts';
import { LedgerWriter, type LedgerWriteObserver } from './ledger.ts';
import { LimitPolicy, limitRules, planChecks, rateLimitError, rateLimitHeaders, type LimitRule, type PlannedCheck } from './limits.ts';
import { costMicro, formatMicro, isPriced, microPrice, type MicroPrice } from './pricing.ts';

export interface PlatformLogger {
  info(obj: object | string, msg?: string): void;
  warn(obj: object | string, msg?: string): void;
  error(obj: object | string, msg?: string): void;
}

export interface PlatformGateOptions {
  store: PlatformStore;
  counters: CounterStore;
  config: PlatformConfig;
  logger: PlatformLogger;
  /** Bearer secrets from config (server.apiKeys) and INFERA_API_KEY: account "default". */
  staticKeys: string[];
  /** What to do when the counter store (Redis) fails. */
  counterFailure: 'open' | 'closed';
  now?: () => number;
}

const endpointKind: Partial<Record<Endpoint, ModelKind>> = {
  chat: 'chat',
  // Text completion runs on chat models: their prices, limits and allow-lists apply.
  completions: 'chat',
  embeddings: 'embedding',
  rerank: 'reranker',
  images: 'text-to-image',
};

const unauthorized = (message: string) =>
  new InferaError({ status: 401, message, code: 'invalid_api_key', siliconflowCode: 20001, headers: { 'www-authenticate': 'Bearer' } });
// The two refusals a scan of keys meets on every request, made once (an InferaError costs ~1-2 µs;
// nothing changes an error once made).
const INVALID_KEY = unauthorized('Invalid API key.');
const MISSING_KEY = unauthorized('Missing API key: send "Authorization: Bearer <key>".');

/** A ledger note is a sentence or two; an upstream's error page quoted whole would bloat every row. */
const NOTE_MAX = 500;

/** Keys from the config file and INFERA_API_KEY: one principal, shared (nothing mutates a principal). */
const STATIC_PRINCIPAL: Principal = Object.freeze({ accountId: 'default', keyId: 'config', keyName: 'config' });

const noop: Admission = { headers: {}, resize: async () => {}, settle: async () => {} };

/** Unknown key hashes remembered at most (64 hex characters and a number each: ~1.5 MB). */
const UNKNOWN_KEYS_MAX = 10_000;
/** Bearer tokens whose digest is remembered at most (a token, its hash and a flag each: ~2 MB). */
const TOKENS_MAX = 10_000;

/** What a bearer token is, whatever the store says of it: its sha256 (hex) and whether it is a static key. */
interface TokenDigest {
  hash: string;
  isStatic: boolean;
}

interface CachedKey {
  record: KeyRecord;
  principal: Principal;
  fetchedAt: number;
  /** A background read of the key is out (or failed: the entry then just expires). */
  refreshing: boolean;
}

export class PlatformGate implements Gate {
  readonly admin: PlatformAdmin;
  readonly ledger: LedgerWriter;
  private readonly store: PlatformStore;
  private readonly counters: CounterStore;
  private readonly config: PlatformConfig;
  private readonly logger: PlatformLogger;
  private readonly staticHashes: string[];
  /** The static hashes as bytes, for timingSafeEqual without decoding them on every request. */
  private readonly staticDigests: Buffer[];
  private readonly policy: LimitPolicy;
  private readonly prices: Map<string, MicroPrice>;
  private readonly now: () => number;
  private readonly keyCacheMs: number;
  private readonly keyCache = new Map<string, CachedKey>();
  /** Bumped by invalidate(): a background key read that began before it does not put its answer back. */
  private keyGeneration = 0;
  /**
   * Hashes the store did not know, with when it said so: a client retrying a wrong key (or a scan of
   * guessed ones) costs a map lookup instead of a store query per request (the 401 cost 1.5× a served
   * request). Correct across processes and replicas: a key's secret is generated when it is created
   * (PlatformAdmin.createKey), so no hash seen here before can become a key later unless its secret
   * was guessed; and, as for revokes, an entry lives keyCacheSeconds at most. A key created in this
   * process clears it all the same (invalidate). Bounded: past UNKNOWN_KEYS_MAX the oldest goes.
   */
  private readonly unknownKeys = new Map<string, number>();
  /**
   * Each recent bearer token's digest, so that a key sent again (nearly every request) costs a map
   * lookup instead of a sha256 and a constant-time compare with every static key (~2.5 µs of the
   * ~20 µs the HTTP layer spends on a request). Only what is fixed for the life of the process is kept:
   * the hash is a function of the token, and the static keys come from the config. Whether a stored
   * key exists, is revoked or expired stays with keyCache and unknownKeys and their keyCacheSeconds,
   * so revocation (here or on another replica) is seen exactly as before. The lookup's time depends
   * on the token's bucket in the map (string hashes are seeded per process), not on how much of a
   * stored token it matches. Bounded: past TOKENS_MAX the oldest goes.
   */
  private readonly tokens = new Map<string, TokenDigest>();
  private readonly keyRuleCache = new WeakMap<object, LimitRule[]>();
  /**
   * Each account's balance as this process's last reservation left it (the store's answer to the
   * take), for the pre-check of a deferred reservation only: when it covers the estimate, admission
   * skips reading the balance (a SQLite read transaction of its own, ~3 % of a proxied request's CPU).
   * The take that follows in resize() is conditional and against the store, so a stale entry can never
   * overdraw; one that is too low (a refund or top-up since) is not trusted to refuse: the store is read.
   * Too high can only be another process's spending since: that request is then refused by resize()
   * instead, as one that loses a race for a balance already is. Kept keyCacheSeconds at most.
   */
  private readonly balanceSeen = new Map<string, { micro: number; at: number }>();
  /** This process in the reservations table: its heartbeat keeps its reservations from being reconciled. */
  readonly instanceId = `inst_${randomUUID()}`;
  /** The first heartbeat (and startup reconciliation); reservations wait for it. */
  private readonly ready: Promise<void>;
  /** `ready` fulfilled: a priced request then need not wait a microtask turn on it (it rejected: still awaited, and throws). */
  private isReady = false;
  private readonly heartbeatTimer: NodeJS.Timeout;
  private storeHasKeys: { value: boolean; fetchedAt: number; refreshing: boolean } | undefined;
  private countersDown = false;
  /** The last heartbeat failed: the durable store did not answer (readiness reads this, no query of its own). */
  private storeDown = false;

  constructor(private readonly options: PlatformGateOptions) {
    this.store = options.store;
    this.counters = options.counters;
    this.config = options.config;
    this.logger = options.logger;
    this.now = options.now ?? Date.now;
    this.keyCacheMs = options.config.keyCacheSeconds * 1000;
    this.staticHashes = [...new Set(options.staticKeys.filter(Boolean))].map(hashSecret);
    this.staticDigests = this.staticHashes.map((hash) => Buffer.from(hash, 'hex'));
    this.policy = new LimitPolicy(options.config);
    this.prices = new Map(Object.entries(options.config.pricing).map(([id, p]) => [id.toLowerCase(), microPrice(p)]));
    this.ledger = new LedgerWriter(options.store, options.logger, {
      maxBatch: options.config.ledger.maxBatch,
      concurrency: options.store.kind === 'postgres' ? options.config.ledger.postgresWriters : 1,
    });
    this.admin = new PlatformAdmin(options.store, () => this.invalidate());
    const { heartbeatSeconds } = options.config.reservations;
    this.ready = this.beat();
    this.ready.then(
      () => {
        this.isReady = true;
      },
      () => {},
    );
    this.heartbeatTimer = setInterval(() => void this.beat().catch(() => {}), heartbeatSeconds * 1000);
    this.heartbeatTimer.unref();
  }

  /**
   * Heartbeat, then give back the reservations of servers that stopped beating (killed mid-request):
   * their requests never settled, so the money they held returns to the accounts in full.
   */
  private async beat(): Promise<void> {
    const now = this.now();
    try {
      try {
        await this.store.heartbeat(this.instanceId, now);
        this.storeDown = false;
      } catch (error) {
        this.storeDown = true;
        throw error;
      }
      const released = await this.store.releaseStale(now - this.config.reservations.staleAfterSeconds * 1000);
      if (released.reservations > 0)
        this.logger.warn(
          { reservations: released.reservations, amount: formatMicro(released.micro) },
          'gave back the balance reservations of a server that stopped without settling them (killed mid-request)',
        );
    } catch (error) {
      this.logger.warn({ err: error }, 'reservation heartbeat failed; retrying at the next beat');
      throw error;
    }
  }

  health(): GateHealth {
    return {
      store: { kind: this.store.kind, up: !this.storeDown },
      counters: { kind: this.counters.kind, up: !this.countersDown, failure: this.options.counterFailure },
    };
  }

  observeLedger(observer: LedgerWriteObserver): void {
    this.ledger.onWrite = observer;
  }

  /** Forget cached keys and balances (after a key or balance change in this process). Reservations always take from the store. */
  invalidate(): void {
    this.keyGeneration++;
    this.keyCache.clear();
    this.balanceSeen.clear();
    this.unknownKeys.clear();
    this.storeHasKeys = undefined;
  }

  /** Whether any key exists, when memory knows (static keys, or the store's answer still fresh); else undefined. */
  private anyKeyKnown(now: number): boolean | undefined {
    if (this.staticHashes.length > 0) return true;
    // Once a key exists the answer cannot flip back (revoked keys still count), so only "no" is re-checked.
    const known = this.storeHasKeys;
    if (!known) return undefined;
    if (known.value) return true;
    const age = now - known.fetchedAt;
    if (age >= this.keyCacheMs) return undefined;
    // "No key yet" is read again in the background at half its life, as a key in use is (refreshKey).
    if (!known.refreshing && age >= this.keyCacheMs / 2) this.refreshAnyKey(known, now);
    return false;
  }

  private refreshAnyKey(known: NonNullable<PlatformGate['storeHasKeys']>, now: number): void {
    known.refreshing = true;
    const generation = this.keyGeneration;
    this.store.listKeys().then(
      (keys) => {
        if (this.keyGeneration === generation && this.storeHasKeys === known) this.storeHasKeys = { value: keys.length > 0, fetchedAt: now, refreshing: false };
      },
      () => {},
    );
  }

  private async anyKeyExists(): Promise<boolean> {
    const now = this.now();
    const known = this.anyKeyKnown(now);
    if (known !== undefined) return known;
    const value = (await this.store.listKeys()).length > 0;
    this.storeHasKeys = { value, fetchedAt: now, refreshing: false };
    return value;
  }

  /**
   * authenticate() answered from memory (static keys, the key cache, the unknown-key cache): the
   * principal, or the 401 it would throw; undefined when the store must be asked (then call authenticate).
   * The HTTP layer's auth hook runs on every API request: this spares it a promise chain, and a known
   * key or a retried wrong one never needs more.
   */
  authenticateSync(secret: string | undefined, remoteAddress: string): Principal | InferaError | undefined {
    const now = this.now();
    const anyKey = this.anyKeyKnown(now);
    if (anyKey === undefined) return undefined;
    if (!anyKey) return this.keyless(remoteAddress);
    const token = secret?.trim();
    if (!token) return MISSING_KEY;
    const { hash, isStatic } = this.digest(token);
    if (isStatic) return STATIC_PRINCIPAL;
    const cached = this.keyCache.get(hash);
    if (!cached || now - cached.fetchedAt >= this.keyCacheMs) {
      const unknownAt = this.unknownKeys.get(hash);
      if (unknownAt !== undefined && now - unknownAt < this.keyCacheMs) return INVALID_KEY;
      return undefined;
    }
    if (!cached.refreshing && now - cached.fetchedAt >= this.keyCacheMs / 2) this.refreshKey(hash, cached, now);
    return this.usable(cached, now);
  }

  /**
   * A key in use is read again in the background once its entry is half keyCacheSeconds old, so it never
   * expires while requests keep coming. Expired, the next request found no key in memory: the HTTP layer
   * then sent it through Fastify's route (an AbortSignal, the async key read), once per key every
   * keyCacheSeconds, and those other shapes in the shared serving and upstream code made V8 throw away
   * and recompile the proxied path's optimised code each time (docs/BENCHMARKS.md, gw9). Revocation is
   * seen as before or sooner: no request is judged on a read older than keyCacheSeconds (the entry's time
   * is when its read began), and a key deleted meanwhile leaves the cache for the store's 401.
   */
  private refreshKey(hash: string, cached: CachedKey, now: number): void {
    cached.refreshing = true;
    const generation = this.keyGeneration;
    this.store.findKeyByHash(hash).then(
      (record) => {
        if (this.keyGeneration !== generation || this.keyCache.get(hash) !== cached) return;
        if (!record || !sameHash(record.hash, hash)) this.keyCache.delete(hash);
        else this.keyCache.set(hash, this.cachedKey(record, now));
      },
      // The store did not answer: the entry expires when it would have, and the request after asks the store.
      () => {},
    );
  }

  private cachedKey(record: KeyRecord, fetchedAt: number): CachedKey {
    return {
      record,
      fetchedAt,
      refreshing: false,
      principal: {
        accountId: record.accountId,
        keyId: record.id,
        keyName: record.name,
        ...(record.models ? { allowedModels: record.models } : {}),
        ...(record.limits ? { limits: record.limits as Limits } : {}),
      },
    };
  }

  async authenticate(secret: string | undefined, remoteAddress: string): Promise<Principal> {
    const known = this.authenticateSync(secret, remoteAddress);
    if (known instanceof InferaError) throw known;
    if (known) return known;
    if (!(await this.anyKeyExists())) {
      const keyless = this.keyless(remoteAddress);
      if (keyless instanceof InferaError) throw keyless;
      return keyless;
    }
    const token = secret?.trim();
    if (!token) throw MISSING_KEY;
    const { hash, isStatic } = this.digest(token);
    if (isStatic) return STATIC_PRINCIPAL;

    const now = this.now();
    let cached = this.keyCache.get(hash);
    if (!cached || now - cached.fetchedAt >= this.keyCacheMs) {
      const unknownAt = this.unknownKeys.get(hash);
      if (unknownAt !== undefined && now - unknownAt < this.keyCacheMs) throw INVALID_KEY;
      const record = await this.store.findKeyByHash(hash);
      if (!record || !sameHash(record.hash, hash)) {
        this.keyCache.delete(hash);
        this.unknownKeys.delete(hash);
        if (this.unknownKeys.size >= UNKNOWN_KEYS_MAX) this.unknownKeys.delete(this.unknownKeys.keys().next().value!);
        this.unknownKeys.set(hash, now);
        throw INVALID_KEY;
      }
      this.unknownKeys.delete(hash);
      cached = this.cachedKey(record, now);
      if (this.keyCache.size > 10_000) this.keyCache.clear();
      this.keyCache.set(hash, cached);
    }
    const usable = this.usable(cached, now);
    if (usable instanceof InferaError) throw usable;
    return usable;
  }

  /** No key anywhere: a fresh local install just works, but only for callers on this machine. */
  private keyless(remoteAddress: string): Principal | InferaError {
    if (isLoopback(remoteAddress)) return { accountId: 'anonymous', keyId: 'anonymous', keyName: 'anonymous' };
    return unauthorized('This server has no API keys yet and only serves loopback callers. Create one with `infera keys create --name <name>`.');
  }

  private digest(token: string): TokenDigest {
    let known = this.tokens.get(token);
    if (known === undefined) {
      const hash = hashSecret(token);
      known = { hash, isStatic: this.isStaticKey(hash) };
      if (this.tokens.size >= TOKENS_MAX) this.tokens.delete(this.tokens.keys().next().value!);
      this.tokens.set(token, known);
    }
    return known;
  }

  private isStaticKey(hash: string): boolean {
    if (this.staticDigests.length === 0) return false;
    const digest = Buffer.from(hash, 'hex');
    let match = false;
    // Every static hash is compared (no early exit) so timing does not tell which one matched.
    for (const candidate of this.staticDigests) match = (digest.length === candidate.length && timingSafeEqual(digest, candidate)) || match;
    return match;
  }

  /** The cached key's principal, or the 401 for a key revoked, unreadable or expired. */
  private usable(cached: CachedKey, now: number): Principal | InferaError {
    if (cached.record.disabled) return unauthorized(`API key "${cached.record.name}" has been revoked.`);
    // A row that cannot be read as written (an expiry out of range, a broken allow-list) grants nothing.
    if (cached.record.invalid)
      return unauthorized(`API key "${cached.record.name}" has an invalid stored record (${cached.record.invalid.join('; ')}); create a new key.`);
    if (cached.record.expiresAt !== null && cached.record.expiresAt <= now)
      return unauthorized(`API key "${cached.record.name}" expired at ${new Date(cached.record.expiresAt).toISOString()}.`);
    return cached.principal;
  }

  private keyRules(principal: Principal): LimitRule[] {
    // Keyed by the limits object, which lives as long as the cached principal that carries it.
    let rules = this.keyRuleCache.get(principal.limits!);
    if (!rules) {
      rules = limitRules(principal.limits as Limits, `k:${principal.keyId}`, `API key "${principal.keyName}"`);
      this.keyRuleCache.set(principal.limits!, rules);
    }
    return rules;
  }

  precheck(principal: Principal, endpoint: Endpoint, requestId: string): Promise<void> | undefined {
    if (!principal.limits || !endpointKind[endpoint]) return undefined;
    const rules = this.keyRequestRules(principal);
    if (rules.length === 0) return undefined;
    const now = this.now();
    const checks = planChecks(rules, 0, 0, now);
    // A peek: amount 0 against limit − 1 fails exactly when admit()'s +1 would, and adds nothing.
    const peek = checks.map((check) => ({ ...check, amount: 0, limit: check.limit - 1 }));
    // In memory (the default without Redis) the peek is answered at once: a key within its limits (nearly
    // every request) costs no promise.
    if (this.counters.consumeSync) {
      const result = this.counters.consumeSync(peek);
      return result.ok ? undefined : this.refusePrecheck(principal, endpoint, requestId, checks, result, now);
    }
    return this.precheckRequests(principal, endpoint, requestId, checks, peek, now);
  }

  precheckPassesSync(principal: Principal, endpoint: Endpoint): boolean {
    if (!principal.limits || !endpointKind[endpoint]) return true;
    const rules = this.keyRequestRules(principal);
    if (rules.length === 0) return true;
    if (!this.counters.consumeSync) return false;
    const checks = planChecks(rules, 0, 0, this.now());
    return this.counters.consumeSync(checks.map((check) => ({ ...check, amount: 0, limit: check.limit - 1 }))).ok;
  }

  /** The key's request-rate rules (rpm, rph, rpd), cached with its rules. */
  private keyRequestRules(principal: Principal): LimitRule[] {
    let rules = this.keyRequestRuleCache.get(principal.limits!);
    if (!rules) {
      rules = this.keyRules(principal).filter((rule) => rule.measure === 'requests');
      this.keyRequestRuleCache.set(principal.limits!, rules);
    }
    return rules;
  }
  private readonly keyRequestRuleCache = new WeakMap<object, LimitRule[]>();

  private async precheckRequests(principal: Principal, endpoint: Endpoint, requestId: string, checks: PlannedCheck[], peek: CounterCheck[], now: number): Promise<void> {
    let result: ConsumeResult;
    try {
      result = await this.counters.consume(peek);
    } catch {
      return; // the counter store is down: admit() applies counterFailure (open or closed) with the body read
    }
    if (result.ok) return;
    return this.refusePrecheck(principal, endpoint, requestId, checks, result, now);
  }

  private async refusePrecheck(principal: Principal, endpoint: Endpoint, requestId: string, checks: PlannedCheck[], result: ConsumeResult, now: number): Promise<void> {
    const failed = checks[result.failed!]!;
    const error = rateLimitError(failed, result.values[result.failed!] ?? 0, rateLimitHeaders(checks, result.values, now), now);
    // Its ledger row like every refusal's; the model is not known before the body (empty).
    await this.recordRejection({ principal, model: '', endpoint, requestId, estimatedTokens: 0, images: 0 }, error);
    throw error;
  }

  private async recordRejection(request: AdmissionRequest, error: InferaError, reservationId?: string): Promise<void> {
    // Refused requests get their row too (status 403/429), durable before the refusal is sent, like
    // every other answer: a 429 a client saw is never missing from the ledger. Group commit keeps it cheap.
    await this.ledger
      .append(this.row(request, { promptTokens: 0, completionTokens: 0, reasoningTokens: 0, images: 0, documents: 0, status: error.status, outcome: 'error', latencyMs: 0 }, 0, reservationId))
      .catch((failure: unknown) => this.logger.error({ err: failure, requestId: request.requestId }, 'ledger row for a refused request could not be written'));
  }

  private row(request: AdmissionRequest, usage: UsageReport, cost: number, reservationId?: string): LedgerRow {
    // A literal, then the optional fields: properties after a spread in a literal are each defined
    // through V8's runtime (DefineKeyedOwnPropertyInLiteral), on every ledger row.
    const row: LedgerRow = {
      requestId: request.requestId,
      accountId: request.principal.accountId,
      keyId: request.principal.keyId,
      model: request.model,
      requestedModel: request.requestedModel ?? null,
      endpoint: request.endpoint,
      promptTokens: usage.promptTokens,
      completionTokens: usage.completionTokens,
      reasoningTokens: usage.reasoningTokens,
      images: usage.images,
      documents: usage.documents,
      latencyMs: Math.max(0, Math.round(usage.latencyMs)),
      status: usage.status,
      outcome: usage.outcome,
      costMicro: cost,
      createdAt: this.now(),
    };
    if (reservationId) row.reservationId = reservationId;
    if (usage.note) row.note = usage.note.slice(0, NOTE_MAX);
    return row;
  }

  /**
   * The balance as stored, for admit() when its last sight of it is older than keyCacheSeconds: at most once
   * per account and keyCacheSeconds, e.g. at the first request after a quiet spell. A method of its own, so
   * that admit()'s optimised code reads no property of the account record, an object made only here that
   * dies at once: optimised admit() was deoptimised at that read (`?.balanceMicro` after the await,
   * `Insufficient type feedback`: presumably its feedback cleared once a full collection found no such
   * object alive) in 1–2 of gateway-overhead's 3 one-connection windows, and then ran unoptimised for ~3,000
   * requests until V8 optimised it again (docs/BENCHMARKS.md, branch `gw11`). Run this rarely, V8 leaves
   * this method to the interpreter, where nothing is deoptimised.
   */
  private async storedBalance(accountId: string): Promise<number> {
    return (await this.store.getAccount(accountId))?.balanceMicro ?? 0;
  }

  private noteBalance(accountId: string, micro: number): void {
    if (this.keyCacheMs <= 0) return;
    // Bounded like the key cache: one entry per account that reserved within keyCacheSeconds, at most 10,000.
    if (this.balanceSeen.size >= 10_000 && !this.balanceSeen.has(accountId)) this.balanceSeen.clear();
    this.balanceSeen.set(accountId, { micro, at: this.now() });
  }

  /** The model's price, written under its canonical id or any alias (the canonical id wins). */
  private priceOf(request: AdmissionRequest): MicroPrice | undefined {
    const price = this.prices.get(request.model.toLowerCase());
    if (price || !request.aliases) return price;
    for (const alias of request.aliases) {
      const found = this.prices.get(alias.toLowerCase());
      if (found) return found;
    }
    return undefined;
  }

  private allowed(principal: Principal, request: AdmissionRequest): boolean {
    const names = new Set([request.model, ...(request.aliases ?? [])].map((name) => name.toLowerCase()));
    return principal.allowedModels!.some((m) => names.has(m.toLowerCase()));
  }

  private insufficient(request: AdmissionRequest, balance: number, amount: number, worst: WorstCase): InferaError {
    const { principal, model } = request;
    const parts = [
      worst.promptTokens ? `${worst.promptTokens} prompt tokens` : '',
      worst.completionTokens ? `${worst.completionTokens} completion tokens` : '',
      worst.images ? `${worst.images} images` : '',
      worst.documents ? `${worst.documents} documents` : '',
    ].filter(Boolean);
    const hint = request.endpoint === 'chat' || request.endpoint === 'completions' ? 'Lower max_tokens or n, or top up' : 'Top up';
    return new InferaError({
      status: 403,
      message:
        `Sorry, your account balance is insufficient: account "${principal.accountId}" has ${formatMicro(balance)} ` +
        `and this request may cost up to ${formatMicro(amount)} (model "${model}", at most ${parts.join(' + ') || 'nothing billable'}). ` +
        `${hint} with \`infera accounts topup ${principal.accountId} <amount>\`.`,
      code: 'insufficient_balance',
      siliconflowCode: 30001,
    });
  }

  async admit(request: AdmissionRequest): Promise<Admission> {
    const kind = endpointKind[request.endpoint];
    // /models and /user/info cost nothing and are not metered.
    if (!kind) return noop;
    const { principal, model } = request;

    if (principal.allowedModels && !this.allowed(principal, request)) {
      const error = new InferaError({
        status: 403,
        message:
          principal.allowedModels.length === 0
            ? `API key "${principal.keyName}" may not use any model (its allow-list is empty).`
            : `API key "${principal.keyName}" may not use model "${request.requestedModel ?? model}" (allowed: ${principal.allowedModels.join(', ')}).`,
        param: 'model',
        code: 'model_not_allowed',
        siliconflowCode: 30003,
      });
      await this.recordRejection(request, error);
      throw error;
    }

    // Money first: the worst case is set aside atomically (across replicas), so concurrent requests can
    // never spend more than the balance holds; settle() gives back what was not used.
    const price = this.priceOf(request);
    const priced = isPriced(price);
    // deferred: nothing taken yet (deferReservation); resize() takes it, and until then the estimate
    // checked at admission is the most the request can be charged.
    let reservation: { id: string; heldMicro: number; deferred?: { estimateMicro: number } } | undefined;
    if (priced && request.deferReservation && this.store.kind === 'sqlite') {
      const worst = request.worstCase ?? { promptTokens: request.estimatedTokens, completionTokens: 0, images: request.images, documents: 0 };
      const amount = Math.max(1, costMicro(price, worst, request.endpoint));
      if (!this.isReady) await this.ready;
      const seen = this.balanceSeen.get(principal.accountId);
      const balance = seen && seen.micro >= amount && this.now() - seen.at < this.keyCacheMs ? seen.micro : await this.storedBalance(principal.accountId);
      if (balance < amount) {
        const error = this.insufficient(request, balance, amount, worst);
        await this.recordRejection(request, error);
        throw error;
      }
      reservation = { id: `res_${randomUUID()}`, heldMicro: 0, deferred: { estimateMicro: amount } };
    } else if (priced) {
      const worst = request.worstCase ?? { promptTokens: request.estimatedTokens, completionTokens: 0, images: request.images, documents: 0 };
      // At least one micro-unit: a priced model is never served on an empty balance.
      const amount = Math.max(1, costMicro(price, worst, request.endpoint));
      if (!this.isReady) await this.ready;
      const id = `res_${randomUUID()}`;
      const result = await this.store.reserve({
        id,
        accountId: principal.accountId,
        amountMicro: amount,
        instanceId: this.instanceId,
        requestId: request.requestId,
        createdAt: this.now(),
      });
      this.noteBalance(principal.accountId, result.balanceMicro);
      if (!result.ok) {
        const error = this.insufficient(request, result.balanceMicro, amount, worst);
        await this.recordRejection(request, error);
        throw error;
      }
      reservation = { id, heldMicro: amount };
    }

    /** The reservation a ledger row releases: none while it is deferred (nothing was taken). */
    const heldId = () => (reservation && !reservation.deferred ? reservation.id : undefined);

    const now = this.now();
    const rules = this.policy.rules(principal.accountId, model, kind, request.aliases);
    const keyRules = principal.limits ? this.keyRules(principal) : undefined;
    const checks = planChecks(rules, request.estimatedTokens, request.images, now, keyRules);

    let headers: Record<string, string> = {};
    let counted = false;
    if (checks.length > 0) {
      let result: ConsumeResult | undefined;
      try {
        // In memory: answered at once, no promise to wait through.
        result = this.counters.consumeSync ? this.counters.consumeSync(checks) : await this.counters.consume(checks);
        if (this.countersDown) {
          this.countersDown = false;
          this.logger.info({ counters: this.counters.kind }, 'rate-limit counter store is reachable again');
        }
      } catch (error) {
        if (!this.countersDown) {
          this.countersDown = true;
          this.logger.error(
            { err: error, counters: this.counters.kind, redisFailure: this.options.counterFailure },
            this.options.counterFailure === 'open'
              ? 'rate-limit counter store unreachable: FAILING OPEN, requests pass without rate limits'
              : 'rate-limit counter store unreachable: FAILING CLOSED, requests are refused with 503',
          );
        }
        if (this.options.counterFailure === 'closed') {
          const refusal = new InferaError({
            status: 503,
            message: 'Rate limiting is unavailable (its Redis store is unreachable), so requests are refused for now.',
            code: 'rate_limiter_unavailable',
            retryAfter: 1,
            cause: error,
          });
          if (reservation) await this.recordRejection(request, refusal, heldId());
          throw refusal;
        }
        result = undefined;
      }
      if (result) {
        headers = rateLimitHeaders(checks, result.values, now);
        if (!result.ok) {
          const failed = checks[result.failed!]!;
          const error = rateLimitError(failed, result.values[result.failed!] ?? 0, headers, now);
          // The refusal's row releases the reservation in the same transaction.
          await this.recordRejection(request, error, heldId());
          throw error;
        }
        counted = true;
      }
    }

    let settled = false;
    return {
      headers,
      resize: async (worst: WorstCase) => {
        if (!reservation || settled) return;
        const amount = Math.max(1, costMicro(price, worst, request.endpoint));
        if (reservation.deferred) {
          const result = await this.store.reserve({
            id: reservation.id,
            accountId: principal.accountId,
            amountMicro: amount,
            instanceId: this.instanceId,
            requestId: request.requestId,
            createdAt: this.now(),
          });
          this.noteBalance(principal.accountId, result.balanceMicro);
          if (!result.ok) throw this.insufficient(request, result.balanceMicro, amount, worst);
          reservation.deferred = undefined;
          reservation.heldMicro = amount;
          return;
        }
        const delta = amount - reservation.heldMicro;
        if (delta === 0) return;
        const result = await this.store.resizeReservation(reservation.id, principal.accountId, delta);
        this.noteBalance(principal.accountId, result.balanceMicro);
        if (!result.ok) throw this.insufficient(request, result.balanceMicro + reservation.heldMicro, amount, worst);
        reservation.heldMicro = amount;
      },
      settle: async (usage: UsageReport) => {
        // A second settle would double-charge; refuse it loudly in the log but never break the response.
        if (settled) {
          this.logger.warn({ requestId: request.requestId }, 'settle() called twice; the second call is ignored');
          return;
        }
        settled = true;
        let cost = costMicro(price, usage, request.endpoint);
        const cap = reservation?.deferred ? reservation.deferred.estimateMicro : reservation?.heldMicro;
        if (reservation && cap !== undefined && cost > cap) {
          // The reservation is the most a request can be charged: what the account agreed to at admission.
          this.logger.warn(
            { requestId: request.requestId, model, costMicro: cost, reservedMicro: cap },
            'request used more than its worst-case estimate; charged the reserved amount',
          );
          cost = cap;
        }
        if (counted) {
          const tokens = usage.promptTokens + usage.completionTokens;
          const adjustments: { key: string; delta: number; ttlMs: number }[] = [];
          for (const c of checks)
            if (c.rule.measure !== 'requests')
              adjustments.push({ key: c.key, delta: c.rule.measure === 'tokens' ? tokens - c.amount : usage.images - c.amount, ttlMs: Math.max(1000, c.resetAt - this.now() + 1000) });
          // Counter drift is not worth failing a finished request over; the ledger is. Counters in
          // memory are adjusted at once, without a promise and its catch per request.
          if (this.counters.adjustSync) {
            try {
              this.counters.adjustSync(adjustments);
            } catch (error) {
              this.logger.warn({ err: error }, 'could not settle token/image counters');
            }
          } else
            this.counters.adjust(adjustments).catch((error: unknown) => {
              this.logger.warn({ err: error }, 'could not settle token/image counters');
            });
        }
        await this.ledger.append(this.row(request, usage, cost, heldId()));
      },
    };
  }

  async userInfo(principal: Principal): Promise<Record<string, unknown>> {
    const account = await this.store.getAccount(principal.accountId);
    const balance = formatMicro(account?.balanceMicro ?? 0);
    return {
      id: principal.accountId,
      name: account?.name ?? principal.accountId,
      image: '',
      email: '',
      isAdmin: false,
      balance,
      status: 'normal',
      introduction: '',
      role: '',
      chargeBalance: balance,
      totalBalance: balance,
    };
  }

  async close(): Promise<void> {
    clearInterval(this.heartbeatTimer);
    await this.ledger.close();
    // Every request has settled by now (the HTTP layer drained first); anything still held is given back.
    await this.ready.catch(() => {});
    const left = await this.store
      .releaseStale(this.now() - this.config.reservations.staleAfterSeconds * 1000, { instanceId: this.instanceId })
      .catch((error: unknown) => {
        this.logger.warn({ err: error }, 'could not release reservations at shutdown; the next server start reconciles them');
        return { reservations: 0, micro: 0 };
      });
    if (left.reservations > 0)
      this.logger.warn({ reservations: left.reservations, amount: formatMicro(left.micro) }, 'gave back reservations of requests that never settled');
    await this.counters.close();
    await this.store.close();
  }
}
