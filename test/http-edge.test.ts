// The HTTP edge against hostile and careless clients, over real sockets: refusal before the body is
// read, slow clients cut at their timeouts, connection caps, keyless-mode Host/Origin/content-type
// checks, protocol errors in OpenAI's error shape, redacted logs. docs/RELIABILITY.md ("HTTP edge")
// records the figures these tests print.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { connect, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configSchema } from '../src/config/schema.ts';
import Database from 'better-sqlite3';
import { createGate, sqlitePath, type PlatformGate } from '../src/platform/index.ts';
import { createServer, listen, type InferaServer } from '../src/main.ts';
import { createLogger } from '../src/observability/logger.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';
import { validateAgainstOpenApi } from './helpers/openapi.ts';

const KEY = 'sk-test-http-edge-key';
// Configured, never loaded: nothing here runs an engine.
const models = [
  { id: 'org/chat-a', type: 'chat', engine: 'llama-cpp', path: '/nonexistent/a.gguf' },
  { id: 'org/image-d', type: 'text-to-image', engine: 'onnx-diffusion', path: '/nonexistent/d' },
];

interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
  // biome-ignore lint/suspicious/noExplicitAny: the parsed body of whatever answer came back
  json: any;
  raw: string;
}

function parseAnswer(raw: string): RawAnswer {
  const end = raw.indexOf('\r\n\r\n');
  const head = end < 0 ? raw : raw.slice(0, end);
  const [statusLine, ...lines] = head.split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  const body = end < 0 ? '' : raw.slice(end + 4);
  let json: RawAnswer['json'];
  try {
    json = JSON.parse(body);
  } catch {
    json = undefined;
  }
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine ?? '')?.[1] ?? 0), headers, body, json, raw };
}

