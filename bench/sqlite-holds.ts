// The SQLite store's share of a priced request on one connection (issue 14, "Overhead"): reserve, then
// the ledger row that settles it, one request at a time (each awaited, as one keep-alive connection
// does), with reservations held in memory (memoryHolds) vs a row per reservation. Rounds alternate
// between the two stores (separate files) in one process; wall and CPU (process.cpuUsage, so the
// checkpoint thread counts too) per request, medians over the rounds.
// Usage: node --import tsx bench/sqlite-holds.ts [--requests 5000] [--rounds 6]
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SqliteStore } from '../src/storage/sqlite-store.ts';

const { values } = parseArgs({ options: { requests: { type: 'string', default: '5000' }, rounds: { type: 'string', default: '6' } } });
const n = Number(values.requests);
const dir = mkdtempSync(join(tmpdir(), 'infera-holds-bench-'));
const stores = {
  memory: new SqliteStore(join(dir, 'memory.db'), { memoryHolds: true }),
  rows: new SqliteStore(join(dir, 'rows.db'), { memoryHolds: false }),
};
let seq = 0;
async function one(store: SqliteStore): Promise<void> {
  const id = `r${seq++}`;
  const now = Date.now();
  const result = await store.reserve({ id, accountId: 'acct', amountMicro: 1000, instanceId: 'inst', requestId: id, createdAt: now });
  if (!result.ok) throw new Error('refused');
  await store.appendLedger([
    {
      requestId: id, accountId: 'acct', keyId: 'key', model: 'bench/echo', endpoint: 'chat', promptTokens: 8, completionTokens: 4,
      reasoningTokens: 0, images: 0, documents: 0, latencyMs: 1, status: 200, outcome: 'ok', costMicro: 16, createdAt: now, reservationId: id,
    },
  ]);
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const out: Record<string, { wall: number[]; cpu: number[] }> = { memory: { wall: [], cpu: [] }, rows: { wall: [], cpu: [] } };
try {
  for (const [name, store] of Object.entries(stores)) {
    await store.heartbeat('inst', Date.now());
    await store.adjustBalance('acct', 1e15);
    for (let i = 0; i < 2000; i++) await one(store);
    console.log(`${name}: warm`);
  }
  for (let round = 0; round < Number(values.rounds); round++) {
    const order = round % 2 ? (['rows', 'memory'] as const) : (['memory', 'rows'] as const);
    for (const name of order) {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      for (let i = 0; i < n; i++) await one(stores[name]);
      const wall = ((performance.now() - t0) * 1000) / n;
      const c = process.cpuUsage(c0);
      const cpu = (c.user + c.system) / n;
      out[name]!.wall.push(wall);
      out[name]!.cpu.push(cpu);
      console.log(`r${round + 1} ${name}: wall ${wall.toFixed(1)} µs/req, CPU ${cpu.toFixed(1)} µs/req, load ${loadavg()[0]!.toFixed(2)}`);
    }
  }
  for (const [name, r] of Object.entries(out)) console.log(`${name}: median wall ${med(r.wall).toFixed(1)} µs/req, CPU ${med(r.cpu).toFixed(1)} µs/req`);
} finally {
  await stores.memory.close();
  await stores.rows.close();
  rmSync(dir, { recursive: true, force: true });
}
