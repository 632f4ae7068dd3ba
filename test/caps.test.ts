// The work caps (config `requests:`) through the real server: each over-cap request is a 400 naming the
// field and the cap, answered quickly (no tokenizing or compiling of what is refused), and the schema
// errors that used to be 500s or silently ignored are 400s. Lowered caps show the keys are read.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { http, startTestServer, type TestServer } from './helpers/server.ts';

const CHAT = 'Qwen/QwQ-32B';
const EMBED = 'BAAI/bge-large-zh-v1.5';
const RERANK = 'BAAI/bge-reranker-v2-m3';
const IMAGE = 'Kwai-Kolors/Kolors';
const hi = [{ role: 'user', content: 'hi' }];

async function expect400(server: TestServer, path: string, body: unknown, param: string, pattern: RegExp, withinMs = 2000) {
  const started = performance.now();
  const answer = await http(server.baseURL, path, { body });
  const ms = performance.now() - started;
  assert.equal(answer.status, 400, `${path} ${param}: ${answer.status} ${answer.text.slice(0, 300)}`);
  assert.equal(answer.json.error.type, 'invalid_request_error');
  assert.equal(answer.json.error.param, param, answer.text.slice(0, 300));
  assert.match(answer.json.error.message, pattern);
  assert.ok(ms < withinMs, `${path} ${param}: answered after ${ms.toFixed(0)} ms`);
}

const schemaFormat = (schema: unknown) => ({ type: 'json_schema', json_schema: { name: 'x', schema } });
const tool = (parameters: unknown) => ({ type: 'function', function: { name: 'f', parameters } });

