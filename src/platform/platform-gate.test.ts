import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { configSchema } from '../config/schema.ts';
import { InferaError } from '../errors/index.ts';
import { createGate, sqlitePath, type PlatformGate } from './index.ts';
import type { AdmissionRequest, Principal, UsageReport } from './gate.ts';
import { parseLimitsFlag, parsePlatformConfig } from './config.ts';
import { formatMicro, parseAmount } from './pricing.ts';
import { parseSince } from './admin.ts';

const silent = { info() {}, warn() {}, error() {} };

async function withGate(
  overrides: { platform?: Record<string, unknown>; apiKeys?: string[]; envApiKey?: string },
  run: (gate: PlatformGate, dir: string) => Promise<void>,
) {
  const dir = mkdtempSync(join(tmpdir(), 'infera-gate-'));
  const config = configSchema.parse({
    storage: { dataDir: dir },
    server: { apiKeys: overrides.apiKeys ?? [] },
    platform: overrides.platform ?? {},
  });
  const gate = await createGate(config, silent, { envApiKey: overrides.envApiKey });
  try {
    await run(gate, dir);
  } finally {
    await gate.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

let counter = 0;
const request = (principal: Principal, extra: Partial<AdmissionRequest> = {}): AdmissionRequest => ({
  principal,
  model: 'tiny/chat',
  endpoint: 'chat',
  requestId: `req-${++counter}`,
  estimatedTokens: 10,
  images: 0,
  ...extra,
});

const usage = (extra: Partial<UsageReport> = {}): UsageReport => ({
  promptTokens: 5,
  completionTokens: 7,
  reasoningTokens: 2,
  images: 0,
  documents: 0,
  status: 200,
  outcome: 'ok',
  latencyMs: 12,
  ...extra,
});

const rejects = async (promise: Promise<unknown>, status: number, pattern: RegExp) => {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof InferaError, `expected InferaError, got ${String(error)}`);
    assert.equal(error.status, status);
    assert.match(error.message, pattern);
    return true;
  });
};

test('no key anywhere: open to loopback callers only, as "anonymous"', async () => {
  await withGate({}, async (gate) => {
    const principal = await gate.authenticate(undefined, '127.0.0.1');
    assert.equal(principal.accountId, 'anonymous');
    assert.equal((await gate.authenticate('whatever', '::ffff:127.0.0.1')).keyId, 'anonymous');
    assert.equal((await gate.authenticate(undefined, '::1')).accountId, 'anonymous');
    await rejects(gate.authenticate(undefined, '10.0.0.7'), 401, /loopback/);
  });
});

test('config and env keys authenticate as account "default"; others get 401', async () => {
  await withGate({ apiKeys: ['config-secret-1'], envApiKey: 'env-secret-22' }, async (gate) => {
    assert.deepEqual(await gate.authenticate('config-secret-1', '10.0.0.7'), {
      accountId: 'default',
      keyId: 'config',
      keyName: 'config',
    });
    assert.equal((await gate.authenticate('env-secret-22', '127.0.0.1')).accountId, 'default');
    await rejects(gate.authenticate('wrong-secret', '127.0.0.1'), 401, /Invalid API key/);
    // Loopback is no longer open once a key exists.
    await rejects(gate.authenticate(undefined, '127.0.0.1'), 401, /Missing API key/);
  });
});

