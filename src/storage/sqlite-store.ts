// The embedded default: one SQLite file in WAL mode. better-sqlite3 is synchronous, which is what makes
// the group commit cheap: a whole batch of ledger rows is one transaction on one thread, no round trips.
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { Worker } from 'node:worker_threads';
import { sqliteMigrations } from './migrations.ts';
import type {
  AccountRecord,
  KeyRecord,
  LedgerRow,
  PlatformStore,
  Reservation,
  ReserveResult,
  UsageAggregate,
  UsageQuery,
} from './types.ts';

export interface SqliteStoreOptions {
  /** "normal" survives a process kill (WAL); "full" also survives power loss. */
  synchronous?: 'normal' | 'full';
  /** WAL frames past which a checkpoint also rewinds the WAL (RESTART_FRAMES; tests set fewer). */
  restartFrames?: number;
  /** How often the checkpoint thread runs (CHECKPOINT_MS; tests set less). */
  checkpointMs?: number;
  /** Commits before the checkpoint thread starts (CHECKPOINT_AFTER_COMMITS; tests set fewer). */
  checkpointAfterCommits?: number;
  /**
   * platform.reservations.staleAfterSeconds, in ms: how long a silent server's claim (see memoryHolds)
   * is honoured. Default 60 s.
   */
  staleAfterMs?: number;
  /**
   * Hold reservations in memory while this is the only live server on the file (a server's store; the
   * CLI never reserves). See `SqliteStore.holds`.
   */
  memoryHolds?: boolean;
}

/** A reservation held in memory: nothing was taken from the balance in the file yet. */
interface Hold {
  accountId: string;
  amountMicro: number;
  instanceId: string;
  requestId: string;
  createdAt: number;
}

interface ClaimRow {
  instance_id: string;
  host: string;
  pid: number;
  yield_to: string | null;
}

/** A durable reservation that must wait: another live server holds reservations in memory and was asked to write them out. */
const WAIT = Symbol('wait for the claim');
/** How often the holder of the claim looks whether another server asked for it (PRAGMA data_version; ~1 µs). */
const CLAIM_POLL_MS = 50;

const processGone = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
};

interface KeyRow {
  id: string;
  name: string;
  account_id: string;
  hash: string;
  prefix: string;
  models: string | null;
  limits: string | null;
  expires_at: number | null;
  disabled: number;
  created_at: number;
}

interface AccountRow {
  id: string;
  name: string;
  balance_micro: number;
  created_at: number;
}

const parseJson = <T>(text: string | null, field: string, invalid: string[], fallback: T): T | null => {
  if (text === null) return null;
  try {
    return JSON.parse(text) as T;
  } catch {
    invalid.push(`${field}: not valid JSON`);
    return fallback;
  }
};

const toKey = (row: KeyRow): KeyRecord => {
  const invalid: string[] = [];
  // An unreadable allow-list admits nothing rather than everything.
  const models = parseJson<string[]>(row.models, 'models', invalid, []);
  const limits = parseJson<Record<string, number>>(row.limits, 'limits', invalid, {});
  return checkedKey({
    id: row.id,
    name: row.name,
    accountId: row.account_id,
    hash: row.hash,
    prefix: row.prefix,
    models,
    limits,
    expiresAt: row.expires_at,
    disabled: row.disabled !== 0,
    createdAt: row.created_at,
  }, invalid);
};

/** Latest instant a JavaScript Date can represent (epoch ms). */
export const MAX_DATE_MS = 8_640_000_000_000_000;

const validTime = (value: unknown): value is number =>
  typeof value === 'number' && Number.isFinite(value) && Math.abs(value) <= MAX_DATE_MS;

/** Marks what a stored key row holds that no valid key has (shared by both drivers). */
export function checkedKey(key: KeyRecord, invalid: string[] = []): KeyRecord {
  if (key.expiresAt !== null && !validTime(key.expiresAt)) invalid.push(`expires_at: ${String(key.expiresAt)} is not a date`);
  if (!validTime(key.createdAt)) invalid.push(`created_at: ${String(key.createdAt)} is not a date`);
  let { models, limits } = key;
  if (models !== null && !(Array.isArray(models) && models.every((m) => typeof m === 'string'))) {
    invalid.push('models: not a list of model ids');
    models = [];
  }
  if (limits !== null && (typeof limits !== 'object' || Array.isArray(limits))) {
    invalid.push('limits: not an object of limits');
    limits = null;
  }
  return invalid.length > 0 ? { ...key, models, limits, invalid } : key;
}

const toAccount = (row: AccountRow): AccountRecord => ({
  id: row.id,
  name: row.name,
  balanceMicro: row.balance_micro,
  createdAt: row.created_at,
});

export const groupExpression = {
  sqlite: {
    model: 'model',
    key: 'key_id',
    account: 'account_id',
    endpoint: 'endpoint',
    day: "strftime('%Y-%m-%d', created_at / 1000, 'unixepoch')",
  },
  postgres: {
    model: 'model',
    key: 'key_id',
    account: 'account_id',
    endpoint: 'endpoint',
    day: "to_char(to_timestamp(created_at / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
  },
} as const;

