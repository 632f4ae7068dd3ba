// Aliases are the model: allow-lists, rate limits and prices written under one name hold under every
// name of the model, and the ledger records the canonical id next to the requested one. Key input is
// validated (empty allow-list, expires_at out of range) and a bad stored row never breaks a listing.
// Real server, real HTTP, the real CLI on the same SQLite file.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import OpenAI from 'openai';
import { configSchema } from '../src/config/schema.ts';
import { createGate, sqlitePath, type PlatformGate } from '../src/platform/index.ts';
import { http, startTestServer, type TestServer } from './helpers/server.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const CHAT = 'infera/tiny-qwen3-chat';
const EMBED = 'infera/tiny-bert-embedding';
const ADMIN = 'admin-secret-123';
let dir: string;
let server: TestServer;
let gate: PlatformGate;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'infera-aliases-'));
  const raw = {
    storage: { dataDir: dir },
    server: { adminKey: ADMIN },
    // A limit written under one alias of the embedding model.
    platform: { limits: { models: { 'BAAI/bge-m3': { rpm: 2 } } } },
  };
  gate = await createGate(configSchema.parse(raw), { info() {}, warn() {}, error() {} });
  server = await startTestServer({ config: raw, gate });
});
after(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

const admin = (path: string, init: { method?: string; body?: unknown; rawBody?: string } = {}) =>
  http(server.url, path, { ...init, headers: { authorization: `Bearer ${ADMIN}` } });

const ledger = (keyId: string) => {
  const db = new Database(sqlitePath(server.config), { readonly: true });
  try {
    return db.prepare('SELECT model, requested_model, status FROM ledger WHERE key_id = ? ORDER BY id').all(keyId) as {
      model: string;
      requested_model: string;
      status: number;
    }[];
  } finally {
    db.close();
  }
};

const ask = (secret: string, model: string) =>
  http(server.baseURL, '/chat/completions', {
    body: { model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 2, enable_thinking: false },
    headers: { authorization: `Bearer ${secret}` },
  });

test('a key allowed an alias may call the model under any of its names; the ledger keeps both ids', async () => {
  const created = await admin('/admin/keys', { body: { name: 'by-alias', models: ['Qwen/QwQ-32B'] } });
  assert.equal(created.status, 201, created.text);
  const client = new OpenAI({ baseURL: server.baseURL, apiKey: created.json.secret, maxRetries: 0 });
  for (const name of ['Qwen/QwQ-32B', CHAT, 'deepseek-ai/DeepSeek-V3', 'pro/qwen/qwq-32b']) {
    const answer = await client.chat.completions.create({
      model: name,
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 2,
      // @ts-expect-error SiliconFlow's extension
      enable_thinking: false,
    });
    assert.equal(answer.model, name, 'the answer echoes the id the client sent');
  }
  const refused = await http(server.baseURL, '/embeddings', {
    body: { model: 'BAAI/bge-m3', input: 'x' },
    headers: { authorization: `Bearer ${created.json.secret}` },
  });
  assert.equal(refused.status, 403);
  assert.equal(refused.json.error.code, 'model_not_allowed');

  // The reverse: allowed under the canonical id, called by an alias.
  const canonical = await admin('/admin/keys', { body: { name: 'by-id', models: [CHAT] } });
  assert.equal((await ask(canonical.json.secret, 'deepseek-ai/DeepSeek-R1')).status, 200);

  assert.deepEqual(
    ledger(created.json.id).map((row) => [row.model, row.requested_model, row.status]),
    [
      [CHAT, 'Qwen/QwQ-32B', 200],
      [CHAT, CHAT, 200],
      [CHAT, 'deepseek-ai/DeepSeek-V3', 200],
      [CHAT, 'pro/qwen/qwq-32b', 200],
      [EMBED, 'BAAI/bge-m3', 403],
    ],
  );
});

test("docs/PLATFORM.md's example key (`infera keys create --models Qwen/QwQ-32B,BAAI/bge-m3 …`) admits those aliases and nothing else", async () => {
  const cli = spawnSync(
    process.execPath,
    ['bin/infera.js', 'keys', 'create', '--name', 'alice', '--account', 'team-a', '--models', 'Qwen/QwQ-32B,BAAI/bge-m3', '--limits', 'rpm=60,tpm=100000', '--expires', '90d', '--json'],
    { cwd: root, env: { ...process.env, INFERA_DATA_DIR: dir, INFERA_CONFIG: '', INFERA_DATABASE_URL: '' }, encoding: 'utf8' },
  );
  assert.equal(cli.status, 0, cli.stderr);
  const { secret } = JSON.parse(cli.stdout) as { secret: string };
  const headers = { authorization: `Bearer ${secret}` };
  const embedded = await http(server.baseURL, '/embeddings', { body: { model: 'BAAI/bge-m3', input: 'x' }, headers });
  assert.equal(embedded.status, 200, embedded.text);
  assert.equal((await ask(secret, 'Qwen/QwQ-32B')).status, 200);
  const completed = await http(server.baseURL, '/completions', { body: { model: 'Qwen/QwQ-32B', prompt: 'hi', max_tokens: 2 }, headers });
  assert.equal(completed.status, 200, completed.text);
  const reranked = await http(server.baseURL, '/rerank', { body: { model: 'BAAI/bge-reranker-v2-m3', query: 'q', documents: ['d'] }, headers });
  assert.equal(reranked.status, 403);
  assert.equal(reranked.json.error.code, 'model_not_allowed');
  const coder = await http(server.baseURL, '/completions', { body: { model: 'Qwen/Qwen2.5-Coder-32B-Instruct', prompt: 'hi' }, headers });
  assert.equal(coder.status, 403, 'the coder model is another model, not an alias of an allowed one');
});

test('a rate limit written under one alias holds under every name (one counter, canonical id)', async () => {
  const { json } = await admin('/admin/keys', { body: { name: 'limited', account: 'limited' } });
  const embed = (model: string) =>
    http(server.baseURL, '/embeddings', { body: { model, input: 'x' }, headers: { authorization: `Bearer ${json.secret}` } });
  assert.equal((await embed(EMBED)).status, 200);
  assert.equal((await embed('BAAI/bge-large-zh-v1.5')).status, 200);
  const third = await embed('BAAI/bge-m3');
  assert.equal(third.status, 429, third.text);
  assert.match(third.json.message, new RegExp(`^RPM limit reached: model "${EMBED}"`));
  assert.equal((await embed(EMBED)).status, 429);
});

test('an empty allow-list is refused at creation (400 naming models), by the admin API and the CLI', async () => {
  const refused = await admin('/admin/keys', { body: { name: 'nothing', models: [] } });
  assert.equal(refused.status, 400);
  assert.equal(refused.json.error.param, 'models');
  assert.match(refused.json.error.message, /names no model/);
  const blank = await admin('/admin/keys', { body: { name: 'blank', models: [' '] } });
  assert.equal(blank.status, 400, 'a list of blanks is empty too');
  const cli = spawnSync(process.execPath, ['bin/infera.js', 'keys', 'create', '--name', 'x', '--models', ','], {
    cwd: root,
    env: { ...process.env, INFERA_DATA_DIR: dir, INFERA_CONFIG: '', INFERA_DATABASE_URL: '' },
    encoding: 'utf8',
  });
  assert.equal(cli.status, 1);
  assert.match(cli.stderr, /^error: models: the allow-list names no model/);
});

test('expires_at is validated (400 naming it); a bad stored row renders as invalid and authenticates nobody', async () => {
  for (const [rawBody, pattern] of [
    ['{"name":"k","expires_at":1e308}', /out of range/],
    ['{"name":"k","expires_at":1e400}', /is not a time|Invalid input/],
    ['{"name":"k","expires_at":-5}', /must lie in the future/],
    ['{"name":"k","expires_at":"2001-01-01"}', /must lie in the future/],
    ['{"name":"k","expires_at":"+275760-09-13T00:00:00.001Z"}', /neither a date|out of range/],
  ] as const) {
    const answer = await admin('/admin/keys', { rawBody });
    assert.equal(answer.status, 400, `${rawBody}: ${answer.text}`);
    assert.equal(answer.json.error.param, 'expires_at', rawBody);
    assert.match(answer.json.error.message, pattern, rawBody);
  }
  const good = await admin('/admin/keys', { body: { name: 'soon-broken', expires_at: '30d' } });
  assert.equal(good.status, 201);
  assert.equal((await ask(good.json.secret, CHAT)).status, 200);

  // A row no current version writes (by hand, or by an older version that let 1e308 through).
  const db = new Database(sqlitePath(server.config));
  db.prepare('UPDATE api_keys SET expires_at = 1e308 WHERE id = ?').run(good.json.id);
  db.close();
  gate.invalidate();

  const listed = await admin('/admin/keys');
  assert.equal(listed.status, 200, listed.text);
  const row = listed.json.data.find((key: { id: string }) => key.id === good.json.id);
  assert.equal(row.expiresAt, 'invalid');
  assert.match(row.invalid[0], /^expires_at: 1e\+308 is not a date/);
  const refused = await ask(good.json.secret, CHAT);
  assert.equal(refused.status, 401);
  assert.match(refused.json.error.message, /invalid stored record/);

  const cli = spawnSync(process.execPath, ['bin/infera.js', 'keys', 'list'], {
    cwd: root,
    env: { ...process.env, INFERA_DATA_DIR: dir, INFERA_CONFIG: '', INFERA_DATABASE_URL: '' },
    encoding: 'utf8',
  });
  assert.equal(cli.status, 0, cli.stderr);
  assert.match(cli.stdout, new RegExp(`${good.json.id}\\s+soon-broken\\s+\\S+\\s+\\S+\\s+invalid\\s`));
});