test('an unknown key is looked up once per keyCacheSeconds, bounded, and forgotten when a key is created', async () => {
  const counted = (gate: PlatformGate) => {
    const store = (gate as unknown as { store: { findKeyByHash(hash: string): Promise<unknown> } }).store;
    const find = store.findKeyByHash.bind(store);
    const calls = { count: 0 };
    store.findKeyByHash = (hash) => {
      calls.count += 1;
      return find(hash);
    };
    return calls;
  };
  await withGate({ apiKeys: ['config-secret-1'] }, async (gate) => {
    const lookups = counted(gate);
    await rejects(gate.authenticate('wrong-secret', '10.0.0.7'), 401, /Invalid API key/);
    await rejects(gate.authenticate('wrong-secret', '10.0.0.7'), 401, /Invalid API key/);
    assert.equal(lookups.count, 1);
    // A key created here clears what was remembered; a stored key authenticates at once (its hash is new).
    const { secret } = await gate.admin.createKey({ name: 'fresh', accountId: 'acme' });
    await rejects(gate.authenticate('wrong-secret', '10.0.0.7'), 401, /Invalid API key/);
    assert.equal(lookups.count, 2);
    assert.equal((await gate.authenticate(secret, '10.0.0.7')).accountId, 'acme');
    // Bounded: a scan of guessed keys keeps at most 10,000 of them.
    for (let i = 0; i < 10_050; i++) await gate.authenticate(`guess-${i}`, '10.0.0.7').catch(() => {});
    assert.equal((gate as unknown as { unknownKeys: Map<string, number> }).unknownKeys.size, 10_000);
  });
  await withGate({ apiKeys: ['config-secret-1'], platform: { keyCacheSeconds: 0 } }, async (gate) => {
    const lookups = counted(gate);
    await rejects(gate.authenticate('wrong-secret', '10.0.0.7'), 401, /Invalid API key/);
    await rejects(gate.authenticate('wrong-secret', '10.0.0.7'), 401, /Invalid API key/);
    assert.equal(lookups.count, 2);
  });
});

/** authenticateSync must answer exactly what authenticate answers whenever it answers at all. */
async function sameAnswer(gate: PlatformGate, secret: string | undefined, address: string): Promise<'memory' | 'store'> {
  const now = gate.authenticateSync(secret, address);
  const later = await gate.authenticate(secret, address).catch((error: unknown) => error);
  if (now === undefined) return 'store';
  assert.deepEqual(now, later);
  if (now instanceof InferaError) assert.ok(later instanceof InferaError && later.status === now.status && later.message === now.message);
  return 'memory';
}

test('authenticateSync answers from memory what authenticate answers, and defers to it when the store must be asked', async () => {
  await withGate({}, async (gate) => {
    // No key yet, not known before the store said so: deferred once, then answered from memory.
    assert.equal(await sameAnswer(gate, undefined, '127.0.0.1'), 'store');
    assert.equal(await sameAnswer(gate, undefined, '127.0.0.1'), 'memory');
    assert.equal(await sameAnswer(gate, undefined, '10.0.0.7'), 'memory');
    const { key, secret } = await gate.admin.createKey({ name: 'ci', accountId: 'acme' });
    // A stored key: the store on first use, memory after; a wrong key likewise; a missing one at once.
    assert.equal(await sameAnswer(gate, secret, '10.0.0.7'), 'store');
    assert.equal(await sameAnswer(gate, secret, '10.0.0.7'), 'memory');
    assert.equal((gate.authenticateSync(secret, '10.0.0.7') as Principal).keyId, key.id);
    assert.equal(await sameAnswer(gate, 'wrong-secret', '10.0.0.7'), 'store');
    assert.equal(await sameAnswer(gate, 'wrong-secret', '10.0.0.7'), 'memory');
    assert.match((gate.authenticateSync('wrong-secret', '10.0.0.7') as InferaError).message, /Invalid API key/);
    assert.equal(await sameAnswer(gate, undefined, '127.0.0.1'), 'memory');
    assert.equal(await sameAnswer(gate, '  ', '127.0.0.1'), 'memory');
    // Revoked: the cache is cleared, the store answers once, then memory refuses it as authenticate does.
    await gate.admin.revokeKey(key.id);
    assert.equal(await sameAnswer(gate, secret, '10.0.0.7'), 'store');
    assert.equal(await sameAnswer(gate, secret, '10.0.0.7'), 'memory');
    assert.match((gate.authenticateSync(secret, '10.0.0.7') as InferaError).message, /revoked/);
  });
  await withGate({ apiKeys: ['config-secret-1'] }, async (gate) => {
    assert.equal(await sameAnswer(gate, 'config-secret-1', '10.0.0.7'), 'memory');
    assert.equal(await sameAnswer(gate, ' config-secret-1 ', '10.0.0.7'), 'memory');
    assert.equal(await sameAnswer(gate, 'config-secret-2', '10.0.0.7'), 'store');
  });
});

