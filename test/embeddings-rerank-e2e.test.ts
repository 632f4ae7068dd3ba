// End to end: the real server on the tiny BERT embedding model and reranker, driven by the official
// openai SDK (embeddings, float and base64), cohere-ai (rerank v1 and v2, base URL = server root) and raw
// HTTP for every SiliconFlow field and bad input. The whole suite runs once per engine: the GGUF models
// on llama.cpp (the default models) and their ONNX exports on ONNX Runtime (engine onnx).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { CohereClient, CohereClientV2 } from 'cohere-ai';
import { base64ToFloat32, MAX_EMBEDDING_INPUTS } from '../src/protocol/embeddings.ts';
import { join } from 'node:path';
import type { ModelConfig } from '../src/config/schema.ts';
import { tinyModelConfigs } from '../src/registry/default-models.ts';
import { DEFAULT_BATCHING } from '../src/serving/embeddings-batching.ts';
import type { EmbeddingModel } from '../src/spec/index.ts';
import { ensureOnnxBert } from '../src/tiny-models/onnx/index.ts';
import { http, SHARED_DATA_DIR, startTestServer, type TestServer } from './helpers/server.ts';
import { validateAgainstOpenApi } from './helpers/openapi.ts';

const EMBED = 'BAAI/bge-m3'; // aliases of the tiny models, as SiliconFlow's docs and apps send them
const RERANK = 'BAAI/bge-reranker-v2-m3';

/** The default tiny models with the embedding model and reranker swapped for their ONNX exports. */
async function onnxEncoderModels(): Promise<ModelConfig[]> {
  const dir = join(SHARED_DATA_DIR, 'tiny-models');
  const embed = await ensureOnnxBert('tiny-embed', join(dir, 'tiny-bert-embed-onnx'));
  const rerank = await ensureOnnxBert('tiny-rerank', join(dir, 'tiny-bert-rerank-onnx'));
  // The llama-cpp entries' own options block goes: another engine's options are a config error.
  const asOnnx = (model: ModelConfig, path: string) => {
    const { llamaCpp: _, ...common } = model as ModelConfig & { llamaCpp?: unknown };
    return { ...common, engine: 'onnx', path };
  };
  return (await tinyModelConfigs(SHARED_DATA_DIR)).map((model) =>
    model.type === 'embedding' ? asOnnx(model, embed) : model.type === 'reranker' ? asOnnx(model, rerank) : model,
  );
}