/** Writes `request` on a fresh connection and reads until the server closes it or a full answer arrived. */
function exchange(port: number, request: string | Buffer, options: { localAddress?: string; timeoutMs?: number } = {}): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', localAddress: options.localAddress });
    let raw = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer in ${options.timeoutMs ?? 5000} ms; got ${JSON.stringify(raw.slice(0, 200))}`));
    }, options.timeoutMs ?? 5000);
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(parseAnswer(raw));
    };
    socket.on('data', (chunk) => {
      raw += chunk;
      const answer = parseAnswer(raw);
      const length = Number(answer.headers['content-length']);
      if (answer.status && Number.isFinite(length) && Buffer.byteLength(answer.body) >= length) finish();
    });
    socket.on('error', () => {});
    socket.on('close', finish);
    socket.write(request);
  });
}

const request = (method: string, path: string, headers: Record<string, string>, body = '') =>
  `${method} ${path} HTTP/1.1\r\n${Object.entries({ host: '127.0.0.1', ...(body ? { 'content-length': String(Buffer.byteLength(body)) } : {}), ...headers })
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')}\r\n${body}`;

function assertErrorShape(answer: RawAnswer, status: number, code?: string) {
  assert.equal(answer.status, status, answer.raw.slice(0, 300));
  assert.match(answer.headers['content-type'] ?? '', /application\/json/);
  assert.equal(typeof answer.json?.error?.message, 'string', answer.body);
  assert.deepEqual(validateAgainstOpenApi('ErrorResponse', { error: answer.json.error }), []);
  assert.equal(typeof answer.json.code, 'number');
  if (code) assert.equal(answer.json.error.code, code);
}

const portOf = (server: TestServer) => Number(new URL(server.url).port);

describe('refuse before reading', () => {
  let server: TestServer;
  const sockets: Socket[] = [];
  before(async () => {
    server = await startTestServer({ config: { server: { apiKeys: [KEY] }, models } });
    server.server.app.server.on('connection', (socket: Socket) => sockets.push(socket));
  });
  after(() => server.close());

  for (const [label, auth] of [
    ['no key', ''],
    ['a wrong key', 'authorization: Bearer sk-wrong-wrong-wrong\r\n'],
  ] as const)
    test(`an 8 MiB upload with ${label} gets its 401 after < 64 KiB of body was read, and the connection closes`, async () => {
      const { answer, bodyRead, serverSocket } = await uploadEightMiB(portOf(server), sockets, auth);
      assertErrorShape(answer, 401);
      assert.equal(answer.headers.connection, 'close');
      console.log(`# 8 MiB anonymous upload (${label}): server read ${bodyRead} body bytes (${serverSocket.bytesRead} in all) before the 401 closed it`);
      assert.ok(bodyRead < 64 * 1024, `server read ${bodyRead} body bytes`);
    });

  test('the server still serves keyed requests afterwards', async () => {
    const answer = await exchange(portOf(server), request('GET', '/v1/models', { authorization: `Bearer ${KEY}`, connection: 'close' }));
    assert.equal(answer.status, 200);
  });
});

describe('a key over its own request-rate limit is refused before its body is read', () => {
  let server: TestServer;
  let gate: PlatformGate;
  let dir: string;
  const sockets: Socket[] = [];
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'infera-edge-precheck-'));
    const raw = { storage: { dataDir: dir }, models };
    gate = await createGate(configSchema.parse(raw), { info() {}, warn() {}, error() {} });
    server = await startTestServer({ config: raw, gate });
    server.server.app.server.on('connection', (socket: Socket) => sockets.push(socket));
  });
  after(async () => {
    await server?.close();
    await gate?.close().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  });

  test('rpm 1: the second request (8 MiB) gets its 429 after < 64 KiB of body was read, with its ledger row; admission counted once', async () => {
    const { secret } = await gate.admin.createKey({ name: 'limited', limits: { rpm: 1 } });
    const auth = `authorization: Bearer ${secret}\r\n`;
    // The first is admitted (rpm counted), then fails to load its model (a 503): the limit is used up.
    const first = await exchange(portOf(server), request('POST', '/v1/chat/completions', { authorization: `Bearer ${secret}`, 'content-type': 'application/json', connection: 'close' }, JSON.stringify({ model: 'org/chat-a', messages: [{ role: 'user', content: 'hi' }] })));
    assert.equal(first.status, 503, first.raw.slice(0, 300));
    const { answer, bodyRead } = await uploadEightMiB(portOf(server), sockets, auth);
    assertErrorShape(answer, 429, 'rate_limit_exceeded');
    assert.match(answer.json.error.message, /RPM limit reached: API key "limited" has used 1 of 1/);
    assert.ok(Number(answer.headers['retry-after']) >= 1);
    console.log(`# 8 MiB upload over the key's rpm: server read ${bodyRead} body bytes before the 429`);
    assert.ok(bodyRead < 64 * 1024, `server read ${bodyRead} body bytes`);
    // A key without limits, and GET routes, are not held up by the check.
    const models = await exchange(portOf(server), request('GET', '/v1/models', { authorization: `Bearer ${secret}`, connection: 'close' }));
    assert.equal(models.status, 200);
    await gate.ledger.close();
    const db = new Database(sqlitePath(server.config), { readonly: true });
    try {
      const rows = db.prepare('SELECT model, endpoint, status FROM ledger ORDER BY id').all() as { model: string; endpoint: string; status: number }[];
      assert.deepEqual(rows, [
        { model: 'org/chat-a', endpoint: 'chat', status: 503 },
        { model: '', endpoint: 'chat', status: 429 },
      ]);
    } finally {
      db.close();
    }
  });
});