test('a key revoked on another replica is refused once keyCacheSeconds have passed, however often it was sent before', async () => {
  // Two gates on one store stand for two replicas: the revoke happens on one, the key keeps being sent to the other.
  await withGate({ platform: { keyCacheSeconds: 0.2 } }, async (replica, dir) => {
    const config = configSchema.parse({ storage: { dataDir: dir }, platform: { keyCacheSeconds: 0.2 } });
    const other = await createGate(config, silent);
    try {
      const { key, secret } = await other.admin.createKey({ name: 'shared', accountId: 'acme' });
      for (let i = 0; i < 3; i++) assert.equal((await replica.authenticate(secret, '10.0.0.7')).keyId, key.id);
      assert.equal((replica.authenticateSync(secret, '10.0.0.7') as Principal).keyId, key.id);
      await other.admin.revokeKey(key.id);
      await new Promise((resolve) => setTimeout(resolve, 250));
      // Past keyCacheSeconds nothing remembered may vouch for the key: the store is asked, and says revoked.
      assert.equal(replica.authenticateSync(secret, '10.0.0.7'), undefined);
      await rejects(replica.authenticate(secret, '10.0.0.7'), 401, /revoked/);
      assert.match((replica.authenticateSync(secret, '10.0.0.7') as InferaError).message, /revoked/);
      // The static keys' answer is fixed for the process; a wrong key stays wrong however often it comes.
      await rejects(replica.authenticate('wrong-secret', '10.0.0.7'), 401, /Invalid API key/);
      assert.match((replica.authenticateSync('wrong-secret', '10.0.0.7') as InferaError).message, /Invalid API key/);
    } finally {
      await other.close();
    }
  });
});

test('a key in use is read again before its entry expires: memory answers throughout, and a revoke elsewhere is still seen within keyCacheSeconds', async () => {
  // Expired, a key sent through the quick HTTP path went through Fastify's route instead (authenticateSync
  // answered undefined), once per keyCacheSeconds: that detour made V8 recompile the proxied path (gw9).
  await withGate({ platform: { keyCacheSeconds: 1 } }, async (replica, dir) => {
    const config = configSchema.parse({ storage: { dataDir: dir }, platform: { keyCacheSeconds: 1 } });
    const other = await createGate(config, silent);
    try {
      const { key, secret } = await other.admin.createKey({ name: 'shared', accountId: 'acme' });
      assert.equal((await replica.authenticate(secret, '10.0.0.7')).keyId, key.id);
      const store = (replica as unknown as { store: { findKeyByHash(hash: string): Promise<unknown> } }).store;
      const find = store.findKeyByHash.bind(store);
      let lookups = 0;
      store.findKeyByHash = (hash) => {
        lookups += 1;
        return find(hash);
      };
      const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
      // Two and a half lifetimes of the entry (1 s: a background read has half of it, 500 ms, to come back
      // even on a loaded CI box), a request every 5 ms: each answered from memory, with a store read per
      // half lifetime or so, not one per request.
      let requests = 0;
      for (const until = Date.now() + 2500; Date.now() < until; requests++) {
        const answer = replica.authenticateSync(secret, '10.0.0.7');
        assert.equal((answer as Principal | undefined)?.keyId, key.id, `request ${requests} was not answered from memory`);
        await sleep(5);
      }
      assert.ok(lookups >= 3 && lookups <= 10, `${lookups} store reads for ${requests} requests in 2.5 s`);
      // Revoked on the other replica: no answer from memory may vouch for the key once keyCacheSeconds have passed since.
      await other.admin.revokeKey(key.id);
      const revokedAt = Date.now();
      let refused = false;
      while (Date.now() < revokedAt + 1500) {
        const sentAt = Date.now();
        const answer = replica.authenticateSync(secret, '10.0.0.7');
        if (answer === undefined || answer instanceof InferaError) {
          refused = true;
          if (answer) assert.match(answer.message, /revoked/);
        } else assert.ok(sentAt < revokedAt + 1000, `key still accepted ${sentAt - revokedAt} ms after its revoke`);
        await sleep(5);
      }
      assert.ok(refused);
      await rejects(replica.authenticate(secret, '10.0.0.7'), 401, /revoked/);
    } finally {
      await other.close();
    }
  });
});

