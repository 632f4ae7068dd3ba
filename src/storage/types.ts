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
  /**
   * Set when the stored row cannot be read as written (a number out of Date's range, JSON that does not
   * parse): listings show it as invalid instead of failing, and authentication refuses the key.
   */
  invalid?: string[];
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
  /** Canonical id of the model that served the request (aliases resolved). */
  model: string;
  /** The id the client sent (an alias, a "Pro/" name or the canonical id itself); null when unknown. */
  requestedModel?: string | null;
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
  /** What happened beyond the numbers: an upstream's fault, or usage Infera counted because the upstream sent none. */
  note?: string | null;
  /**
   * The balance reservation this request holds (taken at admission). Committing the row releases it in
   * the same transaction: the account gets back the reservation minus `costMicro`. When the reservation
   * is gone (released by a reconciliation), `costMicro` is charged in full, never below a zero balance.
   */
  reservationId?: string;
}

/** A balance reservation: money set aside at admission, released when the request's ledger row commits. */
export interface Reservation {
  id: string;
  accountId: string;
  amountMicro: number;
  /** The process holding it (its heartbeat keeps it alive; see PlatformStore.releaseStale). */
  instanceId: string;
  requestId: string;
  createdAt: number;
}

export interface ReserveResult {
  ok: boolean;
  /** Balance after the reservation, or the balance that could not cover it. */
  balanceMicro: number;
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
   * Atomically, and across processes: when the account's balance covers `amountMicro`, subtracts it and
   * records the reservation (durably, in the same transaction); otherwise changes nothing.
   */
  reserve(reservation: Reservation): Promise<ReserveResult>;
  /**
   * Grows (positive delta, only when the balance covers it) or shrinks (negative delta) a reservation.
   * ok=false with a positive delta: not covered, nothing changed. A reservation that is gone (released
   * by a reconciliation) is left alone: ok=true, nothing changed.
   */
  resizeReservation(id: string, accountId: string, deltaMicro: number): Promise<ReserveResult>;
  /** Records that `instanceId` is alive at `now` (its reservations are not reconciled while it beats). */
  heartbeat(instanceId: string, now: number): Promise<void>;
  /**
   * Gives back every reservation whose instance has not beaten since `staleBefore` (a killed process)
   * or that `instanceId` holds (its own clean shutdown), and forgets those instances.
   */
  releaseStale(staleBefore: number, options?: { instanceId?: string }): Promise<{ reservations: number; micro: number }>;
  /**
   * Writes the rows and settles their money in ONE transaction — releases each row's reservation and
   * charges its cost — and resolves only once it is durable (the group commit of LedgerWriter).
   */
  appendLedger(rows: LedgerRow[]): Promise<void>;
  /**
   * appendLedger for a store whose commit is synchronous (SQLite): returns once the transaction is
   * committed, throws what appendLedger would reject with. LedgerWriter uses it to settle a batch in
   * the turn it commits, without the promises of an asynchronous write.
   */
  appendLedgerSync?(rows: LedgerRow[]): void;
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
  /**
   * consume() answered at once, for a store that needs no round trip (memory): the gate's checks then
   * cost no promise and no turn of the microtask queue per request. Absent: call consume().
   */
  consumeSync?(checks: CounterCheck[]): ConsumeResult;
  /** Adds deltas (may be negative) without checking: settles token estimates against real counts. */
  adjust(adjustments: { key: string; delta: number; ttlMs: number }[]): Promise<void>;
  /** adjust() for counters kept in this process: done on return, no promise (the settle of every metered request calls it). */
  adjustSync?(adjustments: { key: string; delta: number; ttlMs: number }[]): void;
  close(): Promise<void>;
}
