import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InferaError } from '../../errors/index.ts';
import { MAX_CHOICES, chatRequestSchema, parseChatRequest, parseChatRequestOrRefusal, plainChatBody, type ParsedChatRequest } from './request.ts';
import { DEFAULT_REQUEST_LIMITS } from '../../config/requests.ts';
import { parseBody } from '../common/validation.ts';

const base = { model: 'Qwen/Qwen3-8B', messages: [{ role: 'user', content: 'hi' }] };
const parse = (extra: Record<string, unknown>): ParsedChatRequest => parseChatRequest({ ...base, ...extra });

/** Assert a 400 whose param names the field (and whose message starts with it). */
function rejects(body: unknown, param: string | null, message?: RegExp): void {
  assert.throws(
    () => parseChatRequest(body),
    (error: unknown) => {
      assert.ok(error instanceof InferaError, `expected InferaError, got ${String(error)}`);
      assert.equal(error.status, 400);
      assert.equal(error.type, 'invalid_request_error');
      assert.equal(error.param, param, `param for ${JSON.stringify(body)}: ${error.message}`);
      if (param) assert.ok(error.message.startsWith(param), `message names the field: ${error.message}`);
      if (message) assert.match(error.message, message);
      return true;
    },
  );
}
const rejectsField = (extra: Record<string, unknown>, param: string, message?: RegExp) => rejects({ ...base, ...extra }, param, message);

test('a minimal body gives defaults', () => {
  assert.deepEqual(parseChatRequest(base), {
    model: 'Qwen/Qwen3-8B',
    stream: false,
    includeUsage: false,
    n: 1,
    legacyFunctions: false,
    options: { messages: [{ role: 'user', content: 'hi' }], sampling: {}, thinking: {} },
  });
});

test('bodies that are not JSON objects are refused', () => {
  for (const body of [null, undefined, 'text', 42, [base], true]) rejects(body, null, /JSON object/);
});

test('model and messages are required and typed', () => {
  rejects({ messages: base.messages }, 'model', /is required/);
  rejects({ ...base, model: '' }, 'model', /must not be empty/);
  rejects({ ...base, model: 7 }, 'model', /must be a string/);
  rejects({ model: 'm' }, 'messages', /is required/);
  rejects({ model: 'm', messages: [] }, 'messages', /at least one message/);
  rejects({ model: 'm', messages: 'hi' }, 'messages', /must be an array/);
});

test('message roles and content shapes', () => {
  rejectsField({ messages: [{ role: 'bot', content: 'x' }] }, 'messages[0].role', /must be one of/);
  rejectsField({ messages: [{ content: 'x' }] }, 'messages[0].role');
  rejectsField({ messages: [{ role: 'user', content: 'ok' }, { role: 'user', content: 5 }] }, 'messages[1].content', /string or an array/);
  rejectsField({ messages: [{ role: 'user' }] }, 'messages[0].content', /is required/);
  rejectsField({ messages: [{ role: 'user', content: [{ type: 'text' }] }] }, 'messages[0].content[0].text', /is required/);
  rejectsField({ messages: [{ role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'audio' }] }] }, 'messages[0].content[1].type', /"text", "image_url", "video_url"/);
  rejectsField({ messages: [{ role: 'user', content: [{ type: 'input_audio', input_audio: { data: '', format: 'wav' } }] }] }, 'messages[0].content[0].type', /not supported/);
  rejectsField({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { detail: 'low' } }] }] }, 'messages[0].content[0].image_url.url', /is required/);
  rejectsField({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'u', detail: 'ultra' } }] }] }, 'messages[0].content[0].image_url.detail');
  rejectsField({ messages: [{ role: 'system', content: [{ type: 'image_url', image_url: { url: 'u' } }] }] }, 'messages[0].content[0].type');
});

