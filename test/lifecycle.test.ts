// The model lifecycle through the real server, with real engine processes on the tiny models: an idle
// model unloads after its keep-alive (its process ends, the next request loads it again), keepAlive 0
// and the request's keep_alive, -1 keeps it, a model with requests in flight is never unloaded, the
// memory budget unloads the least recently used idle model or answers 503 + Retry-After, the resident
// cap does the same by count, concurrent first requests share one load, and `infera ps` shows it all.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { configSchema } from '../src/config/schema.ts';
import { estimateLlamaCppMemory } from '../src/engines/llama-cpp/memory.ts';
import type { LlamaCppModelConfig } from '../src/engines/llama-cpp/config.ts';
import type { ModelEntry } from '../src/registry/registry.ts';
import { ensureTinyModels, type TinyModelPaths } from '../src/tiny-models/index.ts';
import { http, SHARED_DATA_DIR, startTestServer, type TestServer } from './helpers/server.ts';

const ADMIN = 'admin-secret-for-lifecycle';
const run = promisify(execFile);
let paths: TinyModelPaths;

const chat = (id: string, extra: Record<string, unknown> = {}) => ({
  id,
  type: 'chat',
  engine: 'llama-cpp',
  path: paths.chat,
  llamaCpp: { contextSize: 256, sequences: 2, threads: 1 },
  ...extra,
});
const alive = (pid: number | undefined): boolean => {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Engine processes this test process has started and that still run (their parent is us). */
function engineChildren(): number[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .flatMap((name) => {
      try {
        const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
        const command = readFileSync(`/proc/${name}/cmdline`, 'utf8');
        return ppid === process.pid && /runner[/\\]child\.[tj]s/.test(command) ? [Number(name)] : [];
      } catch {
        return [];
      }
    });
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

before(async () => {
  paths = await ensureTinyModels(join(SHARED_DATA_DIR, 'tiny-models'));
});

function helpers(server: () => TestServer) {
  const entry = (id: string) => server().server.services.registry.entries().find((e) => e.config.id === id) as ModelEntry;
  const ask = (model: string, extra: Record<string, unknown> = {}) =>
    http(server().baseURL, '/chat/completions', { body: { model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 2, enable_thinking: false, ...extra } });
  const admin = async (model: string) => {
    const answer = await http(server().url, '/admin/models', { headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal(answer.status, 200, answer.text);
    return answer.json.data.find((row: { id: string }) => row.id === model);
  };
  return { entry, ask, admin };
}

describe('keep-alive', () => {
  let server: TestServer;
  const { entry, ask, admin } = helpers(() => server);

  before(async () => {
    server = await startTestServer({
      // One resident model at a time: the keepAlive 0 model's load has to make room.
      config: { server: { adminKey: ADMIN }, lifecycle: { maxLoaded: 1 }, models: [chat('ka/default'), chat('ka/zero', { keepAlive: 0 })] },
    });
  });
  after(() => server?.close());

  test('concurrent first requests share one load (one engine process); keep_alive "1s" then unloads it: the process ends, the state says so', async () => {
    const before = new Set(engineChildren());
    const states: string[] = [entry('ka/default').state];
    // Every start of a load goes through 'loading'; watched as often as the event loop allows.
    const watch = setInterval(() => {
      const state = entry('ka/default').state;
      if (states.at(-1) !== state) states.push(state);
    }, 1);
    const answers = await Promise.all(Array.from({ length: 6 }, () => ask('ka/default', { keep_alive: '1s' })));
    clearInterval(watch);
    for (const answer of answers) assert.equal(answer.status, 200, answer.text);
    assert.deepEqual(states, ['unloaded', 'loading', 'ready']);
    const pid = entry('ka/default').pid;
    assert.deepEqual(engineChildren().filter((child) => !before.has(child)), [pid], 'exactly one engine process was started');

    const row = await admin('ka/default');
    assert.equal(row.state, 'ready');
    assert.equal(row.keepAlive, 1);
    assert.equal(row.leases, 0);
    assert.ok(row.memory > 0 && row.lastUsed && row.pid === pid, JSON.stringify(row));
    assert.ok(Date.parse(row.expiresAt) <= Date.now() + 1000, row.expiresAt);
    await until('the model is unloaded and its process gone', () => entry('ka/default').state === 'unloaded' && !alive(pid));
    const unloaded = await admin('ka/default');
    assert.equal(unloaded.state, 'unloaded');
    assert.equal(unloaded.pid, undefined);
    assert.equal(unloaded.expiresAt, undefined);
  });

  test('the next request loads it again; keep_alive -1 keeps it loaded, and the model\'s own keep-alive (5 min) returns with the next request', async () => {
    assert.equal((await ask('ka/default', { keep_alive: -1 })).status, 200);
    const kept = entry('ka/default').pid;
    assert.ok(alive(kept));
    const row = await admin('ka/default');
    assert.equal(row.state, 'ready');
    assert.equal(row.keepAlive, -1);
    assert.equal(row.expiresAt, undefined, 'never expires');
    const metrics = await http(server.url, '/metrics', { headers: { authorization: `Bearer ${ADMIN}` } });
    assert.match(metrics.text, new RegExp(`^infera_model_memory_bytes\\{model="ka/default"\\} ${row.memory}$`, 'm'));
    assert.match(metrics.text, /^infera_model_memory_bytes\{model="ka\/zero"\} 0$/m);
    await sleep(1_200);
    assert.equal(entry('ka/default').state, 'ready');
    assert.equal(entry('ka/default').pid, kept);
    assert.equal((await ask('ka/default')).status, 200);
    const expires = Date.parse((await admin('ka/default')).expiresAt);
    assert.ok(Math.abs(expires - (Date.now() + 300_000)) < 5_000, `expires in about 5 min: ${new Date(expires).toISOString()}`);
    assert.equal(entry('ka/default').pid, kept, 'not reloaded');
  });

  test('a bad keep_alive is a 400 naming keep_alive on every model route', async () => {
    const bodies: [string, Record<string, unknown>][] = [
      ['/chat/completions', { model: 'ka/default', messages: [{ role: 'user', content: 'hi' }] }],
      ['/completions', { model: 'ka/default', prompt: 'hi' }],
      ['/embeddings', { model: 'any', input: 'hi' }],
      ['/rerank', { model: 'any', query: 'q', documents: ['d'] }],
      ['/images/generations', { model: 'any', prompt: 'a cat' }],
    ];
    for (const [path, body] of bodies)
      for (const bad of ['soon', true, '5 minutes']) {
        const answer = await http(server.baseURL, path, { body: { ...body, keep_alive: bad } });
        assert.equal(answer.status, 400, `${path} ${JSON.stringify(bad)}: ${answer.text}`);
        assert.equal(answer.json.error.param, 'keep_alive', answer.text);
        assert.match(answer.json.error.message, /keep_alive: .*duration like "5m"/);
      }
    // A good one passes validation everywhere (the unknown model is what these answer).
    for (const [path, body] of bodies.slice(2)) {
      const answer = await http(server.baseURL, path, { body: { ...body, keep_alive: '10m' } });
      assert.equal(answer.json.error.param, 'model', `${path}: ${answer.text}`);
    }
  });

  test('keep_alive shows in the API reference (/openapi.json) on the model routes', async () => {
    const doc = (await http(server.url, '/openapi.json')).json;
    for (const path of ['/v1/chat/completions', '/v1/completions', '/v1/embeddings', '/v1/rerank', '/v1/images/generations']) {
      const schema = doc.paths[path]?.post?.requestBody?.content?.['application/json']?.schema;
      assert.ok(schema, `${path} has a body schema`);
      const resolved = schema.$ref ? doc.components.schemas[schema.$ref.split('/').at(-1)] : schema;
      assert.ok(resolved.properties?.keep_alive, `${path} documents keep_alive: ${JSON.stringify(resolved).slice(0, 200)}`);
    }
  });

  test('infera ps lists the models of the running server: state, memory, last use, when each unloads', async () => {
    const ps = (...args: string[]) => run(process.execPath, ['bin/infera.js', 'ps', '--url', server.url, ...args], { env: { ...process.env, INFERA_CONFIG: '' } });
    const { stdout } = await ps('--admin-key', ADMIN);
    const lines = stdout.split('\n');
    assert.match(lines[0]!, /^MODEL\s+TYPE\s+STATE\s+MEMORY\s+PID\s+IN USE\s+LAST USED\s+UNLOADS\s+KEEP-ALIVE$/);
    const line = (id: string) => lines.find((l) => l.startsWith(`${id} `)) ?? assert.fail(`no line for ${id}:\n${stdout}`);
    assert.match(line('ka/default'), new RegExp(`^ka/default\\s+chat\\s+loaded\\s+[\\d.]+ (KiB|MiB)\\s+${entry('ka/default').pid}\\s+0\\s+\\d+ s ago\\s+in [45] min\\s+300 s$`));
    assert.match(line('ka/zero'), /^ka\/zero\s+chat\s+unloaded\s+-\s+-\s+0\s+-\s+-\s+0 s$/);
    assert.match(stdout, /\n1 of at most 1 models resident; no memory budget\n$/);

    const refused = await ps('--admin-key', 'wrong-key-here').then(
      () => assert.fail('a wrong admin key must fail'),
      (error: { code: number; stderr: string }) => error,
    );
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /admin API needs/);
  });
  test('lifecycle.maxLoaded: a load first unloads the idle model; keepAlive 0 unloads after the last request, never under one in flight', async () => {
    const other = entry('ka/default').pid;
    // A request holds a lease for as long as it runs: this one stands for a long generation.
    const held = await server.server.services.registry.acquire('ka/zero', 'chat');
    const pid = entry('ka/zero').pid!;
    assert.equal(entry('ka/default').state, 'unloaded', 'the idle model made room (maxLoaded 1)');
    assert.ok(!alive(other), 'its engine process ended');
    // The cap is full and its one model busy: refused, with the setting named.
    const refused = await ask('ka/default');
    assert.equal(refused.status, 503, refused.text);
    assert.ok(Number(refused.headers.get('retry-after')) >= 1);
    assert.equal(refused.json.error.code, 'max_loaded_models');
    assert.match(refused.json.error.message, /lifecycle\.maxLoaded = 1\b.*ka\/zero .*1 request\(s\) in flight/);

    assert.equal((await ask('ka/zero')).status, 200);
    await sleep(300);
    assert.equal(entry('ka/zero').state, 'ready', 'not unloaded under the request still in flight');
    assert.ok(alive(pid));
    // Nor by an operator: unloading is refused while requests use the model.
    const busy = await http(server.url, '/admin/models/unload', { body: { model: 'ka/zero' }, headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal(busy.status, 409, busy.text);
    assert.equal(busy.json.error.code, 'model_in_use');
    // Bad input: a body without the model names the field; an unknown id is a 404 naming it.
    const missing = await http(server.url, '/admin/models/unload', { body: {}, headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal(missing.status, 400, missing.text);
    assert.equal(missing.json.error.param, 'model');
    const unknown = await http(server.url, '/admin/models/unload', { body: { model: 'no/such-model' }, headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal(unknown.status, 404, unknown.text);
    assert.match(unknown.json.error.message, /no\/such-model/);
    held.release();
    await until('the last request over, keepAlive 0 unloads it', () => entry('ka/zero').state === 'unloaded' && !alive(pid), 5_000);
  });
});

describe('memory budget', () => {
  let server: TestServer;
  let estimate: number;
  const { entry, ask, admin } = helpers(() => server);

  before(async () => {
    const raw = { models: [chat('mem/a', { keepAlive: -1 })] };
    estimate = await estimateLlamaCppMemory(configSchema.parse(raw).models[0] as LlamaCppModelConfig);
    server = await startTestServer({
      config: {
        server: { adminKey: ADMIN },
        // Room for one of the chat models, not two.
        lifecycle: { memoryBudget: Math.floor(estimate * 1.5), preload: ['mem/a'] },
        models: [chat('mem/a', { keepAlive: -1 }), chat('mem/b', { keepAlive: -1 }), chat('mem/huge', { memory: '1TiB' })],
      },
    });
  });
  after(() => server?.close());

  test('the estimate is the GGUF file plus its KV cache (layers × context × sequences × K+V width × 2 bytes)', () => {
    const file = readFileSync(paths.chat).length;
    // The tiny chat model: 2 layers, 1 KV head of 32 + 32 (qwen3.attention.key_length/value_length);
    // the entry's 256 tokens × 2 sequences of f16 cache.
    assert.equal(estimate - file, 2 * (256 * 2) * 1 * (32 + 32) * 2);
  });

  test('lifecycle.preload loads at startup; a load that would pass the budget first unloads the least recently used idle model', async () => {
    // What `infera serve` runs once it listens.
    await server.server.services.registry.preload();
    assert.equal(entry('mem/a').state, 'ready');
    assert.equal(entry('mem/b').state, 'unloaded');
    assert.equal((await ask('mem/a')).status, 200);
    const a = entry('mem/a').pid;
    assert.equal((await admin('mem/a')).memory, estimate);
    assert.equal((await ask('mem/b')).status, 200);
    assert.equal(entry('mem/a').state, 'unloaded');
    assert.ok(!alive(a), 'its engine process ended before the other loaded');
    assert.equal(entry('mem/b').state, 'ready');
  });

  test('when the resident models are busy, the load is refused: 503 + Retry-After naming the budget', async () => {
    const held = await server.server.services.registry.acquire('mem/b', 'chat');
    try {
      const answer = await ask('mem/a');
      assert.equal(answer.status, 503, answer.text);
      assert.ok(Number(answer.headers.get('retry-after')) >= 1);
      assert.equal(answer.json.error.code, 'memory_budget_full');
      assert.match(answer.json.error.message, /lifecycle\.memoryBudget/);
      assert.match(answer.json.error.message, /mem\/b .*1 request\(s\) in flight/);
      assert.equal(entry('mem/b').state, 'ready', 'the busy model was not touched');
      assert.equal(entry('mem/a').state, 'unloaded', 'refused for room is not a failure (no backoff)');
    } finally {
      held.release();
    }
    const huge = await ask('mem/huge');
    assert.equal(huge.status, 503, huge.text);
    assert.equal(huge.json.error.code, 'model_exceeds_memory_budget');
    assert.match(huge.json.error.message, /1\.00 TiB, more than the whole memory budget/);
    assert.equal(entry('mem/b').state, 'ready', 'nothing was unloaded for a model that can never fit');
    const listing = await http(server.url, '/admin/models', { headers: { authorization: `Bearer ${ADMIN}` } });
    assert.deepEqual(listing.json.lifecycle, { maxLoaded: 0, memoryBudget: Math.floor(estimate * 1.5), resident: 1, memoryUsed: estimate });
  });
});
