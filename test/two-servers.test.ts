// Two servers in one process share no state: each has its own batchers, image store, fetch pools and
// engine runtimes (llama.cpp), and closing one disposes only what it created — the other keeps serving.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { http, startTestServer, type TestServer } from './helpers/server.ts';
import type { EmbeddingModel } from '../src/spec/index.ts';

const EMBED = 'BAAI/bge-m3';
const CHAT = 'Qwen/Qwen3-8B';

const embed = (server: TestServer) => http(server.baseURL, '/embeddings', { body: { model: EMBED, input: 'the cat sat' } });
const chat = (server: TestServer) =>
  http(server.baseURL, '/chat/completions', { body: { model: CHAT, messages: [{ role: 'user', content: 'hello' }], max_tokens: 8 } });

test('two servers in one process share nothing, and closing one leaves the other serving', async () => {
  const a = await startTestServer();
  let b: TestServer | undefined;
  try {
    b = await startTestServer();
    for (const server of [a, b]) {
      assert.equal((await embed(server)).status, 200);
      assert.equal((await chat(server)).status, 200);
    }
    const [sa, sb] = [a.server.services, b.server.services];
    assert.notEqual(sa.batchers, sb.batchers);
    assert.notEqual(sa.imageStore, sb.imageStore);
    assert.notEqual(await sa.imageStore.get(), await sb.imageStore.get());
    assert.notEqual(sa.fetchAgents, sb.fetchAgents);
    assert.notEqual(sa.registry.resources, sb.registry.resources);
    assert.equal(sa.registry.resources.size, 1, "server a's llama.cpp runtime");
    assert.equal(sb.registry.resources.size, 1, "server b's llama.cpp runtime");

    // Each server loaded its own model instance, batched by its own batcher.
    const modelOf = async (server: TestServer) => {
      const lease = await server.server.services.registry.acquire(EMBED, 'embedding');
      lease.release();
      return lease;
    };
    const [la, lb] = [await modelOf(a), await modelOf(b)];
    assert.notEqual(la.model, lb.model);
    assert.notEqual(sa.batchers.embedding(la.model as EmbeddingModel, la.config), sb.batchers.embedding(lb.model as EmbeddingModel, lb.config));

    await a.close();
    assert.equal(sa.registry.resources.size, 0, "closing a disposed a's runtime");
    assert.equal(sb.registry.resources.size, 1, "and left b's alone");
    // b's models run on b's llama.cpp runtime, which a's shutdown must not have disposed.
    const afterEmbed = await embed(b);
    assert.equal(afterEmbed.status, 200, afterEmbed.text);
    const afterChat = await chat(b);
    assert.equal(afterChat.status, 200, afterChat.text);
    assert.equal((await http(b.baseURL, '/images/files/missing.png')).status, 404, "b's image store still answers");
  } finally {
    await a.close();
    await b?.close();
  }
});