for (const engine of ['llama-cpp', 'onnx'] as const)
describe(`embeddings and rerank end to end (engine ${engine})`, () => {
  let server: TestServer;
  let openai: OpenAI;
  before(async () => {
    server = await startTestServer(engine === 'onnx' ? { config: { models: await onnxEncoderModels() } } : {});
    assert.equal((await embedModel()).config.engine, engine);
    openai = new OpenAI({ baseURL: server.baseURL, apiKey: 'unused-on-loopback', maxRetries: 0 });
  });
  after(() => server.close());

  const embedModel = async () => {
    const lease = await server.server.services.registry.acquire(EMBED, 'embedding');
    lease.release();
    return { model: lease.model as EmbeddingModel, config: lease.config };
  };
  const expect400 = async (path: string, body: unknown, param: string) => {
    const response = await http(server.baseURL, path, { body });
    assert.equal(response.status, 400, `${JSON.stringify(body).slice(0, 100)} → ${response.status} ${response.text.slice(0, 200)}`);
    assert.equal(response.json.error.param, param, response.json.error.message);
    assert.equal(response.json.error.type, 'invalid_request_error');
    assert.equal(typeof response.json.code, 'number');
  };

  test('openai SDK: base64 (its default) and float give the same unit vectors; response is OpenAPI-valid', async () => {
    const input = ['the quick brown fox', 'hello world', 'paris london tokyo'];
    const byDefault = await openai.embeddings.create({ model: EMBED, input });
    const floats = await openai.embeddings.create({ model: EMBED, input, encoding_format: 'float' });
    assert.equal(byDefault.data.length, 3);
    assert.equal(byDefault.model, EMBED);
    assert.ok(byDefault.usage.prompt_tokens > 0);
    assert.equal(byDefault.usage.total_tokens, byDefault.usage.prompt_tokens);
    // SiliconFlow's example answer carries completion_tokens: 0 (OpenAI's schema allows the extra field).
    assert.equal((byDefault.usage as unknown as { completion_tokens: number }).completion_tokens, 0);
    for (const [i, item] of floats.data.entries()) {
      assert.equal(item.index, i);
      assert.equal(item.object, 'embedding');
      const norm = Math.hypot(...item.embedding);
      assert.ok(Math.abs(norm - 1) < 1e-5);
      assert.deepEqual(byDefault.data[i].embedding, item.embedding);
    }
    assert.deepEqual(validateAgainstOpenApi('CreateEmbeddingResponse', floats), []);
  });

  test('raw HTTP: base64 is little-endian float32 of the float answer', async () => {
    const body = { model: EMBED, input: 'hello world' };
    const floats = await http(server.baseURL, '/embeddings', { body });
    const encoded = await http(server.baseURL, '/embeddings', { body: { ...body, encoding_format: 'base64' } });
    assert.equal(floats.status, 200);
    assert.equal(typeof encoded.json.data[0].embedding, 'string');
    const decoded = Array.from(base64ToFloat32(encoded.json.data[0].embedding));
    assert.deepEqual(decoded, floats.json.data[0].embedding);
    // OpenAI's schema models only the float form, so only that one is validated against it.
    assert.deepEqual(validateAgainstOpenApi('CreateEmbeddingResponse', floats.json), []);
  });

  test('raw HTTP: token arrays, bare path, 64-item arrays, dimensions equal to the native size, user', async () => {
    const { model } = await embedModel();
    const tokens = await model.tokenize('hello world');
    const fromTokens = await http(server.url, '/embeddings', { body: { model: EMBED, input: tokens } });
    const fromText = await http(server.baseURL, '/embeddings', { body: { model: EMBED, input: 'hello world' } });
    assert.equal(fromTokens.status, 200);
    assert.deepEqual(fromTokens.json.data[0].embedding, fromText.json.data[0].embedding);
    const many = await http(server.baseURL, '/embeddings', {
      body: { model: EMBED, input: Array.from({ length: 64 }, (_, i) => `item ${i} the cat`), dimensions: model.dimensions, user: 'u1' },
    });
    assert.equal(many.status, 200);
    assert.equal(many.json.data.length, 64);
    assert.deepEqual(
      many.json.data.map((d: { index: number }) => d.index),
      Array.from({ length: 64 }, (_, i) => i),
    );
    const pairs = await http(server.baseURL, '/embeddings', { body: { model: EMBED, input: [tokens, tokens.slice(0, 1)] } });
    assert.equal(pairs.json.data.length, 2);
  });

  test('raw HTTP: every bad embeddings input is a 400 naming the field', async () => {
    const { model } = await embedModel();
    const long = Array.from({ length: model.maxInputTokens + 3 }, () => 'cat').join(' ');
    await expect400('/embeddings', { model: EMBED, input: '' }, 'input');
    await expect400('/embeddings', { model: EMBED, input: ['a', ''] }, 'input[1]');
    await expect400('/embeddings', { model: EMBED, input: [] }, 'input');
    await expect400('/embeddings', { model: EMBED, input: Array(MAX_EMBEDDING_INPUTS + 1).fill('a') }, 'input');
    await expect400('/embeddings', { model: EMBED, input: ['fine', 'fine', 'fine', long] }, 'input[3]');
    await expect400('/embeddings', { model: EMBED, input: long }, 'input');
    await expect400('/embeddings', { model: EMBED, input: [1, model.vocabularySize!] }, 'input');
    await expect400('/embeddings', { model: EMBED, input: 'x', dimensions: 8 }, 'dimensions');
    await expect400('/embeddings', { model: EMBED, input: 'x', encoding_format: 'int8' }, 'encoding_format');
    await expect400('/embeddings', { input: 'x' }, 'model');
    await expect400('/embeddings', { model: RERANK, input: 'x' }, 'model');
    const unknown = await http(server.baseURL, '/embeddings', { body: { model: 'nobody/none', input: 'x' } });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.json.code, 20012);
    assert.equal(unknown.json.error.param, 'model');
  });

  test('embeddings: serving sends the text in the one call to the engine, which counts it and refuses what serving would', async () => {
    const { model } = await embedModel();
    const text = 'the cat sat on the mat';
    const counted = (await http(server.baseURL, '/embeddings', { body: { model: EMBED, input: text } })).json.usage.prompt_tokens;
    const textTokens = (await model.tokenize(text)).length;
    assert.ok(counted >= textTokens, `${counted} prompt tokens for ${textTokens} text tokens`);
    // Asking the engine process for the tokens first would be a second round trip per request.
    const tokenize = model.tokenize;
    model.tokenize = () => Promise.reject(new Error('serving asked the engine to tokenize'));
    try {
      const answer = await http(server.baseURL, '/embeddings', { body: { model: EMBED, input: [text, text] } });
      assert.equal(answer.status, 200, answer.text.slice(0, 300));
      assert.equal(answer.json.usage.prompt_tokens, 2 * counted);
      // The per-input limit and the request's cap, counted by the engine, with serving's wording.
      const long = Array.from({ length: model.maxInputTokens + 3 }, () => 'cat').join(' ');
      const single = await http(server.baseURL, '/embeddings', { body: { model: EMBED, input: long } });
      assert.equal(single.status, 400);
      assert.equal(single.json.error.param, 'input');
      assert.match(single.json.error.message, new RegExp(`^input: ${model.maxInputTokens + 3} tokens is more than model '${model.name.replace(/[/.]/g, '\\$&')}' takes \\(${model.maxInputTokens} per input\\)`));
      const third = await http(server.baseURL, '/embeddings', { body: { model: EMBED, input: ['a', 'b', long] } });
      assert.equal(third.json.error.param, 'input[2]');
      assert.equal(third.json.error.code, 'context_length_exceeded');
    } finally {
      model.tokenize = tokenize;
    }
  });

  test('embeddings: a full queue is 503 + Retry-After; a caller that leaves while queued is dropped', async () => {
    const { model, config } = await embedModel();
    const batcher = server.server.services.batchers.embedding(model, config);
    const slots = model.preferredBatching?.concurrency ?? DEFAULT_BATCHING.concurrency;
    // Keep every batch slot busy with big jobs submitted straight to the model's batcher.
    const text = Array.from({ length: 12 }, () => 'the cat and the dog in the house by the river').join(' ');
    const heavy = Array.from({ length: slots }, () => batcher.submit({ inputs: Array.from({ length: 150 }, () => ({ text })) }, 9000));
    const waitFor = async (condition: () => boolean) => {
      for (let i = 0; i < 400 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
      assert.ok(condition());
    };
    await waitFor(() => batcher.stats().running === slots);
    const dropped = batcher.stats().dropped;
    const leaving = new AbortController();
    const request = fetch(`${server.baseURL}/embeddings`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: EMBED, input: 'left early' }),
      signal: leaving.signal,
    }).catch((error: unknown) => error);
    await waitFor(() => batcher.stats().queued === 1);
    leaving.abort();
    await request;
    await waitFor(() => batcher.stats().dropped === dropped + 1);
    assert.equal(batcher.stats().queued, 0);

    // Fill the queue (config.maxQueue) behind the busy slots, then one more is refused.
    const fillers = Array.from({ length: config.maxQueue }, () => batcher.submit({ inputs: [{ text: 'x' }] }, 1));
    const refused = await http(server.baseURL, '/embeddings', { body: { model: EMBED, input: 'one too many' } });
    assert.equal(refused.status, 503);
    assert.ok(Number(refused.headers.get('retry-after')) >= 1);
    assert.equal(refused.json.error.type, 'overloaded_error');
    await Promise.all([...heavy, ...fillers]);
  });

  test('cohere-ai v1: rerank with {text} documents, top_n, return_documents; sorted; meta tokens', async () => {
    const cohere = new CohereClient({ token: 'unused-on-loopback', environment: server.url, maxRetries: 0 });
    const documents = ['the cat sat', 'paris london tokyo', 'a dog and a cat', 'apple banana cherry'];
    const response = await cohere.rerank({
      model: RERANK,
      query: 'cat dog',
      documents: documents.map((text, i) => (i % 2 ? { text } : text)),
      topN: 3,
      returnDocuments: true,
    });
    assert.equal(response.results.length, 3);
    const scores = response.results.map((r) => r.relevanceScore);
    assert.deepEqual(scores, [...scores].sort((a, b) => b - a));
    for (const result of response.results) {
      assert.equal(result.document?.text, documents[result.index]);
      assert.ok(result.relevanceScore > 0 && result.relevanceScore < 1);
    }
    assert.ok((response.meta?.tokens?.inputTokens ?? 0) > 0);
    assert.equal(response.meta?.billedUnits?.searchUnits, 1);
  });

  test('cohere-ai v2: rerank at /v2/rerank gives the same scores as v1', async () => {
    const documents = ['the cat sat', 'paris london tokyo', 'a dog and a cat'];
    const v2 = await new CohereClientV2({ token: 'unused', environment: server.url, maxRetries: 0 }).rerank({
      model: RERANK,
      query: 'cat dog',
      documents,
    });
    const v1 = await http(server.baseURL, '/rerank', { body: { model: RERANK, query: 'cat dog', documents } });
    assert.equal(v2.results.length, 3);
    assert.deepEqual(
      v2.results.map((r) => [r.index, r.relevanceScore]),
      v1.json.results.map((r: { index: number; relevance_score: number }) => [r.index, r.relevance_score]),
    );
  });

  test('raw HTTP rerank: SiliconFlow fields, results == per-pair scores sorted, tokens and meta', async () => {
    const documents = ['the cat', 'a dog in the house', 'paris london tokyo', 'apple banana'];
    const response = await http(server.baseURL, '/rerank', {
      body: { model: RERANK, query: 'cat dog', documents, top_n: null, return_documents: false, max_chunks_per_doc: 1024, overlap_tokens: 80 },
    });
    assert.equal(response.status, 200, response.text);
    const { results, tokens, meta, id } = response.json;
    assert.equal(typeof id, 'string');
    assert.equal(results.length, documents.length);
    assert.ok(results.every((r: object) => !('document' in r)));
    for (const result of results) {
      const alone = await http(server.url, '/rerank', { body: { model: RERANK, query: 'cat dog', documents: [documents[result.index]] } });
      // The same pair scores the same in a batch and alone, up to float32 rounding: llama.cpp's CPU kernels
      // are not batch-invariant (a batch of four and a batch of one measured 3.6e-6 apart on an AMD EPYC
      // with node-llama-cpp's prebuilt variant); a document scored against another's pair is off by far more.
      // (An explicit message: Node 20's assert.ok re-parses this file to build one, for minutes.)
      const difference = Math.abs(alone.json.results[0].relevance_score - result.relevance_score);
      assert.ok(difference < 1e-5, `document ${result.index}: ${alone.json.results[0].relevance_score} alone, ${result.relevance_score} in the batch`);
    }
    const scores = results.map((r: { relevance_score: number }) => r.relevance_score);
    assert.deepEqual(scores, [...scores].sort((a: number, b: number) => b - a));
    assert.ok(tokens.input_tokens > 0);
    assert.equal(tokens.output_tokens, 0);
    assert.deepEqual(meta.tokens, tokens);
    const withDocs = await http(server.baseURL, '/rerank', { body: { model: RERANK, query: 'cat', documents, top_n: 99, return_documents: true } });
    assert.equal(withDocs.json.results.length, documents.length);
    for (const result of withDocs.json.results) assert.equal(result.document.text, documents[result.index]);
  });

  test('raw HTTP: every bad rerank input is a 400 naming the field', async () => {
    const base = { model: RERANK, query: 'q', documents: ['a', 'b'] };
    await expect400('/rerank', { ...base, query: '' }, 'query');
    await expect400('/rerank', { ...base, documents: [] }, 'documents');
    await expect400('/rerank', { ...base, documents: ['a', 7] }, 'documents[1]');
    await expect400('/rerank', { ...base, top_n: 0 }, 'top_n');
    await expect400('/rerank', { ...base, return_documents: 'yes' }, 'return_documents');
    await expect400('/rerank', { ...base, max_chunks_per_doc: 0 }, 'max_chunks_per_doc');
    await expect400('/rerank', { ...base, overlap_tokens: 81 }, 'overlap_tokens');
    await expect400('/rerank', { ...base, instruction: 'find cats' }, 'instruction');
    await expect400('/rerank', { ...base, model: EMBED }, 'model');
    const longQuery = Array.from({ length: 2000 }, () => 'cat').join(' ');
    await expect400('/rerank', { ...base, query: longQuery }, 'query');
  });
});

