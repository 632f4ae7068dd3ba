// errorJson is what every error answer's body is: it must be the error body's JSON, byte for byte.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { errorFields, InferaError, modelNotFound, overloaded } from './index.ts';
import { errorBody, errorJson, toInferaError } from './render.ts';

test('errorJson is JSON.stringify(errorBody(error)) for every kind of error', () => {
  const errors = [
    new InferaError({ status: 400, message: 'plain' }),
    new InferaError({ status: 401, message: 'Invalid API key.', code: 'invalid_api_key', siliconflowCode: 20001, headers: { 'www-authenticate': 'Bearer' } }),
    new InferaError({ status: 404, code: 'unknown_route', message: 'No route GET /v1/"quoted"\\slash\u2028\u0000 é 🙂' }),
    new InferaError({ status: 400, message: 'messages: too short', param: 'messages[2].content', code: null }),
    new InferaError({ status: 429, message: 'slow down', retryAfter: 1.5, type: 'rate_limit_error' }),
    modelNotFound('no/such-model'),
    modelNotFound('x', 404),
    overloaded('Model m'),
    toInferaError(new Error('secret internals')),
    new InferaError({ status: 500, message: '', siliconflowCode: -1 }),
  ];
  // Twice: the second answer comes from the remembered texts.
  for (const error of [...errors, ...errors]) {
    const text = errorJson(error);
    assert.equal(text, JSON.stringify(errorBody(error)));
    assert.deepEqual(JSON.parse(text), errorBody(error));
  }
  // The same message with other fields is not answered with the remembered text.
  for (const init of [{ code: 'a' }, { code: 'b' }, { param: 'model' }, { siliconflowCode: 1 }, { type: 'server_error' as const }, {}]) {
    const error = new InferaError({ status: 400, message: 'one message', ...init });
    assert.equal(errorJson(error), JSON.stringify(errorBody(error)));
  }
  // Past the bound the remembered texts start over and stay right.
  for (let i = 0; i < 2000; i++) {
    const error = modelNotFound(`m-${i % 700}`);
    assert.equal(errorJson(error), JSON.stringify(errorBody(error)));
  }
});

test('errorFields gives what an InferaError of the same init carries', () => {
  const inits = [
    { status: 404, code: 'unknown_route', message: 'No route GET /x.' },
    { status: 400, message: 'bad', param: 'model' },
    { status: 401, message: 'no', siliconflowCode: 20001, type: 'authentication_error' as const },
    { status: 503, message: 'busy' },
  ];
  for (const init of inits) {
    const error = new InferaError(init);
    const fields = errorFields(init);
    assert.deepEqual(fields, { status: error.status, message: error.message, type: error.type, param: error.param, code: error.code, siliconflowCode: error.siliconflowCode });
    assert.equal(errorJson(fields), errorJson(error));
  }
});
