// Per-request cost of the platform (auth + rate limits + ledger) for SQLite and Postgres+Redis.
//   A. in-process: authenticate + admit + settle, C requests in flight, CPU µs and wall ops/s.
//   B. over HTTP: the same trivial route with and without the gate (separate server process, autocannon).
// Usage: node --import tsx bench/platform.ts [--requests 20000] [--duration 5] [--connections 32] [--rounds 2]
//   Postgres+Redis run when DATABASE_URL and REDIS_URL are set.
import autocannon from 'autocannon';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { configSchema } from '../src/config/schema.ts';
import { createGate } from '../src/platform/index.ts';
import { PostgresStore } from '../src/storage/postgres-store.ts';

const { values } = parseArgs({
  options: {
    requests: { type: 'string', default: '20000' },
    duration: { type: 'string', default: '5' },
    connections: { type: 'string', default: '32' },
    rounds: { type: 'string', default: '2' },
    'skip-http': { type: 'boolean', default: false },
  },
});
const requests = Number(values.requests);
const duration = Number(values.duration);
const connections = Number(values.connections);
const rounds = Number(values.rounds);

// Limits that never trip but are all checked: account×model RPM/TPM/RPD and a per-key RPM.
const limits = { limits: { defaults: { chat: { rpm: 1e9, tpm: 1e12, rpd: 1e9 } } } };
const silent = { info() {}, warn() {}, error() {} };
const run = randomBytes(4).toString('hex');

interface Backend {
  name: string;
  raw: Record<string, unknown>;
  cleanup: () => Promise<void>;
}

const backends: Backend[] = [];
const sqliteDir = mkdtempSync(join(tmpdir(), 'infera-bench-platform-'));
backends.push({ name: 'sqlite', raw: { storage: { dataDir: sqliteDir }, platform: limits }, cleanup: async () => rmSync(sqliteDir, { recursive: true, force: true }) });
const { DATABASE_URL, REDIS_URL } = process.env;
if (DATABASE_URL && REDIS_URL) {
  const schema = `infera_bench_${run}`;
  const prefix = `infera:bench:${run}`;
  backends.push({
    name: 'postgres+redis',
    raw: { storage: { databaseUrl: DATABASE_URL, redisUrl: REDIS_URL }, platform: { ...limits, postgresSchema: schema, redisKeyPrefix: prefix } },
    cleanup: async () => {
      const store = await PostgresStore.open({ connectionString: DATABASE_URL, schema });
      await store.dropSchema();
      await store.close();
      const redis = new Redis(REDIS_URL);
      const keys = await redis.keys(`${prefix}:*`);
      if (keys.length) await redis.del(...keys);
      redis.disconnect();
    },
  });
} else console.error('# postgres+redis skipped: set DATABASE_URL and REDIS_URL');

async function inProcess(backend: Backend, inFlight: number, total: number) {
  const gate = await createGate(configSchema.parse(backend.raw), silent);
  const { secret } = await gate.admin.createKey({ name: 'bench', accountId: 'bench', limits: { rpm: 1e9 } });
  let next = 0;
  const one = async () => {
    const principal = await gate.authenticate(secret, '127.0.0.1');
    const admission = await gate.admit({ principal, model: 'bench/model', endpoint: 'chat', requestId: `r${++next}`, estimatedTokens: 20, images: 0 });
    await admission.settle({ promptTokens: 8, completionTokens: 12, reasoningTokens: 0, images: 0, documents: 0, status: 200, outcome: 'ok', latencyMs: 1 });
  };
  for (let i = 0; i < 2000; i++) await one(); // warm-up: prepared statements, pools, JIT
  const before = { rows: gate.ledger.stats.rows, tx: gate.ledger.stats.transactions };
  const cpu = process.cpuUsage();
  const start = performance.now();
  let issued = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (issued < total) {
        issued++;
        await one();
      }
    }),
  );
  const wallMs = performance.now() - start;
  const used = process.cpuUsage(cpu);
  const rows = gate.ledger.stats.rows - before.rows;
  const transactions = gate.ledger.stats.transactions - before.tx;
  await gate.close();
  return {
    inFlight,
    requests: total,
    opsPerSec: Math.round(total / (wallMs / 1000)),
    wallUsPerRequest: +((wallMs * 1000) / total).toFixed(1),
    cpuUsPerRequest: +((used.user + used.system) / total).toFixed(1),
    rowsPerTransaction: +(rows / Math.max(1, transactions)).toFixed(1),
  };
}

function startServer(backend: Backend, port: number): Promise<{ child: ChildProcess; secret: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'bench/platform-server.ts', String(port), JSON.stringify(backend.raw)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let seen = '';
    child.stdout!.on('data', (chunk) => {
      seen += chunk;
      const match = /ready (\S+)/.exec(seen);
      if (match) resolve({ child, secret: match[1]! });
    });
    child.once('exit', (code) => reject(new Error(`bench server exited ${code}`)));
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function overHttp(backend: Backend, port: number) {
  const { child, secret } = await startServer(backend, port);
  const headers = { authorization: `Bearer ${secret}` };
  const shoot = async (path: string) => {
    const result = await autocannon({ url: `http://127.0.0.1:${port}${path}`, connections, duration, headers });
    if (result.non2xx || result.errors) throw new Error(`${path}: ${result.non2xx} non-2xx, ${result.errors} errors`);
    return result;
  };
  const plain: number[] = [];
  const gated: number[] = [];
  const p50: number[] = [];
  try {
    await shoot('/plain');
    await shoot('/gated');
    for (let round = 0; round < rounds; round++) {
      plain.push((await shoot('/plain')).requests.average);
      const result = await shoot('/gated');
      gated.push(result.requests.average);
      p50.push(result.latency.p50);
    }
  } finally {
    child.kill('SIGTERM');
  }
  const rpsPlain = median(plain);
  const rpsGated = median(gated);
  return {
    rpsWithout: Math.round(rpsPlain),
    rpsWith: Math.round(rpsGated),
    gatedP50Ms: median(p50),
    // One event loop at saturation: 1/rps is the server's time per request.
    addedUsPerRequest: +(1e6 / rpsGated - 1e6 / rpsPlain).toFixed(1),
  };
}

const report: Record<string, unknown> = { requests, duration, connections, rounds };
let port = 8790;
for (const backend of backends) {
  try {
    const serial = await inProcess(backend, 1, Math.min(requests, 5000));
    const concurrent = await inProcess(backend, 64, requests);
    const http = values['skip-http'] ? undefined : await overHttp(backend, port++);
    report[backend.name] = { inProcessSerial: serial, inProcess64: concurrent, http };
    console.error(`${backend.name}: ${JSON.stringify(report[backend.name])}`);
  } finally {
    await backend.cleanup();
  }
}
console.log(JSON.stringify(report, null, 2));
