import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InferaError } from '../../errors/index.ts';
import type { ChatStreamPart, ChatUsage } from '../../spec/chat.ts';
import { validateAgainstOpenApi } from '../../../test/helpers/openapi.ts';
import type { ChatCompletionMeta } from './response.ts';
import { SSE_DONE_FRAME, chatCompletionFrames, chatStreamErrorFrames, type WireChatChunk } from './stream.ts';

const meta: ChatCompletionMeta = { id: 'chatcmpl-s', created: 1_764_000_000, model: 'deepseek-ai/DeepSeek-V3' };
const usage = (completion: number, reasoning = 0): ChatUsage => ({
  promptTokens: 10,
  completionTokens: completion,
  reasoningTokens: reasoning,
  cachedPromptTokens: 0,
});

/**
 * Stands in for an engine stream (the thing under test is the converter): yields the given parts,
 * optionally waiting between them, and records whether it was told to stop.
 */
class ScriptedSource implements AsyncIterableIterator<ChatStreamPart> {
  returned = false;
  pulled = 0;
  private position = 0;
  constructor(
    private readonly parts: (ChatStreamPart | Error)[],
    private readonly delayMs = 0,
  ) {}
  [Symbol.asyncIterator]() {
    return this;
  }
  async next(): Promise<IteratorResult<ChatStreamPart>> {
    this.pulled++;
    if (this.delayMs) await new Promise((resolve) => setTimeout(resolve, this.delayMs));
    if (this.returned || this.position >= this.parts.length) return { done: true, value: undefined };
    const part = this.parts[this.position++]!;
    if (part instanceof Error) throw part;
    return { done: false, value: part };
  }
  async return(): Promise<IteratorResult<ChatStreamPart>> {
    this.returned = true;
    return { done: true, value: undefined };
  }
}

async function collect(frames: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const frame of frames) out.push(frame);
  return out;
}

/** Check the SSE framing and the chunk envelope; return the parsed chunks (without [DONE]). */
function parseFrames(frames: string[]): WireChatChunk[] {
  assert.equal(frames.at(-1), SSE_DONE_FRAME, 'ends with data: [DONE]');
  assert.equal(frames.filter((f) => f === SSE_DONE_FRAME).length, 1);
  return frames.slice(0, -1).map((frame) => {
    assert.match(frame, /^data: \{.*\}\n\n$/s, 'exactly `data: {json}` and a blank line');
    assert.equal(frame.indexOf('\n'), frame.length - 2, 'no line breaks inside an event');
    const chunk = JSON.parse(frame.slice(6)) as WireChatChunk;
    assert.deepEqual(validateAgainstOpenApi('CreateChatCompletionStreamResponse', chunk), [], frame);
    assert.equal(chunk.id, meta.id);
    assert.equal(chunk.object, 'chat.completion.chunk');
    assert.equal(chunk.created, meta.created);
    assert.equal(chunk.model, meta.model);
    assert.equal(chunk.system_fingerprint, 'fp_infera');
    for (const choice of chunk.choices) {
      if ('content' in choice.delta || chunk.choices.length > 0) assert.equal(typeof choice.delta.content, 'string', 'delta.content always a string');
    }
    return chunk;
  });
}

const thinkingAnswer: ChatStreamPart[] = [
  { type: 'reasoning-delta', text: 'The user says hi.' },
  { type: 'reasoning-delta', text: '' },
  { type: 'text-delta', text: 'Hello' },
  { type: 'text-delta', text: ' there' },
  { type: 'finish', finishReason: 'stop', usage: usage(6, 3) },
];

test('one choice: role chunk, reasoning with content "", text, finish with usage, [DONE] (no usage chunk)', async () => {
  const chunks = parseFrames(await collect(chatCompletionFrames(meta, [new ScriptedSource(thinkingAnswer)], { includeUsage: false })));
  assert.deepEqual(
    chunks.map((c) => c.choices),
    [
      [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }],
      [{ index: 0, delta: { content: '', reasoning_content: 'The user says hi.' }, logprobs: null, finish_reason: null }],
      [{ index: 0, delta: { content: 'Hello' }, logprobs: null, finish_reason: null }],
      [{ index: 0, delta: { content: ' there' }, logprobs: null, finish_reason: null }],
      [{ index: 0, delta: { content: '' }, logprobs: null, finish_reason: 'stop' }],
    ],
  );
  assert.ok(chunks.every((c) => c.choices.length > 0), 'every chunk has non-empty choices');
  assert.deepEqual(chunks.at(-1)!.usage, {
    prompt_tokens: 10,
    completion_tokens: 6,
    total_tokens: 16,
    completion_tokens_details: { reasoning_tokens: 3 },
    prompt_tokens_details: { cached_tokens: 0 },
  });
  assert.ok(chunks.slice(0, -1).every((c) => c.usage === undefined), 'usage only on the finish chunk');
});