describe('protocol errors are in OpenAI\'s error shape', () => {
  let server: TestServer;
  const auth = { authorization: `Bearer ${KEY}` };
  before(async () => {
    server = await startTestServer({ config: { server: { apiKeys: [KEY], bodyLimit: 4096 }, models } });
  });
  after(() => server.close());
  const send = (text: string) => exchange(portOf(server), text);
  const json = { 'content-type': 'application/json', connection: 'close', ...auth };

  test('bad JSON 400, unknown route 404, wrong content type 415, body too large 413 (and the connection closes)', async () => {
    assertErrorShape(await send(request('POST', '/v1/chat/completions', json, '{"model": ')), 400, 'invalid_json');
    assertErrorShape(await send(request('GET', '/v1/nothing', { ...auth, connection: 'close' })), 404, 'unknown_route');
    assertErrorShape(await send(request('POST', '/v1/chat/completions', { ...json, 'content-type': 'text/plain' }, '{}')), 415, 'unsupported_media_type');
    // Declared too large: refused on the headers, nothing read.
    const tooLarge = await send(`POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nauthorization: Bearer ${KEY}\r\ncontent-length: 100000\r\n\r\n{`);
    assertErrorShape(tooLarge, 413, 'request_too_large');
    assert.match(tooLarge.json.error.message, /4096 bytes/);
    assert.equal(tooLarge.headers.connection, 'close');
  });

  test('headers over server.maxHeaderBytes: 431 in the error shape, written at the socket level', async () => {
    const answer = await send(request('GET', '/v1/models', { ...auth, 'x-padding': 'p'.repeat(20_000) }));
    assertErrorShape(answer, 431, 'request_header_fields_too_large');
    assert.match(answer.json.error.message, /server\.maxHeaderBytes/);
  });

  test('malformed HTTP: 400 in the error shape', async () => {
    assertErrorShape(await send('GARBAGE\r\n\r\n'), 400, 'malformed_http');
    assertErrorShape(await send('GET /v1/models HTTP/1.1\r\nhost: x\r\ncontent-length: nope\r\n\r\n'), 400, 'malformed_http');
  });

  test('GET /v1/models/%25FF is a 404 (decoded once), and an id with an encoded slash still resolves', async () => {
    const odd = await send(request('GET', '/v1/models/%25FF', { ...auth, connection: 'close' }));
    assertErrorShape(odd, 404, 'model_not_found');
    const found = await send(request('GET', '/v1/models/org%2Fchat-a', { ...auth, connection: 'close' }));
    assert.equal(found.status, 200);
    assert.equal(found.json.id, 'org/chat-a');
    const plain = await send(request('GET', '/v1/models/org/chat-a', { ...auth, connection: 'close' }));
    assert.equal(plain.json.id, 'org/chat-a');
  });

  test('per-route body limits: images take more than chat (server.bodyLimit stays the default)', async () => {
    const big = JSON.stringify({ model: 'org/image-d', prompt: 'x'.repeat(10_000) });
    assertErrorShape(await send(request('POST', '/v1/chat/completions', json, big)), 413);
    const images = await send(request('POST', '/v1/images/generations', json, big));
    // Past the body limit (the model itself cannot load here, so some other error follows).
    assert.notEqual(images.status, 413, images.body);
  });
});

describe('keyless mode is safe by default', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ config: { models } });
  });
  after(() => server.close());
  const send = (method: string, path: string, headers: Record<string, string>, body = '') =>
    exchange(portOf(server), request(method, path, { connection: 'close', ...headers }, body));
  const chat = JSON.stringify({ model: 'org/chat-a', messages: [{ role: 'user', content: 'hi' }] });

  test('bodies a web page can send without a preflight are refused: text/plain, form-encoded, no content type (415)', async () => {
    for (const type of ['text/plain', 'text/plain;charset=UTF-8', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
      const answer = await send('POST', '/v1/chat/completions', { 'content-type': type }, chat);
      assertErrorShape(answer, 415, 'unsupported_media_type');
    }
    assertErrorShape(await send('POST', '/v1/chat/completions', {}, chat), 415, 'unsupported_media_type');
    // JSON (any charset parameter) goes through to the model (which fails to load here: not a 415).
    const json = await send('POST', '/v1/chat/completions', { 'content-type': 'application/json; charset=utf-8' }, chat);
    assert.notEqual(json.status, 415);
  });

  test('a foreign Host (DNS rebinding) or Origin (a web page) is refused with 403; local names pass', async () => {
    const port = portOf(server);
    for (const host of ['evil.example', `evil.example:${port}`, 'rebind.127.0.0.1.nip.io']) {
      const answer = await send('GET', '/v1/models', { host });
      assertErrorShape(answer, 403, 'host_not_allowed');
    }
    for (const host of ['localhost', `localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`, 'app.localhost']) {
      const answer = await send('GET', '/v1/models', { host });
      assert.equal(answer.status, 200, `${host}: ${answer.body}`);
    }
    for (const origin of ['http://evil.example', 'https://evil.example:8443', 'null']) {
      assertErrorShape(await send('GET', '/v1/models', { origin }), 403, 'origin_not_allowed');
    }
    assert.equal((await send('GET', '/v1/models', { origin: `http://localhost:${port}` })).status, 200);
  });

  test('no CORS headers are ever sent (CORS is not offered)', async () => {
    const answer = await send('OPTIONS', '/v1/chat/completions', { origin: 'http://evil.example', 'access-control-request-method': 'POST' });
    assert.equal(answer.headers['access-control-allow-origin'], undefined);
  });

  test('with a key, the Host is not checked unless server.allowedHosts is set', async () => {
    const keyed = await startTestServer({ config: { server: { apiKeys: [KEY] }, models } });
    const listed = await startTestServer({ config: { server: { apiKeys: [KEY], allowedHosts: ['api.example.com'] }, models } });
    try {
      const headers = { host: 'other.example', authorization: `Bearer ${KEY}`, connection: 'close' };
      assert.equal((await exchange(portOf(keyed), request('GET', '/v1/models', headers))).status, 200);
      assertErrorShape(await exchange(portOf(listed), request('GET', '/v1/models', headers)), 403, 'host_not_allowed');
      const allowed = await exchange(portOf(listed), request('GET', '/v1/models', { ...headers, host: 'API.example.com:443' }));
      assert.equal(allowed.status, 200);
    } finally {
      await keyed.close();
      await listed.close();
    }
  });
});

