// End to end: the real server, the real llama.cpp engine on the scripted tiny Qwen3 model, driven by
// the official openai SDK and by raw HTTP. Expected texts come from the model's own script constants.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import OpenAI from 'openai';
import { TINY_CHAT_SCRIPT, ensureTinyModels } from '../src/tiny-models/index.ts';
import { http, sseEvents, startTestServer, SHARED_DATA_DIR, type TestServer } from './helpers/server.ts';
import { validateAgainstOpenApi } from './helpers/openapi.ts';

const MODEL = 'Qwen/QwQ-32B'; // an alias of the tiny chat model, as the seed's curl example sends it
const weatherTool = {
  type: 'function' as const,
  function: {
    name: 'get_weather',
    description: 'Current weather in a city',
    // What LangChain and the AI SDK send: $schema and additionalProperties are accepted.
    parameters: {
      $schema: 'http://json-schema.org/draft-07/schema#',
      type: 'object',
      properties: { city: { type: 'string' } },
      required: ['city'],
      additionalProperties: false,
    },
  },
};

describe('chat completions end to end (openai SDK + raw HTTP)', () => {
  let server: TestServer;
  let client: OpenAI;
  before(async () => {
    server = await startTestServer();
    client = new OpenAI({ baseURL: server.baseURL, apiKey: 'unused-on-loopback', maxRetries: 0 });
  });
  after(() => server.close());

  const engineSlots = async () => {
    const lease = await server.server.services.registry.acquire(MODEL, 'chat');
    lease.release();
    // The model runs in its engine process: its queue is read across the boundary.
    return () => lease.model.stats!();
  };

  test('non-stream: reasoning_content split from the answer, usage with reasoning tokens, OpenAPI-valid', async () => {
    const completion = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hello there' }] });
    const choice = completion.choices[0];
    assert.equal(choice.message.content, TINY_CHAT_SCRIPT.answer);
    assert.equal((choice.message as unknown as { reasoning_content: string }).reasoning_content, TINY_CHAT_SCRIPT.reasoning);
    assert.equal(choice.finish_reason, 'stop');
    assert.equal(completion.model, MODEL);
    assert.equal(completion.object, 'chat.completion');
    const usage = completion.usage!;
    assert.ok(usage.prompt_tokens > 5);
    assert.ok(usage.completion_tokens_details!.reasoning_tokens! > 0);
    assert.ok(usage.completion_tokens > usage.completion_tokens_details!.reasoning_tokens!);
    assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
    assert.deepEqual(validateAgainstOpenApi('CreateChatCompletionResponse', completion), []);
  });

  test('enable_thinking:false suppresses the think block', async () => {
    const response = await http(server.baseURL, '/chat/completions', {
      body: { model: MODEL, messages: [{ role: 'user', content: 'hello' }], enable_thinking: false },
    });
    assert.equal(response.status, 200);
    const message = response.json.choices[0].message;
    assert.equal(message.content, TINY_CHAT_SCRIPT.answer);
    assert.ok(!message.reasoning_content, `unexpected reasoning: ${message.reasoning_content}`);
    assert.equal(response.json.usage.completion_tokens_details.reasoning_tokens, 0);
  });

  test('stream: strict SSE framing, role first, reasoning then content, usage on the finish chunk, [DONE]', async () => {
    const response = await http(server.baseURL, '/chat/completions', {
      body: { model: MODEL, messages: [{ role: 'user', content: 'hello' }], stream: true },
    });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
    const events = sseEvents(response.text);
    assert.equal(events.at(-1), '[DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
    for (const chunk of chunks) {
      assert.deepEqual(validateAgainstOpenApi('CreateChatCompletionStreamResponse', chunk), []);
      assert.ok(chunk.choices.length > 0, 'every chunk has choices (no include_usage requested)');
      assert.equal(typeof chunk.choices[0].delta.content, 'string', 'delta.content is always a string');
    }
    assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    const reasoning = chunks.map((c) => c.choices[0].delta.reasoning_content ?? '').join('');
    const content = chunks.map((c) => c.choices[0].delta.content).join('');
    assert.equal(reasoning.trim(), TINY_CHAT_SCRIPT.reasoning);
    assert.equal(content, TINY_CHAT_SCRIPT.answer);
    const last = chunks.at(-1);
    assert.equal(last.choices[0].finish_reason, 'stop');
    assert.ok(last.usage.completion_tokens > 0, 'cumulative usage rides on the finish chunk');
    assert.equal(chunks.filter((c) => c.choices[0].finish_reason).length, 1);
  });

  test('stream via the SDK with include_usage: a final choices:[] usage chunk', async () => {
    const stream = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let content = '';
    let usageChunk: OpenAI.Chat.Completions.ChatCompletionChunk | undefined;
    for await (const chunk of stream) {
      if (chunk.choices.length === 0) usageChunk = chunk;
      else content += chunk.choices[0].delta.content ?? '';
    }
    assert.equal(content, TINY_CHAT_SCRIPT.answer);
    assert.ok(usageChunk?.usage && usageChunk.usage.total_tokens > 0);
  });

  test('tools: the model calls get_weather; arguments are JSON; finish_reason tool_calls', async () => {
    const completion = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: "What's the weather in Paris?" }],
      tools: [weatherTool],
    });
    const choice = completion.choices[0];
    assert.equal(choice.finish_reason, 'tool_calls');
    const calls = choice.message.tool_calls!;
    assert.equal(calls.length, 1);
    assert.equal(calls[0].type, 'function');
    assert.match(calls[0].id, /^call_/);
    const call = calls[0] as OpenAI.Chat.Completions.ChatCompletionMessageFunctionToolCall;
    assert.equal(call.function.name, TINY_CHAT_SCRIPT.toolName);
    assert.deepEqual(JSON.parse(call.function.arguments), TINY_CHAT_SCRIPT.toolArguments);
    assert.ok(!choice.message.content?.includes('<tool_call>'), 'no raw tool-call markup leaks into content');
    assert.deepEqual(validateAgainstOpenApi('CreateChatCompletionResponse', completion), []);
  });

  test('tools streamed: one call with a stable index and id, arguments in fragments', async () => {
    const stream = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'weather in Paris please' }],
      tools: [weatherTool],
      stream: true,
    });
    let args = '';
    const ids = new Set<string>();
    const names: string[] = [];
    let finish: string | null = null;
    let content = '';
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      if (!choice) continue;
      content += choice.delta.content ?? '';
      for (const call of choice.delta.tool_calls ?? []) {
        assert.equal(call.index, 0);
        if (call.id) ids.add(call.id);
        if (call.function?.name) names.push(call.function.name);
        args += call.function?.arguments ?? '';
      }
      finish = choice.finish_reason ?? finish;
    }
    assert.equal(ids.size, 1);
    assert.deepEqual(names, [TINY_CHAT_SCRIPT.toolName]);
    assert.deepEqual(JSON.parse(args), TINY_CHAT_SCRIPT.toolArguments);
    assert.equal(finish, 'tool_calls');
    assert.ok(!content.includes('<tool_call>'));
  });

  test('tool_choice none: no call even when the model would call one', async () => {
    const completion = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'weather in Paris?' }],
      tools: [weatherTool],
      tool_choice: 'none',
      max_tokens: 40,
    });
    assert.equal(completion.choices[0].message.tool_calls ?? undefined, undefined);
    assert.notEqual(completion.choices[0].finish_reason, 'tool_calls');
  });

  test('history with an assistant tool call (and its reasoning) plus the tool result → the final answer', async () => {
    const completion = await client.chat.completions.create({
      model: MODEL,
      messages: [
        { role: 'user', content: "What's the weather in Paris?" },
        {
          role: 'assistant',
          content: null,
          reasoning_content: 'I should call get_weather.',
          tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }],
        } as OpenAI.Chat.Completions.ChatCompletionAssistantMessageParam,
        { role: 'tool', tool_call_id: 'call_1', content: '{"sky":"sunny","celsius":21}' },
      ],
      tools: [weatherTool],
    });
    assert.equal(completion.choices[0].message.content, TINY_CHAT_SCRIPT.toolAnswer);
    assert.equal(completion.choices[0].finish_reason, 'stop');
  });

  test('max_tokens caps the answer: finish_reason length', async () => {
    const completion = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'count for me' }],
      max_tokens: 7,
      enable_thinking: false,
    } as OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming);
    assert.equal(completion.choices[0].finish_reason, 'length');
    assert.equal(completion.usage!.completion_tokens, 7);
    assert.equal(completion.choices[0].message.content, TINY_CHAT_SCRIPT.countWords.slice(0, 7).join(''));
  });

  test('a tool call cut off by max_tokens: JSON and stream carry the same partial call, finish_reason length', async () => {
    // Two parameters, so that the scripted arguments take several tokens and max_tokens can cut them.
    const reportTool = {
      type: 'function' as const,
      function: {
        name: 'get_weather',
        parameters: {
          type: 'object',
          properties: { city: { type: 'string' }, temperature: { type: 'number' } },
          required: ['city', 'temperature'],
          additionalProperties: false,
        },
      },
    };
    const request = {
      model: MODEL,
      messages: [{ role: 'user' as const, content: 'weather in Paris?' }],
      tools: [reportTool],
      tool_choice: 'required' as const,
      temperature: 0,
      // The call's name takes three tokens, its arguments four more: five cut them after "Paris".
      max_tokens: 5,
    };
    const completion = await client.chat.completions.create(request);
    const choice = completion.choices[0];
    assert.equal(choice.finish_reason, 'length');
    const calls = choice.message.tool_calls as OpenAI.Chat.Completions.ChatCompletionMessageFunctionToolCall[] | undefined;
    assert.equal(calls?.length, 1, JSON.stringify(choice.message));
    assert.equal(calls![0].function.name, TINY_CHAT_SCRIPT.toolName);
    const partial = calls![0].function.arguments;
    assert.ok(partial.startsWith('{"city": ') && partial.length > '{"city": '.length, partial);
    assert.throws(() => JSON.parse(partial), 'the arguments were cut mid-object');
    assert.deepEqual(validateAgainstOpenApi('CreateChatCompletionResponse', completion), []);

    const final = await client.chat.completions.stream(request).finalChatCompletion();
    const streamed = final.choices[0];
    assert.equal(streamed.finish_reason, 'length');
    const streamedCalls = streamed.message.tool_calls as OpenAI.Chat.Completions.ChatCompletionMessageFunctionToolCall[];
    assert.equal(streamedCalls.length, 1);
    assert.equal(streamedCalls[0].function.name, TINY_CHAT_SCRIPT.toolName);
    assert.equal(streamedCalls[0].function.arguments, partial);
  });

  test('prefix completion: a last assistant message with prefix:true is continued, and the answer is the continuation only', async () => {
    const PREFIX = 'Sure, here it is:';
    const asked = { role: 'user' as const, content: 'hello there' };
    const withPrefix = [asked, { role: 'assistant', content: PREFIX, prefix: true }] as OpenAI.Chat.Completions.ChatCompletionMessageParam[];
    // Through the SDK: `prefix` is an extra field of the message, passed through as the client wrote it.
    const continued = await client.chat.completions.create({ model: MODEL, messages: withPrefix, temperature: 0 });
    const fresh = await client.chat.completions.create({ model: MODEL, messages: [asked], temperature: 0 });
    const newTurn = await client.chat.completions.create({
      model: MODEL,
      messages: [asked, { role: 'assistant', content: PREFIX }],
      temperature: 0,
    });
    const message = continued.choices[0].message as unknown as { content: string; reasoning_content?: string };
    assert.equal(continued.choices[0].finish_reason, 'stop');
    assert.ok(message.content.length > 0);
    assert.ok(!message.content.includes(PREFIX), `the prefix is not repeated: ${message.content}`);
    // The answer has begun, so there is no new thought; a fresh answer (or a new turn) thinks first.
    assert.equal(message.reasoning_content, undefined);
    assert.equal((fresh.choices[0].message as unknown as { reasoning_content: string }).reasoning_content, TINY_CHAT_SCRIPT.reasoning);
    assert.ok((newTurn.choices[0].message as unknown as { reasoning_content?: string }).reasoning_content);
    // The prefix is in the prompt as the open assistant turn: more than the fresh prompt, and fewer
    // than the same text as a finished message followed by a new turn.
    assert.ok(continued.usage!.prompt_tokens > fresh.usage!.prompt_tokens);
    assert.ok(continued.usage!.prompt_tokens < newTurn.usage!.prompt_tokens);
    assert.deepEqual(validateAgainstOpenApi('CreateChatCompletionResponse', continued), []);

    // Raw HTTP, JSON and stream: the same continuation.
    const body = { model: MODEL, messages: withPrefix, temperature: 0 };
    const json = await http(server.baseURL, '/chat/completions', { body });
    assert.equal(json.status, 200);
    assert.equal(json.json.choices[0].message.content, message.content);
    const streamed = await http(server.baseURL, '/chat/completions', { body: { ...body, stream: true } });
    assert.equal(streamed.status, 200);
    const chunks = sseEvents(streamed.text).slice(0, -1).map((e) => JSON.parse(e));
    assert.equal(chunks.map((c) => c.choices[0]?.delta.content ?? '').join(''), message.content);
    assert.ok(!chunks.some((c) => c.choices[0]?.delta.reasoning_content));
    assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');

    // prefix anywhere else is a 400 naming it, not silently ignored.
    for (const [messages, param] of [
      [[{ role: 'user', content: 'hi', prefix: true }], 'messages[0].prefix'],
      [[asked, { role: 'assistant', content: 'He', prefix: true }, { role: 'user', content: 'and?' }], 'messages[1].prefix'],
    ] as const) {
      const refused = await http(server.baseURL, '/chat/completions', { body: { model: MODEL, messages } });
      assert.equal(refused.status, 400);
      assert.equal(refused.json.error.param, param);
    }
  });

  test('stop sequences end the answer without returning the stop text', async () => {
    const completion = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'hello' }],
      stop: [' tiny'],
    });
    const expected = TINY_CHAT_SCRIPT.answer.slice(0, TINY_CHAT_SCRIPT.answer.indexOf(' tiny'));
    assert.equal(completion.choices[0].message.content, expected);
    assert.equal(completion.choices[0].finish_reason, 'stop');
  });

  test('response_format json_schema: output parses and matches the schema', async () => {
    const completion = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'answer in json' }],
      response_format: {
        type: 'json_schema',
        json_schema: {
          name: 'weather',
          schema: { type: 'object', properties: { city: { type: 'string' }, temperature: { type: 'number' } }, required: ['city', 'temperature'] },
        },
      },
    });
    const parsed = JSON.parse(completion.choices[0].message.content!);
    assert.equal(typeof parsed.city, 'string');
    assert.equal(typeof parsed.temperature, 'number');
  });

  test('n: 2 choices with their own indexes', async () => {
    const completion = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], n: 2 });
    assert.deepEqual(completion.choices.map((c) => c.index), [0, 1]);
    for (const choice of completion.choices) assert.equal(choice.message.content, TINY_CHAT_SCRIPT.answer);
  });

  test('bad input: 400 naming the field, through the SDK error classes; the server keeps serving', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ model: MODEL }, 'messages'],
      [{ model: MODEL, messages: [{ role: 'user', content: 'hi' }], temperature: 3 }, 'temperature'],
      [{ model: MODEL, messages: [{ role: 'user', content: 'hi' }], top_p: -1 }, 'top_p'],
      [{ model: MODEL, messages: [{ role: 'wizard', content: 'hi' }] }, 'messages[0].role'],
      [{ model: MODEL, messages: [{ role: 'user', content: 'hi' }], stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop'],
      [{ model: MODEL, messages: [{ role: 'user', content: 'hi' }], n: 0 }, 'n'],
      [{ messages: [{ role: 'user', content: 'hi' }] }, 'model'],
      [{ model: MODEL, messages: [{ role: 'user', content: 'hi' }], tools: [weatherTool], tool_choice: { type: 'function', function: { name: 'nope' } } }, 'tool_choice'],
    ];
    for (const [body, param] of cases) {
      const response = await http(server.baseURL, '/chat/completions', { body });
      assert.equal(response.status, 400, `${JSON.stringify(body)} → ${response.text}`);
      assert.ok(response.json.error.param?.startsWith(param), `param ${response.json.error.param} should name ${param}`);
      assert.ok(response.json.error.message.length > 10);
    }
    await assert.rejects(
      client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], temperature: 5 }),
      (error: unknown) => error instanceof OpenAI.BadRequestError && error.param === 'temperature',
    );
    await assert.rejects(
      client.chat.completions.create({ model: 'no/such-model', messages: [{ role: 'user', content: 'hi' }] }),
      (error: unknown) => error instanceof OpenAI.BadRequestError && error.param === 'model' && error.code === 'model_not_found',
    );
    const ok = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(ok.choices[0].message.content, TINY_CHAT_SCRIPT.answer);
  });

  test('prompt + max_tokens beyond the context → 400 context_length_exceeded', async () => {
    const response = await http(server.baseURL, '/chat/completions', {
      body: { model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 1_000_000 },
    });
    assert.equal(response.status, 400);
    assert.equal(response.json.error.code, 'context_length_exceeded');
    const long = await http(server.baseURL, '/chat/completions', {
      body: { model: MODEL, messages: [{ role: 'user', content: 'word '.repeat(5000) }] },
    });
    assert.equal(long.status, 400);
    assert.equal(long.json.error.code, 'context_length_exceeded');
  });

  // Best of three tries: on a shared 2-core box one poll can wait behind other processes for tens of
  // milliseconds; a server that did not cancel would hold the sequence to the end of the answer every time.
  test('a client that disconnects mid-stream frees its sequence within 100 ms', async () => {
    const slots = await engineSlots();
    const times: number[] = [];
    for (let attempt = 0; attempt < 3 && !(times.length > 0 && Math.min(...times) < 100); attempt++) {
      const controller = new AbortController();
      const response = await fetch(`${server.baseURL}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'count' }], stream: true, enable_thinking: false }),
        signal: controller.signal,
      });
      const reader = response.body!.getReader();
      let received = '';
      while (!received.includes(TINY_CHAT_SCRIPT.countWords[3])) received += new TextDecoder().decode((await reader.read()).value);
      assert.equal((await slots()).active, 1, 'the stream holds a sequence');
      const abortedAt = performance.now();
      controller.abort();
      while ((await slots()).active > 0 && performance.now() - abortedAt < 2000) await new Promise((r) => setTimeout(r, 2));
      times.push(performance.now() - abortedAt);
      assert.equal((await slots()).active, 0);
    }
    assert.ok(Math.min(...times) < 100, `sequence freed after ${times.map((t) => t.toFixed(1)).join(' / ')} ms`);
  });

  test('a client that disconnects before the first token (non-stream) frees its sequence', async () => {
    const slots = await engineSlots();
    const controller = new AbortController();
    const pending = fetch(`${server.baseURL}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'count' }], max_tokens: 1500 }),
      signal: controller.signal,
    }).catch((error: unknown) => error);
    while ((await slots()).active === 0) await new Promise((r) => setTimeout(r, 1));
    const abortedAt = performance.now();
    controller.abort();
    await pending;
    while ((await slots()).active > 0 && performance.now() - abortedAt < 2000) await new Promise((r) => setTimeout(r, 2));
    assert.equal((await slots()).active, 0);
    assert.ok(performance.now() - abortedAt < 100);
  });
});

