// TEI and Infinity through engine openai-compatible: their native embedding and rerank routes, from
// recorded answers over a real socket. TEI reports no usage, so Infera counts (and the ledger says so).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { http } from '../../../../test/helpers/server.ts';
import { serve } from '../testing/fake-upstream.ts';
import { type Gateway, remoteModel, startGateway } from '../testing/gateway.ts';

const DOCUMENTS = ['Bananas are yellow.', 'Paris is the capital of France.'];

describe('dialects tei and infinity', () => {
  let gateway: Gateway;
  let openai: OpenAI;
  before(async () => {
    gateway = await startGateway((url) => [
      remoteModel('tei-embed', 'embedding', 'tei', { baseUrl: url, dimensions: 4 }),
      remoteModel('tei-rerank', 'reranker', 'tei', { baseUrl: url }),
      remoteModel('inf-embed', 'embedding', 'infinity', { baseUrl: url, model: 'BAAI/bge-small-en-v1.5' }),
      remoteModel('inf-rerank', 'reranker', 'infinity', { baseUrl: url, model: 'mixedbread-ai/mxbai-rerank-xsmall-v1' }),
    ]);
    openai = new OpenAI({ baseURL: gateway.server.baseURL, apiKey: 'unused', maxRetries: 0 });
  });
  after(() => gateway.close());
  const lastSent = (path: string) => gateway.upstream.seen.filter((r) => r.path === path).at(-1)!;

  test('TEI /embed: bare arrays; no usage, so Infera counts and the ledger row says so', async () => {
    gateway.upstream.route('POST', '/embed', serve('tei/embed.json'));
    const embeddings = await openai.embeddings.create({ model: 'tei-embed', input: ['one two three', 'four'] });
    assert.equal(embeddings.data.length, 2);
    assert.ok(Math.abs(embeddings.data[1]!.embedding[0]! - -0.0211792) < 1e-6);
    assert.ok(embeddings.usage.prompt_tokens > 0);
    assert.deepEqual(lastSent('/embed').body, { inputs: ['one two three', 'four'], truncate: false, normalize: true });
    assert.match((await gateway.ledgerRows(1)).at(-1)!.note ?? '', /reported no usage: tokens estimated by Infera/);
  });

  test('TEI /rerank: [{index, score}] in any order; a dimensions TEI cannot give is refused', async () => {
    gateway.upstream.route('POST', '/rerank', serve('tei/rerank.json'));
    const response = await http(gateway.server.baseURL, '/rerank', { body: { model: 'tei-rerank', query: 'capital of France', documents: DOCUMENTS, top_n: 1 } });
    assert.equal(response.status, 200, response.text);
    assert.deepEqual(response.json.results.map((r: { index: number; relevance_score: number }) => [r.index, r.relevance_score]), [[1, 0.99762183]]);
    assert.deepEqual(lastSent('/rerank').body, { query: 'capital of France', texts: DOCUMENTS, raw_scores: false, return_text: false, truncate: false });
    const refused = await http(gateway.server.baseURL, '/embeddings', { body: { model: 'tei-embed', input: 'x', dimensions: 2 } });
    assert.equal(refused.status, 400);
    assert.equal(refused.json.error.param, 'dimensions');
  });

  test('Infinity /embeddings and /rerank (document as a string) at the server root, usage from the answers', async () => {
    gateway.upstream.route('POST', '/embeddings', serve('infinity/embeddings.json'));
    gateway.upstream.route('POST', '/rerank', serve('infinity/rerank.json'));
    const embeddings = await openai.embeddings.create({ model: 'inf-embed', input: ['a', 'b'] });
    assert.equal(embeddings.usage.prompt_tokens, 11);
    assert.equal(lastSent('/embeddings').body.model, 'BAAI/bge-small-en-v1.5');
    const response = await http(gateway.server.baseURL, '/rerank', {
      body: { model: 'inf-rerank', query: 'capital of France', documents: DOCUMENTS, return_documents: true },
    });
    assert.equal(response.status, 200, response.text);
    assert.deepEqual(response.json.results.map((r: { index: number }) => r.index), [1, 0]);
    assert.equal(response.json.results[0].document.text, DOCUMENTS[1], 'documents are Infera’s own copies');
    assert.equal(response.json.tokens.input_tokens, 24);
    const tokens = await http(gateway.server.baseURL, '/embeddings', { body: { model: 'inf-embed', input: [[1, 2, 3]] } });
    assert.equal(tokens.status, 400, 'Infinity takes text only');
    assert.equal(tokens.json.error.param, 'input');
  });
});
