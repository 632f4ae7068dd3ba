// The SQLite store commits the reservations, resizes and ledger rows of one event-loop turn in one
// transaction. What must still hold, write by write: the balance is never overdrawn however many
// reservations share a commit, each caller learns its own outcome, a write that fails fails alone (the
// rest of its batch still commits), and a promise resolves only once its write is on disk (a second
// connection — another process's view — sees it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { sqliteMigrations } from './migrations.ts';
import { SqliteStore, type SqliteStoreOptions } from './sqlite-store.ts';
import type { LedgerRow, Reservation } from './types.ts';

const reservation = (id: string, amountMicro: number): Reservation => ({
  id,
  accountId: 'acct',
  amountMicro,
  instanceId: 'inst_test',
  requestId: `req_${id}`,
  createdAt: Date.now(),
});

const row = (requestId: string, reservationId: string | undefined, costMicro: number): LedgerRow => ({
  requestId,
  accountId: 'acct',
  keyId: 'key',
  model: 'm',
  endpoint: 'chat',
  promptTokens: 1,
  completionTokens: 1,
  reasoningTokens: 0,
  images: 0,
  documents: 0,
  latencyMs: 1,
  status: 200,
  outcome: 'ok',
  costMicro,
  createdAt: Date.now(),
  ...(reservationId ? { reservationId } : {}),
});

