import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MicroBatcher, type BatchEntry } from './micro-batcher.ts';
import { ClientGoneError, InferaError } from '../errors/index.ts';

const tick = () => new Promise((resolve) => setImmediate(resolve));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** An execute() the test releases by hand, recording every batch it was given. */
function gatedExecutor() {
  const batches: BatchEntry<string>[][] = [];
  const gates: Array<() => void> = [];
  const signals: AbortSignal[] = [];
  const execute = async (entries: BatchEntry<string>[], signal: AbortSignal) => {
    batches.push(entries);
    signals.push(signal);
    await new Promise<void>((resolve) => gates.push(resolve));
    return entries.map((entry) => entry.input.toUpperCase());
  };
  return { batches, gates, signals, execute };
}

test('micro-batcher: entries that arrive while a batch runs form the next batch, cut at the token budget', async () => {
  const ex = gatedExecutor();
  const batcher = new MicroBatcher({ label: 'm', maxQueue: 100, maxBatchTokens: 10, maxWaitMs: 0, concurrency: 1, execute: ex.execute });
  const first = batcher.submit('a', 4);
  await tick();
  assert.equal(ex.batches.length, 1);
  const rest = ['b', 'c', 'd', 'e'].map((s) => batcher.submit(s, 4));
  await tick();
  assert.equal(ex.batches.length, 1, 'nothing else runs while the only slot is busy');
  assert.equal(batcher.stats().queued, 4);
  ex.gates.shift()!();
  assert.equal(await first, 'A');
  await tick();
  // 4 + 4 fit the budget of 10; a third entry would exceed it.
  assert.deepEqual(ex.batches[1].map((e) => e.input), ['b', 'c']);
  ex.gates.shift()!();
  await tick();
  assert.deepEqual(ex.batches[2].map((e) => e.input), ['d', 'e']);
  ex.gates.shift()!();
  assert.deepEqual(await Promise.all(rest), ['B', 'C', 'D', 'E']);
});

test('micro-batcher: an entry larger than the budget runs alone instead of waiting forever', async () => {
  const ex = gatedExecutor();
  const batcher = new MicroBatcher({ label: 'm', maxQueue: 10, maxBatchTokens: 5, maxWaitMs: 0, concurrency: 1, execute: ex.execute });
  const big = batcher.submit('big', 50);
  await tick();
  assert.deepEqual(ex.batches[0].map((e) => e.input), ['big']);
  ex.gates.shift()!();
  assert.equal(await big, 'BIG');
});

test('micro-batcher: waits up to maxWaitMs for a batch to fill, and no longer', async () => {
  const ex = gatedExecutor();
  const batcher = new MicroBatcher({ label: 'm', maxQueue: 10, maxBatchTokens: 100, maxWaitMs: 30, concurrency: 1, execute: ex.execute });
  const a = batcher.submit('a', 1);
  await sleep(5);
  const b = batcher.submit('b', 1);
  await sleep(5);
  assert.equal(ex.batches.length, 0, 'under budget and inside the wait: still collecting');
  await sleep(40);
  assert.equal(ex.batches.length, 1);
  assert.deepEqual(ex.batches[0].map((e) => e.input), ['a', 'b']);
  ex.gates.shift()!();
  assert.deepEqual(await Promise.all([a, b]), ['A', 'B']);
});

test('micro-batcher: a full budget is sent at once without waiting', async () => {
  const ex = gatedExecutor();
  const batcher = new MicroBatcher({ label: 'm', maxQueue: 10, maxBatchTokens: 4, maxWaitMs: 10_000, concurrency: 1, execute: ex.execute });
  const all = ['a', 'b'].map((s) => batcher.submit(s, 2));
  await tick();
  assert.equal(ex.batches.length, 1);
  ex.gates.shift()!();
  await Promise.all(all);
});

