import { test } from 'node:test';
import assert from 'node:assert/strict';
import { streamFromProducer } from './chat-stream.ts';

/** A producer that emits a part every few ms until aborted, and records when its cleanup ran. */
function ticking() {
  const state = { started: false, cleanedUp: false };
  const produce = async (emit: (part: number) => void, signal: AbortSignal) => {
    state.started = true;
    try {
      for (let i = 0; !signal.aborted; i++) {
        emit(i);
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    } finally {
      await new Promise((resolve) => setTimeout(resolve, 5)); // cleanup takes a while (sequence dispose)
      state.cleanedUp = true;
    }
  };
  return { state, produce };
}

test('return() before the first next() stops the producer and resolves after its cleanup', async () => {
  const { state, produce } = ticking();
  const iterator = streamFromProducer(produce, new AbortController().signal)[Symbol.asyncIterator]();
  assert.equal(state.started, true, 'work starts when the iterator is created');
  await iterator.return!();
  assert.equal(state.cleanedUp, true);
  assert.deepEqual(await iterator.next(), { done: true, value: undefined });
});

test('parts arrive in order; the outer signal ends the stream with the producer error after buffered parts', async () => {
  const outer = new AbortController();
  const iterator = streamFromProducer<number>(async (emit, signal) => {
    emit(1);
    emit(2);
    await new Promise((resolve) => signal.addEventListener('abort', resolve));
    throw new Error('gone');
  }, outer.signal)[Symbol.asyncIterator]();
  assert.deepEqual(await iterator.next(), { done: false, value: 1 });
  outer.abort();
  assert.deepEqual(await iterator.next(), { done: false, value: 2 });
  await assert.rejects(iterator.next(), /gone/);
  assert.deepEqual(await iterator.next(), { done: true, value: undefined });
});

test('concurrent next() calls all resolve', async () => {
  const { state, produce } = ticking();
  const iterator = streamFromProducer(produce, new AbortController().signal)[Symbol.asyncIterator]();
  await iterator.next(); // drain the synchronously emitted first part
  const values = await Promise.all([iterator.next(), iterator.next()]);
  assert.ok(values.every((value) => value.done === false));
  await iterator.return!();
  assert.equal(state.cleanedUp, true);
});

/** Emits one part and, in the same turn, queues an immediate standing for node-llama-cpp's decode dispatch. */
async function consumedBeforeDispatch(overlapDecode: boolean): Promise<string[]> {
  const order: string[] = [];
  const iterator = streamFromProducer<number>(
    async (emit) => {
      emit(1);
      setImmediate(() => order.push('dispatch'));
      await new Promise((resolve) => setTimeout(resolve, 10));
    },
    new AbortController().signal,
    { overlapDecode },
  )[Symbol.asyncIterator]();
  assert.deepEqual(await iterator.next(), { done: false, value: 1 });
  order.push('consumed');
  assert.deepEqual(await iterator.next(), { done: true, value: undefined });
  return order;
}

test('overlapDecode wakes the consumer after the dispatch queued with the part, not before', async () => {
  assert.deepEqual(await consumedBeforeDispatch(false), ['consumed', 'dispatch']);
  assert.deepEqual(await consumedBeforeDispatch(true), ['dispatch', 'consumed']);
});

test('overlapDecode: parts emitted together, then the end or a failure, all arrive in order', async () => {
  const ok = streamFromProducer<number>(async (emit) => {
    emit(1);
    emit(2);
  }, new AbortController().signal, { overlapDecode: true });
  const seen: number[] = [];
  for await (const part of ok) seen.push(part);
  assert.deepEqual(seen, [1, 2]);

  const failing = streamFromProducer<number>(async (emit) => {
    emit(1);
    throw new Error('engine failed');
  }, new AbortController().signal, { overlapDecode: true })[Symbol.asyncIterator]();
  assert.deepEqual(await failing.next(), { done: false, value: 1 });
  await assert.rejects(failing.next(), /engine failed/);
});
