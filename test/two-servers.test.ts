// Two servers in one process share no state: each has its own batchers, image store, fetch pools and
// engine processes (llama.cpp runs in those), and closing one disposes only what it created — the other
// keeps serving.
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
    // The engines run in engine processes: no engine state in the server process, one process per model and server.
    assert.equal(sa.registry.resources.size, 0);
    const pids = (server: TestServer) => server.server.services.registry.entries().flatMap((entry) => (entry.pid === undefined ? [] : [entry.pid]));
    const [pa, pb] = [pids(a), pids(b)];
    assert.equal(pa.length, 2, "server a's chat and embedding engine processes");
    assert.equal(new Set([...pa, ...pb]).size, 4, 'no engine process is shared');
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };

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
    assert.ok(pa.every((pid) => !alive(pid)), "closing a ended a's engine processes");
    assert.ok(pb.every(alive), "and left b's alone");
    // b's models run in b's engine processes, which a's shutdown must not have touched.
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
