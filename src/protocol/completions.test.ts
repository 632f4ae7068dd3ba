// The /v1/completions wire layer alone: request parsing (defaults, prompt shapes, refusals naming the
// field) and the response / stream builders, checked against OpenAI's CreateCompletionResponse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InferaError } from '../errors/index.ts';
import type { CompletionResult, CompletionStreamPart, TokenLogprob } from '../spec/chat.ts';
import { validateAgainstOpenApi } from '../../test/helpers/openapi.ts';
import { buildTextCompletion, parseCompletionRequest, requestCachedTokens, toWireCompletionLogprobs } from './completions.ts';
import { TextCompletionFrames } from './completions-stream.ts';

const refuses = (body: Record<string, unknown>, param: string, message?: RegExp) =>
  assert.throws(
    () => parseCompletionRequest({ model: 'm', prompt: 'p', ...body }),
    (error: unknown) => {
      assert.ok(error instanceof InferaError);
      assert.equal(error.status, 400);
      assert.equal(error.param, param, JSON.stringify(body));
      if (message) assert.match(error.message, message);
      return true;
    },
  );

test('defaults: max_tokens 16 (OpenAI), one choice, no stream; null is absent; an empty suffix is none', () => {
  const parsed = parseCompletionRequest({ model: 'm', prompt: 'Hello', suffix: '', stop: null, n: null, logprobs: null, echo: null });
  assert.deepEqual(parsed, { model: 'm', prompts: ['Hello'], n: 1, stream: false, includeUsage: false, options: { maxTokens: 16, sampling: {} } });
  assert.deepEqual(parseCompletionRequest({ model: 'm' }).prompts, [''], 'no prompt: a new document');
  const full = parseCompletionRequest({
    model: 'm',
    prompt: 'Hello',
    suffix: 'end',
    max_tokens: 0,
    stop: '\n',
    temperature: 0.2,
    top_p: 0.9,
    top_k: 40,
    seed: 3,
    logprobs: 2,
    stream: true,
    stream_options: { include_usage: true },
    best_of: 1,
    user: 42,
  });
  assert.deepEqual(full.options, {
    maxTokens: 0,
    suffix: 'end',
    stop: ['\n'],
    topLogprobs: 2,
    sampling: { temperature: 0.2, topP: 0.9, topK: 40, seed: 3 },
  });
  assert.equal(full.includeUsage, true);
  assert.equal(full.user, '42');
});

test('prompt shapes: a string, strings, one token array, token arrays', () => {
  const prompts = (prompt: unknown) => parseCompletionRequest({ model: 'm', prompt }).prompts;
  assert.deepEqual(prompts('a'), ['a']);
  assert.deepEqual(prompts(['a', 'b']), ['a', 'b']);
  assert.deepEqual(prompts([1, 2, 3]), [[1, 2, 3]]);
  assert.deepEqual(prompts([[1], [2, 3]]), [[1], [2, 3]]);
  refuses({ prompt: [] }, 'prompt', /empty/);
  refuses({ prompt: [[]] }, 'prompt[0]', /empty/);
  refuses({ prompt: [1.5] }, 'prompt[0]');
  refuses({ prompt: [-1] }, 'prompt[0]');
  refuses({ prompt: { text: 'a' } }, 'prompt');
});