test('content parts map to spec parts (image detail, video, image_url as string)', () => {
  const parsed = parse({
    messages: [
      { role: 'system', content: [{ type: 'text', text: 'be' }, { type: 'text', text: 'brief' }] },
      { role: 'developer', content: 'dev rules' },
      {
        role: 'user',
        content: [
          { type: 'text', text: 'look' },
          { type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA', detail: 'high' } },
          { type: 'image_url', image_url: { url: 'https://x/y.png' } },
          { type: 'image_url', image_url: 'https://x/z.png' },
          { type: 'video_url', video_url: { url: 'https://x/v.mp4' } },
        ],
        name: 'ignored-participant-name',
      },
    ],
  });
  assert.deepEqual(parsed.options.messages, [
    { role: 'system', content: 'be\nbrief' },
    { role: 'system', content: 'dev rules' },
    {
      role: 'user',
      content: [
        { type: 'text', text: 'look' },
        { type: 'image', url: 'data:image/png;base64,AAAA', detail: 'high' },
        { type: 'image', url: 'https://x/y.png' },
        { type: 'image', url: 'https://x/z.png' },
        { type: 'video', url: 'https://x/v.mp4' },
      ],
    },
  ]);
});

test('assistant history: reasoning_content / reasoning, tool calls, null content, refusal parts', () => {
  const parsed = parse({
    messages: [
      { role: 'user', content: 'q' },
      { role: 'assistant', content: 'a', reasoning_content: 'thought' },
      { role: 'user', content: 'q2' },
      { role: 'assistant', content: [{ type: 'text', text: 'b' }, { type: 'refusal', refusal: 'no' }], reasoning: 'other' },
      { role: 'user', content: 'q3' },
      {
        role: 'assistant',
        content: null,
        tool_calls: [
          { id: 'call_a', type: 'function', function: { name: 'f', arguments: '{"x":1}' } },
          { id: 'call_b', type: 'function', function: { name: 'g', arguments: { y: 2 } } },
        ],
      },
      { role: 'tool', tool_call_id: 'call_b', content: 'G' },
      { role: 'tool', content: [{ type: 'text', text: 'F' }] },
    ],
  });
  assert.deepEqual(parsed.options.messages.slice(1), [
    { role: 'assistant', content: 'a', reasoning: 'thought' },
    { role: 'user', content: 'q2' },
    { role: 'assistant', content: 'b\nno', reasoning: 'other' },
    { role: 'user', content: 'q3' },
    {
      role: 'assistant',
      content: null,
      toolCalls: [
        { id: 'call_a', name: 'f', arguments: '{"x":1}' },
        { id: 'call_b', name: 'g', arguments: '{"y":2}' },
      ],
    },
    { role: 'tool', content: 'G', toolCallId: 'call_b', name: 'g' },
    // No tool_call_id: matched by position (second answer → second call).
    { role: 'tool', content: 'F', toolCallId: 'call_b', name: 'g' },
  ]);
});

test('tool messages must answer a preceding assistant tool call', () => {
  rejectsField({ messages: [{ role: 'user', content: 'q' }, { role: 'tool', tool_call_id: 'c', content: 'r' }] }, 'messages[1]', /preceding assistant/);
  const calls = { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } }] };
  rejectsField({ messages: [{ role: 'user', content: 'q' }, calls, { role: 'user', content: 'x' }, { role: 'tool', tool_call_id: 'c1', content: 'r' }] }, 'messages[3]');
  rejectsField({ messages: [{ role: 'user', content: 'q' }, calls, { role: 'tool', tool_call_id: 'nope', content: 'r' }] }, 'messages[2].tool_call_id', /c1/);
  rejectsField({ messages: [{ role: 'user', content: 'q' }, calls, { role: 'tool', tool_call_id: 'c1' }] }, 'messages[2].content', /is required/);
  // An assistant tool call without an answer yet is accepted (the engine renders the call alone).
  assert.equal(parse({ messages: [{ role: 'user', content: 'q' }, calls] }).options.messages.length, 2);
});

test('stream and stream_options.include_usage', () => {
  assert.deepEqual([parse({ stream: true }).stream, parse({ stream: true }).includeUsage], [true, false]);
  assert.equal(parse({ stream: true, stream_options: { include_usage: true } }).includeUsage, true);
  assert.equal(parse({ stream: true, stream_options: null }).includeUsage, false);
  // Without streaming there is no usage chunk to send.
  assert.equal(parse({ stream: false, stream_options: { include_usage: true } }).includeUsage, false);
  assert.equal(parse({ stream: null }).stream, false);
  rejectsField({ stream: 'yes' }, 'stream', /must be a boolean/);
  rejectsField({ stream: true, stream_options: { include_usage: 1 } }, 'stream_options.include_usage');
});

