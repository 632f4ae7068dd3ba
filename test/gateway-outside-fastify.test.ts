// A chat, embeddings or rerank POST quick.ts accepts is served outside Fastify (src/http/app.ts,
// servedOutside); the same request with a content-type quick.ts leaves alone ("application/json;
// charset=utf-8") goes through Fastify's route. Both must answer the same bytes (status, every header but the date, the body with
// its generated ids and times masked), for JSON, SSE, a refusal the gate makes after the body (a model
// the key may not use) and an upstream failure; and both are recorded (metrics, ledger).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { configSchema } from '../src/config/schema.ts';
import { createGate, type PlatformGate, sqlitePath } from '../src/platform/index.ts';
import { rawAnswer } from './helpers/raw-answer.ts';
import { http, startTestServer, type TestServer } from './helpers/server.ts';

const KEY = 'sk-test-outside-fastify';
const MODEL = 'org/upstream-chat';
const BROKEN = 'org/upstream-broken';
const EMBED = 'org/upstream-embed';
const RERANK = 'org/upstream-rerank';

/**
 * A fake OpenAI-compatible upstream: a fixed answer with usage (JSON or SSE); 500 for the broken model's
 * upstream name; for "hang", no answer (JSON) or one chunk and then nothing (SSE), each such request's
 * close time in `hung`.
 */
function fakeUpstream(hung: number[] = []): Promise<Server> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      if (req.url === '/v1/models') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ object: 'list', data: [{ id: 'up', object: 'model' }] }));
        return;
      }
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { model: string; stream?: boolean; input?: unknown[]; documents?: unknown[] };
      if (body.model === 'hang') {
        const at = hung.push(0) - 1;
        res.on('close', () => (hung[at] = Date.now()));
        if (body.stream) res.writeHead(200, { 'content-type': 'text/event-stream' }).write(`data: ${JSON.stringify({ id: 'x', object: 'chat.completion.chunk', created: 1, model: 'hang', choices: [{ index: 0, delta: { role: 'assistant', content: 'Hel' }, finish_reason: null }] })}\n\n`);
        return;
      }
      if (body.model === 'broken') {
        res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":{"message":"boom"}}');
        return;
      }
      if (req.url === '/v1/embeddings') {
        const data = (body.input ?? []).map((_, index) => ({ object: 'embedding', index, embedding: [0.25, -0.5, index] }));
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ object: 'list', data, model: body.model, usage: { prompt_tokens: 5, total_tokens: 5 } }));
        return;
      }
      if (req.url === '/v1/completions') {
        const usage = { prompt_tokens: 4, completion_tokens: 2, total_tokens: 6 };
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ id: 'x', object: 'text_completion', created: 1, model: body.model, choices: [{ index: 0, text: ' Hello.', finish_reason: 'stop' }], usage }));
        return;
      }
      if (req.url === '/v1/rerank') {
        const results = (body.documents ?? []).map((_, index) => ({ index, relevance_score: 1 / (index + 2) }));
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ results, usage: { prompt_tokens: 9, total_tokens: 9 } }));
        return;
      }
      const usage = { prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 };
      if (body.stream) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const chunk = (delta: object, finish: string | null, extra: object = {}) =>
          `data: ${JSON.stringify({ id: 'x', object: 'chat.completion.chunk', created: 1, model: body.model, choices: [{ index: 0, delta, finish_reason: finish }], ...extra })}\n\n`;
        res.end(`${chunk({ role: 'assistant', content: 'Hel' }, null)}${chunk({ content: 'lo.' }, 'stop')}data: ${JSON.stringify({ id: 'x', object: 'chat.completion.chunk', created: 1, model: body.model, choices: [], usage })}\n\ndata: [DONE]\n\n`);
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: 'x', object: 'chat.completion', created: 1, model: body.model, choices: [{ index: 0, message: { role: 'assistant', content: 'Hello.' }, finish_reason: 'stop' }], usage }));
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** The raw answer (fresh connection): status, headers but the date, body; generated ids and times masked. */
async function raw(base: string, contentType: string, body: unknown, path = '/v1/chat/completions'): Promise<string> {
  return (await rawAnswer(base, path, body, { 'content-type': contentType, authorization: `Bearer ${KEY}` }))
    .replace(/req_[0-9a-f]{32}/g, 'req_ID')
    .replace(/(chatcmpl|cmpl)-[\w-]+/g, '$1-ID')
    .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, 'UUID')
    .replace(/"created":\d+/g, '"created":0');
}

