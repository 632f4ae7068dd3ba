// The FFI runner's prompt cache, on a random-weight qwen3 model (its greedy continuation depends on
// every token of the context, unlike the scripted tiny model's): each cached generation is compared
// token for token with the same prompt evaluated in full on a second runner whose cache is off. A
// wrong KV reuse (a stale cell kept, a copy arriving after the decode that needed it, a position off
// by one) changes the continuation.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GgmlType } from '../../../tiny-models/gguf-writer.ts';
import { encodeRandomChatModel } from '../../../tiny-models/random-chat.ts';
import { openLlamaLibrary } from './library.ts';
import { COPY_MIN_GAIN, LlamaRunner, type GenerationEnd } from './runner.ts';

let dir: string;
let cached: LlamaRunner;
let fresh: LlamaRunner;
/** The defaults' prefill: a step with nothing generating takes up to n_batch (2048) prompt tokens. */
let whole: LlamaRunner;

const SEQUENCES = 3;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'infera-prompt-cache-'));
  const path = join(dir, 'random.gguf');
  writeFileSync(
    path,
    encodeRandomChatModel({ hidden: 64, layers: 2, heads: 4, headsKv: 2, feedForward: 128, seed: 17, matrixType: GgmlType.F32, endBias: 100, asciiOnly: true }),
  );
  const lib = await openLlamaLibrary();
  // A small prefill chunk, with streams running or not: prompts take several steps, so a cancel lands
  // mid-prompt and a copy can be made from a sequence that is still prefilling.
  const options = { contextSize: 1024, sequences: SEQUENCES, threads: 1, prefillChunk: 48, idlePrefill: 48 };
  cached = LlamaRunner.load(lib, path, options);
  fresh = LlamaRunner.load(lib, path, { ...options, promptCache: false });
  whole = LlamaRunner.load(lib, path, { contextSize: 1024, sequences: SEQUENCES, threads: 1, promptCache: false });
});