const CHECKPOINT_MS = 1000;
/**
 * A PASSIVE checkpoint never rewinds the WAL: SQLite starts writing at its beginning again only when a
 * write transaction begins with every frame already copied, and under steady load a commit always lands
 * while the checkpoint is still copying and syncing. The WAL then grew by every commit's pages for as
 * long as the load lasted (~30 KB per priced request: 200 MB after 20 s on one connection, gigabytes an
 * hour). Past this many frames (256 MiB of 4 KiB pages) the checkpoint thread rewinds it: more PASSIVE
 * passes until little was committed meanwhile, then a RESTART, which takes the write lock, copies and
 * syncs what is left, so the next commit writes from the start. Commits on the event loop wait for that
 * lock: the RESTART held it 9–70 ms on the project's shared, busy VM disk (two fsyncs) under a synthetic
 * 13,000 commits/s, where one commit once waited 0.6 s. At a priced request's 7 frames that is once per
 * ~9,000 requests: rarer than SQLite's own default (a checkpoint on the committing thread every 4 MiB),
 * and the file stays near this size instead of growing for as long as the load lasts.
 */
const RESTART_FRAMES = 65_536;

/**
 * Commits before the checkpoint thread starts. A worker thread is a second V8 isolate with its own Node
 * environment and better-sqlite3: ~8–10 MiB of the server's RSS for as long as it runs (rss7 in
 * docs/BENCHMARKS.md), which a server serving a few requests, or none, does not need: its WAL holds a
 * few frames (a priced request writes ~7, a heartbeat ~2), readers read them from the WAL as well, and
 * closing the last connection checkpoints them. 256 commits leave at most ~2,000 frames (~7 MiB) in the
 * WAL before the first checkpoint; a server under load gets there within a second or two, an idle one's
 * heartbeats (every 10 s by default) in ~40 minutes.
 */
const CHECKPOINT_AFTER_COMMITS = 256;

/**
 * The checkpoint thread (CommonJS, evaluated): its own connection, a PASSIVE checkpoint every interval,
 * and a rewind once the WAL holds more than restartFrames frames (RESTART_FRAMES).
 */
