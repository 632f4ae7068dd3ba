// vLLM (and SGLang, the same dialect) through engine openai-compatible: recorded answers served by a fake
// upstream over a real socket, the real Infera server in front, the openai SDK as the client.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { serve } from '../testing/fake-upstream.ts';
import { type Gateway, remoteModel, startGateway } from '../testing/gateway.ts';
import { readChatStream } from '../../../../test/helpers/chat-stream.ts';

describe('dialect vllm', () => {
  let gateway: Gateway;
  let openai: OpenAI;
  before(async () => {
    gateway = await startGateway(() => [
      remoteModel('qwen3', 'chat', 'vllm', { model: 'Qwen/Qwen3-8B' }),
      remoteModel('qwen3-raw', 'chat', 'vllm', { model: 'Qwen/Qwen3-8B' }),
      remoteModel('qwen3-isolated', 'chat', 'vllm', { model: 'Qwen/Qwen3-8B' }, { isolation: 'process' }),
      remoteModel('bge-m3', 'embedding', 'vllm', { model: 'BAAI/bge-m3', dimensions: 4 }),
      remoteModel('bge-reranker', 'reranker', 'vllm', { model: 'BAAI/bge-reranker-v2-m3' }),
    ]);
    openai = new OpenAI({ baseURL: gateway.server.baseURL, apiKey: 'unused', maxRetries: 0 });
    gateway.upstream.route('GET', '/v1/models', serve('vllm/models.json'));
  });
  after(() => gateway.close());
  const lastSent = (path: string) => gateway.upstream.seen.filter((r) => r.path === path).at(-1)!;

  test('JSON: reasoning_content and a tool call; thinking switches go to chat_template_kwargs; unknown fields pass through', async () => {
    gateway.upstream.route('POST', '/v1/chat/completions', serve('vllm/chat-tools.json'));
    const completion = await openai.chat.completions.create({
      model: 'qwen3',
      messages: [{ role: 'user', content: 'weather in Paris?' }],
      tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }],
      // @ts-expect-error SiliconFlow's and vLLM's own fields
      enable_thinking: true,
      thinking_budget: 512,
      top_k: 20,
      chat_template_kwargs: { custom: 1 },
      guided_decoding_backend: 'xgrammar',
    });
    const sent = lastSent('/v1/chat/completions').body;
    assert.equal(sent.model, 'Qwen/Qwen3-8B');
    assert.deepEqual(sent.chat_template_kwargs, { custom: 1, enable_thinking: true, thinking_budget: 512 });
    assert.equal(sent.enable_thinking, undefined, 'SiliconFlow field not sent to vLLM');
    assert.equal(sent.top_k, 20);
    assert.equal(sent.guided_decoding_backend, 'xgrammar', 'unknown field passed through');
    assert.equal(sent.stream, false);
    const message = completion.choices[0]!.message as typeof completion.choices[0]['message'] & { reasoning_content?: string };
    assert.equal(message.reasoning_content, 'The user asks about the weather. I will call get_weather.');
    assert.equal(completion.choices[0]!.finish_reason, 'tool_calls');
    const call = message.tool_calls![0]! as { id: string; function: { name: string; arguments: string } };
    assert.equal(call.id, 'chatcmpl-tool-5b0f7a3c9d2e4e1a8b6c');
    assert.deepEqual([call.function.name, JSON.parse(call.function.arguments)], ['get_weather', { city: 'Paris' }]);
    assert.equal(completion.usage?.prompt_tokens, 152);
    assert.equal(completion.usage?.completion_tokens, 35);
    const row = gateway.ledger().at(-1)!;
    assert.deepEqual([row.prompt_tokens, row.completion_tokens, row.status, row.outcome, row.note], [152, 35, 200, 'ok', null]);
  });

  test('JSON without a reasoning parser: the <think> block in content becomes reasoning_content', async () => {
    gateway.upstream.route('POST', '/v1/chat/completions', serve('vllm/chat-raw-think.json'));
    const completion = await openai.chat.completions.create({ model: 'qwen3-raw', messages: [{ role: 'user', content: 'hello' }] });
    const message = completion.choices[0]!.message as { content: string; reasoning_content?: string };
    assert.equal(message.reasoning_content, 'The user wrote hello.');
    assert.equal(message.content, 'Hello! How can I help?');
  });

  test('stream: `reasoning` deltas, usage asked for upstream though the client did not, [DONE]', async () => {
    gateway.upstream.route('POST', '/v1/chat/completions', serve('vllm/chat-stream-reasoning.sse'));
    const stream = await openai.chat.completions.create({ model: 'qwen3', messages: [{ role: 'user', content: 'hello' }], stream: true });
    let reasoning = '';
    let content = '';
    let finish: string | null = null;
    for await (const chunk of stream) {
      const delta = chunk.choices[0]?.delta as { content?: string; reasoning_content?: string } | undefined;
      reasoning += delta?.reasoning_content ?? '';
      content += delta?.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
      assert.notEqual(chunk.choices.length, 0, 'no separate usage chunk: the client did not ask');
    }
    assert.deepEqual([reasoning, content, finish], ['The user wrote hello.', 'Hello! How can I help?', 'stop']);
    assert.deepEqual(lastSent('/v1/chat/completions').body.stream_options, { include_usage: true });
    const [row] = (await gateway.ledgerRows(gateway.ledger().length)).slice(-1);
    assert.deepEqual([row!.prompt_tokens, row!.completion_tokens, row!.outcome], [12, 18, 'ok']);
    // vLLM gives no reasoning_tokens: the breakdown is counted from the reasoning text, within the total.
    assert.equal(row!.reasoning_tokens, Math.ceil('The user wrote hello.'.length / 3));
  });

  test('stream: tool-call deltas arrive as one call with its arguments in pieces', async () => {
    gateway.upstream.route('POST', '/v1/chat/completions', serve('vllm/chat-stream-tools.sse'));
    const stream = await openai.chat.completions.create({
      model: 'qwen3',
      messages: [{ role: 'user', content: 'weather?' }],
      tools: [{ type: 'function', function: { name: 'get_weather' } }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const { toolName: name, toolArgs: args, finish, usage } = await readChatStream(stream);
    assert.deepEqual([name, JSON.parse(args), finish], ['get_weather', { city: 'Paris' }, 'tool_calls']);
    assert.equal(usage?.prompt_tokens, 160);
  });

  test('isolation: process also works (the model in an engine process of its own, its own pool there)', async () => {
    gateway.upstream.route('POST', '/v1/chat/completions', serve('vllm/chat-stream-reasoning.sse'));
    const stream = await openai.chat.completions.create({ model: 'qwen3-isolated', messages: [{ role: 'user', content: 'hello' }], stream: true });
    let content = '';
    for await (const chunk of stream) content += chunk.choices[0]?.delta.content ?? '';
    assert.equal(content, 'Hello! How can I help?');
    const entry = gateway.server.server.services.registry.find('qwen3-isolated')!;
    assert.ok(entry.pid && entry.pid !== process.pid, 'served from an engine process');
  });

  test('prefix completion becomes continue_final_message', async () => {
    gateway.upstream.route('POST', '/v1/chat/completions', serve('vllm/chat-raw-think.json'));
    await openai.chat.completions.create({
      model: 'qwen3',
      // @ts-expect-error SiliconFlow's prefix flag
      messages: [{ role: 'user', content: 'count' }, { role: 'assistant', content: 'One, two', prefix: true }],
    });
    const sent = lastSent('/v1/chat/completions').body;
    assert.deepEqual([sent.continue_final_message, sent.add_generation_prompt, sent.messages[1].prefix], [true, false, undefined]);
  });

  test("an upstream 400 in vLLM's shape is a 400 naming the field, with the upstream in the message", async () => {
    gateway.upstream.route('POST', '/v1/chat/completions', serve('vllm/error-400.json', 400));
    const error = await openai.chat.completions.create({ model: 'qwen3', messages: [{ role: 'user', content: 'x' }], max_tokens: 50000 }).catch((e) => e);
    assert.ok(error instanceof OpenAI.BadRequestError);
    assert.equal((error.error as { param?: string }).param, 'max_tokens');
    assert.match(error.message, /upstream 127\.0\.0\.1:\d+ \(vllm\) answered 400: 'max_tokens' or 'max_completion_tokens' is too large/);
  });

  test('embeddings and rerank', async () => {
    gateway.upstream.route('POST', '/v1/embeddings', serve('vllm/embeddings.json'));
    gateway.upstream.route('POST', '/v1/rerank', serve('vllm/rerank.json'));
    const embeddings = await openai.embeddings.create({ model: 'bge-m3', input: ['a', 'b'] });
    assert.equal(embeddings.data.length, 2);
    assert.equal(embeddings.data[0]!.embedding.length, 4);
    assert.ok(Math.abs(embeddings.data[0]!.embedding[0]! - 0.12) < 1e-6);
    assert.equal(embeddings.usage.prompt_tokens, 9);
    assert.deepEqual(lastSent('/v1/embeddings').body, { model: 'BAAI/bge-m3', input: ['a', 'b'], encoding_format: 'float' });
    const response = await fetch(`${gateway.server.baseURL}/rerank`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'bge-reranker', query: 'capital of France', documents: ['Bananas are yellow.', 'Paris is the capital of France.'] }),
    });
    const body = (await response.json()) as { results: { index: number; relevance_score: number }[]; tokens: { input_tokens: number } };
    assert.equal(response.status, 200);
    assert.deepEqual(body.results.map((r) => r.index), [1, 0]);
    assert.equal(body.tokens.input_tokens, 38);
  });

  test('an instruction vLLM cannot take is refused naming the field', async () => {
    const response = await fetch(`${gateway.server.baseURL}/rerank`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'bge-reranker', query: 'q', documents: ['d'], max_chunks_per_doc: 2 }),
    });
    const body = (await response.json()) as { error: { param: string; message: string } };
    assert.equal(response.status, 400);
    assert.equal(body.error.param, 'max_chunks_per_doc');
  });
});
