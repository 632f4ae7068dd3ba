// The WebAssembly argmax must answer what llama.cpp's greedy sampler does over the same row: the first
// index of the highest logit, whatever the row's length (the SIMD loop takes eight at a time), with ties,
// -Infinity (a logit bias of -inf) and NaN.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createArgmax } from './argmax.ts';

/** llama_sampler_greedy_apply: selected = 0, then every later token strictly greater. */
function greedy(row: Float32Array): number {
  let selected = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[selected]!) selected = i;
  return selected;
}

test('the SIMD argmax chooses what llama.cpp\'s greedy sampler chooses', () => {
  const argmax = createArgmax();
  assert.ok(argmax, 'Node 20 has WebAssembly SIMD');
  let seed = 7;
  const random = () => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed / 2 ** 32;
  };
  for (const length of [1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 289, 4096, 151936]) {
    const row = new Float32Array(length);
    for (let trial = 0; trial < 20; trial++) {
      // Coarse values: many ties, so the first-index rule is exercised.
      for (let i = 0; i < length; i++) row[i] = Math.floor(random() * 8) - (random() < 0.1 ? Number.POSITIVE_INFINITY : 0);
      if (trial % 5 === 1) row[length - 1] = 100; // the winner in the tail
      if (trial % 5 === 2) row[0] = 100; // at the front
      if (trial % 5 === 3) row.fill(Number.NEGATIVE_INFINITY); // everything biased away: index 0
      if (trial % 5 === 4) row[Math.floor(random() * length)] = Number.NaN; // NaN never wins (away from index 0)
      if (trial % 5 === 4 && Number.isNaN(row[0])) row[0] = 0;
      assert.equal(argmax(row), greedy(row), `length ${length}, trial ${trial}`);
    }
  }
  // Rows of different lengths through one instance (its memory grows and is reused).
  const small = Float32Array.from([1, 3, 3, 2]);
  assert.equal(argmax(small), 1);
  const big = new Float32Array(200_000);
  big[123_457] = 1;
  big[199_999] = 1;
  assert.equal(argmax(big), 123_457);
  assert.equal(argmax(small), 1);
});