test('max_tokens and max_completion_tokens (the tighter cap wins)', () => {
  assert.equal(parse({ max_tokens: 5 }).options.maxTokens, 5);
  assert.equal(parse({ max_completion_tokens: 9 }).options.maxTokens, 9);
  assert.equal(parse({ max_tokens: 50, max_completion_tokens: 9 }).options.maxTokens, 9);
  assert.equal(parse({ max_tokens: null }).options.maxTokens, undefined);
  rejectsField({ max_tokens: 0 }, 'max_tokens', />= 1/);
  rejectsField({ max_tokens: 1.5 }, 'max_tokens', /integer/);
  rejectsField({ max_completion_tokens: -3 }, 'max_completion_tokens');
});

test('sampling fields map and are range-checked', () => {
  const parsed = parse({
    temperature: 0.7,
    top_p: 0.9,
    top_k: 40,
    min_p: 0.05,
    frequency_penalty: 0.5,
    presence_penalty: -0.5,
    repetition_penalty: 1.1,
    seed: 42,
  });
  assert.deepEqual(parsed.options.sampling, {
    temperature: 0.7,
    topP: 0.9,
    topK: 40,
    minP: 0.05,
    frequencyPenalty: 0.5,
    presencePenalty: -0.5,
    repetitionPenalty: 1.1,
    seed: 42,
  });
  assert.deepEqual(parse({ top_k: -1 }).options.sampling, {}, 'top_k -1 is "disabled", the default');
  assert.deepEqual(parse({ top_k: 0 }).options.sampling, {});
  assert.deepEqual(parse({ temperature: 0, top_p: 1 }).options.sampling, { temperature: 0, topP: 1 });
  rejectsField({ temperature: 2.5 }, 'temperature', /temperature: must be between 0 and 2/);
  rejectsField({ temperature: -0.1 }, 'temperature', /between 0 and 2/);
  rejectsField({ temperature: '1' }, 'temperature', /must be a number, not a string/);
  rejectsField({ top_p: 1.5 }, 'top_p', /between 0 and 1/);
  rejectsField({ top_k: -2 }, 'top_k');
  rejectsField({ top_k: 2.5 }, 'top_k', /integer/);
  rejectsField({ min_p: 1.01 }, 'min_p', /between 0 and 1/);
  rejectsField({ frequency_penalty: 3 }, 'frequency_penalty', /between -2 and 2/);
  rejectsField({ presence_penalty: -2.1 }, 'presence_penalty', /between -2 and 2/);
  rejectsField({ repetition_penalty: 0 }, 'repetition_penalty', /> 0/);
  rejectsField({ seed: 1.5 }, 'seed', /integer/);
  rejectsField({ seed: 'x' }, 'seed');
});

test('stop: null, string, array ≤ 4, empty strings dropped', () => {
  assert.equal(parse({ stop: null }).options.stop, undefined);
  assert.deepEqual(parse({ stop: 'END' }).options.stop, ['END']);
  assert.deepEqual(parse({ stop: ['a', 'b', '', 'd'] }).options.stop, ['a', 'b', 'd']);
  assert.equal(parse({ stop: '' }).options.stop, undefined);
  rejectsField({ stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop', /at most 4/);
  rejectsField({ stop: 3 }, 'stop', /string or an array of strings/);
  rejectsField({ stop: ['a', 3] }, 'stop[1]', /must be a string/);
});

test(`n: 1..${MAX_CHOICES}`, () => {
  assert.equal(parse({ n: 3 }).n, 3);
  assert.equal(parse({ n: null }).n, 1);
  rejectsField({ n: 0 }, 'n', /between 1 and 8/);
  rejectsField({ n: MAX_CHOICES + 1 }, 'n', /between 1 and 8/);
  rejectsField({ n: 1.5 }, 'n', /integer/);
});

test('user is passed on (numbers as strings)', () => {
  assert.equal(parse({ user: 'u-1' }).user, 'u-1');
  assert.equal(parse({ user: 77 }).user, '77');
  assert.equal('user' in parse({ user: null }), false);
  rejectsField({ user: {} }, 'user');
});

test('response_format: text, json_object, json_schema', () => {
  assert.deepEqual(parse({ response_format: { type: 'text' } }).options.responseFormat, { type: 'text' });
  assert.deepEqual(parse({ response_format: { type: 'json_object' } }).options.responseFormat, { type: 'json_object' });
  const schema = { type: 'object', properties: { a: { type: 'string' } }, required: ['a'], additionalProperties: false };
  assert.deepEqual(parse({ response_format: { type: 'json_schema', json_schema: { name: 'r', schema, strict: true } } }).options.responseFormat, {
    type: 'json_schema',
    name: 'r',
    schema,
    strict: true,
  });
  assert.deepEqual(parse({ response_format: { type: 'json_schema', json_schema: { name: 'any' } } }).options.responseFormat, { type: 'json_object' });
  assert.equal(parse({ response_format: null }).options.responseFormat, undefined);
  rejectsField({ response_format: { type: 'yaml' } }, 'response_format.type', /"text", "json_object", "json_schema"/);
  rejectsField({ response_format: { type: 'json_schema' } }, 'response_format.json_schema', /is required/);
  rejectsField({ response_format: { type: 'json_schema', json_schema: { name: 'r', schema: 'x' } } }, 'response_format.json_schema.schema');
});

const weather = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Weather for a city',
    parameters: {
      $schema: 'http://json-schema.org/draft-07/schema#',
      type: 'object',
      properties: { city: { type: 'string' } },
      required: ['city'],
      additionalProperties: false,
    },
    strict: true,
  },
};