test('micro-batcher: runs up to `concurrency` batches side by side', async () => {
  const ex = gatedExecutor();
  const batcher = new MicroBatcher({ label: 'm', maxQueue: 10, maxBatchTokens: 1, maxWaitMs: 0, concurrency: 2, execute: ex.execute });
  const all = ['a', 'b', 'c'].map((s) => batcher.submit(s, 1));
  await tick();
  assert.equal(ex.batches.length, 2);
  assert.equal(batcher.stats().running, 2);
  ex.gates.shift()!();
  await tick();
  assert.equal(ex.batches.length, 3);
  for (const open of ex.gates.splice(0)) open();
  assert.deepEqual(await Promise.all(all), ['A', 'B', 'C']);
});

test('micro-batcher: an entry whose caller left while queued is dropped and never executed', async () => {
  const ex = gatedExecutor();
  const batcher = new MicroBatcher({ label: 'm', maxQueue: 10, maxBatchTokens: 100, maxWaitMs: 0, concurrency: 1, execute: ex.execute });
  const running = batcher.submit('a', 1);
  await tick();
  const leaving = new AbortController();
  const gone = batcher.submit('gone', 1, leaving.signal);
  const stays = batcher.submit('stays', 1);
  leaving.abort();
  await assert.rejects(gone, ClientGoneError);
  assert.equal(batcher.stats().dropped, 1);
  ex.gates.shift()!();
  await running;
  await tick();
  assert.deepEqual(ex.batches[1].map((e) => e.input), ['stays']);
  ex.gates.shift()!();
  assert.equal(await stays, 'STAYS');
  assert.ok(!ex.batches.flat().some((e) => e.input === 'gone'));
});

test('micro-batcher: an already-aborted signal is refused at once', async () => {
  const ex = gatedExecutor();
  const batcher = new MicroBatcher({ label: 'm', maxQueue: 10, maxBatchTokens: 100, maxWaitMs: 0, concurrency: 1, execute: ex.execute });
  await assert.rejects(batcher.submit('x', 1, AbortSignal.abort()), ClientGoneError);
  assert.equal(ex.batches.length, 0);
});

test('micro-batcher: the batch signal aborts only when every caller in it has left', async () => {
  const ex = gatedExecutor();
  const batcher = new MicroBatcher({ label: 'm', maxQueue: 10, maxBatchTokens: 100, maxWaitMs: 5, concurrency: 1, execute: ex.execute });
  const one = new AbortController();
  const two = new AbortController();
  const a = batcher.submit('a', 1, one.signal);
  const b = batcher.submit('b', 1, two.signal);
  await sleep(20);
  assert.equal(ex.batches[0].length, 2);
  one.abort();
  assert.equal(ex.signals[0].aborted, false);
  two.abort();
  assert.equal(ex.signals[0].aborted, true);
  ex.gates.shift()!();
  await Promise.all([a, b]);
});

test('micro-batcher: a full queue answers 503 with a Retry-After computed from the batches ahead and how long batches run', async () => {
  const ex = gatedExecutor();
  const batcher = new MicroBatcher({
    label: 'model e',
    maxQueue: 1,
    maxBatchTokens: 1,
    maxWaitMs: 0,
    concurrency: 1,
    execute: ex.execute,
  });
  // Nothing has run yet: the minimum.
  const a = batcher.submit('a', 1);
  await tick();
  const b = batcher.submit('b', 1);
  await assert.rejects(batcher.submit('c', 1), (error: unknown) => {
    assert.ok(error instanceof InferaError);
    assert.equal(error.status, 503);
    assert.equal(error.retryAfter, 1);
    assert.match(error.message, /model e/);
    return true;
  });
  // A batch that ran 0.6 s: with one running and one queued, the next arrival waits about 1.2 s.
  await new Promise((resolve) => setTimeout(resolve, 600));
  ex.gates.shift()!();
  await tick();
  await a;
  const d = batcher.submit('d', 1);
  await assert.rejects(batcher.submit('e', 1), (error: unknown) => {
    assert.ok(error instanceof InferaError && error.status === 503);
    assert.ok(error.retryAfter! >= 2 && error.retryAfter! <= 4, `retryAfter ${error.retryAfter}`);
    return true;
  });
  ex.gates.shift()!();
  await tick();
  ex.gates.shift()!();
  await Promise.all([b, d]);
});

