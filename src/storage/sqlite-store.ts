// The embedded default: one SQLite file in WAL mode. better-sqlite3 is synchronous, which is what makes
// the group commit cheap: a whole batch of ledger rows is one transaction on one thread, no round trips.
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { sqliteMigrations } from './migrations.ts';
import type {
  AccountRecord,
  KeyRecord,
  LedgerRow,
  PlatformStore,
  UsageAggregate,
  UsageQuery,
} from './types.ts';

export interface SqliteStoreOptions {
  /** "normal" survives a process kill (WAL); "full" also survives power loss. */
  synchronous?: 'normal' | 'full';
}

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

const toKey = (row: KeyRow): KeyRecord => ({
  id: row.id,
  name: row.name,
  accountId: row.account_id,
  hash: row.hash,
  prefix: row.prefix,
  models: row.models === null ? null : (JSON.parse(row.models) as string[]),
  limits: row.limits === null ? null : (JSON.parse(row.limits) as Record<string, number>),
  expiresAt: row.expires_at,
  disabled: row.disabled !== 0,
  createdAt: row.created_at,
});

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

export class SqliteStore implements PlatformStore {
  readonly kind = 'sqlite' as const;
  private readonly db: Database.Database;
  private readonly statements;
  private readonly appendTransaction: (rows: LedgerRow[]) => void;
  private readonly checkpointTimer: NodeJS.Timeout;

  constructor(readonly path: string, options: SqliteStoreOptions = {}) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma(`synchronous = ${options.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
    // The CLI and a running server share the file: wait for a lock instead of failing at once.
    this.db.pragma('busy_timeout = 5000');
    this.db.pragma('foreign_keys = ON');
    // SQLite's automatic checkpoint runs inside a commit every 1000 WAL pages, with an fsync: a latency
    // spike on some unlucky request. Checkpointing on a timer instead costs less too — every ledger
    // commit rewrites the same few tail pages, so one checkpoint per second copies each page once.
    this.db.pragma('wal_autocheckpoint = 0');
    this.checkpointTimer = setInterval(() => {
      try {
        this.db.pragma('wal_checkpoint(PASSIVE)');
      } catch {
        // Busy (a CLI reading, say): the next tick tries again.
      }
    }, 1000);
    this.checkpointTimer.unref();
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
      insertAccount: db.prepare<[string, string, number]>(
        'INSERT INTO accounts (id, name, balance_micro, created_at) VALUES (?, ?, 0, ?) ON CONFLICT (id) DO NOTHING',
      ),
      listAccounts: db.prepare<[], AccountRow>('SELECT * FROM accounts ORDER BY created_at, id'),
      charge: db.prepare<[number, string]>('UPDATE accounts SET balance_micro = balance_micro - ? WHERE id = ?'),
      insertLedger: db.prepare(
        `INSERT INTO ledger (request_id, account_id, key_id, model, endpoint, prompt_tokens, completion_tokens,
           reasoning_tokens, images, documents, latency_ms, status, outcome, cost_micro, created_at)
         VALUES (@requestId, @accountId, @keyId, @model, @endpoint, @promptTokens, @completionTokens,
           @reasoningTokens, @images, @documents, @latencyMs, @status, @outcome, @costMicro, @createdAt)`,
      ),
      countLedger: db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM ledger'),
      hasRequest: db.prepare<[string], { n: number }>('SELECT 1 AS n FROM ledger WHERE request_id = ? LIMIT 1'),
    };
    this.appendTransaction = this.db.transaction((rows: LedgerRow[]) => {
      const charges = new Map<string, number>();
      for (const row of rows) {
        this.statements.insertLedger.run(row);
        if (row.costMicro > 0) charges.set(row.accountId, (charges.get(row.accountId) ?? 0) + row.costMicro);
      }
      for (const [accountId, cost] of charges) this.statements.charge.run(cost, accountId);
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

  async getAccount(id: string): Promise<AccountRecord | undefined> {
    const row = this.statements.account.get(id);
    return row ? toAccount(row) : undefined;
  }

  async ensureAccount(id: string, name = id): Promise<AccountRecord> {
    this.statements.insertAccount.run(id, name, Date.now());
    return toAccount(this.statements.account.get(id)!);
  }

  async listAccounts(): Promise<AccountRecord[]> {
    return this.statements.listAccounts.all().map(toAccount);
  }

  async adjustBalance(id: string, deltaMicro: number): Promise<number> {
    return this.db.transaction(() => {
      this.statements.insertAccount.run(id, id, Date.now());
      this.statements.charge.run(-deltaMicro, id);
      return this.statements.account.get(id)!.balance_micro;
    })();
  }

  async appendLedger(rows: LedgerRow[]): Promise<void> {
    if (rows.length > 0) this.appendTransaction(rows);
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
    if (this.db.open) this.db.close();
  }
}
