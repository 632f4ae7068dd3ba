// The onnx engine's embedding and rerank models on generated BERT exports. The reference is never a
// number written here: the same weights as a GGUF run by llama.cpp, the tokenizer's own pair encoding,
// or an ONNX Runtime session called directly.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { Tokenizer } from '@huggingface/tokenizers';
import { ClientGoneError, type InferaError } from '../../errors/index.ts';
import type { EmbeddingModel, RerankModel } from '../../spec/index.ts';
import { encodeBert } from '../../tiny-models/bert.ts';
import { GgmlType } from '../../tiny-models/gguf-writer.ts';
import { ensureOnnxBert, onnxBertBuild } from '../../tiny-models/onnx/index.ts';
import { llamaCppModelSchema } from '../llama-cpp/config.ts';
import { loadLlamaCppEmbeddingModel } from '../llama-cpp/embedding.ts';
import { createLlama } from '../llama-cpp/runtime.ts';
import { onnxModelSchema } from './config.ts';
import { loadOnnxEmbeddingModel } from './embedding.ts';
import { loadOnnxRerankModel } from './rerank.ts';

const dir = mkdtempSync(join(tmpdir(), 'infera-onnx-encoders-'));
const signal = new AbortController().signal;
const TEXTS = ['hello world', 'The cat sat on the mat, and the dog barked!', 'Paris is the capital of France.', 'apple'];
const embedDir = join(dir, 'embed');
const rerankDir = join(dir, 'rerank');
const disposers: (() => Promise<void>)[] = [];

const embedConfig = (extra: Record<string, unknown> = {}) =>
  onnxModelSchema.parse({ id: 'test/onnx-embed', type: 'embedding', engine: 'onnx', path: embedDir, ...extra });
async function loadEmbed(extra: Record<string, unknown> = {}): Promise<EmbeddingModel> {
  const loaded = await loadOnnxEmbeddingModel(embedConfig(extra));
  disposers.push(loaded.dispose);
  return loaded.model;
}
async function loadRerank(extra: Record<string, unknown> = {}): Promise<RerankModel> {
  const loaded = await loadOnnxRerankModel(onnxModelSchema.parse({ id: 'test/onnx-rerank', type: 'reranker', engine: 'onnx', path: rerankDir, ...extra }));
  disposers.push(loaded.dispose);
  return loaded.model;
}
const dot = (a: Float32Array, b: Float32Array) => a.reduce((sum, v, i) => sum + v * b[i]!, 0);
const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/** The tokenizer the export ships, used directly (not through the engine). */
const exportTokenizer = (folder: string) =>
  new Tokenizer(JSON.parse(readFileSync(join(folder, 'tokenizer.json'), 'utf8')), JSON.parse(readFileSync(join(folder, 'tokenizer_config.json'), 'utf8')));

before(async () => {
  await ensureOnnxBert('tiny-embed', embedDir);
  await ensureOnnxBert('tiny-rerank', rerankDir);
});
after(async () => {
  for (const dispose of disposers) await dispose();
  rmSync(dir, { recursive: true, force: true });
});

