// A chat POST quick.ts accepts is served outside Fastify (src/http/app.ts, serveChatOutside); the same
// request with a content-type quick.ts leaves alone ("application/json; charset=utf-8") goes through
// Fastify's route. Both must answer the same bytes (status, every header but the date, the body with
// its generated ids and times masked), for JSON, SSE, a refusal the gate makes after the body (a model
// the key may not use) and an upstream failure; and both are recorded (metrics, ledger).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Database from 'better-sqlite3';
import { sqlitePath } from '../src/platform/index.ts';
import { rawChatAnswer } from './helpers/raw-answer.ts';
import { http, startTestServer, type TestServer } from './helpers/server.ts';

const KEY = 'sk-test-outside-fastify';
const MODEL = 'org/upstream-chat';
const BROKEN = 'org/upstream-broken';

/** A fake OpenAI-compatible upstream: a fixed answer with usage (JSON or SSE); 500 for the broken model's upstream name. */
function fakeUpstream(): Promise<Server> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      if (req.url === '/v1/models') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ object: 'list', data: [{ id: 'up', object: 'model' }] }));
        return;
      }
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { model: string; stream?: boolean };
      if (body.model === 'broken') {
        res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":{"message":"boom"}}');
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
async function raw(base: string, contentType: string, body: unknown): Promise<string> {
  return (await rawChatAnswer(base, body, { 'content-type': contentType, authorization: `Bearer ${KEY}` }))
    .replace(/req_[0-9a-f]{32}/g, 'req_ID')
    .replace(/chatcmpl-[\w-]+/g, 'chatcmpl-ID')
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
    const cases: [string, Record<string, unknown>, number][] = [
      ['json', { model: MODEL, messages, max_tokens: 16 }, 200],
      ['sse', { model: MODEL, messages, max_tokens: 16, stream: true, stream_options: { include_usage: true } }, 200],
      ['upstream 500', { model: BROKEN, messages, max_tokens: 16 }, 502],
    ];
    for (const [name, body, status] of cases) {
      const outside = await raw(server.baseURL, 'application/json', body);
      const through = await raw(server.baseURL, 'application/json; charset=utf-8', body);
      assert.equal(outside.split('\n')[0], String(status), `${name}: ${outside}`);
      assert.equal(outside, through, name);
    }
  });

  test('recorded as through Fastify: the HTTP metrics under the route and model, one ledger row each', async () => {
    const before = countLedger(server);
    const body = { model: MODEL, messages: [{ role: 'user', content: 'Hi' }] };
    for (const type of ['application/json', 'application/json; charset=utf-8']) assert.equal((await raw(server.baseURL, type, body)).split('\n')[0], '200');
    assert.equal(countLedger(server), before + 2);
    const metrics = await http(server.url, '/metrics', { headers: { authorization: `Bearer ${KEY}` } });
    const line = String(metrics.text)
      .split('\n')
      .find((l) => l.startsWith('infera_http_requests_total{') && l.includes('route="/v1/chat/completions"') && l.includes(`model="${MODEL}"`) && l.includes('status="200"'));
    assert.ok(line, 'a request count under the chat route and model');
  });
});

function countLedger(server: TestServer): number {
  const db = new Database(sqlitePath(server.config), { readonly: true });
  try {
    return (db.prepare('SELECT COUNT(*) AS n FROM ledger').get() as { n: number }).n;
  } finally {
    db.close();
  }
}
