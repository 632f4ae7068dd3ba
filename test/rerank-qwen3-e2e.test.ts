// End to end through the real server: a Qwen3-Reranker-style GGUF (tiny, generated) on engine llama-cpp,
// declared instruction-following in config, answers POST /v1/rerank and /v2/rerank with `instruction`.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { LlamaCppRerankModel } from '../src/engines/llama-cpp/rerank.ts';
import { queryWithInstruction } from '../src/engines/shared/rerank-text.ts';
import { ensureTinyQwen3Reranker, QWEN3_RERANK_DEFAULT_INSTRUCTION } from '../src/tiny-models/tiny-qwen3-reranker.ts';
import { http, SHARED_DATA_DIR, startTestServer, type TestServer } from './helpers/server.ts';

const INSTRUCTED = 'Qwen/Qwen3-Reranker-0.6B';
const PLAIN = 'tiny-qwen3-reranker-no-instruction';
let server: TestServer;

before(async () => {
  const path = await ensureTinyQwen3Reranker(join(SHARED_DATA_DIR, 'tiny-models'));
  const model = (id: string, acceptsInstruction: boolean) => ({
    id,
    type: 'reranker',
    engine: 'llama-cpp',
    path,
    acceptsInstruction,
    llamaCpp: { threads: 1, contexts: 2, contextSize: 1024 },
  });
  server = await startTestServer({ config: { models: [model(INSTRUCTED, true), model(PLAIN, false)] } });
});
after(() => server?.close());

const query = 'find the fish';
const documents = ['a dog', 'a fish in the house', 'x marks the spot'];

test('POST /v1/rerank with `instruction` on a Qwen3-style reranker: sorted probabilities, the instruction read and billed', async () => {
  const instruction = 'Find the document about a fish';
  const withInstruction = await http(server.baseURL, '/rerank', { body: { model: INSTRUCTED, query, documents, instruction } });
  assert.equal(withInstruction.status, 200, withInstruction.text);
  const results: { index: number; relevance_score: number }[] = withInstruction.json.results;
  assert.deepEqual(results.map((r) => r.index).sort(), [0, 1, 2]);
  for (let i = 1; i < results.length; i++) assert.ok(results[i - 1]!.relevance_score >= results[i]!.relevance_score);
  assert.ok(results.every((r) => r.relevance_score > 0 && r.relevance_score < 1));

  // The HTTP answer is the engine's answer for the same request.
  const lease = await server.server.services.registry.acquire(INSTRUCTED, 'reranker');
  const engine = lease.model as LlamaCppRerankModel;
  // The model lives in its engine process: its synchronous methods answer with a promise here.
  const countTokens = (text: string) => Promise.resolve(engine.countTokens(text) as number | Promise<number>);
  try {
    const direct = await engine.doRerank({ query, documents, instruction, signal: new AbortController().signal });
    for (const r of results) assert.ok(Math.abs(r.relevance_score - direct.scores[r.index]!) < 1e-6);
    assert.equal(withInstruction.json.tokens.input_tokens, direct.inputTokens);

    // Without one the default instruction is read: tokens differ by the two query slots, per document.
    const withDefault = await http(server.baseURL, '/rerank', { body: { model: INSTRUCTED, query, documents } });
    assert.equal(withDefault.status, 200, withDefault.text);
    const slotGrowth =
      (await countTokens(queryWithInstruction(query, instruction, QWEN3_RERANK_DEFAULT_INSTRUCTION))) -
      (await countTokens(queryWithInstruction(query, undefined, QWEN3_RERANK_DEFAULT_INSTRUCTION)));
    assert.equal(withInstruction.json.tokens.input_tokens - withDefault.json.tokens.input_tokens, slotGrowth * documents.length);
    const scoreOf = (body: { results: { index: number; relevance_score: number }[] }, index: number) =>
      body.results.find((r) => r.index === index)!.relevance_score;
    for (const index of documents.keys()) assert.notEqual(scoreOf(withInstruction.json, index), scoreOf(withDefault.json, index));
  } finally {
    lease.release();
  }

  // Cohere v2 clients reach the same handler.
  const v2 = await http(server.url, '/v2/rerank', { body: { model: INSTRUCTED, query, documents, instruction } });
  assert.equal(v2.status, 200, v2.text);
  assert.deepEqual(v2.json.results, withInstruction.json.results);
});

test('POST /v1/rerank: the same GGUF without acceptsInstruction ranks, and refuses `instruction` with a 400 naming it', async () => {
  const ok = await http(server.baseURL, '/rerank', { body: { model: PLAIN, query, documents } });
  assert.equal(ok.status, 200, ok.text);
  const refused = await http(server.baseURL, '/rerank', { body: { model: PLAIN, query, documents, instruction: 'find fish' } });
  assert.equal(refused.status, 400, refused.text);
  assert.equal(refused.json.error.param, 'instruction');
  assert.equal(refused.json.error.type, 'invalid_request_error');
});
