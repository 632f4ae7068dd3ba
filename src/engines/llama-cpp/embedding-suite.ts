// Properties of the llama.cpp embedding engine that hold even with random weights (tiny BERT, mean pooling).
// Both runners must pass it: embedding.test.ts runs it on the FFI encoder, embedding-node-llama-cpp.test.ts
// on node-llama-cpp's embedding contexts.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClientGoneError, InferaError } from '../../errors/index.ts';
import type { LoadedModel } from '../../spec/index.ts';
import type { Llama } from 'node-llama-cpp';
import { createEmbeddingBatcher } from '../../serving/embeddings.ts';
import { llamaCppModelSchema } from './config.ts';
import { loadLlamaCppEmbeddingModel, type LlamaCppEmbeddingModel } from './embedding.ts';
import { createLlama } from './runtime.ts';

const signal = () => new AbortController().signal;
const cosine = (a: Float32Array, b: Float32Array) => {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.sqrt(na * nb);
};
const norm = (v: Float32Array) => Math.sqrt(v.reduce((sum, x) => sum + x * x, 0));
const assertClose = (a: Float32Array, b: Float32Array, tolerance = 1e-4) => {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) <= tolerance, `component ${i}: ${a[i]} vs ${b[i]}`);
};

export function defineEmbeddingSuite(runner: 'ffi' | 'node-llama-cpp'): void {
  describe(`llama.cpp embeddings on ${runner}`, () => {
    let path: string;
    let chatPath: string;
    let rerankerPath: string;
    let loaded: LoadedModel<LlamaCppEmbeddingModel>;
    let raw: LoadedModel<LlamaCppEmbeddingModel>;
    let matryoshka: LoadedModel<LlamaCppEmbeddingModel>;
    let llama: Llama;
    const config = (extra: Record<string, unknown> = {}) => {
      const { llamaCpp, ...rest } = extra as { llamaCpp?: Record<string, unknown> };
      return llamaCppModelSchema.parse({ id: 'tiny-embed', type: 'embedding', engine: 'llama-cpp', path, ...rest, llamaCpp: { threads: 1, contexts: 2, runner, ...llamaCpp } });
    };

    before(async () => {
      const { ensureTinyModels } = await import('../../tiny-models/index.ts');
      const paths = await ensureTinyModels(join(tmpdir(), `infera-test-data-${process.env.INFERA_TEST_RUN ?? 'shared'}`, 'tiny-models'));
      path = paths.embedding;
      chatPath = paths.chat;
      rerankerPath = paths.reranker;
      llama = await createLlama(false);
      loaded = await loadLlamaCppEmbeddingModel(config(), undefined, { llama });
      raw = await loadLlamaCppEmbeddingModel(config({ normalize: false, llamaCpp: { threads: 1, contexts: 1 } }), undefined, { llama });
      matryoshka = await loadLlamaCppEmbeddingModel(config({ matryoshka: true, llamaCpp: { threads: 1, contexts: 1 } }), undefined, { llama });
    });
    after(async () => {
      await Promise.all([loaded?.dispose(), raw?.dispose(), matryoshka?.dispose()]);
      await llama?.dispose();
    });

    const embed = async (model: LlamaCppEmbeddingModel, texts: string[], dimensions?: number) =>
      (await model.doEmbed({ inputs: texts.map((text) => ({ text })), dimensions, signal: signal() })).embeddings;

    test('embedding engine: describes the model it loaded', () => {
      const model = loaded.model;
      assert.equal(model.kind, 'embedding');
      assert.equal(model.pooling, 'mean');
      assert.equal(model.runner, runner);
      assert.equal(model.parallelism, runner === 'ffi' ? 2 * 32 : 2);
      assert.ok(model.dimensions > 0);
      assert.ok(model.maxInputTokens > 0 && model.maxInputTokens < model.contextSize);
      assert.ok((model.vocabularySize ?? 0) > 0);
    });

    test('embedding engine: vectors are L2-normalised when configured, raw otherwise', async () => {
      const texts = ['the quick brown fox', 'hello world'];
      for (const vector of await embed(loaded.model, texts)) assert.ok(Math.abs(norm(vector) - 1) < 1e-5);
      const rawVectors = await embed(raw.model, texts);
      assert.ok(rawVectors.some((vector) => Math.abs(norm(vector) - 1) > 1e-3), 'llama.cpp returns unnormalised vectors');
      const normalised = await embed(loaded.model, texts);
      rawVectors.forEach((vector, i) => {
        assertClose(vector.map((x) => x / norm(vector)), normalised[i], 1e-5);
      });
    });

    test('embedding engine: a text is closest to itself and to texts sharing its tokens (mean pooling)', async () => {
      const groups = [
        ['cat dog fish bird', 'cat dog fish', 'bird cat dog'],
        ['paris london tokyo', 'london tokyo paris city', 'tokyo paris'],
        ['apple banana cherry', 'cherry banana', 'banana apple cherry red'],
      ];
      const all = groups.flat();
      const vectors = await embed(loaded.model, all);
      const again = await embed(loaded.model, all);
      for (let i = 0; i < all.length; i++) {
        assert.ok(cosine(vectors[i], again[i]) > 0.99999, 'deterministic: a re-embedding is the same vector');
        const group = Math.floor(i / 3);
        const similarities = vectors.map((other, j) => ({ j, s: cosine(vectors[i], other) })).filter(({ j }) => j !== i);
        const nearest = similarities.sort((a, b) => b.s - a.s)[0];
        assert.equal(Math.floor(nearest.j / 3), group, `"${all[i]}" is nearest to "${all[nearest.j]}"`);
      }
    });

    test('embedding engine: batched results equal one-at-a-time results', async () => {
      const texts = ['one two three', 'the cat', 'paris london tokyo river mountain ocean city', 'a'];
      const together = await embed(loaded.model, texts);
      for (const [i, text] of texts.entries()) assertClose(together[i], (await embed(loaded.model, [text]))[0]);
      // And through the micro-batcher, with concurrent requests sharing batches.
      const batcher = createEmbeddingBatcher(loaded.model, config(), { maxBatchTokens: 8192, maxWaitMs: 20, concurrency: 2 });
      const results = await Promise.all(texts.map((text) => batcher.submit({ inputs: [{ text }] }, 4, signal())));
      results.forEach((result, i) => {
        assertClose(result.embeddings[0], together[i]);
      });
      assert.equal(batcher.stats().batches, 1, 'concurrent requests shared one batch');
    });

    test('embedding engine: token-array input equals the same text', async () => {
      const text = 'hello world the cat';
      const tokens = await loaded.model.tokenize(text);
      const [fromTokens] = (await loaded.model.doEmbed({ inputs: [{ tokens }], signal: signal() })).embeddings;
      assertClose(fromTokens, (await embed(loaded.model, [text]))[0]);
    });

    test('embedding engine: usage counts the tokens evaluated, per input', async () => {
      const result = await loaded.model.doEmbed({ inputs: [{ text: 'cat' }, { text: 'the cat and the dog and the bird by the river' }], signal: signal() });
      assert.equal(result.tokensPerInput?.length, 2);
      assert.equal(result.promptTokens, result.tokensPerInput![0] + result.tokensPerInput![1]);
      assert.ok(result.tokensPerInput![1] > result.tokensPerInput![0]);
    });

    test('embedding engine: Matryoshka truncates then re-normalises; fixed-size models refuse other sizes', async () => {
      const [full] = await embed(matryoshka.model, ['the quick brown fox']);
      const [short] = await embed(matryoshka.model, ['the quick brown fox'], 8);
      assert.equal(short.length, 8);
      assert.ok(Math.abs(norm(short) - 1) < 1e-5);
      const prefix = full.slice(0, 8);
      assertClose(short, prefix.map((x) => x / norm(prefix)), 1e-5);
      assert.equal((await embed(loaded.model, ['x'], loaded.model.dimensions))[0].length, loaded.model.dimensions);
      await assert.rejects(embed(loaded.model, ['x'], 8), (error: unknown) => error instanceof InferaError && error.status === 400 && error.param === 'dimensions');
      await assert.rejects(
        embed(matryoshka.model, ['x'], matryoshka.model.dimensions + 1),
        (error: unknown) => error instanceof InferaError && error.param === 'dimensions',
      );
    });

    test('embedding engine: an input over the token limit is a 400 naming its index', async () => {
      const long = Array.from({ length: loaded.model.maxInputTokens + 5 }, () => 'cat').join(' ');
      await assert.rejects(embed(loaded.model, ['fine', long]), (error: unknown) => {
        assert.ok(error instanceof InferaError);
        assert.equal(error.status, 400);
        assert.equal(error.param, 'input[1]');
        return true;
      });
      const vocabulary = loaded.model.vocabularySize!;
      await assert.rejects(
        loaded.model.doEmbed({ inputs: [{ tokens: [1, vocabulary] }], signal: signal() }),
        (error: unknown) => error instanceof InferaError && error.param === 'input[0]',
      );
    });

    test('embedding engine: an aborted call does no work', async () => {
      await assert.rejects(loaded.model.doEmbed({ inputs: [{ text: 'x' }], signal: AbortSignal.abort() }), ClientGoneError);
    });

    test('embedding engine: a decoder model (qwen3, as Qwen3-Embedding) loads and embeds through the same path', async () => {
      const decoder = await loadLlamaCppEmbeddingModel(
        config({ id: 'tiny-decoder-embed', path: chatPath, llamaCpp: { contexts: 1, contextSize: 256 } }),
        undefined,
        { llama },
      );
      try {
        const model = decoder.model;
        const texts = ['hello there', 'the weather in paris', 'count to three'];
        const together = await embed(model, texts);
        for (const [i, text] of texts.entries()) {
          assert.equal(together[i].length, model.dimensions);
          assert.ok(Math.abs(norm(together[i]) - 1) < 1e-5);
          assertClose(together[i], (await embed(model, [text]))[0]);
        }
        // The scripted tiny chat model's last hidden state depends on which script the text triggers.
        assert.ok(cosine(together[0], together[1]) < 0.99);
        assert.ok(cosine(together[1], together[2]) < 0.99);
      } finally {
        await decoder.dispose();
      }
    });

    test('embedding engine: refuses to serve a reranker GGUF as an embedding model', async () => {
      await assert.rejects(
        loadLlamaCppEmbeddingModel(config({ id: 'r', path: rerankerPath, llamaCpp: { contexts: 1 } }), undefined, { llama }),
        /serve it as type reranker/,
      );
    });
  });
}
