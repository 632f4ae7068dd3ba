import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InferaError } from '../errors/index.ts';
import {
  base64ToFloat32,
  buildEmbeddingsResponse,
  float32ToBase64,
  MAX_EMBEDDING_INPUTS,
  parseEmbeddingsRequest,
} from './embeddings.ts';

const rejects = (body: unknown, param: string | null) =>
  assert.throws(
    () => parseEmbeddingsRequest(body),
    (error: unknown) => {
      assert.ok(error instanceof InferaError, String(error));
      assert.equal(error.status, 400);
      assert.equal(error.param, param, `param for ${JSON.stringify(body).slice(0, 80)}: ${error.message}`);
      return true;
    },
  );

test('embeddings request: every input shape becomes engine inputs', () => {
  assert.deepEqual(parseEmbeddingsRequest({ model: 'm', input: 'hi' }).inputs, [{ text: 'hi' }]);
  assert.deepEqual(parseEmbeddingsRequest({ model: 'm', input: ['a', 'b'] }).inputs, [{ text: 'a' }, { text: 'b' }]);
  assert.deepEqual(parseEmbeddingsRequest({ model: 'm', input: [1, 2, 3] }).inputs, [{ tokens: [1, 2, 3] }]);
  assert.deepEqual(parseEmbeddingsRequest({ model: 'm', input: [[1], [2, 3]] }).inputs, [{ tokens: [1] }, { tokens: [2, 3] }]);
  assert.equal(parseEmbeddingsRequest({ model: 'm', input: 'hi' }).single, true);
  assert.equal(parseEmbeddingsRequest({ model: 'm', input: [5, 6] }).single, true);
  assert.equal(parseEmbeddingsRequest({ model: 'm', input: ['hi'] }).single, false);
});

test('embeddings request: defaults and nulls', () => {
  const parsed = parseEmbeddingsRequest({ model: 'm', input: 'x', encoding_format: null, dimensions: null, user: null, extra_vendor_field: 1 });
  assert.equal(parsed.encodingFormat, 'float');
  assert.equal(parsed.dimensions, undefined);
  assert.equal(parseEmbeddingsRequest({ model: 'm', input: 'x', encoding_format: 'base64', dimensions: 64, user: 'u' }).dimensions, 64);
});

test('embeddings request: the cap on items is documented and enforced', () => {
  assert.ok(MAX_EMBEDDING_INPUTS >= 256);
  assert.equal(parseEmbeddingsRequest({ model: 'm', input: Array(MAX_EMBEDDING_INPUTS).fill('a') }).inputs.length, MAX_EMBEDDING_INPUTS);
  rejects({ model: 'm', input: Array(MAX_EMBEDDING_INPUTS + 1).fill('a') }, 'input');
});

test('embeddings request: every bad field answers 400 naming it', () => {
  rejects({ input: 'x' }, 'model');
  rejects({ model: '', input: 'x' }, 'model');
  rejects({ model: 'm' }, 'input');
  rejects({ model: 'm', input: '' }, 'input');
  rejects({ model: 'm', input: [] }, 'input');
  rejects({ model: 'm', input: ['ok', ''] }, 'input[1]');
  rejects({ model: 'm', input: ['ok', 3] }, 'input[1]');
  rejects({ model: 'm', input: [[1], []] }, 'input[1]');
  rejects({ model: 'm', input: [[1], [2, -1]] }, 'input[1][1]');
  rejects({ model: 'm', input: [1.5] }, 'input[0]');
  rejects({ model: 'm', input: { text: 'x' } }, 'input');
  rejects({ model: 'm', input: 'x', encoding_format: 'int8' }, 'encoding_format');
  rejects({ model: 'm', input: 'x', dimensions: 0 }, 'dimensions');
  rejects({ model: 'm', input: 'x', dimensions: 1.5 }, 'dimensions');
  rejects({ model: 'm', input: 'x', dimensions: '64' }, 'dimensions');
  rejects({ model: 'm', input: 'x', user: 5 }, 'user');
  rejects('input=x', null);
});

test('embeddings response: float and base64 carry the same little-endian float32 values', () => {
  const vectors = [Float32Array.from([0.1, -2.5, 3e-8, 1]), Float32Array.from([0, 0.5, -0.25, 7])];
  const floats = buildEmbeddingsResponse('m', vectors, 9, 'float');
  const encoded = buildEmbeddingsResponse('m', vectors, 9, 'base64');
  assert.equal(floats.object, 'list');
  assert.equal(floats.model, 'm');
  assert.deepEqual(floats.usage, { prompt_tokens: 9, completion_tokens: 0, total_tokens: 9 });
  assert.deepEqual(
    floats.data.map((d) => [d.object, d.index]),
    [
      ['embedding', 0],
      ['embedding', 1],
    ],
  );
  for (const [i, item] of encoded.data.entries()) {
    assert.equal(typeof item.embedding, 'string');
    const decoded = base64ToFloat32(item.embedding as string);
    assert.deepEqual(Array.from(decoded), floats.data[i].embedding);
    // The bytes, read independently of our decoder, are little-endian float32.
    const bytes = Buffer.from(item.embedding as string, 'base64');
    assert.equal(bytes.length, 16);
    assert.equal(bytes.readFloatLE(4), vectors[i][1]);
  }
  assert.equal(float32ToBase64(new Float32Array([1])), Buffer.from([0, 0, 0x80, 0x3f]).toString('base64'));
});
