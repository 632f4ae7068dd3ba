// The Qwen3-Reranker path end to end on a real llama.cpp model: a tiny generated GGUF laid out as
// llama.cpp's converter writes Qwen3-Reranker (qwen3, RANK pooling, yes/no cls.output, chat_template.rerank
// with an <Instruct> slot). Weights are random, so the checks are about what the model reads, not what
// it concludes: the reference scores come from evaluating the token sequence built independently from
// the template text with llama.cpp's tokenizer (on node-llama-cpp's ranking context). Both runners must
// pass it: rerank-qwen3.test.ts runs it on the FFI encoder, rerank-qwen3-node-llama-cpp.test.ts on node-llama-cpp.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Llama, LlamaModel, LlamaRankingContext, Token } from 'node-llama-cpp';
import { InferaError } from '../../errors/index.ts';
import type { LoadedModel } from '../../spec/index.ts';
import {
  ensureTinyQwen3Reranker,
  QWEN3_RERANK_DEFAULT_INSTRUCTION,
  QWEN3_RERANK_TEMPLATE,
} from '../../tiny-models/tiny-qwen3-reranker.ts';
import { loadLlamaCppRerankModel, queryWithInstruction, type LlamaCppRerankModel } from './rerank.ts';
import { llamaCppModelSchema } from './config.ts';
import { createLlama } from './runtime.ts';

const signal = () => new AbortController().signal;
const CONTEXT = 1024;

