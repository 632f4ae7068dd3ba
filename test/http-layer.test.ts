// The HTTP layer on its own: auth, routing, error shape, body limits, request ids, /models filters.
// Models here are configured but never loaded, so no engine runs in this file.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Agent, request } from 'node:http';
import OpenAI from 'openai';
import { rawChatAnswer } from './helpers/raw-answer.ts';
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

  // The small GET answers (the list, a wrong or missing key, an unknown route) as the server sent them
  // before quick.ts answered them in front of Fastify (ecc9cc3): status, every header but the date, and
  // the body (the list's `created` and generated ids masked); each asked twice: a key the gate has not
  // seen is looked up in the store (through Fastify) the first time and known at once the second. The
  // cases quick.ts leaves to Fastify (a query, HEAD, a body, a '%' in the path, another method) too.
  test('the models list, 401s and 404s answer the same bytes as before, every time', async () => {
    const wrong = { authorization: 'Bearer sk-wrong-golden-key' };
    const LIST = "{\"object\":\"list\",\"data\":[{\"id\":\"org/chat-a\",\"object\":\"model\",\"created\":0,\"owned_by\":\"infera\",\"type\":\"text\",\"sub_type\":\"chat\",\"infera\":{\"engine\":\"llama-cpp\",\"state\":\"unloaded\",\"aliases\":[\"deepseek-ai/DeepSeek-V3\"]}},{\"id\":\"deepseek-ai/DeepSeek-V3\",\"object\":\"model\",\"created\":0,\"owned_by\":\"infera\",\"type\":\"text\",\"sub_type\":\"chat\",\"infera\":{\"engine\":\"llama-cpp\",\"state\":\"unloaded\",\"alias_of\":\"org/chat-a\"}},{\"id\":\"org/embed-b\",\"object\":\"model\",\"created\":0,\"owned_by\":\"infera\",\"type\":\"text\",\"sub_type\":\"embedding\",\"infera\":{\"engine\":\"llama-cpp\",\"state\":\"unloaded\",\"aliases\":[]}},{\"id\":\"org/rerank-c\",\"object\":\"model\",\"created\":0,\"owned_by\":\"infera\",\"type\":\"text\",\"sub_type\":\"reranker\",\"infera\":{\"engine\":\"llama-cpp\",\"state\":\"unloaded\",\"aliases\":[]}},{\"id\":\"org/image-d\",\"object\":\"model\",\"created\":0,\"owned_by\":\"infera\",\"type\":\"image\",\"sub_type\":\"text-to-image\",\"infera\":{\"engine\":\"onnx-diffusion\",\"state\":\"unloaded\",\"aliases\":[]}}]}";
    const cases: [string, string, string, Record<string, string>, boolean, string | undefined, string[], string][] = [
    ['models', 'GET', '/v1/models', auth, false, undefined, ["200", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "content-type: application/json; charset=utf-8", "content-length: 973", "Connection: close"], LIST],
    ['models, keep-alive', 'GET', '/v1/models', auth, true, undefined, ["200", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "content-type: application/json; charset=utf-8", "content-length: 973", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], LIST],
    ['models, bare path', 'GET', '/models', auth, true, undefined, ["200", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "content-type: application/json; charset=utf-8", "content-length: 973", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], LIST],
    ['models, trailing slash', 'GET', '/v1/models/', auth, true, undefined, ["200", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "content-type: application/json; charset=utf-8", "content-length: 973", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], LIST],
    ['models, doubled slashes', 'GET', '//v1//models', auth, true, undefined, ["200", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "content-type: application/json; charset=utf-8", "content-length: 973", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], LIST],
    ['models, query', 'GET', '/v1/models?type=text', auth, true, undefined, ["200", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "content-type: application/json; charset=utf-8", "content-length: 783", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"object\":\"list\",\"data\":[{\"id\":\"org/chat-a\",\"object\":\"model\",\"created\":0,\"owned_by\":\"infera\",\"type\":\"text\",\"sub_type\":\"chat\",\"infera\":{\"engine\":\"llama-cpp\",\"state\":\"unloaded\",\"aliases\":[\"deepseek-ai/DeepSeek-V3\"]}},{\"id\":\"deepseek-ai/DeepSeek-V3\",\"object\":\"model\",\"created\":0,\"owned_by\":\"infera\",\"type\":\"text\",\"sub_type\":\"chat\",\"infera\":{\"engine\":\"llama-cpp\",\"state\":\"unloaded\",\"alias_of\":\"org/chat-a\"}},{\"id\":\"org/embed-b\",\"object\":\"model\",\"created\":0,\"owned_by\":\"infera\",\"type\":\"text\",\"sub_type\":\"embedding\",\"infera\":{\"engine\":\"llama-cpp\",\"state\":\"unloaded\",\"aliases\":[]}},{\"id\":\"org/rerank-c\",\"object\":\"model\",\"created\":0,\"owned_by\":\"infera\",\"type\":\"text\",\"sub_type\":\"reranker\",\"infera\":{\"engine\":\"llama-cpp\",\"state\":\"unloaded\",\"aliases\":[]}}]}"],
    ['models, HEAD', 'HEAD', '/v1/models', auth, true, undefined, ["200", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "content-type: application/json; charset=utf-8", "content-length: 973", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], ""],
    ['models, key with extra spaces', 'GET', '/v1/models', { authorization: `  Bearer   ${KEY} ` }, true, undefined, ["200", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "content-type: application/json; charset=utf-8", "content-length: 973", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], LIST],
    ['models, lower-case bearer', 'GET', '/v1/models', { authorization: `bearer ${KEY}` }, true, undefined, ["200", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "content-type: application/json; charset=utf-8", "content-length: 973", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], LIST],
    ['models, generated id', 'GET', '/v1/models', { ...auth, 'x-request-id': 'not an id!' }, true, undefined, ["200", "x-request-id: req_ID", "x-siliconcloud-trace-id: req_ID", "content-type: application/json; charset=utf-8", "content-length: 973", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], LIST],
    ['wrong key', 'GET', '/v1/models', wrong, false, undefined, ["401", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "www-authenticate: Bearer", "content-type: application/json; charset=utf-8", "content-length: 162", "Connection: close"], "{\"code\":20001,\"message\":\"Invalid API key.\",\"data\":null,\"error\":{\"message\":\"Invalid API key.\",\"type\":\"authentication_error\",\"param\":null,\"code\":\"invalid_api_key\"}}"],
    ['wrong key, keep-alive', 'GET', '/v1/models', wrong, true, undefined, ["401", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "www-authenticate: Bearer", "content-type: application/json; charset=utf-8", "content-length: 162", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20001,\"message\":\"Invalid API key.\",\"data\":null,\"error\":{\"message\":\"Invalid API key.\",\"type\":\"authentication_error\",\"param\":null,\"code\":\"invalid_api_key\"}}"],
    ['wrong key, bare path', 'GET', '/models', wrong, true, undefined, ["401", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "www-authenticate: Bearer", "content-type: application/json; charset=utf-8", "content-length: 162", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20001,\"message\":\"Invalid API key.\",\"data\":null,\"error\":{\"message\":\"Invalid API key.\",\"type\":\"authentication_error\",\"param\":null,\"code\":\"invalid_api_key\"}}"],
    ['no key', 'GET', '/v1/models', {}, true, undefined, ["401", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "www-authenticate: Bearer", "content-type: application/json; charset=utf-8", "content-length: 238", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20001,\"message\":\"Missing API key: send \\\"Authorization: Bearer <key>\\\".\",\"data\":null,\"error\":{\"message\":\"Missing API key: send \\\"Authorization: Bearer <key>\\\".\",\"type\":\"authentication_error\",\"param\":null,\"code\":\"invalid_api_key\"}}"],
    ['empty bearer', 'GET', '/v1/models', { authorization: 'Bearer ' }, true, undefined, ["401", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "www-authenticate: Bearer", "content-type: application/json; charset=utf-8", "content-length: 162", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20001,\"message\":\"Invalid API key.\",\"data\":null,\"error\":{\"message\":\"Invalid API key.\",\"type\":\"authentication_error\",\"param\":null,\"code\":\"invalid_api_key\"}}"],
    ['unknown route', 'GET', '/v1/no-such-route', auth, false, undefined, ["404", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "content-type: application/json; charset=utf-8", "content-length: 259", "Connection: close"], "{\"code\":20012,\"message\":\"No route GET /v1/no-such-route. See README for the served endpoints.\",\"data\":null,\"error\":{\"message\":\"No route GET /v1/no-such-route. See README for the served endpoints.\",\"type\":\"not_found_error\",\"param\":null,\"code\":\"unknown_route\"}}"],
    ['unknown route, keep-alive', 'GET', '/v1/no-such-route', auth, true, undefined, ["404", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "content-type: application/json; charset=utf-8", "content-length: 259", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20012,\"message\":\"No route GET /v1/no-such-route. See README for the served endpoints.\",\"data\":null,\"error\":{\"message\":\"No route GET /v1/no-such-route. See README for the served endpoints.\",\"type\":\"not_found_error\",\"param\":null,\"code\":\"unknown_route\"}}"],
    ['unknown route, wrong key', 'GET', '/v1/no-such-route', wrong, true, undefined, ["404", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "content-type: application/json; charset=utf-8", "content-length: 259", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20012,\"message\":\"No route GET /v1/no-such-route. See README for the served endpoints.\",\"data\":null,\"error\":{\"message\":\"No route GET /v1/no-such-route. See README for the served endpoints.\",\"type\":\"not_found_error\",\"param\":null,\"code\":\"unknown_route\"}}"],
    ['unknown route, no key', 'GET', '/v1/no-such-route', {}, true, undefined, ["404", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "content-type: application/json; charset=utf-8", "content-length: 259", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20012,\"message\":\"No route GET /v1/no-such-route. See README for the served endpoints.\",\"data\":null,\"error\":{\"message\":\"No route GET /v1/no-such-route. See README for the served endpoints.\",\"type\":\"not_found_error\",\"param\":null,\"code\":\"unknown_route\"}}"],
    ['unknown route, bare, query', 'GET', '/no-such-route?key=secret&x=1', auth, true, undefined, ["404", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "content-type: application/json; charset=utf-8", "content-length: 253", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20012,\"message\":\"No route GET /no-such-route. See README for the served endpoints.\",\"data\":null,\"error\":{\"message\":\"No route GET /no-such-route. See README for the served endpoints.\",\"type\":\"not_found_error\",\"param\":null,\"code\":\"unknown_route\"}}"],
    ['unknown route, case', 'GET', '/v1/Models', auth, true, undefined, ["404", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "content-type: application/json; charset=utf-8", "content-length: 245", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20012,\"message\":\"No route GET /v1/Models. See README for the served endpoints.\",\"data\":null,\"error\":{\"message\":\"No route GET /v1/Models. See README for the served endpoints.\",\"type\":\"not_found_error\",\"param\":null,\"code\":\"unknown_route\"}}"],
    ['unknown route, percent', 'GET', '/v1/no%20such', auth, true, undefined, ["404", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "content-type: application/json; charset=utf-8", "content-length: 251", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20012,\"message\":\"No route GET /v1/no%20such. See README for the served endpoints.\",\"data\":null,\"error\":{\"message\":\"No route GET /v1/no%20such. See README for the served endpoints.\",\"type\":\"not_found_error\",\"param\":null,\"code\":\"unknown_route\"}}"],
    ['unknown route, bad percent', 'GET', '/v1/no%zzsuch', auth, true, undefined, ["400", "Content-Type: application/json", "Content-Length: 122", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"error\":\"Bad Request\",\"code\":\"FST_ERR_BAD_URL\",\"message\":\"'/v1/no%zzsuch' is not a valid url component\",\"statusCode\":400}"],
    ['unknown route, POST with a body', 'POST', '/v1/no-such-route', { ...auth, 'content-type': 'application/json' }, true, '{"a":1}', ["404", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "content-type: application/json; charset=utf-8", "content-length: 261", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20012,\"message\":\"No route POST /v1/no-such-route. See README for the served endpoints.\",\"data\":null,\"error\":{\"message\":\"No route POST /v1/no-such-route. See README for the served endpoints.\",\"type\":\"not_found_error\",\"param\":null,\"code\":\"unknown_route\"}}"],
    ['unknown route, DELETE', 'DELETE', '/v1/no-such-route', auth, true, undefined, ["404", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "content-type: application/json; charset=utf-8", "content-length: 265", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20012,\"message\":\"No route DELETE /v1/no-such-route. See README for the served endpoints.\",\"data\":null,\"error\":{\"message\":\"No route DELETE /v1/no-such-route. See README for the served endpoints.\",\"type\":\"not_found_error\",\"param\":null,\"code\":\"unknown_route\"}}"],
    ['known route, wrong method', 'DELETE', '/v1/models', auth, true, undefined, ["404", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "content-type: application/json; charset=utf-8", "content-length: 251", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20012,\"message\":\"No route DELETE /v1/models. See README for the served endpoints.\",\"data\":null,\"error\":{\"message\":\"No route DELETE /v1/models. See README for the served endpoints.\",\"type\":\"not_found_error\",\"param\":null,\"code\":\"unknown_route\"}}"],
    ['POST route, GET', 'GET', '/v1/chat/completions', auth, true, undefined, ["404", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "content-type: application/json; charset=utf-8", "content-length: 265", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20012,\"message\":\"No route GET /v1/chat/completions. See README for the served endpoints.\",\"data\":null,\"error\":{\"message\":\"No route GET /v1/chat/completions. See README for the served endpoints.\",\"type\":\"not_found_error\",\"param\":null,\"code\":\"unknown_route\"}}"],
    ['models, one model', 'GET', '/v1/models/org/chat-a', auth, true, undefined, ["200", "x-request-id: golden-2", "x-siliconcloud-trace-id: golden-2", "content-type: application/json; charset=utf-8", "content-length: 198", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"id\":\"org/chat-a\",\"object\":\"model\",\"created\":0,\"owned_by\":\"infera\",\"type\":\"text\",\"sub_type\":\"chat\",\"infera\":{\"engine\":\"llama-cpp\",\"state\":\"unloaded\",\"aliases\":[\"deepseek-ai/DeepSeek-V3\"]}}"],
    ];
    for (const [name, method, path, headers, keepAlive, body, head, text] of cases) {
      const expected = `${head.join('\n')}\n\n${text}`;
      for (let i = 0; i < 2; i++) assert.equal(await rawAnswer(server.url, method, path, { 'x-request-id': 'golden-2', ...headers }, keepAlive, body), expected, `${name}, answer ${i + 1}`);
    }
  });

  // The POST routes' refusals before any work (quick.ts answers them in front of Fastify since branch
  // http6) as the server sent them before (01f5822, every one through Fastify): status, every header but
  // the date, and the body; each asked twice (the second answer may come from a remembered refusal), on a
  // kept-alive connection and on a closed one. Invalid JSON and a blank body are read by quick.ts and
  // handed to Fastify with their bytes (its parser's answers); a body accepted goes on the same way (the
  // 503 of a model whose file is missing, below).
  test('POST refusals of every inference route answer the same bytes as before, every time', async () => {
    const cases: [string, string, boolean, string, string[], string][] = [
      ["chat, no messages", "/v1/chat/completions", true, "{\"model\":\"org/chat-a\",\"messages\":[]}", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 223", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20015,\"message\":\"messages: must contain at least one message\",\"data\":null,\"error\":{\"message\":\"messages: must contain at least one message\",\"type\":\"invalid_request_error\",\"param\":\"messages\",\"code\":\"invalid_request\"}}"],
      ["chat, no messages", "/v1/chat/completions", false, "{\"model\":\"org/chat-a\",\"messages\":[]}", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 223", "Connection: close"], "{\"code\":20015,\"message\":\"messages: must contain at least one message\",\"data\":null,\"error\":{\"message\":\"messages: must contain at least one message\",\"type\":\"invalid_request_error\",\"param\":\"messages\",\"code\":\"invalid_request\"}}"],
      ["chat, unknown model", "/chat/completions", true, "{\"model\":\"nobody/nothing\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 336", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20012,\"message\":\"The model 'nobody/nothing' does not exist or is not served here. GET /v1/models lists the served ids.\",\"data\":null,\"error\":{\"message\":\"The model 'nobody/nothing' does not exist or is not served here. GET /v1/models lists the served ids.\",\"type\":\"invalid_request_error\",\"param\":\"model\",\"code\":\"model_not_found\"}}"],
      ["chat, unknown model", "/chat/completions", false, "{\"model\":\"nobody/nothing\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 336", "Connection: close"], "{\"code\":20012,\"message\":\"The model 'nobody/nothing' does not exist or is not served here. GET /v1/models lists the served ids.\",\"data\":null,\"error\":{\"message\":\"The model 'nobody/nothing' does not exist or is not served here. GET /v1/models lists the served ids.\",\"type\":\"invalid_request_error\",\"param\":\"model\",\"code\":\"model_not_found\"}}"],
      ["chat, bad temperature", "/v1/chat/completions", true, "{\"model\":\"org/chat-a\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":9}", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 212", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20015,\"message\":\"temperature: must be between 0 and 2\",\"data\":null,\"error\":{\"message\":\"temperature: must be between 0 and 2\",\"type\":\"invalid_request_error\",\"param\":\"temperature\",\"code\":\"invalid_request\"}}"],
      ["chat, bad temperature", "/v1/chat/completions", false, "{\"model\":\"org/chat-a\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":9}", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 212", "Connection: close"], "{\"code\":20015,\"message\":\"temperature: must be between 0 and 2\",\"data\":null,\"error\":{\"message\":\"temperature: must be between 0 and 2\",\"type\":\"invalid_request_error\",\"param\":\"temperature\",\"code\":\"invalid_request\"}}"],
      ["chat, not an object", "/v1/chat/completions", true, "\"hello\"", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 237", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20015,\"message\":\"The request body must be a JSON object, not a string.\",\"data\":null,\"error\":{\"message\":\"The request body must be a JSON object, not a string.\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"invalid_request\"}}"],
      ["chat, not an object", "/v1/chat/completions", false, "\"hello\"", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 237", "Connection: close"], "{\"code\":20015,\"message\":\"The request body must be a JSON object, not a string.\",\"data\":null,\"error\":{\"message\":\"The request body must be a JSON object, not a string.\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"invalid_request\"}}"],
      ["chat, invalid JSON", "/v1/chat/completions", true, "{\"model\": ", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "connection: close", "content-type: application/json; charset=utf-8", "content-length: 248"], "{\"code\":20015,\"message\":\"Request body is not valid JSON: Unexpected end of JSON input\",\"data\":null,\"error\":{\"message\":\"Request body is not valid JSON: Unexpected end of JSON input\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"invalid_json\"}}"],
      ["chat, invalid JSON", "/v1/chat/completions", false, "{\"model\": ", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "connection: close", "content-type: application/json; charset=utf-8", "content-length: 248"], "{\"code\":20015,\"message\":\"Request body is not valid JSON: Unexpected end of JSON input\",\"data\":null,\"error\":{\"message\":\"Request body is not valid JSON: Unexpected end of JSON input\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"invalid_json\"}}"],
      ["chat, blank body", "/v1/chat/completions", true, "   ", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 229", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20015,\"message\":\"The request body must be a JSON object, not null.\",\"data\":null,\"error\":{\"message\":\"The request body must be a JSON object, not null.\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"invalid_request\"}}"],
      ["chat, blank body", "/v1/chat/completions", false, "   ", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 229", "Connection: close"], "{\"code\":20015,\"message\":\"The request body must be a JSON object, not null.\",\"data\":null,\"error\":{\"message\":\"The request body must be a JSON object, not null.\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"invalid_request\"}}"],
      ["completions, unknown model", "/v1/completions", true, "{\"model\":\"nobody/nothing\",\"prompt\":\"hi\"}", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 336", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20012,\"message\":\"The model 'nobody/nothing' does not exist or is not served here. GET /v1/models lists the served ids.\",\"data\":null,\"error\":{\"message\":\"The model 'nobody/nothing' does not exist or is not served here. GET /v1/models lists the served ids.\",\"type\":\"invalid_request_error\",\"param\":\"model\",\"code\":\"model_not_found\"}}"],
      ["completions, unknown model", "/v1/completions", false, "{\"model\":\"nobody/nothing\",\"prompt\":\"hi\"}", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 336", "Connection: close"], "{\"code\":20012,\"message\":\"The model 'nobody/nothing' does not exist or is not served here. GET /v1/models lists the served ids.\",\"data\":null,\"error\":{\"message\":\"The model 'nobody/nothing' does not exist or is not served here. GET /v1/models lists the served ids.\",\"type\":\"invalid_request_error\",\"param\":\"model\",\"code\":\"model_not_found\"}}"],
      ["embeddings, no input", "/v1/embeddings", true, "{\"model\":\"org/embed-b\"}", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 170", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20015,\"message\":\"input: is required\",\"data\":null,\"error\":{\"message\":\"input: is required\",\"type\":\"invalid_request_error\",\"param\":\"input\",\"code\":\"invalid_request\"}}"],
      ["embeddings, no input", "/v1/embeddings", false, "{\"model\":\"org/embed-b\"}", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 170", "Connection: close"], "{\"code\":20015,\"message\":\"input: is required\",\"data\":null,\"error\":{\"message\":\"input: is required\",\"type\":\"invalid_request_error\",\"param\":\"input\",\"code\":\"invalid_request\"}}"],
      ["embeddings, unknown model", "/embeddings", true, "{\"model\":\"nobody/nothing\",\"input\":\"hi\"}", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 336", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20012,\"message\":\"The model 'nobody/nothing' does not exist or is not served here. GET /v1/models lists the served ids.\",\"data\":null,\"error\":{\"message\":\"The model 'nobody/nothing' does not exist or is not served here. GET /v1/models lists the served ids.\",\"type\":\"invalid_request_error\",\"param\":\"model\",\"code\":\"model_not_found\"}}"],
      ["embeddings, unknown model", "/embeddings", false, "{\"model\":\"nobody/nothing\",\"input\":\"hi\"}", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 336", "Connection: close"], "{\"code\":20012,\"message\":\"The model 'nobody/nothing' does not exist or is not served here. GET /v1/models lists the served ids.\",\"data\":null,\"error\":{\"message\":\"The model 'nobody/nothing' does not exist or is not served here. GET /v1/models lists the served ids.\",\"type\":\"invalid_request_error\",\"param\":\"model\",\"code\":\"model_not_found\"}}"],
      ["embeddings, chat model", "/v1/embeddings", true, "{\"model\":\"org/chat-a\",\"input\":\"hi\"}", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 290", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20015,\"message\":\"Model 'org/chat-a' is a chat model; send it to /v1/chat/completions instead.\",\"data\":null,\"error\":{\"message\":\"Model 'org/chat-a' is a chat model; send it to /v1/chat/completions instead.\",\"type\":\"invalid_request_error\",\"param\":\"model\",\"code\":\"model_type_mismatch\"}}"],
      ["embeddings, chat model", "/v1/embeddings", false, "{\"model\":\"org/chat-a\",\"input\":\"hi\"}", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 290", "Connection: close"], "{\"code\":20015,\"message\":\"Model 'org/chat-a' is a chat model; send it to /v1/chat/completions instead.\",\"data\":null,\"error\":{\"message\":\"Model 'org/chat-a' is a chat model; send it to /v1/chat/completions instead.\",\"type\":\"invalid_request_error\",\"param\":\"model\",\"code\":\"model_type_mismatch\"}}"],
      ["rerank, no query", "/v1/rerank", true, "{\"model\":\"org/rerank-c\",\"documents\":[\"a\"]}", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 170", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20015,\"message\":\"query: is required\",\"data\":null,\"error\":{\"message\":\"query: is required\",\"type\":\"invalid_request_error\",\"param\":\"query\",\"code\":\"invalid_request\"}}"],
      ["rerank, no query", "/v1/rerank", false, "{\"model\":\"org/rerank-c\",\"documents\":[\"a\"]}", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 170", "Connection: close"], "{\"code\":20015,\"message\":\"query: is required\",\"data\":null,\"error\":{\"message\":\"query: is required\",\"type\":\"invalid_request_error\",\"param\":\"query\",\"code\":\"invalid_request\"}}"],
      ["rerank, unknown model", "/v2/rerank", true, "{\"model\":\"nobody/nothing\",\"query\":\"q\",\"documents\":[\"a\"]}", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 336", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20012,\"message\":\"The model 'nobody/nothing' does not exist or is not served here. GET /v1/models lists the served ids.\",\"data\":null,\"error\":{\"message\":\"The model 'nobody/nothing' does not exist or is not served here. GET /v1/models lists the served ids.\",\"type\":\"invalid_request_error\",\"param\":\"model\",\"code\":\"model_not_found\"}}"],
      ["rerank, unknown model", "/v2/rerank", false, "{\"model\":\"nobody/nothing\",\"query\":\"q\",\"documents\":[\"a\"]}", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 336", "Connection: close"], "{\"code\":20012,\"message\":\"The model 'nobody/nothing' does not exist or is not served here. GET /v1/models lists the served ids.\",\"data\":null,\"error\":{\"message\":\"The model 'nobody/nothing' does not exist or is not served here. GET /v1/models lists the served ids.\",\"type\":\"invalid_request_error\",\"param\":\"model\",\"code\":\"model_not_found\"}}"],
      ["images, bad size", "/v1/images/generations", true, "{\"model\":\"org/image-d\",\"prompt\":\"a cat\",\"image_size\":\"5x5\"}", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 259", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20015,\"message\":\"image_size: width 5 is outside this model's range 64\u20132048.\",\"data\":null,\"error\":{\"message\":\"image_size: width 5 is outside this model's range 64\u20132048.\",\"type\":\"invalid_request_error\",\"param\":\"image_size\",\"code\":\"invalid_request\"}}"],
      ["images, bad size", "/v1/images/generations", false, "{\"model\":\"org/image-d\",\"prompt\":\"a cat\",\"image_size\":\"5x5\"}", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 259", "Connection: close"], "{\"code\":20015,\"message\":\"image_size: width 5 is outside this model's range 64\u20132048.\",\"data\":null,\"error\":{\"message\":\"image_size: width 5 is outside this model's range 64\u20132048.\",\"type\":\"invalid_request_error\",\"param\":\"image_size\",\"code\":\"invalid_request\"}}"],
      ["images, unknown model", "/v1/image/generations", true, "{\"model\":\"nobody/nothing\",\"prompt\":\"a cat\"}", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 336", "Connection: keep-alive", "Keep-Alive: timeout=72, max=1000"], "{\"code\":20012,\"message\":\"The model 'nobody/nothing' does not exist or is not served here. GET /v1/models lists the served ids.\",\"data\":null,\"error\":{\"message\":\"The model 'nobody/nothing' does not exist or is not served here. GET /v1/models lists the served ids.\",\"type\":\"invalid_request_error\",\"param\":\"model\",\"code\":\"model_not_found\"}}"],
      ["images, unknown model", "/v1/image/generations", false, "{\"model\":\"nobody/nothing\",\"prompt\":\"a cat\"}", ["400", "x-request-id: golden-3", "x-siliconcloud-trace-id: golden-3", "content-type: application/json; charset=utf-8", "content-length: 336", "Connection: close"], "{\"code\":20012,\"message\":\"The model 'nobody/nothing' does not exist or is not served here. GET /v1/models lists the served ids.\",\"data\":null,\"error\":{\"message\":\"The model 'nobody/nothing' does not exist or is not served here. GET /v1/models lists the served ids.\",\"type\":\"invalid_request_error\",\"param\":\"model\",\"code\":\"model_not_found\"}}"],
    ];
    const headers = { ...auth, 'content-type': 'application/json', 'x-request-id': 'golden-3' };
    for (const [name, path, keepAlive, body, head, text] of cases) {
      const expected = `${head.join('\n')}\n\n${text}`;
      for (let i = 0; i < 2; i++) assert.equal(await rawAnswer(server.url, 'POST', path, headers, keepAlive, body), expected, `${name}, keep-alive ${keepAlive}, answer ${i + 1}`);
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

/** An answer as sent, on a fresh connection (closed or kept alive): as rawChatAnswer, the list's `created` and generated ids masked. */
function rawAnswer(base: string, method: string, path: string, headers: Record<string, string>, keepAlive: boolean, body?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const agent = keepAlive ? new Agent({ keepAlive: true }) : false;
    const sent = request(`${base}${path}`, { method, agent, headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        if (agent) agent.destroy();
        const lines = [String(response.statusCode)];
        for (let i = 0; i < response.rawHeaders.length; i += 2)
          if (response.rawHeaders[i]!.toLowerCase() !== 'date') lines.push(`${response.rawHeaders[i]}: ${response.rawHeaders[i + 1]}`);
        resolve(`${lines.join('\n')}\n\n${Buffer.concat(chunks).toString('utf8')}`.replace(/"created":\d+/g, '"created":0').replace(/req_[0-9a-f]{32}/g, 'req_ID'));
      });
      response.on('error', reject);
    });
    sent.on('error', reject);
    sent.end(body);
  });
}
