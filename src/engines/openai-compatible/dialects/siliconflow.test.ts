// SiliconFlow's cloud API through engine openai-compatible: reasoning_content deltas with usage on the
// chunks, enable_thinking / thinking_budget as its own fields, rerank with chunking and `tokens`, images
// fetched from the links it answers with; from recorded answers over a real socket.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { http } from '../../../../test/helpers/server.ts';
import { readChatStream } from '../../../../test/helpers/chat-stream.ts';
import { serve } from '../testing/fake-upstream.ts';
import { type Gateway, remoteModel, startGateway } from '../testing/gateway.ts';

/** The smallest PNG: one transparent pixel. */
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=', 'base64');

describe('dialect siliconflow', () => {
  let gateway: Gateway;
  let openai: OpenAI;
  before(async () => {
    gateway = await startGateway(() => [
      remoteModel('Qwen/Qwen3-8B', 'chat', 'siliconflow'),
      remoteModel('BAAI/bge-reranker-v2-m3', 'reranker', 'siliconflow', {}, { acceptsInstruction: true }),
      remoteModel('Kwai-Kolors/Kolors', 'text-to-image', 'siliconflow'),
    ]);
    openai = new OpenAI({ baseURL: gateway.server.baseURL, apiKey: 'unused', maxRetries: 0 });
    gateway.upstream.route('GET', '/v1/models', serve('siliconflow/models-chat.json'));
  });
  after(() => gateway.close());
  const lastSent = (path: string) => gateway.upstream.seen.filter((r) => r.path === path).at(-1)!;

  test('stream: reasoning_content, thinking fields as SiliconFlow names them, usage with reasoning tokens', async () => {
    gateway.upstream.route('POST', '/v1/chat/completions', serve('siliconflow/chat-stream.sse'));
    const stream = await openai.chat.completions.create({
      model: 'Qwen/Qwen3-8B',
      messages: [{ role: 'user', content: 'hello' }],
      stream: true,
      stream_options: { include_usage: true },
      // @ts-expect-error SiliconFlow's fields
      enable_thinking: true,
      thinking_budget: 1024,
    });
    const { reasoning, content, usage } = await readChatStream(stream);
    assert.deepEqual([reasoning, content], ['The user wrote hello.', 'Hello!']);
    assert.deepEqual([usage?.completion_tokens, usage?.completion_tokens_details?.reasoning_tokens], [7, 4]);
    const sent = lastSent('/v1/chat/completions').body;
    assert.deepEqual([sent.enable_thinking, sent.thinking_budget, sent.chat_template_kwargs], [true, 1024, undefined]);
  });

  test('rerank: chunking options and the instruction go through; usage from `tokens`', async () => {
    gateway.upstream.route('POST', '/v1/rerank', serve('siliconflow/rerank.json'));
    const response = await http(gateway.server.baseURL, '/rerank', {
      body: { model: 'BAAI/bge-reranker-v2-m3', query: 'capital', documents: ['Bananas are yellow.', 'Paris is the capital of France.'], max_chunks_per_doc: 4, overlap_tokens: 16, instruction: 'Find facts' },
    });
    assert.equal(response.status, 200, response.text);
    assert.deepEqual(response.json.results.map((r: { index: number }) => r.index), [1, 0]);
    assert.equal(response.json.tokens.input_tokens, 29);
    const sent = lastSent('/v1/rerank').body;
    assert.deepEqual([sent.max_chunks_per_doc, sent.overlap_tokens, sent.instruction], [4, 16, 'Find facts']);
  });

  test('images: SiliconFlow fields out, the file fetched from its link and served by Infera', async () => {
    gateway.upstream.route('POST', '/v1/images/generations', serve('siliconflow/images.json'));
    gateway.upstream.route('GET', '/outputs/0193a6c3.png', (_request, response) => {
      response.writeHead(200, { 'content-type': 'image/png' });
      response.end(PNG);
    });
    const response = await http(gateway.server.baseURL, '/images/generations', {
      body: { model: 'Kwai-Kolors/Kolors', prompt: 'a cat', image_size: '512x512', num_inference_steps: 20, seed: 42 },
    });
    assert.equal(response.status, 200, response.text);
    const sent = lastSent('/v1/images/generations').body;
    assert.deepEqual([sent.image_size, sent.num_inference_steps, sent.seed, sent.batch_size], ['512x512', 20, 42, 1]);
    const file = await fetch(response.json.images[0].url);
    assert.equal(file.status, 200);
    assert.deepEqual(Buffer.from(await file.arrayBuffer()), PNG);
    assert.equal(response.json.seed, 42);
  });
});