test('a keyless server reads "no key yet" again before it expires: memory answers throughout, and a key created elsewhere is required within keyCacheSeconds', async () => {
  await withGate({ platform: { keyCacheSeconds: 1 } }, async (replica, dir) => {
    const config = configSchema.parse({ storage: { dataDir: dir }, platform: { keyCacheSeconds: 1 } });
    const other = await createGate(config, silent);
    try {
      assert.equal((await replica.authenticate(undefined, '127.0.0.1')).keyId, 'anonymous');
      const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
      for (const until = Date.now() + 2500; Date.now() < until; ) {
        assert.equal((replica.authenticateSync(undefined, '127.0.0.1') as Principal | undefined)?.keyId, 'anonymous');
        await sleep(5);
      }
      await other.admin.createKey({ name: 'first', accountId: 'acme' });
      const createdAt = Date.now();
      let required = false;
      while (Date.now() < createdAt + 1500) {
        const sentAt = Date.now();
        const answer = replica.authenticateSync(undefined, '127.0.0.1');
        if (answer === undefined || answer instanceof InferaError) required = true;
        else assert.ok(sentAt < createdAt + 1000, `keyless request still served ${sentAt - createdAt} ms after a key was created`);
        await sleep(5);
      }
      assert.ok(required);
      await rejects(replica.authenticate(undefined, '127.0.0.1'), 401, /Missing API key/);
    } finally {
      await other.close();
    }
  });
});

test('stored keys: secret shown once, hash stored, revoke, expiry, model allow-list', async () => {
  await withGate({}, async (gate, dir) => {
    const { key, secret } = await gate.admin.createKey({ name: 'ci', accountId: 'acme', models: ['tiny/chat'] });
    assert.match(secret, /^sk-[A-Za-z0-9_-]{43}$/);
    assert.ok(!key.prefix.includes(secret.slice(8, 30)), 'the list view must not reveal the secret');
    const db = new Database(sqlitePath(configSchema.parse({ storage: { dataDir: dir } })), { readonly: true });
    const stored = JSON.stringify(db.prepare('SELECT * FROM api_keys').all());
    db.close();
    assert.ok(!stored.includes(secret), 'the secret itself must never be stored');

    const principal = await gate.authenticate(secret, '203.0.113.5');
    assert.equal(principal.accountId, 'acme');
    assert.equal(principal.keyId, key.id);
    await gate.admit(request(principal, { model: 'TINY/Chat' }));
    await rejects(gate.admit(request(principal, { model: 'other/model' })), 403, /may not use model "other\/model"/);

    await gate.admin.revokeKey(key.id);
    await rejects(gate.authenticate(secret, '127.0.0.1'), 401, /revoked/);
    await rejects(gate.admin.revokeKey('key_missing'), 404, /No key/);

    const soon = await gate.admin.createKey({ name: 'short', expiresAt: Date.now() + 150 });
    await gate.authenticate(soon.secret, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 200));
    await rejects(gate.authenticate(soon.secret, '127.0.0.1'), 401, /expired/);
  });
});

