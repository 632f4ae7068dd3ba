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
  ffi = await loadLlamaCppRerankModel(config('ffi'), undefined, { llama }, (reason) => assert.fail(reason));
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

test('ffi rerank: four short documents score as node-llama-cpp scores them (packed into one decode they did not)', async () => {
  const documents = ['sunny and warm in Paris', 'a recipe for bread', 'rain expected tomorrow', 'stock prices fell'];
  const [a, b] = await Promise.all([ffi, node].map((loaded) => loaded.model.doRerank({ query: 'what is the weather', documents, signal: signal() })));
  for (const [i, score] of a!.scores.entries()) assert.ok(Math.abs(score - b!.scores[i]!) < 1e-4, `document ${i}: ${score} vs ${b!.scores[i]}`);
});

test("ffi rerank: a request's pairs are decoded one per llama_decode (see rerank.ts), an aborted request's not at all", async () => {
  const stats = ffi.model.encoderStats!;
  const mark = { ...stats };
  const documents = Array.from({ length: 12 }, (_, i) => `document number ${i} about cats`);
  await ffi.model.doRerank({ query: 'cat', documents, signal: signal() });
  assert.equal(stats.inputs - mark.inputs, 12);
  assert.equal(stats.decodes - mark.decodes, 12, 'one pair per decode');
  await assert.rejects(ffi.model.doRerank({ query: 'cat', documents, signal: AbortSignal.abort() }), ClientGoneError);
  assert.equal(stats.inputs - mark.inputs, 12, 'an aborted request evaluates nothing');
});