test('what no engine can honour is refused, naming the field', () => {
  refuses({ logprobs: 6 }, 'logprobs', /between 0 and 5/);
  refuses({ echo: true, logprobs: 0 }, 'echo', /logprobs/);
  refuses({ echo: true, suffix: 's' }, 'echo', /suffix/);
  refuses({ best_of: 2 }, 'best_of', /not supported/);
  refuses({ logit_bias: { '50256': -100 } }, 'logit_bias');
  refuses({ n: 0 }, 'n');
  refuses({ prompt: Array.from({ length: 9 }, () => 'a') }, 'prompt', /9 generations/);
  refuses({ prompt: ['a', 'b'], n: 5 }, 'n', /10 generations/);
  refuses({ max_tokens: 1.5 }, 'max_tokens');
  refuses({ stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop');
  // Accepted as no-ops: an empty logit_bias, best_of up to n (no selection).
  parseCompletionRequest({ model: 'm', prompt: 'p', logit_bias: {}, best_of: 2, n: 2 });
  parseCompletionRequest({ model: 'm', prompt: 'p', best_of: 1, n: 2 });
});

const logprob = (token: string, logprob: number, alternatives: [string, number][]): TokenLogprob => ({
  token,
  logprob,
  bytes: null,
  topLogprobs: alternatives.map(([t, l]) => ({ token: t, logprob: l, bytes: null })),
});

test('legacy logprobs: offsets from where the text starts, alternatives as a map that holds the chosen token', () => {
  const wire = toWireCompletionLogprobs(
    [logprob(' one', -0.1, [[' one', -0.1], [' two', -3]]), logprob(' two', -2, [[' three', -0.5], [' four', -1]])],
    5,
    2,
  );
  assert.deepEqual(wire, {
    tokens: [' one', ' two'],
    token_logprobs: [-0.1, -2],
    top_logprobs: [
      { ' one': -0.1, ' two': -3 },
      { ' three': -0.5, ' four': -1, ' two': -2 },
    ],
    text_offset: [5, 9],
  });
});

test('the JSON answer and the stream chunks are valid CreateCompletionResponse objects', async () => {
  const results: CompletionResult[] = [
    { text: ' one two', finishReason: 'length', usage: { promptTokens: 3, completionTokens: 2 }, logprobs: [logprob(' one', -0.1, []), logprob(' two', -0.2, [])], warnings: [] },
    { text: '!', finishReason: 'stop', usage: { promptTokens: 3, completionTokens: 1 }, logprobs: [logprob('!', -0.3, [])], warnings: [] },
  ];
  const meta = { id: 'cmpl-1', created: 1, model: 'm' };
  const body = buildTextCompletion(meta, results, 3, 0);
  assert.deepEqual(validateAgainstOpenApi('CreateCompletionResponse', body), []);
  assert.deepEqual(body.usage, { prompt_tokens: 3, completion_tokens: 3, total_tokens: 6, prompt_tokens_details: { cached_tokens: 0 } });
  assert.deepEqual(body.choices[0]!.logprobs!.top_logprobs, [{ ' one': -0.1 }, { ' two': -0.2 }]);

  async function* source(parts: CompletionStreamPart[]): AsyncGenerator<CompletionStreamPart> {
    yield* parts;
  }
  const frames = new TextCompletionFrames(
    meta,
    [
      source([
        { type: 'text-delta', text: 'Hi', },
        { type: 'text-delta', text: ' one', logprobs: [logprob(' one', -0.1, [])] },
        { type: 'finish', finishReason: 'length', usage: { promptTokens: 3, completionTokens: 1 } },
      ]),
    ],
    { includeUsage: true, topLogprobs: 0, promptTokens: 3 },
  );
  const events: string[] = [];
  for await (const frame of frames) events.push(frame);
  assert.equal(events.at(-1), 'data: [DONE]\n\n');
  const chunks = events.slice(0, -1).map((event) => JSON.parse(event.slice('data: '.length)));
  assert.deepEqual(
    chunks.map((chunk) => chunk.choices.map((c: { text: string; finish_reason: string | null }) => [c.text, c.finish_reason])),
    [[['Hi', null]], [[' one', null]], [['', 'length']], []],
  );
  assert.deepEqual(chunks[1].choices[0].logprobs.text_offset, [2], 'offsets count the text sent before');
  assert.deepEqual(chunks[2].usage, { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4, prompt_tokens_details: { cached_tokens: 0 } });
  assert.deepEqual(chunks[3].usage, chunks[2].usage);
  for (const chunk of chunks.slice(2)) assert.deepEqual(validateAgainstOpenApi('CreateCompletionResponse', chunk), []);
});

test('cached prompt tokens: a prompt counts the fewest its n choices found cached; prompts add up', async () => {
  const result = (cachedPromptTokens: number | undefined): CompletionResult => ({
    text: 'x',
    finishReason: 'stop',
    usage: { promptTokens: 10, completionTokens: 1, ...(cachedPromptTokens === undefined ? {} : { cachedPromptTokens }) },
    warnings: [],
  });
  const meta = { id: 'cmpl-2', created: 1, model: 'm' };
  // Two prompts × n = 2: prompt 0's choices found 9 and 4 cached, prompt 1's 7 and 7.
  const body = buildTextCompletion(meta, [result(9), result(4), result(7), result(7)], 20, undefined, 2);
  assert.equal(body.usage!.prompt_tokens_details.cached_tokens, 11);
  assert.equal(buildTextCompletion(meta, [result(undefined)], 10, undefined).usage!.prompt_tokens_details.cached_tokens, 0);
  assert.equal(requestCachedTokens([9, undefined, undefined, undefined], 2), 9, 'unfinished choices do not count yet');

  async function* source(cached: number): AsyncGenerator<CompletionStreamPart> {
    yield { type: 'text-delta', text: 'a' };
    yield { type: 'finish', finishReason: 'stop', usage: { promptTokens: 5, completionTokens: 1, cachedPromptTokens: cached } };
  }
  const frames = new TextCompletionFrames(meta, [source(4), source(2)], { includeUsage: true, promptTokens: 5, choicesPerPrompt: 2 });
  const chunks: { usage?: { prompt_tokens_details: { cached_tokens: number } } }[] = [];
  for await (const frame of frames) if (frame !== 'data: [DONE]\n\n') chunks.push(JSON.parse(frame.slice('data: '.length)));
  assert.equal(chunks.at(-1)!.usage!.prompt_tokens_details.cached_tokens, 2);
});
