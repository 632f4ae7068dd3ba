// What the FFI encoder (ffi/encoder.ts) adds over node-llama-cpp's embedding contexts, on the tiny
// models: concurrent inputs packed into one llama_decode, the same tokens and vectors as the
// node-llama-cpp path, queued inputs of an aborted request dropped, every batch checked. (The
// behaviour both runners share is embedding-suite.ts.)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Llama } from 'node-llama-cpp';
import { ClientGoneError } from '../../errors/index.ts';
import type { LoadedModel } from '../../spec/index.ts';
import { ensureTinyModels } from '../../tiny-models/index.ts';
import { ensureTinyQwen3Reranker } from '../../tiny-models/tiny-qwen3-reranker.ts';
import { llamaCppModelSchema } from './config.ts';
import { ggufInfo, loadLlamaCppEmbeddingModel, supportsRanking, vocabularySizeOf, type LlamaCppEmbeddingModel } from './embedding.ts';
import { LONE_FALLBACK_DECODES, LlamaEncoder, PLAIN_ATTENTION_TOKENS, SPLIT_TOKENS, seqMaxOf } from './ffi/encoder.ts';
import { openLlamaLibrary, type LlamaLibrary } from './ffi/library.ts';
import { createLlama } from './runtime.ts';

const signal = () => new AbortController().signal;
const maxDifference = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  assert.equal(a.length, b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
};

let paths: Awaited<ReturnType<typeof ensureTinyModels>>;
let llama: Llama;
let lib: LlamaLibrary;
let encoder: LlamaEncoder;
const TEXTS = ['the quick brown fox', 'hello world', 'paris london tokyo river mountain ocean city', 'a', 'cat dog fish bird', 'one two three four five six'];

const config = (path: string, runner: 'ffi' | 'node-llama-cpp', llamaCpp: Record<string, unknown> = {}) =>
  llamaCppModelSchema.parse({ id: 'tiny-embed', type: 'embedding', engine: 'llama-cpp', path, normalize: false, llamaCpp: { threads: 1, contexts: 1, runner, ...llamaCpp } });

before(async () => {
  paths = await ensureTinyModels(join(tmpdir(), `infera-test-data-${process.env.INFERA_TEST_RUN ?? 'shared'}`, 'tiny-models'));
  llama = await createLlama(false);
  lib = await openLlamaLibrary();
  encoder = LlamaEncoder.load(lib, paths.embedding, { contextSize: 64, sequences: 4, threads: 1, pooling: 'model' });
});
after(async () => {
  await encoder?.dispose();
  await llama?.dispose();
});

test('ffi encoder: concurrent inputs share one decode, up to n_seq_max inputs and n_batch tokens', async () => {
  const inputs = TEXTS.slice(0, 4).map((text) => encoder.framed(encoder.tokenize(text)));
  const alone: Float32Array[] = [];
  for (const tokens of inputs) alone.push(await encoder.encode(tokens));
  const before = { ...encoder.stats };
  const together = await Promise.all(inputs.map((tokens) => encoder.encode(tokens)));
  assert.equal(encoder.stats.decodes - before.decodes, 1, 'four inputs, one decode');
  for (const [i, vector] of together.entries()) assert.ok(maxDifference(vector, alone[i]!) < 1e-5, `input ${i}`);
  // Six inputs over four sequences: two decodes.
  const six = TEXTS.map((text) => encoder.framed(encoder.tokenize(text)));
  const mark = encoder.stats.decodes;
  await Promise.all(six.map((tokens) => encoder.encode(tokens)));
  assert.equal(encoder.stats.decodes - mark, 2);
  // Token budget: three inputs of 30 tokens do not fit one 64-token decode.
  const long = Array.from({ length: 3 }, () => encoder.framed(encoder.tokenize(Array.from({ length: 28 }, () => 'cat').join(' '))));
  assert.ok(long.every((tokens) => tokens.length === 30));
  const mark2 = encoder.stats.decodes;
  await Promise.all(long.map((tokens) => encoder.encode(tokens)));
  assert.equal(encoder.stats.decodes - mark2, 2);
});

