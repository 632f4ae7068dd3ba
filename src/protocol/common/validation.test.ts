import { test } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { InferaError } from '../../errors/index.ts';
import { errorBody } from '../../errors/render.ts';
import { numberBetween, parseBody, wirePath } from './validation.ts';

const schema = z.object({
  input: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
  dimensions: numberBetween(1, 4096, { int: true }).optional(),
  encoding_format: z.enum(['float', 'base64']).optional(),
  nested: z.object({ list: z.array(z.object({ score: z.number().max(1) })) }).optional(),
});

function failure(body: unknown): InferaError {
  try {
    parseBody(schema, body);
  } catch (error) {
    assert.ok(error instanceof InferaError);
    assert.equal(error.status, 400);
    return error;
  }
  assert.fail('expected a 400');
}

test('wirePath writes paths the way OpenAI names params', () => {
  assert.equal(wirePath(['messages', 2, 'content']), 'messages[2].content');
  assert.equal(wirePath(['input', 0]), 'input[0]');
  assert.equal(wirePath([]), '');
  assert.equal(wirePath(['a', 'b', 0, 1, 'c']), 'a.b[0][1].c');
});

test('parseBody returns the typed value', () => {
  const value = parseBody(schema, { input: ['a', 'b'], dimensions: 8, extra: true });
  assert.deepEqual(value, { input: ['a', 'b'], dimensions: 8 }, 'unknown fields are dropped, not refused');
});

test('non-object bodies are a 400 with no param', () => {
  for (const body of [null, [], 'x', 1, undefined]) {
    const error = failure(body);
    assert.equal(error.param, null);
    assert.match(error.message, /must be a JSON object/);
  }
});

test('messages are readable and params are wire paths', () => {
  const cases: [unknown, string, RegExp][] = [
    [{}, 'input', /^input: is required$/],
    [{ input: '' }, 'input', /^input: must not be empty$/],
    [{ input: [] }, 'input', /^input: must not be empty$/],
    [{ input: ['ok', ''] }, 'input[1]', /^input\[1\]: must not be empty$/],
    [{ input: 5 }, 'input', /^input: must be a string or an array$/],
    [{ input: 'x', dimensions: 0 }, 'dimensions', /^dimensions: must be an integer between 1 and 4096$/],
    [{ input: 'x', dimensions: 2.5 }, 'dimensions', /^dimensions: must be an integer$/],
    [{ input: 'x', dimensions: '8' }, 'dimensions', /^dimensions: must be a number, not a string$/],
    [{ input: 'x', encoding_format: 'hex' }, 'encoding_format', /^encoding_format: must be one of "float", "base64"$/],
    [{ input: 'x', nested: { list: [{ score: 0.5 }, { score: 2 }] } }, 'nested.list[1].score', /^nested\.list\[1\]\.score: must be <= 1$/],
  ];
  for (const [body, param, message] of cases) {
    const error = failure(body);
    assert.equal(error.param, param, JSON.stringify(body));
    assert.match(error.message, message, JSON.stringify(body));
    assert.equal(errorBody(error).error.param, param);
    assert.equal(errorBody(error).error.type, 'invalid_request_error');
  }
});
