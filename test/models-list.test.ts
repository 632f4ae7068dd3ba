// /v1/models lists every id a client may send (aliases included, each with type/sub_type), and
// /v1/models/{id} answers with the id that was asked for: apps fill their pickers from the list.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { http, startTestServer, type TestServer } from './helpers/server.ts';
import { validateAgainstOpenApi } from './helpers/openapi.ts';

let server: TestServer;
before(async () => {
  server = await startTestServer({
    config: {
      models: [
        { id: 'org/chat-a', aliases: ['Qwen/QwQ-32B', 'deepseek-ai/DeepSeek-V3'], type: 'chat', engine: 'llama-cpp', path: '/nonexistent/a.gguf' },
        { id: 'org/embed-b', aliases: ['BAAI/bge-m3'], type: 'embedding', engine: 'llama-cpp', path: '/nonexistent/b.gguf' },
      ],
    },
  });
});
after(() => server.close());

test('every accepted id is listed as its own model, with type and sub_type, pointing at what serves it', async () => {
  const client = new OpenAI({ baseURL: server.baseURL, apiKey: 'none' });
  const list = await client.models.list();
  assert.deepEqual(
    list.data.map((m) => m.id),
    ['org/chat-a', 'Qwen/QwQ-32B', 'deepseek-ai/DeepSeek-V3', 'org/embed-b', 'BAAI/bge-m3'],
  );
  const raw = await http(server.baseURL, '/models');
  assert.deepEqual(validateAgainstOpenApi('ListModelsResponse', raw.json), []);
  const qwq = raw.json.data.find((m: { id: string }) => m.id === 'Qwen/QwQ-32B');
  assert.equal(qwq.type, 'text');
  assert.equal(qwq.sub_type, 'chat');
  assert.equal(qwq.infera.alias_of, 'org/chat-a');
  const embeddings = await http(server.baseURL, '/models?sub_type=embedding');
  assert.deepEqual(
    embeddings.json.data.map((m: { id: string }) => m.id),
    ['org/embed-b', 'BAAI/bge-m3'],
  );
});

test('GET /v1/models/{id} answers with the id asked for (alias, other case, Pro/ prefix); unknown and odd ids are 404, never 500', async () => {
  const client = new OpenAI({ baseURL: server.baseURL, apiKey: 'none', maxRetries: 0 });
  assert.equal((await client.models.retrieve('Qwen/QwQ-32B')).id, 'Qwen/QwQ-32B');
  assert.equal((await client.models.retrieve('qwen/qwq-32b')).id, 'qwen/qwq-32b');
  const pro = await http(server.baseURL, '/models/Pro/BAAI/bge-m3');
  assert.equal(pro.status, 200);
  assert.equal(pro.json.id, 'Pro/BAAI/bge-m3');
  assert.equal(pro.json.infera.alias_of, 'org/embed-b');
  await assert.rejects(client.models.retrieve('nobody/nothing'), OpenAI.NotFoundError);
  const odd = await http(server.baseURL, '/models/%25FF');
  assert.equal(odd.status, 404);
  assert.equal(odd.json.error.param, 'model');
});