test('ffi encoder: a sequence count that is not a power of two packs that many inputs (llama.cpp aborted at n_seq_max 3)', async () => {
  // Without seqMaxOf the first decode of two sequences here aborts the whole process (GGML_ASSERT in ggml.c).
  assert.deepEqual([1, 2, 3, 4, 5, 12, 256].map(seqMaxOf), [1, 2, 4, 4, 8, 16, 256]);
  const three = LlamaEncoder.load(lib, paths.embedding, { contextSize: 64, sequences: 3, threads: 1, pooling: 'model' });
  try {
    const inputs = TEXTS.slice(0, 4).map((text) => three.framed(three.tokenize(text)));
    const alone: Float32Array[] = [];
    for (const tokens of inputs) alone.push(await three.encode(tokens));
    const mark = three.stats.decodes;
    const together = await Promise.all(inputs.map((tokens) => three.encode(tokens)));
    assert.equal(three.stats.decodes - mark, 2, 'four inputs at three per decode: two decodes');
    for (const [i, vector] of together.entries()) assert.ok(maxDifference(vector, alone[i]!) < 1e-5, `input ${i}`);
  } finally {
    await three.dispose();
  }
});

test('ffi encoder: two lanes (contexts) share one queue and give the same vectors', async () => {
  const lanes = LlamaEncoder.load(lib, paths.embedding, { contextSize: 64, sequences: 2, threads: 1, lanes: 2, pooling: 'model' });
  try {
    assert.equal(lanes.lanesCount, 2);
    assert.equal(lanes.decodeOn, 'worker');
    const inputs = TEXTS.map((text) => encoder.framed(encoder.tokenize(text)));
    const reference = await Promise.all(inputs.map((tokens) => encoder.encode(tokens)));
    const vectors = await Promise.all(inputs.map((tokens) => lanes.encode(tokens)));
    assert.equal(lanes.stats.decodes, 3, 'six inputs, two per decode');
    for (const [i, vector] of vectors.entries()) assert.ok(maxDifference(vector, reference[i]!) < 1e-5, `input ${i}`);
  } finally {
    await lanes.dispose();
  }
});

test("ffi encoder on the loop (an engine process's): the worker's vectors, and what a caller sends on its answer leaves before the next decode", async () => {
  const onLoop = LlamaEncoder.load(lib, paths.embedding, { contextSize: 64, sequences: 4, threads: 1, pooling: 'model', decodeOn: 'loop' });
  try {
    assert.equal(onLoop.decodeOn, 'loop');
    const [a, b] = TEXTS.slice(0, 2).map((text) => encoder.framed(encoder.tokenize(text)));
    const reference = [await encoder.encode(a!), await encoder.encode(b!)];
    // b arrives after a's decode has started (the next immediate), as a request read from IPC during it would.
    let decodesWhenAnswerSent = -1;
    const first = onLoop.encode(a!).then((vector) => {
      // An engine process sends what its callers produced at the end of the turn, by setImmediate (child.ts).
      setImmediate(() => (decodesWhenAnswerSent = onLoop.stats.decodes));
      return vector;
    });
    const second = new Promise<Float32Array>((resolve, reject) => setImmediate(() => onLoop.encode(b!).then(resolve, reject)));
    const vectors = [await first, await second];
    assert.equal(onLoop.stats.decodes, 2);
    assert.equal(decodesWhenAnswerSent, 1, "a's answer was sent before b's decode blocked the loop");
    for (const [i, vector] of vectors.entries()) assert.ok(maxDifference(vector, reference[i]!) < 1e-5, `input ${i}`);
  } finally {
    await onLoop.dispose();
  }
});