test('RPM per account and model: 429 names the limit, carries Retry-After and x-ratelimit headers', async () => {
  await withGate(
    { platform: { limits: { defaults: { chat: { rpm: 2, tpm: 1000 } } }, accounts: { vip: { defaults: { chat: { rpm: 5 } } } } } },
    async (gate) => {
      const principal: Principal = { accountId: 'acme', keyId: 'k1', keyName: 'k1' };
      const first = await gate.admit(request(principal));
      assert.equal(first.headers['x-ratelimit-limit-requests'], '2');
      assert.equal(first.headers['x-ratelimit-remaining-requests'], '1');
      // Up to a minute left: "59s", or "1m0s" when the request lands in the window's first second (formatReset rounds up).
      assert.match(first.headers['x-ratelimit-reset-requests']!, /^(?:\d+s|1m0s)$/);
      assert.equal(first.headers['x-ratelimit-limit-tokens'], '1000');
      assert.equal(first.headers['x-ratelimit-remaining-tokens'], '990');
      await gate.admit(request(principal));
      await assert.rejects(gate.admit(request(principal)), (error: InferaError) => {
        assert.equal(error.status, 429);
        assert.match(error.message, /^RPM limit reached/);
        assert.ok(error.retryAfter! >= 1 && error.retryAfter! <= 60);
        assert.equal(error.headers['x-ratelimit-remaining-requests'], '0');
        return true;
      });
      // Other models and other accounts have their own windows; the override raises vip's limit.
      await gate.admit(request(principal, { model: 'tiny/other' }));
      const vip: Principal = { accountId: 'vip', keyId: 'k2', keyName: 'k2' };
      for (let i = 0; i < 5; i++) await gate.admit(request(vip));
      await rejects(gate.admit(request(vip)), 429, /^RPM limit reached/);
    },
  );
});

test('TPM: the estimate is checked before, the real count settled after', async () => {
  await withGate({ platform: { limits: { defaults: { chat: { tpm: 100 } } } } }, async (gate) => {
    const principal: Principal = { accountId: 'acme', keyId: 'k', keyName: 'k' };
    await rejects(gate.admit(request(principal, { estimatedTokens: 101 })), 429, /^TPM limit reached: this request needs 101/);
    const a = await gate.admit(request(principal, { estimatedTokens: 80 }));
    // 80 reserved: a second 80 does not fit...
    await rejects(gate.admit(request(principal, { estimatedTokens: 80 })), 429, /^TPM limit reached/);
    // ...until the first settles at its real 12 tokens.
    await a.settle(usage());
    await new Promise((r) => setImmediate(r));
    const b = await gate.admit(request(principal, { estimatedTokens: 80 }));
    assert.equal(b.headers['x-ratelimit-remaining-tokens'], String(100 - 12 - 80));
  });
});

test('per-key limits apply across models; IPM counts images', async () => {
  await withGate({ platform: { limits: { defaults: { 'text-to-image': { ipm: 3 } } } } }, async (gate) => {
    const { secret } = await gate.admin.createKey({ name: 'limited', limits: { rpm: 2 } });
    const principal = await gate.authenticate(secret, '127.0.0.1');
    await gate.admit(request(principal, { model: 'a' }));
    await gate.admit(request(principal, { model: 'b' }));
    await rejects(gate.admit(request(principal, { model: 'c' })), 429, /^RPM limit reached: API key "limited"/);

    const painter: Principal = { accountId: 'art', keyId: 'p', keyName: 'p' };
    await gate.admit(request(painter, { endpoint: 'images', model: 'sd', images: 2 }));
    await rejects(gate.admit(request(painter, { endpoint: 'images', model: 'sd', images: 2 })), 429, /^IPM limit reached/);
    await gate.admit(request(painter, { endpoint: 'images', model: 'sd', images: 1 }));
  });
});

