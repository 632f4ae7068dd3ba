// Keys, accounts and the ledger in Postgres, for several Infera replicas behind one load balancer.
// Ledger batches are one multi-row INSERT plus the balance charges in one transaction (group commit).
import pg from 'pg';
import { postgresMigrations } from './migrations.ts';
import { checkedKey, groupExpression } from './sqlite-store.ts';
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

// BIGINT columns come back as strings by default; our values (micro-units, epoch ms) fit in 2^53.
pg.types.setTypeParser(pg.types.builtins.INT8, (value: string) => Number(value));

export interface PostgresStoreOptions {
  connectionString: string;
  /** Schema for the tables; created when missing. */
  schema?: string;
  poolSize?: number;
}

interface KeyRow {
  id: string;
  name: string;
  account_id: string;
  hash: string;
  prefix: string;
  models: string[] | null;
  limits: Record<string, number> | null;
  expires_at: number | null;
  disabled: boolean;
  created_at: number;
}

interface AccountRow {
  id: string;
  name: string;
  balance_micro: number;
  created_at: number;
}

const toKey = (row: KeyRow): KeyRecord =>
  checkedKey({
    id: row.id,
    name: row.name,
    accountId: row.account_id,
    hash: row.hash,
    prefix: row.prefix,
    models: row.models,
    limits: row.limits,
    expiresAt: row.expires_at,
    disabled: row.disabled,
    createdAt: row.created_at,
  });

const toAccount = (row: AccountRow): AccountRecord => ({
  id: row.id,
  name: row.name,
  balanceMicro: row.balance_micro,
  createdAt: row.created_at,
});

const ledgerColumns = [
  'request_id', 'account_id', 'key_id', 'model', 'requested_model', 'endpoint', 'prompt_tokens', 'completion_tokens',
  'reasoning_tokens', 'images', 'documents', 'latency_ms', 'status', 'outcome', 'cost_micro', 'created_at', 'note',
] as const;

const ledgerValues = (row: LedgerRow): unknown[] => [
  row.requestId, row.accountId, row.keyId, row.model, row.requestedModel ?? null, row.endpoint, row.promptTokens, row.completionTokens,
  row.reasoningTokens, row.images, row.documents, Math.round(row.latencyMs), row.status, row.outcome,
  row.costMicro, row.createdAt, row.note ?? null,
];

export class PostgresStore implements PlatformStore {
  readonly kind = 'postgres' as const;
  private readonly pool: pg.Pool;
  private readonly schema: string;

  private constructor(options: PostgresStoreOptions) {
    this.schema = options.schema ?? 'public';
    if (!/^[a-z_][a-z0-9_]*$/.test(this.schema)) throw new Error(`invalid Postgres schema name "${this.schema}"`);
    this.pool = new pg.Pool({
      connectionString: options.connectionString,
      max: options.poolSize ?? 8,
      // Sent in the startup packet: every pooled connection resolves unqualified tables in our schema.
      options: `-c search_path=${this.schema}`,
    });
    // A dropped idle connection must not crash the process; the next query reconnects.
    this.pool.on('error', () => {});
  }

  static async open(options: PostgresStoreOptions): Promise<PostgresStore> {
    const store = new PostgresStore(options);
    try {
      await store.migrate();
    } catch (error) {
      await store.pool.end().catch(() => {});
      // Say which database, without its password, so a wrong URL is obvious at startup.
      const where = options.connectionString.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
      throw new Error(`Cannot open the Postgres store at ${where}: ${(error as Error).message}`, { cause: error });
    }
    return store;
  }

