// What the usage ledger costs one request at 1 client: one row per settle, each awaited before the next (as
// the response waits for its row's commit), through the server's LedgerWriter and SqliteStore on a file.
// Prints the process's CPU per row (every thread: the checkpoint thread included) and wall per row.
// Not a test.
//
//   node --import tsx bench/ledger-row-cost.ts [--rows 2000] [--gap-ms 10]
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { LedgerWriter } from '../src/platform/ledger.ts';
import { SqliteStore } from '../src/storage/sqlite-store.ts';

const { values } = parseArgs({ options: { rows: { type: 'string', default: '2000' }, 'gap-ms': { type: 'string', default: '10' } } });
const rows = Number(values.rows);
const gapMs = Number(values['gap-ms']);
const dir = mkdtempSync(join(tmpdir(), 'infera-ledger-cost-'));
const store = new SqliteStore(join(dir, 'infera.db'), { memoryHolds: true });
await store.ensureAccount('anonymous', 'anonymous');
const ledger = new LedgerWriter(store, { error: (o) => console.error(o) });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const cpu = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};
const row = (i: number) => ({
  requestId: `req-${i}`,
  accountId: 'anonymous',
  keyId: 'anonymous',
  model: 'bench/embed',
  requestedModel: 'bench/embed',
  endpoint: 'embeddings',
  promptTokens: 15,
  completionTokens: 0,
  reasoningTokens: 0,
  images: 0,
  documents: 0,
  latencyMs: 12,
  status: 200,
  outcome: 'ok',
  costMicro: 0,
  createdAt: Date.now(),
});
for (let i = 0; i < 50; i++) await ledger.append(row(-1 - i));
// The same loop without the append: the timer and gap's own CPU, subtracted.
let idleCpu = 0;
{
  const c0 = cpu();
  for (let i = 0; i < Math.min(rows, 500); i++) await sleep(gapMs);
  idleCpu = (cpu() - c0) / Math.min(rows, 500);
}
const c0 = cpu();
const t0 = performance.now();
let wall = 0;
for (let i = 0; i < rows; i++) {
  const w0 = performance.now();
  await ledger.append(row(i));
  wall += performance.now() - w0;
  await sleep(gapMs);
}
const total = (cpu() - c0) / rows;
console.log(
  `ledger-row-cost ${new Date().toISOString()}: ${rows} rows, ${gapMs} ms apart, load ${loadavg()[0]!.toFixed(2)}: ` +
    `CPU ${(total - idleCpu).toFixed(0)} µs/row (${total.toFixed(0)} with the gap's timer, ${idleCpu.toFixed(0)} without a row), wall ${((wall / rows) * 1000).toFixed(0)} µs/row awaited; ${((performance.now() - t0) / 1000).toFixed(1)} s`,
);
await ledger.close();
await store.close();
rmSync(dir, { recursive: true, force: true });
