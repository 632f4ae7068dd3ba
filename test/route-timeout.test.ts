// A request that runs past its route's time limit (server.routeTimeoutsSeconds) is stopped: the engine
// work is aborted, a JSON request gets a 504, a stream an error frame and [DONE], and the ledger row
// settles with status 504. The random 512x8 benchmark GGUF never stops early, so 1,000 tokens take
// seconds against a 1.5 s limit (long enough for the first tokens on a busy 2-core box).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import OpenAI from 'openai';
import { sqlitePath } from '../src/platform/index.ts';
import { ensureBenchModel } from '../src/tiny-models/index.ts';
import { ensureTinyDiffusionModel } from '../src/tiny-models/onnx/index.ts';
import { http, SHARED_DATA_DIR, startTestServer, type TestServer } from './helpers/server.ts';

let server: TestServer;
before(async () => {
  const path = await ensureBenchModel('chat-512x8', join(SHARED_DATA_DIR, 'bench-models'));
  server = await startTestServer({
    config: {
      server: { routeTimeoutsSeconds: { chat: 1.5 } },
      models: [{ id: 'bench/chat', type: 'chat', engine: 'llama-cpp', path, llamaCpp: { contextSize: 2048, sequences: 2, threads: 1 } }],
    },
  });
  // Load and run once first: the limit is for answering, and a cold load on a busy box could take most
  // of it, as could the first generation in a fresh engine process (its code is not compiled yet).
  (await server.server.services.registry.acquire('bench/chat', 'chat')).release();
  const warm = await fetch(`${server.baseURL}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...ask, max_tokens: 2, stream: true }),
  });
  await warm.text();
});
after(() => server.close());

const ask = { model: 'bench/chat', messages: [{ role: 'user' as const, content: 'A very long story, please.' }], max_tokens: 1000 };

function ledger() {
  const db = new Database(sqlitePath(server.config), { readonly: true });
  try {
    return db.prepare('SELECT endpoint, outcome, status, completion_tokens FROM ledger ORDER BY id').all() as {
      endpoint: string;
      outcome: string;
      status: number;
      completion_tokens: number;
    }[];
  } finally {
    db.close();
  }
}

test('a JSON answer past the route limit: 504 request_timeout naming the setting, work stopped, row settled 504', async () => {
  const client = new OpenAI({ baseURL: server.baseURL, apiKey: 'none', maxRetries: 0 });
  const started = Date.now();
  await assert.rejects(client.chat.completions.create(ask), (error: unknown) => {
    assert.ok(error instanceof OpenAI.APIError && error.status === 504, String(error));
    assert.equal(error.code, 'request_timeout');
    assert.match(error.message, /server\.routeTimeoutsSeconds\.chat/);
    return true;
  });
  assert.ok(Date.now() - started < 5000, `stopped promptly (${Date.now() - started} ms)`);
  const row = ledger().at(-1)!;
  assert.equal(row.status, 504);
  assert.equal(row.outcome, 'cancelled');
});

test('a stream past the route limit: an error frame and [DONE], tokens so far billed, the sequence freed', async () => {
  const response = await fetch(`${server.baseURL}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...ask, stream: true }),
  });
  assert.equal(response.status, 200);
  const lines = (await response.text()).split('\n\n').filter((block) => block.startsWith('data: ')).map((block) => block.slice(6));
  assert.equal(lines.at(-1), '[DONE]');
  assert.equal(lines.filter((line) => line === '[DONE]').length, 1);
  assert.equal((JSON.parse(lines.at(-2)!) as { error: { code: string } }).error.code, 'request_timeout');
  const row = ledger().at(-1)!;
  assert.equal(row.status, 504);
  assert.ok(row.completion_tokens > 0 && row.completion_tokens < 1000, `tokens generated before the stop are billed: ${row.completion_tokens}`);
  // Both sequences are free again: two short answers run side by side.
  const client = new OpenAI({ baseURL: server.baseURL, apiKey: 'none', maxRetries: 0 });
  const short = await Promise.all([1, 2].map(() => client.chat.completions.create({ ...ask, max_tokens: 4 })));
  for (const answer of short) assert.equal(answer.choices[0]!.finish_reason, 'length');
});

