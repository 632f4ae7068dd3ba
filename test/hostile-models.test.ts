// Hostile GGUF files next to a good model, through the real server: each bad file is refused by the
// header check before llama.cpp reads it (one of them, a weight typed I32, aborts the whole process
// inside llama.cpp when it is not: this test process would die), the good model keeps answering, and a
// failed model stays failed, shown in /v1/models, until its file changes.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { ensureTinyModels } from '../src/tiny-models/index.ts';
import { http, SHARED_DATA_DIR, startTestServer, type TestServer } from './helpers/server.ts';

let server: TestServer;
let goodBytes: Buffer;
const dir = mkdtempSync(join(tmpdir(), 'infera-hostile-'));
const path = (name: string) => join(dir, `${name}.gguf`);

function corrupt(bytes: Buffer, edit: (copy: Buffer) => void): Buffer {
  const copy = Buffer.from(bytes);
  edit(copy);
  return copy;
}

function typeFieldOf(bytes: Buffer, tensor: string): number {
  const at = bytes.indexOf(Buffer.from(tensor, 'latin1'));
  return at + tensor.length + 4 + 8 * bytes.readUInt32LE(at + tensor.length);
}

before(async () => {
  const paths = await ensureTinyModels(join(SHARED_DATA_DIR, 'tiny-models'));
  goodBytes = readFileSync(paths.chat);
  writeFileSync(path('huge-tensor-count'), corrupt(goodBytes, (b) => b.writeBigUInt64LE(1n << 40n, 8)));
  writeFileSync(path('i32-weight'), corrupt(goodBytes, (b) => b.writeUInt32LE(26, typeFieldOf(b, 'token_embd.weight'))));
  writeFileSync(path('truncated'), goodBytes.subarray(0, goodBytes.length - 4096));
  const chat = (id: string, file: string) => ({ id, type: 'chat', engine: 'llama-cpp', path: file, llamaCpp: { contextSize: 512, sequences: 1, threads: 1 } });
  server = await startTestServer({
    config: {
      models: [
        chat('good/chat', paths.chat),
        chat('evil/huge-tensor-count', path('huge-tensor-count')),
        chat('evil/i32-weight', path('i32-weight')),
        chat('evil/truncated', path('truncated')),
      ],
    },
  });
});
after(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

const ask = (model: string) => http(server.baseURL, '/chat/completions', { body: { model, messages: [{ role: 'user', content: 'hello' }], max_tokens: 4 } });

test('each hostile file is refused quickly, naming the problem; the good model keeps answering', async () => {
  const client = new OpenAI({ baseURL: server.baseURL, apiKey: 'unused', maxRetries: 0 });
  for (const [model, problem] of [
    ['evil/huge-tensor-count', /declares 1099511627776 tensors/],
    ['evil/i32-weight', /token_embd\.weight has ggml type 26 \(I32\)/],
    ['evil/truncated', /truncated/],
  ] as const) {
    const started = performance.now();
    const answer = await ask(model);
    const ms = performance.now() - started;
    assert.equal(answer.status, 503, answer.text);
    assert.equal(answer.json.error.code, 'model_load_failed');
    assert.match(answer.json.error.message, new RegExp(`Model '${model}' failed to load: .*not a GGUF file llama.cpp can load safely`));
    assert.match(answer.json.error.message, problem);
    assert.ok(ms < 1000, `${model}: refused after ${ms.toFixed(0)} ms`);
    const good = await client.chat.completions.create({ model: 'good/chat', messages: [{ role: 'user', content: 'hello' }], max_tokens: 4 });
    assert.equal(good.choices.length, 1);
  }
});

test('a failed model stays failed (shown in /v1/models) until its file changes, then loads', async () => {
  const first = await ask('evil/truncated');
  assert.equal(first.status, 503);
  // Not loaded again: the answer says why and when it will be.
  assert.match(first.json.error.message, /not retried until its file changes or \d{4}-/);
  const listed = await http(server.baseURL, '/models');
  const entry = listed.json.data.find((model: { id: string }) => model.id === 'evil/truncated');
  assert.equal(entry.infera.state, 'failed');
  assert.match(entry.infera.error, /truncated/);
  assert.ok(entry.infera.retry_at > Date.now() / 1000, JSON.stringify(entry.infera));
  // The operator replaces the file: the next request loads it without waiting for the backoff.
  writeFileSync(path('truncated'), goodBytes);
  const fixed = await ask('evil/truncated');
  assert.equal(fixed.status, 200, fixed.text);
  const after = (await http(server.baseURL, '/models')).json.data.find((model: { id: string }) => model.id === 'evil/truncated');
  assert.equal(after.infera.state, 'ready');
  assert.equal(after.infera.retry_at, undefined);
});
