// /metrics, the access log, /health and /ready against the real server on the tiny models, with real
// HTTP clients: the counters move by exactly the requests made, /metrics is readable only as
// docs/OBSERVABILITY.md says, the access log names the request and the key but never the prompt or the
// key's secret (unless logging.bodies), and /ready follows model and store state.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { configSchema } from '../src/config/schema.ts';
import { createServer, listen, type InferaServer } from '../src/main.ts';
import { createLogger } from '../src/observability/logger.ts';
import { createGate } from '../src/platform/index.ts';
import type { Gate } from '../src/platform/gate.ts';
import { TINY_CHAT_SCRIPT } from '../src/tiny-models/tiny-chat.ts';
import { parseExposition, total, type Sample } from './helpers/prometheus.ts';
import { http, sseEvents, startTestServer, type ResponseJson, type TestServer } from './helpers/server.ts';

const CHAT = 'Qwen/Qwen3-8B';
const EMBED = 'BAAI/bge-m3';
const RERANK = 'BAAI/bge-reranker-v2-m3';
const ADMIN = 'admin-observability-key';
const KEY = 'sk-observability-static-key';
/** Models that need no file generation: the access and readiness tests never load one. */
const missing = [{ id: 'org/chat-missing', type: 'chat', engine: 'llama-cpp', path: '/nonexistent/a.gguf' }];

