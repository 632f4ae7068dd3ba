// Fastify's body parser and the request's async context. Up to 5.6 it bound its completion callback
// with `AsyncResource#bind`, which on Node 20 wraps a deprecated getter per call: a JSON POST cost
// ~50 µs more server CPU than a GET (bare node:http POST 27 µs, with the bind 80 µs; measured with
// bench/http-overhead.ts). fastify#7012 (5.7+) calls runInAsyncScope instead; these tests hold what
// the server relies on: the body reaches the handler in the request's async context (AsyncLocalStorage,
// OpenTelemetry), and the limits and errors stay fastify's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AsyncLocalStorage } from 'node:async_hooks';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import Fastify from 'fastify';

test('the installed fastify parses bodies without a per-request AsyncResource#bind (fastify#7012)', () => {
  const parser = readFileSync(createRequire(import.meta.url).resolve('fastify/lib/content-type-parser.js'), 'utf8');
  assert.match(parser, /runInAsyncScope\(onDone/);
  assert.doesNotMatch(parser, /resource\.bind\(/);
});

test('the parsed body reaches the handler in the async context the request entered', async () => {
  const context = new AsyncLocalStorage<string>();
  const app = Fastify({ bodyLimit: 64 });
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    try {
      done(null, JSON.parse(body as string));
    } catch (error) {
      done(Object.assign(error as Error, { statusCode: 400 }), undefined);
    }
  });
  app.addHook('onRequest', (request, _reply, done) => context.run(request.id, done));
  app.post('/echo', async (request) => ({ body: request.body, scope: context.getStore(), id: request.id }));
  try {
    const ok = await app.inject({ method: 'POST', url: '/echo', headers: { 'content-type': 'application/json' }, payload: '{"a":[1,2]}' });
    assert.equal(ok.statusCode, 200);
    const answer = ok.json() as { body: unknown; scope: string; id: string };
    assert.deepEqual(answer.body, { a: [1, 2] });
    assert.equal(answer.scope, answer.id);

    const large = await app.inject({ method: 'POST', url: '/echo', headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ a: 'x'.repeat(100) }) });
    assert.equal(large.statusCode, 413);
    assert.equal(large.headers.connection, 'close');

    const broken = await app.inject({ method: 'POST', url: '/echo', headers: { 'content-type': 'application/json' }, payload: '{"a":' });
    assert.equal(broken.statusCode, 400);
    assert.equal(broken.headers.connection, 'close');

    const untyped = await app.inject({ method: 'POST', url: '/echo', headers: { 'content-type': 'text/plain' }, payload: 'hi' });
    assert.equal(untyped.statusCode, 415);
  } finally {
    await app.close();
  }
});