describe('image URLs never come from the request', () => {
  test('publicOrigin: server.publicUrl, else the listen address; the Host header plays no part', async () => {
    const plain = await startTestServer({ config: { models } });
    const proxied = await startTestServer({ config: { server: { publicUrl: 'https://img.example.com/base/' }, models } });
    try {
      assert.equal(plain.server.app.publicOrigin(), plain.url);
      assert.equal(proxied.server.app.publicOrigin(), 'https://img.example.com/base');
    } finally {
      await plain.close();
      await proxied.close();
    }
  });
});

describe('slow and greedy clients', () => {
  test('1,000 slow connections (silent, dripping headers, dripping bodies) do not delay a keyed request by 1 s, and are cut at their timeouts', async (t) => {
    const headersTimeout = 1;
    const requestTimeout = 2;
    const server = await startTestServer({
      config: {
        server: { apiKeys: [KEY], headersTimeoutSeconds: headersTimeout, requestTimeoutSeconds: requestTimeout, maxConnections: 2000, maxConnectionsPerIp: 150 },
        models,
      },
    });
    const port = portOf(server);
    const slow: { kind: 'silent' | 'headers' | 'body'; socket: Socket; openedAt: number; closedAt?: number; received: string; timer?: NodeJS.Timeout }[] = [];
    t.after(async () => {
      for (const s of slow) {
        clearInterval(s.timer);
        s.socket.destroy();
      }
      await server.close();
    });
    const keyed = async () => {
      const started = performance.now();
      const answer = await exchange(port, request('GET', '/v1/models', { authorization: `Bearer ${KEY}`, connection: 'close' }), { timeoutMs: 10_000 });
      assert.equal(answer.status, 200);
      return performance.now() - started;
    };
    const baseline = Math.max(await keyed(), await keyed(), await keyed());

    const kinds = ['silent', 'headers', 'body', 'body'] as const;
    await Promise.all(
      Array.from({ length: 1000 }, (_, i) => {
        const kind = kinds[i % 4]!;
        // Ten client addresses (all loopback), under the per-address cap of 150.
        const socket = connect({ port, host: '127.0.0.1', localAddress: `127.0.0.${2 + (i % 10)}` });
        const entry: (typeof slow)[number] = { kind, socket, openedAt: 0, received: '' };
        slow.push(entry);
        socket.on('data', (chunk) => (entry.received += chunk));
        socket.on('error', () => {});
        socket.on('close', () => {
          entry.closedAt = performance.now();
          clearInterval(entry.timer);
        });
        return new Promise<void>((resolve) =>
          socket.once('connect', () => {
            entry.openedAt = performance.now();
            if (kind === 'headers') {
              socket.write('POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n');
              entry.timer = setInterval(() => socket.write('x'), 200);
            } else if (kind === 'body') {
              socket.write(`POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${KEY}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{`);
              entry.timer = setInterval(() => socket.write(' '), 200);
            }
            resolve();
          }),
        );
      }),
    );
    const open = slow.filter((s) => s.closedAt === undefined).length;
    const latencies: number[] = [];
    for (let i = 0; i < 5; i++) latencies.push(await keyed());
    const worst = Math.max(...latencies);
    console.log(`# keyed GET /v1/models: baseline ${baseline.toFixed(1)} ms; with ${open} slow connections open: worst of 5 ${worst.toFixed(1)} ms`);
    assert.equal(open, 1000, 'every slow connection was accepted (the cut must come from the timeouts)');
    assert.ok(worst < baseline + 1000, `keyed request took ${worst} ms`);

    const deadline = performance.now() + (requestTimeout + 4) * 1000;
    while (slow.some((s) => s.closedAt === undefined) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    for (const kind of ['silent', 'headers', 'body'] as const) {
      const group = slow.filter((s) => s.kind === kind);
      const lifetimes = group.map((s) => (s.closedAt ?? Number.POSITIVE_INFINITY) - s.openedAt).sort((a, b) => a - b);
      const limit = (kind === 'body' ? requestTimeout : headersTimeout) * 1000;
      console.log(
        `# ${kind} (${group.length}): cut after ${(lifetimes[0]! / 1000).toFixed(2)}–${(lifetimes.at(-1)! / 1000).toFixed(2)} s (timeout ${limit / 1000} s)`,
      );
      assert.ok(lifetimes[0]! >= limit - 100, `${kind}: one closed after ${lifetimes[0]} ms, before its timeout`);
      assert.ok(lifetimes.at(-1)! <= limit + 2000, `${kind}: one lived ${lifetimes.at(-1)} ms`);
      // Cut with a 408 in the error shape where the client could still read it.
      const answered = group.filter((s) => s.received.startsWith('HTTP/1.1 408'));
      assert.ok(answered.length > group.length / 2, `${kind}: ${answered.length} of ${group.length} got a 408`);
      assertErrorShape(parseAnswer(answered[0]!.received), 408, 'request_timeout');
    }
  });

  test('connections over server.maxConnectionsPerIp or server.maxConnections are closed at once', async (t) => {
    const server = await startTestServer({ config: { server: { apiKeys: [KEY], maxConnectionsPerIp: 3, maxConnections: 6 }, models } });
    const port = portOf(server);
    const sockets: Socket[] = [];
    t.after(async () => {
      for (const socket of sockets) socket.destroy();
      await server.close();
    });
    const open = (localAddress: string) =>
      new Promise<{ socket: Socket; closedWithin: (ms: number) => Promise<boolean> }>((resolve) => {
        const socket = connect({ port, host: '127.0.0.1', localAddress });
        sockets.push(socket);
        socket.on('error', () => {});
        const closed = new Promise<void>((r) => socket.once('close', () => r()));
        socket.once('connect', () =>
          resolve({ socket, closedWithin: (ms) => Promise.race([closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]) }),
        );
      });
    for (let i = 0; i < 3; i++) assert.equal(await (await open('127.0.0.2')).closedWithin(150), false, 'under the per-address cap');
    assert.equal(await (await open('127.0.0.2')).closedWithin(1000), true, 'the 4th from one address is closed at once');
    for (let i = 0; i < 3; i++) assert.equal(await (await open('127.0.0.3')).closedWithin(150), false, 'another address has its own 3');
    assert.equal(await (await open('127.0.0.4')).closedWithin(1000), true, 'the 7th in all is closed at once');
    for (const socket of sockets) socket.destroy();
    await new Promise((r) => setTimeout(r, 100));
    const answer = await exchange(port, request('GET', '/v1/models', { authorization: `Bearer ${KEY}`, connection: 'close' }));
    assert.equal(answer.status, 200, 'freed slots serve again');
  });

  test('keep-alive: server.maxRequestsPerSocket closes after that many; an idle connection closes after server.keepAliveTimeoutSeconds', async (t) => {
    const server = await startTestServer({ config: { server: { apiKeys: [KEY], maxRequestsPerSocket: 2, keepAliveTimeoutSeconds: 0.5 }, models } });
    t.after(() => server.close());
    const socket = connect({ port: portOf(server), host: '127.0.0.1' });
    let raw = '';
    socket.on('data', (chunk) => (raw += chunk));
    const closed = new Promise<number>((resolve) => socket.once('close', () => resolve(performance.now())));
    await new Promise((resolve) => socket.once('connect', resolve));
    const get = request('GET', '/v1/models', { authorization: `Bearer ${KEY}` });
    socket.write(get);
    await new Promise((r) => setTimeout(r, 200));
    socket.write(get);
    await closed;
    const answers = raw.split(/(?=HTTP\/1\.1 )/);
    assert.equal(answers.length, 2);
    assert.match(answers[1]!, /connection: close/i);

    const idle = connect({ port: portOf(server), host: '127.0.0.1' });
    await new Promise((resolve) => idle.once('connect', resolve));
    idle.write(request('GET', '/v1/models', { authorization: `Bearer ${KEY}` }));
    const answeredAt = await new Promise<number>((resolve) => idle.once('data', () => resolve(performance.now())));
    const idleClosed = await new Promise<number>((resolve) => idle.once('close', () => resolve(performance.now())));
    const idleFor = idleClosed - answeredAt;
    assert.ok(idleFor >= 400 && idleFor < 3000, `idle connection closed after ${idleFor} ms`);
  });
});

describe('operator hygiene', () => {
  test('the access log redacts key query parameters and never holds the Authorization header; expected events are not errors', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _encoding, done) {
        lines.push(...String(chunk).split('\n').filter(Boolean));
        done();
      },
    });
    const dataDir = mkdtempSync(join(tmpdir(), 'infera-edge-log-'));
    let server: InferaServer | undefined;
    try {
      const config = configSchema.parse({ server: { apiKeys: [KEY], port: 0, bodyLimit: 4096 }, storage: { dataDir }, models });
      server = await createServer(config, { logger: createLogger('debug', sink) });
      const port = Number(new URL(await listen(server)).port);
      const secret = 'sk-query-secret-123456';
      await exchange(port, request('GET', `/v1/models?api_key=${secret}&key=${secret}&type=text`, { authorization: `Bearer ${KEY}`, connection: 'close' }));
      await exchange(port, request('GET', `/v1/models?key=${secret}`, { authorization: 'Bearer sk-wrong-wrong-wrong', connection: 'close' }));
      await exchange(port, request('POST', '/v1/chat/completions', { 'content-type': 'text/plain', connection: 'close' }, 'x'));
      await exchange(port, request('GET', '/v1/models', { 'x-big': 'b'.repeat(20_000) }));
      // A client that leaves halfway through its body.
      const leaver = connect({ port, host: '127.0.0.1' });
      leaver.on('error', () => {});
      await new Promise((resolve) => leaver.once('connect', resolve));
      leaver.write(`POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nauthorization: Bearer ${KEY}\r\ncontent-length: 3000\r\n\r\n{"model":`);
      await new Promise((r) => setTimeout(r, 100));
      leaver.destroy();
      await new Promise((r) => setTimeout(r, 200));
    } finally {
      await server?.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
    const log = lines.join('\n');
    assert.ok(!log.includes('sk-query-secret'), 'no query secret in the log');
    assert.ok(!log.includes(KEY) && !log.includes('sk-wrong-wrong'), 'no bearer key in the log');
    assert.match(log, /api_key=\[redacted\]&key=\[redacted\]&type=text/);
    const errors = lines.map((line) => JSON.parse(line)).filter((entry) => entry.level >= 50);
    assert.deepEqual(errors, [], 'nothing at error level');
    assert.ok(lines.some((line) => /client disconnected/.test(line)), 'the disconnect is logged (at info)');
  });
});

/** Sends the head of an 8 MiB chat upload and pumps its body until the server closes the connection. */
async function uploadEightMiB(port: number, sockets: Socket[], auth: string) {
  const size = 8 * 1024 * 1024;
  const head = `POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: ${size}\r\n${auth}\r\n`;
  const client = connect({ port, host: '127.0.0.1' });
  await new Promise((resolve) => client.once('connect', resolve));
  const serverSocket = sockets.at(-1)!;
  let raw = '';
  let written = 0;
  const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
  client.on('data', (chunk) => (raw += chunk));
  client.on('error', () => {});
  client.write(head);
  const chunk = Buffer.alloc(64 * 1024, 0x20);
  const pump = () => {
    while (written < size && !client.destroyed) {
      written += chunk.length;
      if (!client.write(chunk)) return void client.once('drain', pump);
    }
  };
  pump();
  await closed;
  await new Promise<void>((resolve) => (serverSocket.destroyed ? resolve() : serverSocket.once('close', () => resolve())));
  return { answer: parseAnswer(raw), bodyRead: serverSocket.bytesRead - Buffer.byteLength(head), serverSocket };
}
