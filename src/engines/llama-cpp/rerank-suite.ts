// Properties of the llama.cpp reranker that hold with random weights (tiny BERT with a classification head).
// Both runners must pass it: rerank.test.ts runs it on the FFI encoder, rerank-node-llama-cpp.test.ts on
// node-llama-cpp's ranking contexts.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Llama } from 'node-llama-cpp';
import { ClientGoneError, InferaError } from '../../errors/index.ts';
import type { LoadedModel } from '../../spec/index.ts';
import { llamaCppModelSchema } from './config.ts';
import { createLlama } from './runtime.ts';
import { fillHead, loadLlamaCppRerankModel, promptTemplate, queryWithInstruction, splitIntoChunks, type LlamaCppRerankModel } from './rerank.ts';

const signal = () => new AbortController().signal;

export function defineRerankSuite(runner: 'ffi' | 'node-llama-cpp'): void {
  describe(`llama.cpp rerank on ${runner}`, () => {
    let paths: { embedding: string; reranker: string };
    let loaded: LoadedModel<LlamaCppRerankModel>;
    let instructed: LoadedModel<LlamaCppRerankModel>;
    let llama: Llama;
    const config = (extra: Record<string, unknown> = {}) => {
      const { llamaCpp, ...rest } = extra as { llamaCpp?: Record<string, unknown> };
      return llamaCppModelSchema.parse({ id: 'tiny-rerank', type: 'reranker', engine: 'llama-cpp', path: paths.reranker, ...rest, llamaCpp: { threads: 1, contexts: 2, runner, ...llamaCpp } });
    };

    before(async () => {
      const { ensureTinyModels } = await import('../../tiny-models/index.ts');
      paths = await ensureTinyModels(join(tmpdir(), `infera-test-data-${process.env.INFERA_TEST_RUN ?? 'shared'}`, 'tiny-models'));
      llama = await createLlama(false);
      loaded = await loadLlamaCppRerankModel(config(), undefined, { llama }, (reason) => assert.fail(reason));
      assert.equal(loaded.model.runner, runner);
      instructed = await loadLlamaCppRerankModel(config({ acceptsInstruction: true, llamaCpp: { threads: 1, contexts: 1 } }), undefined, { llama });
    });
    after(async () => {
      await Promise.all([loaded?.dispose(), instructed?.dispose()]);
      await llama?.dispose();
    });

    test('splitIntoChunks: chunks fit, overlap as asked (at most half a chunk), cover the document, stop at the cap', () => {
      const tokens = Array.from({ length: 100 }, (_, i) => i);
      assert.deepEqual(splitIntoChunks(tokens.slice(0, 10), 10, 3, 5), [tokens.slice(0, 10)]);
      const chunks = splitIntoChunks(tokens, 30, 10, 100);
      assert.ok(chunks.every((chunk) => chunk.length <= 30));
      for (let i = 1; i < chunks.length; i++) assert.deepEqual(chunks[i].slice(0, 10), chunks[i - 1].slice(-10));
      assert.equal(chunks[0][0], 0);
      assert.equal(chunks.at(-1)!.at(-1), 99);
      assert.deepEqual(splitIntoChunks(tokens, 30, 0, 100).flat(), tokens);
      assert.equal(splitIntoChunks(tokens, 30, 10, 2).length, 2);
      const halfCapped = splitIntoChunks(tokens, 10, 80, 100);
      assert.deepEqual(halfCapped[1].slice(0, 5), halfCapped[0].slice(5));
    });

    test('rerank engine: scores are sigmoid probabilities and equal the per-pair scores', async () => {
      const query = 'cat dog';
      const documents = ['the cat', 'a dog in the house', 'paris london tokyo', 'apple banana', ''];
      const together = await loaded.model.doRerank({ query, documents, signal: signal() });
      assert.equal(together.scores.length, documents.length);
      for (const [i, document] of documents.entries()) {
        const [alone] = (await loaded.model.doRerank({ query, documents: [document], signal: signal() })).scores;
        assert.ok(Math.abs(alone - together.scores[i]) < 1e-5, `document ${i}: ${alone} vs ${together.scores[i]}`);
        assert.ok(together.scores[i] > 0 && together.scores[i] < 1);
      }
      assert.ok(new Set(together.scores.map((s) => s.toFixed(6))).size > 1, 'different documents get different scores');
      assert.equal(together.chunks, documents.length);
      assert.ok(together.inputTokens > 0);
    });

    test('rerank engine: a document longer than the context is chunked; its score is its best chunk', async () => {
      const model = loaded.model;
      const filler = Array.from({ length: model.contextSize }, () => 'paris').join(' ');
      const relevant = 'cat dog cat dog';
      const document = `${filler} ${relevant}`;
      const query = 'cat dog';
      const whole = await model.doRerank({ query, documents: [document], overlapTokens: 0, signal: signal() });
      assert.ok(whole.chunks! >= 2, 'split into several chunks');
      const firstOnly = await model.doRerank({ query, documents: [document], maxChunksPerDoc: 1, signal: signal() });
      assert.equal(firstOnly.chunks, 1);
      assert.ok(whole.scores[0] >= firstOnly.scores[0], 'more chunks can only raise the best score');
      assert.ok(whole.inputTokens > firstOnly.inputTokens);
      // Best chunk wins: allowing one more chunk can only keep or raise the score, and all of them give the whole's score.
      let previous = 0;
      for (let cap = 1; cap <= whole.chunks!; cap++) {
        const [score] = (await model.doRerank({ query, documents: [document], overlapTokens: 0, maxChunksPerDoc: cap, signal: signal() })).scores;
        assert.ok(score >= previous - 1e-9, `cap ${cap}: ${score} < ${previous}`);
        previous = score;
      }
      assert.ok(Math.abs(previous - whole.scores[0]) < 1e-9);
      const truncated = await model.doRerank({ query, documents: [document], maxTokensPerDoc: 5, signal: signal() });
      assert.equal(truncated.chunks, 1);
    });

    test('rerank engine: a query that leaves no room for a document is a 400 naming `query`', async () => {
      const query = Array.from({ length: loaded.model.contextSize + 10 }, () => 'cat').join(' ');
      await assert.rejects(loaded.model.doRerank({ query, documents: ['x'], signal: signal() }), (error: unknown) => {
        assert.ok(error instanceof InferaError);
        assert.equal(error.status, 400);
        assert.equal(error.param, 'query');
        return true;
      });
    });

    test('rerank engine: instruction only for rerankers that take one, and it changes the scores', async () => {
      assert.equal(loaded.model.acceptsInstruction, false);
      await assert.rejects(
        loaded.model.doRerank({ query: 'q', documents: ['d'], instruction: 'find', signal: signal() }),
        (error: unknown) => error instanceof InferaError && error.status === 400 && error.param === 'instruction',
      );
      const plain = await instructed.model.doRerank({ query: 'cat', documents: ['the cat', 'a dog'], signal: signal() });
      const withInstruction = await instructed.model.doRerank({
        query: 'cat',
        documents: ['the cat', 'a dog'],
        instruction: 'find the fish',
        signal: signal(),
      });
      assert.notDeepEqual(plain.scores, withInstruction.scores);
    });

    test('rerank engine: refuses to load a model without a classification head', async () => {
      await assert.rejects(
        loadLlamaCppRerankModel(config({ id: 'not-a-reranker', path: paths.embedding, llamaCpp: { contexts: 1 } }), undefined, { llama }),
        /not a reranker/,
      );
    });

    test('rerank engine: an aborted call does no work', async () => {
      await assert.rejects(loaded.model.doRerank({ query: 'q', documents: ['d'], signal: AbortSignal.abort() }), ClientGoneError);
    });

    test('rerank engine: the Qwen3-Reranker template slot takes the request instruction', () => {
      // The template llama.cpp's converter writes for Qwen3-Reranker.
      const qwen3 =
        '<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct provided. ' +
        'Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n<Instruct>: Given a web search query, ' +
        'retrieve relevant passages that answer the query\n<Query>: {query}\n<Document>: {document}<|im_end|>\n' +
        '<|im_start|>assistant\n<think>\n\n</think>\n\n';
      const slot = promptTemplate(qwen3)!;
      assert.equal(slot.defaultInstruction, 'Given a web search query, retrieve relevant passages that answer the query');
      assert.ok(slot.head.endsWith('user\n<Instruct>: Given a web search query, retrieve relevant passages that answer the query\n<Query>: {query}\n<Document>: '));
      assert.ok(slot.tail.startsWith('<|im_end|>\n<|im_start|>assistant'));
      assert.ok(fillHead(slot, 'q $& $1', undefined).endsWith(`<Instruct>: ${slot.defaultInstruction}\n<Query>: q $& $1\n<Document>: `));
      assert.ok(fillHead(slot, 'q', 'find code').endsWith('<Instruct>: find code\n<Query>: q\n<Document>: '));
      // Without a slot: the request's instruction is prefixed, and absent means the bare query.
      assert.equal(fillHead(promptTemplate('{query} {document}')!, 'q', 'find code'), 'Instruct: find code\nQuery: q ');
      assert.equal(promptTemplate('{document} {query}'), undefined);
      assert.equal(queryWithInstruction('q', undefined, undefined), 'q');
      assert.equal(queryWithInstruction('q', 'find code', undefined), 'Instruct: find code\nQuery: q');
    });
  });
}
