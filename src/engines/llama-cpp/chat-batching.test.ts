import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { BatchItem, LlamaContext } from 'node-llama-cpp';
import { sequenceOrderedStrategy } from './chat-batching.ts';

const item = (tokens: number, evaluationPriority = 5): BatchItem =>
  ({ tokens: Array.from({ length: tokens }, (_, i) => i), logits: [], evaluationPriority }) as unknown as BatchItem;
/** A stand-in for the context's internal queue, which is what the strategy reads the ids from. */
const contextWith = (queue: { sequenceId: number; tokens: readonly unknown[] }[]) => ({ _queuedDecodes: queue }) as unknown as LlamaContext;

test('items are put in sequence-id order, each keeping its tokens', () => {
  const [a, b, c] = [item(1), item(1), item(1)];
  const strategy = sequenceOrderedStrategy(() =>
    contextWith([
      { sequenceId: 3, tokens: a.tokens },
      { sequenceId: 0, tokens: b.tokens },
      { sequenceId: 1, tokens: c.tokens },
    ]),
  );
  const out = strategy({ items: [a, b, c], size: 512 });
  assert.deepEqual(out.map((entry) => entry.item), [b, c, a]);
  assert.deepEqual(out.map((entry) => entry.processAmount), [1, 1, 1]);
});

test("a queue that does not line up with the items keeps the library's order", () => {
  const [a, b] = [item(1), item(1)];
  const stale = sequenceOrderedStrategy(() => contextWith([{ sequenceId: 5, tokens: b.tokens }, { sequenceId: 0, tokens: a.tokens }]));
  assert.deepEqual(stale({ items: [a, b], size: 8 }).map((entry) => entry.item), [a, b]);
  const none = sequenceOrderedStrategy(() => undefined);
  assert.deepEqual(none({ items: [a, b], size: 8 }).map((entry) => entry.item), [a, b]);
});

test('a long prompt shares the batch with decoding sequences instead of taking all of it', () => {
  const [prompt, decode1, decode2] = [item(1000), item(1), item(1)];
  const strategy = sequenceOrderedStrategy(() =>
    contextWith([
      { sequenceId: 0, tokens: prompt.tokens },
      { sequenceId: 1, tokens: decode1.tokens },
      { sequenceId: 2, tokens: decode2.tokens },
    ]),
  );
  const out = strategy({ items: [prompt, decode1, decode2], size: 300 });
  assert.deepEqual(out.map((entry) => entry.processAmount), [298, 1, 1]);
});
