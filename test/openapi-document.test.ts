// Infera's own OpenAPI 3.1 description (/openapi.json), checked against the real server: it is the
// zod schemas the protocol validates with (not a copy), every API route is in it once, and real answers
// (chat JSON and stream events, embeddings, rerank, images, models, account, errors, probes) validate
// against the response schemas it declares. /docs serves Swagger UI from this server alone.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { z } from 'zod';
import { chatRequestSchema } from '../src/protocol/chat/request.ts';
import { embeddingsRequestSchema } from '../src/protocol/embeddings.ts';
import { http, sseEvents, startTestServer, type ResponseJson, type TestServer } from './helpers/server.ts';

const CHAT = 'Qwen/Qwen3-8B';
const EMBED = 'BAAI/bge-m3';
const RERANK = 'BAAI/bge-reranker-v2-m3';
const IMAGE = 'Kwai-Kolors/Kolors';

interface Operation {
  requestBody?: { content: Record<string, { schema: unknown }> };
  responses: Record<string, { content?: Record<string, { schema: unknown }> }>;
}
type Document = { openapi: string; paths: Record<string, Record<string, Operation>> };

describe('/openapi.json', () => {
  let server: TestServer;
  let document: Document;
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  const compiled = new Map<unknown, ValidateFunction>();

  /** The schema `path`/`method` declares for `status` and `type`, compiled. */
  const schemaFor = (path: string, method: string, status: string, type = 'application/json'): ValidateFunction => {
    const responses = document.paths[path]?.[method]?.responses;
    assert.ok(responses, `${method.toUpperCase()} ${path} is documented`);
    const declared = responses[status] ?? responses[`${status[0]}XX`];
    assert.ok(declared?.content?.[type], `${method.toUpperCase()} ${path} declares ${status} ${type}`);
    const schema = declared.content[type].schema;
    let validate = compiled.get(schema);
    if (!validate) {
      validate = ajv.compile(schema as object);
      compiled.set(schema, validate);
    }
    return validate;
  };
  const conforms = (path: string, method: string, answer: { status: number; json: ResponseJson }, type?: string) => {
    const validate = schemaFor(path, method, String(answer.status), type);
    assert.ok(validate(answer.json), `${method.toUpperCase()} ${path} ${answer.status}: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(answer.json).slice(0, 400)}`);
  };
  const requestConforms = (path: string, body: unknown) => {
    const schema = document.paths[path]!.post!.requestBody!.content['application/json']!.schema;
    const validate = ajv.compile(schema as object);
    return validate(body);
  };

  before(async () => {
    server = await startTestServer();
    const answer = await http(server.url, '/openapi.json');
    assert.equal(answer.status, 200);
    document = answer.json;
  });
  after(() => server.close());

  test('an OpenAPI 3.1 document of every API route, under /v1 only (the bare twins are not repeated)', () => {
    assert.equal(document.openapi, '3.1.0');
    const routes = Object.entries(document.paths).flatMap(([path, methods]) => Object.keys(methods).map((method) => `${method.toUpperCase()} ${path}`));
    for (const route of [
      'POST /v1/chat/completions',
      'POST /v1/completions',
      'POST /v1/embeddings',
      'POST /v1/rerank',
      'POST /v2/rerank',
      'POST /v1/images/generations',
      'GET /v1/images/files/{name}',
      'GET /v1/models',
      'GET /v1/models/{*}',
      'GET /v1/user/info',
      'GET /health',
      'GET /ready',
      'GET /metrics',
      'POST /admin/keys',
    ])
      assert.ok(routes.includes(route), `${route} in ${routes.join(', ')}`);
    assert.ok(!routes.some((route) => /^POST \/(chat\/)?completions$|\/image\/generations$|^GET \/models$/.test(route)), routes.join(', '));
    assert.ok(!routes.some((route) => /\/docs|openapi\.json|OPTIONS/.test(route)), 'the document and its viewer are not API routes');
  });

  test("request bodies are the protocol's own zod schemas, as zod renders them", () => {
    // @fastify/swagger writes zod's `const: x` as `enum: [x]` (the form OpenAPI tools read); nothing else differs.
    const constAsEnum = (node: unknown): unknown => {
      if (Array.isArray(node)) return node.map(constAsEnum);
      if (typeof node !== 'object' || node === null) return node;
      const out: Record<string, unknown> = {};
      for (const [key, value] of Object.entries(node)) {
        if (key === 'const') out.enum = [value];
        else out[key] = constAsEnum(value);
      }
      return out;
    };
    const rendered = (schema: z.ZodType) => {
      const { $schema: _, ...rest } = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any', target: 'draft-2020-12' }) as Record<string, unknown>;
      return constAsEnum(rest);
    };
    assert.deepEqual(document.paths['/v1/chat/completions']!.post!.requestBody!.content['application/json']!.schema, rendered(chatRequestSchema));
    assert.deepEqual(document.paths['/v1/embeddings']!.post!.requestBody!.content['application/json']!.schema, rendered(embeddingsRequestSchema));
  });

  test('chat: JSON, stream events, a tool call and errors validate against the document', async () => {
    const body = { model: CHAT, messages: [{ role: 'user', content: 'hello there' }] };
    assert.ok(requestConforms('/v1/chat/completions', body));
    conforms('/v1/chat/completions', 'post', await http(server.baseURL, '/chat/completions', { body }));
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
    const called = await http(server.baseURL, '/chat/completions', { body: { ...body, tools, tool_choice: 'required' } });
    assert.equal(called.json.choices[0].finish_reason, 'tool_calls');
    conforms('/v1/chat/completions', 'post', called);

    const streamed = await http(server.baseURL, '/chat/completions', { body: { ...body, stream: true, stream_options: { include_usage: true } } });
    assert.equal(streamed.status, 200);
    const events = sseEvents(streamed.text);
    assert.equal(events.pop(), '[DONE]');
    assert.ok(events.length > 3);
    for (const event of events) conforms('/v1/chat/completions', 'post', { status: 200, json: JSON.parse(event) }, 'text/event-stream');

    // What the document refuses, the server refuses: the two say the same thing about a bad field.
    const hot = { ...body, temperature: 9 };
    assert.equal(requestConforms('/v1/chat/completions', hot), false);
    const refused = await http(server.baseURL, '/chat/completions', { body: hot });
    assert.equal(refused.status, 400);
    assert.equal(refused.json.error.param, 'temperature');
    conforms('/v1/chat/completions', 'post', refused);
    conforms('/v1/chat/completions', 'post', await http(server.baseURL, '/chat/completions', { body: { ...body, model: 'nobody/serves-this' } }));
  });

  test('text completions: JSON with logprobs and echo, stream events, errors validate', async () => {
    const body = { model: CHAT, prompt: 'Hello there', max_tokens: 8, logprobs: 2 };
    assert.ok(requestConforms('/v1/completions', body));
    const answered = await http(server.baseURL, '/completions', { body });
    assert.equal(answered.status, 200, answered.text);
    assert.ok(answered.json.choices[0].logprobs.tokens.length > 0);
    conforms('/v1/completions', 'post', answered);
    conforms('/v1/completions', 'post', await http(server.baseURL, '/completions', { body: { model: CHAT, prompt: 'Hello', max_tokens: 4, echo: true } }));
    const streamed = await http(server.baseURL, '/completions', { body: { model: CHAT, prompt: 'Hello', max_tokens: 8, stream: true, stream_options: { include_usage: true } } });
    const events = sseEvents(streamed.text);
    assert.equal(events.pop(), '[DONE]');
    assert.ok(events.length > 1);
    for (const event of events) conforms('/v1/completions', 'post', { status: 200, json: JSON.parse(event) }, 'text/event-stream');
    conforms('/v1/completions', 'post', await http(server.baseURL, '/completions', { body: { model: CHAT, prompt: 'x', max_tokens: -1 } }));
  });

  test('embeddings (float and base64), rerank (v1 and v2), images (url and b64_json) validate', async () => {
    for (const encoding_format of ['float', 'base64']) {
      const body = { model: EMBED, input: ['one', 'two'], encoding_format };
      assert.ok(requestConforms('/v1/embeddings', body));
      conforms('/v1/embeddings', 'post', await http(server.baseURL, '/embeddings', { body }));
    }
    const rerank = { model: RERANK, query: 'cat', documents: ['a cat', 'a dog'], return_documents: true, top_n: 1 };
    conforms('/v1/rerank', 'post', await http(server.baseURL, '/rerank', { body: rerank }));
    conforms('/v2/rerank', 'post', await http(server.url, '/v2/rerank', { body: rerank }));
    conforms('/v1/rerank', 'post', await http(server.baseURL, '/rerank', { body: { ...rerank, documents: [] } }));
    for (const response_format of ['url', 'b64_json']) {
      const body = { model: IMAGE, prompt: 'a cat', image_size: '64x64', num_inference_steps: 2, response_format };
      assert.ok(requestConforms('/v1/images/generations', body));
      const drawn = await http(server.baseURL, '/images/generations', { body });
      conforms('/v1/images/generations', 'post', drawn);
      if (response_format === 'url') {
        const file = await fetch(drawn.json.data[0].url);
        assert.equal(file.status, 200);
        assert.match(file.headers.get('content-type') ?? '', /^image\//);
      }
    }
  });

  test('models, account, probes and errors outside /v1 validate', async () => {
    conforms('/v1/models', 'get', await http(server.baseURL, '/models'));
    conforms('/v1/models', 'get', await http(server.baseURL, '/models?sub_type=embedding'));
    const badFilter = await http(server.baseURL, '/models?type=smell');
    assert.equal(badFilter.status, 400);
    assert.equal(badFilter.json.error.param, 'type');
    conforms('/v1/models', 'get', badFilter);
    conforms('/v1/models/{*}', 'get', await http(server.baseURL, `/models/${CHAT}`));
    conforms('/v1/models/{*}', 'get', await http(server.baseURL, '/models/nobody/serves-this'));
    conforms('/v1/user/info', 'get', await http(server.baseURL, '/user/info'));
    conforms('/health', 'get', await http(server.url, '/health'));
    conforms('/ready', 'get', await http(server.url, '/ready'));
    const keysOff = await http(server.url, '/admin/keys', { body: { name: 'x' } });
    assert.equal(keysOff.status, 403);
    conforms('/admin/keys', 'post', keysOff);
  });
});

describe('/docs', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ config: { models: [{ id: 'org/x', type: 'chat', engine: 'llama-cpp', path: '/nonexistent/x.gguf' }] } });
  });
  after(() => server.close());

  test('Swagger UI from this server alone: every asset it names is served here, nothing from elsewhere', async () => {
    const page = await http(server.url, '/docs');
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    const assets = [...page.text.matchAll(/(?:src|href)="([^"]+)"/g)].map((match) => match[1]!);
    assert.ok(assets.some((asset) => asset.endsWith('swagger-ui-bundle.js')), assets.join(', '));
    for (const asset of assets) {
      assert.ok(!/^(https?:)?\/\//.test(asset), `${asset} is not fetched from another host`);
      const served = await fetch(new URL(asset, `${server.url}/docs`));
      assert.equal(served.status, 200, asset);
      await served.arrayBuffer();
    }
    const init = await (await fetch(`${server.url}/docs/static/swagger-initializer.js`)).text();
    // Comments may cite web pages; no string the script uses names another host.
    assert.ok(!/["'`](https?:)?\/\//.test(init), 'the initializer fetches nothing from elsewhere');
    const shown = await http(server.url, '/docs/json');
    assert.deepEqual(shown.json, (await http(server.url, '/openapi.json')).json, 'the page shows this document');
  });
});
