// Two Infera processes on one Postgres + Redis enforce one shared RPM limit, and either one's ledger
// rows are visible to both. Needs DATABASE_URL and REDIS_URL (CI sets them); SKIPPED without, visibly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { configSchema } from '../config/schema.ts';
import type { PostgresStore } from '../storage/postgres-store.ts';
import { SHARED_DATA_DIR } from '../../test/helpers/server.ts';
import { tinyModelConfigs } from '../registry/default-models.ts';
import { openPlatformStore, PlatformAdmin } from './index.ts';

const databaseUrl = process.env.DATABASE_URL;
const redisUrl = process.env.REDIS_URL;
const skip = databaseUrl && redisUrl ? false : 'SKIPPED: set DATABASE_URL and REDIS_URL to run two replicas on Postgres + Redis';
const fixture = fileURLToPath(new URL('./fixtures/replica-server.ts', import.meta.url));

function startReplica(raw: Record<string, unknown>): Promise<{ child: ChildProcess; url: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', fixture, JSON.stringify(raw)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stderr!.on('data', (chunk) => (err += chunk));
    child.stdout!.on('data', (chunk) => {
      out += chunk;
      const match = /listening (\S+)/.exec(out);
      if (match) resolve({ child, url: match[1]! });
    });
    child.once('exit', (code) => reject(new Error(`replica exited ${code}: ${err}`)));
  });
}

test('two Infera processes on one Postgres + Redis share one RPM limit and one ledger', { skip }, async () => {
  const run = randomBytes(4).toString('hex');
  const schema = `infera_replicas_${run}`;
  const prefix = `infera:test:replicas:${run}`;
  // Generate the tiny models once here, so the replicas do not race to write them.
  await tinyModelConfigs(SHARED_DATA_DIR);
  const raw = {
    server: { host: '127.0.0.1', port: 0 },
    storage: { dataDir: SHARED_DATA_DIR, databaseUrl, redisUrl },
    platform: { postgresSchema: schema, redisKeyPrefix: prefix, accounts: { team: { defaults: { embedding: { rpm: 3 } } } } },
  };
  const store = await openPlatformStore(configSchema.parse(raw));
  const replicas: ChildProcess[] = [];
  try {
    const { secret } = await new PlatformAdmin(store).createKey({ name: 'shared', accountId: 'team' });
    const t0 = Date.now();
    const [one, two] = await Promise.all([startReplica({ ...raw, modelsDir: SHARED_DATA_DIR }), startReplica({ ...raw, modelsDir: SHARED_DATA_DIR })]);
    replicas.push(one.child, two.child);
    const embed = (url: string, i: number) =>
      fetch(`${url}/v1/embeddings`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${secret}` },
        body: JSON.stringify({ model: 'BAAI/bge-m3', input: `request ${i}` }),
      }).then(async (response) => ({ status: response.status, body: (await response.json()) as { error?: { message: string } } }));
    const t1 = Date.now();
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => embed(i % 2 ? one.url : two.url, i)));
    console.error(`# replicas started in ${t1 - t0} ms, 8 requests took ${Date.now() - t1} ms`);
    const statuses = results.map((r) => r.status).sort();
    assert.deepEqual(statuses, [200, 200, 200, 429, 429, 429, 429, 429], JSON.stringify(results.map((r) => r.body.error?.message ?? r.status)));
    for (const r of results) if (r.status === 429) assert.match(r.body.error!.message, /^RPM limit reached/);

    const byKey = await store.usage({ by: 'account' });
    assert.deepEqual(byKey.map((row) => [row.group, row.requests, row.errors]), [['team', 8, 5]]);
  } finally {
    // Every response above completed, so its ledger row is committed: no need for a graceful stop.
    for (const child of replicas) child.kill('SIGKILL');
    await Promise.all(replicas.map((child) => new Promise((resolve) => (child.exitCode !== null ? resolve(null) : child.once('exit', resolve)))));
    await (store as PostgresStore).dropSchema();
    await store.close();
    const redis = new Redis(redisUrl!);
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
  }
});
