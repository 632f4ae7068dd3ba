// The reduced fuzz suite (the full one is scripts/fuzz.ts, ≥ 10,000 requests): 500 seeded bad requests
// across every route, schema bombs, deep nesting, wrong types, huge numbers, wrong content types and
// junk included. Rules: every request answered (no crash), each within 30 s (no hang), no answer
// >= 500, every 4xx in OpenAI's error shape; and the server still serves afterwards.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { byStatus, fuzzRequests, runFuzz } from './helpers/fuzz.ts';
import { http, startTestServer, type TestServer } from './helpers/server.ts';

const ADMIN_KEY = 'fuzz-admin-key-0123456789';
let server: TestServer;
before(async () => {
  server = await startTestServer({ config: { server: { adminKey: ADMIN_KEY } } });
});
after(() => server.close());

test('500 seeded bad requests: no crash, no hang, no 5xx, every 4xx in the error shape', async () => {
  const answers = await runFuzz(server.url, fuzzRequests(20261125, 500, { adminKey: ADMIN_KEY }), { concurrency: 4, timeoutMs: 30_000 });
  assert.equal(answers.length, 500);
  const problems = answers.filter((answer) => answer.problem);
  assert.deepEqual(
    problems.map((answer) => `${answer.request.kind} ${answer.request.method} ${answer.request.path} ${answer.request.body?.slice(0, 120) ?? ''} → ${answer.problem}`),
    [],
  );
  const counts = byStatus(answers);
  // The generator really produced bad requests: most answers are refusals.
  assert.ok((counts['400'] ?? 0) > 250, JSON.stringify(counts));
  const ok = await http(server.baseURL, '/chat/completions', { body: { model: 'Qwen/QwQ-32B', messages: [{ role: 'user', content: 'hello' }], max_tokens: 4 } });
  assert.equal(ok.status, 200);
});