test('ledger: one row per settle (ok, error, cancelled, refused), aggregated by model and key', async () => {
  await withGate({ platform: { limits: { models: { 'tiny/limited': { rpm: 1 } } } } }, async (gate) => {
    const principal: Principal = { accountId: 'acme', keyId: 'key_a', keyName: 'a' };
    await (await gate.admit(request(principal))).settle(usage());
    await (await gate.admit(request(principal))).settle(usage({ outcome: 'cancelled', completionTokens: 3 }));
    await (await gate.admit(request(principal, { model: 'tiny/embed', endpoint: 'embeddings' }))).settle(
      usage({ completionTokens: 0, reasoningTokens: 0, status: 400, outcome: 'error' }),
    );
    await (await gate.admit(request(principal, { model: 'tiny/limited' }))).settle(usage());
    await gate.admit(request(principal, { model: 'tiny/limited' })).catch(() => {});
    await gate.ledger.close();
    const store = gate.admin.store;
    assert.equal(await store.countLedger(), 5);
    const byModel = await gate.admin.usage({ by: 'model' });
    const chat = byModel.find((row) => row.group === 'tiny/chat')!;
    assert.equal(chat.requests, 2);
    assert.equal(chat.cancelled, 1);
    assert.equal(chat.completionTokens, 10);
    assert.equal(chat.reasoningTokens, 4);
    const limited = byModel.find((row) => row.group === 'tiny/limited')!;
    assert.equal(limited.requests, 2);
    assert.equal(limited.errors, 1, 'the 429 is recorded as an error row');
    assert.equal(byModel.find((row) => row.group === 'tiny/embed')!.errors, 1);
    const byKey = await gate.admin.usage({ by: 'key', since: Date.now() - 60_000 });
    assert.deepEqual(byKey.map((row) => [row.group, row.requests]), [['key_a', 5]]);
    assert.deepEqual(await gate.admin.usage({ by: 'model', since: Date.now() + 60_000 }), []);
  });
});

test('group commit: concurrent settles share transactions, each resolves only after its row is durable', async () => {
  await withGate({}, async (gate) => {
    const principal: Principal = { accountId: 'acme', keyId: 'k', keyName: 'k' };
    const admissions = await Promise.all(Array.from({ length: 300 }, () => gate.admit(request(principal))));
    await Promise.all(admissions.map((a) => a.settle(usage())));
    assert.equal(gate.ledger.stats.rows, 300);
    assert.ok(gate.ledger.stats.transactions <= 3, `expected batching, got ${gate.ledger.stats.transactions} transactions`);
    assert.equal(await gate.admin.store.countLedger(), 300);
    const admission = await gate.admit(request(principal));
    await admission.settle(usage());
    await admission.settle(usage());
    assert.equal(await gate.admin.store.countLedger(), 301, 'a second settle of one admission writes nothing');
  });
});

test('pricing: priced models reserve their worst case (403 when not covered), settle refunds exactly; /user/info strings', async () => {
  await withGate(
    { platform: { pricing: { 'paid/chat': { inputPerMillion: 2, outputPerMillion: 8 }, 'paid/rerank': { perSearch: 0.01 } } } },
    async (gate) => {
      const principal: Principal = { accountId: 'acme', keyId: 'k', keyName: 'k' };
      const worstCase = { promptTokens: 1000, completionTokens: 1000, images: 0, documents: 0 };
      await gate.admin.createAccount('acme');
      await rejects(gate.admit(request(principal, { model: 'paid/chat' })), 403, /^Sorry, your account balance is insufficient/);
      await assert.rejects(gate.admit(request(principal, { model: 'paid/chat' })), (e: InferaError) => e.siliconflowCode === 30001 && e.code === 'insufficient_balance');
      await (await gate.admit(request(principal, { model: 'free/chat' }))).settle(usage());

      await gate.admin.topUp('acme', parseAmount('1.5'));
      const admission = await gate.admit(request(principal, { model: 'Paid/Chat', worstCase }));
      // Held while the request runs: 1000 × 2/M + 1000 × 8/M = 0.01.
      assert.equal((await gate.userInfo(principal)).balance, '1.49');
      // 1000 prompt × 2/M + 500 completion × 8/M = 0.002 + 0.004; the unused 0.004 comes back.
      await admission.settle(usage({ promptTokens: 1000, completionTokens: 500 }));
      await (await gate.admit(request(principal, { model: 'paid/rerank', endpoint: 'rerank', worstCase: { ...worstCase, documents: 150 } }))).settle(
        usage({ promptTokens: 0, completionTokens: 0, documents: 150 }),
      );
      const info = await gate.userInfo(principal);
      // 1.5 - 0.006 - 2 searches × 0.01
      assert.equal(info.balance, '1.474');
      assert.equal(info.totalBalance, '1.474');
      assert.equal(info.chargeBalance, '1.474');
      assert.equal(info.id, 'acme');

      // A request can never be charged more than it reserved.
      const capped = await gate.admit(request(principal, { model: 'paid/chat', worstCase: { ...worstCase, completionTokens: 10 } }));
      await capped.settle(usage({ promptTokens: 1000, completionTokens: 500 }));
      assert.equal((await gate.userInfo(principal)).balance, '1.47192');

      // resize: smaller gives back at once, larger is taken only when covered.
      const growing = await gate.admit(request(principal, { model: 'paid/chat', worstCase }));
      await growing.resize({ ...worstCase, completionTokens: 0 });
      assert.equal((await gate.userInfo(principal)).balance, '1.46992');
      await rejects(growing.resize({ ...worstCase, completionTokens: 1_000_000_000 }), 403, /may cost up to 8000\.002/);
      await growing.settle(usage({ promptTokens: 1000, completionTokens: 0, status: 403, outcome: 'error' }));
      assert.equal((await gate.userInfo(principal)).balance, '1.46992');

      await gate.admin.topUp('acme', -parseAmount('1.46992'));
      await rejects(gate.admit(request(principal, { model: 'paid/chat' })), 403, /insufficient/);
    },
  );
});