test('ffi encoder: a lone lane of 2 threads decodes a batch over SPLIT_TOKENS as two 1-thread halves at once, a small one on both threads, with the same vectors', async () => {
  // Flash attention throughout, so that vectors compare whichever batches the inputs land in.
  // No half-thread fallback (its reference decode would take the lone input below to one thread).
  const options = { contextSize: 256, sequences: 16, threads: 2, pooling: 'model', plainAttentionForSmallBatches: false, loneFallbackFactor: 0 } as const;
  const split = LlamaEncoder.load(lib, paths.embedding, options);
  const whole = LlamaEncoder.load(lib, paths.embedding, { ...options, splitLargeBatches: false });
  try {
    assert.equal(split.lanesCount, 1, 'the helper context is not a lane of its own');
    const inputs = [...TEXTS, ...TEXTS].map((text) => split.framed(split.tokenize(`${text} ${text} ${text}`)));
    assert.ok(inputs.reduce((sum, tokens) => sum + tokens.length, 0) > SPLIT_TOKENS);
    const halves = await Promise.all(inputs.map((tokens) => split.encode(tokens)));
    assert.deepEqual([split.stats.decodes, split.stats.splitDecodes, split.stats.inputs], [2, 2, inputs.length]);
    // One input: one decode on both threads, the main lane's contexts set back to 2 threads.
    const lone = await split.encode(inputs[0]!);
    assert.deepEqual([split.stats.decodes, split.stats.splitDecodes], [3, 2]);
    const reference = await Promise.all(inputs.map((tokens) => whole.encode(tokens)));
    assert.equal(whole.stats.splitDecodes, 0);
    for (const [i, vector] of halves.entries()) assert.ok(maxDifference(vector, reference[i]!) < 1e-6, `input ${i}`);
    // Alone, both encoders decode it the same way (packed with others, flash attention's F16 rounding moves it ~1e-5).
    assert.ok(maxDifference(lone, await whole.encode(inputs[0]!)) < 1e-6);
  } finally {
    await Promise.all([split.dispose(), whole.dispose()]);
  }
});

test("ffi encoder on the loop, a lone 2-thread lane: a lone input decodes on the loop on both threads, split halves on koffi's workers, with the worker's vectors", async () => {
  const options = { contextSize: 256, sequences: 16, threads: 2, pooling: 'model', plainAttentionForSmallBatches: false, loneFallbackFactor: 0 } as const;
  const onLoop = LlamaEncoder.load(lib, paths.embedding, { ...options, decodeOn: 'loop' });
  const onWorker = LlamaEncoder.load(lib, paths.embedding, options);
  try {
    assert.equal(onLoop.decodeOn, 'loop', 'the helper context does not make the lane decode on the worker');
    const inputs = [...TEXTS, ...TEXTS].map((text) => onLoop.framed(onLoop.tokenize(`${text} ${text} ${text}`)));
    const lone = await onLoop.encode(inputs[0]!);
    assert.deepEqual([onLoop.stats.decodes, onLoop.stats.loopDecodes, onLoop.stats.splitDecodes], [1, 1, 0]);
    const halves = await Promise.all(inputs.map((tokens) => onLoop.encode(tokens)));
    assert.deepEqual([onLoop.stats.decodes, onLoop.stats.loopDecodes, onLoop.stats.splitDecodes], [3, 1, 2], 'the two halves ran on the workers');
    const reference = await Promise.all(inputs.map((tokens) => onWorker.encode(tokens)));
    assert.equal(onWorker.stats.loopDecodes, 0);
    for (const [i, vector] of halves.entries()) assert.ok(maxDifference(vector, reference[i]!) < 1e-6, `input ${i}`);
    assert.ok(maxDifference(lone, await onWorker.encode(inputs[0]!)) < 1e-6);
  } finally {
    await Promise.all([onLoop.dispose(), onWorker.dispose()]);
  }
});

test("ffi encoder: a lone 2-thread lane's second worker keeps polling after a whole decode, as llama-server's does, and sleeps once batches are split", async (t) => {
  if (!lib.pauseThreadpool) {
    t.skip('ggml_threadpool_pause not found (the CPU backend library is not in /proc/self/maps): the lane polls at level 0, as before');
    return;
  }
  // With the plain-attention context too: a one-input decode runs there, the split halves on the lane's.
  for (const plainAttentionForSmallBatches of [false, true]) await pollingThenPaused(plainAttentionForSmallBatches);
});