test('include_usage adds one {"choices":[],"usage"} chunk right before [DONE]', async () => {
  const frames = chatCompletionFrames(meta, [new ScriptedSource(thinkingAnswer)], { includeUsage: true });
  const chunks = parseFrames(await collect(frames));
  const last = chunks.at(-1)!;
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage!.total_tokens, 16);
  assert.equal(chunks.at(-2)!.choices[0]!.finish_reason, 'stop');
  assert.deepEqual(chunks.at(-2)!.usage, last.usage, 'finish chunk carries the same cumulative usage');
  assert.equal(chunks.filter((c) => c.choices.length === 0).length, 1);
  assert.equal(frames.usage.completionTokens, 6);
});

test('tool calls: stable wire index from 0, id/type/name in the first piece, argument fragments after', async () => {
  const source = new ScriptedSource([
    { type: 'text-delta', text: 'Let me check.' },
    { type: 'tool-call-start', index: 3, id: 'call_a', name: 'get_weather' },
    { type: 'tool-call-delta', index: 3, argumentsDelta: '{"city":' },
    { type: 'tool-call-start', index: 7, id: 'call_b', name: 'get_time' },
    { type: 'tool-call-delta', index: 3, argumentsDelta: '"Paris"}' },
    { type: 'tool-call-delta', index: 7, argumentsDelta: '' },
    { type: 'tool-call-delta', index: 7, argumentsDelta: '{}' },
    { type: 'finish', finishReason: 'tool_calls', usage: usage(20) },
  ]);
  const chunks = parseFrames(await collect(chatCompletionFrames(meta, [source], { includeUsage: false })));
  const toolDeltas = chunks.flatMap((c) => c.choices.flatMap((ch) => ('tool_calls' in ch.delta ? ch.delta.tool_calls ?? [] : [])));
  assert.deepEqual(toolDeltas, [
    { index: 0, id: 'call_a', type: 'function', function: { name: 'get_weather', arguments: '' } },
    { index: 0, function: { arguments: '{"city":' } },
    { index: 1, id: 'call_b', type: 'function', function: { name: 'get_time', arguments: '' } },
    { index: 0, function: { arguments: '"Paris"}' } },
    { index: 1, function: { arguments: '{}' } },
  ]);
  assert.equal(chunks.at(-1)!.choices[0]!.finish_reason, 'tool_calls');
  // What the openai SDK's accumulator would rebuild:
  const rebuilt: Record<number, { id?: string; name?: string; args: string }> = {};
  for (const d of toolDeltas) {
    rebuilt[d.index] ??= { args: '' };
    const call = rebuilt[d.index];
    if (d.id) call.id = d.id;
    if (d.function.name) call.name = d.function.name;
    call.args += d.function.arguments;
  }
  assert.deepEqual(rebuilt, { 0: { id: 'call_a', name: 'get_weather', args: '{"city":"Paris"}' }, 1: { id: 'call_b', name: 'get_time', args: '{}' } });
});

test('legacy functions: delta.function_call mirrors the first call, finish_reason function_call', async () => {
  const source = new ScriptedSource([
    { type: 'tool-call-start', index: 0, id: 'call_a', name: 'lookup' },
    { type: 'tool-call-delta', index: 0, argumentsDelta: '{"k":1}' },
    { type: 'finish', finishReason: 'tool_calls', usage: usage(4) },
  ]);
  const chunks = parseFrames(await collect(chatCompletionFrames({ ...meta, legacyFunctions: true }, [source], { includeUsage: false })));
  const calls = chunks.flatMap((c) => c.choices.flatMap((ch) => ('function_call' in ch.delta ? [ch.delta.function_call] : [])));
  assert.deepEqual(calls, [{ name: 'lookup', arguments: '' }, { arguments: '{"k":1}' }]);
  assert.equal(chunks.at(-1)!.choices[0]!.finish_reason, 'function_call');
});

