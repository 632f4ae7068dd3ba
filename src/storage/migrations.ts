// Versioned schema migrations, one list per dialect. Append only: a released version is never edited,
// a change is a new version. Both drivers record applied versions in `infera_migrations` and run the
// missing ones at startup inside a transaction (Postgres also under an advisory lock, for replicas
// starting together).

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const sqliteMigrations: Migration[] = [
  {
    version: 1,
    name: 'accounts, keys, ledger',
    sql: `
      CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        balance_micro INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
      );
      CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        models TEXT,
        limits TEXT,
        expires_at INTEGER,
        disabled INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
      );
      CREATE INDEX api_keys_account ON api_keys(account_id);
      CREATE TABLE ledger (
        id INTEGER PRIMARY KEY,
        request_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        model TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        images INTEGER NOT NULL,
        documents INTEGER NOT NULL,
        latency_ms INTEGER NOT NULL,
        status INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        cost_micro INTEGER NOT NULL,
        created_at INTEGER NOT NULL
      );
      CREATE INDEX ledger_created ON ledger(created_at);
      CREATE INDEX ledger_request ON ledger(request_id);
    `,
  },
  {
    version: 2,
    name: 'requested model id, durable balance reservations, instance heartbeats',
    sql: `
      ALTER TABLE ledger ADD COLUMN requested_model TEXT;
      CREATE TABLE reservations (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        amount_micro INTEGER NOT NULL,
        instance_id TEXT NOT NULL,
        request_id TEXT NOT NULL,
        created_at INTEGER NOT NULL
      );
      CREATE INDEX reservations_instance ON reservations(instance_id);
      CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        heartbeat_at INTEGER NOT NULL
      );
    `,
  },
  {
    version: 3,
    name: 'ledger note: what happened beyond the numbers (an upstream fault, usage Infera had to count itself)',
    sql: `ALTER TABLE ledger ADD COLUMN note TEXT;`,
  },
  {
    version: 4,
    name: 'reservations in one b-tree: WITHOUT ROWID, no instance index',
    // A priced request inserts its reservation and deletes it again, each in a commit of its own; every
    // b-tree page a commit touches is one WAL frame (two pwrite calls and a checksum over the page).
    // With a rowid, the text primary key and the instance index, that was three pages per commit, more
    // than half of a request's WAL frames (strace: 23 pwrite64 per request). WITHOUT ROWID keeps the
    // rows in their primary-key b-tree; the instance index served only the heartbeat's stale sweep,
    // which now scans a table that holds the requests in flight, no more.
    sql: `
      CREATE TABLE reservations_v4 (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        amount_micro INTEGER NOT NULL,
        instance_id TEXT NOT NULL,
        request_id TEXT NOT NULL,
        created_at INTEGER NOT NULL
      ) WITHOUT ROWID;
      INSERT INTO reservations_v4 (id, account_id, amount_micro, instance_id, request_id, created_at)
        SELECT id, account_id, amount_micro, instance_id, request_id, created_at FROM reservations;
      DROP TABLE reservations;
      ALTER TABLE reservations_v4 RENAME TO reservations;
    `,
  },
  {
    version: 5,
    name: 'hold claim: the one server that holds its reservations in memory, and who asked it to stop',
    // SqliteStore (memoryHolds): while one server is the only live one on the file it keeps reservations
    // in memory (no commit of their own) and holds this row; another server that wants to reserve asks
    // it to write them out (yield_to) and waits until the row is gone. host and pid: a claim whose process
    // is gone from this host is void at once, not only when its heartbeat goes stale.
    sql: `
      CREATE TABLE hold_claim (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        instance_id TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        yield_to TEXT
      );
    `,
  },
];

export const postgresMigrations: Migration[] = [
  {
    version: 1,
    name: 'accounts, keys, ledger',
    sql: `
      CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        balance_micro BIGINT NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL
      );
      CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        models JSONB,
        limits JSONB,
        expires_at BIGINT,
        disabled BOOLEAN NOT NULL DEFAULT FALSE,
        created_at BIGINT NOT NULL
      );
      CREATE INDEX api_keys_account ON api_keys(account_id);
      CREATE TABLE ledger (
        id BIGSERIAL PRIMARY KEY,
        request_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        model TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        images INTEGER NOT NULL,
        documents INTEGER NOT NULL,
        latency_ms INTEGER NOT NULL,
        status INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        cost_micro BIGINT NOT NULL,
        created_at BIGINT NOT NULL
      );
      CREATE INDEX ledger_created ON ledger(created_at);
      CREATE INDEX ledger_request ON ledger(request_id);
    `,
  },
  {
    version: 2,
    name: 'requested model id, durable balance reservations, instance heartbeats',
    sql: `
      ALTER TABLE ledger ADD COLUMN requested_model TEXT;
      CREATE TABLE reservations (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        amount_micro BIGINT NOT NULL,
        instance_id TEXT NOT NULL,
        request_id TEXT NOT NULL,
        created_at BIGINT NOT NULL
      );
      CREATE INDEX reservations_instance ON reservations(instance_id);
      CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        heartbeat_at BIGINT NOT NULL
      );
    `,
  },
  {
    version: 3,
    name: 'ledger note: what happened beyond the numbers (an upstream fault, usage Infera had to count itself)',
    sql: `ALTER TABLE ledger ADD COLUMN note TEXT;`,
  },
];