test('/v1/completions runs under the chat route limit: 504 for JSON, an error frame for a stream, rows settled 504', async () => {
  const client = new OpenAI({ baseURL: server.baseURL, apiKey: 'none', maxRetries: 0 });
  const request = { model: 'bench/chat', prompt: 'A very long story, please.', max_tokens: 1000 };
  const started = Date.now();
  await assert.rejects(client.completions.create(request), (error: unknown) => {
    assert.ok(error instanceof OpenAI.APIError && error.status === 504, String(error));
    assert.match(error.message, /server\.routeTimeoutsSeconds\.chat/);
    return true;
  });
  assert.ok(Date.now() - started < 5000, `stopped promptly (${Date.now() - started} ms)`);
  let row = ledger().at(-1)!;
  assert.deepEqual([row.endpoint, row.status, row.outcome], ['completions', 504, 'cancelled']);

  const response = await fetch(`${server.baseURL}/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...request, stream: true }),
  });
  assert.equal(response.status, 200);
  const lines = (await response.text()).split('\n\n').filter((block) => block.startsWith('data: ')).map((block) => block.slice(6));
  assert.equal(lines.at(-1), '[DONE]');
  assert.equal((JSON.parse(lines.at(-2)!) as { error: { code: string } }).error.code, 'request_timeout');
  row = ledger().at(-1)!;
  assert.deepEqual([row.endpoint, row.status], ['completions', 504]);
  assert.ok(row.completion_tokens > 0 && row.completion_tokens < 1000, `tokens generated before the stop are billed: ${row.completion_tokens}`);
});

test('the images route has its own limit: 504 naming server.routeTimeoutsSeconds.images, the denoising loop stopped, row settled 504', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'infera-route-timeout-images-'));
  const images = await startTestServer({
    config: {
      // The chat limit is off here: only the images route's own limit can stop the request.
      server: { routeTimeoutsSeconds: { images: 1, chat: 0 } },
      // Room for twice the default's most work: at the default the slow request took 1.05 s on a quiet box.
      requests: { maxImagePixelSteps: 4 * 1024 * 1024 * 100 },
      models: [{ id: 'tiny/sd', type: 'text-to-image', engine: 'onnx-diffusion', path: await ensureTinyDiffusionModel(join(dir, 'sd')), onnx: { threads: 1, defaultSize: '64x64' } }],
    },
  });
  try {
    const quick = { model: 'tiny/sd', prompt: 'a cat', image_size: '64x64', num_inference_steps: 1 };
    // Loaded first (the limit runs from arrival, load included), then one warm generation.
    (await images.server.services.registry.acquire('tiny/sd', 'text-to-image')).release();
    assert.equal((await http(images.baseURL, '/images/generations', { body: quick })).status, 200, 'loaded and warm');
    const started = Date.now();
    // The most work the raised requests.maxImagePixelSteps allows: ~2 s on a quiet box, more when busy.
    const slow = await http(images.baseURL, '/images/generations', { body: { ...quick, image_size: '1024x1024', batch_size: 4, num_inference_steps: 100 } });
    assert.equal(slow.status, 504, slow.text);
    assert.equal(slow.json.error.code, 'request_timeout');
    assert.equal(slow.json.code, 50504);
    assert.match(slow.json.error.message, /server\.routeTimeoutsSeconds\.images/);
    assert.ok(Date.now() - started < 5000, `stopped promptly (${Date.now() - started} ms)`);
    const db = new Database(sqlitePath(images.config), { readonly: true });
    const row = db.prepare('SELECT endpoint, status, outcome FROM ledger ORDER BY id DESC LIMIT 1').get();
    db.close();
    assert.deepEqual(row, { endpoint: 'images', status: 504, outcome: 'cancelled' });
    // The loop stopped at its next step: the model's one slot is free for the next request at once.
    const next = Date.now();
    assert.equal((await http(images.baseURL, '/images/generations', { body: quick })).status, 200);
    assert.ok(Date.now() - next < 3000, `the next generation was not queued behind the stopped one (${Date.now() - next} ms)`);
  } finally {
    await images.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