describe('default caps', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
    // Load the chat model first, so that the timings below are the refusals' own.
    assert.equal((await http(server.baseURL, '/chat/completions', { body: { model: CHAT, messages: hi, max_tokens: 1 } })).status, 200);
  });
  after(() => server.close());

  test('schema errors are 400s: $ref cycles (tools and response_format alike), unresolvable $ref, deep nesting', async () => {
    const cycle = { type: 'object', properties: { a: { $ref: '#/$defs/A' } }, $defs: { A: { $ref: '#/$defs/B' }, B: { $ref: '#/$defs/A' } } };
    await expect400(server, '/chat/completions', { model: CHAT, messages: hi, tools: [tool(cycle)] }, 'tools[0].function.parameters', /recursive/);
    await expect400(server, '/chat/completions', { model: CHAT, messages: hi, tools: [tool(cycle)], tool_choice: 'required' }, 'tools[0].function.parameters', /recursive/);
    await expect400(server, '/chat/completions', { model: CHAT, messages: hi, response_format: schemaFormat(cycle) }, 'response_format.json_schema', /recursive/);
    const tree = { type: 'object', properties: { kids: { type: 'array', items: { $ref: '#' } } } };
    await expect400(server, '/chat/completions', { model: CHAT, messages: hi, response_format: schemaFormat(tree) }, 'response_format.json_schema', /recursive/);
    const dangling = { type: 'object', properties: { a: { $ref: '#/$defs/Nope' } } };
    await expect400(server, '/chat/completions', { model: CHAT, messages: hi, response_format: schemaFormat(dangling) }, 'response_format.json_schema.schema', /"#\/\$defs\/Nope" at #\/properties\/a\/\$ref does not resolve/);
    await expect400(server, '/chat/completions', { model: CHAT, messages: hi, tools: [tool(dangling)] }, 'tools[0].function.parameters', /does not resolve/);
    let deep = '{"type":"string"}';
    for (let i = 0; i < 5000; i++) deep = `{"type":"object","properties":{"a":${deep}}}`;
    for (const [field, param] of [
      [`"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":${deep}}}`, 'response_format.json_schema.schema'],
      [`"tools":[{"type":"function","function":{"name":"f","parameters":${deep}}}]`, 'tools[0].function.parameters'],
    ]) {
      const answer = await http(server.baseURL, '/chat/completions', { rawBody: `{"model":"${CHAT}","messages":[{"role":"user","content":"hi"}],${field}}` });
      assert.equal(answer.status, 400, answer.text.slice(0, 200));
      assert.equal(answer.json.error.param, param);
      assert.match(answer.json.error.message, /nests deeper than 32 levels/);
    }
  });

  test('a 100,000-value enum is refused before compiling, and /health does not wait', async () => {
    const values = Array.from({ length: 100_000 }, (_, i) => `value-${i}`);
    const health = (async () => {
      await new Promise((resolve) => setTimeout(resolve, 20));
      const started = performance.now();
      await http(server.url, '/health');
      return performance.now() - started;
    })();
    await expect400(server, '/chat/completions', { model: CHAT, messages: hi, response_format: schemaFormat({ type: 'object', properties: { v: { enum: values } } }) },
      'response_format.json_schema.schema', /enum at #\/properties\/v\/enum has 100000 values; this server takes at most 1000/);
    assert.ok((await health) < 1000);
    // A large schema within the caps still compiles and answers.
    const allowed = { type: 'object', properties: { v: { enum: values.slice(0, 1000) } } };
    const ok = await http(server.baseURL, '/chat/completions', { body: { model: CHAT, messages: hi, max_tokens: 4, response_format: schemaFormat(allowed) } });
    assert.equal(ok.status, 200, ok.text.slice(0, 300));
  });

  test('a 7 MB message is refused on its character count, without being tokenized', async () => {
    await expect400(server, '/chat/completions', { model: CHAT, messages: [{ role: 'user', content: 'word '.repeat(1_400_000) }] }, 'messages', /maximum context length is 2048 tokens.*700000\d characters/, 1500);
  });

  test('n, image prompt, image pixel-steps', async () => {
    await expect400(server, '/chat/completions', { model: CHAT, messages: hi, n: 9 }, 'n', /between 1 and 8/);
    await expect400(server, '/images/generations', { model: IMAGE, prompt: 'a '.repeat(150_000), image_size: '64x64' }, 'prompt', /300000 characters; this server takes at most 8192/);
    await expect400(server, '/images/generations', { model: IMAGE, prompt: 'x', image_size: '1024x1024', batch_size: 4, num_inference_steps: 100 }, 'num_inference_steps', /4 image\(s\) × 1024×1024 pixels × 100 steps = 419430400 pixel-steps.*at most 209715200/);
  });

  test('a 100 KB rerank beyond the token cap is a 400 before any pair is scored', async () => {
    // A long query multiplies: every chunk of every document is scored together with it.
    const query = 'apple banana cherry '.repeat(20);
    const documents = Array.from({ length: 1000 }, (_, i) => `document ${i} `.repeat(8));
    assert.ok(JSON.stringify(documents).length > 100_000);
    // Counting tokens needs the model's tokenizer: load it first, so the time below is the refusal's alone.
    (await server.server.services.registry.acquire(RERANK, 'reranker')).release();
    await expect400(server, '/rerank', { model: RERANK, query, documents }, 'documents', /would evaluate more than 500000 tokens/);
  });
});

