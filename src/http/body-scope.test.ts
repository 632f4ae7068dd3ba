// The cheaper body-parser scope binding (body-scope.ts) keeps what fastify's own code does: the body
// reaches the handler in the request's async context, and the limits and errors stay fastify's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AsyncLocalStorage } from 'node:async_hooks';
import { createRequire } from 'node:module';
import Fastify from 'fastify';
import { installBodyScope } from './body-scope.ts';

test('installed on the pinned fastify release, idempotently', () => {
  const { version } = createRequire(import.meta.url)('fastify/package.json') as { version: string };
  // The patch is tied to one release: a fastify upgrade must decide again (fastify#7012 makes it moot).
  assert.equal(version, '5.6.2');
  assert.equal(installBodyScope(), true);
  assert.equal(installBodyScope(), true);
});

test('the parsed body reaches the handler in the async context the request entered', async () => {
  installBodyScope();
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