describe('chat POST served outside Fastify', () => {
  let upstream: Server;
  let server: TestServer;
  before(async () => {
    upstream = await fakeUpstream();
    const baseUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1`;
    server = await startTestServer({
      config: {
        server: { apiKeys: [KEY], metrics: { public: true } },
        models: [
          { id: MODEL, type: 'chat', engine: 'openai-compatible', upstream: { baseUrl, model: 'up', dialect: 'openai', contextSize: 4096 } },
          { id: BROKEN, type: 'chat', engine: 'openai-compatible', upstream: { baseUrl, model: 'broken', dialect: 'openai', contextSize: 4096 } },
          { id: EMBED, type: 'embedding', engine: 'openai-compatible', upstream: { baseUrl, model: 'up-embed', dialect: 'openai', contextSize: 512 } },
          { id: RERANK, type: 'reranker', engine: 'openai-compatible', upstream: { baseUrl, model: 'up-rerank', dialect: 'openai', contextSize: 512 } },
        ],
      },
    });
  });
  after(async () => {
    await server?.close();
    await new Promise((resolve) => upstream?.close(resolve));
  });

  test('the same bytes as through Fastify: JSON, SSE, an upstream failure (once per path: a second would start to eject the deployment)', async () => {
    const messages = [{ role: 'user', content: 'Say hello.' }];
    const cases: [string, Record<string, unknown>, number, string?][] = [
      ['json', { model: MODEL, messages, max_tokens: 16 }, 200],
      ['sse', { model: MODEL, messages, max_tokens: 16, stream: true, stream_options: { include_usage: true } }, 200],
      ['upstream 500', { model: BROKEN, messages, max_tokens: 16 }, 502],
      ['completions', { model: MODEL, prompt: 'Say hello.', max_tokens: 16 }, 200, '/v1/completions'],
      ['embeddings', { model: EMBED, input: ['the cat sat', 'on the mat'] }, 200, '/v1/embeddings'],
      ['rerank', { model: RERANK, query: 'the cat', documents: ['a dog barks', 'the cat sat', 'rain'], top_n: 2 }, 200, '/v1/rerank'],
      // The same route bare, for the clients that call it so (Cohere's v2 rerank at the server root).
      ['rerank v2', { model: RERANK, query: 'the cat', documents: ['a dog barks', 'the cat sat'] }, 200, '/v2/rerank'],
    ];
    for (const [name, body, status, path] of cases) {
      const outside = await raw(server.url, 'application/json', body, path);
      const through = await raw(server.url, 'application/json; charset=utf-8', body, path);
      assert.equal(outside.split('\n')[0], String(status), `${name}: ${outside}`);
      assert.equal(outside, through, name);
    }
  });

  test('recorded as through Fastify: the HTTP metrics under the route and model, one ledger row each', async () => {
    const routes: [string, string, Record<string, unknown>][] = [
      ['/chat/completions', MODEL, { model: MODEL, messages: [{ role: 'user', content: 'Hi' }] }],
      ['/embeddings', EMBED, { model: EMBED, input: 'Hi' }],
      ['/rerank', RERANK, { model: RERANK, query: 'Hi', documents: ['Hello', 'Bye'] }],
    ];
    for (const [path, model, body] of routes) {
      const before = countLedger(server);
      const counted = async () => requestCount(await http(server.url, '/metrics', { headers: { authorization: `Bearer ${KEY}` } }), `/v1${path}`, model);
      const countedBefore = await counted();
      for (const type of ['application/json', 'application/json; charset=utf-8']) assert.equal((await raw(server.url, type, body, `/v1${path}`)).split('\n')[0], '200');
      assert.equal(countLedger(server), before + 2, `${path}: one ledger row per answer`);
      assert.equal((await counted()) - countedBefore, 2, `${path}: both counted under the route and model`);
    }
  });
});

// The work of a request served outside Fastify listens to a RequestStop (app.ts), not an AbortSignal: the
// route's time limit must still end the upstream request and answer as Fastify's route does (504; a
// stream: an error frame and [DONE]). A client that leaves (the upstream request closed within 100 ms)
// is src/routing/routing.test.ts's, whose requests are served outside Fastify too.
describe('a request served outside Fastify stopped by its time limit', () => {
  const hung: number[] = [];
  let upstream: Server;
  let server: TestServer;
  const HANG = 'org/upstream-hang';
  before(async () => {
    upstream = await fakeUpstream(hung);
    const baseUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1`;
    server = await startTestServer({
      config: {
        server: { apiKeys: [KEY], routeTimeoutsSeconds: { chat: 0.4 } },
        models: [{ id: HANG, type: 'chat', engine: 'openai-compatible', upstream: { baseUrl, model: 'hang', dialect: 'openai', contextSize: 4096 } }],
      },
    });
  });
  after(async () => {
    await server?.close();
    upstream?.closeAllConnections();
    await new Promise((resolve) => upstream?.close(resolve));
  });

  test("the route's time limit: the same 504 and the same error frame as through Fastify, the upstream request closed each time", async () => {
    const messages = [{ role: 'user', content: 'Say hello.' }];
    for (const [name, body] of [
      ['json', { model: HANG, messages }],
      ['sse', { model: HANG, messages, stream: true }],
    ] as const) {
      const outside = await raw(server.url, 'application/json', body);
      const through = await raw(server.url, 'application/json; charset=utf-8', body);
      if (name === 'json') assert.match(outside, /^504\n[\s\S]*"code":"request_timeout"/, outside);
      else assert.match(outside, /^200\n[\s\S]*data: \{"error":[\s\S]*request_timeout[\s\S]*data: \[DONE\]\n\n$/, outside);
      assert.equal(outside, through, name);
    }
    await waitUntil(() => hung.length === 4 && hung.every((at) => at > 0), 'every upstream request closed');
  });
});

async function waitUntil(done: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/** infera_http_requests_total for a route, model and status 200 in a /metrics answer (0 when absent). */
function requestCount(metrics: { text?: unknown }, route: string, model: string): number {
  const line = String(metrics.text)
    .split('\n')
    .find((l) => l.startsWith('infera_http_requests_total{') && l.includes(`route="${route}"`) && l.includes(`model="${model}"`) && l.includes('status="200"'));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

function countLedger(server: TestServer): number {
  const db = new Database(sqlitePath(server.config), { readonly: true });
  try {
    return (db.prepare('SELECT COUNT(*) AS n FROM ledger').get() as { n: number }).n;
  } finally {
    db.close();
  }
}

describe('a key the gate must read from the store', () => {
  let upstream: Server;
  let server: TestServer;
  let gate: PlatformGate;
  let dataDir: string;
  /** gate.precheck() calls: Fastify's auth hook makes one per metered request, the outside path none. */
  let prechecks = 0;
  before(async () => {
    upstream = await fakeUpstream();
    const baseUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1`;
    dataDir = mkdtempSync(join(tmpdir(), 'infera-outside-'));
    const config = { storage: { dataDir }, platform: { keyCacheSeconds: 0.2 } };
    gate = await createGate(configSchema.parse(config), { info() {}, warn() {}, error() {} });
    const precheck = gate.precheck.bind(gate);
    gate.precheck = (...args) => {
      prechecks++;
      return precheck(...args);
    };
    server = await startTestServer({
      gate,
      config: { ...config, models: [{ id: MODEL, type: 'chat', engine: 'openai-compatible', upstream: { baseUrl, model: 'up', dialect: 'openai', contextSize: 4096 } }] },
    });
  });
  after(async () => {
    await server?.close();
    await gate?.close();
    await new Promise((resolve) => upstream?.close(resolve));
    rmSync(dataDir, { recursive: true, force: true });
  });

  test("is served outside Fastify (its first request, and its first after keyCacheSeconds), with the same bytes; a wrong key is still Fastify's 401", async () => {
    // Through Fastify, a request with such a key was served by the route, with other shapes than the
    // outside path's in the shared serving and upstream code: V8 then recompiled that path (gw9).
    const { secret } = await gate.admin.createKey({ name: 'stored', accountId: 'acme' });
    const body = { model: MODEL, messages: [{ role: 'user', content: 'Say hello.' }], max_tokens: 16 };
    const send = (contentType: string, key = secret) =>
      rawAnswer(server.url, '/v1/chat/completions', body, { 'content-type': contentType, authorization: `Bearer ${key}` }).then((text) =>
        text.replace(/req_[0-9a-f]{32}/g, 'req_ID').replace(/chatcmpl-[\w-]+/g, 'chatcmpl-ID').replace(/"created":\d+/g, '"created":0'),
      );
    const first = await send('application/json');
    assert.equal(first.split('\n')[0], '200', first);
    assert.equal(prechecks, 0, 'the first request of a stored key went through Fastify');
    await new Promise((resolve) => setTimeout(resolve, 250));
    assert.equal(await send('application/json'), first);
    assert.equal(prechecks, 0, 'the first request after keyCacheSeconds went through Fastify');
    // The same request through Fastify's route (a content type quick.ts leaves alone): the same bytes, and the counter sees it.
    assert.equal(await send('application/json; charset=utf-8'), first);
    assert.equal(prechecks, 1);
    const wrong = await send('application/json', 'sk-not-a-key');
    assert.equal(wrong.split('\n')[0], '401', wrong);
    assert.equal(countLedger(server), 3);
  });
});
