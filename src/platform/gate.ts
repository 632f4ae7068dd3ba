// What the HTTP layer asks the platform (keys, limits, ledger, balance) on every API request.
// The HTTP layer depends on this interface only; src/platform implements it on SQLite or Postgres+Redis.

import type { InferaError } from '../errors/index.ts';

export type Endpoint = 'chat' | 'completions' | 'embeddings' | 'rerank' | 'images' | 'models' | 'user-info';

export interface Principal {
  accountId: string;
  /** Key id (never the secret); "config" for keys from the config file / INFERA_API_KEY; "anonymous" on an open loopback server. */
  keyId: string;
  keyName: string;
  /** Model ids this key may use; undefined = all. Compared against the canonical public id. */
  allowedModels?: string[];
  /** Per-key rate limits across all models (rpm, tpm, ...), from the key store; absent = none. */
  limits?: Partial<Record<'rpm' | 'rph' | 'rpd' | 'tpm' | 'tpd' | 'ipm' | 'ipd', number>>;
}

/** What a request may use at most; its cost is what the balance reservation holds. */
export interface WorstCase {
  promptTokens: number;
  completionTokens: number;
  images: number;
  /** Rerank: documents (billed per search of up to 100). */
  documents: number;
}

export interface AdmissionRequest {
  principal: Principal;
  /** Canonical public id of the resolved model (the registry entry's id, aliases already resolved). */
  model: string;
  /**
   * The model's other names (its aliases): prices, limits and allow-lists written under any of them
   * apply to the model, and rate-limit counters are kept under the canonical id.
   */
  aliases?: readonly string[];
  /** The id the client sent, recorded in the ledger next to the canonical one. */
  requestedModel?: string;
  endpoint: Endpoint;
  requestId: string;
  /** Estimated tokens (prompt + max completion) for TPM/TPD pre-checks. */
  estimatedTokens: number;
  /** Images requested (IPM/IPD). */
  images: number;
  /** Worst-case usage reserved against the balance (priced models); absent: `estimatedTokens` as prompt tokens and `images`. */
  worstCase?: WorstCase;
  /**
   * The caller calls resize() with the exact worst case before it runs anything (chat on a loaded
   * model): admission then only checks that the balance covers `worstCase`, and resize() takes the
   * reservation — one write per request instead of two (a reserve and a resize). The take is still
   * conditional, so a balance is never overdrawn; a request that loses a race for the last of a balance
   * is refused by resize() (403 insufficient_balance) instead of by admit(). SQLite stores only (on
   * Postgres the read would cost the same round trip as the reservation).
   */
  deferReservation?: boolean;
}

export interface UsageReport {
  promptTokens: number;
  completionTokens: number;
  reasoningTokens: number;
  /**
   * The part of promptTokens found in the prompt cache (llama-cpp chat), for the metrics; billed as
   * prompt tokens like the rest (docs/PLATFORM.md), so the ledger does not keep it. Absent: none.
   */
  cachedPromptTokens?: number;
  images: number;
  /** Rerank: documents scored (billed as searches). */
  documents: number;
  /** HTTP status sent (200 also for streams that ended with an error frame: see `outcome`). */
  status: number;
  outcome: 'ok' | 'error' | 'cancelled';
  latencyMs: number;
  /**
   * What happened beyond the numbers, kept in the ledger row: why a request failed (an upstream that
   * timed out or answered garbage), or that usage was counted by Infera because the upstream sent none.
   */
  note?: string;
}

export interface Admission {
  /** Headers to put on the answer, e.g. x-ratelimit-remaining-requests. */
  headers: Record<string, string>;
  /**
   * Re-sizes the balance reservation to a new worst case (known once the model has counted the prompt):
   * a smaller one gives the difference back now, a larger one is taken only if the balance covers it,
   * else this throws 403 insufficient_balance — before any generation. No-op for free models.
   */
  resize(worstCase: WorstCase): Promise<void>;
  /** Record the real usage (ledger row, balance charge, token limit settle). Call exactly once. */
  settle(usage: UsageReport): Promise<void>;
}

/** What readiness reads: whether the stores answered when last used (no query of its own: /ready stays cheap). */
export interface GateHealth {
  /** The durable store (keys, ledger, balances), as of its last heartbeat. */
  store: { kind: string; up: boolean };
  /** The rate-limit counter store, as of its last use; `failure` is what requests get while it is down. */
  counters: { kind: string; up: boolean; failure: 'open' | 'closed' };
}

export interface Gate {
  /** Resolve a bearer secret; throws InferaError 401 when unknown, disabled or expired. */
  authenticate(secret: string | undefined, remoteAddress: string): Promise<Principal>;
  /**
   * authenticate() when memory suffices: the principal, or the 401 it would throw (returned, not
   * thrown: a throw costs ~3 µs, on every request with a wrong key); undefined when it cannot answer
   * without the store (then call authenticate). Absent: always call authenticate.
   */
  authenticateSync?(secret: string | undefined, remoteAddress: string): Principal | InferaError | undefined;
  /**
   * The limits that need no body, before it is read (onRequest): a key over its own request-rate limit
   * (rpm, rph, rpd) gets its 429 without sending the body. Counts nothing (admit() does); absent: none.
   * Undefined when there is nothing to check (no request-rate limit on the key): no promise to wait for.
   */
  precheck?(principal: Principal, endpoint: Endpoint, requestId: string): Promise<void> | undefined;
  /**
   * precheck() when memory answers it and it passes: true. False when it would refuse or must ask the
   * counter store (then call precheck, which records the refusal). Records and counts nothing.
   */
  precheckPassesSync?(principal: Principal, endpoint: Endpoint): boolean;
  /** Check allow-list (403), reserve the worst-case cost against the balance (403) and rate limits (429); throws InferaError. */
  admit(request: AdmissionRequest): Promise<Admission>;
  /** SiliconFlow /v1/user/info body `data` for this principal. */
  userInfo(principal: Principal): Promise<Record<string, unknown>>;
  close(): Promise<void>;
  /** Store health for /ready; absent: the gate has no store to check. */
  health?(): GateHealth;
  /** Report every usage ledger write attempt (metrics); absent: the gate writes no ledger. */
  observeLedger?(observer: (seconds: number, rows: number, outcome: 'ok' | 'retry' | 'failed') => void): void;
}
