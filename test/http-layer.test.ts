// The HTTP layer on its own: auth, routing, error shape, body limits, request ids, /models filters.
// Models here are configured but never loaded, so no engine runs in this file.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import OpenAI from 'openai';
import { http, startTestServer, type TestServer } from './helpers/server.ts';
import { validateAgainstOpenApi } from './helpers/openapi.ts';

const KEY = 'sk-test-http-layer-key';
const models = [
  { id: 'org/chat-a', aliases: ['deepseek-ai/DeepSeek-V3'], type: 'chat', engine: 'llama-cpp', path: '/nonexistent/a.gguf' },
  { id: 'org/embed-b', type: 'embedding', engine: 'llama-cpp', path: '/nonexistent/b.gguf' },
  { id: 'org/rerank-c', type: 'reranker', engine: 'llama-cpp', path: '/nonexistent/c.gguf' },
  { id: 'org/image-d', type: 'text-to-image', engine: 'onnx-diffusion', path: '/nonexistent/d' },
];

describe('HTTP layer', () => {
  let server: TestServer;
  const auth = { authorization: `Bearer ${KEY}` };
  before(async () => {
    server = await startTestServer({ config: { server: { apiKeys: [KEY], bodyLimit: 4096 }, models } });
  });
  after(() => server.close());

  test('401 without a key, and with a wrong key, in both error shapes', async () => {
    for (const headers of [{}, { authorization: 'Bearer sk-wrong-key-123' }] as Record<string, string>[]) {
      const response = await http(server.baseURL, '/models', { headers });
      assert.equal(response.status, 401);
      assert.equal(response.json.error.type, 'authentication_error');
      assert.equal(typeof response.json.error.message, 'string');
      assert.equal(typeof response.json.code, 'number');
      assert.equal(response.json.data, null);
      assert.deepEqual(validateAgainstOpenApi('ErrorResponse', { error: response.json.error }), []);
    }
  });

  test('openai SDK: models.list with a key; AuthenticationError without', async () => {
    const client = new OpenAI({ baseURL: server.baseURL, apiKey: KEY });
    const list = await client.models.list();
    assert.deepEqual(
      list.data.map((m) => m.id),
      // Aliases are listed as models of their own (test/models-list.test.ts).
      models.flatMap((m) => [m.id, ...(m.aliases ?? [])]),
    );
    const bad = new OpenAI({ baseURL: server.baseURL, apiKey: 'sk-nope-nope-nope', maxRetries: 0 });
    await assert.rejects(bad.models.list(), OpenAI.AuthenticationError);
  });

  test('/models: shape, never-null created/owned_by, type and sub_type filters', async () => {
    const all = await http(server.baseURL, '/models', { headers: auth });
    assert.equal(all.status, 200);
    assert.deepEqual(validateAgainstOpenApi('ListModelsResponse', all.json), []);
    for (const model of all.json.data) {
      assert.equal(typeof model.created, 'number');
      assert.equal(typeof model.owned_by, 'string');
    }
    const ids = async (query: string) => (await http(server.baseURL, `/models?${query}`, { headers: auth })).json.data.map((m: { id: string }) => m.id);
    assert.deepEqual(await ids('type=text'), ['org/chat-a', 'deepseek-ai/DeepSeek-V3', 'org/embed-b', 'org/rerank-c']);
    assert.deepEqual(await ids('type=image'), ['org/image-d']);
    assert.deepEqual(await ids('sub_type=reranker'), ['org/rerank-c']);
    assert.deepEqual(await ids('type=text&sub_type=embedding'), ['org/embed-b']);
    assert.deepEqual(await ids('type=audio'), []);
    const bad = await http(server.baseURL, '/models?type=smell', { headers: auth });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.param, 'type');
  });

  test('routes answer without the /v1 prefix too; unknown routes are 404 in the error shape', async () => {
    const bare = await http(server.url, '/models', { headers: auth });
    assert.equal(bare.status, 200);
    assert.equal(bare.json.data.length, 5);
    const missing = await http(server.baseURL, '/nothing-here', { headers: auth });
    assert.equal(missing.status, 404);
    assert.match(missing.json.error.message, /No route/);
    // A multipart upload to an endpoint Infera lacks names the route, not the encoding.
    const form = new FormData();
    form.append('file', new Blob(['RIFF']), 'a.wav');
    form.append('model', 'FunAudioLLM/SenseVoiceSmall');
    const upload = await fetch(`${server.baseURL}/audio/transcriptions`, { method: 'POST', headers: auth, body: form });
    assert.equal(upload.status, 404);
    const body = (await upload.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'unknown_route');
    assert.match(body.error.message, /POST \/v1\/audio\/transcriptions/);
  });

  test('request ids: generated, or the client\'s echoed in both trace headers', async () => {
    const generated = await http(server.baseURL, '/models', { headers: auth });
    assert.match(generated.headers.get('x-request-id') ?? '', /^req_[0-9a-f]{32}$/);
    assert.equal(generated.headers.get('x-siliconcloud-trace-id'), generated.headers.get('x-request-id'));
    const echoed = await http(server.baseURL, '/models', { headers: { ...auth, 'x-request-id': 'trace-123' } });
    assert.equal(echoed.headers.get('x-request-id'), 'trace-123');
    assert.equal(echoed.headers.get('x-siliconcloud-trace-id'), 'trace-123');
  });

  test('bad bodies: invalid JSON → 400, oversized → 413; the server keeps serving', async () => {
    const invalid = await http(server.baseURL, '/chat/completions', { headers: auth, rawBody: '{"model": ' });
    assert.equal(invalid.status, 400);
    assert.equal(invalid.json.error.code, 'invalid_json');
    const huge = await http(server.baseURL, '/chat/completions', {
      headers: auth,
      body: { model: 'org/chat-a', messages: [{ role: 'user', content: 'x'.repeat(10_000) }] },
    });
    assert.equal(huge.status, 413);
    assert.equal(huge.json.error.type, 'invalid_request_error');
    const still = await http(server.baseURL, '/models', { headers: auth });
    assert.equal(still.status, 200);
  });

  test('unknown model → 400 model_not_found with SiliconFlow code 20012, as SiliconFlow answers; wrong endpoint for a model → 400', async () => {
    const unknown = await http(server.baseURL, '/chat/completions', {
      headers: auth,
      body: { model: 'nobody/nothing', messages: [{ role: 'user', content: 'hi' }] },
    });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.json.error.code, 'model_not_found');
    assert.equal(unknown.json.error.param, 'model');
    assert.equal(unknown.json.code, 20012);
    // Every inference endpoint answers the same way (bodies otherwise valid, so the model is the fault).
    for (const [path, body] of [
      ['/completions', { prompt: 'hi' }],
      ['/embeddings', { input: 'hi' }],
      ['/rerank', { query: 'q', documents: ['d'] }],
      ['/images/generations', { prompt: 'a cat' }],
    ] as const) {
      const answer = await http(server.baseURL, path, { headers: auth, body: { model: 'nobody/nothing', ...body } });
      assert.deepEqual([answer.status, answer.json.code, answer.json.error.code, answer.json.error.param], [400, 20012, 'model_not_found', 'model'], `${path}: ${answer.text}`);
    }
    // The openai SDK raises its BadRequestError (not NotFoundError) for it.
    const client = new OpenAI({ baseURL: server.baseURL, apiKey: KEY, maxRetries: 0 });
    for (const call of [
      () => client.chat.completions.create({ model: 'nobody/nothing', messages: [{ role: 'user', content: 'hi' }] }),
      () => client.embeddings.create({ model: 'nobody/nothing', input: 'hi' }),
      () => client.images.generate({ model: 'nobody/nothing', prompt: 'a cat' }),
    ])
      await assert.rejects(call(), (error: unknown) => error instanceof OpenAI.BadRequestError && error.param === 'model' && error.code === 'model_not_found');
    const wrongKind = await http(server.baseURL, '/chat/completions', {
      headers: auth,
      body: { model: 'org/embed-b', messages: [{ role: 'user', content: 'hi' }] },
    });
    assert.equal(wrongKind.status, 400);
    assert.match(wrongKind.json.error.message, /\/v1\/embeddings/);
  });

  // The refusals' bytes as the server sent them before refusals got cheaper (fcd7ba2): the status, every
  // header but the date, and the body; each asked twice (the second answer may come from a remembered
  // refusal). A fresh connection for each (the client asks to close it).
  test('chat refusals answer the same bytes as before, every time: no messages, unknown model, and what the parse refuses first', async () => {
    const cases: [string, Record<string, unknown>, string, string][] = [
    ["no messages", { model: 'org/chat-a', messages: [] }, "400", "{\"code\":20015,\"message\":\"messages: must contain at least one message\",\"data\":null,\"error\":{\"message\":\"messages: must contain at least one message\",\"type\":\"invalid_request_error\",\"param\":\"messages\",\"code\":\"invalid_request\"}}"],
    ["no messages, alias", { model: 'deepseek-ai/DeepSeek-V3', messages: [] }, "400", "{\"code\":20015,\"message\":\"messages: must contain at least one message\",\"data\":null,\"error\":{\"message\":\"messages: must contain at least one message\",\"type\":\"invalid_request_error\",\"param\":\"messages\",\"code\":\"invalid_request\"}}"],
    ["no messages, unknown model", { model: 'nobody/nothing', messages: [] }, "400", "{\"code\":20015,\"message\":\"messages: must contain at least one message\",\"data\":null,\"error\":{\"message\":\"messages: must contain at least one message\",\"type\":\"invalid_request_error\",\"param\":\"messages\",\"code\":\"invalid_request\"}}"],
    ["unknown model", { model: 'nobody/nothing', messages: [{ role: 'user', content: 'hi' }], max_tokens: 16 }, "400", "{\"code\":20012,\"message\":\"The model 'nobody/nothing' does not exist or is not served here. GET /v1/models lists the served ids.\",\"data\":null,\"error\":{\"message\":\"The model 'nobody/nothing' does not exist or is not served here. GET /v1/models lists the served ids.\",\"type\":\"invalid_request_error\",\"param\":\"model\",\"code\":\"model_not_found\"}}"],
    ["unknown model, n past the cap", { model: 'nobody/nothing', messages: [{ role: 'user', content: 'hi' }], n: 1000 }, "400", "{\"code\":20015,\"message\":\"n: must be between 1 and 8 (this server's cap on choices per request).\",\"data\":null,\"error\":{\"message\":\"n: must be between 1 and 8 (this server's cap on choices per request).\",\"type\":\"invalid_request_error\",\"param\":\"n\",\"code\":\"invalid_request\"}}"],
    ["unknown model, bad temperature", { model: 'nobody/nothing', messages: [{ role: 'user', content: 'hi' }], temperature: 9 }, "400", "{\"code\":20015,\"message\":\"temperature: must be between 0 and 2\",\"data\":null,\"error\":{\"message\":\"temperature: must be between 0 and 2\",\"type\":\"invalid_request_error\",\"param\":\"temperature\",\"code\":\"invalid_request\"}}"],
    ["unknown model, unsupported field", { model: 'nobody/nothing', messages: [{ role: 'user', content: 'hi' }], logit_bias: { 1: 1 } }, "400", "{\"code\":20015,\"message\":\"logit_bias: is not supported by this server.\",\"data\":null,\"error\":{\"message\":\"logit_bias: is not supported by this server.\",\"type\":\"invalid_request_error\",\"param\":\"logit_bias\",\"code\":\"invalid_request\"}}"],
    ["model of another type", { model: 'org/embed-b', messages: [{ role: 'user', content: 'hi' }] }, "400", "{\"code\":20015,\"message\":\"Model 'org/embed-b' is a embedding model; send it to /v1/embeddings instead.\",\"data\":null,\"error\":{\"message\":\"Model 'org/embed-b' is a embedding model; send it to /v1/embeddings instead.\",\"type\":\"invalid_request_error\",\"param\":\"model\",\"code\":\"model_type_mismatch\"}}"],
    ];
    for (const [name, body, status, text] of cases) {
      const expected = [status, 'x-request-id: golden-1', 'x-siliconcloud-trace-id: golden-1', 'content-type: application/json; charset=utf-8', `content-length: ${Buffer.byteLength(text)}`, 'Connection: close', '', text].join('\n');
      for (let i = 0; i < 2; i++) assert.equal(await rawChatAnswer(server.baseURL, body, { ...auth, 'x-request-id': 'golden-1' }), expected, `${name}, answer ${i + 1}`);
    }
  });

  test('a model whose file is missing fails with a clear 503 naming the model and when it is tried again, and stays listed as failed', async () => {
    const response = await http(server.baseURL, '/chat/completions', {
      headers: auth,
      body: { model: 'DEEPSEEK-AI/deepseek-v3', messages: [{ role: 'user', content: 'hi' }] },
    });
    assert.equal(response.status, 503);
    assert.equal(response.json.error.code, 'model_load_failed');
    assert.ok(Number(response.headers.get('retry-after')) >= 1);
    assert.match(response.json.error.message, /org\/chat-a/);
    assert.match(response.json.error.message, /file not found/);
    const list = await http(server.baseURL, '/models', { headers: auth });
    const entry = list.json.data.find((m: { id: string }) => m.id === 'org/chat-a');
    assert.equal(entry.infera.state, 'failed');
  });

  test('/user/info answers in SiliconFlow\'s shape', async () => {
    const info = await http(server.baseURL, '/user/info', { headers: auth });
    assert.equal(info.status, 200);
    assert.equal(info.json.code, 20000);
    assert.equal(info.json.status, true);
    assert.equal(typeof info.json.data.totalBalance, 'string');
  });
});

describe('HTTP layer without keys', () => {
  test('serves loopback callers when no key is configured', async () => {
    const server = await startTestServer({ config: { models } });
    try {
      const response = await http(server.baseURL, '/models');
      assert.equal(response.status, 200);
    } finally {
      await server.close();
    }
  });
});

/** A chat POST's raw answer on a fresh connection: the status, every header as sent but the date, a blank line, the body. */
function rawChatAnswer(base: string, body: unknown, headers: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    const sent = request(`${base}/chat/completions`, { method: 'POST', agent: false, headers: { 'content-type': 'application/json', ...headers } }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        const lines = [String(response.statusCode)];
        for (let i = 0; i < response.rawHeaders.length; i += 2)
          if (response.rawHeaders[i]!.toLowerCase() !== 'date') lines.push(`${response.rawHeaders[i]}: ${response.rawHeaders[i + 1]}`);
        resolve(`${lines.join('\n')}\n\n${Buffer.concat(chunks).toString('utf8')}`);
      });
      response.on('error', reject);
    });
    sent.on('error', reject);
    sent.end(JSON.stringify(body));
  });
}