test('tools: LangChain/AI SDK parameters accepted verbatim; null and [] mean none', () => {
  const parsed = parse({ tools: [weather], tool_choice: 'auto', parallel_tool_calls: false });
  assert.deepEqual(parsed.options.tools, [
    { name: 'get_weather', description: 'Weather for a city', parameters: weather.function.parameters, strict: true },
  ]);
  assert.equal(parsed.options.toolChoice, 'auto');
  assert.equal(parsed.options.parallelToolCalls, false);
  assert.equal(parse({ tools: null }).options.tools, undefined);
  assert.equal(parse({ tools: [] }).options.tools, undefined);
  assert.equal(parse({ tools: [{ type: 'function', function: { name: 'noargs' } }] }).options.tools?.[0]?.name, 'noargs');
  rejectsField({ tools: [{ type: 'retrieval' }] }, 'tools[0].type', /only "function" tools/);
  rejectsField({ tools: [{ type: 'function', function: { name: 'has space' } }] }, 'tools[0].function.name');
  // One rule (TOOL_NAME_PATTERN in src/spec/chat.ts): OpenAI's plus dots; the engine does not check again.
  assert.equal(parse({ tools: [{ type: 'function', function: { name: 'server.get_weather' } }] }).options.tools?.[0]?.name, 'server.get_weather');
  assert.equal(parse({ tools: [{ type: 'function', function: { name: 'x'.repeat(64) } }] }).options.tools?.[0]?.name.length, 64);
  rejectsField({ tools: [{ type: 'function', function: { name: 'server:get_weather' } }] }, 'tools[0].function.name', /letters, digits/);
  rejectsField({ tools: [{ type: 'function', function: { name: 'x'.repeat(65) } }] }, 'tools[0].function.name', /1-64/);
  rejectsField({ functions: [{ name: 'server:get_weather' }] }, 'functions[0].name', /1-64/);
  rejectsField({ tools: [{ type: 'function', function: {} }] }, 'tools[0].function.name', /is required/);
  rejectsField({ tools: [weather, weather] }, 'tools[1].function.name', /defined twice/);
  rejectsField({ tools: [{ type: 'function', function: { name: 'f', parameters: 'x' } }] }, 'tools[0].function.parameters');
  rejectsField({ tools: [weather], parallel_tool_calls: 'no' }, 'parallel_tool_calls');
});

test('tool_choice: none/auto/required/named, checked against the tools', () => {
  assert.equal(parse({ tools: [weather], tool_choice: 'none' }).options.toolChoice, 'none');
  assert.equal(parse({ tools: [weather], tool_choice: 'required' }).options.toolChoice, 'required');
  assert.deepEqual(parse({ tools: [weather], tool_choice: { type: 'function', function: { name: 'get_weather' } } }).options.toolChoice, {
    name: 'get_weather',
  });
  assert.equal(parse({ tool_choice: 'none' }).options.toolChoice, 'none');
  assert.equal(parse({ tools: [weather], tool_choice: null }).options.toolChoice, undefined);
  rejectsField({ tools: [weather], tool_choice: { type: 'function', function: { name: 'get_time' } } }, 'tool_choice', /get_time.*get_weather/);
  rejectsField({ tool_choice: 'required' }, 'tool_choice', /requires tools/);
  rejectsField({ tools: [weather], tool_choice: 'always' }, 'tool_choice', /"none", "auto", "required"/);
});