describe('metrics after real traffic', () => {
  let server: TestServer;
  let scrape: () => Promise<Sample[]>;
  const id = (name: string) => server.server.services.registry.find(name)!.config.id;
  before(async () => {
    server = await startTestServer();
    scrape = async () => {
      const answer = await http(server.url, '/metrics');
      assert.equal(answer.status, 200, answer.text);
      assert.match(answer.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
      return parseExposition(answer.text);
    };
  });
  after(() => server.close());

  test('counters and histograms move by exactly the requests made', async () => {
    // Load the models first, so that the measured traffic is requests only (loads are checked below).
    for (const [path, body] of [
      ['/embeddings', { model: EMBED, input: 'warm' }],
      ['/rerank', { model: RERANK, query: 'warm', documents: ['a'] }],
      ['/chat/completions', { model: CHAT, messages: [{ role: 'user', content: 'warm' }], max_tokens: 4 }],
    ] as const)
      assert.equal((await http(server.baseURL, path, { body })).status, 200);
    const before = await scrape();

    const embedded = await Promise.all(['one', 'two words', 'three small words'].map((input) => http(server.baseURL, '/embeddings', { body: { model: EMBED, input } })));
    const ranked = await http(server.baseURL, '/rerank', { body: { model: RERANK, query: 'cat', documents: ['a cat', 'a dog', 'a car'] } });
    const answered = await http(server.baseURL, '/chat/completions', { body: { model: CHAT, messages: [{ role: 'user', content: 'hello' }] } });
    const streamed = await http(server.baseURL, '/chat/completions', {
      body: { model: CHAT, messages: [{ role: 'user', content: 'hello' }], stream: true, stream_options: { include_usage: true } },
    });
    const invalid = await http(server.baseURL, '/chat/completions', { body: { model: CHAT, messages: [{ role: 'user', content: 'x' }], temperature: 9 } });
    const unknownModel = await http(server.baseURL, '/embeddings', { body: { model: 'nobody/serves-this', input: 'x' } });
    const noRoute = await http(server.url, '/v1/nothing-here');
    for (const answer of [...embedded, ranked, answered, streamed]) assert.equal(answer.status, 200, answer.text);
    assert.deepEqual([invalid.status, unknownModel.status, noRoute.status], [400, 400, 404]);
    const streamUsage = JSON.parse(sseEvents(streamed.text).at(-2)!).usage;

    const after = await scrape();
    const delta = (name: string, labels: Record<string, string> = {}) => total(after, name, labels) - total(before, name, labels);
    const [embed, rerank, chat] = [id(EMBED), id(RERANK), id(CHAT)];

    // HTTP: every request by route, status and canonical model; the scrape itself counted apart.
    assert.equal(delta('infera_http_requests_total', { route: '/v1/embeddings', status: '200', model: embed }), 3);
    assert.equal(delta('infera_http_requests_total', { route: '/v1/rerank', status: '200', model: rerank }), 1);
    assert.equal(delta('infera_http_requests_total', { route: '/v1/chat/completions', status: '200', model: chat }), 2);
    assert.equal(delta('infera_http_requests_total', { route: '/v1/chat/completions', status: '400', model: chat }), 1);
    assert.equal(delta('infera_http_requests_total', { route: '/v1/embeddings', status: '400', model: '' }), 1, 'an unknown model is not a label');
    assert.equal(delta('infera_http_requests_total', { route: 'unmatched', status: '404' }), 1);
    assert.equal(delta('infera_http_requests_total', { route: '/metrics' }), 1, 'the first scrape, seen by the second');
    assert.equal(delta('infera_http_requests_total'), 10);
    assert.equal(delta('infera_http_errors_total', { code: 'invalid_request', status: '400', model: chat }), 1);
    assert.equal(delta('infera_http_errors_total', { code: 'model_not_found' }), 1);
    assert.equal(delta('infera_http_errors_total', { code: 'unknown_route', status: '404' }), 1);
    assert.equal(delta('infera_http_errors_total'), 3);
    assert.equal(delta('infera_http_request_duration_seconds_count', { route: '/v1/chat/completions', model: chat, status_class: '2xx' }), 2);

    // Inference: what the ledger settles, by model.
    assert.equal(delta('infera_inference_requests_total', { endpoint: 'embeddings', model: embed, outcome: 'ok' }), 3);
    assert.equal(delta('infera_inference_requests_total', { endpoint: 'chat', model: chat, outcome: 'ok' }), 2);
    assert.equal(delta('infera_inference_requests_total'), 6, 'refused requests are never admitted');
    assert.equal(total(after, 'infera_inference_in_flight'), 0);
    const embedTokens = embedded.reduce((sum, answer) => sum + answer.json.usage.prompt_tokens, 0);
    assert.equal(delta('infera_prompt_tokens_total', { endpoint: 'embeddings', model: embed }), embedTokens);
    assert.equal(delta('infera_prompt_tokens_total', { endpoint: 'rerank', model: rerank }), ranked.json.meta.tokens.input_tokens);
    assert.equal(delta('infera_reranked_documents_total', { model: rerank }), 3);
    const generated = answered.json.usage.completion_tokens + streamUsage.completion_tokens;
    assert.ok(generated > 0);
    assert.equal(delta('infera_generated_tokens_total', { model: chat }), generated);
    assert.equal(
      delta('infera_reasoning_tokens_total', { model: chat }),
      answered.json.usage.completion_tokens_details.reasoning_tokens + streamUsage.completion_tokens_details.reasoning_tokens,
    );
    assert.equal(delta('infera_time_to_first_token_seconds_count', { model: chat }), 1, 'streams only');
    assert.equal(delta('infera_generation_tokens_per_second_count', { model: chat, stream: 'true' }), 1);
    assert.equal(delta('infera_generation_tokens_per_second_count', { model: chat, stream: 'false' }), 1);

    // Micro-batchers: every embedding request waited in the queue once and ran in some batch.
    assert.equal(delta('infera_queue_wait_seconds_count', { model: embed }), 3);
    assert.equal(delta('infera_batch_size_sum', { model: embed }), 3);
    assert.ok(delta('infera_batch_size_count', { model: embed }) >= 1);
    assert.equal(delta('infera_batch_size_sum', { model: rerank }), 1);
    assert.equal(total(after, 'infera_queue_depth'), 0);

    // The ledger: one row per settled request, written in group commits.
    assert.equal(delta('infera_ledger_rows_total', { outcome: 'ok' }), 6);
    assert.ok(delta('infera_ledger_write_seconds_count', { outcome: 'ok' }) >= 1);

    // Models: each loaded once (by the warm-up), now ready; the image model was never asked for.
    for (const model of [embed, rerank, chat]) {
      assert.equal(total(after, 'infera_model_state', { model, state: 'ready' }), 1);
      assert.equal(total(after, 'infera_model_load_seconds_count', { model, outcome: 'ok' }), 1);
      assert.equal(total(after, 'infera_model_load_progress', { model }), 1);
    }
    assert.equal(total(after, 'infera_model_state', { model: id('Kwai-Kolors/Kolors'), state: 'unloaded' }), 1);
    assert.ok(total(after, 'process_resident_memory_bytes') > 0, 'process metrics too');
  });

  test('a stream the client leaves is recorded as 499 and settles as cancelled', async () => {
    const before = await scrape();
    const controller = new AbortController();
    const response = await fetch(`${server.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      // "count" makes the tiny model count on for its whole budget: the stream is still running when the client leaves.
      body: JSON.stringify({ model: CHAT, messages: [{ role: 'user', content: 'count' }], stream: true, enable_thinking: false }),
      signal: controller.signal,
    });
    const reader = response.body!.getReader();
    let received = '';
    while (!received.includes(TINY_CHAT_SCRIPT.countWords[3]!)) received += new TextDecoder().decode((await reader.read()).value);
    controller.abort();
    await reader.read().catch(() => undefined);
    let after = await scrape();
    for (let i = 0; i < 50 && total(after, 'infera_http_requests_total', { status: '499' }) === total(before, 'infera_http_requests_total', { status: '499' }); i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      after = await scrape();
    }
    const delta = (name: string, labels: Record<string, string>) => total(after, name, labels) - total(before, name, labels);
    assert.equal(delta('infera_http_requests_total', { route: '/v1/chat/completions', status: '499' }), 1);
    assert.equal(delta('infera_inference_requests_total', { endpoint: 'chat', outcome: 'cancelled' }), 1);
  });

  test('two servers in one process count only their own traffic', async () => {
    const other = await startTestServer({ config: { models: missing } });
    try {
      await http(other.baseURL, '/models');
      const mine = parseExposition((await http(server.url, '/metrics')).text);
      const theirs = parseExposition((await http(other.url, '/metrics')).text);
      assert.equal(total(theirs, 'infera_http_requests_total', { route: '/v1/models' }), 1);
      assert.equal(total(mine, 'infera_http_requests_total', { route: '/v1/models' }), 0);
      assert.equal(total(theirs, 'infera_model_state', { model: 'org/chat-missing', state: 'unloaded' }), 1);
    } finally {
      await other.close();
    }
  });
});

/** GET over node:http, which (unlike fetch) sends the Host header it is given. */
function get(base: string, path: string, headers: Record<string, string>): Promise<{ status: number; text: string; json: ResponseJson }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(`${base}${path}`, { headers }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (text += chunk));
      response.on('end', () => {
        let json: ResponseJson;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: response.statusCode ?? 0, text, json });
      });
    });
    request.on('error', reject);
    request.end();
  });
}

describe('who may read /metrics', () => {
  const cases: { name: string; server: Record<string, unknown>; answers: [Record<string, string>, number, string?][] }[] = [
    {
      name: 'keyless mode: this machine only, by a local name',
      server: {},
      answers: [
        [{}, 200],
        [{ host: 'rebound.example' }, 403, 'host_not_allowed'],
      ],
    },
    {
      name: 'API keys and no admin key: refused, even with an API key',
      server: { apiKeys: [KEY] },
      answers: [
        [{}, 403, 'metrics_forbidden'],
        [{ authorization: `Bearer ${KEY}` }, 403, 'metrics_forbidden'],
      ],
    },
    {
      name: 'an admin key: it, and only it',
      server: { apiKeys: [KEY], adminKey: ADMIN },
      answers: [
        [{}, 401, 'invalid_admin_key'],
        [{ authorization: `Bearer ${KEY}` }, 401, 'invalid_admin_key'],
        [{ authorization: `Bearer ${ADMIN}` }, 200],
      ],
    },
    { name: 'metrics.public: anyone', server: { apiKeys: [KEY], adminKey: ADMIN, metrics: { public: true } }, answers: [[{ host: 'prometheus.internal' }, 200]] },
    { name: 'metrics.enabled false: no route', server: { metrics: { enabled: false } }, answers: [[{}, 404, 'unknown_route']] },
  ];
  for (const { name, server: settings, answers } of cases)
    test(name, async () => {
      const server = await startTestServer({ config: { server: settings, models: missing } });
      try {
        for (const [headers, status, code] of answers) {
          const answer = await get(server.url, '/metrics', headers);
          assert.equal(answer.status, status, `${JSON.stringify(headers)}: ${answer.text.slice(0, 200)}`);
          if (code) assert.equal(answer.json.error.code, code);
          else assert.match(answer.text, /^# HELP /m);
        }
      } finally {
        await server.close();
      }
    });
});

describe('access log', () => {
  const SECRET_PROMPT = 'purple-elephant-prompt-4711';

  /** A listening server whose log lines are collected into `raw`, given to `use`, then closed and its data dir removed. */
  async function withLoggedServer<T>(fields: { server?: Record<string, unknown>; logging?: Record<string, unknown> }, use: (url: string, raw: string[]) => Promise<T>): Promise<T> {
    const raw: string[] = [];
    const sink = new Writable({
      write(chunk, _encoding, done) {
        raw.push(...String(chunk).split('\n').filter(Boolean));
        done();
      },
    });
    const dataDir = mkdtempSync(join(tmpdir(), 'infera-access-log-'));
    let server: InferaServer | undefined;
    try {
      const config = configSchema.parse({ server: { port: 0, adminKey: ADMIN, ...fields.server }, storage: { dataDir }, logging: fields.logging ?? {}, models: missing });
      server = await createServer(config, { logger: createLogger('info', sink) });
      return await use(await listen(server), raw);
    } finally {
      await server?.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }

  function run(logging: Record<string, unknown>): Promise<{ lines: Record<string, unknown>[]; raw: string; keyId: string; requestId: string; secret: string }> {
    return withLoggedServer({ logging }, async (url, raw) => {
      const created = await http(url, '/admin/keys', { body: { name: 'logged' }, headers: { authorization: `Bearer ${ADMIN}` } });
      assert.equal(created.status, 201, created.text);
      const { id: keyId, secret } = created.json;
      // Refused at the model load (its file is missing: 503), after the key, the body and the model were read.
      const answer = await http(url, '/v1/chat/completions', {
        body: { model: 'org/chat-missing', messages: [{ role: 'user', content: SECRET_PROMPT }] },
        headers: { authorization: `Bearer ${secret}`, 'x-request-id': 'trace-me-123' },
      });
      assert.equal(answer.status, 503);
      assert.equal(answer.headers.get('x-request-id'), 'trace-me-123');
      return { lines: raw.map((line) => JSON.parse(line)), raw: raw.join('\n'), keyId, requestId: 'trace-me-123', secret };
    });
  }

  test('one line per request with its id, key id, model and status; never the prompt or a secret', async () => {
    const { lines, raw, keyId, requestId, secret } = await run({});
    const line = lines.find((entry) => entry.msg === 'request' && entry.id === requestId);
    assert.ok(line, 'the access line carries the request id');
    assert.equal(line.key, keyId);
    assert.equal(line.account, 'default');
    assert.equal(line.model, 'org/chat-missing');
    assert.equal(line.status, 503);
    assert.equal(line.code, 'model_load_failed');
    assert.equal(line.url, '/v1/chat/completions');
    assert.equal(line.body, undefined);
    assert.ok(!raw.includes(SECRET_PROMPT), 'no prompt anywhere in the log');
    assert.ok(!raw.includes(secret) && !raw.includes(ADMIN), 'no key secret anywhere in the log');
  });

  // A key the gate has not seen yet is looked up in the store and answered through Fastify; the same key
  // again is known at once and answered in front of it (src/http/quick.ts). Both must leave the same line
  // and count under the same labels.
  test('the list, a wrong key and an unknown route: the same line and counts whether Fastify answered or quick.ts did', async () => {
    await withLoggedServer({ server: { metrics: { public: true } } }, async (url, raw) => {
      const created = await http(url, '/admin/keys', { body: { name: 'listed' }, headers: { authorization: `Bearer ${ADMIN}` } });
      assert.equal(created.status, 201, created.text);
      const scrape = async () => parseExposition((await http(url, '/metrics')).text);
      const before = await scrape();
      const asks: [string, string, Record<string, string>, number][] = [
        ['list', '/v1/models', { authorization: `Bearer ${created.json.secret}` }, 200],
        ['bare', '/models', { authorization: `Bearer ${created.json.secret}` }, 200],
        ['wrong', '/v1/models', { authorization: 'Bearer sk-never-issued-4711' }, 401],
        ['none', '/v1/no-such-route?token=sk-in-url', {}, 404],
      ];
      for (const [name, path, headers, status] of asks)
        for (const n of [1, 2]) assert.equal((await http(url, path, { headers: { ...headers, 'x-request-id': `${name}-${n}` } })).status, status, `${name} ${n}`);
      const after = await scrape();
      const delta = (labels: Record<string, string>) => total(after, 'infera_http_requests_total', labels) - total(before, 'infera_http_requests_total', labels);
      assert.equal(delta({ route: '/v1/models', method: 'GET', status: '200', model: '' }), 2);
      assert.equal(delta({ route: '/models', method: 'GET', status: '200', model: '' }), 2);
      assert.equal(delta({ route: '/v1/models', method: 'GET', status: '401', model: '' }), 2);
      assert.equal(delta({ route: 'unmatched', method: 'GET', status: '404', model: '' }), 2);
      const errors = (labels: Record<string, string>) => total(after, 'infera_http_errors_total', labels) - total(before, 'infera_http_errors_total', labels);
      assert.equal(errors({ route: '/v1/models', status: '401', code: 'invalid_api_key' }), 2);
      assert.equal(errors({ route: 'unmatched', status: '404', code: 'unknown_route' }), 2);
      const durations = (labels: Record<string, string>) =>
        total(after, 'infera_http_request_duration_seconds_count', labels) - total(before, 'infera_http_request_duration_seconds_count', labels);
      assert.equal(durations({ route: '/v1/models', status_class: '2xx' }), 2);
      assert.equal(durations({ route: '/v1/models', status_class: '4xx' }), 2);
      const lines = raw.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line.msg === 'request');
      for (const [name, path, , status] of asks) {
        const [first, second] = [1, 2].map((n) => lines.find((line) => line.id === `${name}-${n}`));
        assert.ok(first && second, `${name}: a line for each`);
        assert.equal(first.status, status);
        assert.equal(first.url, path.replace('sk-in-url', '[redacted]'));
        assert.equal(typeof first.ms, 'number');
        const comparable = (line: Record<string, unknown>) => JSON.stringify({ ...line, id: undefined, ms: undefined, time: undefined });
        assert.equal(comparable(second), comparable(first), `${name}: the same line both times`);
      }
      assert.equal(lines.find((line) => line.id === 'list-1')!.key, created.json.id);
      assert.equal(lines.find((line) => line.id === 'wrong-2')!.code, 'invalid_api_key');
      assert.equal(lines.find((line) => line.id === 'none-2')!.code, 'unknown_route');
    });
  });

  // A POST refused before any work (a bad body, an unknown model) goes through Fastify for a key the gate
  // has not seen yet, and is answered in front of it once the key is known (src/http/quick.ts); a client
  // that leaves before its body is in too. Each must leave the same line (the body with logging.bodies)
  // and count under the same labels either way.
  test('POST refusals and a body cut short: the same line and counts whether Fastify answered or quick.ts did', async () => {
    await withLoggedServer({ server: { metrics: { public: true } }, logging: { bodies: true } }, async (url, raw) => {
      const newKey = async (name: string): Promise<string> => {
        const created = await http(url, '/admin/keys', { body: { name }, headers: { authorization: `Bearer ${ADMIN}` } });
        assert.equal(created.status, 201, created.text);
        return created.json.secret;
      };
      const scrape = async () => parseExposition((await http(url, '/metrics')).text);
      const before = await scrape();
      const asks: [string, string, unknown, number][] = [
        ['empty', '/v1/chat/completions', { model: 'org/chat-missing', messages: [] }, 400],
        ['unknown', '/chat/completions', { model: 'nobody/nothing', messages: [{ role: 'user', content: 'hi' }] }, 400],
        ['embed', '/v1/embeddings', { model: 'org/chat-missing', input: 'hi' }, 400],
      ];
      for (const [name, path, body, status] of asks) {
        // A fresh key for each: its first request is Fastify's, the second quick.ts's.
        const secret = await newKey(name);
        for (const n of [1, 2]) assert.equal((await http(url, path, { body, headers: { authorization: `Bearer ${secret}`, 'x-request-id': `${name}-${n}` } })).status, status, `${name} ${n}`);
      }
      const cutSecret = await newKey('cut');
      const lines = () => raw.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line.msg === 'request');
      for (const n of [1, 2]) {
        // 10 bytes of a 100-byte body, then the client leaves.
        const sent = httpRequest(`${url}/v1/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${cutSecret}`, 'content-type': 'application/json', 'content-length': '100', 'x-request-id': `cut-${n}` },
        });
        sent.on('error', () => {});
        sent.write('{"model": ');
        await new Promise((resolve) => setTimeout(resolve, 100));
        sent.destroy();
        for (let i = 0; i < 50 && !lines().some((line) => line.id === `cut-${n}`); i++) await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const after = await scrape();
      const delta = (labels: Record<string, string>) => total(after, 'infera_http_requests_total', labels) - total(before, 'infera_http_requests_total', labels);
      assert.equal(delta({ route: '/v1/chat/completions', method: 'POST', status: '400', model: 'org/chat-missing' }), 2);
      assert.equal(delta({ route: '/chat/completions', method: 'POST', status: '400', model: '' }), 2);
      assert.equal(delta({ route: '/v1/embeddings', method: 'POST', status: '400', model: 'org/chat-missing' }), 2);
      assert.equal(delta({ route: '/v1/chat/completions', method: 'POST', status: '499', model: '' }), 2);
      const errors = (labels: Record<string, string>) => total(after, 'infera_http_errors_total', labels) - total(before, 'infera_http_errors_total', labels);
      assert.equal(errors({ route: '/v1/chat/completions', status: '400', code: 'invalid_request' }), 2);
      assert.equal(errors({ route: '/chat/completions', status: '400', code: 'model_not_found' }), 2);
      assert.equal(errors({ route: '/v1/embeddings', status: '400', code: 'model_type_mismatch' }), 2);
      const durations = (labels: Record<string, string>) =>
        total(after, 'infera_http_request_duration_seconds_count', labels) - total(before, 'infera_http_request_duration_seconds_count', labels);
      assert.equal(durations({ route: '/v1/chat/completions', status_class: '4xx' }), 4);
      for (const [name, path, body, status] of [...asks, ['cut', '/v1/chat/completions', undefined, 499] as const]) {
        const [first, second] = [1, 2].map((n) => lines().find((line) => line.id === `${name}-${n}`));
        assert.ok(first && second, `${name}: a line for each`);
        assert.equal(first.status, status);
        assert.equal(first.url, path);
        assert.equal(first.body, body === undefined ? undefined : JSON.stringify(body));
        assert.equal(typeof first.ms, 'number');
        const comparable = (line: Record<string, unknown>) => JSON.stringify({ ...line, id: undefined, ms: undefined, time: undefined, key: undefined });
        assert.equal(comparable(second), comparable(first), `${name}: the same line both times`);
      }
    });
  });

  test('logging.bodies: the request body joins the line; secrets still never do', async () => {
    const { lines, raw, requestId, secret } = await run({ bodies: true });
    const line = lines.find((entry) => entry.msg === 'request' && entry.id === requestId)!;
    assert.match(String(line.body), new RegExp(SECRET_PROMPT));
    assert.ok(!raw.includes(secret) && !raw.includes(ADMIN));
  });
});

describe('health and readiness', () => {
  test('/health is alive; /ready is 503 while a configured model is failed, 200 otherwise', async () => {
    const server = await startTestServer({ config: { models: missing } });
    try {
      assert.deepEqual((await http(server.url, '/health')).json, { status: 'ok' });
      const ready = await http(server.url, '/ready');
      assert.equal(ready.status, 200);
      assert.equal(ready.json.status, 'ready');
      assert.equal(ready.json.checks.store.status, 'ok');
      await http(server.baseURL, '/chat/completions', { body: { model: 'org/chat-missing', messages: [{ role: 'user', content: 'x' }] } });
      const failed = await http(server.url, '/ready');
      assert.equal(failed.status, 503);
      assert.deepEqual(failed.json.checks.models, { status: 'failing', failed: 1, loading: 0 });
      assert.ok(!failed.text.includes('/nonexistent'), 'no paths or load errors on the open probe');
    } finally {
      await server.close();
    }
  });

  test('/ready is 503 while an eager model has not loaded yet', async () => {
    const server = await startTestServer({ config: { models: [{ ...missing[0], eager: true }] } });
    try {
      const loading = await http(server.url, '/ready');
      assert.equal(loading.status, 503);
      assert.deepEqual(loading.json.checks.models, { status: 'failing', failed: 0, loading: 1 });
      await server.server.services.registry.preload();
      assert.deepEqual((await http(server.url, '/ready')).json.checks.models, { status: 'failing', failed: 1, loading: 0 });
    } finally {
      await server.close();
    }
  });

  test('/ready is 503 while the store does not answer its heartbeat', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'infera-ready-'));
    const config = configSchema.parse({ server: { port: 0, logLevel: 'silent' }, storage: { dataDir }, models: missing });
    const real = await createGate(config, { info() {}, warn() {}, error() {} });
    let storeUp = true;
    // The real gate, with the store's health under the test's control (a dead database is not simulated here).
    const gate: Gate = {
      authenticate: (secret, address) => real.authenticate(secret, address),
      admit: (request) => real.admit(request),
      userInfo: (principal) => real.userInfo(principal),
      close: () => real.close(),
      health: () => ({ ...real.health(), store: { kind: 'sqlite', up: storeUp } }),
    };
    const server = await createServer(config, { logger: createLogger('silent'), gate });
    try {
      const url = await listen(server);
      assert.equal((await http(url, '/ready')).status, 200);
      storeUp = false;
      const down = await http(url, '/ready');
      assert.equal(down.status, 503);
      assert.deepEqual(down.json.checks.store, { status: 'failing', kind: 'sqlite' });
      storeUp = true;
      assert.equal((await http(url, '/ready')).status, 200);
    } finally {
      await server.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
