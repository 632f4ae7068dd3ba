import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rewriteNullable, validateAgainstOpenApi } from './openapi.ts';

test('nullable (OpenAPI 3.0) is rewritten to JSON Schema 2020-12', () => {
  assert.deepEqual(rewriteNullable({ type: 'string', nullable: true }), { type: ['string', 'null'] });
  assert.deepEqual(rewriteNullable({ type: 'string', enum: ['a'], nullable: true }), { type: ['string', 'null'], enum: ['a', null] });
  assert.deepEqual(rewriteNullable({ $ref: '#/x', nullable: true }), { anyOf: [{ $ref: '#/x' }, { type: 'null' }] });
  assert.deepEqual(rewriteNullable({ properties: { nullable: { type: 'boolean' } } }), { properties: { nullable: { type: 'boolean' } } });
  assert.deepEqual(rewriteNullable({ type: 'integer', nullable: false }), { type: 'integer' });
});

test('the schemas other helpers use compile and judge real shapes', () => {
  assert.deepEqual(
    validateAgainstOpenApi('CreateEmbeddingResponse', {
      object: 'list',
      model: 'BAAI/bge-m3',
      data: [{ object: 'embedding', index: 0, embedding: [0.1, 0.2] }],
      usage: { prompt_tokens: 3, total_tokens: 3 },
    }),
    [],
  );
  assert.notDeepEqual(validateAgainstOpenApi('CreateEmbeddingResponse', { object: 'list', data: [] }), []);
  assert.deepEqual(
    validateAgainstOpenApi('ListModelsResponse', { object: 'list', data: [{ id: 'm', object: 'model', created: 1, owned_by: 'infera' }] }),
    [],
  );
  assert.notDeepEqual(validateAgainstOpenApi('ListModelsResponse', { object: 'list', data: [{ id: 'm', object: 'model', created: null, owned_by: 'x' }] }), []);
  assert.deepEqual(validateAgainstOpenApi('ImagesResponse', { created: 1, data: [{ url: 'http://h/i.png' }] }), []);
  assert.deepEqual(validateAgainstOpenApi('ErrorResponse', { error: { message: 'm', type: 't', param: null, code: null } }), []);
  assert.notDeepEqual(validateAgainstOpenApi('ErrorResponse', { error: { message: 'm', type: 't' } }), [], 'param and code are required (nullable)');
});

test('nullable stream fields accept null (finish_reason)', () => {
  const chunk = {
    id: 'c',
    object: 'chat.completion.chunk',
    created: 1,
    model: 'm',
    choices: [{ index: 0, delta: { content: '' }, logprobs: null, finish_reason: null }],
  };
  assert.deepEqual(validateAgainstOpenApi('CreateChatCompletionStreamResponse', chunk), []);
  assert.notDeepEqual(
    validateAgainstOpenApi('CreateChatCompletionStreamResponse', { ...chunk, choices: [{ index: 0, delta: {}, finish_reason: 'done' }] }),
    [],
  );
});

test('an unknown schema name throws', () => {
  assert.throws(() => validateAgainstOpenApi('NoSuchSchema', {}), /NoSuchSchema/);
});