test('legacy functions / function_call / role "function" map to tools', () => {
  const parsed = parse({
    functions: [{ name: 'lookup', parameters: { type: 'object', properties: {} } }],
    function_call: { name: 'lookup' },
    messages: [
      { role: 'user', content: 'q' },
      { role: 'assistant', content: null, function_call: { name: 'lookup', arguments: '{"k":1}' } },
      { role: 'function', name: 'lookup', content: 'found' },
    ],
  });
  assert.equal(parsed.legacyFunctions, true);
  assert.deepEqual(parsed.options.tools, [{ name: 'lookup', parameters: { type: 'object', properties: {} } }]);
  assert.deepEqual(parsed.options.toolChoice, { name: 'lookup' });
  assert.equal(parsed.options.parallelToolCalls, false, 'the legacy dialect carries one call per message');
  assert.deepEqual(parsed.options.messages.slice(1), [
    { role: 'assistant', content: null, toolCalls: [{ id: 'call_1_0', name: 'lookup', arguments: '{"k":1}' }] },
    { role: 'tool', content: 'found', toolCallId: 'call_1_0', name: 'lookup' },
  ]);
  assert.equal(parse({ functions: [{ name: 'f' }], function_call: 'auto' }).options.toolChoice, 'auto');
  rejectsField({ functions: [{ name: 'f' }], function_call: { name: 'g' } }, 'function_call', /"g"/);
  rejectsField({ functions: [{ name: 'f' }], function_call: 'required' }, 'function_call');
  rejectsField({ tools: [weather], functions: [{ name: 'get_weather' }] }, 'functions[0].name', /defined twice/);
  rejectsField({ tools: [weather], tool_choice: 'auto', function_call: 'auto' }, 'function_call', /either/);
  rejectsField({ functions: [{ description: 'x' }] }, 'functions[0].name', /is required/);
});

test('thinking: enable_thinking, thinking_budget clamped (never rejected), reasoning_effort', () => {
  assert.deepEqual(parse({ enable_thinking: false }).options.thinking, { enabled: false });
  assert.deepEqual(parse({ enable_thinking: true, thinking_budget: 2048 }).options.thinking, { enabled: true, budgetTokens: 2048 });
  assert.deepEqual(parse({ thinking_budget: 32768 }).options.thinking, { budgetTokens: 32768 });
  assert.deepEqual(parse({ thinking_budget: 100000 }).options.thinking, { budgetTokens: 32768 }, 'Cherry Studio sends ≥ 32768');
  assert.deepEqual(parse({ thinking_budget: 1 }).options.thinking, { budgetTokens: 128 });
  assert.deepEqual(parse({ thinking_budget: -5 }).options.thinking, { budgetTokens: 128 });
  assert.deepEqual(parse({ thinking_budget: 1000.6 }).options.thinking, { budgetTokens: 1001 });
  assert.deepEqual(parse({ thinking_budget: null }).options.thinking, {});
  assert.deepEqual(parse({ reasoning_effort: 'high' }).options.thinking, { budgetTokens: 16384 });
  assert.deepEqual(parse({ reasoning_effort: 'max' }).options.thinking, { budgetTokens: 32768 });
  assert.deepEqual(parse({ reasoning_effort: 'low', thinking_budget: 600 }).options.thinking, { budgetTokens: 600 });
  assert.deepEqual(parse({ reasoning_effort: 'none' }).options.thinking, { enabled: false });
  rejectsField({ enable_thinking: 'yes' }, 'enable_thinking', /boolean/);
  rejectsField({ thinking_budget: 'lots' }, 'thinking_budget', /number/);
  rejectsField({ reasoning_effort: 'extreme' }, 'reasoning_effort', /must be one of/);
});

