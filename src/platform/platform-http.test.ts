// The newcomer path end to end on SQLite: `infera keys create` (the real CLI), the official openai SDK
// against the real server, a 429 naming the limit, and the requests in `infera usage`.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { configSchema } from '../config/schema.ts';
import { http, startTestServer, type TestServer } from '../../test/helpers/server.ts';
import { createGate } from './index.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
let dir: string;
let server: TestServer;

const infera = (...args: string[]) => {
  const result = spawnSync(process.execPath, ['bin/infera.js', ...args], {
    cwd: root,
    env: { ...process.env, INFERA_DATA_DIR: dir, INFERA_CONFIG: '', INFERA_DATABASE_URL: '', INFERA_API_KEY: '' },
    encoding: 'utf8',
  });
  assert.equal(result.status, 0, result.stderr);
  return result.stdout;
};

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'infera-platform-http-'));
  const raw = { storage: { dataDir: dir } };
  const gate = await createGate(configSchema.parse(raw), { info() {}, warn() {}, error() {} });
  server = await startTestServer({ config: raw, gate });
  // Loaded before the test: the RPM window is one minute, and three requests spread over a model load
  // (seconds, in an engine process) could straddle its boundary and all be admitted.
  (await server.server.services.registry.acquire('BAAI/bge-m3', 'embedding')).release();
});
after(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('CLI key → openai SDK → 429 naming RPM with Retry-After → /user/info → infera usage', async () => {
  const created = JSON.parse(infera('keys', 'create', '--name', 'newcomer', '--limits', 'rpm=2,tpm=100000', '--json'));
  const client = new OpenAI({ baseURL: server.baseURL, apiKey: created.secret, maxRetries: 0 });

  const first = await client.embeddings.create({ model: 'BAAI/bge-m3', input: 'hello world' }).withResponse();
  assert.equal(first.data.data.length, 1);
  assert.equal(first.response.headers.get('x-ratelimit-limit-requests'), '2');
  assert.equal(first.response.headers.get('x-ratelimit-remaining-requests'), '1');
  assert.equal(first.response.headers.get('x-ratelimit-limit-tokens'), '100000');
  // OpenAI's format: a fresh one-minute window can read "1m0s" when the request lands on its first millisecond.
  assert.match(first.response.headers.get('x-ratelimit-reset-requests') ?? '', /^(?:[1-9]\d*s|1m0s)$/);
  await client.embeddings.create({ model: 'BAAI/bge-m3', input: ['a', 'b'] });

  await assert.rejects(client.embeddings.create({ model: 'BAAI/bge-m3', input: 'third' }), (error: unknown) => {
    assert.ok(error instanceof OpenAI.RateLimitError, String(error));
    assert.equal(error.status, 429);
    assert.match(error.message, /RPM limit reached: API key "newcomer"/);
    assert.ok(Number(error.headers?.get('retry-after')) >= 1);
    assert.equal(error.headers?.get('x-ratelimit-remaining-requests'), '0');
    return true;
  });

  await assert.rejects(
    new OpenAI({ baseURL: server.baseURL, apiKey: 'sk-not-a-key', maxRetries: 0 }).models.list(),
    OpenAI.AuthenticationError,
  );
  const info = await http(server.baseURL, '/user/info', { headers: { authorization: `Bearer ${created.secret}` } });
  assert.equal(info.json.code, 20000);
  assert.equal(info.json.data.totalBalance, '0.00');

  const usage = infera('usage', '--by', 'key', '--since', '1h');
  // key, 3 requests, 1 error (the 429), 0 cancelled
  assert.match(usage, new RegExp(`${created.id} \\(newcomer\\)\\s+3\\s+1\\s+0\\s`), usage);
});
