// What a priced request's two SQLite writes cost in the store alone (issue 14, "Overhead"): SqliteStore
// with a ledger of --rows rows, then rounds of --batch requests the way a server at many connections
// commits them (the batch's reservations in one transaction, then its ledger rows, each releasing its
// reservation, in the next), CPU per request from process.cpuUsage. --ids random: request ids of 32
// random hex digits (Infera before gw4); ordered: 12 hex digits of milliseconds first, as newRequestId
// makes them now, so the ledger's request_id index takes each batch on its last page.
// --root DIR: another checkout's src/storage/sqlite-store.ts (A/B against an earlier store).
// Usage: node --import tsx bench/sqlite-commit-pages.ts [--ids random|ordered] [--batch 16] [--requests 40000] [--rows 100000] [--root DIR]
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { LedgerRow } from '../src/storage/types.ts';

const { values } = parseArgs({
  options: {
    ids: { type: 'string', default: 'ordered' },
    batch: { type: 'string', default: '16' },
    requests: { type: 'string', default: '40000' },
    rows: { type: 'string', default: '100000' },
    root: { type: 'string' },
  },
});
const root = values.root ? resolve(values.root) : resolve(import.meta.dirname, '..');
const { SqliteStore } = (await import(join(root, 'src/storage/sqlite-store.ts'))) as typeof import('../src/storage/sqlite-store.ts');
const dir = mkdtempSync(join(tmpdir(), 'infera-bench-sqlite-'));
const store = new SqliteStore(join(dir, 'platform.db'));
try {
  await store.ensureAccount('a');
  await store.adjustBalance('a', 1e15);
  await store.heartbeat('inst', Date.now());
  const id = () => (values.ids === 'random' ? `req_${randomBytes(16).toString('hex')}` : `req_${Date.now().toString(16).padStart(12, '0')}${randomBytes(10).toString('hex')}`);
  const row = (requestId: string, reservationId?: string): LedgerRow => ({
    requestId,
    accountId: 'a',
    keyId: 'k',
    model: 'm',
    requestedModel: 'm',
    endpoint: 'chat',
    promptTokens: 9,
    completionTokens: 3,
    reasoningTokens: 0,
    images: 0,
    documents: 0,
    latencyMs: 1,
    status: 200,
    outcome: 'ok',
    costMicro: 15,
    createdAt: Date.now(),
    ...(reservationId ? { reservationId } : {}),
  });
  for (let i = 0; i < Number(values.rows); i += 500) await store.appendLedger(Array.from({ length: 500 }, () => row(id())));
  const batch = Number(values.batch);
  const run = async (n: number) => {
    for (let i = 0; i < n; i += batch) {
      const ids = Array.from({ length: batch }, () => [id(), `res_${randomUUID()}`] as const);
      await Promise.all(ids.map(([requestId, res]) => store.reserve({ id: res, accountId: 'a', amountMicro: 1000, instanceId: 'inst', requestId, createdAt: Date.now() })));
      await store.appendLedger(ids.map(([requestId, res]) => row(requestId, res)));
    }
  };
  await run(5000);
  const n = Number(values.requests);
  const before = process.cpuUsage();
  await run(n);
  const used = process.cpuUsage(before);
  console.log(
    `${values.ids} ids, batches of ${batch}, ${root}: ${((used.user + used.system) / n).toFixed(1)} µs of CPU per request (user ${(used.user / n).toFixed(1)}, system ${(used.system / n).toFixed(1)})`,
  );
} finally {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
}