test('logprobs / top_logprobs', () => {
  assert.equal(parse({ logprobs: true }).options.topLogprobs, 0);
  assert.equal(parse({ logprobs: true, top_logprobs: 5 }).options.topLogprobs, 5);
  assert.equal(parse({ logprobs: false }).options.topLogprobs, undefined);
  rejectsField({ top_logprobs: 3 }, 'top_logprobs', /requires "logprobs": true/);
  rejectsField({ logprobs: true, top_logprobs: 21 }, 'top_logprobs', /between 0 and 20/);
  rejectsField({ logprobs: true, stream: true }, 'logprobs', /stream/);
});

test('unknown vendor fields are not refused and ride along in options.extra; output-changing OpenAI fields we cannot honour are refused', () => {
  const parsed = parse({ metadata: { a: 'b' }, store: false, service_tier: 'auto', some_vendor_flag: { x: 1 }, logit_bias: {} });
  // An engine that forwards requests (openai-compatible) passes them on; known fields never appear there.
  assert.deepEqual(parsed.options.extra, { metadata: { a: 'b' }, store: false, service_tier: 'auto', some_vendor_flag: { x: 1 } });
  assert.equal(parse({ temperature: 1 }).options.extra, undefined);
  assert.doesNotThrow(() => parse({ modalities: ['text'], audio: null }));
  rejectsField({ logit_bias: { '50256': -100 } }, 'logit_bias', /not supported/);
  rejectsField({ modalities: ['text', 'audio'] }, 'modalities', /only "text"/);
  rejectsField({ audio: { voice: 'alloy', format: 'mp3' } }, 'audio');
  rejectsField({ prediction: { type: 'content', content: 'x' } }, 'prediction');
  rejectsField({ web_search_options: {} }, 'web_search_options');
});

test('the first bad field is the one reported, with a wire path', () => {
  rejects(
    { model: 'm', messages: [{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }, { role: 'user', content: [{ type: 'image_url' }] }] },
    'messages[2].content[0].image_url',
    /is required/,
  );
});

test('caps from the config: n, tools, schema size, depth, enum, unresolvable $ref', () => {
  const limits = { ...DEFAULT_REQUEST_LIMITS, maxChoices: 2, maxTools: 1, jsonSchema: { maxBytes: 2000, maxDepth: 8, maxNodes: 300, maxEnumValues: 5, maxCompileMs: 1000 } };
  const caps = (extra: Record<string, unknown>, param: string, pattern: RegExp) =>
    assert.throws(
      () => parseChatRequest({ ...base, ...extra }, limits),
      (error: InferaError) => error.status === 400 && error.param === param && pattern.test(error.message),
    );
  assert.equal(parseChatRequest({ ...base, n: 2 }, limits).n, 2);
  caps({ n: 3 }, 'n', /between 1 and 2/);
  const tool = (name: string, parameters?: unknown) => ({ type: 'function', function: { name, parameters } });
  caps({ tools: [tool('a'), tool('b')] }, 'tools', /at most 1/);
  let deep: unknown = { type: 'string' };
  for (let i = 0; i < 5000; i++) deep = { type: 'array', items: deep };
  caps({ tools: [tool('a', deep)] }, 'tools[0].function.parameters', /deeper than 8/);
  const schema = (s: unknown) => ({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: s } } });
  caps(schema(deep), 'response_format.json_schema.schema', /deeper than 8/);
  caps(schema({ enum: [1, 2, 3, 4, 5, 6] }), 'response_format.json_schema.schema', /enum at #\/enum has 6 values.*at most 5/);
  caps(schema({ type: 'object', properties: Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`p${i}`, { type: 'string' }])) }),
    'response_format.json_schema.schema', /more than 300 values/);
  caps(schema({ type: 'string', description: 'x'.repeat(3000) }), 'response_format.json_schema.schema', /3\d{3} bytes.*at most 2000/);
  caps(schema({ type: 'object', properties: { a: { $ref: '#/$defs/Nope' } } }), 'response_format.json_schema.schema', /"#\/\$defs\/Nope" at #\/properties\/a\/\$ref does not resolve/);
  caps({ tools: [tool('a', { type: 'object', properties: { a: { $ref: 'https://example.com/s.json' } } })] }, 'tools[0].function.parameters', /does not resolve/);
  // Valid references (including recursion, which is the engine's question) pass the wire check.
  const tree = { type: 'object', properties: { kids: { type: 'array', items: { $ref: '#' } }, leaf: { $ref: '#/$defs/Leaf' } }, $defs: { Leaf: { type: 'string' } } };
  assert.ok(parseChatRequest({ ...base, ...schema(tree) }, limits).options.responseFormat);
});

