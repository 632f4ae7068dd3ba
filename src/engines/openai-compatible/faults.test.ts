// Broken upstreams over real sockets: every fault reaches the client as an error in Infera's shape that
// names the upstream (502 broken, 504 timeout, the upstream's 4xx as a 4xx naming the field), never a
// crash or a hang, and the ledger row says what happened. Client disconnects close the upstream request.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import OpenAI from 'openai';
import { http, sseEvents } from '../../../test/helpers/server.ts';
import { fixture, serve } from './testing/fake-upstream.ts';
import { type Gateway, remoteModel, startGateway } from './testing/gateway.ts';

const TIMEOUTS = { connectSeconds: 1, firstByteSeconds: 0.5, idleSeconds: 0.5, totalSeconds: 5 };
const chat = (model: string, extra: Record<string, unknown> = {}) => ({ model, messages: [{ role: 'user', content: 'hi' }], ...extra });
const CHUNK = (delta: Record<string, unknown>, finish: string | null = null) =>
  `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('openai-compatible: upstream faults', () => {
  let gateway: Gateway;
  let deadPort: number;
  before(async () => {
    deadPort = await closedPort();
    gateway = await startGateway((url) => [
      remoteModel('m', 'chat', 'openai', { model: 'upstream-m', timeouts: TIMEOUTS, name: 'gpu-a' }),
      remoteModel('keyed', 'chat', 'openai', { apiKeyEnv: 'INFERA_TEST_UPSTREAM_KEY', headers: { 'x-team': 'search' }, timeouts: TIMEOUTS }),
      remoteModel('nokey', 'chat', 'openai', { apiKeyEnv: 'INFERA_TEST_UNSET_KEY', timeouts: TIMEOUTS }),
      remoteModel('dead', 'chat', 'openai', { baseUrl: `http://127.0.0.1:${deadPort}/v1`, timeouts: TIMEOUTS }),
      remoteModel('brief', 'chat', 'openai', { timeouts: { ...TIMEOUTS, totalSeconds: 1 } }),
      remoteModel('embed', 'embedding', 'tei', { baseUrl: url, timeouts: TIMEOUTS }),
      remoteModel('rerank', 'reranker', 'infinity', { baseUrl: url, timeouts: TIMEOUTS }),
      // These tests are about how each fault is told to the client, one after another on the same
      // upstream: no circuit breaker or health check in between (a lone upstream is routed, and three
      // faults in a row would eject it: src/routing/routing.test.ts tests that).
    ], { routing: { healthCheckIntervalSeconds: 0, failureThreshold: 1000 } });
  });
  after(() => gateway.close());

  const expectError = async (body: unknown, status: number, pattern: RegExp, path = '/chat/completions') => {
    const before = gateway.ledger().length;
    const response = await http(gateway.server.baseURL, path, { body });
    assert.equal(response.status, status, response.text);
    assert.match(response.json.error.message, pattern);
    const row = (await gateway.ledgerRows(before + 1)).at(-1)!;
    assert.equal(row.status, status);
    assert.equal(row.outcome, 'error');
    assert.match(row.note ?? '', pattern, 'the ledger row says what happened');
    return response;
  };

  test('a 200 with an HTML page is a 502 naming the upstream and the content type', async () => {
    gateway.upstream.route('POST', '/v1/chat/completions', (_request, response) => {
      response.writeHead(200, { 'content-type': 'text/html' });
      response.end('<html><body>502 Bad Gateway (nginx)</body></html>');
    });
    await expectError(chat('m'), 502, /upstream gpu-a \(openai\) answered with content-type text\/html where JSON was expected: "<html>/);
  });

  test('a JSON content type with a body that is not JSON is a 502', async () => {
    gateway.upstream.route('POST', '/v1/chat/completions', (_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end('{"choices": [{"message": ');
    });
    await expectError(chat('m'), 502, /answered with a body that is not JSON/);
  });

  test('JSON without choices is a 502', async () => {
    gateway.upstream.route('POST', '/v1/chat/completions', (_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end('{"ok": true}');
    });
    await expectError(chat('m'), 502, /answered without choices\[0\]\.message/);
  });

  test('a stream request answered with text/plain is a 502', async () => {
    gateway.upstream.route('POST', '/v1/chat/completions', (_request, response) => {
      response.writeHead(200, { 'content-type': 'text/plain' });
      response.end('data: hello');
    });
    await expectError(chat('m', { stream: true }), 502, /instead of text\/event-stream/);
  });

  test('an SSE event that is not JSON is a 502', async () => {
    gateway.upstream.route('POST', '/v1/chat/completions', (_request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.end('data: {not json\n\n');
    });
    await expectError(chat('m', { stream: true }), 502, /sent a stream event that is not a JSON object/);
  });

  test('a stream cut before its first token is a 502; cut after it, an error frame and [DONE], and the ledger says so', async () => {
    gateway.upstream.route('POST', '/v1/chat/completions', (_request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.end();
    });
    await expectError(chat('m', { stream: true }), 502, /ended its stream before finishing the answer/);

    gateway.upstream.route('POST', '/v1/chat/completions', (_request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.write(CHUNK({ role: 'assistant', content: 'Hel' }));
      setTimeout(() => response.destroy(), 50);
    });
    const before = gateway.ledger().length;
    const response = await fetch(`${gateway.server.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(chat('m', { stream: true })),
    });
    assert.equal(response.status, 200);
    const events = sseEvents(await response.text());
    assert.equal(events.at(-1), '[DONE]');
    const error = JSON.parse(events.at(-2)!) as { error: { message: string } };
    assert.match(error.error.message, /gpu-a/);
    const row = (await gateway.ledgerRows(before + 1)).at(-1)!;
    assert.deepEqual([row.outcome, row.status], ['error', 502]);
    assert.match(row.note ?? '', /upstream gpu-a \(openai\) (closed the connection mid-answer|ended its stream)/);
  });

  test('an upstream that hangs after its headers is a 504 (JSON and stream), within the idle timeout', async () => {
    gateway.upstream.route('POST', '/v1/chat/completions', (_request, response) => {
      response.writeHead(200, { 'content-type': (_request.body as { stream?: boolean }).stream ? 'text/event-stream' : 'application/json' });
      response.flushHeaders();
    });
    const started = Date.now();
    await expectError(chat('m'), 504, /stopped sending its answer for 0\.5s/);
    await expectError(chat('m', { stream: true }), 504, /stopped sending its answer for 0\.5s/);
    assert.ok(Date.now() - started < 4000, `took ${Date.now() - started} ms`);
  });

  test('a JSON answer still trickling in past the total timeout is a 504 naming it, and the upstream request is closed', async () => {
    let closed = false;
    gateway.upstream.route('POST', '/v1/chat/completions', (_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.write('{"id":"c",');
      // Never idle for the 0.5 s idle timeout, never finished.
      const timer = setInterval(() => response.write(' '), 100);
      response.on('close', () => {
        clearInterval(timer);
        closed = true;
      });
    });
    const started = Date.now();
    await expectError(chat('brief'), 504, /took longer than 1s in all/);
    assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
    const deadline = Date.now() + 1000;
    while (!closed && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.ok(closed, 'the upstream saw its request closed');
  });

  test('an upstream that sends no headers is a 504; a refused connection a 502', async () => {
    gateway.upstream.route('POST', '/v1/chat/completions', () => {});
    await expectError(chat('m'), 504, /sent no answer within 0\.5s/);
    await expectError(chat('dead'), 502, /refused the connection/);
  });

  test('4xx bodies in foreign shapes become 4xx naming the field; 401 and 5xx are 502; 503 keeps Retry-After', async () => {
    const answer = (status: number, body: string, headers: Record<string, string> = {}) =>
      gateway.upstream.route('POST', '/v1/chat/completions', (_request, response) => {
        response.writeHead(status, { 'content-type': 'application/json', ...headers });
        response.end(body);
      });
    answer(400, '{"error":"invalid value for option \\"temperature\\""}'); // Ollama's shape
    let response = await expectError(chat('m', { temperature: 1.5 }), 400, /answered 400: invalid value for option "temperature"/);
    assert.equal(response.json.error.param, 'temperature');
    answer(400, '{"code":20015,"message":"Value error, max_tokens must be less than or equal to 16384","data":null}'); // SiliconFlow's
    response = await expectError(chat('m', { max_tokens: 20000 }), 400, /max_tokens must be less/);
    assert.equal(response.json.error.param, 'max_tokens');
    answer(401, '{"error":{"message":"Invalid API key","type":"invalid_request_error"}}');
    await expectError(chat('m'), 502, /answered 401: Invalid API key \(check the key in upstream\.apiKeyEnv/);
    answer(500, '<html>Internal Server Error</html>');
    await expectError(chat('m'), 502, /answered 500: "<html>Internal Server Error<\/html>"/);
    answer(503, '{"error":{"message":"overloaded"}}', { 'retry-after': '7' });
    response = await expectError(chat('m'), 503, /answered 503: overloaded/);
    assert.equal(response.headers.get('retry-after'), '7');

    gateway.upstream.route('POST', '/rerank', serve('infinity/error-422.json', 422));
    response = await expectError({ model: 'rerank', query: 'q', documents: ['d'] }, 400, /String should have at most/, '/rerank');
    assert.equal(response.json.error.param, 'query');
    gateway.upstream.route('POST', '/embed', serve('tei/error-413.json', 413));
    response = await expectError({ model: 'embed', input: 'x' }, 400, /must have less than 8192 tokens/, '/embeddings');
    assert.equal(response.json.error.param, 'input');
  });

  test('an error event in the stream ends it with an error frame naming the upstream', async () => {
    gateway.upstream.route('POST', '/v1/chat/completions', (_request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.write(CHUNK({ content: 'Hi' }));
      response.end(`data: ${JSON.stringify({ error: { message: 'CUDA out of memory', code: 500 } })}\n\n`);
    });
    const response = await fetch(`${gateway.server.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(chat('m', { stream: true })),
    });
    const events = sseEvents(await response.text());
    assert.equal(events.at(-1), '[DONE]');
    assert.match(events.at(-2)!, /gpu-a \(openai\) reported an error: CUDA out of memory/);
  });

  test('the API key comes from the named environment variable, with the extra headers; an unset one is a 502 naming it', async () => {
    process.env.INFERA_TEST_UPSTREAM_KEY = 'sk-upstream-secret';
    gateway.upstream.route('POST', '/v1/chat/completions', serve('vllm/chat-raw-think.json'));
    const response = await http(gateway.server.baseURL, '/chat/completions', { body: chat('keyed') });
    assert.equal(response.status, 200);
    const sent = gateway.upstream.seen.at(-1)!;
    assert.equal(sent.headers.authorization, 'Bearer sk-upstream-secret');
    assert.equal(sent.headers['x-team'], 'search');
    assert.equal(sent.body.model, 'keyed', 'no upstream.model: the public id');
    await expectError(chat('nokey'), 502, /needs the API key in environment variable INFERA_TEST_UNSET_KEY/);
  });

  test('an upstream without usage: Infera counts, and the ledger row says so', async () => {
    gateway.upstream.route('POST', '/v1/chat/completions', (_request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.write(CHUNK({ content: 'Hello there, how are you?' }));
      response.end(`${CHUNK({}, 'stop')}data: [DONE]\n\n`);
    });
    const before = gateway.ledger().length;
    const response = await http(gateway.server.baseURL, '/chat/completions', { body: chat('m', { stream: true, stream_options: { include_usage: true } }) });
    assert.equal(response.status, 200);
    const row = (await gateway.ledgerRows(before + 1)).at(-1)!;
    assert.equal(row.outcome, 'ok');
    assert.ok(row.completion_tokens > 0 && row.prompt_tokens > 0, JSON.stringify(row));
    assert.match(row.note ?? '', /reported no usage: tokens estimated by Infera/);

    gateway.upstream.route('POST', '/embed', serve('tei/embed.json'));
    const embedded = await http(gateway.server.baseURL, '/embeddings', { body: { model: 'embed', input: ['one two', 'three'] } });
    assert.equal(embedded.status, 200, embedded.text);
    assert.ok(embedded.json.usage.prompt_tokens > 0);
    assert.match(gateway.ledger().at(-1)!.note ?? '', /reported no usage/);
  });

  test('backpressure: a client that stops reading stops the upstream too (Infera buffers a bounded amount, not the whole answer)', async () => {
    let written = 0;
    let closed = false;
    const frame = CHUNK({ content: 'x'.repeat(16 * 1024) });
    gateway.upstream.route('POST', '/v1/chat/completions', (_request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.on('close', () => {
        closed = true;
      });
      // As fast as the socket takes it, up to 256 MB: a write that returns false waits for 'drain'.
      const pump = () => {
        while (!closed && written < 256 * 1024 * 1024) {
          written += frame.length;
          if (!response.write(frame)) {
            response.once('drain', pump);
            return;
          }
        }
      };
      pump();
    });
    const controller = new AbortController();
    const response = await fetch(`${gateway.server.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(chat('m', { stream: true })),
      signal: controller.signal,
    });
    assert.equal(response.status, 200);
    const reader = response.body!.getReader();
    await reader.read();
    // The client reads nothing more for a second: the upstream must stall at what the socket buffers
    // and Infera's small queue hold, far below the 256 MB it would send unhindered.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const stalledAt = written;
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.ok(written < 64 * 1024 * 1024, `the upstream wrote ${written} bytes to a client that stopped reading`);
    assert.equal(written, stalledAt, 'the upstream is stalled, not trickling on');
    controller.abort();
    await reader.cancel().catch(() => {});
    const deadline = Date.now() + 2000;
    while (!closed && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.ok(closed, 'the upstream request was closed when the client left');
  });

  test('a client that leaves mid-stream closes the upstream request at once; the ledger row is cancelled', async () => {
    let upstreamClosed = 0;
    gateway.upstream.route('POST', '/v1/chat/completions', (request, response) => {
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      const timer = setInterval(() => response.write(CHUNK({ content: ' word' })), 20);
      response.on('close', () => {
        clearInterval(timer);
        upstreamClosed = Date.now();
      });
      void request;
    });
    const before = gateway.ledger().length;
    const openai = new OpenAI({ baseURL: gateway.server.baseURL, apiKey: 'unused', maxRetries: 0 });
    const controller = new AbortController();
    const stream = await openai.chat.completions.create(
      { model: 'm', messages: [{ role: 'user', content: 'count' }], stream: true },
      { signal: controller.signal },
    );
    let chunks = 0;
    let left = 0;
    try {
      for await (const _chunk of stream) {
        if (++chunks === 5) {
          left = Date.now();
          controller.abort();
        }
      }
    } catch {
      // the abort
    }
    const deadline = Date.now() + 2000;
    while (!upstreamClosed && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    assert.ok(upstreamClosed, 'the upstream saw its request closed');
    assert.ok(upstreamClosed - left < 500, `upstream closed ${upstreamClosed - left} ms after the client left`);
    const row = (await gateway.ledgerRows(before + 1)).at(-1)!;
    assert.equal(row.outcome, 'cancelled');
    assert.equal(row.status, 499);
    void fixture;
  });
});
