// The router over real sockets: an Infera server whose model ids each have several deployments on fake
// upstreams (real node:http servers on loopback, answering as an OpenAI-compatible server would).
// Balancing, priorities, caps (503 + Retry-After), retries before the first byte and never after, the
// circuit breaker (ejection, cooldown, the half-open probe), active health checks, client disconnects.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { createServer } from 'node:net';
import { http, sseEvents, startTestServer, type TestServer } from '../../test/helpers/server.ts';
import { type FakeUpstream, startFakeUpstream } from '../engines/openai-compatible/testing/fake-upstream.ts';

const ADMIN = 'admin-key-routing-test';
const TIMEOUTS = { connectSeconds: 1, firstByteSeconds: 2, idleSeconds: 2, totalSeconds: 10 };
const chat = (model: string, extra: Record<string, unknown> = {}) => ({ model, messages: [{ role: 'user', content: 'hi' }], ...extra });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function completion(response: ServerResponse, text: string): void {
  response.writeHead(200, { 'content-type': 'application/json' });
  response.end(
    JSON.stringify({
      id: 'c',
      object: 'chat.completion',
      created: 1,
      model: 'm',
      choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }],
      usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 },
    }),
  );
}

const chunk = (delta: Record<string, unknown>, finish: string | null = null) =>
  `data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;

function streamed(response: ServerResponse, words: string[]): void {
  response.writeHead(200, { 'content-type': 'text/event-stream' });
  for (const word of words) response.write(chunk({ content: word }));
  response.write(chunk({}, 'stop'));
  response.write(`data: ${JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [], usage: { prompt_tokens: 3, completion_tokens: words.length, total_tokens: 3 + words.length } })}\n\n`);
  response.end('data: [DONE]\n\n');
}

/** A fake upstream that answers chat with its own name (JSON or SSE) and its model list for health checks. */
async function upstream(name: string): Promise<FakeUpstream & { chats(): number }> {
  const fake = await startFakeUpstream();
  fake.route('GET', '/v1/models', (_request, response) => {
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ object: 'list', data: [{ id: 'm', object: 'model' }] }));
  });
  fake.route('POST', '/v1/chat/completions', (request, response) => (request.body.stream ? streamed(response, [name]) : completion(response, name)));
  return Object.assign(fake, { chats: () => fake.seen.filter((seen) => seen.path === '/v1/chat/completions').length });
}

/** A deployment entry of model `id` on a fake upstream. */
const on = (id: string, fake: FakeUpstream, deployment: Record<string, unknown> = {}) => ({
  id,
  type: 'chat',
  engine: 'openai-compatible',
  upstream: { baseUrl: `${fake.url}/v1`, model: 'm', contextSize: 4096, timeouts: TIMEOUTS },
  deployment,
});

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const deployments = async (server: TestServer, id: string) => {
  const response = await http(server.url, '/admin/deployments', { headers: { authorization: `Bearer ${ADMIN}` } });
  assert.equal(response.status, 200, response.text);
  // biome-ignore lint/suspicious/noExplicitAny: admin JSON.
  return response.json.data.find((model: any) => model.id === id);
};

/** Polls `check` until it holds (a loaded CI box runs timers late); fails with `what` after 5 s. */
async function waitFor(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

const answerOf = (response: { json: { choices: { message: { content: string } }[] } }) => response.json.choices[0]!.message.content;

describe('routing: balancing, priorities, caps and retries', () => {
  let a: Awaited<ReturnType<typeof upstream>>;
  let b: Awaited<ReturnType<typeof upstream>>;
  let c: Awaited<ReturnType<typeof upstream>>;
  let server: TestServer;
  let deadPort: number;
  before(async () => {
    [a, b, c] = await Promise.all([upstream('a'), upstream('b'), upstream('c')]);
    deadPort = await closedPort();
    const dead = { id: 'x', type: 'chat', engine: 'openai-compatible', upstream: { baseUrl: `http://127.0.0.1:${deadPort}/v1`, model: 'm', contextSize: 4096, timeouts: TIMEOUTS } };
    server = await startTestServer({
      config: {
        server: { adminKey: ADMIN },
        // No active checks here: these tests watch the passive side alone.
        routing: { healthCheckIntervalSeconds: 0, failureThreshold: 100, cooldownSeconds: 60 },
        models: [
          on('even', a, { name: 'a' }),
          on('even', b, { name: 'b' }),
          on('weighted', a, { name: 'a', weight: 3 }),
          on('weighted', b, { name: 'b' }),
          on('fallback', a, { name: 'a' }),
          on('fallback', c, { name: 'c', priority: 1 }),
          on('capped', a, { name: 'a', maxConcurrent: 1 }),
          on('capped', b, { name: 'b', maxConcurrent: 1 }),
          { ...dead, id: 'refused', deployment: { name: 'dead' } },
          on('refused', b, { name: 'b' }),
          on('streams', a, { name: 'a' }),
          on('streams', b, { name: 'b' }),
        ],
      },
    });
  });
  after(async () => {
    await server?.close();
    await Promise.all([a, b, c].map((fake) => fake?.close()));
  });

  /** Every upstream holds its chat answers until `count` requests have arrived in all, so they all overlap. */
  const barrier = (count: number) => {
    const waiting: (() => void)[] = [];
    for (const [fake, name] of [[a, 'a'], [b, 'b'], [c, 'c']] as const)
      fake.route('POST', '/v1/chat/completions', async (request, response) => {
        await new Promise<void>((resolve) => {
          waiting.push(resolve);
          if (waiting.length === count) for (const release of waiting.splice(0)) release();
        });
        if (request.body.stream) streamed(response, [name]);
        else completion(response, name);
      });
  };
  const reset = () => {
    for (const [fake, name] of [[a, 'a'], [b, 'b'], [c, 'c']] as const)
      fake.route('POST', '/v1/chat/completions', (request, response) => (request.body.stream ? streamed(response, [name]) : completion(response, name)));
  };

  test('least outstanding requests: equal weights split concurrent requests evenly; weight 3 takes about three times as many', async () => {
    barrier(8);
    try {
      const even = await Promise.all(Array.from({ length: 8 }, () => http(server.baseURL, '/chat/completions', { body: chat('even') })));
      const counts = (answers: string[]) => ({ a: answers.filter((x) => x === 'a').length, b: answers.filter((x) => x === 'b').length });
      assert.deepEqual(counts(even.map(answerOf)), { a: 4, b: 4 });
      barrier(8);
      const weighted = await Promise.all(Array.from({ length: 8 }, () => http(server.baseURL, '/chat/completions', { body: chat('weighted') })));
      const split = counts(weighted.map(answerOf));
      assert.ok(split.a >= 5 && split.b >= 1 && split.a + split.b === 8, JSON.stringify(split));
    } finally {
      reset();
    }
  });

  test('priority: the fallback deployment gets nothing while the preferred one answers, and takes a request it fails (retry)', async () => {
    const before = c.chats();
    for (let i = 0; i < 4; i++) assert.equal(answerOf(await http(server.baseURL, '/chat/completions', { body: chat('fallback') })), 'a');
    assert.equal(c.chats(), before, 'priority 1 got no request');
    a.route('POST', '/v1/chat/completions', (_request, response) => {
      response.writeHead(500, { 'content-type': 'application/json' });
      response.end('{"error":{"message":"CUDA error: out of memory"}}');
    });
    try {
      const answered = await http(server.baseURL, '/chat/completions', { body: chat('fallback') });
      assert.equal(answered.status, 200, answered.text);
      assert.equal(answerOf(answered), 'c', 'the 500 was retried on the fallback');
      const state = await deployments(server, 'fallback');
      assert.equal(state.deployments[0].failures, 1);
      assert.match(state.deployments[0].lastError, /answered 500/);
    } finally {
      reset();
    }
  });

  test('429 and a refused connection are retried on another deployment; a 400 is not', async () => {
    for (let i = 0; i < 4; i++) {
      const answered = await http(server.baseURL, '/chat/completions', { body: chat('refused') });
      assert.equal(answered.status, 200, answered.text);
      assert.equal(answerOf(answered), 'b');
    }
    assert.ok((await deployments(server, 'refused')).deployments[0].failures >= 1, 'the dead deployment was tried and failed');

    let rateLimited = 0;
    a.route('POST', '/v1/chat/completions', (_request, response) => {
      rateLimited++;
      response.writeHead(429, { 'content-type': 'application/json', 'retry-after': '3' });
      response.end('{"error":{"message":"slow down"}}');
    });
    b.route('POST', '/v1/chat/completions', (_request, response) => {
      response.writeHead(400, { 'content-type': 'application/json' });
      response.end('{"error":{"message":"temperature must be at most 2","param":"temperature"}}');
    });
    try {
      const seenBefore = a.chats() + b.chats();
      const answers = await Promise.all(Array.from({ length: 4 }, () => http(server.baseURL, '/chat/completions', { body: chat('even') })));
      // Each request went to a or b first: a's 429 moved it to b, b's 400 came back as it is (no third try).
      for (const answered of answers) {
        assert.equal(answered.status, 400, answered.text);
        assert.equal(answered.json.error.param, 'temperature');
      }
      assert.ok(rateLimited >= 1);
      assert.equal(a.chats() + b.chats() - seenBefore, 4 + rateLimited, 'only the 429s were retried');
    } finally {
      reset();
    }
  });

  test('concurrency caps: a full deployment is skipped; when all are full, 503 deployments_unavailable with Retry-After', async () => {
    const release: (() => void)[] = [];
    for (const [fake, name] of [[a, 'a'], [b, 'b']] as const)
      fake.route('POST', '/v1/chat/completions', async (_request, response) => {
        await new Promise<void>((resolve) => release.push(resolve));
        completion(response, name);
      });
    try {
      const held = [http(server.baseURL, '/chat/completions', { body: chat('capped') }), http(server.baseURL, '/chat/completions', { body: chat('capped') })];
      const deadline = Date.now() + 3000;
      while (release.length < 2 && Date.now() < deadline) await sleep(10);
      assert.equal(release.length, 2, 'one request on each deployment');
      const state = await deployments(server, 'capped');
      assert.deepEqual(state.deployments.map((d: { inFlight: number }) => d.inFlight), [1, 1]);
      const refused = await http(server.baseURL, '/chat/completions', { body: chat('capped') });
      assert.equal(refused.status, 503, refused.text);
      assert.equal(refused.json.error.code, 'deployments_unavailable');
      assert.ok(Number(refused.headers.get('retry-after')) >= 1);
      assert.match(refused.json.error.message, /a: full, b: full/);
      for (const resolve of release) resolve();
      const answers = (await Promise.all(held)).map(answerOf).sort();
      assert.deepEqual(answers, ['a', 'b']);
    } finally {
      for (const resolve of release) resolve();
      reset();
    }
  });

  test('a stream is retried before its first token, never after: a cut after the first token ends in an error frame and [DONE]', async () => {
    // a fails before its first token: the stream goes to b and the client never knows.
    a.route('POST', '/v1/chat/completions', (_request, response) => {
      response.writeHead(502, { 'content-type': 'text/plain' });
      response.end('bad gateway');
    });
    try {
      for (let i = 0; i < 2; i++) {
        const answered = await http(server.baseURL, '/chat/completions', { body: chat('streams', { stream: true }) });
        assert.equal(answered.status, 200);
        const events = sseEvents(answered.text);
        assert.equal(events.at(-1), '[DONE]');
        assert.ok(!answered.text.includes('"error"'), answered.text);
        assert.match(answered.text, /"content":"b"/);
      }
      // Now a sends one token and dies; b must see no request for it.
      a.route('POST', '/v1/chat/completions', (_request, response) => {
        response.writeHead(200, { 'content-type': 'text/event-stream' });
        response.write(chunk({ content: 'partial' }));
        setTimeout(() => response.destroy(), 30);
      });
      b.route('POST', '/v1/chat/completions', (_request, response) => {
        response.writeHead(200, { 'content-type': 'text/event-stream' });
        response.write(chunk({ content: 'partial' }));
        setTimeout(() => response.destroy(), 30);
      });
      const seenBefore = a.chats() + b.chats();
      const answered = await http(server.baseURL, '/chat/completions', { body: chat('streams', { stream: true }) });
      assert.equal(answered.status, 200);
      const events = sseEvents(answered.text);
      assert.ok(events.some((event) => event.includes('"content":"partial"')), answered.text);
      assert.match(events.at(-2)!, /"error"/);
      assert.equal(events.at(-1), '[DONE]');
      assert.equal(a.chats() + b.chats() - seenBefore, 1, 'no retry after the first token');
    } finally {
      reset();
    }
  });

  test('a client that leaves a JSON request closes the deployment request within 100 ms', async () => {
    let closed = 0;
    let opened = 0;
    const hold = (_request: unknown, response: ServerResponse) => {
      opened++;
      response.on('close', () => (closed = Date.now()));
    };
    a.route('POST', '/v1/chat/completions', hold);
    b.route('POST', '/v1/chat/completions', hold);
    try {
      const controller = new AbortController();
      const sent = fetch(`${server.baseURL}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(chat('streams')),
        signal: controller.signal,
      }).catch(() => undefined);
      await waitFor('the request upstream', async () => opened === 1);
      const left = Date.now();
      controller.abort();
      await sent;
      await waitFor('the upstream request closed', async () => closed > 0);
      assert.ok(closed - left <= 100, `closed ${closed - left} ms after the client left`);
      assert.equal(opened, 1, 'not retried elsewhere');
    } finally {
      reset();
    }
  });

  test('a client that leaves a stream closes the deployment request within 100 ms', async () => {
    let opened = 0;
    let closed = 0;
    const hold = (name: string) => (_request: unknown, response: ServerResponse) => {
      opened++;
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.write(chunk({ content: name }));
      const timer = setInterval(() => response.write(chunk({ content: ' more' })), 20);
      response.on('close', () => {
        clearInterval(timer);
        closed = Date.now();
      });
    };
    a.route('POST', '/v1/chat/completions', hold('a'));
    b.route('POST', '/v1/chat/completions', hold('b'));
    try {
      const controller = new AbortController();
      const response = await fetch(`${server.baseURL}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(chat('streams', { stream: true })),
        signal: controller.signal,
      });
      const reader = response.body!.getReader();
      await reader.read();
      await reader.read();
      const left = Date.now();
      controller.abort();
      const deadline = Date.now() + 2000;
      while (!closed && Date.now() < deadline) await sleep(2);
      assert.equal(opened, 1);
      assert.ok(closed, 'the upstream saw its request closed');
      assert.ok(closed - left <= 100, `closed ${closed - left} ms after the client left`);
      let idle = false;
      for (let i = 0; i < 50 && !idle; i++) {
        idle = (await deployments(server, 'streams')).deployments.every((d: { inFlight: number }) => d.inFlight === 0);
        if (!idle) await sleep(20);
      }
      assert.ok(idle, 'nothing left in flight');
    } finally {
      reset();
    }
  });
});