test('deferred reservation: admission trusts the balance its last take returned when it covers the estimate, reads the store when not, and resize still refuses what another process spent', async () => {
  await withGate({ platform: { pricing: { 'paid/chat': { inputPerMillion: 2, outputPerMillion: 8 } } } }, async (gate, dir) => {
    const principal: Principal = { accountId: 'acme', keyId: 'k', keyName: 'k' };
    // 0.01 per worst case.
    const worstCase = { promptTokens: 1000, completionTokens: 1000, images: 0, documents: 0 };
    const deferred = () => request(principal, { model: 'paid/chat', worstCase, deferReservation: true });
    await gate.admin.topUp('acme', parseAmount('0.05'));
    const store = gate.admin.store;
    const read = store.getAccount.bind(store);
    let reads = 0;
    store.getAccount = (id: string) => {
      reads++;
      return read(id);
    };
    const a = await gate.admit(deferred());
    assert.equal(reads, 1, 'the first admission reads the balance');
    await a.resize(worstCase);
    const b = await gate.admit(deferred());
    assert.equal(reads, 1, 'the balance a take returned (0.04) covers the next estimate: no read');

    // Another process (the CLI, a second server) spends all but 0.005 meanwhile.
    const other = new Database(sqlitePath(configSchema.parse({ storage: { dataDir: dir } })));
    try {
      other.prepare('UPDATE accounts SET balance_micro = 5000 WHERE id = ?').run('acme');
    } finally {
      other.close();
    }
    // b was admitted on the older figure; its take is against the store and refused there.
    await rejects(b.resize(worstCase), 403, /insufficient/);
    await b.settle(usage({ promptTokens: 0, completionTokens: 0, status: 403, outcome: 'error' }));
    assert.equal((await gate.userInfo(principal)).balance, '0.005', 'never overdrawn, nothing taken by the refused request');
    // The refused take returned 0.005, which does not cover 0.01: the store is read, and admission refuses.
    const before = reads;
    await rejects(gate.admit(deferred()), 403, /insufficient/);
    assert.equal(reads, before + 1, 'a figure too low to admit is never trusted to refuse');
    await a.settle(usage({ promptTokens: 1000, completionTokens: 1000 }));
  });
});

