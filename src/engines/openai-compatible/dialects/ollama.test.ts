// Ollama through engine openai-compatible: its /v1 API and, with `native: true`, /api/chat (NDJSON
// stream, `thinking`, object arguments) and /api/embed, from recorded answers over a real socket.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { http } from '../../../../test/helpers/server.ts';
import { readChatStream } from '../../../../test/helpers/chat-stream.ts';
import { serve } from '../testing/fake-upstream.ts';
import { type Gateway, remoteModel, startGateway } from '../testing/gateway.ts';

describe('dialect ollama', () => {
  let gateway: Gateway;
  let openai: OpenAI;
  before(async () => {
    gateway = await startGateway((url) => [
      remoteModel('qwen3', 'chat', 'ollama', { model: 'qwen3:8b' }),
      remoteModel('qwen3-native', 'chat', 'ollama', { model: 'qwen3:8b', baseUrl: url, native: true }),
      remoteModel('nomic', 'embedding', 'ollama', { model: 'nomic-embed-text', baseUrl: url, native: true }),
    ]);
    openai = new OpenAI({ baseURL: gateway.server.baseURL, apiKey: 'unused', maxRetries: 0 });
    gateway.upstream.route('GET', '/v1/models', serve('ollama/models.json'));
  });
  after(() => gateway.close());
  const lastSent = (path: string) => gateway.upstream.seen.filter((r) => r.path === path).at(-1)!;

  test('/v1: `reasoning` becomes reasoning_content; thinking off is reasoning_effort none', async () => {
    gateway.upstream.route('POST', '/v1/chat/completions', serve('ollama/chat-v1.json'));
    // @ts-expect-error SiliconFlow's switch
    const completion = await openai.chat.completions.create({ model: 'qwen3', messages: [{ role: 'user', content: 'hello' }], enable_thinking: false });
    const message = completion.choices[0]!.message as { content: string; reasoning_content?: string };
    assert.deepEqual([message.reasoning_content, message.content], ['The user wrote hello.', 'Hello!']);
    assert.equal(lastSent('/v1/chat/completions').body.reasoning_effort, 'none');
    assert.equal(completion.usage?.total_tokens, 23);
  });

  test('native stream: NDJSON with `thinking`, counts from prompt_eval_count / eval_count, options mapped', async () => {
    gateway.upstream.route('POST', '/api/chat', serve('ollama/chat-native-stream.ndjson'));
    const stream = await openai.chat.completions.create({
      model: 'qwen3-native',
      messages: [{ role: 'user', content: 'hello' }],
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 100,
      temperature: 0.2,
      // @ts-expect-error Ollama's own field passes through
      keep_alive: '5m',
    });
    const { reasoning, content, usage } = await readChatStream(stream);
    assert.deepEqual([reasoning, content], ['The user wrote hello.', 'Hello!']);
    assert.deepEqual([usage?.prompt_tokens, usage?.completion_tokens], [14, 9]);
    const sent = lastSent('/api/chat').body;
    assert.deepEqual(sent.options, { num_predict: 100, temperature: 0.2 });
    assert.equal(sent.keep_alive, '5m');
    assert.equal(sent.stream, true);
    assert.equal(sent.stream_options, undefined);
  });

  test('native JSON: tool calls with object arguments; history arguments go back as objects', async () => {
    gateway.upstream.route('POST', '/api/chat', serve('ollama/chat-native-tools.json'));
    const completion = await openai.chat.completions.create({
      model: 'qwen3-native',
      messages: [
        { role: 'user', content: 'weather?' },
        { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Rome"}' } }] },
        { role: 'tool', tool_call_id: 'c1', content: 'sunny' },
        { role: 'user', content: 'and Paris?' },
      ],
      tools: [{ type: 'function', function: { name: 'get_weather' } }],
    });
    const call = completion.choices[0]!.message.tool_calls![0]! as { function: { name: string; arguments: string } };
    assert.deepEqual([call.function.name, JSON.parse(call.function.arguments)], ['get_weather', { city: 'Paris' }]);
    assert.equal(completion.choices[0]!.finish_reason, 'tool_calls');
    const sent = lastSent('/api/chat').body;
    assert.deepEqual(sent.messages[1].tool_calls, [{ function: { name: 'get_weather', arguments: { city: 'Rome' } } }]);
    assert.equal(sent.messages[2].tool_name, 'get_weather');
  });

  test('what Ollama cannot do is refused naming the field', async () => {
    const refused = async (body: Record<string, unknown>, param: string) => {
      const response = await http(gateway.server.baseURL, '/chat/completions', { body: { model: 'qwen3-native', messages: [{ role: 'user', content: 'x' }], ...body } });
      assert.equal(response.status, 400, response.text);
      assert.equal(response.json.error.param, param);
    };
    await refused({ thinking_budget: 1024 }, 'thinking_budget');
    await refused({ logprobs: true }, 'logprobs');
    await refused({ tools: [{ type: 'function', function: { name: 'f' } }], tool_choice: 'required' }, 'tool_choice');
    await refused({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://example.com/cat.png' } }] }] }, 'messages[0].content[0]');
  });

  test('native /api/embed', async () => {
    gateway.upstream.route('POST', '/api/embed', serve('ollama/embed.json'));
    const embeddings = await openai.embeddings.create({ model: 'nomic', input: ['a', 'b'] });
    assert.equal(embeddings.data.length, 2);
    assert.equal(embeddings.usage.prompt_tokens, 8);
    assert.deepEqual(lastSent('/api/embed').body, { model: 'nomic-embed-text', input: ['a', 'b'] });
  });
});
