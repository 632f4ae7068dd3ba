// The small interfaces the platform needs from storage. Two implementations each: SQLite / Postgres for
// durable records (keys, accounts, ledger), in-process / Redis for rate-limit counters.

export interface KeyRecord {
  id: string;
  name: string;
  accountId: string;
  /** sha256 of the secret, hex. */
  hash: string;
  /** First characters of the secret, for people to recognise a key in lists ("sk-AbCd…"). */
  prefix: string;
  /** Model ids this key may use; null = all. */
  models: string[] | null;
  /** Per-key limits across all models (JSON of platform Limits); null = none. */
  limits: Record<string, number> | null;
  /** Epoch ms; null = never. */
  expiresAt: number | null;
  disabled: boolean;
  createdAt: number;
}

export interface AccountRecord {
  id: string;
  name: string;
  /** Integer micro-units of currency (1 = 0.000001). */
  balanceMicro: number;
  createdAt: number;
}

export interface LedgerRow {
  requestId: string;
  accountId: string;
  keyId: string;
  model: string;
  endpoint: string;
  promptTokens: number;
  completionTokens: number;
  reasoningTokens: number;
  images: number;
  documents: number;
  latencyMs: number;
  status: number;
  outcome: string;
  costMicro: number;
  /** Epoch ms. */
  createdAt: number;
}

export type UsageGroup = 'model' | 'key' | 'account' | 'endpoint' | 'day';

export interface UsageQuery {
  by: UsageGroup;
  /** Epoch ms, inclusive. */
  since?: number;
  until?: number;
  accountId?: string;
}

export interface UsageAggregate {
  group: string;
  requests: number;
  errors: number;
  cancelled: number;
  promptTokens: number;
  completionTokens: number;
  reasoningTokens: number;
  images: number;
  documents: number;
  costMicro: number;
  avgLatencyMs: number;
}

/** Durable records: keys, accounts, ledger. */
export interface PlatformStore {
  readonly kind: 'sqlite' | 'postgres';
  findKeyByHash(hash: string): Promise<KeyRecord | undefined>;
  createKey(key: KeyRecord): Promise<void>;
  listKeys(accountId?: string): Promise<KeyRecord[]>;
  /** Disables the key; false when no such key. */
  revokeKey(id: string): Promise<boolean>;
  getAccount(id: string): Promise<AccountRecord | undefined>;
  /** Creates the account when missing (balance 0); returns it. */
  ensureAccount(id: string, name?: string): Promise<AccountRecord>;
  listAccounts(): Promise<AccountRecord[]>;
  /** Adds (or with a negative amount removes) balance; creates the account when missing. Returns the new balance. */
  adjustBalance(id: string, deltaMicro: number): Promise<number>;
  /**
   * Writes the rows and charges their cost to their accounts in ONE transaction; resolves only once it is
   * durable (the group commit of LedgerWriter).
   */
  appendLedger(rows: LedgerRow[]): Promise<void>;
  usage(query: UsageQuery): Promise<UsageAggregate[]>;
  countLedger(): Promise<number>;
  hasRequest(requestId: string): Promise<boolean>;
  close(): Promise<void>;
}

export interface CounterCheck {
  /** Full counter key including the window start, e.g. "a:acme:m:qwen:rpm:29048123". */
  key: string;
  /** Amount to add when admitted. */
  amount: number;
  /** Reject when the counter + amount would exceed this. */
  limit: number;
  /** Counter lifetime (ms): the window length, after which the key may be dropped. */
  ttlMs: number;
}

export interface ConsumeResult {
  ok: boolean;
  /** Index of the first check that would be exceeded, when !ok. */
  failed?: number;
  /** Counter values after this call (unchanged when !ok). */
  values: number[];
}

/** Fixed-window counters, consumed all-or-nothing. */
export interface CounterStore {
  readonly kind: 'memory' | 'redis';
  /** Atomically: if every check fits, add every amount; else add nothing. */
  consume(checks: CounterCheck[]): Promise<ConsumeResult>;
  /** Adds deltas (may be negative) without checking: settles token estimates against real counts. */
  adjust(adjustments: { key: string; delta: number; ttlMs: number }[]): Promise<void>;
  close(): Promise<void>;
}