test('prefix: true is accepted on the last assistant message only', () => {
  const continued = parse({
    messages: [
      { role: 'user', content: 'Write a poem' },
      { role: 'assistant', content: 'Roses are', prefix: true },
    ],
  });
  assert.deepEqual(continued.options.messages.at(-1), { role: 'assistant', content: 'Roses are', prefix: true });
  // false (or null) is the default and may stand anywhere.
  const plain = parse({
    messages: [
      { role: 'user', content: 'hi', prefix: false },
      { role: 'assistant', content: 'Hello', prefix: null },
    ],
  });
  assert.deepEqual(plain.options.messages.at(-1), { role: 'assistant', content: 'Hello' });

  rejectsField({ messages: [{ role: 'user', content: 'hi', prefix: true }] }, 'messages[0].prefix', /assistant/);
  rejectsField(
    { messages: [{ role: 'system', content: 's' }, { role: 'user', content: 'hi' }, { role: 'tool', content: 'r', prefix: true }] },
    'messages[2].prefix',
  );
  rejectsField(
    {
      messages: [
        { role: 'user', content: 'hi' },
        { role: 'assistant', content: 'He', prefix: true },
        { role: 'user', content: 'and?' },
      ],
    },
    'messages[1].prefix',
    /last message/,
  );
  rejectsField(
    {
      messages: [
        { role: 'user', content: 'hi' },
        { role: 'assistant', content: null, prefix: true, tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{}' } }] },
      ],
    },
    'messages[1].prefix',
    /tool_calls/,
  );
  rejectsField({ messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'x', prefix: 'yes' }] }, 'messages[1].prefix');
});

test('the hand check of a plain body accepts only what the schema accepts, with the same values', () => {
  const messages = [
    { role: 'system', content: 'be brief' },
    { role: 'developer', content: '' },
    { role: 'user', content: 'hi' },
    { role: 'assistant', content: 'hello' },
    { role: 'user', content: 'again' },
  ];
  const accepted = [
    base,
    { ...base, messages },
    { ...base, stream: true, stream_options: { include_usage: true }, max_tokens: 16, max_completion_tokens: 8, temperature: 0, top_p: 1, n: 2, seed: -3, user: 'u1' },
    { ...base, stream: null, stream_options: null, max_tokens: null, temperature: 2, top_p: 0, n: null, seed: null, user: null },
    { ...base, stream_options: {} },
    { ...base, vendor_extension: { anything: [1] } },
    // Unknown to the schema, not a check of its own (an inherited name must not pick one).
    JSON.parse('{"model":"m","messages":[{"role":"user","content":"hi"}],"constructor":1,"toString":2}'),
  ];
  for (const body of accepted) {
    const plain = plainChatBody(body);
    assert.ok(plain, `accepted: ${JSON.stringify(body)}`);
    const known = Object.fromEntries(Object.entries(body).filter(([key]) => Object.hasOwn(chatRequestSchema.shape, key)));
    assert.deepEqual(known, chatRequestSchema.parse(body), JSON.stringify(body));
  }
  const declined = [
    null,
    [],
    'text',
    {},
    { model: 'm' },
    { messages: base.messages },
    { ...base, model: '' },
    { ...base, model: 7 },
    { ...base, messages: [] },
    { ...base, messages: {} },
    { ...base, messages: [null] },
    { ...base, messages: [['user', 'hi']] },
    { ...base, messages: [{ role: 'user' }] },
    { ...base, messages: [{ role: 'user', content: ['hi'] }] },
    { ...base, messages: [{ role: 'user', content: [{ type: 'text', text: 'hi' }] }] },
    { ...base, messages: [{ role: 'tool', content: 'x' }] },
    { ...base, messages: [{ role: 'bot', content: 'x' }] },
    { ...base, messages: [{ role: 'user', content: 'x', name: 'me' }] },
    { ...base, messages: [{ role: 'assistant', content: 'x', prefix: true }] },
    { ...base, stream: 'yes' },
    { ...base, stream_options: { include_usage: 1 } },
    { ...base, stream_options: { other: true } },
    { ...base, stream_options: [] },
    { ...base, max_tokens: 0 },
    { ...base, max_tokens: 1.5 },
    { ...base, max_completion_tokens: '5' },
    { ...base, temperature: 2.5 },
    { ...base, temperature: -0.1 },
    { ...base, top_p: 1.1 },
    { ...base, n: 1.5 },
    { ...base, seed: 2 ** 60 },
    { ...base, user: 5 },
    { ...base, tools: [] },
    { ...base, logprobs: true },
    { ...base, keep_alive: '5m' },
    JSON.parse('{"model":"m","messages":[{"role":"user","content":"hi","__proto__":{"x":1}}]}'),
  ];
  for (const body of declined) assert.equal(plainChatBody(body), undefined, `declined: ${JSON.stringify(body)}`);
  // A body wrong in one plain field is answered from that field's schema: the same 400 as the whole schema's.
  const wrong = [...declined, { ...base, temperature: 3, top_p: 2 }, { model: '', messages: [] }, { ...base, max_tokens: 0, vendor: 1 }];
  for (const body of wrong) {
    let expected: InferaError | undefined;
    try {
      parseBody(chatRequestSchema, body);
    } catch (error) {
      expected = error as InferaError;
    }
    if (!expected) continue;
    assert.throws(
      () => parseChatRequest(body),
      (error: unknown) => error instanceof InferaError && error.message === expected.message && error.param === expected.param,
      `same 400 as the schema's for ${JSON.stringify(body)}: ${expected.message}`,
    );
  }
  // Declined bodies still get the schema's answer: a 400 naming the field, or the full parse.
  rejects({ ...base, messages: [] }, 'messages', /at least one message/);
  rejects({ ...base, temperature: 2.5 }, 'temperature');
  assert.equal(parse({ tools: [] }).options.tools, undefined);
});