  private async migrate(): Promise<void> {
    const client = await this.pool.connect();
    try {
      await client.query(`CREATE SCHEMA IF NOT EXISTS "${this.schema}"`).catch((error: { code?: string }) => {
        // Two replicas racing on CREATE SCHEMA IF NOT EXISTS can still collide on the catalog index.
        if (error.code !== '23505') throw error;
      });
      await client.query(`SET search_path TO "${this.schema}"`);
      // Replicas starting at once take turns; the second finds the versions applied.
      await client.query('SELECT pg_advisory_lock(hashtext($1))', [`infera-migrations:${this.schema}`]);
      try {
        await client.query(
          'CREATE TABLE IF NOT EXISTS infera_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)',
        );
        const { rows } = await client.query<{ version: number }>('SELECT version FROM infera_migrations');
        const applied = new Set(rows.map((r) => r.version));
        for (const migration of postgresMigrations) {
          if (applied.has(migration.version)) continue;
          await client.query('BEGIN');
          try {
            await client.query(migration.sql);
            await client.query('INSERT INTO infera_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [
              migration.version,
              migration.name,
              Date.now(),
            ]);
            await client.query('COMMIT');
          } catch (error) {
            await client.query('ROLLBACK');
            throw error;
          }
        }
      } finally {
        await client.query('SELECT pg_advisory_unlock(hashtext($1))', [`infera-migrations:${this.schema}`]);
      }
    } finally {
      client.release();
    }
  }

  async findKeyByHash(hash: string): Promise<KeyRecord | undefined> {
    const { rows } = await this.pool.query<KeyRow>('SELECT * FROM api_keys WHERE hash = $1', [hash]);
    return rows[0] ? toKey(rows[0]) : undefined;
  }

  async createKey(key: KeyRecord): Promise<void> {
    await this.ensureAccount(key.accountId);
    await this.pool.query(
      `INSERT INTO api_keys (id, name, account_id, hash, prefix, models, limits, expires_at, disabled, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
      [
        key.id,
        key.name,
        key.accountId,
        key.hash,
        key.prefix,
        key.models === null ? null : JSON.stringify(key.models),
        key.limits === null ? null : JSON.stringify(key.limits),
        key.expiresAt,
        key.disabled,
        key.createdAt,
      ],
    );
  }

  async listKeys(accountId?: string): Promise<KeyRecord[]> {
    const { rows } =
      accountId === undefined
        ? await this.pool.query<KeyRow>('SELECT * FROM api_keys ORDER BY created_at, id')
        : await this.pool.query<KeyRow>('SELECT * FROM api_keys WHERE account_id = $1 ORDER BY created_at, id', [
            accountId,
          ]);
    return rows.map(toKey);
  }

  async revokeKey(id: string): Promise<boolean> {
    const result = await this.pool.query('UPDATE api_keys SET disabled = TRUE WHERE id = $1', [id]);
    return (result.rowCount ?? 0) > 0;
  }

  async getAccount(id: string): Promise<AccountRecord | undefined> {
    const { rows } = await this.pool.query<AccountRow>('SELECT * FROM accounts WHERE id = $1', [id]);
    return rows[0] ? toAccount(rows[0]) : undefined;
  }

  async ensureAccount(id: string, name = id): Promise<AccountRecord> {
    await this.pool.query(
      'INSERT INTO accounts (id, name, balance_micro, created_at) VALUES ($1, $2, 0, $3) ON CONFLICT (id) DO NOTHING',
      [id, name, Date.now()],
    );
    return (await this.getAccount(id))!;
  }

  async listAccounts(): Promise<AccountRecord[]> {
    const { rows } = await this.pool.query<AccountRow>('SELECT * FROM accounts ORDER BY created_at, id');
    return rows.map(toAccount);
  }

  async adjustBalance(id: string, deltaMicro: number): Promise<number> {
    const { rows } = await this.pool.query<{ balance_micro: number }>(
      `INSERT INTO accounts (id, name, balance_micro, created_at) VALUES ($1, $1, $2, $3)
       ON CONFLICT (id) DO UPDATE SET balance_micro = accounts.balance_micro + EXCLUDED.balance_micro
       RETURNING balance_micro`,
      [id, deltaMicro, Date.now()],
    );
    return rows[0]!.balance_micro;
  }

  async reserve(reservation: Reservation): Promise<ReserveResult> {
    // One statement: the conditional UPDATE takes the account row's lock, and a concurrent one waits for
    // it and then re-checks its WHERE against the committed balance (READ COMMITTED), so replicas
    // reserving at once can never take more than the balance holds.
    const { rows } = await this.pool.query<{ taken: number | null; current: number | null }>(
      `WITH taken AS (
         UPDATE accounts SET balance_micro = balance_micro - $3
         WHERE id = $2 AND ($3 <= 0 OR balance_micro >= $3) RETURNING id, balance_micro),
       recorded AS (
         INSERT INTO reservations (id, account_id, amount_micro, instance_id, request_id, created_at)
         SELECT $1, id, $3, $4, $5, $6 FROM taken RETURNING id)
       SELECT (SELECT balance_micro FROM taken) AS taken, (SELECT balance_micro FROM accounts WHERE id = $2) AS current,
         (SELECT count(*) FROM recorded) AS recorded`,
      [reservation.id, reservation.accountId, reservation.amountMicro, reservation.instanceId, reservation.requestId, reservation.createdAt],
    );
    const row = rows[0]!;
    return row.taken !== null ? { ok: true, balanceMicro: row.taken } : { ok: false, balanceMicro: row.current ?? 0 };
  }

  async resizeReservation(id: string, accountId: string, deltaMicro: number): Promise<ReserveResult> {
    const { rows } = await this.pool.query<{ taken: number | null; current: number | null; held: number }>(
      `WITH held AS (SELECT id FROM reservations WHERE id = $1),
       taken AS (
         UPDATE accounts SET balance_micro = balance_micro - $3
         WHERE id = $2 AND $3 <> 0 AND EXISTS (SELECT 1 FROM held) AND ($3 <= 0 OR balance_micro >= $3)
         RETURNING balance_micro),
       grown AS (
         UPDATE reservations SET amount_micro = amount_micro + $3 WHERE id = $1 AND EXISTS (SELECT 1 FROM taken) RETURNING id)
       SELECT (SELECT balance_micro FROM taken) AS taken, (SELECT balance_micro FROM accounts WHERE id = $2) AS current,
         (SELECT count(*) FROM held) AS held, (SELECT count(*) FROM grown) AS grown`,
      [id, accountId, deltaMicro],
    );
    const row = rows[0]!;
    if (row.taken !== null) return { ok: true, balanceMicro: row.taken };
    // Nothing to change (a zero delta, or a reservation already released) is not a refusal.
    return { ok: deltaMicro === 0 || Number(row.held) === 0, balanceMicro: row.current ?? 0 };
  }

  async heartbeat(instanceId: string, now: number): Promise<void> {
    await this.pool.query(
      'INSERT INTO instances (id, heartbeat_at) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at',
      [instanceId, now],
    );
  }

  async releaseStale(staleBefore: number, options: { instanceId?: string } = {}): Promise<{ reservations: number; micro: number }> {
    // Replicas sweeping at once each DELETE a given reservation at most once (row locks), so a refund
    // is never paid twice; a settlement racing the sweep finds the row gone and charges in full.
    const { rows } = await this.pool.query<{ n: number; micro: number }>(
      `WITH released AS (
         DELETE FROM reservations WHERE instance_id = $2
           OR instance_id NOT IN (SELECT id FROM instances WHERE heartbeat_at >= $1)
         RETURNING account_id, amount_micro),
       refunds AS (SELECT account_id, SUM(amount_micro) AS amount, COUNT(*) AS n FROM released GROUP BY account_id),
       refunded AS (
         UPDATE accounts SET balance_micro = accounts.balance_micro + refunds.amount
         FROM refunds WHERE accounts.id = refunds.account_id RETURNING accounts.id),
       forgotten AS (DELETE FROM instances WHERE id = $2 OR heartbeat_at < $1 RETURNING id)
       SELECT COALESCE(SUM(n), 0)::bigint AS n, COALESCE(SUM(amount), 0)::bigint AS micro,
         (SELECT count(*) FROM refunded) AS accounts, (SELECT count(*) FROM forgotten) AS instances FROM refunds`,
      [staleBefore, options.instanceId ?? ''],
    );
    return { reservations: Number(rows[0]?.n ?? 0), micro: Number(rows[0]?.micro ?? 0) };
  }

  async appendLedger(rows: LedgerRow[]): Promise<void> {
    if (rows.length === 0) return;
    // ≤ 2000 rows (16 columns) stay under Postgres' 65535 bind parameters: then the rows, the released
    // reservations and the balance charges are ONE statement — atomic on its own, one round trip, one
    // commit. Bigger batches fall back to an explicit transaction.
    if (rows.length <= 2000) {
      const { text, values } = this.ledgerStatement(rows);
      await this.pool.query(text, values);
      return;
    }
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      for (let start = 0; start < rows.length; start += 2000) {
        const { text, values } = this.ledgerStatement(rows.slice(start, start + 2000));
        await client.query(text, values);
      }
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      throw error;
    } finally {
      client.release();
    }
  }

  private ledgerStatement(rows: LedgerRow[]): { text: string; values: unknown[] } {
    const width = ledgerColumns.length;
    const tuples = rows.map((_, r) => `(${ledgerColumns.map((_, i) => `$${r * width + i + 1}`).join(',')})`);
    const insert = `INSERT INTO ledger (${ledgerColumns.join(',')}) VALUES ${tuples.join(',')}`;
    const values = rows.flatMap(ledgerValues);
    const reservations = rows.flatMap((row) => (row.reservationId ? [row.reservationId] : []));
    if (reservations.length === 0 && !rows.some((row) => row.costMicro > 0)) return { text: insert, values };
    values.push(reservations);
    // Per account: costs minus what its released reservations held. A charge never takes a balance
    // below zero (or below where an operator already put it); a refund always applies in full.
    const text = `WITH inserted AS (${insert} RETURNING account_id, cost_micro),
      released AS (DELETE FROM reservations WHERE id = ANY($${values.length}::text[]) RETURNING account_id, amount_micro),
      moves AS (SELECT account_id, cost_micro AS delta FROM inserted UNION ALL SELECT account_id, -amount_micro FROM released),
      charges AS (SELECT account_id, SUM(delta) AS delta FROM moves GROUP BY account_id HAVING SUM(delta) <> 0)
      UPDATE accounts SET balance_micro = CASE WHEN charges.delta > 0
          THEN GREATEST(accounts.balance_micro - charges.delta, LEAST(accounts.balance_micro, 0))
          ELSE accounts.balance_micro - charges.delta END
      FROM charges WHERE accounts.id = charges.account_id`;
    return { text, values };
  }

  async usage(query: UsageQuery): Promise<UsageAggregate[]> {
    const group = groupExpression.postgres[query.by];
    const where: string[] = [];
    const params: (string | number)[] = [];
    const condition = (sql: string, value: string | number) => {
      params.push(value);
      where.push(`${sql} $${params.length}`);
    };
    if (query.since !== undefined) condition('created_at >=', query.since);
    if (query.until !== undefined) condition('created_at <', query.until);
    if (query.accountId !== undefined) condition('account_id =', query.accountId);
    const { rows } = await this.pool.query<Record<string, string | number>>(
      `SELECT ${group} AS grp, COUNT(*) AS requests,
        SUM(CASE WHEN outcome = 'error' THEN 1 ELSE 0 END) AS errors,
        SUM(CASE WHEN outcome = 'cancelled' THEN 1 ELSE 0 END) AS cancelled,
        SUM(prompt_tokens) AS pt, SUM(completion_tokens) AS ct, SUM(reasoning_tokens) AS rt,
        SUM(images) AS img, SUM(documents) AS docs, SUM(cost_micro) AS cost, AVG(latency_ms) AS lat
      FROM ledger ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      GROUP BY grp ORDER BY requests DESC, grp`,
      params,
    );
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
    const { rows } = await this.pool.query<{ n: number }>('SELECT COUNT(*)::int AS n FROM ledger');
    return rows[0]!.n;
  }

  async hasRequest(requestId: string): Promise<boolean> {
    const { rows } = await this.pool.query('SELECT 1 FROM ledger WHERE request_id = $1 LIMIT 1', [requestId]);
    return rows.length > 0;
  }

  /** Drops the schema: tests only, so parallel runs leave nothing behind. */
  async dropSchema(): Promise<void> {
    if (this.schema === 'public') throw new Error('refusing to drop the public schema');
    await this.pool.query(`DROP SCHEMA IF EXISTS "${this.schema}" CASCADE`);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