test('micro-batcher: an entry past maxQueueWaitMs gets 503 queue_timeout and is never run', async () => {
  const ex = gatedExecutor();
  const batcher = new MicroBatcher({ label: 'model q', maxQueue: 4, maxBatchTokens: 1, maxWaitMs: 0, concurrency: 1, maxQueueWaitMs: 100, execute: ex.execute });
  const a = batcher.submit('a', 1);
  await tick();
  await assert.rejects(batcher.submit('b', 1), (error: unknown) => {
    assert.ok(error instanceof InferaError);
    assert.equal(error.status, 503);
    assert.equal(error.code, 'queue_timeout');
    return true;
  });
  assert.equal(batcher.stats().queued, 0);
  ex.gates.shift()!();
  await a;
  assert.equal(ex.batches.length, 1, 'only the first entry ran');
});

test('micro-batcher: with maxQueue 0 an entry is still accepted while a batch slot is free', async () => {
  const ex = gatedExecutor();
  const batcher = new MicroBatcher({ label: 'm', maxQueue: 0, maxBatchTokens: 1, maxWaitMs: 0, concurrency: 1, execute: ex.execute });
  const a = batcher.submit('a', 1);
  await tick();
  await assert.rejects(batcher.submit('b', 1), (error: unknown) => error instanceof InferaError && error.status === 503);
  ex.gates.shift()!();
  assert.equal(await a, 'A');
  const c = batcher.submit('c', 1);
  await tick();
  ex.gates.shift()!();
  assert.equal(await c, 'C');
});

test('micro-batcher: an execute failure rejects every entry of that batch only', async () => {
  let calls = 0;
  const batcher = new MicroBatcher<string, string>({
    label: 'm',
    maxQueue: 10,
    maxBatchTokens: 1,
    maxWaitMs: 0,
    concurrency: 1,
    execute: async (entries) => {
      calls++;
      if (entries[0].input === 'bad') throw new Error('engine failed');
      return entries.map((e) => e.input);
    },
  });
  const bad = batcher.submit('bad', 1);
  const good = batcher.submit('good', 1);
  await assert.rejects(bad, /engine failed/);
  assert.equal(await good, 'good');
  assert.equal(calls, 2);
});

test('micro-batcher: close() answers waiting entries with 503 and refuses new ones', async () => {
  const ex = gatedExecutor();
  const batcher = new MicroBatcher({ label: 'm', maxQueue: 10, maxBatchTokens: 1, maxWaitMs: 0, concurrency: 1, execute: ex.execute });
  const running = batcher.submit('a', 1);
  await tick();
  const waiting = batcher.submit('b', 1);
  batcher.close();
  await assert.rejects(waiting, (error: unknown) => error instanceof InferaError && error.status === 503);
  await assert.rejects(batcher.submit('c', 1), (error: unknown) => error instanceof InferaError && error.status === 503);
  ex.gates.shift()!();
  assert.equal(await running, 'A');
});

test('micro-batcher: with one promise per entry, each caller is answered when its own part is done', async () => {
  const releases: Array<() => void> = [];
  const batcher = new MicroBatcher<string, string>({
    label: 'm',
    maxQueue: 10,
    maxBatchTokens: 100,
    maxWaitMs: 5,
    concurrency: 1,
    execute: (entries) => entries.map((entry) => new Promise<string>((resolve) => releases.push(() => resolve(entry.input)))),
  });
  let bDone = false;
  const a = batcher.submit('a', 1);
  const b = batcher.submit('b', 1).then((value) => {
    bDone = true;
    return value;
  });
  await sleep(20);
  assert.equal(releases.length, 2, 'one batch of two');
  releases[0]();
  assert.equal(await a, 'a');
  await tick();
  assert.equal(bDone, false, 'b is still running');
  assert.equal(batcher.stats().running, 1, 'the batch holds its slot until every entry is done');
  releases[1]();
  assert.equal(await b, 'b');
  assert.equal(batcher.stats().running, 0);
});