describe('routing: circuit breaker and health checks', () => {
  let a: Awaited<ReturnType<typeof upstream>>;
  let b: Awaited<ReturnType<typeof upstream>>;
  let server: TestServer;
  before(async () => {
    [a, b] = await Promise.all([upstream('a'), upstream('b')]);
    server = await startTestServer({
      config: {
        server: { adminKey: ADMIN },
        routing: { healthCheckIntervalSeconds: 0.2, healthCheckTimeoutSeconds: 0.5, failureThreshold: 2, cooldownSeconds: 0.6 },
        models: [on('m', a, { name: 'a' }), on('m', b, { name: 'b' }), on('solo', a, { name: 'a' }), on('solo', b, { name: 'b', priority: 1 })],
      },
    });
  });
  after(async () => {
    await server?.close();
    await Promise.all([a, b].map((fake) => fake?.close()));
  });

  const failing = (fake: FakeUpstream) =>
    fake.route('POST', '/v1/chat/completions', (_request, response) => {
      response.writeHead(500, { 'content-type': 'application/json' });
      response.end('{"error":{"message":"engine crashed"}}');
    });
  const working = (fake: FakeUpstream, name: string) =>
    fake.route('POST', '/v1/chat/completions', (request, response) => (request.body.stream ? streamed(response, [name]) : completion(response, name)));

  test('failures eject a deployment for the cooldown; then one half-open probe; a failed probe ejects it for twice as long; a good one closes it', async () => {
    failing(a);
    try {
      // Every request still succeeds (retried on b) while a collects its failures.
      for (let i = 0; i < 4; i++) assert.equal(answerOf(await http(server.baseURL, '/chat/completions', { body: chat('m') })), 'b');
      let state = (await deployments(server, 'm')).deployments[0];
      assert.equal(state.breaker, 'open');
      assert.equal(state.ejections, 1);
      const until = Date.parse(state.ejectedUntil);
      assert.ok(until > Date.now() && until - Date.now() <= 600);
      // Ejected: a gets nothing.
      const triedBefore = a.chats();
      for (let i = 0; i < 3; i++) assert.equal(answerOf(await http(server.baseURL, '/chat/completions', { body: chat('m') })), 'b');
      assert.equal(a.chats(), triedBefore, 'an ejected deployment gets no request');
      // Cooldown over: exactly one probe goes to a (it fails, retried on b), and a is out again for 2× the cooldown.
      await sleep(until - Date.now() + 20);
      const answers = await Promise.all(Array.from({ length: 4 }, () => http(server.baseURL, '/chat/completions', { body: chat('m') })));
      assert.deepEqual(answers.map(answerOf), ['b', 'b', 'b', 'b']);
      assert.equal(a.chats(), triedBefore + 1, 'one half-open probe');
      state = (await deployments(server, 'm')).deployments[0];
      assert.equal(state.breaker, 'open');
      assert.equal(state.ejections, 2);
      const second = Date.parse(state.ejectedUntil) - Date.now();
      assert.ok(second > 400 && second <= 1200, `second cooldown ${second} ms (2 × 600 ms from the probe's answer)`);
      // a recovers: after the cooldown the probe succeeds and a takes traffic again.
      working(a, 'a');
      await sleep(second + 20);
      const after = await Promise.all(Array.from({ length: 6 }, () => http(server.baseURL, '/chat/completions', { body: chat('m') })));
      assert.ok(after.map(answerOf).includes('a'));
      state = (await deployments(server, 'm')).deployments[0];
      assert.equal(state.breaker, 'closed');
      assert.equal(state.consecutiveFailures, 0);
      const metrics = await http(server.url, '/metrics', { headers: { authorization: `Bearer ${ADMIN}` } });
      assert.match(metrics.text, /infera_deployment_ejections_total\{model="m",deployment="a"\} 2/);
      assert.match(metrics.text, /infera_deployment_failures_total\{model="m",deployment="a"\} 3/);
      assert.match(metrics.text, /infera_deployment_requests_total\{model="m",deployment="b"\} \d+/);
    } finally {
      working(a, 'a');
    }
  });

  test('active health checks: a failing check takes a deployment out within the interval; /ready says so when none is left; a passing check brings it back', async () => {
    const down = (fake: FakeUpstream) =>
      fake.route('GET', '/v1/models', (_request, response) => {
        response.writeHead(503, { 'content-type': 'application/json' });
        response.end('{"error":{"message":"loading"}}');
      });
    const up = (fake: FakeUpstream) =>
      fake.route('GET', '/v1/models', (_request, response) => {
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end('{"object":"list","data":[]}');
      });
    try {
      down(a);
      await waitFor('a unhealthy', async () => (await deployments(server, 'solo')).deployments[0].healthy === false);
      const state = (await deployments(server, 'solo')).deployments[0];
      assert.equal(state.healthy, false);
      assert.match(state.lastError, /health check GET .*\/v1\/models failed: answered 503/);
      const before = a.chats();
      assert.equal(answerOf(await http(server.baseURL, '/chat/completions', { body: chat('solo') })), 'b', 'the priority-1 deployment takes over');
      assert.equal(a.chats(), before, 'an unhealthy deployment gets no request');
      assert.equal((await http(server.url, '/ready')).status, 200);

      down(b);
      await waitFor('both models unavailable', async () => (await http(server.url, '/ready')).json.checks.deployments.unavailable === 2);
      const ready = await http(server.url, '/ready');
      assert.equal(ready.status, 503);
      assert.equal(ready.json.checks.deployments.status, 'failing');
      assert.equal(ready.json.checks.deployments.unavailable, 2);
      const refused = await http(server.baseURL, '/chat/completions', { body: chat('solo') });
      assert.equal(refused.status, 503, refused.text);
      assert.equal(refused.json.error.code, 'deployments_unavailable');
      assert.ok(Number(refused.headers.get('retry-after')) >= 1);
      assert.match(refused.json.error.message, /a: unhealthy, b: unhealthy/);

      up(a);
      up(b);
      await waitFor('ready again', async () => (await http(server.url, '/ready')).status === 200);
      assert.equal(answerOf(await http(server.baseURL, '/chat/completions', { body: chat('solo') })), 'a');
    } finally {
      up(a);
      up(b);
    }
  });
});

