import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InferaError } from '../../errors/index.ts';
import { QwenChatWrapper } from 'node-llama-cpp';
import { toLlamaChatHistory } from './chat-history.ts';

const fails = (run: () => unknown, param: string) =>
  assert.throws(run, (error: unknown) => error instanceof InferaError && error.status === 400 && error.param === param);

test('a tool-calling turn (reasoning, calls, results, follow-up text) becomes one model item', () => {
  const history = toLlamaChatHistory([
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: [{ type: 'text', text: 'Weather in' }, { type: 'text', text: 'Paris and Rome?' }] },
    {
      role: 'assistant',
      content: '',
      reasoning: 'Two cities.',
      toolCalls: [
        { id: 'a', name: 'get_weather', arguments: '{"city":"Paris"}' },
        { id: 'b', name: 'get_weather', arguments: '{"city":"Rome"}' },
      ],
    },
    // Results may come in any order; they are matched by id.
    { role: 'tool', toolCallId: 'b', content: 'rain' },
    { role: 'tool', toolCallId: 'a', content: 'sun' },
    { role: 'assistant', content: 'Sun in Paris, rain in Rome.' },
    { role: 'user', content: 'Thanks' },
  ]);
  assert.deepEqual(history, [
    { type: 'system', text: 'Be brief.' },
    { type: 'user', text: 'Weather in\nParis and Rome?' },
    {
      type: 'model',
      response: [
        { type: 'segment', segmentType: 'thought', text: 'Two cities.', ended: true },
        { type: 'functionCall', name: 'get_weather', params: { city: 'Paris' }, result: 'sun', startsNewChunk: true },
        { type: 'functionCall', name: 'get_weather', params: { city: 'Rome' }, result: 'rain', startsNewChunk: false },
        'Sun in Paris, rain in Rome.',
      ],
    },
    { type: 'user', text: 'Thanks' },
  ]);
});

test('tool messages without ids answer the calls in order; a trailing result continues the turn', () => {
  const history = toLlamaChatHistory([
    { role: 'user', content: 'hi' },
    { role: 'assistant', content: null, toolCalls: [{ id: 'x', name: 'f', arguments: '' }] },
    { role: 'tool', content: 'done' },
  ]);
  assert.deepEqual(history.at(-1), {
    type: 'model',
    response: [{ type: 'functionCall', name: 'f', params: {}, result: 'done', startsNewChunk: true }],
  });
});

test('malformed conversations are 400s naming the message', () => {
  fails(() => toLlamaChatHistory([]), 'messages');
  fails(() => toLlamaChatHistory([{ role: 'tool', content: 'x' }]), 'messages[0]');
  fails(
    () =>
      toLlamaChatHistory([
        { role: 'user', content: 'hi' },
        { role: 'assistant', content: null, toolCalls: [{ id: 'x', name: 'f', arguments: '{}' }] },
        { role: 'tool', toolCallId: 'y', content: 'r' },
      ]),
    'messages[2].tool_call_id',
  );
  fails(
    () =>
      toLlamaChatHistory([
        { role: 'user', content: 'hi' },
        { role: 'assistant', content: null, toolCalls: [{ id: 'x', name: 'f', arguments: '{}' }] },
        { role: 'user', content: 'and?' },
      ]),
    'messages[1].tool_calls[0]',
  );
  fails(
    () => toLlamaChatHistory([{ role: 'assistant', content: null, toolCalls: [{ id: 'x', name: 'f', arguments: '{oops' }] }]),
    'messages[0].tool_calls[0].function.arguments',
  );
  fails(() => toLlamaChatHistory([{ role: 'user', content: [{ type: 'video', url: 'https://v' }] }]), 'messages[0].content[0]');
});

test('a last assistant message with prefix stays the open model item; without it a new turn starts', () => {
  const asked = { role: 'user' as const, content: 'Write a poem' };
  const open = toLlamaChatHistory([asked, { role: 'assistant', content: 'Roses are', prefix: true }]);
  assert.deepEqual(open, [{ type: 'user', text: 'Write a poem' }, { type: 'model', response: ['Roses are'] }]);
  const finished = toLlamaChatHistory([asked, { role: 'assistant', content: 'Roses are red.' }]);
  assert.deepEqual(finished, [
    { type: 'user', text: 'Write a poem' },
    { type: 'model', response: ['Roses are red.'] },
    { type: 'model', response: [] },
  ]);

  // Rendered with Qwen's wrapper (as the engine renders it with thinking off): the prompt ends in the
  // prefix itself, and the finished message is closed before a fresh assistant turn.
  const wrapper = new QwenChatWrapper({ thoughts: 'discourage' });
  const render = (history: ReturnType<typeof toLlamaChatHistory>) =>
    wrapper.generateContextState({ chatHistory: history }).contextText.toString();
  assert.ok(render(open).endsWith('<|im_start|>assistant\n<think>\n\n</think>\n\nRoses are'), render(open));
  assert.ok(render(finished).endsWith('Roses are red.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n'), render(finished));
});