describe('onnx embedding model', () => {
  test('matches its llama.cpp GGUF twin: same tokens, same vectors (cosine > 0.9999)', async () => {
    const build = onnxBertBuild('tiny-embed');
    const ggufPath = join(dir, 'twin.gguf');
    writeFileSync(ggufPath, encodeBert({ config: build.config, weights: build.weights, matrixType: GgmlType.F32 }));
    const llama = await createLlama(false);
    const twin = await loadLlamaCppEmbeddingModel(llamaCppModelSchema.parse({ id: 'twin', type: 'embedding', engine: 'llama-cpp', path: ggufPath }), undefined, { llama });
    disposers.push(twin.dispose, () => llama.dispose());
    const model = await loadEmbed();
    assert.equal(model.dimensions, twin.model.dimensions);
    for (const text of TEXTS) assert.deepEqual(await model.tokenize(text), await twin.model.tokenize(text), text);
    const inputs = TEXTS.map((text) => ({ text }));
    const ours = await model.doEmbed({ inputs, signal });
    const theirs = await twin.model.doEmbed({ inputs, signal });
    assert.deepEqual(ours.tokensPerInput, theirs.tokensPerInput);
    ours.embeddings.forEach((vector, i) => {
      assert.ok(Math.abs(Math.hypot(...vector) - 1) < 1e-5);
      assert.ok(dot(vector, theirs.embeddings[i]!) > 0.9999, `${TEXTS[i]}: cosine ${dot(vector, theirs.embeddings[i]!)}`);
    });
  });

  test('a micro-batch of several calls (padded, reordered by length) equals each call alone', async () => {
    const model = await loadEmbed();
    const calls = [
      { inputs: [{ text: TEXTS[1]! }, { text: TEXTS[3]! }], signal },
      { inputs: [{ tokens: await model.tokenize(TEXTS[0]!) }], signal },
      { inputs: [{ text: TEXTS[2]! }, { text: TEXTS[0]! }], signal },
    ];
    const together = await Promise.all(model.doEmbedBatch!(calls));
    for (const [c, call] of calls.entries()) {
      const alone = await model.doEmbed(call);
      assert.equal(together[c]!.embeddings.length, call.inputs.length);
      assert.deepEqual(together[c]!.tokensPerInput, alone.tokensPerInput);
      for (const [i, vector] of together[c]!.embeddings.entries()) assert.ok(maxDiff(vector, alone.embeddings[i]!) < 1e-5);
    }
    // A token array and its text give the same vector.
    assert.ok(maxDiff(together[1]!.embeddings[0]!, together[2]!.embeddings[1]!) < 1e-5);
  });

  test('cls, last and mean pooling read the right token states', async () => {
    const text = TEXTS[1]!;
    const raw = await ort.InferenceSession.create(join(embedDir, 'model.onnx'));
    const ids = [2, ...exportTokenizer(embedDir).encode(text, { add_special_tokens: false }).ids, 3];
    const n = ids.length;
    const out = await raw.run({
      input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, n]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]),
      token_type_ids: new ort.Tensor('int64', new BigInt64Array(n), [1, n]),
    });
    const states = out.last_hidden_state!.data as Float32Array;
    const hidden = states.length / n;
    const expected = {
      cls: states.slice(0, hidden),
      last: states.slice((n - 1) * hidden),
      mean: Float32Array.from({ length: hidden }, (_, h) => Array.from({ length: n }, (_, t) => states[t * hidden + h]!).reduce((a, b) => a + b) / n),
    };
    await raw.release();
    for (const pooling of ['cls', 'last', 'mean'] as const) {
      const model = await loadEmbed({ normalize: false, onnx: { pooling } });
      const [vector] = (await model.doEmbed({ inputs: [{ text }], signal })).embeddings;
      assert.ok(maxDiff(vector!, expected[pooling]) < 1e-4, pooling);
    }
  });

  test('matryoshka models truncate to `dimensions` and re-normalise', async () => {
    const model = await loadEmbed({ matryoshka: true });
    const full = (await model.doEmbed({ inputs: [{ text: TEXTS[0]! }], signal })).embeddings[0]!;
    const short = (await model.doEmbed({ inputs: [{ text: TEXTS[0]! }], dimensions: 16, signal })).embeddings[0]!;
    assert.equal(short.length, 16);
    assert.ok(Math.abs(Math.hypot(...short) - 1) < 1e-5);
    const scale = full[0]! / short[0]!;
    for (const [i, v] of short.entries()) assert.ok(Math.abs(v * scale - full[i]!) < 1e-5);
  });

  test('bad input fails its own call only; a call whose client left is not computed', async () => {
    const model = await loadEmbed();
    const session = (model as unknown as { encoder: { session: { run: (...args: unknown[]) => Promise<unknown> } } }).encoder.session;
    const run = session.run;
    const rows: number[] = [];
    session.run = (feeds, ...rest) => {
      rows.push((feeds as Record<string, ort.Tensor>).input_ids!.dims[0]!);
      return run.call(session, feeds, ...rest);
    };
    const left = new AbortController();
    left.abort();
    const tooLong = { tokens: Array.from({ length: model.maxInputTokens + 1 }, () => 10) };
    const [bad, outOfVocab, good, gone] = model.doEmbedBatch!([
      { inputs: [{ text: 'fine' }, tooLong], signal },
      { inputs: [{ tokens: [model.vocabularySize!] }], signal },
      { inputs: [{ text: 'fine' }], signal },
      { inputs: Array.from({ length: 5 }, () => ({ text: 'nobody waits for this' })), signal: left.signal },
    ]);
    await assert.rejects(bad!, (error: InferaError) => error.status === 400 && error.param === 'input[1]');
    await assert.rejects(outOfVocab!, (error: InferaError) => error.status === 400 && error.param === 'input[0]');
    assert.equal((await good!).embeddings.length, 1);
    await assert.rejects(gone!, ClientGoneError);
    assert.deepEqual(rows, [1], 'only the good call reached ONNX Runtime');
    session.run = run;
  });

  test('a long forward pass runs off the main thread: timers keep firing meanwhile', async () => {
    const model = await loadEmbed({ onnx: { maxBatchSize: 256, maxBatchTokens: 1_000_000 } });
    const text = Array.from({ length: 500 }, () => 'cat').join(' ');
    const inputs = Array.from({ length: 96 }, () => ({ text }));
    let last = performance.now();
    let longestGap = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      longestGap = Math.max(longestGap, now - last);
      last = now;
    }, 5);
    const started = performance.now();
    await model.doEmbed({ inputs, signal });
    const took = performance.now() - started;
    clearInterval(timer);
    assert.ok(took > 150, `the pass took ${took.toFixed(0)} ms; make it longer for this test to mean anything`);
    assert.ok(longestGap < took / 2, `event loop stalled ${longestGap.toFixed(0)} ms during a ${took.toFixed(0)} ms pass`);
  });

  test('spin: the intra-op threads stay awake through a pass and sleep once it returns', async () => {
    // Threads are told apart by what they block on: a pool thread that sleeps between parallel sections
    // makes a voluntary context switch for each (8–20 per pass here, ~80 on the 384x12 bench model), one
    // that spins makes next to none; one left spinning after the pass burns CPU while the model is idle.
    const threadIds = () => new Set(readdirSync('/proc/self/task'));
    const voluntarySwitches = (tid: string) => Number(/voluntary_ctxt_switches:\s+(\d+)/.exec(readFileSync(`/proc/self/task/${tid}/status`, 'utf8'))![1]);
    const inputs = [{ text: Array.from({ length: 120 }, (_, i) => (i % 2 ? 'cat' : 'dog')).join(' ') }];
    const measure = async (spin: boolean) => {
      const before = threadIds();
      const loaded = await loadOnnxEmbeddingModel(embedConfig({ onnx: { threads: 2, spin } }), undefined, { ownProcess: true });
      try {
        const pool = [...threadIds()].filter((tid) => !before.has(tid));
        await loaded.model.doEmbed({ inputs, signal });
        const start = pool.map(voluntarySwitches);
        const passes = 5;
        for (let i = 0; i < passes; i++) await loaded.model.doEmbed({ inputs, signal });
        const perPass = Math.max(...pool.map((tid, i) => (voluntarySwitches(tid) - start[i]!) / passes));
        // The pool threads' own CPU time (schedstat: ns on the CPU), not the process's: the main thread's
        // timers and collections under a loaded test run measured up to 15 ms in this window by themselves.
        const poolCpuNs = () => pool.reduce((sum, tid) => sum + Number(readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0]), 0);
        const cpu = poolCpuNs();
        await new Promise((resolve) => setTimeout(resolve, 200));
        return { perPass, idleMs: (poolCpuNs() - cpu) / 1e6 };
      } finally {
        await loaded.dispose();
      }
    };
    const sleeping = await measure(false);
    const spinning = await measure(true);
    // Sleeping varies with the load (8–20 waits per pass measured); spinning stays at 0–1.
    assert.ok(spinning.perPass <= 2, `with spin the pool thread blocked ${spinning.perPass} times per pass`);
    assert.ok(sleeping.perPass >= 3 * Math.max(1, spinning.perPass), `without spin: ${sleeping.perPass} blocking waits per pass, with: ${spinning.perPass}`);
    assert.ok(spinning.idleMs < 10, `with spin the idle model's pool threads burned ${spinning.idleMs.toFixed(1)} ms of CPU in 200 ms after a pass`);
  });

  test('exports that cannot be served are refused at load with what to do', async () => {
    const noPooling = join(dir, 'no-pooling');
    cpSync(embedDir, noPooling, { recursive: true });
    rmSync(join(noPooling, '1_Pooling'), { recursive: true });
    await assert.rejects(loadOnnxEmbeddingModel(embedConfig({ path: noPooling })), /set onnx\.pooling/);
    const pooled = await loadOnnxEmbeddingModel(embedConfig({ path: noPooling, onnx: { pooling: 'mean' } }));
    await pooled.dispose();
    const noTokenizer = join(dir, 'no-tokenizer');
    cpSync(embedDir, noTokenizer, { recursive: true });
    rmSync(join(noTokenizer, 'tokenizer.json'));
    await assert.rejects(loadOnnxEmbeddingModel(embedConfig({ path: noTokenizer })), /tokenizer\.json is missing/);
    await assert.rejects(loadOnnxEmbeddingModel(embedConfig({ path: join(dir, 'nothing-here') })), /no model file .*set onnx\.file/);
    await assert.rejects(
      loadOnnxRerankModel(onnxModelSchema.parse({ id: 'x', type: 'reranker', engine: 'onnx', path: embedDir })),
      /no 'logits' output/,
    );
  });
});

