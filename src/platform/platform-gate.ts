// The Gate the HTTP layer calls on every API request: who is asking (keys), may they (allow-list,
// balance, rate limits), and what did it cost (ledger, balance, token-limit settle).
import { InferaError } from '../errors/index.ts';
import type { ConsumeResult, CounterStore, KeyRecord, LedgerRow, PlatformStore } from '../storage/types.ts';
import { PlatformAdmin } from './admin.ts';
import type { Limits, ModelKind, PlatformConfig } from './config.ts';
import type { Admission, AdmissionRequest, Endpoint, Gate, Principal, UsageReport } from './gate.ts';
import { hashSecret, isLoopback, sameHash } from './keys.ts';
import { LedgerWriter } from './ledger.ts';
import { LimitPolicy, limitRules, planChecks, rateLimitError, rateLimitHeaders, type LimitRule } from './limits.ts';
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
  embeddings: 'embedding',
  rerank: 'reranker',
  images: 'text-to-image',
};

const unauthorized = (message: string) =>
  new InferaError({ status: 401, message, code: 'invalid_api_key', siliconflowCode: 20001, headers: { 'www-authenticate': 'Bearer' } });

const noop: Admission = { headers: {}, settle: async () => {} };

interface CachedKey {
  record: KeyRecord;
  principal: Principal;
  fetchedAt: number;
}

export class PlatformGate implements Gate {
  readonly admin: PlatformAdmin;
  readonly ledger: LedgerWriter;
  private readonly store: PlatformStore;
  private readonly counters: CounterStore;
  private readonly config: PlatformConfig;
  private readonly logger: PlatformLogger;
  private readonly staticHashes: string[];
  private readonly policy: LimitPolicy;
  private readonly prices: Map<string, MicroPrice>;
  private readonly now: () => number;
  private readonly keyCacheMs: number;
  private readonly keyCache = new Map<string, CachedKey>();
  private readonly keyRuleCache = new WeakMap<object, LimitRule[]>();
  private readonly balanceCache = new Map<string, { balance: number; fetchedAt: number }>();
  private storeHasKeys: { value: boolean; fetchedAt: number } | undefined;
  private countersDown = false;

  constructor(private readonly options: PlatformGateOptions) {
    this.store = options.store;
    this.counters = options.counters;
    this.config = options.config;
    this.logger = options.logger;
    this.now = options.now ?? Date.now;
    this.keyCacheMs = options.config.keyCacheSeconds * 1000;
    this.staticHashes = [...new Set(options.staticKeys.filter(Boolean))].map(hashSecret);
    this.policy = new LimitPolicy(options.config);
    this.prices = new Map(Object.entries(options.config.pricing).map(([id, p]) => [id.toLowerCase(), microPrice(p)]));
    this.ledger = new LedgerWriter(options.store, options.logger, {
      maxBatch: options.config.ledger.maxBatch,
      concurrency: options.store.kind === 'postgres' ? options.config.ledger.postgresWriters : 1,
    });
    this.admin = new PlatformAdmin(options.store, () => this.invalidate());
  }

  /** Forget cached keys and balances (after a revoke or top-up in this process). */
  invalidate(): void {
    this.keyCache.clear();
    this.balanceCache.clear();
    this.storeHasKeys = undefined;
  }

  private async anyKeyExists(): Promise<boolean> {
    if (this.staticHashes.length > 0) return true;
    const now = this.now();
    // Once a key exists the answer cannot flip back (revoked keys still count), so only "no" is re-checked.
    if (this.storeHasKeys && (this.storeHasKeys.value || now - this.storeHasKeys.fetchedAt < this.keyCacheMs))
      return this.storeHasKeys.value;
    const value = (await this.store.listKeys()).length > 0;
    this.storeHasKeys = { value, fetchedAt: now };
    return value;
  }

