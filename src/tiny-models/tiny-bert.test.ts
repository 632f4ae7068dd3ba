// The tiny BERT models through node-llama-cpp's own embedding and ranking contexts.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LlamaModel, Token } from 'node-llama-cpp';
import { buildWordPieceVocab } from './bert.ts';
import { createLlama } from '../engines/llama-cpp/runtime.ts';
import { encodeTinyModels, ensureTinyModels, TINY_EMBEDDING_DIMENSIONS, type TinyModelPaths } from './index.ts';

let dir: string;
let paths: TinyModelPaths;
const models: LlamaModel[] = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tiny-bert-'));
  paths = await ensureTinyModels(dir);
});

after(async () => {
  for (const model of models) await model.dispose();
  rmSync(dir, { recursive: true, force: true });
});

async function load(path: string) {
  const llama = await createLlama(false);
  const model = await llama.loadModel({ modelPath: path });
  models.push(model);
  return model;
}

const cosine = (a: readonly number[], b: readonly number[]) => {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! ** 2;
    nb += b[i]! ** 2;
  }
  return dot / Math.sqrt(na * nb);
};

test('embedding model: WordPiece vocab without [UNK] for English, deterministic vectors, word overlap shows', async () => {
  const model = await load(paths.embedding);
  const tokens = model.tokenize('Unbelievable weather in Paris!');
  assert.ok(!tokens.includes(buildWordPieceVocab().ids.unk as Token), 'no [UNK]');
  const context = await model.createEmbeddingContext({ threads: 1 });
  try {
    const a = (await context.getEmbeddingFor('The weather in Paris is sunny')).vector;
    const again = (await context.getEmbeddingFor('The weather in Paris is sunny')).vector;
    const near = (await context.getEmbeddingFor('Paris weather today is sunny')).vector;
    const far = (await context.getEmbeddingFor('Cats and dogs are animals')).vector;
    assert.equal(a.length, TINY_EMBEDDING_DIMENSIONS);
    assert.deepEqual(again, a);
    assert.ok(a.every(Number.isFinite));
    assert.ok(cosine(a, near) > cosine(a, far) + 0.2, `${cosine(a, near)} vs ${cosine(a, far)}`);
  } finally {
    await context.dispose();
  }
});

test('reranker: node-llama-cpp ranks with it; the score rises with the words query and document share', async () => {
  const model = await load(paths.reranker);
  const context = await model.createRankingContext({ threads: 1 });
  try {
    const docs = ['The giant panda is a bear', 'Paris is the capital of France', 'Cats are small animals'];
    const scores = await context.rankAll('what is a panda', docs);
    assert.equal(scores.length, docs.length);
    for (const score of scores) assert.ok(score > 0 && score < 1, String(score));
    assert.ok(scores[0]! > 0.8, `shares "is a panda": ${scores[0]}`);
    assert.ok(scores[0]! > scores[1]! && scores[1]! > scores[2]!, scores.join(', '));
    assert.ok(scores[2]! < 0.3, `shares nothing: ${scores[2]}`);
    assert.deepEqual(await context.rankAll('what is a panda', docs), scores);
  } finally {
    await context.dispose();
  }
});

test('ensureTinyModels is idempotent and leaves identical files untouched', async () => {
  const { statSync } = await import('node:fs');
  const before = Object.values(paths).map((p) => statSync(p).mtimeMs);
  const started = performance.now();
  const again = await ensureTinyModels(dir);
  assert.deepEqual(again, paths);
  assert.deepEqual(Object.values(paths).map((p) => statSync(p).mtimeMs), before);
  assert.ok(performance.now() - started < 1000);
});

test('a fresh encode reproduces the written files byte for byte', async () => {
  const { readFileSync } = await import('node:fs');
  const fresh = encodeTinyModels();
  for (const key of Object.keys(paths) as (keyof TinyModelPaths)[]) {
    assert.ok(readFileSync(paths[key]).equals(fresh[key]), key);
  }
});
