// The Postgres and Redis drivers against the real servers, and two gates (replicas) sharing them.
// Needs DATABASE_URL and REDIS_URL (CI sets them); without them these tests are SKIPPED, visibly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { configSchema } from '../config/schema.ts';
import type { InferaError } from '../errors/index.ts';
import { createGate } from '../platform/index.ts';
import type { Principal } from '../platform/gate.ts';
import { PostgresStore } from './postgres-store.ts';
import { RedisCounterStore } from './redis-counters.ts';

const databaseUrl = process.env.DATABASE_URL;
const redisUrl = process.env.REDIS_URL;
const skipPostgres = databaseUrl ? false : 'SKIPPED: set DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/test) to test the Postgres store';
const skipRedis = redisUrl ? false : 'SKIPPED: set REDIS_URL (e.g. redis://127.0.0.1:6379) to test the Redis counters';
const skipBoth = skipPostgres || skipRedis;
if (skipBoth) console.warn(`# ${skipBoth}`);

const run = `t${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
const silent = { info() {}, warn() {}, error() {} };

test('Postgres store: migrations (twice, concurrently), keys, accounts, ledger, usage', { skip: skipPostgres }, async () => {
  const schema = `infera_${run}_store`;
  const [a, b] = await Promise.all([
    PostgresStore.open({ connectionString: databaseUrl!, schema }),
    PostgresStore.open({ connectionString: databaseUrl!, schema }),
  ]);
  try {
    await a.createKey({
      id: 'key_1', name: 'one', accountId: 'acme', hash: 'ab'.repeat(32), prefix: 'sk-x…', models: ['m'],
      limits: { rpm: 3 }, expiresAt: null, disabled: false, createdAt: Date.now(),
    });
    const found = await b.findKeyByHash('ab'.repeat(32));
    assert.deepEqual([found?.id, found?.accountId, found?.models, found?.limits, found?.disabled], ['key_1', 'acme', ['m'], { rpm: 3 }, false]);
    assert.equal(await b.revokeKey('key_1'), true);
    assert.equal((await a.findKeyByHash('ab'.repeat(32)))?.disabled, true);
    assert.equal(await a.revokeKey('nope'), false);

    assert.equal(await a.adjustBalance('acme', 5_000_000), 5_000_000);
    const row = (i: number, cost: number) => ({
      requestId: `r${i}`, accountId: 'acme', keyId: 'key_1', model: i % 2 ? 'm1' : 'm2', endpoint: 'chat',
      promptTokens: 10, completionTokens: 5, reasoningTokens: 1, images: 0, documents: 0, latencyMs: 3.4,
      status: 200, outcome: i === 0 ? 'cancelled' : 'ok', costMicro: cost, createdAt: Date.now(),
    });
    await Promise.all([a.appendLedger([row(0, 100), row(1, 200)]), b.appendLedger([row(2, 300)])]);
    assert.equal(await a.countLedger(), 3);
    assert.equal(await b.hasRequest('r2'), true);
    assert.equal((await a.getAccount('acme'))?.balanceMicro, 5_000_000 - 600);
    const usage = await a.usage({ by: 'model', since: Date.now() - 60_000 });
    assert.deepEqual(usage.map((u) => [u.group, u.requests, u.promptTokens, u.costMicro, u.cancelled]), [
      ['m2', 2, 20, 400, 1],
      ['m1', 1, 10, 200, 0],
    ]);
    assert.equal((await a.usage({ by: 'day' }))[0]?.group, new Date().toISOString().slice(0, 10));
  } finally {
    await a.dropSchema();
    await Promise.all([a.close(), b.close()]);
  }
});

test('Redis counters: all-or-nothing under concurrency; settle adjusts', { skip: skipRedis }, async () => {
  const prefix = `infera:test:${run}`;
  const store = new RedisCounterStore({ url: redisUrl!, prefix });
  await store.ready();
  try {
    const check = (key: string, limit: number, amount = 1) => ({ key, amount, limit, ttlMs: 60_000 });
    const results = await Promise.all(Array.from({ length: 40 }, () => store.consume([check('rpm', 10), check('tpm', 1000, 50)])));
    assert.equal(results.filter((r) => r.ok).length, 10);
    const refused = results.find((r) => !r.ok)!;
    assert.equal(refused.failed, 0);
    assert.equal(refused.values[0], 10);
    // A refused consume added nothing to the token counter.
    assert.equal(Number(await store.redis.get(`${prefix}:tpm`)), 500);
    await store.adjust([{ key: 'tpm', delta: -480, ttlMs: 60_000 }, { key: 'gone', delta: -5, ttlMs: 60_000 }]);
    assert.equal(Number(await store.redis.get(`${prefix}:tpm`)), 20);
    assert.equal(await store.redis.exists(`${prefix}:gone`), 0, 'a negative settle never creates a negative counter');
    const ttl = await store.redis.pttl(`${prefix}:rpm`);
    assert.ok(ttl > 0 && ttl <= 60_000);
  } finally {
    const keys = await store.redis.keys(`${prefix}:*`);
    if (keys.length) await store.redis.del(...keys);
    await store.close();
  }
});

test('Redis down: redisFailure "closed" refuses with 503, "open" lets requests through', async () => {
  for (const redisFailure of ['closed', 'open'] as const) {
    const errors: string[] = [];
    const dir = mkdtempSync(join(tmpdir(), 'infera-redis-down-'));
    const config = configSchema.parse({
      storage: { dataDir: dir, redisUrl: 'redis://127.0.0.1:1', redisFailure },
      platform: { limits: { defaults: { chat: { rpm: 100 } } } },
    });
    const gate = await createGate(config, { ...silent, error: (_o: unknown, msg?: string) => errors.push(msg ?? '') });
    try {
      const principal: Principal = { accountId: 'acme', keyId: 'k', keyName: 'k' };
      const admit = gate.admit({ principal, model: 'm', endpoint: 'chat', requestId: 'x', estimatedTokens: 1, images: 0 });
      if (redisFailure === 'closed') await assert.rejects(admit, (e: InferaError) => e.status === 503 && e.retryAfter === 1);
      else assert.deepEqual((await admit).headers, {});
      assert.ok(errors.some((m) => m.includes(redisFailure === 'open' ? 'FAILING OPEN' : 'FAILING CLOSED')), errors.join('|'));
    } finally {
      await gate.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

test('two replicas on one Postgres + Redis enforce one shared RPM limit and share keys and ledger', { skip: skipBoth }, async () => {
  const schema = `infera_${run}_replicas`;
  const config = configSchema.parse({
    storage: { databaseUrl, redisUrl },
    platform: {
      postgresSchema: schema,
      redisKeyPrefix: `infera:test:${run}:replicas`,
      limits: { defaults: { chat: { rpm: 10 } } },
      keyCacheSeconds: 0,
    },
  });
  const [one, two] = await Promise.all([createGate(config, silent), createGate(config, silent)]);
  try {
    const { secret, key } = await one.admin.createKey({ name: 'shared', accountId: 'acme' });
    const principal = await two.authenticate(secret, '198.51.100.1');
    assert.equal(principal.keyId, key.id);

    const outcomes = await Promise.allSettled(
      Array.from({ length: 30 }, (_, i) =>
        (i % 2 ? one : two)
          .admit({ principal, model: 'tiny/chat', endpoint: 'chat', requestId: `rep-${i}`, estimatedTokens: 5, images: 0 })
          .then((admission) => admission.settle({
            promptTokens: 3, completionTokens: 2, reasoningTokens: 0, images: 0, documents: 0, status: 200, outcome: 'ok', latencyMs: 1,
          })),
      ),
    );
    const admitted = outcomes.filter((o) => o.status === 'fulfilled').length;
    assert.equal(admitted, 10, 'exactly the shared RPM limit is admitted across both replicas');
    for (const o of outcomes)
      if (o.status === 'rejected') assert.match((o.reason as Error).message, /^RPM limit reached/);

    await Promise.all([one.ledger.close(), two.ledger.close()]);
    const byOutcome = await two.admin.usage({ by: 'key' });
    assert.equal(byOutcome[0]?.requests, 30);
    assert.equal(byOutcome[0]?.errors, 20);

    // A revoke on one replica reaches the other (key cache 0 s here; 5 s by default).
    await one.admin.revokeKey(key.id);
    await assert.rejects(two.authenticate(secret, '198.51.100.1'), (e: InferaError) => e.status === 401);
  } finally {
    const redis = new Redis(redisUrl!);
    const keys = await redis.keys(`infera:test:${run}:replicas:*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
    await Promise.all([one.close(), two.close()]);
    const cleanup = await PostgresStore.open({ connectionString: databaseUrl!, schema });
    await cleanup.dropSchema();
    await cleanup.close();
  }
});
