import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toGbnfJsonSchema } from './chat-json-schema.ts';

test('supported keywords pass through; annotations are dropped', () => {
  const { schema, unsupported } = toGbnfJsonSchema({
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: 'Weather',
    type: 'object',
    description: 'A report',
    properties: {
      city: { type: 'string', minLength: 1, maxLength: 40, default: 'Paris' },
      unit: { enum: ['c', 'f'] },
      days: { type: 'array', items: { type: 'integer' }, minItems: 1, maxItems: 7 },
      when: { type: 'string', format: 'date' },
      exact: { const: 3 },
    },
    required: ['city'],
    additionalProperties: false,
  });
  assert.deepEqual(unsupported, []);
  assert.deepEqual(schema, {
    type: 'object',
    description: 'A report',
    properties: {
      city: { type: 'string', minLength: 1, maxLength: 40 },
      unit: { enum: ['c', 'f'] },
      days: { type: 'array', items: { type: 'integer' }, minItems: 1, maxItems: 7 },
      when: { type: 'string', format: 'date' },
      exact: { const: 3 },
    },
    required: ['city'],
  });
});

test('constraints the grammar cannot enforce are reported by path', () => {
  const { unsupported } = toGbnfJsonSchema({
    type: 'object',
    properties: {
      age: { type: 'integer', minimum: 0 },
      email: { type: 'string', format: 'email' },
      code: { type: 'string', pattern: '^[A-Z]+$' },
      both: { allOf: [{ type: 'string' }] },
    },
    patternProperties: { '^x-': { type: 'string' } },
  });
  assert.deepEqual(unsupported.sort(), [
    '#/patternProperties',
    '#/properties/age/minimum',
    '#/properties/both/allOf',
    '#/properties/code/pattern',
    '#/properties/email/format',
  ]);
});

test('JSON Schema shapes node-llama-cpp reads differently are rewritten', () => {
  // `{}` means any value (node-llama-cpp would emit null), a bare object means any object.
  const any = toGbnfJsonSchema({ type: 'object', properties: { value: {} } }).schema as unknown as { properties: { value: { oneOf?: unknown } } };
  assert.ok(Array.isArray(any.properties.value.oneOf));
  assert.deepEqual(toGbnfJsonSchema({ type: 'object' }).schema, { type: 'object', additionalProperties: true });
  // anyOf generates like oneOf; nullable objects become alternatives; definitions/$ref are renamed.
  assert.deepEqual(toGbnfJsonSchema({ anyOf: [{ type: 'string' }, { type: 'null' }] }).schema, {
    oneOf: [{ type: 'string' }, { type: 'null' }],
  });
  assert.deepEqual(toGbnfJsonSchema({ type: ['object', 'null'], properties: { a: { type: 'number' } } }).schema, {
    oneOf: [{ type: 'object', properties: { a: { type: 'number' } } }, { type: 'null' }],
  });
  const refs = toGbnfJsonSchema({
    definitions: { point: { type: 'object', properties: { x: { type: 'number' } } } },
    type: 'object',
    properties: { at: { $ref: '#/definitions/point' } },
  });
  assert.deepEqual(refs.unsupported, []);
  assert.deepEqual((refs.schema as unknown as { properties: { at: unknown } }).properties.at, { $ref: '#/$defs/point' });
  assert.deepEqual(toGbnfJsonSchema({ $ref: 'https://example.com/schema.json' }).unsupported, ['#/$ref']);
});