describe('routing: an upstream served alone', () => {
  let lone: Awaited<ReturnType<typeof upstream>>;
  let server: TestServer;
  before(async () => {
    lone = await upstream('lone');
    server = await startTestServer({
      config: {
        server: { adminKey: ADMIN },
        routing: { healthCheckIntervalSeconds: 0.2, healthCheckTimeoutSeconds: 0.5, failureThreshold: 2, cooldownSeconds: 0.6 },
        models: [on('alone', lone, { name: 'lone', maxConcurrent: 1 })],
      },
    });
  });
  after(async () => {
    await server?.close();
    await lone?.close();
  });
  const working = () =>
    lone.route('POST', '/v1/chat/completions', (request, response) => (request.body.stream ? streamed(response, ['lone']) : completion(response, 'lone')));

  test('its cap, its circuit breaker and its health check answer 503 + Retry-After without calling it, as for several deployments', async () => {
    const state = await deployments(server, 'alone');
    assert.equal(state.deployments.length, 1);
    assert.equal(state.deployments[0].name, 'lone');
    assert.equal(state.deployments[0].maxConcurrent, 1);

    // Cap: one request held upstream fills it; the next is refused at once.
    const release: (() => void)[] = [];
    lone.route('POST', '/v1/chat/completions', async (_request, response) => {
      await new Promise<void>((resolve) => release.push(resolve));
      completion(response, 'lone');
    });
    try {
      const held = http(server.baseURL, '/chat/completions', { body: chat('alone') });
      await waitFor('the held request upstream', async () => release.length === 1);
      const full = await http(server.baseURL, '/chat/completions', { body: chat('alone') });
      assert.equal(full.status, 503, full.text);
      assert.equal(full.json.error.code, 'deployments_unavailable');
      assert.ok(Number(full.headers.get('retry-after')) >= 1);
      assert.match(full.json.error.message, /lone: full/);
      assert.equal(release.length, 1, 'the refused request never reached the upstream');
      release[0]!();
      assert.equal(answerOf(await held), 'lone');
    } finally {
      for (const resolve of release) resolve();
      working();
    }

    // Breaker: two failures (each told to the client as the upstream's fault), then it is ejected.
    lone.route('POST', '/v1/chat/completions', (_request, response) => {
      response.writeHead(500, { 'content-type': 'application/json' });
      response.end('{"error":{"message":"engine crashed"}}');
    });
    try {
      for (let i = 0; i < 2; i++) assert.equal((await http(server.baseURL, '/chat/completions', { body: chat('alone') })).status, 502);
      const before = lone.chats();
      const ejected = await http(server.baseURL, '/chat/completions', { body: chat('alone') });
      assert.equal(ejected.status, 503, ejected.text);
      assert.match(ejected.json.error.message, /lone: ejected/);
      assert.ok(Number(ejected.headers.get('retry-after')) >= 1);
      assert.equal(lone.chats(), before, 'an ejected upstream gets no request');
      // After the cooldown, one probe: it answers, and the breaker closes.
      working();
      await waitFor('the half-open probe to pass', async () => (await http(server.baseURL, '/chat/completions', { body: chat('alone') })).status === 200);
      assert.equal((await deployments(server, 'alone')).deployments[0].breaker, 'closed');
    } finally {
      working();
    }

    // Health check: a failing one takes it out (503, nothing sent, /ready says so); a passing one brings it back.
    const models = (status: number) =>
      lone.route('GET', '/v1/models', (_request, response) => {
        response.writeHead(status, { 'content-type': 'application/json' });
        response.end(status === 200 ? '{"object":"list","data":[]}' : '{"error":{"message":"loading"}}');
      });
    try {
      models(503);
      await waitFor('unhealthy', async () => (await deployments(server, 'alone')).deployments[0].healthy === false);
      const before = lone.chats();
      const down = await http(server.baseURL, '/chat/completions', { body: chat('alone', { stream: true }) });
      assert.equal(down.status, 503, down.text);
      assert.match(down.json.error.message, /lone: unhealthy/);
      assert.equal(lone.chats(), before);
      assert.equal((await http(server.url, '/ready')).status, 503);
      models(200);
      await waitFor('healthy again', async () => (await http(server.url, '/ready')).status === 200);
      const events = sseEvents((await http(server.baseURL, '/chat/completions', { body: chat('alone', { stream: true }) })).text);
      assert.equal(events.at(-1), '[DONE]');
      assert.match(events.join('\n'), /"content":"lone"/);
    } finally {
      models(200);
    }
  });
});

test('models served alone by one upstream share its health check: one GET per interval, not one per model', async () => {
  const shared = await upstream('shared');
  let checks = 0;
  shared.route('GET', '/v1/models', (_request, response) => {
    checks++;
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end('{"object":"list","data":[]}');
  });
  const server = await startTestServer({
    config: {
      server: { adminKey: ADMIN },
      routing: { healthCheckIntervalSeconds: 0.2, healthCheckTimeoutSeconds: 0.5 },
      models: ['one', 'two', 'three', 'four'].map((id) => on(id, shared)),
    },
  });
  try {
    const start = checks;
    await sleep(1000);
    const sent = checks - start;
    // Four routers, each ticking five times a second: 20 GETs unshared; shared, about five.
    assert.ok(sent >= 2 && sent <= 9, `${sent} health checks in 1 s for four models on one upstream`);
    for (const id of ['one', 'four']) assert.equal((await deployments(server, id)).deployments[0].healthy, true);
    assert.equal(answerOf(await http(server.baseURL, '/chat/completions', { body: chat('three') })), 'shared');
  } finally {
    await server.close();
    await shared.close();
  }
});