test('n = 2: streams merged as parts arrive, each choice opens with its role chunk, usage cumulative', async () => {
  const slow = new ScriptedSource(
    [{ type: 'text-delta', text: 'slow' }, { type: 'finish', finishReason: 'length', usage: usage(5) }],
    15,
  );
  const fast = new ScriptedSource([
    { type: 'text-delta', text: 'fast' },
    { type: 'text-delta', text: '!' },
    { type: 'finish', finishReason: 'stop', usage: usage(2) },
  ]);
  const chunks = parseFrames(await collect(chatCompletionFrames(meta, [slow, fast], { includeUsage: true })));
  const perChoice = (index: number) => chunks.filter((c) => c.choices[0]?.index === index).map((c) => c.choices[0]!);
  for (const index of [0, 1]) assert.deepEqual(perChoice(index)[0]!.delta, { role: 'assistant', content: '' });
  assert.deepEqual(perChoice(0).map((c) => c.delta.content).join(''), 'slow');
  assert.deepEqual(perChoice(1).map((c) => c.delta.content).join(''), 'fast!');
  // The fast choice finished first although it is choice 1: nothing waited for the slow one.
  const finishes = chunks.filter((c) => c.choices[0]?.finish_reason);
  assert.deepEqual(finishes.map((c) => [c.choices[0]!.index, c.choices[0]!.finish_reason, c.usage!.completion_tokens]), [
    [1, 'stop', 2],
    [0, 'length', 7],
  ]);
  assert.deepEqual(chunks.at(-1)!.usage!.prompt_tokens, 10, 'prompt counted once for n choices');
  assert.equal(chunks.at(-1)!.usage!.completion_tokens, 7);
});

test('client disconnect mid-stream: return() stops every source and ends the iterator', async () => {
  const a = new ScriptedSource(thinkingAnswer);
  const b = new ScriptedSource(thinkingAnswer, 5);
  const frames = chatCompletionFrames(meta, [a, b], { includeUsage: true });
  const first = await frames.next();
  assert.equal(first.done, false);
  await frames.return();
  assert.equal(a.returned, true);
  assert.equal(b.returned, true);
  assert.deepEqual(await frames.next(), { done: true, value: undefined });
});

test('client disconnect before the first frame still releases the sources', async () => {
  const a = new ScriptedSource(thinkingAnswer);
  const frames = chatCompletionFrames(meta, [a], { includeUsage: false });
  await frames.return();
  assert.equal(a.returned, true);
  assert.equal(a.pulled, 0, 'nothing was generated ahead of the consumer');
});

test('an async-generator source has its finally run when the client leaves', async () => {
  let cleaned = false;
  async function* engine(): AsyncGenerator<ChatStreamPart> {
    try {
      for (let i = 0; ; i++) yield { type: 'text-delta', text: `t${i}` };
    } finally {
      cleaned = true;
    }
  }
  const frames = chatCompletionFrames(meta, [engine()], { includeUsage: false });
  for (let i = 0; i < 3; i++) await frames.next();
  await frames.return();
  assert.equal(cleaned, true);
});

test('return() while a next() is waiting on the engine ends both cleanly', async () => {
  const slow = new ScriptedSource(thinkingAnswer, 30);
  const frames = chatCompletionFrames(meta, [slow], { includeUsage: false });
  const pending = frames.next();
  await frames.return();
  assert.deepEqual(await pending, { done: true, value: undefined });
  assert.equal(slow.returned, true);
});

test('an engine error mid-stream rejects next() and stops the other choices; error frames have no choices', async () => {
  const failing = new ScriptedSource([{ type: 'text-delta', text: 'partial' }, new InferaError({ status: 500, message: 'decode failed' })]);
  const healthy = new ScriptedSource(thinkingAnswer, 50);
  const frames = chatCompletionFrames(meta, [failing, healthy], { includeUsage: false });
  const seen: string[] = [];
  await assert.rejects(async () => {
    for await (const frame of frames) seen.push(frame);
  }, /decode failed/);
  assert.ok(seen.length >= 2, 'the frames before the failure were delivered');
  assert.equal(healthy.returned, true);

  const [errorFrame, done] = chatStreamErrorFrames(new InferaError({ status: 500, message: 'decode failed' }));
  assert.equal(done, SSE_DONE_FRAME);
  assert.match(errorFrame!, /^data: \{.*\}\n\n$/s);
  const payload = JSON.parse(errorFrame!.slice(6)) as Record<string, unknown>;
  assert.equal('choices' in payload, false);
  assert.deepEqual(validateAgainstOpenApi('ErrorResponse', payload), []);
  // Non-Infera errors are rendered as a 500-type error too.
  const plain = JSON.parse(chatStreamErrorFrames(new Error('boom'))[0]!.slice(6)) as { error: { type: string } };
  assert.equal(plain.error.type, 'server_error');
});

test('an engine stream that ends without a finish part is an error, not a silent stop', async () => {
  const frames = chatCompletionFrames(meta, [new ScriptedSource([{ type: 'text-delta', text: 'x' }])], { includeUsage: false });
  await assert.rejects(collect(frames), (error: unknown) => error instanceof InferaError && error.status === 500);
});

test('arguments for a tool call that never started are an engine error', async () => {
  const source = new ScriptedSource([{ type: 'tool-call-delta', index: 0, argumentsDelta: '{}' }]);
  await assert.rejects(collect(chatCompletionFrames(meta, [source], { includeUsage: false })), /before starting it/);
  assert.equal(source.returned, true);
});
