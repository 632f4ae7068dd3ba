// The reference client end to end over the protocol layer alone: the real `openai` SDK builds the
// request body (parsed by parseChatRequest) and parses what the response builder / stream converter
// produce, through a fetch function instead of a socket. The engine side is scripted results — the
// thing under test is the wire format, not generation.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { InferaError } from '../../errors/index.ts';
import { errorBody } from '../../errors/render.ts';
import type { ChatResult, ChatStreamPart } from '../../spec/chat.ts';
import { parseChatRequest, type ParsedChatRequest } from './request.ts';
import { buildChatCompletion, newChatCompletionId } from './response.ts';
import { chatCompletionFrames, chatStreamErrorFrames } from './stream.ts';

const usage = { promptTokens: 11, completionTokens: 8, reasoningTokens: 3, cachedPromptTokens: 0 };

type Script = (request: ParsedChatRequest) => { result: ChatResult; parts: (ChatStreamPart | Error)[] };

function clientFor(script: Script, seen: ParsedChatRequest[] = []): OpenAI {
  const fetchImpl = async (_url: string | URL | Request, init?: RequestInit): Promise<Response> => {
    let request: ParsedChatRequest;
    try {
      request = parseChatRequest(JSON.parse(String(init?.body)));
    } catch (error) {
      const e = error as InferaError;
      return new Response(JSON.stringify(errorBody(e)), { status: e.status, headers: { 'content-type': 'application/json' } });
    }
    seen.push(request);
    const { result, parts } = script(request);
    const meta = { id: newChatCompletionId(), created: Math.floor(Date.now() / 1000), model: request.model, legacyFunctions: request.legacyFunctions };
    if (!request.stream) {
      const body = buildChatCompletion(meta, Array.from({ length: request.n }, () => result));
      return new Response(JSON.stringify(body), { status: 200, headers: { 'content-type': 'application/json' } });
    }
    async function* engine(): AsyncGenerator<ChatStreamPart> {
      for (const part of parts) {
        if (part instanceof Error) throw part;
        yield part;
      }
    }
    const frames = chatCompletionFrames(meta, Array.from({ length: request.n }, () => engine()), { includeUsage: request.includeUsage });
    const encoder = new TextEncoder();
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const next = await frames.next();
          if (next.done) controller.close();
          else controller.enqueue(encoder.encode(next.value));
        } catch (error) {
          for (const frame of chatStreamErrorFrames(error)) controller.enqueue(encoder.encode(frame));
          controller.close();
        }
      },
      async cancel() {
        await frames.return();
      },
    });
    return new Response(body, { status: 200, headers: { 'content-type': 'text/event-stream' } });
  };
  return new OpenAI({ apiKey: 'sk-test', baseURL: 'http://infera.test/v1', fetch: fetchImpl as typeof fetch, maxRetries: 0 });
}

const answer: ChatResult = { text: 'Hello!', reasoning: 'Greet.', toolCalls: [], finishReason: 'stop', usage, warnings: [] };
const answerParts: ChatStreamPart[] = [
  { type: 'reasoning-delta', text: 'Gr' },
  { type: 'reasoning-delta', text: 'eet.' },
  { type: 'text-delta', text: 'Hel' },
  { type: 'text-delta', text: 'lo!' },
  { type: 'finish', finishReason: 'stop', usage },
];

test('non-stream: the SDK reads content, reasoning_content and usage', async () => {
  const seen: ParsedChatRequest[] = [];
  const client = clientFor(() => ({ result: answer, parts: answerParts }), seen);
  const completion = await client.chat.completions.create({
    model: 'Qwen/Qwen3-8B',
    messages: [{ role: 'developer', content: 'Be brief.' }, { role: 'user', content: 'hi' }],
    max_completion_tokens: 64,
    temperature: 0.2,
    n: 2,
  });
  assert.equal(completion.object, 'chat.completion');
  assert.equal(completion.model, 'Qwen/Qwen3-8B');
  assert.equal(completion.choices.length, 2);
  assert.equal(completion.choices[1]!.message.content, 'Hello!');
  assert.equal((completion.choices[0]!.message as unknown as { reasoning_content: string }).reasoning_content, 'Greet.');
  assert.equal(completion.usage?.completion_tokens, 16);
  assert.equal(completion.usage?.completion_tokens_details?.reasoning_tokens, 6);
  assert.deepEqual(seen[0]!.options.messages[0], { role: 'system', content: 'Be brief.' });
  assert.equal(seen[0]!.options.maxTokens, 64);
});

