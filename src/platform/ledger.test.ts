// LedgerWriter's group commit on a store that commits synchronously (SQLite's appendLedgerSync): the
// rows of one turn are committed and acknowledged in that turn's immediate, without the asynchronous
// write; a failed commit is retried through appendLedger with the same back-off as before, then rejected.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { LedgerRow, PlatformStore } from '../storage/types.ts';
import { LedgerWriter } from './ledger.ts';

const row = (requestId: string): LedgerRow =>
  ({ requestId, accountId: 'a', keyId: 'k', model: 'm', endpoint: 'chat', promptTokens: 1, completionTokens: 1, reasoningTokens: 0, images: 0, documents: 0, latencyMs: 1, status: 200, outcome: 'ok', costMicro: 1, createdAt: 0 }) as LedgerRow;

/** A store with both commits; `failures` sync commits fail first (and `asyncFailures` async ones). */
function fakeStore(options: { sync: boolean; failures?: number; asyncFailures?: number }) {
  const calls: string[] = [];
  const committed: string[][] = [];
  let failures = options.failures ?? 0;
  let asyncFailures = options.asyncFailures ?? 0;
  const store = {
    async appendLedger(rows: LedgerRow[]) {
      calls.push('async');
      if (asyncFailures-- > 0) throw new Error('disk full (async)');
      committed.push(rows.map((r) => r.requestId));
    },
    ...(options.sync
      ? {
          appendLedgerSync(rows: LedgerRow[]) {
            calls.push('sync');
            if (failures-- > 0) throw new Error('disk full');
            committed.push(rows.map((r) => r.requestId));
          },
        }
      : {}),
  } as unknown as PlatformStore;
  return { store, calls, committed };
}

const quiet = { error() {} };

test('a synchronous store commits one turn of rows in one transaction, in that turn, without the asynchronous write', async () => {
  const { store, calls, committed } = fakeStore({ sync: true });
  const outcomes: string[] = [];
  const writer = new LedgerWriter(store, quiet, { onWrite: (_s, rows, outcome) => outcomes.push(`${outcome}:${rows}`) });
  let acknowledged = 0;
  const all = ['r1', 'r2', 'r3'].map((id) => writer.append(row(id)).then(() => acknowledged++));
  // Acknowledged in the immediate that committed them: before any later immediate runs.
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(acknowledged, 3);
  await Promise.all(all);
  assert.deepEqual(calls, ['sync']);
  assert.deepEqual(committed, [['r1', 'r2', 'r3']]);
  assert.deepEqual(outcomes, ['ok:3']);
  assert.deepEqual(writer.stats, { rows: 3, transactions: 1 });
  await writer.close();
});

test('a failed synchronous commit is retried (asynchronously, after the back-off) and its rows wait for it', async () => {
  const { store, calls, committed } = fakeStore({ sync: true, failures: 1 });
  const outcomes: string[] = [];
  const writer = new LedgerWriter(store, quiet, { retries: 2, onWrite: (_s, _rows, outcome) => outcomes.push(outcome) });
  const started = performance.now();
  await writer.append(row('r1'));
  assert.ok(performance.now() - started >= 45, 'the first retry waits its back-off (50 ms)');
  assert.deepEqual(calls, ['sync', 'async']);
  assert.deepEqual(committed, [['r1']]);
  assert.deepEqual(outcomes, ['retry', 'ok']);
  // The writer is idle again: the next turn's rows take the synchronous commit.
  await writer.append(row('r2'));
  assert.deepEqual(calls, ['sync', 'async', 'sync']);
  await writer.close();
});

test('a commit that keeps failing rejects its rows after the last attempt; close() still returns', async () => {
  const { store, calls } = fakeStore({ sync: true, failures: 5, asyncFailures: 5 });
  const outcomes: string[] = [];
  const writer = new LedgerWriter(store, quiet, { retries: 1, onWrite: (_s, _rows, outcome) => outcomes.push(outcome) });
  await assert.rejects(writer.append(row('r1')), /disk full \(async\)/);
  assert.deepEqual(calls, ['sync', 'async']);
  assert.deepEqual(outcomes, ['retry', 'failed']);
  const noRetries = new LedgerWriter(fakeStore({ sync: true, failures: 1 }).store, quiet, { retries: 0 });
  await assert.rejects(noRetries.append(row('r2')), /disk full$/);
  await noRetries.close();
  await writer.close();
});

test('close() waits for rows queued but not yet committed, on both kinds of store', async () => {
  for (const sync of [true, false]) {
    const { store, committed } = fakeStore({ sync });
    const writer = new LedgerWriter(store, quiet);
    const pending = writer.append(row('r1'));
    await writer.close();
    assert.deepEqual(committed, [['r1']], `sync ${sync}`);
    await pending;
    await assert.rejects(writer.append(row('r2')), /ledger is closed/);
  }
});

test('an asynchronous store (Postgres) commits through appendLedger as before', async () => {
  const { store, calls, committed } = fakeStore({ sync: false, asyncFailures: 1 });
  const outcomes: string[] = [];
  const writer = new LedgerWriter(store, quiet, { retries: 1, onWrite: (_s, _rows, outcome) => outcomes.push(outcome) });
  await Promise.all([writer.append(row('r1')), writer.append(row('r2'))]);
  assert.deepEqual(calls, ['async', 'async']);
  assert.deepEqual(committed, [['r1', 'r2']]);
  assert.deepEqual(outcomes, ['retry', 'ok']);
});