async function pollingThenPaused(plainAttentionForSmallBatches: boolean): Promise<void> {
  const threadIds = () => readdirSync('/proc/self/task');
  const existing = new Set(threadIds());
  const split = LlamaEncoder.load(lib, paths.embedding, { contextSize: 256, sequences: 16, threads: 2, pooling: 'model', plainAttentionForSmallBatches, loneFallbackFactor: 0 });
  // The CPU time, over 100 ms in which this thread only waits, of the threads started since the load began
  // (ggml's pool workers: one polls or sleeps). Not the process's: V8's collector threads and the main
  // thread's timers under the full test run measured 6.7 ms in this window by themselves.
  const cpuNs = (tids: string[]) =>
    tids.reduce((sum, tid) => {
      try {
        return sum + Number(readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        return sum; // a thread that ended
      }
    }, 0);
  const idleCpuMs = async () => {
    const pool = threadIds().filter((tid) => !existing.has(tid));
    const start = cpuNs(pool);
    await new Promise((resolve) => setTimeout(resolve, 100));
    return (cpuNs(pool) - start) / 1e6;
  };
  try {
    const inputs = [...TEXTS, ...TEXTS].map((text) => split.framed(split.tokenize(`${text} ${text} ${text}`)));
    for (let round = 0; round < 2; round++) {
      await split.encode(inputs[0]!);
      const polling = await idleCpuMs();
      // Level 0 (what the lane had before): the worker sleeps at once, ~0.3 ms here; polling, tens of ms.
      assert.ok(polling > 5, `the worker polls after a whole decode (${polling.toFixed(1)} ms of CPU in 100 ms)`);
      // Several split batches in a row: a graph of fewer threads than its pool wakes the idle worker,
      // which then polls again (on one pool at the default level it would spin beside the halves).
      const before = split.stats.splitDecodes;
      for (let batch = 0; batch < 3; batch++) await Promise.all(inputs.map((tokens) => split.encode(tokens)));
      assert.equal(split.stats.splitDecodes - before, 6);
      const paused = await idleCpuMs();
      assert.ok(paused < 5, `the full pool is paused while batches are split (${paused.toFixed(1)} ms of CPU in 100 ms)`);
    }
    if (plainAttentionForSmallBatches) assert.ok(split.stats.smallDecodes >= 2);
  } finally {
    await split.dispose();
  }
}

test("ffi encoder: a lone 2-thread lane decodes small batches on half its threads once a whole decode was slower than the half's best (loneFallbackFactor), with the same vectors", async () => {
  const options = { contextSize: 256, sequences: 16, threads: 2, pooling: 'model' } as const;
  // A factor this small takes every whole decode for a collapsed one: the switch itself is what is tested.
  const falling = LlamaEncoder.load(lib, paths.embedding, { ...options, loneFallbackFactor: 1e-9 });
  const never = LlamaEncoder.load(lib, paths.embedding, { ...options, loneFallbackFactor: 0 });
  try {
    const input = falling.framed(falling.tokenize(TEXTS[2]!));
    const reference = await never.encode(input);
    const counts = () => [falling.stats.decodes, falling.stats.fallbackDecodes];
    // The first small batch: the half threads' reference; the second: all threads, judged slower.
    const first = await falling.encode(input);
    assert.deepEqual(counts(), [1, 1]);
    await falling.encode(input);
    assert.deepEqual(counts(), [2, 1]);
    const after = [];
    for (let i = 0; i < 3; i++) after.push(await falling.encode(input));
    assert.deepEqual(counts(), [5, 4], 'the next small batches on half the threads');
    for (const vector of [first, ...after]) assert.ok(maxDifference(vector, reference) < 1e-5);
    for (let i = 0; i < 3; i++) await never.encode(input);
    assert.equal(never.stats.fallbackDecodes, 0);
    assert.ok(LONE_FALLBACK_DECODES >= 3);
  } finally {
    await Promise.all([falling.dispose(), never.dispose()]);
  }
});

test("ffi encoder: poll 0 (llamaCpp.poll) puts a lane's second worker to sleep after each decode, where the default keeps it polling", async (t) => {
  const idleCpuMs = async () => {
    const start = process.cpuUsage();
    await new Promise((resolve) => setTimeout(resolve, 100));
    const used = process.cpuUsage(start);
    return (used.user + used.system) / 1000;
  };
  const tokens = encoder.framed(encoder.tokenize('the quick brown fox'));
  const measured: Record<string, number> = {};
  for (const poll of [0, undefined]) {
    const lane = LlamaEncoder.load(lib, paths.embedding, { contextSize: 64, sequences: 4, threads: 2, pooling: 'model', splitLargeBatches: false, poll });
    try {
      await lane.encode(tokens);
      measured[String(poll)] = await idleCpuMs();
    } finally {
      await lane.dispose();
    }
  }
  t.diagnostic(`CPU in the 100 ms after a decode: poll 0 ${measured['0']!.toFixed(1)} ms, default ${measured.undefined!.toFixed(1)} ms`);
  assert.ok(measured['0']! < 5, `poll 0: the worker sleeps (${measured['0']!.toFixed(1)} ms of CPU in 100 ms)`);
  assert.ok(measured.undefined! > 5, `default: the worker polls (${measured.undefined!.toFixed(1)} ms of CPU in 100 ms)`);
});

test('ffi encoder: batches of up to PLAIN_ATTENTION_TOKENS tokens decode on the plain-attention context, with the vectors of the packed path', async () => {
  const hybrid = LlamaEncoder.load(lib, paths.embedding, { contextSize: 256, sequences: 8, threads: 1, pooling: 'model' });
  const flashOnly = LlamaEncoder.load(lib, paths.embedding, { contextSize: 256, sequences: 8, threads: 1, pooling: 'model', plainAttentionForSmallBatches: false });
  try {
    const small = TEXTS.map((text) => hybrid.framed(hybrid.tokenize(text)));
    // One short input alone: the small context.
    const alone = await hybrid.encode(small[0]!);
    assert.deepEqual([hybrid.stats.decodes, hybrid.stats.smallDecodes], [1, 1]);
    // Six inputs whose tokens pass PLAIN_ATTENTION_TOKENS: one decode on the default context.
    const long = small.map((tokens) => [...tokens, ...tokens.slice(1, -1), ...tokens.slice(1)]);
    assert.ok(long.reduce((sum, tokens) => sum + tokens.length, 0) > PLAIN_ATTENTION_TOKENS);
    const packed = await Promise.all(long.map((tokens) => hybrid.encode(tokens)));
    assert.deepEqual([hybrid.stats.decodes, hybrid.stats.smallDecodes], [2, 1]);
    const reference = await Promise.all([flashOnly.encode(small[0]!), ...long.map((tokens) => flashOnly.encode(tokens))]);
    assert.equal(flashOnly.stats.smallDecodes, 0);
    // Flash attention rounds Q·K to F16 on CPU: the two paths agree to that rounding, not bit for bit.
    assert.ok(maxDifference(alone, reference[0]!) < 1e-4);
    for (const [i, vector] of packed.entries()) assert.ok(maxDifference(vector, reference[i + 1]!) < 1e-5, `input ${i}`);
  } finally {
    await hybrid.dispose();
    await flashOnly.dispose();
  }
});

test('ffi encoder: only the context a lone input needs is made at load, the others when a batch first needs them (idle RSS)', async () => {
  const inputs = TEXTS.map((text) => encoder.framed(encoder.tokenize(text)));
  // Two lanes with a plain-attention context each: 4 contexts, of which a lone short input needs one.
  const lanes = LlamaEncoder.load(lib, paths.embedding, { contextSize: 256, sequences: 8, threads: 1, lanes: 2, pooling: 'model' });
  // A lone 2-thread lane: its default context and the helper for split halves wait for large batches.
  const split = LlamaEncoder.load(lib, paths.embedding, { contextSize: 256, sequences: 16, threads: 2, pooling: 'model' });
  try {
    for (const encoder of [lanes, split]) {
      assert.equal(encoder.stats.contexts, 1, 'one context at load');
      await encoder.encode(inputs[0]!);
      await encoder.encode(inputs[1]!);
      assert.deepEqual([encoder.stats.contexts, encoder.stats.smallDecodes], [1, 2], 'lone short inputs: the plain-attention context made at load');
    }
    // Six long inputs at once on two 1-thread lanes: two batches over PLAIN_ATTENTION_TOKENS, one on each lane's default context.
    const long = inputs.map((tokens) => [...tokens, ...tokens.slice(1, -1), ...tokens.slice(1, -1), ...tokens.slice(1)]);
    await Promise.all([...long, ...long].map((tokens) => lanes.encode(tokens)));
    assert.equal(lanes.stats.contexts, 3, "both lanes' default contexts, made when the batches came");
    // Over SPLIT_TOKENS on the lone lane: two halves, on its default context and the helper's.
    const many = [...long, ...long];
    assert.ok(many.reduce((sum, tokens) => sum + tokens.length, 0) > SPLIT_TOKENS);
    await Promise.all(many.map((tokens) => split.encode(tokens)));
    assert.deepEqual([split.stats.contexts, split.stats.splitDecodes], [3, 2]);
    // Made on demand, the contexts give the vectors the eager ones gave (the 1-lane encoder made at the top, on the same model).
    const reference = await encoder.encode(inputs[2]!);
    assert.ok(maxDifference(await lanes.encode(inputs[2]!), reference) < 1e-4);
    assert.ok(maxDifference(await split.encode(inputs[2]!), reference) < 1e-4);
  } finally {
    await Promise.all([lanes.dispose(), split.dispose()]);
  }
});

test('ffi encoder: inputs it cannot evaluate are refused before any decode', async () => {
  const mark = encoder.stats.decodes;
  await assert.rejects(encoder.encode([]), /empty/);
  await assert.rejects(encoder.encode([1, encoder.vocabSize]), /outside the vocabulary/);
  await assert.rejects(encoder.encode([1, -1]), /outside the vocabulary/);
  await assert.rejects(encoder.encode(new Array(65).fill(1)), /exceeds the context/);
  assert.equal(encoder.stats.decodes, mark);
});

test("ffi encoder: an aborted request's queued inputs are dropped, others still served", async () => {
  const tokens = encoder.framed(encoder.tokenize('the quick brown fox'));
  const controller = new AbortController();
  const mark = { ...encoder.stats };
  // The first decode is scheduled for the next turn of the event loop: abort before it runs.
  const dropped = Array.from({ length: 3 }, () => encoder.encode(tokens, controller.signal));
  const kept = encoder.encode(tokens);
  controller.abort();
  for (const promise of dropped) await assert.rejects(promise, ClientGoneError);
  assert.equal((await kept).length, encoder.outputSize);
  assert.equal(encoder.stats.inputs - mark.inputs, 1, 'only the live input was evaluated');
  await assert.rejects(encoder.encode(tokens, AbortSignal.abort()), ClientGoneError);
});

for (const [name, pathOf] of [
  ['tiny BERT (mean pooling)', () => paths.embedding],
  ['tiny qwen3 decoder (last token, as Qwen3-Embedding)', () => paths.chat],
] as const) {
  test(`ffi embeddings equal node-llama-cpp's: same tokens, same vectors within 1e-4 — ${name}`, async () => {
    const path = pathOf();
    const models: LoadedModel<LlamaCppEmbeddingModel>[] = [];
    try {
      // The FFI runner never asks for node-llama-cpp's Llama (no getLlama in its engine process).
      const noLlama = () => assert.fail('the FFI embedding model asked for a Llama');
      for (const runner of ['ffi', 'node-llama-cpp'] as const)
        models.push(
          await loadLlamaCppEmbeddingModel(config(path, runner, { contextSize: 256 }), undefined, { llama: runner === 'ffi' ? noLlama : llama }, (reason) => assert.fail(reason)),
        );
      const [ffi, node] = models.map((loaded) => loaded.model) as [LlamaCppEmbeddingModel, LlamaCppEmbeddingModel];
      assert.equal(ffi.runner, 'ffi');
      assert.equal(node.runner, 'node-llama-cpp');
      assert.equal(ffi.dimensions, node.dimensions);
      assert.equal(ffi.maxInputTokens, node.maxInputTokens);
      assert.equal(ffi.vocabularySize, node.vocabularySize);
      for (const text of TEXTS) assert.deepEqual(await ffi.tokenize(text), await node.tokenize(text), text);
      const inputs = [...TEXTS.map((text) => ({ text })), { tokens: await node.tokenize('hello world the cat') }];
      const [a, b] = await Promise.all([ffi, node].map((model) => model.doEmbed({ inputs, signal: signal() })));
      assert.deepEqual(a!.tokensPerInput, b!.tokensPerInput, 'the same tokens evaluated (special tokens included)');
      assert.equal(a!.promptTokens, b!.promptTokens);
      a!.embeddings.forEach((vector, i) => {
        const difference = maxDifference(vector, b!.embeddings[i]!);
        assert.ok(difference < 1e-4, `input ${i}: differs by ${difference}`);
      });
    } finally {
      await Promise.all(models.map((loaded) => loaded.dispose()));
    }
  });
}

test("embedding entries: a lone input decodes on the loop in an engine process as llamaCpp.decodeOn says (default loop), on koffi's worker in the server process", async () => {
  const noLlama = () => assert.fail('the FFI embedding model asked for a Llama');
  const cases = [
    { placement: 'loop', llamaCpp: {}, loop: 1 },
    { placement: 'loop', llamaCpp: { decodeOn: 'worker' }, loop: 0 },
    { placement: 'worker', llamaCpp: {}, loop: 0 },
  ] as const;
  for (const { placement, llamaCpp, loop } of cases) {
    const loaded = await loadLlamaCppEmbeddingModel(config(paths.embedding, 'ffi', { threads: 2, ...llamaCpp }), undefined, { llama: noLlama, decodeOn: placement });
    try {
      await loaded.model.doEmbed({ inputs: [{ text: TEXTS[0]! }], signal: signal() });
      assert.deepEqual([loaded.model.encoderStats!.decodes, loaded.model.encoderStats!.loopDecodes], [1, loop], `${placement} ${JSON.stringify(llamaCpp)}`);
    } finally {
      await loaded.dispose();
    }
  }
});

test("ggufInfo (Infera's header check) reads what node-llama-cpp's GGUF reader reads for the encoder loads", async () => {
  const { readGgufFileInfo } = await import('node-llama-cpp');
  const qwen3Reranker = await ensureTinyQwen3Reranker(join(tmpdir(), `infera-test-data-${process.env.INFERA_TEST_RUN ?? 'shared'}`, 'tiny-models'));
  const facts = (info: Awaited<ReturnType<typeof ggufInfo>>) => {
    const metadata = info.metadata as unknown as Record<string, Record<string, unknown> | undefined>;
    const architecture = metadata.general!.architecture as string;
    return {
      architecture,
      pooling: metadata[architecture]?.pooling_type,
      rerankTemplate: metadata.tokenizer?.['chat_template.rerank'],
      vocabulary: vocabularySizeOf(info),
      tensors: (info.fullTensorInfo ?? [])
        .filter((tensor) => ['token_embd.weight', 'cls.weight', 'cls.output.weight'].includes(tensor.name))
        .map((tensor) => `${tensor.name} ${tensor.dimensions.map(Number).join('x')}`)
        .sort(),
      // supportsRanking with and without a SEP/EOS token: the head and the template decide.
      ranking: [supportsRanking(info, { eos: 1, sep: undefined }), supportsRanking(info, { eos: undefined, sep: undefined })],
    };
  };
  const seen = [];
  for (const path of [paths.embedding, paths.reranker, paths.chat, qwen3Reranker]) {
    const ours = facts(await ggufInfo(path));
    assert.deepEqual(ours, facts(await readGgufFileInfo(path, { sourceType: 'filesystem' })), path);
    seen.push(ours);
  }
  // The four files cover what the loads branch on: a declared pooling, a head, a rerank template.
  assert.ok(seen.some((f) => f.pooling !== undefined) && seen.some((f) => f.ranking[0]) && seen.some((f) => !f.ranking[0]));
  assert.ok(seen.some((f) => typeof f.rerankTemplate === 'string' && f.ranking[1]));
});

test('llamaCpp.runner ffi falls back to node-llama-cpp with one reason when the FFI runner cannot serve the model', async () => {
  const reasons: string[] = [];
  const loaded = await loadLlamaCppEmbeddingModel(config(paths.embedding, 'ffi', { gpuLayers: 1 }), undefined, { llama }, (reason) => reasons.push(reason));
  try {
    assert.equal(loaded.model.runner, 'node-llama-cpp');
    assert.equal(reasons.length, 1);
    assert.match(reasons[0]!, /FFI runner not used for tiny-embed: GPU offload/);
  } finally {
    await loaded.dispose();
  }
});
