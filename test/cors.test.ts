// CORS over real sockets (server.cors): none by default; with origins listed, a preflight for every
// /v1 route is answered before any key check and allows Authorization, answers carry the origin and
// expose the headers pages need, the operator's routes (/admin, /metrics) never get CORS, and a
// keyless server stays closed to pages unless their exact origin is listed ("*" does not open it).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { configSchema } from '../src/config/schema.ts';
import { http, startTestServer, type TestServer } from './helpers/server.ts';

const KEY = 'sk-cors-test-key-123';
const APP = 'http://app.example:5173';
const models = [
  { id: 'org/chat', type: 'chat', engine: 'llama-cpp', path: '/nonexistent/a.gguf' },
  { id: 'org/embed', type: 'embedding', engine: 'llama-cpp', path: '/nonexistent/b.gguf' },
];

/** Every /v1 route with the method a page calls it with. */
const ROUTES: [string, string][] = [
  ['POST', '/v1/chat/completions'],
  ['POST', '/v1/embeddings'],
  ['POST', '/v1/rerank'],
  ['POST', '/v1/images/generations'],
  ['GET', '/v1/models'],
  ['GET', '/v1/models/org/chat'],
  ['GET', '/v1/user/info'],
];

const preflight = (base: string, path: string, origin: string, method = 'POST', headers = 'authorization,content-type,x-stainless-os') =>
  fetch(`${base}${path}`, {
    method: 'OPTIONS',
    headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': headers },
  });

describe('CORS off by default', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ config: { server: { apiKeys: [KEY] }, models } });
  });
  after(() => server.close());

  test('no preflight route and no CORS headers on answers', async () => {
    const answer = await preflight(server.url, '/v1/chat/completions', APP);
    assert.equal(answer.status, 404);
    assert.equal(answer.headers.get('access-control-allow-origin'), null);
    const listed = await http(server.baseURL, '/models', { headers: { origin: APP, authorization: `Bearer ${KEY}` } });
    assert.equal(listed.status, 200);
    assert.equal(listed.headers.get('access-control-allow-origin'), null);
  });
});

describe('CORS with origins listed (keys on)', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ config: { server: { apiKeys: [KEY], cors: { origins: [APP], maxAgeSeconds: 120 } }, models } });
  });
  after(() => server.close());

  test('a preflight for every /v1 route is answered before the key check, allowing Authorization', async () => {
    for (const [method, path] of ROUTES) {
      const answer = await preflight(server.url, path, APP, method);
      assert.equal(answer.status, 204, `${method} ${path}`);
      assert.equal(answer.headers.get('access-control-allow-origin'), APP);
      assert.match(answer.headers.get('access-control-allow-methods') ?? '', new RegExp(method));
      const allowed = (answer.headers.get('access-control-allow-headers') ?? '').toLowerCase().split(/\s*,\s*/);
      assert.ok(allowed.includes('authorization') && allowed.includes('content-type') && allowed.includes('x-stainless-os'), allowed.join());
      assert.equal(answer.headers.get('access-control-max-age'), '120');
      assert.match(answer.headers.get('vary') ?? '', /Origin/);
    }
  });

  test('answers carry the origin and expose the request id and rate-limit headers; errors too', async () => {
    const listed = await http(server.baseURL, '/models', { headers: { origin: APP, authorization: `Bearer ${KEY}` } });
    assert.equal(listed.status, 200);
    assert.equal(listed.headers.get('access-control-allow-origin'), APP);
    const exposed = (listed.headers.get('access-control-expose-headers') ?? '').split(/\s*,\s*/);
    for (const header of ['x-request-id', 'retry-after', 'x-ratelimit-remaining-requests']) assert.ok(exposed.includes(header), exposed.join());
    const refused = await http(server.baseURL, '/models', { headers: { origin: APP } });
    assert.equal(refused.status, 401);
    assert.equal(refused.headers.get('access-control-allow-origin'), APP, 'the page can read why it was refused');
  });

  test('other origins get no grant; the operator routes never do', async () => {
    const stranger = await preflight(server.url, '/v1/chat/completions', 'http://evil.example');
    assert.equal(stranger.headers.get('access-control-allow-origin'), null);
    const strangerGet = await http(server.baseURL, '/models', { headers: { origin: 'http://evil.example', authorization: `Bearer ${KEY}` } });
    assert.equal(strangerGet.headers.get('access-control-allow-origin'), null);
    for (const path of ['/admin/keys', '/metrics']) {
      const answer = await preflight(server.url, path, APP, 'GET');
      assert.equal(answer.status, 404, path);
      assert.equal(answer.headers.get('access-control-allow-origin'), null, path);
      const direct = await http(server.url, path, { headers: { origin: APP } });
      assert.equal(direct.headers.get('access-control-allow-origin'), null, path);
    }
  });
});

describe('CORS in keyless mode', () => {
  test('"*" grants keyed requests only: a keyless server still refuses a foreign page', async () => {
    const server = await startTestServer({ config: { server: { cors: { origins: ['*'] } }, models } });
    try {
      const answer = await http(server.baseURL, '/models', { headers: { origin: 'http://evil.example' } });
      assert.equal(answer.status, 403);
      assert.equal(answer.json.error.code, 'origin_not_allowed');
      assert.match(answer.json.error.message, /server\.cors\.origins/);
      // A local page still works, as before CORS existed.
      assert.equal((await http(server.baseURL, '/models', { headers: { origin: 'http://localhost:3000' } })).status, 200);
    } finally {
      await server.close();
    }
  });

  test('an origin listed exactly may call without a key', async () => {
    const server = await startTestServer({ config: { server: { cors: { origins: [APP] } }, models } });
    try {
      const answer = await http(server.baseURL, '/models', { headers: { origin: APP } });
      assert.equal(answer.status, 200);
      assert.equal(answer.headers.get('access-control-allow-origin'), APP);
      assert.equal((await http(server.baseURL, '/models', { headers: { origin: 'http://app.example:9999' } })).status, 403, 'another port is another origin');
    } finally {
      await server.close();
    }
  });
});

test('server.cors.origins accepts "*" and origins, and refuses anything with a path', () => {
  assert.deepEqual(configSchema.parse({ server: { cors: { origins: ['*', APP, 'https://x.example'] } } }).server.cors.origins, ['*', APP, 'https://x.example']);
  for (const bad of ['http://x.example/app', 'x.example', 'ftp://x.example'])
    assert.throws(() => configSchema.parse({ server: { cors: { origins: [bad] } } }), /origin like/, bad);
});