  async authenticate(secret: string | undefined, remoteAddress: string): Promise<Principal> {
    const token = secret?.trim();
    if (!(await this.anyKeyExists())) {
      // No key anywhere: a fresh local install just works, but only for callers on this machine.
      if (isLoopback(remoteAddress)) return { accountId: 'anonymous', keyId: 'anonymous', keyName: 'anonymous' };
      throw unauthorized(
        'This server has no API keys yet and only serves loopback callers. Create one with `infera keys create --name <name>`.',
      );
    }
    if (!token) throw unauthorized('Missing API key: send "Authorization: Bearer <key>".');
    const hash = hashSecret(token);
    let staticMatch = false;
    // Every static hash is compared (no early exit) so timing does not tell which one matched.
    for (const candidate of this.staticHashes) staticMatch = sameHash(hash, candidate) || staticMatch;
    if (staticMatch) return { accountId: 'default', keyId: 'config', keyName: 'config' };

    const now = this.now();
    let cached = this.keyCache.get(hash);
    if (!cached || now - cached.fetchedAt >= this.keyCacheMs) {
      const record = await this.store.findKeyByHash(hash);
      if (!record || !sameHash(record.hash, hash)) {
        this.keyCache.delete(hash);
        throw unauthorized('Invalid API key.');
      }
      cached = {
        record,
        fetchedAt: now,
        principal: {
          accountId: record.accountId,
          keyId: record.id,
          keyName: record.name,
          ...(record.models ? { allowedModels: record.models } : {}),
          ...(record.limits ? { limits: record.limits as Limits } : {}),
        },
      };
      if (this.keyCache.size > 10_000) this.keyCache.clear();
      this.keyCache.set(hash, cached);
    }
    if (cached.record.disabled) throw unauthorized(`API key "${cached.record.name}" has been revoked.`);
    if (cached.record.expiresAt !== null && cached.record.expiresAt <= now)
      throw unauthorized(`API key "${cached.record.name}" expired at ${new Date(cached.record.expiresAt).toISOString()}.`);
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

  private async balance(accountId: string): Promise<number> {
    const now = this.now();
    const cached = this.balanceCache.get(accountId);
    // One second of staleness: a balance check is advisory anyway (concurrent requests all pass it).
    if (cached && now - cached.fetchedAt < 1000) return cached.balance;
    const balance = (await this.store.getAccount(accountId))?.balanceMicro ?? 0;
    this.balanceCache.set(accountId, { balance, fetchedAt: now });
    return balance;
  }

  private async recordRejection(request: AdmissionRequest, error: InferaError): Promise<void> {
    // Refused requests get their row too (status 403/429), durable before the refusal is sent, like
    // every other answer: a 429 a client saw is never missing from the ledger. Group commit keeps it cheap.
    await this.ledger
      .append(this.row(request, { promptTokens: 0, completionTokens: 0, reasoningTokens: 0, images: 0, documents: 0, status: error.status, outcome: 'error', latencyMs: 0 }, 0))
      .catch((failure: unknown) => this.logger.error({ err: failure, requestId: request.requestId }, 'ledger row for a refused request could not be written'));
  }

  private row(request: AdmissionRequest, usage: UsageReport, cost: number): LedgerRow {
    return {
      requestId: request.requestId,
      accountId: request.principal.accountId,
      keyId: request.principal.keyId,
      model: request.model,
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
  }

  async admit(request: AdmissionRequest): Promise<Admission> {
    const kind = endpointKind[request.endpoint];
    // /models and /user/info cost nothing and are not metered.
    if (!kind) return noop;
    const { principal, model } = request;

    if (principal.allowedModels && !principal.allowedModels.some((m) => m.toLowerCase() === model.toLowerCase())) {
      const error = new InferaError({
        status: 403,
        message: `API key "${principal.keyName}" may not use model "${model}" (allowed: ${principal.allowedModels.join(', ')}).`,
        param: 'model',
        code: 'model_not_allowed',
        siliconflowCode: 30003,
      });
      await this.recordRejection(request, error);
      throw error;
    }

    const price = this.prices.get(model.toLowerCase());
    if (isPriced(price)) {
      const balance = await this.balance(principal.accountId);
      if (balance <= 0) {
        const error = new InferaError({
          status: 403,
          message: `Insufficient balance: account "${principal.accountId}" has ${formatMicro(balance)} left and model "${model}" is priced. Top up with \`infera accounts topup ${principal.accountId} <amount>\`.`,
          code: 'insufficient_balance',
          siliconflowCode: 30001,
        });
        await this.recordRejection(request, error);
        throw error;
      }
    }

    const now = this.now();
    const rules = this.policy.rules(principal.accountId, model, kind);
    const keyRules = principal.limits ? this.keyRules(principal) : undefined;
    const checks = planChecks(keyRules ? [...rules, ...keyRules] : rules, request.estimatedTokens, request.images, now);

    let headers: Record<string, string> = {};
    let counted = false;
    if (checks.length > 0) {
      let result: ConsumeResult | undefined;
      try {
        result = await this.counters.consume(checks);
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
        if (this.options.counterFailure === 'closed')
          throw new InferaError({
            status: 503,
            message: 'Rate limiting is unavailable (its Redis store is unreachable), so requests are refused for now.',
            code: 'rate_limiter_unavailable',
            retryAfter: 1,
            cause: error,
          });
        result = undefined;
      }
      if (result) {
        headers = rateLimitHeaders(checks, result.values, now);
        if (!result.ok) {
          const failed = checks[result.failed!]!;
          const error = rateLimitError(failed, result.values[result.failed!] ?? 0, headers, now);
          await this.recordRejection(request, error);
          throw error;
        }
        counted = true;
      }
    }

    let settled = false;
    return {
      headers,
      settle: async (usage: UsageReport) => {
        // A second settle would double-charge; refuse it loudly in the log but never break the response.
        if (settled) {
          this.logger.warn({ requestId: request.requestId }, 'settle() called twice; the second call is ignored');
          return;
        }
        settled = true;
        const cost = costMicro(price, usage, request.endpoint);
        if (counted) {
          const tokens = usage.promptTokens + usage.completionTokens;
          const adjustments = checks
            .filter((c) => c.rule.measure !== 'requests')
            .map((c) => ({
              key: c.key,
              delta: c.rule.measure === 'tokens' ? tokens - c.amount : usage.images - c.amount,
              ttlMs: Math.max(1000, c.resetAt - this.now() + 1000),
            }));
          // Counter drift is not worth failing a finished request over; the ledger is.
          this.counters.adjust(adjustments).catch((error: unknown) => {
            this.logger.warn({ err: error }, 'could not settle token/image counters');
          });
        }
        if (cost > 0) {
          const cached = this.balanceCache.get(principal.accountId);
          if (cached) cached.balance -= cost;
        }
        await this.ledger.append(this.row(request, usage, cost));
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
    await this.ledger.close();
    await this.counters.close();
    await this.store.close();
  }
}