test('a plain body naming a refused model gets the refusal the full parse and then the lookup would give, or the parse\'s own', () => {
  // Every body the full parse might refuse ahead of the model: refused the same way, whether or not a lookup is given.
  const refusedModel = new InferaError({ status: 400, param: 'model', code: 'model_not_found', message: 'no such model' });
  let lookups = 0;
  const models = {
    lookup(id: string) {
      lookups += 1;
      return id === 'served' ? { id } : refusedModel;
    },
  };
  const limits = { ...DEFAULT_REQUEST_LIMITS, maxChoices: 4 };
  const bodies = [
    base,
    { ...base, n: 4 },
    { ...base, n: 5 },
    { ...base, n: 0 },
    { ...base, n: -2 },
    { ...base, n: null, seed: 7, user: 'u', vendor: { x: 1 } },
    { ...base, stream: true, stream_options: { include_usage: true }, max_tokens: 3, temperature: 1, top_p: 0.5 },
    { ...base, messages: [{ role: 'system', content: 's' }, { role: 'assistant', content: '' }, { role: 'user', content: 'u' }] },
    { ...base, messages: [] },
    { ...base, temperature: 9 },
    { ...base, logit_bias: { 1: 2 } },
    { ...base, logprobs: true, stream: true },
    { ...base, tool_choice: 'required' },
    { ...base, messages: [{ role: 'tool', content: 'x', tool_call_id: 'c' }] },
    { ...base, thinking_budget: 'lots' },
  ];
  for (const body of bodies) {
    for (const model of ['served', 'nobody/serves-this']) {
      const sent = { ...body, model };
      // What the request got before: the whole parse, then the lookup.
      let expected: unknown;
      try {
        const parsed = parseChatRequest(sent, limits);
        const found = models.lookup(parsed.model);
        expected = found instanceof InferaError ? found : parsed;
      } catch (error) {
        expected = error;
      }
      let got: unknown;
      try {
        got = parseChatRequestOrRefusal(sent, limits, models);
      } catch (error) {
        got = error;
      }
      const label = JSON.stringify(sent);
      if (expected instanceof InferaError) {
        assert.ok(got instanceof InferaError, `${label}: refused`);
        assert.deepEqual([got.status, got.message, got.param, got.code], [expected.status, expected.message, expected.param, expected.code], label);
      } else assert.deepEqual(got, expected, label);
    }
  }
  // The early lookup happened for the plain bodies (not only the full parse's path), so the test above exercised it.
  lookups = 0;
  assert.equal(parseChatRequestOrRefusal({ ...base, model: 'nobody/serves-this' }, limits, models), refusedModel);
  assert.equal(lookups, 1);
});
