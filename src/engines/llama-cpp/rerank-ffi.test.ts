// The reranker on the FFI encoder against node-llama-cpp's ranking contexts, on the tiny BERT cross-encoder:
// the same scores, token counts and chunks, with a request's chunks packed into few decodes. (The
// behaviour both runners share is rerank-suite.ts and rerank-qwen3-suite.ts; the Qwen3 suite's
// reference scores come from node-llama-cpp, so it is the templated reranker's parity check.)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Llama } from 'node-llama-cpp';
import { ClientGoneError } from '../../errors/index.ts';
import type { LoadedModel } from '../../spec/index.ts';
import { ensureTinyModels } from '../../tiny-models/index.ts';
import { llamaCppModelSchema } from './config.ts';
import { loadLlamaCppRerankModel, type LlamaCppRerankModel } from './rerank.ts';
import { createLlama } from './runtime.ts';

const signal = () => new AbortController().signal;
let llama: Llama;
let ffi: LoadedModel<LlamaCppRerankModel>;
let node: LoadedModel<LlamaCppRerankModel>;

before(async () => {
  const paths = await ensureTinyModels(join(tmpdir(), `infera-test-data-${process.env.INFERA_TEST_RUN ?? 'shared'}`, 'tiny-models'));
  llama = await createLlama(false);
  const config = (runner: string) =>
    llamaCppModelSchema.parse({ id: 'tiny-rerank', type: 'reranker', engine: 'llama-cpp', path: paths.reranker, llamaCpp: { threads: 1, contexts: 1, runner, batchSequences: 8 } });
  // The FFI reranker never asks for node-llama-cpp's Llama (its tokenizer is FfiVocab over the encoder's vocab).
  ffi = await loadLlamaCppRerankModel(config('ffi'), undefined, { llama: () => assert.fail('the FFI reranker asked for a Llama') }, (reason) => assert.fail(reason));
  node = await loadLlamaCppRerankModel(config('node-llama-cpp'), undefined, { llama });
});
after(async () => {
  await Promise.all([ffi?.dispose(), node?.dispose()]);
  await llama?.dispose();
});

test("ffi rerank equals node-llama-cpp's: scores within 1e-4, same tokens and chunks, long documents included", async () => {
  assert.equal(ffi.model.runner, 'ffi');
  assert.equal(node.model.runner, 'node-llama-cpp');
  assert.equal(ffi.model.maxInputTokens, node.model.maxInputTokens);
  const long = `${Array.from({ length: ffi.model.contextSize }, () => 'paris').join(' ')} cat dog`;
  const documents = ['the cat', 'a dog in the house', 'paris london tokyo', 'apple banana', '', long];
  for (const options of [{}, { overlapTokens: 0 }, { maxChunksPerDoc: 1 }, { maxTokensPerDoc: 5 }]) {
    const [a, b] = await Promise.all([ffi, node].map((loaded) => loaded.model.doRerank({ query: 'cat dog', documents, signal: signal(), ...options })));
    assert.equal(a!.inputTokens, b!.inputTokens, JSON.stringify(options));
    assert.equal(a!.chunks, b!.chunks);
    for (const [i, score] of a!.scores.entries()) assert.ok(Math.abs(score - b!.scores[i]!) < 1e-4, `document ${i} ${JSON.stringify(options)}: ${score} vs ${b!.scores[i]}`);
  }
});

// With llama.cpp's flash attention these four pairs scored 0.152 packed and 0.148–0.151 one per decode;
// a float64 forward pass of the tiny reranker's weights (numpy) gives 0.148382 for each (no document
// shares a word with the query). Plain attention (rerank.ts) matches it packed or not.
test('ffi rerank: four short documents packed into one decode score as one per decode, as node-llama-cpp, and as an exact forward pass', async () => {
  const documents = ['sunny and warm in Paris', 'a recipe for bread', 'rain expected tomorrow', 'stock prices fell'];
  const stats = ffi.model.encoderStats!;
  const mark = { ...stats };
  const [a, b] = await Promise.all([ffi, node].map((loaded) => loaded.model.doRerank({ query: 'what is the weather', documents, signal: signal() })));
  assert.equal(stats.inputs - mark.inputs, 4);
  assert.equal(stats.decodes - mark.decodes, 1, 'the four pairs share one llama_decode');
  const single: number[] = [];
  for (const document of documents) single.push((await ffi.model.doRerank({ query: 'what is the weather', documents: [document], signal: signal() })).scores[0]!);
  assert.equal(stats.decodes - mark.decodes, 5);
  for (const [i, score] of a!.scores.entries()) {
    assert.ok(Math.abs(score - b!.scores[i]!) < 1e-5, `document ${i}: ${score} vs node-llama-cpp ${b!.scores[i]}`);
    assert.ok(Math.abs(score - single[i]!) < 1e-5, `document ${i}: packed ${score} vs alone ${single[i]}`);
    assert.ok(Math.abs(score - 0.148382) < 1e-5, `document ${i}: ${score} vs the float64 forward pass 0.148382`);
  }
});

test("ffi rerank: a request's pairs are packed into few llama_decode calls (batchSequences 8), an aborted request's not decoded at all", async () => {
  const stats = ffi.model.encoderStats!;
  const mark = { ...stats };
  const documents = Array.from({ length: 12 }, (_, i) => `document number ${i} about cats`);
  await ffi.model.doRerank({ query: 'cat', documents, signal: signal() });
  assert.equal(stats.inputs - mark.inputs, 12);
  assert.equal(stats.decodes - mark.decodes, 2, '12 pairs in decodes of up to 8');
  await assert.rejects(ffi.model.doRerank({ query: 'cat', documents, signal: AbortSignal.abort() }), ClientGoneError);
  assert.equal(stats.inputs - mark.inputs, 12, 'an aborted request evaluates nothing');
});
