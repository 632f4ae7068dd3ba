// /admin/* on a Fastify app with the project's error rendering and a real SQLite-backed gate.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { configSchema } from '../../config/schema.ts';
import { errorBody, errorHeaders, toInferaError } from '../../errors/render.ts';
import { createGate, type PlatformGate } from '../../platform/index.ts';
import type { Services } from '../../serving/context.ts';
import { describeOnlySchemas } from '../openapi.ts';
import { registerAdminRoutes } from './admin.ts';

const ADMIN = 'admin-secret-123';
const silent = { info() {}, warn() {}, error() {} };
let dir: string;
let gate: PlatformGate;
let app: FastifyInstance;

async function build(adminKey?: string) {
  const config = configSchema.parse({ storage: { dataDir: dir }, server: adminKey ? { adminKey } : {} });
  const instance = Fastify();
  describeOnlySchemas(instance);
  instance.setErrorHandler((error, _request, reply) => {
    const rendered = toInferaError(error);
    return reply.status(rendered.status).headers(errorHeaders(rendered)).send(errorBody(rendered));
  });
  await registerAdminRoutes(instance, { config, gate } as unknown as Services);
  await instance.ready();
  return instance;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'infera-admin-'));
  gate = await createGate(configSchema.parse({ storage: { dataDir: dir } }), silent);
  app = await build(ADMIN);
});
after(async () => {
  await app.close();
  await gate.close();
  rmSync(dir, { recursive: true, force: true });
});

const call = (method: 'GET' | 'POST' | 'DELETE', url: string, body?: unknown, key = ADMIN) =>
  app.inject({ method, url, headers: key ? { authorization: `Bearer ${key}` } : {}, ...(body ? { payload: body as object } : {}) });

test('admin key required: 401 without or with a wrong one, 403 when no admin key is configured', async () => {
  assert.equal((await call('GET', '/admin/keys', undefined, '')).statusCode, 401);
  const wrong = await call('GET', '/admin/keys', undefined, 'not-the-admin');
  assert.equal(wrong.statusCode, 401);
  assert.equal(wrong.json().error.code, 'invalid_admin_key');
  const disabled = await build();
  const response = await disabled.inject({ method: 'GET', url: '/admin/keys', headers: { authorization: `Bearer ${ADMIN}` } });
  assert.equal(response.statusCode, 403);
  await disabled.close();
});

test('create (secret once), list (no secret, no hash), revoke; the gate honours it', async () => {
  const created = await call('POST', '/admin/keys', { name: 'svc', account: 'team', models: ['m1'], limits: { rpm: 5 }, expires_at: '30d' });
  assert.equal(created.statusCode, 201);
  const key = created.json();
  assert.match(key.secret, /^sk-/);
  assert.deepEqual([key.accountId, key.models, key.limits], ['team', ['m1'], { rpm: 5 }]);
  assert.equal((await gate.authenticate(key.secret, '192.0.2.1')).keyId, key.id);

  const list = await call('GET', '/admin/keys?account=team');
  assert.equal(list.json().data.length, 1);
  assert.ok(!list.body.includes(key.secret) && !list.body.includes('"hash"'));

  assert.equal((await call('DELETE', `/admin/keys/${key.id}`)).json().revoked, true);
  await assert.rejects(gate.authenticate(key.secret, '192.0.2.1'), /revoked/);
  assert.equal((await call('DELETE', '/admin/keys/key_nope')).statusCode, 404);

  const bad = await call('POST', '/admin/keys', { name: 'x', limits: { rpn: 1 } });
  assert.equal(bad.statusCode, 400);
  assert.equal(bad.json().error.param, 'limits');
});

test('accounts: create, top up (decimal strings), list; usage aggregation', async () => {
  assert.equal((await call('POST', '/admin/accounts', { id: 'shop', name: 'Shop' })).statusCode, 201);
  const topped = await call('POST', '/admin/accounts/shop/topup', { amount: '12.5' });
  assert.equal(topped.json().balance, '12.50');
  assert.equal((await call('POST', '/admin/accounts/shop/topup', { amount: 'lots' })).json().error.param, 'amount');
  assert.ok((await call('GET', '/admin/accounts')).json().data.some((a: { id: string }) => a.id === 'shop'));

  const principal = { accountId: 'shop', keyId: 'k', keyName: 'k' };
  const admission = await gate.admit({ principal, model: 'm', endpoint: 'chat', requestId: 'adm-1', estimatedTokens: 1, images: 0 });
  await admission.settle({ promptTokens: 3, completionTokens: 4, reasoningTokens: 0, images: 0, documents: 0, status: 200, outcome: 'ok', latencyMs: 9 });
  const usage = (await call('GET', '/admin/usage?by=account&since=1h')).json();
  assert.equal(usage.by, 'account');
  const shop = usage.data.find((row: { group: string }) => row.group === 'shop');
  assert.deepEqual([shop.requests, shop.promptTokens, shop.completionTokens, shop.cost], [1, 3, 4, '0.00']);
  assert.equal((await call('GET', '/admin/usage?by=colour')).statusCode, 400);
  assert.equal((await call('GET', '/admin/usage?since=yesterday')).json().error.param, 'since');
});