test('a request over its limits gets its 429 before the model is loaded for it (embeddings, rerank, images)', async () => {
  const server = await startTestServer({
    config: { platform: { limits: { defaults: { embedding: { tpm: 1 }, reranker: { tpm: 1 }, 'text-to-image': { ipm: 1 } } } } },
  });
  try {
    const embed = await http(server.baseURL, '/embeddings', { body: { model: EMBED, input: 'a sentence of several words' } });
    assert.equal(embed.status, 429, embed.text);
    assert.match(embed.json.error.message, /TPM/);
    const rerank = await http(server.baseURL, '/rerank', { body: { model: RERANK, query: 'cat', documents: ['a cat', 'a dog'] } });
    assert.equal(rerank.status, 429, rerank.text);
    const image = await http(server.baseURL, '/images/generations', { body: { model: 'Kwai-Kolors/Kolors', prompt: 'a cat', batch_size: 2 } });
    assert.equal(image.status, 429, image.text);
    const registry = server.server.services.registry;
    assert.equal(registry.resolve('Kwai-Kolors/Kolors', 'text-to-image').state, 'unloaded');
    assert.equal(registry.resolve(EMBED, 'embedding').state, 'unloaded');
    assert.equal(registry.resolve(RERANK, 'reranker').state, 'unloaded');
  } finally {
    await server.close();
  }
});
