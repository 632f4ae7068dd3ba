import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InferaError } from '../errors/index.ts';
import { buildRerankResponse, MAX_RERANK_DOCUMENTS, parseRerankRequest } from './rerank.ts';

const base = { model: 'm', query: 'q', documents: ['a', 'b'] };
const rejects = (body: unknown, param: string | null) =>
  assert.throws(
    () => parseRerankRequest(body),
    (error: unknown) => {
      assert.ok(error instanceof InferaError, String(error));
      assert.equal(error.status, 400);
      assert.equal(error.param, param, `param for ${JSON.stringify(body).slice(0, 80)}: ${error.message}`);
      return true;
    },
  );

test('rerank request: fields, defaults, nulls and Cohere {text} documents', () => {
  const minimal = parseRerankRequest(base);
  assert.deepEqual(minimal.documents, ['a', 'b']);
  assert.equal(minimal.returnDocuments, false);
  assert.equal(minimal.topN, undefined);
  assert.equal(minimal.overlapTokens, undefined);
  const full = parseRerankRequest({
    ...base,
    documents: ['a', { text: 'b', title: 'ignored extra' }],
    top_n: 10,
    return_documents: true,
    max_chunks_per_doc: 1024,
    overlap_tokens: 80,
    instruction: 'find',
    rank_fields: ['text'],
    max_tokens_per_doc: 512,
  });
  assert.deepEqual(full.documents, ['a', 'b']);
  assert.equal(full.topN, 10);
  assert.equal(full.returnDocuments, true);
  assert.equal(full.maxChunksPerDoc, 1024);
  assert.equal(full.overlapTokens, 80);
  assert.equal(full.instruction, 'find');
  assert.equal(full.maxTokensPerDoc, 512);
  const nulls = parseRerankRequest({ ...base, top_n: null, return_documents: null, instruction: null, overlap_tokens: null });
  assert.equal(nulls.topN, undefined);
  assert.equal(nulls.instruction, undefined);
});

test('rerank request: every bad field answers 400 naming it', () => {
  rejects({ query: 'q', documents: ['a'] }, 'model');
  rejects({ model: 'm', documents: ['a'] }, 'query');
  rejects({ ...base, query: '' }, 'query');
  rejects({ model: 'm', query: 'q' }, 'documents');
  rejects({ ...base, documents: [] }, 'documents');
  rejects({ ...base, documents: 'a' }, 'documents');
  rejects({ ...base, documents: ['a', 5] }, 'documents[1]');
  rejects({ ...base, documents: ['a', { title: 'x' }] }, 'documents[1].text');
  rejects({ ...base, documents: Array(MAX_RERANK_DOCUMENTS + 1).fill('d') }, 'documents');
  rejects({ ...base, top_n: 0 }, 'top_n');
  rejects({ ...base, top_n: 1.5 }, 'top_n');
  rejects({ ...base, return_documents: 'yes' }, 'return_documents');
  rejects({ ...base, max_chunks_per_doc: 0 }, 'max_chunks_per_doc');
  rejects({ ...base, overlap_tokens: 81 }, 'overlap_tokens');
  rejects({ ...base, overlap_tokens: -1 }, 'overlap_tokens');
  rejects({ ...base, instruction: 3 }, 'instruction');
  rejects({ ...base, rank_fields: ['title'] }, 'rank_fields');
  rejects({ ...base, max_tokens_per_doc: 0 }, 'max_tokens_per_doc');
  rejects({ ...base, priority: 1 }, 'priority');
});

test('rerank response: sorted by score (ties by index), top_n after sorting, documents only when asked', () => {
  const request = { documents: ['d0', 'd1', 'd2', 'd3'], topN: undefined, returnDocuments: false };
  const scores = [0.2, 0.9, 0.2, 0.5];
  const all = buildRerankResponse(request, scores, { inputTokens: 40, chunks: 4 });
  assert.deepEqual(
    all.results.map((r) => [r.index, r.relevance_score]),
    [
      [1, 0.9],
      [3, 0.5],
      [0, 0.2],
      [2, 0.2],
    ],
  );
  assert.ok(all.results.every((r) => !('document' in r)));
  assert.deepEqual(all.tokens, { input_tokens: 40, output_tokens: 0 });
  assert.deepEqual(all.meta.tokens, { input_tokens: 40, output_tokens: 0 });
  assert.equal(all.meta.billed_units.search_units, 1);
  assert.equal(typeof all.id, 'string');

  const top = buildRerankResponse({ ...request, topN: 2, returnDocuments: true }, scores, { inputTokens: 40, chunks: 250 });
  assert.deepEqual(
    top.results.map((r) => [r.index, r.document?.text]),
    [
      [1, 'd1'],
      [3, 'd3'],
    ],
  );
  assert.equal(top.meta.billed_units.search_units, 3);
  assert.equal(buildRerankResponse({ ...request, topN: 99 }, scores, { inputTokens: 1, chunks: 4 }).results.length, 4);
});
