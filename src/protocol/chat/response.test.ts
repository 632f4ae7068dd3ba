import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChatResult, ChatUsage } from '../../spec/chat.ts';
import { validateAgainstOpenApi } from '../../../test/helpers/openapi.ts';
import { buildChatCompletion, combineChoiceUsage, newChatCompletionId, toWireUsage, type ChatCompletionMeta } from './response.ts';

const meta: ChatCompletionMeta = { id: 'chatcmpl-test', created: 1_764_000_000, model: 'Pro/Qwen/Qwen2-7B-Instruct' };
const usage = (completion: number, reasoning = 0): ChatUsage => ({
  promptTokens: 12,
  completionTokens: completion,
  reasoningTokens: reasoning,
  cachedPromptTokens: 4,
});
const result = (over: Partial<ChatResult>): ChatResult => ({
  text: '',
  reasoning: '',
  toolCalls: [],
  finishReason: 'stop',
  usage: usage(3),
  warnings: [],
  ...over,
});

test('ids look like OpenAI chat completion ids and are unique', () => {
  const a = newChatCompletionId();
  assert.match(a, /^chatcmpl-[0-9a-f]{32}$/);
  assert.notEqual(a, newChatCompletionId());
});

test('a plain answer: every field the contract lists, valid against OpenAI schema', () => {
  const body = buildChatCompletion(meta, [result({ text: 'Hello!', reasoning: 'greet back', usage: usage(9, 4) })]);
  assert.deepEqual(body, {
    id: 'chatcmpl-test',
    object: 'chat.completion',
    created: 1_764_000_000,
    model: 'Pro/Qwen/Qwen2-7B-Instruct',
    system_fingerprint: 'fp_infera',
    choices: [
      {
        index: 0,
        message: { role: 'assistant', content: 'Hello!', reasoning_content: 'greet back', refusal: null },
        logprobs: null,
        finish_reason: 'stop',
      },
    ],
    usage: {
      prompt_tokens: 12,
      completion_tokens: 9,
      total_tokens: 21,
      completion_tokens_details: { reasoning_tokens: 4 },
      prompt_tokens_details: { cached_tokens: 4 },
    },
  });
  assert.deepEqual(validateAgainstOpenApi('CreateChatCompletionResponse', body), []);
});

test('tool calls only: content is null but present; finish_reason tool_calls', () => {
  const body = buildChatCompletion(meta, [
    result({ toolCalls: [{ id: 'call_1', name: 'get_weather', arguments: '{"city":"Paris"}' }], finishReason: 'tool_calls' }),
  ]);
  const choice = body.choices[0]!;
  assert.ok('content' in choice.message);
  assert.equal(choice.message.content, null);
  assert.equal('reasoning_content' in choice.message, false, 'no empty reasoning_content');
  assert.deepEqual(choice.message.tool_calls, [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }]);
  assert.equal(choice.finish_reason, 'tool_calls');
  assert.equal(choice.message.function_call, undefined);
  assert.deepEqual(validateAgainstOpenApi('CreateChatCompletionResponse', body), []);
});

test('an empty answer keeps content as "" (never missing)', () => {
  const body = buildChatCompletion(meta, [result({ finishReason: 'length' })]);
  assert.equal(body.choices[0]!.message.content, '');
  assert.equal(body.choices[0]!.finish_reason, 'length');
});

test('legacy functions: function_call and finish_reason "function_call"', () => {
  const body = buildChatCompletion({ ...meta, legacyFunctions: true }, [
    result({ toolCalls: [{ id: 'call_1', name: 'lookup', arguments: '{}' }], finishReason: 'tool_calls' }),
  ]);
  assert.deepEqual(body.choices[0]!.message.function_call, { name: 'lookup', arguments: '{}' });
  assert.equal(body.choices[0]!.finish_reason, 'function_call');
  assert.deepEqual(validateAgainstOpenApi('CreateChatCompletionResponse', body), []);
});

test('n choices: indexes in order, prompt counted once, completions summed', () => {
  const body = buildChatCompletion({ ...meta, systemFingerprint: 'fp_custom' }, [
    result({ text: 'a', usage: usage(5, 1) }),
    result({ text: 'b', usage: usage(7, 2) }),
    result({ text: 'c', usage: usage(1) }),
  ]);
  assert.deepEqual(body.choices.map((c) => [c.index, c.message.content]), [[0, 'a'], [1, 'b'], [2, 'c']]);
  assert.equal(body.system_fingerprint, 'fp_custom');
  assert.deepEqual(body.usage, {
    prompt_tokens: 12,
    completion_tokens: 13,
    total_tokens: 25,
    completion_tokens_details: { reasoning_tokens: 3 },
    prompt_tokens_details: { cached_tokens: 4 },
  });
  assert.deepEqual(validateAgainstOpenApi('CreateChatCompletionResponse', body), []);
});

test('logprobs are rendered in OpenAI shape', () => {
  const body = buildChatCompletion(meta, [
    result({
      text: 'Hi',
      logprobs: [{ token: 'Hi', logprob: -0.1, bytes: [72, 105], topLogprobs: [{ token: 'Hi', logprob: -0.1, bytes: [72, 105] }, { token: 'Hey', logprob: -2.5, bytes: null }] }],
    }),
  ]);
  assert.deepEqual(body.choices[0]!.logprobs, {
    content: [
      {
        token: 'Hi',
        logprob: -0.1,
        bytes: [72, 105],
        top_logprobs: [
          { token: 'Hi', logprob: -0.1, bytes: [72, 105] },
          { token: 'Hey', logprob: -2.5, bytes: null },
        ],
      },
    ],
    refusal: null,
  });
  assert.deepEqual(validateAgainstOpenApi('CreateChatCompletionResponse', body), []);
});

test('usage helpers', () => {
  assert.deepEqual(toWireUsage(usage(0)).total_tokens, 12);
  assert.deepEqual(combineChoiceUsage([]), { promptTokens: 0, completionTokens: 0, reasoningTokens: 0, cachedPromptTokens: 0 });
});

test('the OpenAPI helper really rejects what OpenAI requires (refusal, logprobs, object)', () => {
  const body = buildChatCompletion(meta, [result({ text: 'x' })]);
  const broken = structuredClone(body) as unknown as { object: string; choices: Record<string, unknown>[] };
  delete (broken.choices[0]!.message as Record<string, unknown>).refusal;
  delete broken.choices[0]!.logprobs;
  broken.object = 'chat.completions';
  const errors = validateAgainstOpenApi('CreateChatCompletionResponse', broken);
  assert.ok(errors.some((e) => e.includes("'refusal'")), errors.join('\n'));
  assert.ok(errors.some((e) => e.includes("'logprobs'")), errors.join('\n'));
  assert.ok(errors.some((e) => e.startsWith('/object')), errors.join('\n'));
});