test('deferred reservation (chat on a loaded model): admission checks the balance, resize takes it, never overdrawn', async () => {
  await withGate({ platform: { pricing: { 'paid/chat': { inputPerMillion: 2, outputPerMillion: 8 } } } }, async (gate, dir) => {
    const principal: Principal = { accountId: 'acme', keyId: 'k', keyName: 'k' };
    // 1000 × 2/M + 1000 × 8/M = 0.01 per worst case.
    const worstCase = { promptTokens: 1000, completionTokens: 1000, images: 0, documents: 0 };
    const deferred = (extra: Partial<AdmissionRequest> = {}) => request(principal, { model: 'paid/chat', worstCase, deferReservation: true, ...extra });
    await gate.admin.createAccount('acme');
    await rejects(gate.admit(deferred()), 403, /insufficient/);
    await gate.admin.topUp('acme', parseAmount('0.015'));

    const a = await gate.admit(deferred());
    assert.equal((await gate.userInfo(principal)).balance, '0.015', 'admission took nothing');
    const b = await gate.admit(deferred());
    // The first resize takes its exact worst case; the second no longer fits and is refused there.
    await a.resize(worstCase);
    assert.equal((await gate.userInfo(principal)).balance, '0.005');
    await rejects(b.resize(worstCase), 403, /insufficient/);
    await b.settle(usage({ promptTokens: 0, completionTokens: 0, status: 403, outcome: 'error' }));
    assert.equal((await gate.userInfo(principal)).balance, '0.005', 'the refused request took and charged nothing');
    // Settled: the unused part of the reservation comes back (1000 × 2/M + 500 × 8/M = 0.006).
    await a.settle(usage({ promptTokens: 1000, completionTokens: 500 }));
    assert.equal((await gate.userInfo(principal)).balance, '0.009');

    // Settled without a resize (the prompt was refused before anything ran): charged at most the
    // estimate admission checked, with no reservation to release.
    const c = await gate.admit(deferred({ worstCase: { ...worstCase, completionTokens: 10 } }));
    await c.settle(usage({ promptTokens: 1000, completionTokens: 500 }));
    assert.equal((await gate.userInfo(principal)).balance, '0.00692');
    const db = new Database(sqlitePath(configSchema.parse({ storage: { dataDir: dir } })), { readonly: true });
    try {
      assert.equal((db.prepare('SELECT COUNT(*) AS n FROM reservations').get() as { n: number }).n, 0, 'no reservation left behind');
      assert.equal((db.prepare('SELECT COUNT(*) AS n FROM ledger').get() as { n: number }).n, 4, 'every request has its row (the refused admission too)');
    } finally {
      db.close();
    }
  });
});

test('platform config is validated with paths; helpers parse amounts and durations', () => {
  assert.throws(() => parsePlatformConfig({ limits: { defaults: { chat: { rpmm: 3 } } } }), /platform\.limits\.defaults\.chat/);
  assert.throws(() => parsePlatformConfig({ pricing: { m: { inputPerMillion: -1 } } }), /platform\.pricing\.m\.inputPerMillion/);
  assert.equal(parsePlatformConfig(undefined).keyCacheSeconds, 5);
  assert.equal(formatMicro(1_500_000), '1.50');
  assert.equal(formatMicro(-2_000_001), '-2.000001');
  assert.equal(parseAmount('0.25'), 250_000);
  assert.deepEqual(parseLimitsFlag('rpm=10, TPM=1000'), { rpm: 10, tpm: 1000 });
  assert.throws(() => parseLimitsFlag('rpn=3'), /unknown limit "rpn"/);
  assert.throws(() => parseLimitsFlag('rpm=0'), /positive integer/);
  assert.throws(() => parseAmount('1.2345678'));
  assert.equal(parseSince('2h', 10_000_000), 10_000_000 - 7_200_000);
  assert.equal(parseSince('2026-01-01T00:00:00Z'), Date.UTC(2026, 0, 1));
  assert.throws(() => parseSince('yesterday'));
});

test('migrations are versioned and run once; data survives reopening', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'infera-mig-'));
  try {
    const config = configSchema.parse({ storage: { dataDir: dir } });
    const first = await createGate(config, silent);
    const { secret } = await first.admin.createKey({ name: 'keep' });
    await first.close();
    const second = await createGate(config, silent);
    assert.equal((await second.authenticate(secret, '127.0.0.1')).keyName, 'keep');
    await second.close();
    const db = new Database(sqlitePath(config), { readonly: true });
    assert.deepEqual(db.prepare('SELECT version FROM infera_migrations').all(), [{ version: 1 }, { version: 2 }, { version: 3 }, { version: 4 }, { version: 5 }]);
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    db.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