after(async () => {
  await cached?.dispose();
  await fresh?.dispose();
  await whole?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

interface Run {
  tokens: number[];
  end: GenerationEnd;
}

function run(runner: LlamaRunner, prompt: number[], maxTokens = 16, extra: { cachePrompt?: boolean; onStep?: () => void } = {}) {
  const tokens: number[] = [];
  const generation = runner.generate({
    prompt,
    sampling: { temperature: 0 },
    maxTokens,
    cachePrompt: extra.cachePrompt,
    onToken: (event) => {
      tokens.push(event.token);
      return undefined;
    },
  });
  return { generation, tokens, result: generation.done.then((end): Run => ({ tokens, end })) };
}

const generate = (runner: LlamaRunner, prompt: number[], maxTokens = 16, cachePrompt?: boolean) => run(runner, prompt, maxTokens, { cachePrompt }).result;

/** The same prompt on the cache-less runner: what a cached run must produce. */
async function expectSameAsFresh(got: Run, prompt: number[], maxTokens = 16): Promise<void> {
  const reference = await generate(fresh, prompt, maxTokens);
  assert.equal(reference.end.cachedPromptTokens, 0);
  assert.deepEqual(got.tokens, reference.tokens, 'cached continuation differs from the full evaluation');
  assert.equal(got.tokens.length, maxTokens);
}

const words = (seed: number, count: number) =>
  Array.from({ length: count }, (_, i) => ['alpha', 'beta', 'gamma', 'delta', 'omega', 'sigma', 'kappa'][(seed * 7 + i * (seed + 3)) % 7]).join(' ');
const turn = (role: string, text: string) => `<|im_start|>${role}\n${text}<|im_end|>\n`;
const prompt = (text: string) => cached.tokenize(text);

/** Clears every sequence's cache: a long unrelated prompt on each (the cache-less runner needs none). */
async function resetCache(): Promise<void> {
  await Promise.all(Array.from({ length: SEQUENCES }, (_, i) => generate(cached, prompt(turn('user', `reset ${i} ${words(i + 20, 40)}`)), 1, false)));
}

test('the second turn of a conversation evaluates only the new turn, and continues exactly as a full evaluation', async () => {
  await resetCache();
  const system = turn('system', words(1, 60));
  const first = prompt(`${system}${turn('user', words(2, 40))}<|im_start|>assistant\n`);
  const one = await generate(cached, first, 24);
  await expectSameAsFresh(one, first, 24);
  // The next turn: the history as generated (its tokens exactly), then a new user message.
  const second = [...first, ...one.tokens, ...prompt(`<|im_end|>\n${turn('user', words(3, 30))}<|im_start|>assistant\n`)];
  const two = await generate(cached, second, 24);
  // The answer's last token was sampled but never evaluated: it is the one history token not in the KV.
  assert.equal(two.end.cachedPromptTokens, first.length + one.tokens.length - 1, 'the whole first turn, its answer included, came from the KV');
  assert.equal(two.end.promptTokens, second.length);
  await expectSameAsFresh(two, second, 24);
});

test('a partial prefix is reused and the rest of the old sequence dropped; a prompt that is a prefix of the cache evaluates its last token', async () => {
  await resetCache();
  const base = prompt(turn('user', words(4, 80)));
  const a = await generate(cached, base, 8);
  await expectSameAsFresh(a, base, 8);
  // Shares the first half, then differs: the cached tail past the divergence must not be attended to.
  const half = Math.floor(base.length / 2);
  const branch = [...base.slice(0, half), ...prompt(words(5, 30))];
  const shared = commonPrefixLength(base, branch);
  const b = await generate(cached, branch, 8);
  assert.equal(b.end.cachedPromptTokens, shared);
  await expectSameAsFresh(b, branch, 8);
  // A prompt shorter than what the sequence holds (all of it cached): its last token is evaluated again.
  const shorter = branch.slice(0, half + 10);
  const c = await generate(cached, shorter, 8);
  assert.equal(c.end.cachedPromptTokens, shorter.length - 1);
  await expectSameAsFresh(c, shorter, 8);
});

test('with every sequence holding a conversation, a new one evicts the least recently used', async () => {
  await resetCache();
  const conversations = Array.from({ length: SEQUENCES + 1 }, (_, i) => prompt(turn('user', `${i} ${words(i + 6, 50)}`)));
  const answers: Run[] = [];
  // One after another: the last one finds every sequence holding an earlier conversation.
  for (const conversation of conversations) answers.push(await generate(cached, conversation, 8));
  const nextTurn = (i: number) => [...conversations[i]!, ...answers[i]!.tokens, ...prompt(`<|im_end|>\n${turn('user', 'and then?')}`)];
  // The first conversation was evicted (its second turn then evicts the second, now the oldest).
  const evicted = await generate(cached, nextTurn(0), 8);
  assert.ok(evicted.end.cachedPromptTokens < conversations[0]!.length / 2, `evicted conversation: ${evicted.end.cachedPromptTokens} cached`);
  await expectSameAsFresh(evicted, nextTurn(0), 8);
  for (let i = 2; i <= SEQUENCES; i++) {
    const again = await generate(cached, nextTurn(i), 8);
    assert.equal(again.end.cachedPromptTokens, conversations[i]!.length + 7, `conversation ${i}`);
    await expectSameAsFresh(again, nextTurn(i), 8);
  }
});

test('a shared system prompt is copied into another sequence (llama_memory_seq_cp), from a running and from an idle sequence', async () => {
  await resetCache();
  const system = turn('system', words(9, 30));
  const systemTokens = prompt(system);
  assert.ok(systemTokens.length >= COPY_MIN_GAIN);
  const user = (i: number) => prompt(`${system}${turn('user', `${i} ${words(i + 10, 50)}`)}<|im_start|>assistant\n`);
  // A running sequence is the only one holding the system prompt: the next user's request copies it.
  const long = run(cached, user(3), 120);
  await waitFor(() => long.tokens.length > 0);
  let copies = cached.stats.copies;
  const second = user(4);
  const two = await generate(cached, second, 8);
  assert.equal(two.end.cachedPromptTokens, commonPrefixLength(user(3), second));
  assert.ok(two.end.cachedPromptTokens >= systemTokens.length);
  assert.equal(cached.stats.copies, copies + 1);
  await expectSameAsFresh(two, second, 8);
  await expectSameAsFresh(await long.result, user(3), 120);
  // Its conversation goes on in place.
  const followUp = [...second, ...two.tokens, ...prompt(`<|im_end|>\n${turn('user', 'more')}`)];
  const again = await generate(cached, followUp, 8);
  assert.equal(again.end.cachedPromptTokens, second.length + 7);
  await expectSameAsFresh(again, followUp, 8);
  // A third user while both are idle: copied into the least recently used sequence, both conversations kept.
  copies = cached.stats.copies;
  const third = user(5);
  const three = await generate(cached, third, 8);
  assert.equal(three.end.cachedPromptTokens, commonPrefixLength(user(3), third));
  assert.equal(cached.stats.copies, copies + 1);
  await expectSameAsFresh(three, third, 8);
  const followUp2 = [...followUp, ...again.tokens, ...prompt(`<|im_end|>\n${turn('user', 'more')}`)];
  const again2 = await generate(cached, followUp2, 8);
  assert.equal(again2.end.cachedPromptTokens, followUp.length + 7);
  await expectSameAsFresh(again2, followUp2, 8);
});

test("a next turn that drops the last answer (a reasoning model's history) continues in place; other conversations stay cached", async () => {
  await resetCache();
  const other = prompt(turn('user', `other ${words(15, 40)}`));
  const otherAnswer = await generate(cached, other, 8);
  const first = prompt(`${turn('system', words(16, 20))}${turn('user', words(17, 20))}<|im_start|>assistant\n`);
  // An answer much longer than the prompt (a long chain of thought).
  const one = await generate(cached, first, 3 * first.length);
  const copies = cached.stats.copies;
  const second = [...first, ...prompt(`short answer<|im_end|>\n${turn('user', 'go on')}<|im_start|>assistant\n`)];
  const two = await generate(cached, second, 8);
  assert.equal(two.end.cachedPromptTokens, commonPrefixLength([...first, ...one.tokens], second));
  assert.ok(two.end.cachedPromptTokens >= first.length);
  assert.equal(cached.stats.copies, copies, 'continued in its own sequence, nothing copied');
  await expectSameAsFresh(two, second, 8);
  // The other conversation was not evicted for it.
  const otherNext = [...other, ...otherAnswer.tokens, ...prompt(`<|im_end|>\n${turn('user', 'and?')}`)];
  const again = await generate(cached, otherNext, 8);
  assert.equal(again.end.cachedPromptTokens, other.length + 7);
});

test('n > 1: identical prompts admitted together evaluate the prompt once; the others copy it', async () => {
  await resetCache();
  const request = prompt(turn('user', words(12, 120)));
  const before = cached.stats.cachedPromptTokens;
  const results = await Promise.all(Array.from({ length: SEQUENCES }, () => generate(cached, request, 12)));
  const reused = results.map((result) => result.end.cachedPromptTokens).sort((a, b) => a - b);
  // The first shares only the template's opening with what the sequences held before.
  assert.ok(reused[0]! < COPY_MIN_GAIN, `first: ${reused[0]} cached`);
  assert.deepEqual(reused.slice(1), Array(SEQUENCES - 1).fill(request.length - 1));
  assert.equal(cached.stats.cachedPromptTokens - before, reused[0]! + (SEQUENCES - 1) * (request.length - 1));
  for (const result of results) await expectSameAsFresh(result, request, 12);
});

test('a request cancelled mid-prompt leaves exactly what was evaluated; the retry reuses it', async () => {
  await resetCache();
  const request = prompt(turn('user', words(13, 120)));
  assert.ok(request.length > 48 * 4);
  const steps = cached.stats.steps;
  const cancelled = run(cached, request, 8);
  await waitFor(() => cached.stats.steps >= steps + 2);
  cancelled.generation.cancel();
  const end = (await cancelled.result).end;
  assert.equal(end.reason, 'cancelled');
  assert.equal(end.generatedTokens, 0, 'cancelled before the prompt was through');
  const retry = await generate(cached, request, 8);
  assert.ok(retry.end.cachedPromptTokens >= 48 && retry.end.cachedPromptTokens < request.length - 1, `${retry.end.cachedPromptTokens} cached`);
  await expectSameAsFresh(retry, request, 8);
});

test('cache_prompt false evaluates the whole prompt (and answers the same)', async () => {
  await resetCache();
  const request = prompt(turn('user', words(14, 40)));
  const first = await generate(cached, request, 8);
  const uncached = await generate(cached, request, 8, false);
  assert.equal(uncached.end.cachedPromptTokens, 0);
  assert.deepEqual(uncached.tokens, first.tokens);
  const again = await generate(cached, request, 8);
  assert.equal(again.end.cachedPromptTokens, request.length - 1);
  assert.deepEqual(again.tokens, first.tokens);
});

test('prompts of a burst over one micro-batch (n_ubatch 512) are prefilled in one decode and continue as when fed 48 tokens a step', async () => {
  // llama.cpp splits that decode into micro-batches of equal tokens per sequence (per-sequence KV
  // streams): uneven prompts end in different micro-batches, and each first token's logits must come
  // from its own prompt's last one.
  const requests = Array.from({ length: SEQUENCES }, (_, i) => prompt(turn('user', `${i} ${words(i + 30, 30 + 10 * i)}`)));
  const total = requests.reduce((sum, request) => sum + request.length, 0);
  assert.ok(total > 512 && total <= 1024, `${total} prompt tokens`);
  const steps = whole.stats.steps;
  const results = await Promise.all(requests.map((request) => generate(whole, request, 8)));
  // One prefill step, seven more, and one decoded in vain where the runner pipelines.
  assert.ok(whole.stats.steps - steps <= 9, `${whole.stats.steps - steps} decodes`);
  for (const [i, result] of results.entries()) await expectSameAsFresh(result, requests[i]!, 8);
});

function commonPrefixLength(a: number[], b: number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

async function waitFor(condition: () => unknown): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((resolve) => setImmediate(resolve));
  }
}
