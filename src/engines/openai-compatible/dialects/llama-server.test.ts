// llama-server through engine openai-compatible: raw `<think>` text split across stream deltas
// (--reasoning-format none), reasoning_content (deepseek format), /rerank's raw logits, the context size
// from /v1/models' `meta`, from recorded answers over a real socket.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { http } from '../../../../test/helpers/server.ts';
import { readChatStream } from '../../../../test/helpers/chat-stream.ts';
import type { ChatModel } from '../../../spec/index.ts';
import { serve } from '../testing/fake-upstream.ts';
import { type Gateway, remoteModel, startGateway } from '../testing/gateway.ts';

describe('dialect llama-server', () => {
  let gateway: Gateway;
  let openai: OpenAI;
  before(async () => {
    gateway = await startGateway(() => [
      remoteModel('qwen3', 'chat', 'llama-server', { model: 'qwen3-8b-q4_k_m.gguf' }),
      remoteModel('bge-reranker', 'reranker', 'llama-server', { model: 'bge-reranker-v2-m3-q8_0.gguf' }),
    ]);
    openai = new OpenAI({ baseURL: gateway.server.baseURL, apiKey: 'unused', maxRetries: 0 });
    gateway.upstream.route('GET', '/v1/models', serve('llama-server/models.json'));
  });
  after(() => gateway.close());

  test("the context size comes from the model list's meta.n_ctx_train", async () => {
    const lease = await gateway.server.server.services.registry.acquire('qwen3', 'chat');
    lease.release();
    assert.equal((lease.model as ChatModel).contextSize, 40960);
  });

  test('stream with raw <think> text cut anywhere: reasoning and answer split; usage from the last chunk', async () => {
    gateway.upstream.route('POST', '/v1/chat/completions', serve('llama-server/chat-stream-raw-think.sse'));
    // @ts-expect-error enable_thinking
    const stream = await openai.chat.completions.create({ model: 'qwen3', messages: [{ role: 'user', content: 'hello' }], stream: true, enable_thinking: true });
    const { reasoning, content, usage } = await readChatStream(stream);
    assert.deepEqual([reasoning, content], ['The user wrote hello.', 'Hello!']);
    assert.equal(usage?.completion_tokens, 14);
    const sent = gateway.upstream.seen.at(-1)!.body;
    assert.deepEqual(sent.chat_template_kwargs, { enable_thinking: true });
  });

  test('JSON with reasoning_content (--reasoning-format deepseek)', async () => {
    gateway.upstream.route('POST', '/v1/chat/completions', serve('llama-server/chat-reasoning.json'));
    const completion = await openai.chat.completions.create({ model: 'qwen3', messages: [{ role: 'user', content: 'hello' }] });
    const message = completion.choices[0]!.message as { content: string; reasoning_content?: string };
    assert.deepEqual([message.reasoning_content, message.content], ['The user wrote hello.', 'Hello!']);
  });

  test('/rerank: raw logits become scores in 0..1, best first', async () => {
    gateway.upstream.route('POST', '/rerank', serve('llama-server/rerank.json'));
    const response = await http(gateway.server.baseURL, '/rerank', { body: { model: 'bge-reranker', query: 'capital of France', documents: ['Bananas are yellow.', 'Paris is the capital of France.'] } });
    assert.equal(response.status, 200, response.text);
    assert.deepEqual(response.json.results.map((r: { index: number }) => r.index), [1, 0]);
    const [best, worst] = response.json.results.map((r: { relevance_score: number }) => r.relevance_score);
    assert.ok(Math.abs(best - 1 / (1 + Math.exp(-5.125))) < 1e-9 && worst < 0.001, `${best} ${worst}`);
    assert.equal(response.json.tokens.input_tokens, 30);
  });
});