describe('onnx rerank model', () => {
  test('pairs are framed exactly as the tokenizer frames them; score = sigmoid of the logit', async () => {
    const model = await loadRerank();
    const query = 'cat dog';
    const tokenizer = exportTokenizer(rerankDir);
    const raw = await ort.InferenceSession.create(join(rerankDir, 'model.onnx'));
    const expected: number[] = [];
    let tokens = 0;
    for (const document of TEXTS) {
      const pair = tokenizer.encode(query, { text_pair: document, return_token_type_ids: true });
      const n = pair.ids.length;
      tokens += n;
      const out = await raw.run({
        input_ids: new ort.Tensor('int64', BigInt64Array.from(pair.ids, BigInt), [1, n]),
        attention_mask: new ort.Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]),
        token_type_ids: new ort.Tensor('int64', BigInt64Array.from(pair.token_type_ids, BigInt), [1, n]),
      });
      expected.push(sigmoid((out.logits!.data as Float32Array)[0]!));
    }
    await raw.release();
    const result = await model.doRerank({ query, documents: TEXTS, signal });
    assert.equal(result.inputTokens, tokens);
    assert.equal(result.chunks, TEXTS.length);
    for (const [i, score] of result.scores.entries()) {
      assert.ok(Math.abs(score - expected[i]!) < 1e-5, `${TEXTS[i]}: ${score} vs ${expected[i]}`);
    }
  });

  test('long documents: chunks share overlap tokens, max_chunks_per_doc caps them, the best chunk scores', async () => {
    const model = await loadRerank();
    const words = Array.from({ length: 700 }, (_, i) => ['cat', 'river', 'music', 'tokyo', 'banana', 'code'][i % 6]).join(' ');
    const capped = await model.doRerank({ query: 'cat', documents: [words], maxChunksPerDoc: 2, overlapTokens: 10, signal });
    assert.equal(capped.chunks, 2);
    const all = await model.doRerank({ query: 'cat', documents: [words, 'cat'], overlapTokens: 10, signal });
    assert.ok(all.chunks! > 3, `${all.chunks} rows`);
    assert.ok(all.scores[0]! >= capped.scores[0]!, 'more chunks can only raise the best score');
    // The short document alone scores the same as inside the batch.
    const alone = await model.doRerank({ query: 'cat', documents: ['cat'], signal });
    assert.ok(Math.abs(alone.scores[0]! - all.scores[1]!) < 1e-5);
  });

  test('instruction: refused unless the model is configured to accept one', async () => {
    const plain = await loadRerank();
    await assert.rejects(plain.doRerank({ query: 'q', documents: ['a'], instruction: 'find cats', signal }), (e: InferaError) => e.param === 'instruction');
    const instructed = await loadRerank({ acceptsInstruction: true });
    const withInstruction = await instructed.doRerank({ query: 'q', documents: ['a'], instruction: 'find cats', signal });
    const without = await instructed.doRerank({ query: 'q', documents: ['a'], signal });
    assert.ok(withInstruction.inputTokens > without.inputTokens, 'the instruction is part of what the model reads');
  });
});