describe('caps lowered in the config', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({
      config: {
        requests: {
          maxChoices: 2,
          maxEmbeddingInputs: 3,
          maxEmbeddingTokens: 100,
          maxRerankDocuments: 4,
          maxRerankPairs: 3,
          maxRerankTokens: 400,
          jsonSchema: { maxNodes: 50, maxDepth: 6, maxEnumValues: 3, maxBytes: 4096 },
        },
      },
    });
    // Caps that count tokens need the models' tokenizers: loaded here, so each refusal below is timed alone.
    const { registry } = server.server.services;
    (await registry.acquire(EMBED, 'embedding')).release();
    (await registry.acquire(RERANK, 'reranker')).release();
  });
  after(() => server.close());

  test('chat: n and schema caps follow the config (openai SDK sees a BadRequestError naming the field)', async () => {
    const client = new OpenAI({ baseURL: server.baseURL, apiKey: 'unused', maxRetries: 0 });
    await assert.rejects(
      client.chat.completions.create({ model: CHAT, messages: [{ role: 'user', content: 'hi' }], n: 3 }),
      (error: InstanceType<typeof OpenAI.BadRequestError>) => error.status === 400 && error.param === 'n' && /between 1 and 2/.test(error.message),
    );
    await expect400(server, '/chat/completions', { model: CHAT, messages: hi, response_format: schemaFormat({ enum: ['a', 'b', 'c', 'd'] }) }, 'response_format.json_schema.schema', /at most 3 per enum/);
    const wide = { type: 'object', properties: Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`p${i}`, { type: 'string' }])) };
    await expect400(server, '/chat/completions', { model: CHAT, messages: hi, tools: [tool(wide)] }, 'tools[0].function.parameters', /more than 50 values/);
  });

  test('embeddings: input count and total tokens (exact for token arrays, after tokenizing for text)', async () => {
    await expect400(server, '/embeddings', { model: EMBED, input: ['a', 'b', 'c', 'd'] }, 'input', /at most 3 items/);
    await expect400(server, '/embeddings', { model: EMBED, input: [Array(60).fill(5), Array(60).fill(6)] }, 'input', /at least 120 tokens.*at most 100/);
    await expect400(server, '/embeddings', { model: EMBED, input: ['apple '.repeat(60), 'pear '.repeat(60)] }, 'input', /\d+ tokens in one request.*at most 100/);
    const ok = await http(server.baseURL, '/embeddings', { body: { model: EMBED, input: ['apple pie', 'pear'] } });
    assert.equal(ok.status, 200, ok.text.slice(0, 200));
  });

  test('rerank: documents, pairs (documents × chunks) and evaluated tokens', async () => {
    await expect400(server, '/rerank', { model: RERANK, query: 'q', documents: ['a', 'b', 'c', 'd', 'e'] }, 'documents', /at most 4 items/);
    await expect400(server, '/rerank', { model: RERANK, query: 'q', documents: ['a', 'b', 'c', 'd'] }, 'documents', /more than 3 query-document pairs/);
    await expect400(server, '/rerank', { model: RERANK, query: 'apple', documents: ['apple banana '.repeat(400)] }, 'documents', /more than 3 query-document pairs|more than 400 tokens/);
    const ok = await http(server.baseURL, '/rerank', { body: { model: RERANK, query: 'apple', documents: ['apple', 'banana'] } });
    assert.equal(ok.status, 200, ok.text.slice(0, 200));
  });
});

describe('grammar compile time (requests.jsonSchema.maxCompileMs)', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ config: { requests: { jsonSchema: { maxCompileMs: 1 } } } });
  });
  after(() => server.close());

  test('a schema within the size caps whose grammar takes longer is a 400 naming response_format.json_schema and the cap', async () => {
    // 4 × 1,000 enum values: inside every default size cap, ~0.2 s to compile on this box.
    const schema = {
      type: 'object',
      properties: Object.fromEntries(Array.from({ length: 4 }, (_, p) => [`p${p}`, { enum: Array.from({ length: 1000 }, (_, i) => `value-${p}-${i}`) }])),
    };
    await expect400(server, '/chat/completions', { model: CHAT, messages: hi, max_tokens: 1, response_format: schemaFormat(schema) }, 'response_format.json_schema', /more than requests\.jsonSchema\.maxCompileMs \(1 ms\)/, 30_000);
    const small = await http(server.baseURL, '/chat/completions', { body: { model: CHAT, messages: hi, max_tokens: 1, response_format: { type: 'json_object' } } });
    assert.equal(small.status, 200, small.text);
  });
});