describe('chat queue limits', () => {
  test('a full queue answers 503 with Retry-After; the server recovers', async () => {
    const paths = await ensureTinyModels(join(SHARED_DATA_DIR, 'tiny-models'));
    const server = await startTestServer({
      config: {
        models: [{ id: 'tiny/one-seat', type: 'chat', engine: 'llama-cpp', path: paths.chat, maxQueue: 0, llamaCpp: { sequences: 1, threads: 1, contextSize: 1024 } }],
      },
    });
    try {
      const controller = new AbortController();
      const holder = await fetch(`${server.baseURL}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'tiny/one-seat', messages: [{ role: 'user', content: 'count' }], stream: true }),
        signal: controller.signal,
      });
      assert.equal(holder.status, 200);
      const refused = await http(server.baseURL, '/chat/completions', { body: { model: 'tiny/one-seat', messages: [{ role: 'user', content: 'hi' }] } });
      assert.equal(refused.status, 503);
      assert.ok(Number(refused.headers.get('retry-after')) >= 1);
      assert.equal(refused.json.code, 50505);
      const client = new OpenAI({ baseURL: server.baseURL, apiKey: 'x', maxRetries: 0 });
      await assert.rejects(client.chat.completions.create({ model: 'tiny/one-seat', messages: [{ role: 'user', content: 'hi' }] }), OpenAI.InternalServerError);
      controller.abort();
      await new Promise((r) => setTimeout(r, 150));
      const after = await http(server.baseURL, '/chat/completions', { body: { model: 'tiny/one-seat', messages: [{ role: 'user', content: 'hi' }] } });
      assert.equal(after.status, 200);
      assert.equal(after.json.choices[0].message.content, TINY_CHAT_SCRIPT.answer);
    } finally {
      await server.close();
    }
  });
});