test('groupByLength: cuts sorted rows where padding would cost more than another pass, within the limits', async () => {
  const { groupByLength } = await import('./encoder.ts');
  const cover = (groups: [number, number][], n: number) => assert.deepEqual(groups.flatMap(([a, b]) => Array.from({ length: b - a }, (_, i) => a + i)), Array.from({ length: n }, (_, i) => i));
  // Equal lengths: one pass up to the row limit.
  assert.deepEqual(groupByLength(Array(10).fill(20), 32, 100_000), [[0, 10]]);
  assert.deepEqual(groupByLength(Array(40).fill(20), 32, 100_000).length, 2);
  // A long row among short ones gets its own pass instead of padding 30 rows to 400 tokens.
  const mixed = [400, ...Array(30).fill(12)];
  assert.deepEqual(groupByLength(mixed, 32, 100_000), [[0, 1], [1, 31]]);
  // The padded-token budget splits a group even when lengths are equal; a lone over-budget row still runs.
  const budget = groupByLength(Array(8).fill(100), 32, 300);
  assert.ok(budget.every(([a, b]) => (b - a) * 100 <= 300));
  cover(budget, 8);
  assert.deepEqual(groupByLength([5000], 32, 300), [[0, 1]]);
  cover(groupByLength([30, 29, 25, 22, 20, 18, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5], 4, 100_000), 17);
  assert.deepEqual(groupByLength([], 32, 1000), []);
});