const CHECKPOINTER = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.module);
const db = new Database(workerData.path);
db.pragma('busy_timeout = 5000');
db.pragma('wal_autocheckpoint = 0');
// From here on the thread hardly waits: a RESTART that waited long for a reader (a long query in another
// process) would hold the write lock, and every commit on the event loop, all that time. Busy, it does
// what PASSIVE does and the next interval tries again.
db.pragma('busy_timeout = 0');
const timer = setInterval(() => {
  try {
    let [pass] = db.pragma('wal_checkpoint(PASSIVE)');
    if (!pass || pass.log <= workerData.restartFrames) return;
    // Without the lock first, while commits keep coming: the RESTART then has only the last few to copy.
    for (let i = 0; i < 3; i++) {
      const [next] = db.pragma('wal_checkpoint(PASSIVE)');
      const fresh = next.log - pass.log;
      pass = next;
      if (fresh < 256) break;
    }
    db.pragma('busy_timeout = 20');
    try { db.pragma('wal_checkpoint(RESTART)'); } finally { db.pragma('busy_timeout = 0'); }
  } catch {}
}, workerData.intervalMs);
parentPort.once('message', () => { clearInterval(timer); db.close(); parentPort.close(); });
`;

/** A write waiting for the next batch transaction: its result (or error) once that has committed. */
interface QueuedWrite {
  run: () => unknown;
  resolve: (value: never) => void;
  reject: (error: unknown) => void;
}
const ignore = (): void => {};

export class SqliteStore implements PlatformStore {
  readonly kind = 'sqlite' as const;
  private readonly db: Database.Database;
  private readonly statements;
  private readonly appendRows: (rows: LedgerRow[]) => void;
  private readonly reserveBalance: (reservation: Reservation, now: number) => ReserveResult | typeof WAIT;
  private readonly resizeBalance: (id: string, accountId: string, delta: number) => ReserveResult;
  /**
   * Reservations, resizes and ledger batches are not one transaction each: every write requested in
   * one event-loop turn joins one IMMEDIATE transaction (a commit writes the WAL frames of every page
   * it touched; three commits per priced request were ~15 % of a proxied request's CPU). Each caller's
   * promise resolves only after that commit, so what a caller was told is durable is durable, and the
   * balance checks still run one after another inside the transaction (never overdrawn).
   */
  private writes: QueuedWrite[] = [];
  private flushScheduled = false;
  private readonly batchTransaction: Database.Transaction<(writes: QueuedWrite[]) => unknown[]>;
  private readonly singleTransaction: Database.Transaction<(write: QueuedWrite) => unknown>;
  private readonly flushWrites = () => this.flush();
  private readonly releaseTransaction: Database.Transaction<(staleBefore: number, instanceId: string) => { reservations: number; micro: number }>;
  private checkpointTimer?: NodeJS.Timeout;
  private checkpointer?: Worker;
  private readonly restartFrames: number;
  private readonly checkpointMs: number;
  /** Commits left before startCheckpoints (CHECKPOINT_AFTER_COMMITS). */
  private commitsBeforeCheckpoints: number;
  private readonly staleAfterMs: number;
  private readonly memoryHolds: boolean;
  /**
   * Reservations held in memory (memoryHolds), by reservation id, and their sum per account. A priced
   * request on SQLite took two commits: the reservation's, then the ledger row's, which releases it; on
   * one connection each is a commit of its own (~60 and ~100 µs of the main thread, and a setImmediate
   * turn before the upstream call). While this server holds the claim (the `hold_claim` row: no other
   * live server on the file), a reservation is instead checked against the balance in the file minus
   * what this server holds, and held here; the ledger commit charges the cost. Exactness: only this
   * server reserves while it holds the claim (another one asks for it and waits until it has been
   * written out, see yieldClaim), and its checks run one after another on this thread. Crash: a hold
   * took nothing from the file, so a killed server's holds vanish with it: the same outcome as the
   * durable rows a restart gives back in full, with nothing to give back; a committed ledger row is
   * charged exactly once either way.
   */
  private readonly holds = new Map<string, Hold>();
  private readonly held = new Map<string, number>();
  /** The instance this store holds the claim for, while it does. */
  private claimedBy?: string;
  private claimTimer?: NodeJS.Timeout;
  /** PRAGMA data_version when the claim was last looked at: it changes when another connection commits. */
  private seenVersion = 0;
  /** Run once the transaction in progress has committed (holds a ledger row released); dropped on a rollback. */
  private afterCommit: (() => void)[] = [];
  private readonly yieldTransaction: Database.Transaction<(instanceId: string) => boolean>;

  constructor(readonly path: string, options: SqliteStoreOptions = {}) {
    this.restartFrames = options.restartFrames ?? RESTART_FRAMES;
    this.checkpointMs = options.checkpointMs ?? CHECKPOINT_MS;
    this.commitsBeforeCheckpoints = options.checkpointAfterCommits ?? CHECKPOINT_AFTER_COMMITS;
    this.staleAfterMs = options.staleAfterMs ?? 60_000;
    this.memoryHolds = options.memoryHolds ?? false;
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma(`synchronous = ${options.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
    // The CLI and a running server share the file: wait for a lock instead of failing at once.
    this.db.pragma('busy_timeout = 5000');
    this.db.pragma('foreign_keys = ON');
    // SQLite's automatic checkpoint runs inside a commit every 1000 WAL pages, with an fsync: a latency
    // spike on some unlucky request. Checkpoints run on a timer instead (startCheckpoints), which costs
    // less too — every ledger commit rewrites the same few tail pages, so one checkpoint per second copies
    // each page once.
    this.db.pragma('wal_autocheckpoint = 0');
    // When a commit rewinds the WAL after a RESTART checkpoint, a file that grew past this is cut back to it.
    this.db.pragma(`journal_size_limit = ${this.restartFrames * 4096}`);
    this.migrate();
    const db = this.db;
    this.statements = {
      keyByHash: db.prepare<[string], KeyRow>('SELECT * FROM api_keys WHERE hash = ?'),
      insertKey: db.prepare(
        `INSERT INTO api_keys (id, name, account_id, hash, prefix, models, limits, expires_at, disabled, created_at)
         VALUES (@id, @name, @accountId, @hash, @prefix, @models, @limits, @expiresAt, @disabled, @createdAt)`,
      ),
      listKeys: db.prepare<[], KeyRow>('SELECT * FROM api_keys ORDER BY created_at, id'),
      listKeysOf: db.prepare<[string], KeyRow>('SELECT * FROM api_keys WHERE account_id = ? ORDER BY created_at, id'),
      revokeKey: db.prepare<[string]>('UPDATE api_keys SET disabled = 1 WHERE id = ?'),
      account: db.prepare<[string], AccountRow>('SELECT * FROM accounts WHERE id = ?'),
      // The balance alone, as a number: what a reservation answers with (no row object to build).
      balance: db.prepare<[string], number>('SELECT balance_micro FROM accounts WHERE id = ?').pluck(),
      insertAccount: db.prepare<[string, string, number]>(
        'INSERT INTO accounts (id, name, balance_micro, created_at) VALUES (?, ?, 0, ?) ON CONFLICT (id) DO NOTHING',
      ),
      listAccounts: db.prepare<[], AccountRow>('SELECT * FROM accounts ORDER BY created_at, id'),
      charge: db.prepare<[number, string]>('UPDATE accounts SET balance_micro = balance_micro - ? WHERE id = ?'),
      // A charge never takes a balance below zero (or below where it already is, if an operator made it
      // negative); a refund (negative delta) always applies in full.
      settle: db.prepare<{ delta: number; id: string }>(
        `UPDATE accounts SET balance_micro = CASE WHEN @delta > 0
           THEN MAX(balance_micro - @delta, MIN(balance_micro, 0)) ELSE balance_micro - @delta END WHERE id = @id`,
      ),
      // The balance left comes back with the take (RETURNING): no second statement to read it per
      // request; no row back means nothing was taken (the balance is read then, for the refusal).
      // Positional, as insertLedger: named parameters are looked up on an object per call.
      take: db
        .prepare<[number, string, number, number], number>(
          'UPDATE accounts SET balance_micro = balance_micro - ? WHERE id = ? AND (? <= 0 OR balance_micro >= ?) RETURNING balance_micro',
        )
        .pluck(),
      insertReservation: db.prepare<[string, string, number, string, string, number]>(
        `INSERT INTO reservations (id, account_id, amount_micro, instance_id, request_id, created_at)
         VALUES (?, ?, ?, ?, ?, ?)`,
      ),
      growReservation: db.prepare<[number, string]>('UPDATE reservations SET amount_micro = amount_micro + ? WHERE id = ?'),
      hasReservation: db.prepare<[string], { n: number }>('SELECT 1 AS n FROM reservations WHERE id = ?'),
      releaseReservation: db.prepare<[string], { amount_micro: number }>('DELETE FROM reservations WHERE id = ? RETURNING amount_micro'),
      heartbeat: db.prepare<[string, number]>(
        'INSERT INTO instances (id, heartbeat_at) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at',
      ),
      releaseStale: db.prepare<{ staleBefore: number; instanceId: string }, { account_id: string; amount_micro: number }>(
        `DELETE FROM reservations WHERE instance_id = @instanceId
           OR instance_id NOT IN (SELECT id FROM instances WHERE heartbeat_at >= @staleBefore)
         RETURNING account_id, amount_micro`,
      ),
      forgetInstances: db.prepare<{ staleBefore: number; instanceId: string }>(
        'DELETE FROM instances WHERE id = @instanceId OR heartbeat_at < @staleBefore',
      ),
      // Positional: binding named parameters looks each one up on a row object built for the purpose
      // (a copy without reservationId), per row; appendRows passes the fields straight from the row.
      insertLedger: db.prepare<[string, string, string, string, string | null, string, number, number, number, number, number, number, number, string, number, number, string | null]>(
        `INSERT INTO ledger (request_id, account_id, key_id, model, requested_model, endpoint, prompt_tokens,
           completion_tokens, reasoning_tokens, images, documents, latency_ms, status, outcome, cost_micro, created_at, note)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      countLedger: db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM ledger'),
      dataVersion: db.prepare<[], number>('PRAGMA data_version').pluck(),
      claim: db.prepare<[], ClaimRow>('SELECT instance_id, host, pid, yield_to FROM hold_claim WHERE id = 1'),
      setClaim: db.prepare<[string, string, number]>('INSERT OR REPLACE INTO hold_claim (id, instance_id, host, pid, yield_to) VALUES (1, ?, ?, ?, NULL)'),
      dropClaim: db.prepare<[string]>('DELETE FROM hold_claim WHERE id = 1 AND instance_id = ?'),
      askYield: db.prepare<[string]>('UPDATE hold_claim SET yield_to = ? WHERE id = 1 AND yield_to IS NULL'),
      beatOf: db.prepare<[string], number>('SELECT heartbeat_at FROM instances WHERE id = ?').pluck(),
      othersLive: db.prepare<[string, number], number>('SELECT COUNT(*) FROM instances WHERE id != ? AND heartbeat_at >= ?').pluck(),
      hasRequest: db.prepare<[string], { n: number }>('SELECT 1 AS n FROM ledger WHERE request_id = ? LIMIT 1'),
    };
    this.appendRows = (rows: LedgerRow[]) => {
      const charges = new Map<string, number>();
      for (const row of rows) {
        this.statements.insertLedger.run(
          row.requestId,
          row.accountId,
          row.keyId,
          row.model,
          row.requestedModel ?? null,
          row.endpoint,
          row.promptTokens,
          row.completionTokens,
          row.reasoningTokens,
          row.images,
          row.documents,
          row.latencyMs,
          row.status,
          row.outcome,
          row.costMicro,
          row.createdAt,
          row.note ?? null,
        );
        const id = row.reservationId;
        const hold = id ? this.holds.get(id) : undefined;
        // A hold took nothing from the file: the cost is charged in full, and the hold let go once this commits.
        if (hold) this.afterCommit.push(() => this.release(id!, hold));
        const released = id && !hold ? (this.statements.releaseReservation.get(id)?.amount_micro ?? 0) : 0;
        const delta = row.costMicro - released;
        if (delta !== 0) charges.set(row.accountId, (charges.get(row.accountId) ?? 0) + delta);
      }
      for (const [id, delta] of charges) if (delta !== 0) this.statements.settle.run({ delta, id });
    };
    // What this server holds in memory is not in the file's balance: a take must leave it covered too
    // (only while a claim is being given up can a durable take meet holds), and the balance reported
    // is what is left after it, as when every reservation was a row.
    const take = (accountId: string, amount: number): number | undefined => {
      const held = this.held.get(accountId) ?? 0;
      const left = this.statements.take.get(amount, accountId, amount, amount + held);
      return left === undefined ? undefined : left - held;
    };
    const balanceOf = (accountId: string) => (this.statements.balance.get(accountId) ?? 0) - (this.held.get(accountId) ?? 0);
    this.reserveBalance = (reservation: Reservation, now: number): ReserveResult | typeof WAIT => {
      const r = reservation;
      const claim = this.statements.claim.get();
      if (claim && claim.instance_id !== this.claimedBy) {
        if (claim.instance_id !== r.instanceId && this.claimLive(claim, now)) {
          // Another server holds reservations this one cannot see: ask it to write them out, then try again.
          if (claim.yield_to === null) this.statements.askYield.run(r.instanceId);
          return WAIT;
        }
        this.statements.dropClaim.run(claim.instance_id);
      }
      const left = take(r.accountId, r.amountMicro);
      if (left === undefined) return { ok: false, balanceMicro: balanceOf(r.accountId) };
      this.statements.insertReservation.run(r.id, r.accountId, r.amountMicro, r.instanceId, r.requestId, r.createdAt);
      // Alone on the file (no other server beat within staleAfter): this server's next reservations are held in memory.
      if (this.memoryHolds && !this.claimedBy && this.statements.othersLive.get(r.instanceId, r.createdAt - this.staleAfterMs) === 0) {
        this.statements.setClaim.run(r.instanceId, hostname(), process.pid);
        this.afterCommit.push(() => this.claimed(r.instanceId));
      }
      return { ok: true, balanceMicro: left };
    };
    this.resizeBalance = (id: string, accountId: string, delta: number): ReserveResult => {
      if (delta === 0 || !this.statements.hasReservation.get(id)) return { ok: true, balanceMicro: balanceOf(accountId) };
      const left = take(accountId, delta);
      if (left === undefined) return { ok: false, balanceMicro: balanceOf(accountId) };
      this.statements.growReservation.run(delta, id);
      return { ok: true, balanceMicro: left };
    };
    // Giving up the claim: every hold becomes the row (and the take) it would have been, in one commit.
    // A claim that is no longer this server's was voided by another server while this one was silent
    // past staleAfter (a stalled event loop): that server reserved without seeing these holds, so they
    // are not taken now (the balance may not cover them any more); each settles on its own as a hold,
    // its cost charged never below zero — what a stalled server's settlement does with rows (docs/PLATFORM.md).
    this.yieldTransaction = this.db.transaction((instanceId: string): boolean => {
      if (this.statements.claim.get()?.instance_id !== instanceId) return false;
      for (const [id, h] of this.holds) {
        this.statements.charge.run(h.amountMicro, h.accountId);
        this.statements.insertReservation.run(id, h.accountId, h.amountMicro, h.instanceId, h.requestId, h.createdAt);
      }
      this.statements.dropClaim.run(instanceId);
      return true;
    });
    this.batchTransaction = this.db.transaction((writes: QueuedWrite[]) => writes.map((write) => write.run()));
    this.singleTransaction = this.db.transaction((write: QueuedWrite) => write.run());
    this.releaseTransaction = this.db.transaction((staleBefore: number, instanceId: string) => {
      const released = this.statements.releaseStale.all({ staleBefore, instanceId });
      const refunds = new Map<string, number>();
      for (const row of released) refunds.set(row.account_id, (refunds.get(row.account_id) ?? 0) + row.amount_micro);
      for (const [id, amount] of refunds) this.statements.settle.run({ delta: -amount, id });
      this.statements.forgetInstances.run({ staleBefore, instanceId });
      return { reservations: released.length, micro: released.reduce((sum, row) => sum + row.amount_micro, 0) };
    });
  }

  private migrate(): void {
    this.db.exec(
      'CREATE TABLE IF NOT EXISTS infera_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)',
    );
    // IMMEDIATE takes the write lock up front, so two processes opening a fresh file do not both migrate.
    const run = this.db.transaction(() => {
      const applied = new Set(
        this.db.prepare<[], { version: number }>('SELECT version FROM infera_migrations').all().map((r) => r.version),
      );
      for (const migration of sqliteMigrations) {
        if (applied.has(migration.version)) continue;
        this.db.exec(migration.sql);
        this.db
          .prepare('INSERT INTO infera_migrations (version, name, applied_at) VALUES (?, ?, ?)')
          .run(migration.version, migration.name, Date.now());
      }
    });
    run.immediate();
  }

  async findKeyByHash(hash: string): Promise<KeyRecord | undefined> {
    const row = this.statements.keyByHash.get(hash);
    return row ? toKey(row) : undefined;
  }

  async createKey(key: KeyRecord): Promise<void> {
    this.statements.insertAccount.run(key.accountId, key.accountId, Date.now());
    this.statements.insertKey.run({
      ...key,
      models: key.models === null ? null : JSON.stringify(key.models),
      limits: key.limits === null ? null : JSON.stringify(key.limits),
      disabled: key.disabled ? 1 : 0,
    });
  }

  async listKeys(accountId?: string): Promise<KeyRecord[]> {
    const rows = accountId === undefined ? this.statements.listKeys.all() : this.statements.listKeysOf.all(accountId);
    return rows.map(toKey);
  }

  async revokeKey(id: string): Promise<boolean> {
    return this.statements.revokeKey.run(id).changes > 0;
  }

  /** An account as its server sees it: what this server holds in memory is not available, as when it was taken. */
  private seen(row: AccountRow): AccountRecord {
    const account = toAccount(row);
    const held = this.held.get(row.id);
    return held ? { ...account, balanceMicro: account.balanceMicro - held } : account;
  }

  async getAccount(id: string): Promise<AccountRecord | undefined> {
    const row = this.statements.account.get(id);
    return row ? this.seen(row) : undefined;
  }

  async ensureAccount(id: string, name = id): Promise<AccountRecord> {
    this.statements.insertAccount.run(id, name, Date.now());
    return this.seen(this.statements.account.get(id)!);
  }

  async listAccounts(): Promise<AccountRecord[]> {
    return this.statements.listAccounts.all().map((row) => this.seen(row));
  }

  async adjustBalance(id: string, deltaMicro: number): Promise<number> {
    return this.db.transaction(() => {
      this.statements.insertAccount.run(id, id, Date.now());
      this.statements.charge.run(-deltaMicro, id);
      return this.statements.account.get(id)!.balance_micro - (this.held.get(id) ?? 0);
    })();
  }

  async reserve(reservation: Reservation): Promise<ReserveResult> {
    // Waiting for another server's claim is bounded by its staleness: a silent holder's claim is void then.
    // The caller's clock (heartbeats are in it) moved on by the time waited.
    const started = Date.now();
    for (;;) {
      if (this.claimedBy !== undefined) {
        const held = this.holdInMemory(reservation);
        if (held) return held;
      }
      const waited = Date.now() - started;
      const result = await this.write(() => this.reserveBalance(reservation, reservation.createdAt + waited));
      if (result !== WAIT) return result;
      if (waited > 2 * this.staleAfterMs) throw new Error('another Infera server on this SQLite file holds reservations in memory and did not write them out');
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  resizeReservation(id: string, accountId: string, deltaMicro: number): Promise<ReserveResult> {
    const hold = this.holds.get(id);
    if (hold && this.claimedBy !== undefined) {
      if (deltaMicro > 0) {
        const available = (this.statements.balance.get(accountId) ?? 0) - (this.held.get(accountId) ?? 0);
        if (available < deltaMicro) return Promise.resolve({ ok: false, balanceMicro: available });
      }
      hold.amountMicro += deltaMicro;
      this.held.set(accountId, (this.held.get(accountId) ?? 0) + deltaMicro);
      return Promise.resolve({ ok: true, balanceMicro: (this.statements.balance.get(accountId) ?? 0) - this.held.get(accountId)! });
    }
    return this.write(() => this.resizeBalance(id, accountId, deltaMicro));
  }

  /**
   * A reservation held in memory (this server holds the claim). The claim is not looked at here (a read
   * of the file's header per request, ~2 % of a proxied request's CPU): a server that asked for it waits
   * until this one gives it up, on its next timer tick, and every hold made until then is written out then.
   */
  private holdInMemory(r: Reservation): ReserveResult | undefined {
    if (this.claimedBy === undefined) return undefined;
    const balance = this.statements.balance.get(r.accountId);
    const held = this.held.get(r.accountId) ?? 0;
    const available = (balance ?? 0) - held;
    // As the durable take: no account, or an amount the balance does not cover, takes nothing.
    if (balance === undefined || (r.amountMicro > 0 && available < r.amountMicro)) return { ok: false, balanceMicro: available };
    if (this.holds.has(r.id)) throw new Error(`reservation ${r.id} is already held`);
    this.holds.set(r.id, { accountId: r.accountId, amountMicro: r.amountMicro, instanceId: r.instanceId, requestId: r.requestId, createdAt: r.createdAt });
    this.held.set(r.accountId, held + r.amountMicro);
    return { ok: true, balanceMicro: available - r.amountMicro };
  }

  private release(id: string, hold: Hold): void {
    if (this.holds.get(id) !== hold) return;
    this.holds.delete(id);
    const left = (this.held.get(hold.accountId) ?? 0) - hold.amountMicro;
    if (left === 0) this.held.delete(hold.accountId);
    else this.held.set(hold.accountId, left);
  }

  /** Whether a claim's server may still hold reservations: it beat within staleAfter and, on this host, its process lives. */
  private claimLive(claim: ClaimRow, now: number): boolean {
    if (claim.host === hostname() && processGone(claim.pid)) return false;
    const beat = this.statements.beatOf.get(claim.instance_id);
    return beat !== undefined && beat >= now - this.staleAfterMs;
  }

  /** This store now holds the claim (its commit is durable). */
  private claimed(instanceId: string): void {
    this.claimedBy = instanceId;
    this.seenVersion = this.statements.dataVersion.get()!;
    // Another server asking for the claim must be answered even while this one serves nothing.
    this.claimTimer ??= setInterval(() => this.claimStillHeld(), CLAIM_POLL_MS);
    this.claimTimer.unref();
  }

  /**
   * Whether this store still holds the claim; gives it up when another server asked for it (or took it
   * as void). Reads the claim row only when another connection has committed since it last looked.
   */
  private claimStillHeld(): boolean {
    if (this.claimedBy === undefined || !this.db.open) return false;
    const version = this.statements.dataVersion.get()!;
    if (version === this.seenVersion) return true;
    this.seenVersion = version;
    const claim = this.statements.claim.get();
    if (claim?.instance_id === this.claimedBy && claim.yield_to === null) return true;
    this.yieldClaim();
    return this.claimedBy !== undefined;
  }

  /** Writes every hold out as the reservation row it stands for, and gives the claim up, in one commit. */
  private yieldClaim(): void {
    const instanceId = this.claimedBy!;
    let written: boolean;
    try {
      written = this.yieldTransaction.immediate(instanceId);
    } catch {
      // Busy or failing: still the holder (no other server reserves until the row is gone); the next look tries again.
      return;
    }
    if (written) {
      this.holds.clear();
      this.held.clear();
    }
    this.claimedBy = undefined;
    clearInterval(this.claimTimer);
    this.claimTimer = undefined;
  }

  /**
   * Checkpoints once a second from a worker thread with its own connection (a PASSIVE checkpoint runs
   * beside the writer): copying the WAL into the database and its two fsyncs took 10–100 ms per
   * checkpoint under load, all that time the event loop stood still and every request waited. Started
   * once a server has made CHECKPOINT_AFTER_COMMITS writes (heartbeats, reservations, ledger rows), so
   * CLI commands and a server that has served little start no thread.
   */
  private startCheckpoints(): void {
    if (this.checkpointer || this.checkpointTimer || this.path === ':memory:' || !this.db.open) return;
    const onMainThread = () => {
      this.checkpointer = undefined;
      this.checkpointTimer ??= setInterval(() => {
        try {
          if (!this.db.open) return;
          // On this thread nothing commits while it runs: a PASSIVE pass copies every frame, and the next commit rewinds.
          this.db.pragma('wal_checkpoint(PASSIVE)');
        } catch {
          // Busy (a CLI reading, say): the next tick tries again.
        }
      }, this.checkpointMs);
      this.checkpointTimer.unref();
    };
    try {
      const worker = new Worker(CHECKPOINTER, {
        eval: true,
        workerData: {
          module: createRequire(import.meta.url).resolve('better-sqlite3'),
          path: this.path,
          intervalMs: this.checkpointMs,
          restartFrames: this.restartFrames,
        },
      });
      worker.unref();
      // A worker that cannot open the file (or dies) leaves the checkpoints to this thread, as before.
      worker.once('error', () => {
        if (this.checkpointer === worker) onMainThread();
      });
      this.checkpointer = worker;
    } catch {
      onMainThread();
    }
  }

  /** Queues a write for this turn's batch transaction. */
  private write<T>(run: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.writes.push({ run, resolve: resolve as (value: never) => void, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        // setImmediate, not a microtask: the writes of every request handled in this turn join it.
        setImmediate(this.flushWrites);
      }
    });
  }

  /** What the transaction that just committed left to do in memory. */
  private committed(): void {
    const after = this.afterCommit;
    if (after.length === 0) return;
    this.afterCommit = [];
    for (const run of after) run();
  }

  /** Commits every queued write in one IMMEDIATE transaction (the write lock first, so another process cannot slip in between a check and its take). */
  private flush(): void {
    this.flushScheduled = false;
    const writes = this.writes;
    if (writes.length === 0) return;
    this.writes = [];
    this.countCommit();
    let results: unknown[];
    this.afterCommit = [];
    try {
      results = writes.length === 1 ? [this.singleTransaction.immediate(writes[0]!)] : this.batchTransaction.immediate(writes);
    } catch (error) {
      if (writes.length === 1 || !this.db.open) {
        this.afterCommit = [];
        for (const write of writes) write.reject(error);
        return;
      }
      // One write (or the commit) failed and the whole batch rolled back: each on its own now, so a
      // failure fails only the write that caused it, as with one transaction per write.
      for (const write of writes) {
        this.afterCommit = [];
        try {
          const result = this.singleTransaction.immediate(write);
          this.committed();
          write.resolve(result as never);
        } catch (failure) {
          write.reject(failure);
        }
      }
      this.afterCommit = [];
      return;
    }
    this.committed();
    for (let i = 0; i < writes.length; i++) writes[i]!.resolve(results[i] as never);
  }

  async heartbeat(instanceId: string, now: number): Promise<void> {
    this.statements.heartbeat.run(instanceId, now);
    this.countCommit();
  }

  /** A commit made (or about to be): the checkpoint thread starts at the CHECKPOINT_AFTER_COMMITS-th. */
  private countCommit(): void {
    if (this.commitsBeforeCheckpoints > 0 && --this.commitsBeforeCheckpoints > 0) return;
    if (!this.checkpointer && !this.checkpointTimer) this.startCheckpoints();
  }

  async releaseStale(staleBefore: number, options: { instanceId?: string } = {}): Promise<{ reservations: number; micro: number }> {
    const released = this.releaseTransaction.immediate(staleBefore, options.instanceId ?? '');
    if (options.instanceId === undefined || options.instanceId !== this.claimedBy) return released;
    // Its own shutdown: holds took nothing from the file, so letting them go gives them back; the claim goes too.
    let micro = 0;
    for (const hold of this.holds.values()) micro += hold.amountMicro;
    const reservations = this.holds.size;
    this.statements.dropClaim.run(this.claimedBy);
    this.holds.clear();
    this.held.clear();
    this.claimedBy = undefined;
    clearInterval(this.claimTimer);
    this.claimTimer = undefined;
    return { reservations: released.reservations + reservations, micro: released.micro + micro };
  }

  async appendLedger(rows: LedgerRow[]): Promise<void> {
    this.appendLedgerSync(rows);
  }

  appendLedgerSync(rows: LedgerRow[]): void {
    if (rows.length === 0) return;
    // LedgerWriter already gathered this turn's rows: commit now (with any reservation queued so far)
    // rather than one more turn later; the answers wait for this commit.
    let failed = false;
    let failure: unknown;
    this.writes.push({
      run: () => this.appendRows(rows),
      resolve: ignore,
      reject: (error) => {
        failed = true;
        failure = error;
      },
    });
    this.flush();
    if (failed) throw failure;
  }

  async usage(query: UsageQuery): Promise<UsageAggregate[]> {
    const group = groupExpression.sqlite[query.by];
    const where: string[] = [];
    const params: (string | number)[] = [];
    const condition = (sql: string, value: string | number) => {
      where.push(sql);
      params.push(value);
    };
    if (query.since !== undefined) condition('created_at >= ?', query.since);
    if (query.until !== undefined) condition('created_at < ?', query.until);
    if (query.accountId !== undefined) condition('account_id = ?', query.accountId);
    const sql = `SELECT ${group} AS grp, COUNT(*) AS requests,
        SUM(CASE WHEN outcome = 'error' THEN 1 ELSE 0 END) AS errors,
        SUM(CASE WHEN outcome = 'cancelled' THEN 1 ELSE 0 END) AS cancelled,
        SUM(prompt_tokens) AS pt, SUM(completion_tokens) AS ct, SUM(reasoning_tokens) AS rt,
        SUM(images) AS img, SUM(documents) AS docs, SUM(cost_micro) AS cost, AVG(latency_ms) AS lat
      FROM ledger ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      GROUP BY grp ORDER BY requests DESC, grp`;
    const rows = this.db.prepare(sql).all(...params) as Record<string, number | string>[];
    return rows.map((row) => ({
      group: String(row.grp),
      requests: Number(row.requests),
      errors: Number(row.errors),
      cancelled: Number(row.cancelled),
      promptTokens: Number(row.pt),
      completionTokens: Number(row.ct),
      reasoningTokens: Number(row.rt),
      images: Number(row.img),
      documents: Number(row.docs),
      costMicro: Number(row.cost),
      avgLatencyMs: Math.round(Number(row.lat)),
    }));
  }

  async countLedger(): Promise<number> {
    return this.statements.countLedger.get()!.n;
  }

  async hasRequest(requestId: string): Promise<boolean> {
    return this.statements.hasRequest.get(requestId) !== undefined;
  }

  async close(): Promise<void> {
    clearInterval(this.checkpointTimer);
    clearInterval(this.claimTimer);
    // A claim left behind would make another server wait until this process is gone (pid) or silent.
    if (this.claimedBy !== undefined && this.db.open) {
      try {
        this.statements.dropClaim.run(this.claimedBy);
      } catch {}
      this.claimedBy = undefined;
    }
    const worker = this.checkpointer;
    this.checkpointer = undefined;
    if (worker) {
      // Asked to stop between two checkpoints (its connection closed cleanly), not terminated inside one.
      const exited = new Promise((resolve) => worker.once('exit', resolve));
      // Held by the loop until it has exited, or a process with nothing else to do would quit mid-close.
      worker.ref();
      worker.postMessage('close');
      await exited;
    }
    if (this.db.open) this.flush();
    if (this.db.open) this.db.close();
  }
}
