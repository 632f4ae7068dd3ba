// Malformed and mutated bodies on every POST endpoint: each answer is a 4xx in the error shape (or a
// 200 when the mutation happens to stay valid), never a 5xx, and the server keeps serving.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mulberry32 } from '../src/tiny-models/random.ts';
import { http, startTestServer, type TestServer } from './helpers/server.ts';

let server: TestServer;
before(async () => {
  server = await startTestServer();
});
after(() => server.close());

const valid: Record<string, Record<string, unknown>> = {
  '/chat/completions': { model: 'Qwen/QwQ-32B', messages: [{ role: 'user', content: 'hello' }], max_tokens: 8 },
  '/embeddings': { model: 'BAAI/bge-large-zh-v1.5', input: ['apple pie', 'banana'] },
  '/rerank': { model: 'BAAI/bge-reranker-v2-m3', query: 'Apple', documents: ['apple', 'banana'] },
  '/images/generations': { model: 'Kwai-Kolors/Kolors', prompt: 'a lighthouse', image_size: '64x64', num_inference_steps: 1 },
};

const junkValues: unknown[] = [null, true, -1, 0, 1.5, 1e308, -1e308, '', 'x', '🙂'.repeat(3), [], [null], {}, { a: { b: { c: [] } } }, '9'.repeat(40)];
const junkBodies = ['null', '[]', '"text"', '123', 'true', '{"model": null}', '{"model": 5}', '{"model": "Qwen/QwQ-32B", "messages": "hi"}', '{'];

function assertAnswer(path: string, body: string, response: Awaited<ReturnType<typeof http>>) {
  const where = `${path} ${body.slice(0, 200)} → ${response.status} ${response.text.slice(0, 300)}`;
  assert.ok(response.status < 500, where);
  if (response.status >= 400) {
    assert.equal(typeof response.json?.error?.message, 'string', where);
    assert.ok(response.json.error.message.length > 0, where);
  }
}

test('junk bodies on every endpoint get a 4xx with a message', async () => {
  for (const path of Object.keys(valid))
    for (const body of junkBodies) {
      const response = await http(server.baseURL, path, { rawBody: body });
      assert.ok(response.status >= 400 && response.status < 500, `${path} ${body} → ${response.status} ${response.text}`);
      assertAnswer(path, body, response);
    }
});

test('every top-level field replaced by junk: never a 5xx', async () => {
  for (const [path, body] of Object.entries(valid))
    for (const field of Object.keys(body))
      for (const value of junkValues) {
        const mutated = JSON.stringify({ ...body, [field]: value });
        assertAnswer(path, mutated, await http(server.baseURL, path, { rawBody: mutated }));
      }
});

test('seeded random mutations deep inside valid bodies: never a 5xx; then a valid request still works', async () => {
  const random = mulberry32(20261125);
  const pick = <T>(items: readonly T[]) => items[Math.floor(random() * items.length)]!;
  const mutate = (value: unknown, depth: number): unknown => {
    if (depth > 0 && random() < 0.3) return pick(junkValues);
    if (Array.isArray(value)) return value.map((item) => mutate(item, depth + 1));
    if (value && typeof value === 'object')
      return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, key === 'model' ? item : mutate(item, depth + 1)]));
    return value;
  };
  for (let round = 0; round < 40; round++)
    for (const [path, body] of Object.entries(valid)) {
      const mutated = JSON.stringify(mutate(body, 0));
      assertAnswer(path, mutated, await http(server.baseURL, path, { rawBody: mutated }));
    }
  const ok = await http(server.baseURL, '/chat/completions', { body: valid['/chat/completions'] });
  assert.equal(ok.status, 200);
});
