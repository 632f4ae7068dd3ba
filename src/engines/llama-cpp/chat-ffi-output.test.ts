// The FFI chat engine's per-request output state, fed token by token without a model: what counts
// against max_tokens. (The runner, the template and the parsers are exercised with real models in
// chat-ffi.test.ts and the chat suite; this pins a counting rule a scripted model does not reach.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChatStreamPart } from '../../spec/index.ts';
import type { Plan } from './chat-plan.ts';
import { type FfiChatModel, OutputState } from './chat-ffi.ts';

const model = {
  template: { thought: { open: '<think>', close: '</think>' }, toolOpenToken: -1 },
  tokenize: () => [],
  tokenText: () => '',
} as unknown as FfiChatModel;

const plan = (thinking: boolean, answerLimit: number) =>
  ({ thinking, answerLimit, thoughtBudget: thinking ? 100 : 0, stop: [], warnings: [], grammar: undefined, functions: undefined, forceCall: false }) as unknown as Plan;

const token = (text: string) => ({ token: 1, piece: Buffer.from(text, 'utf8'), isEog: false });

test('thinking off: a token the parser holds back (a "<" that may open a tag) still counts against max_tokens', () => {
  const parts: ChatStreamPart[] = [];
  const output = new OutputState(model, plan(false, 2), (part) => parts.push(part));
  // A sampled answer that began "<^": the "<" shows no text until the next token says it is no tag.
  assert.equal(output.onToken(token('<')), undefined);
  assert.equal(output.onToken(token('^')), 'stop', 'two tokens generated: max_tokens 2 is reached');
  const result = output.finish(false, 5, 0, 2);
  assert.equal(result.usage.completionTokens, 2);
  assert.equal(result.finishReason, 'length');
  assert.equal(result.text, '<^');
});

test('thinking on: the thought is not counted against max_tokens, the answer is', () => {
  const output = new OutputState(model, plan(true, 2), () => {});
  for (const piece of ['<think>', 'hm', '</think>']) assert.equal(output.onToken(token(piece)), undefined);
  assert.equal(output.onToken(token('a')), undefined);
  assert.equal(output.onToken(token('b')), 'stop');
  const result = output.finish(false, 5, 0, 5);
  assert.equal(result.usage.reasoningTokens, 3);
  assert.equal(result.text, 'ab');
});