export function defineQwen3RerankSuite(runner: 'ffi' | 'node-llama-cpp'): void {
  describe(`qwen3 reranker on ${runner}`, () => {
    let path: string;
    let instructed: LoadedModel<LlamaCppRerankModel>;
    let plain: LoadedModel<LlamaCppRerankModel>;
    let reference: { model: LlamaModel; raw: LlamaRankingContext };
    let llama: Llama;

    const config = (acceptsInstruction: boolean) =>
      llamaCppModelSchema.parse({
        id: 'tiny-qwen3-reranker',
        type: 'reranker',
        engine: 'llama-cpp',
        path,
        acceptsInstruction,
        llamaCpp: { threads: 1, contexts: 2, contextSize: CONTEXT, runner },
      });

    before(async () => {
      path = await ensureTinyQwen3Reranker(join(tmpdir(), `infera-test-data-${process.env.INFERA_TEST_RUN ?? 'shared'}`, 'tiny-models'));
      llama = await createLlama(false);
      instructed = await loadLlamaCppRerankModel(config(true), undefined, { llama }, (reason) => assert.fail(reason));
      assert.equal(instructed.model.runner, runner);
      plain = await loadLlamaCppRerankModel(config(false), undefined, { llama });
      // Plain attention, as the engine evaluates rerankers (rerank.ts: flash attention's F16 rounding moves scores).
      const model = await llama.loadModel({ modelPath: path, defaultContextFlashAttention: false });
      reference = {
        model,
        // A template of bare placeholders evaluates exactly the tokens passed as the query.
        raw: await model.createRankingContext({ contextSize: CONTEXT, threads: 1, template: '{{query}}{{document}}' }),
      };
    });
    after(async () => {
      await Promise.all([instructed?.dispose(), plain?.dispose(), reference?.raw.dispose()]);
      await reference?.model.dispose();
      await llama?.dispose();
    });

    /** P(yes) for exactly these tokens. */
    const scoreOf = (tokens: Token[]) => reference.raw.rank(tokens, []);

    /**
     * What the model should read for (query, document) under `instruction`: the converter's template with
     * the instruction substituted, tokenized as text (special tokens parsed) around the query, and the
     * document tokenized on its own, the way node-llama-cpp's ranking context places a document.
     */
    function expectedTokens(query: string, document: string, instruction: string): Token[] {
      const [head, tail] = QWEN3_RERANK_TEMPLATE.split('{document}') as [string, string];
      const filledHead = head.replace(`<Instruct>: ${QWEN3_RERANK_DEFAULT_INSTRUCTION}`, `<Instruct>: ${instruction}`).replace('{query}', query);
      assert.ok(filledHead.includes(`<Instruct>: ${instruction}\n<Query>: ${query}\n`));
      const model = reference.model;
      return [...model.tokenize(filledHead, true), ...model.tokenize(document, false, 'trimLeadingSpace'), ...model.tokenize(tail, true)];
    }

    // Documents whose first word has no space-prefixed token, so placing the document on its own and
    // tokenizing it inside the prompt give the same tokens (the test 'a document reads as llama-server …'
    // below covers one where they differ).
    const query = 'find the fish';
    const documents = ['a fish in the house', 'x marks the spot', 'a dog', ''];

    test("qwen3 reranker GGUF: node-llama-cpp reads it as a qwen3 reranker with RANK pooling and the converter's rerank template", () => {
      const metadata = reference.model.fileInfo.metadata as unknown as Record<string, Record<string, unknown>>;
      assert.equal(metadata.general.architecture, 'qwen3');
      assert.equal(metadata.qwen3.pooling_type, 4);
      assert.equal(metadata.tokenizer['chat_template.rerank'], QWEN3_RERANK_TEMPLATE);
      assert.ok(reference.model.fileInsights.supportsRanking);
      assert.equal(instructed.model.acceptsInstruction, true);
    });

    test('qwen3 reranker: scores are probabilities in (0,1) and equal the per-pair scores', async () => {
      const together = await instructed.model.doRerank({ query, documents, signal: signal() });
      assert.equal(together.scores.length, documents.length);
      assert.equal(together.chunks, documents.length);
      for (const [i, document] of documents.entries()) {
        const score = together.scores[i]!;
        assert.ok(score > 0 && score < 1, `document ${i}: ${score}`);
        const alone = await instructed.model.doRerank({ query, documents: [document], signal: signal() });
        assert.ok(Math.abs(alone.scores[0]! - score) < 1e-6, `document ${i}: ${alone.scores[0]} vs ${score}`);
      }
      assert.ok(new Set(together.scores.map((s) => s.toFixed(6))).size > 1, 'different documents get different scores');
    });

    test('qwen3 reranker: without an instruction the model reads the template with its own default instruction', async () => {
      const result = await instructed.model.doRerank({ query, documents, signal: signal() });
      const explicit = await instructed.model.doRerank({ query, documents, instruction: QWEN3_RERANK_DEFAULT_INSTRUCTION, signal: signal() });
      assert.deepEqual(explicit, result);
      let tokens = 0;
      for (const [i, document] of documents.entries()) {
        const expected = expectedTokens(query, document, QWEN3_RERANK_DEFAULT_INSTRUCTION);
        tokens += expected.length;
        const score = await scoreOf(expected);
        assert.ok(Math.abs(result.scores[i]! - score) < 1e-6, `document ${i}: engine ${result.scores[i]} vs template ${score}`);
      }
      assert.equal(result.inputTokens, tokens);
    });

    test('qwen3 reranker: a request instruction replaces the default one in what the model reads', async () => {
      const instruction = 'Find the document about a fish';
      const withDefault = await instructed.model.doRerank({ query, documents, signal: signal() });
      const result = await instructed.model.doRerank({ query, documents, instruction, signal: signal() });
      // Token count: every pair grows by the difference between the two query slots, as the engine tokenizes them.
      const slotGrowth =
        instructed.model.countTokens(queryWithInstruction(query, instruction, QWEN3_RERANK_DEFAULT_INSTRUCTION)) -
        instructed.model.countTokens(queryWithInstruction(query, undefined, QWEN3_RERANK_DEFAULT_INSTRUCTION));
      assert.notEqual(slotGrowth, 0);
      assert.equal(result.inputTokens - withDefault.inputTokens, slotGrowth * documents.length);
      for (const [i, document] of documents.entries()) {
        assert.notEqual(result.scores[i], withDefault.scores[i], `document ${i}: the instruction changed nothing`);
        const score = await scoreOf(expectedTokens(query, document, instruction));
        assert.ok(Math.abs(result.scores[i]! - score) < 1e-6, `document ${i}: engine ${result.scores[i]} vs template ${score}`);
      }
      // Same length, different words: still a different score, so the text itself reaches the model.
      const swapped = QWEN3_RERANK_DEFAULT_INSTRUCTION.replace('web', 'dog');
      const same = await instructed.model.doRerank({ query, documents: [documents[0]!], instruction: swapped, signal: signal() });
      assert.notEqual(same.scores[0], withDefault.scores[0]);
    });

    test('qwen3 reranker: acceptsInstruction false refuses an instruction with a 400 naming it, and reads the template with its default instruction', async () => {
      assert.equal(plain.model.acceptsInstruction, false);
      await assert.rejects(
        plain.model.doRerank({ query, documents: ['a fish'], instruction: 'find fish', signal: signal() }),
        (error: unknown) => {
          assert.ok(error instanceof InferaError);
          assert.equal(error.status, 400);
          assert.equal(error.param, 'instruction');
          assert.match(error.message, /instruction/);
          return true;
        },
      );
      const result = await plain.model.doRerank({ query, documents, signal: signal() });
      for (const [i, document] of documents.entries()) {
        // The whole prompt as one text (llama-server's reading), not node-llama-cpp's piecewise template.
        const score = await scoreOf(reference.model.tokenize(QWEN3_RERANK_TEMPLATE.replace('{query}', query).replace('{document}', document), true));
        assert.ok(result.scores[i]! > 0 && result.scores[i]! < 1);
        assert.ok(Math.abs(result.scores[i]! - score) < 1e-6, `document ${i}: ${result.scores[i]} vs ${score}`);
      }
    });

    test(
      'qwen3 reranker: a document reads as llama-server and the Qwen3-Reranker reference code tokenize it (whole prompt as one text)',
      async () => {
        const document = 'the cat';
        const result = await instructed.model.doRerank({ query, documents: [document], signal: signal() });
        const prompt = QWEN3_RERANK_TEMPLATE.replace('{query}', query).replace('{document}', document);
        const whole = reference.model.tokenize(prompt, true);
        assert.equal(result.inputTokens, whole.length);
        assert.ok(Math.abs(result.scores[0]! - (await scoreOf(whole))) < 1e-6);
      },
    );
  });
}