test('XLM-R style exports (Unigram + Metaspace + RobertaProcessing, positions offset by 2): pairs framed as the tokenizer frames them', async () => {
  const { OnnxEncoder } = await import('./encoder.ts');
  const folder = join(dir, 'xlmr-style');
  cpSync(embedDir, folder, { recursive: true });
  const pieces = ['<s>', '<pad>', '</s>', '<unk>', ...['▁the', '▁cat', '▁sat', '▁on', '▁mat', '▁dog', '▁a', '▁', 's', 'at', 'c', 'd', 'o', 'g', 't', 'h', 'e', 'm', 'n']];
  const special = (content: string, id: number) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  writeFileSync(
    join(folder, 'tokenizer.json'),
    JSON.stringify({
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: [special('<s>', 0), special('<pad>', 1), special('</s>', 2), special('<unk>', 3)],
      normalizer: null,
      pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true },
      post_processor: { type: 'RobertaProcessing', sep: ['</s>', 2], cls: ['<s>', 0], trim_offsets: true, add_prefix_space: true },
      decoder: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true },
      model: { type: 'Unigram', unk_id: 3, vocab: pieces.map((piece, i) => [piece, i < 4 ? 0 : -1 - i / 10]), byte_fallback: false },
    }),
  );
  writeFileSync(join(folder, 'tokenizer_config.json'), JSON.stringify({ tokenizer_class: 'XLMRobertaTokenizer', model_max_length: 512, pad_token: '<pad>' }));
  writeFileSync(join(folder, 'config.json'), JSON.stringify({ model_type: 'xlm-roberta', max_position_embeddings: 514, hidden_size: 128 }));
  const encoder = await OnnxEncoder.load(folder, { threads: 1, executionProviders: ['cpu'], maxBatchSize: 8, maxBatchTokens: 4096 });
  try {
    assert.equal(encoder.maxLength, 512, 'XLM-R positions start after the padding index');
    const tokenizer = exportTokenizer(folder);
    for (const [query, document] of [['the cat', 'a dog sat on the mat'], ['cats', 'the']] as const) {
      const expected = tokenizer.encode(query, { text_pair: document });
      const row = encoder.row(encoder.textTokens(query), encoder.textTokens(document));
      assert.deepEqual(row.ids, expected.ids, `${query} / ${document}`);
      assert.equal(row.ids[0], 0);
      assert.deepEqual(row.ids.filter((id) => id === 2).length, 3, '<s> A </s></s> B </s>');
    }
    assert.deepEqual(encoder.row(encoder.textTokens('the cat')).ids, tokenizer.encode('the cat').ids);
  } finally {
    await encoder.dispose();
  }
});
