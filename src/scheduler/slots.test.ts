import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Slots } from './slots.ts';
import { InferaError, ClientGoneError } from '../errors/index.ts';

test('slots: grants up to capacity, queues, hands over on release', async () => {
  const slots = new Slots(2, 1, 'model x');
  const a = await slots.acquire();
  await slots.acquire();
  assert.equal(slots.active, 2);
  let granted = false;
  const waiting = slots.acquire().then((lease) => {
    granted = true;
    return lease;
  });
  await new Promise((r) => setImmediate(r));
  assert.equal(granted, false);
  assert.equal(slots.queued, 1);
  a.release();
  a.release(); // double release is a no-op
  const c = await waiting;
  assert.equal(granted, true);
  assert.equal(slots.active, 2);
  c.release();
  assert.equal(slots.active, 1);
});

test('slots: full queue answers 503 with a Retry-After computed from the queue (work ahead × time a slot is held)', async () => {
  const slots = new Slots(1, 0, 'model x');
  const first = await slots.acquire();
  // No lease has been held yet: nothing to go on but the minimum.
  await assert.rejects(slots.acquire(), (error: unknown) => error instanceof InferaError && error.status === 503 && error.retryAfter === 1);
  first.release();

  const busy = new Slots(1, 5, 'model y');
  const held = await busy.acquire();
  await new Promise((resolve) => setTimeout(resolve, 300));
  held.release();
  const blocking = await busy.acquire();
  const waiting = Array.from({ length: 5 }, () => busy.acquire());
  await assert.rejects(busy.acquire(), (error: unknown) => {
    assert.ok(error instanceof InferaError);
    assert.equal(error.status, 503);
    // 5 waiting + this one, one slot, ~0.3 s a lease: about 2 s.
    assert.ok(error.retryAfter! >= 2 && error.retryAfter! <= 4, `retryAfter ${error.retryAfter}`);
    return true;
  });
  blocking.release();
  // Each waiter gets the slot when the one before it lets go.
  for (const waiter of waiting) (await waiter).release();
});

test('slots: a waiter past maxWaitMs gets 503 queue_timeout and leaves the queue', async () => {
  const slots = new Slots(1, 4, 'model z', { maxWaitMs: 100 });
  const held = await slots.acquire();
  const started = performance.now();
  await assert.rejects(slots.acquire(), (error: unknown) => {
    assert.ok(error instanceof InferaError);
    assert.equal(error.status, 503);
    assert.equal(error.code, 'queue_timeout');
    assert.match(error.message, /maxQueueWaitSeconds/);
    assert.ok(error.retryAfter! >= 1);
    return true;
  });
  assert.ok(performance.now() - started >= 95, 'not before the deadline');
  assert.equal(slots.queued, 0);
  held.release();
  // The slot is free again for the next caller, and a served waiter's deadline never fires.
  const next = await slots.acquire();
  const waiter = slots.acquire();
  next.release();
  (await waiter).release();
  await new Promise((resolve) => setTimeout(resolve, 150));
  assert.equal(slots.active, 0);
});

test('slots: a waiter whose client left is dropped, not served', async () => {
  const slots = new Slots(1, 4, 'model x');
  const first = await slots.acquire();
  const controller = new AbortController();
  const waiting = slots.acquire(controller.signal);
  controller.abort();
  await assert.rejects(waiting, ClientGoneError);
  assert.equal(slots.queued, 0);
  first.release();
  assert.equal(slots.active, 0);
});