async function withStore(run: (store: SqliteStore, path: string) => Promise<void>, options: SqliteStoreOptions = {}): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'infera-sqlite-batch-'));
  const path = join(dir, 'infera.db');
  const store = new SqliteStore(path, options);
  try {
    await store.heartbeat('inst_test', Date.now());
    await store.adjustBalance('acct', 10);
    await run(store, path);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('reservations of one turn share a commit and never overdraw: 25 of 1 against a balance of 10 → exactly 10 taken', () =>
  withStore(async (store) => {
    const results = await Promise.all(Array.from({ length: 25 }, (_, i) => store.reserve(reservation(`r${i}`, 1))));
    assert.equal(results.filter((r) => r.ok).length, 10);
    // In order: the first ten are taken, each seeing the balance left after its own take.
    assert.deepEqual(results.slice(0, 10).map((r) => r.balanceMicro), [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
    assert.ok(results.slice(10).every((r) => !r.ok && r.balanceMicro === 0));
    assert.equal((await store.getAccount('acct'))!.balanceMicro, 0);
  }));

test('a failing write fails alone: a duplicate reservation id is refused, the rest of its batch commits', () =>
  withStore(async (store) => {
    await store.reserve(reservation('dup', 1));
    const [a, b, c] = await Promise.allSettled([store.reserve(reservation('a', 2)), store.reserve(reservation('dup', 1)), store.reserve(reservation('c', 3))]);
    assert.equal(a.status, 'fulfilled');
    assert.equal(b.status, 'rejected');
    assert.match(String((b as PromiseRejectedResult).reason), /UNIQUE|PRIMARY KEY|constraint/i);
    assert.equal(c.status, 'fulfilled');
    // 10 - 1 (dup) - 2 (a) - 3 (c); the refused duplicate took nothing.
    assert.equal((await store.getAccount('acct'))!.balanceMicro, 4);
  }));

test('resizes and ledger rows queued with reservations keep their order and settle exactly', () =>
  withStore(async (store) => {
    const reserved = store.reserve(reservation('x', 4));
    const grown = store.resizeReservation('x', 'acct', 3);
    const refused = store.resizeReservation('x', 'acct', 100);
    assert.deepEqual(await reserved, { ok: true, balanceMicro: 6 });
    assert.deepEqual(await grown, { ok: true, balanceMicro: 3 });
    assert.equal((await refused).ok, false);
    // The row releases the 7 held and charges 5: 3 + 7 - 5.
    await store.appendLedger([row('req_x', 'x', 5)]);
    assert.equal((await store.getAccount('acct'))!.balanceMicro, 5);
  }));

test('a resolved write is committed: another connection sees the reservation and the ledger row', () =>
  withStore(async (store, path) => {
    const other = new Database(path, { readonly: true });
    const value = (sql: string, ...args: string[]) => Object.values(other.prepare(sql).get(...args) as Record<string, number>)[0];
    try {
      const ok = await store.reserve(reservation('seen', 2));
      assert.equal(ok.ok, true);
      assert.equal(value('SELECT balance_micro AS b FROM accounts WHERE id = ?', 'acct'), 8);
      assert.equal(value('SELECT COUNT(*) AS n FROM reservations WHERE id = ?', 'seen'), 1);
      await store.appendLedger([row('req_seen', 'seen', 1)]);
      assert.equal(value('SELECT COUNT(*) AS n FROM ledger WHERE request_id = ?', 'req_seen'), 1);
      assert.equal(value('SELECT COUNT(*) AS n FROM reservations'), 0);
      assert.equal(value('SELECT balance_micro AS b FROM accounts WHERE id = ?', 'acct'), 9);
    } finally {
      other.close();
    }
  }));

const checkpointThread = (store: SqliteStore) => (store as unknown as { checkpointer?: unknown }).checkpointer;

test('checkpoints run off the event loop once a second: ledger rows reach the database file, and close() stops the thread', () =>
  withStore(
    async (store, path) => {
      const before = statSync(path).size;
      for (let i = 0; i < 20; i++) await store.appendLedger(Array.from({ length: 50 }, (_, j) => row(`req_${i}_${j}`, undefined, 0)));
      // Committed rows live in the WAL (WAL mode writes nothing else to the file) until a checkpoint copies them in.
      const deadline = Date.now() + 5000;
      while (statSync(path).size === before && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
      assert.ok(statSync(path).size > before, 'no checkpoint within 5 s');
      assert.equal(checkpointThread(store) !== undefined, true, 'checkpoints run on a worker thread');
    },
    // The heartbeat and the balance in withStore, then the first ledger commits.
    { checkpointAfterCommits: 4 },
  ));

test('the checkpoint thread starts at the checkpointAfterCommits-th commit, not at the first: a server that served little runs none', () =>
  withStore(
    async (store) => {
      // withStore committed a heartbeat (and a balance): at most 2 of the 10.
      let startedAt = 0;
      for (let i = 1; i <= 12 && !startedAt; i++) {
        await store.appendLedger([row(`req_${i}`, undefined, 0)]);
        if (checkpointThread(store) !== undefined) startedAt = i;
      }
      assert.ok(startedAt >= 8 && startedAt <= 10, `checkpoint thread started at ledger commit ${startedAt || 'none of 12'}, not at the 10th commit`);
      assert.equal(await store.countLedger(), startedAt);
    },
    { checkpointAfterCommits: 10 },
  ));

test('under steady writes the WAL is rewound: it stays bounded instead of growing by every commit', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'infera-sqlite-batch-'));
  const path = join(dir, 'infera.db');
  // Past 64 frames, rewound; checkpoints every 20 ms (the defaults: 16,384 frames, 1 s).
  const store = new SqliteStore(path, { restartFrames: 64, checkpointMs: 20 });
  try {
    await store.heartbeat('inst_test', Date.now());
    await store.adjustBalance('acct', 1_000_000_000);
    let largest = 0;
    // A priced request's two commits, as on one busy connection (a pause of a millisecond every tenth
    // request): a commit always lands while a checkpoint is copying, which is what kept a PASSIVE-only
    // checkpoint from ever rewinding. 3,000 of them write ~85 MB of WAL frames (7 pages a request).
    for (let i = 0; i < 3000; i++) {
      const id = `r${i}`;
      assert.equal((await store.reserve(reservation(id, 2))).ok, true);
      await store.appendLedger([row(`req_${id}`, id, 1)]);
      if (i % 10 === 0) {
        largest = Math.max(largest, statSync(`${path}-wal`).size);
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    }
    largest = Math.max(largest, statSync(`${path}-wal`).size);
    // Bounded by what one (possibly late, on a loaded box) checkpoint interval writes; 85 MB without the rewind.
    assert.ok(largest < 24 * 1024 * 1024, `the WAL reached ${largest} bytes`);
    assert.equal(await store.countLedger(), 3000);
    assert.equal((await store.getAccount('acct'))!.balanceMicro, 1_000_000_000 - 3000);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('migration 4 (reservations WITHOUT ROWID) keeps the reservations a version-3 file held: they settle and come back as before', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'infera-sqlite-v3-'));
  const path = join(dir, 'infera.db');
  try {
    // A file as version 3 left it: migrations 1–3 only, one live and one orphaned reservation held.
    const old = new Database(path);
    old.exec('CREATE TABLE infera_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)');
    for (const migration of sqliteMigrations.filter((m) => m.version <= 3)) {
      old.exec(migration.sql);
      old.prepare('INSERT INTO infera_migrations VALUES (?, ?, ?)').run(migration.version, migration.name, Date.now());
    }
    old.exec(`INSERT INTO accounts VALUES ('acct', 'acct', 700, 0);
      INSERT INTO instances VALUES ('inst_test', ${Date.now()}), ('inst_dead', 0);
      INSERT INTO reservations VALUES ('res_live', 'acct', 200, 'inst_test', 'req_live', 0), ('res_dead', 'acct', 100, 'inst_dead', 'req_dead', 0);`);
    old.close();

    const store = new SqliteStore(path);
    try {
      const table = new Database(path, { readonly: true });
      assert.match(table.prepare<[], string>("SELECT sql FROM sqlite_master WHERE name = 'reservations'").pluck().get()!, /WITHOUT ROWID/);
      table.close();
      // The dead server's reservation comes back; the live one stays held until its row settles it.
      assert.deepEqual(await store.releaseStale(Date.now() - 60_000), { reservations: 1, micro: 100 });
      await store.appendLedger([row('req_live', 'res_live', 30)]);
      assert.equal((await store.getAccount('acct'))!.balanceMicro, 700 + 100 + 200 - 30);
      assert.deepEqual(await store.releaseStale(Date.now() + 60_000), { reservations: 0, micro: 0 });
    } finally {
      await store.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