test('stream: the SDK accumulates the same message, and usage arrives only when asked for', async () => {
  const client = clientFor(() => ({ result: answer, parts: answerParts }));
  const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
  const stream = await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'hi' }], stream: true });
  for await (const chunk of stream) chunks.push(chunk);
  assert.equal(chunks.map((c) => c.choices[0]?.delta.content ?? '').join(''), 'Hello!');
  assert.equal(chunks.filter((c) => c.choices.length === 0).length, 0, 'no usage chunk without include_usage');

  const runner = client.chat.completions.stream({
    model: 'm',
    messages: [{ role: 'user', content: 'hi' }],
    stream_options: { include_usage: true },
  });
  const final = await runner.finalChatCompletion();
  assert.equal(final.choices[0]!.message.content, 'Hello!');
  assert.equal(final.choices[0]!.finish_reason, 'stop');
  assert.equal(final.usage?.total_tokens, 19);
});

test('stream with tool calls after reasoning: the SDK rebuilds complete calls', async () => {
  const parts: ChatStreamPart[] = [
    { type: 'reasoning-delta', text: 'Need weather and time.' },
    { type: 'tool-call-start', index: 0, id: 'call_w', name: 'get_weather' },
    { type: 'tool-call-delta', index: 0, argumentsDelta: '{"city":' },
    { type: 'tool-call-delta', index: 0, argumentsDelta: '"Paris"}' },
    { type: 'tool-call-start', index: 1, id: 'call_t', name: 'get_time' },
    { type: 'tool-call-delta', index: 1, argumentsDelta: '{}' },
    { type: 'finish', finishReason: 'tool_calls', usage },
  ];
  const client = clientFor(() => ({ result: answer, parts }));
  const runner = client.chat.completions.stream({
    model: 'm',
    messages: [{ role: 'user', content: 'weather?' }],
    tools: [
      { type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } },
      { type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: {} } } },
    ],
  });
  const final = await runner.finalChatCompletion();
  const message = final.choices[0]!.message;
  assert.equal(final.choices[0]!.finish_reason, 'tool_calls');
  assert.deepEqual(
    message.tool_calls?.map((c) => (c.type === 'function' ? [c.id, c.function.name, c.function.arguments] : [])),
    [
      ['call_w', 'get_weather', '{"city":"Paris"}'],
      ['call_t', 'get_time', '{}'],
    ],
  );
});

test('a mid-stream error frame makes the SDK throw', async () => {
  const parts = [{ type: 'text-delta', text: 'par' } as ChatStreamPart, new InferaError({ status: 500, message: 'engine crashed' })];
  const client = clientFor(() => ({ result: answer, parts }));
  const stream = await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'hi' }], stream: true });
  await assert.rejects(async () => {
    for await (const _chunk of stream) {
      // consume until the error frame
    }
  }, /engine crashed/);
});

test('a bad parameter reaches the SDK as a BadRequestError naming the param', async () => {
  const client = clientFor(() => ({ result: answer, parts: answerParts }));
  await assert.rejects(
    client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'hi' }], temperature: 3 }),
    (error: unknown) => {
      assert.ok(error instanceof OpenAI.BadRequestError);
      assert.equal(error.status, 400);
      assert.equal(error.param, 'temperature');
      assert.match(error.message, /temperature: must be between 0 and 2/);
      return true;
    },
  );
});
