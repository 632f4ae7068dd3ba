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

test('slots: full queue answers 503 with Retry-After', async () => {
  const slots = new Slots(1, 0, 'model x', 3);
  await slots.acquire();
  await assert.rejects(slots.acquire(), (error: unknown) => {
    assert.ok(error instanceof InferaError);
    assert.equal(error.status, 503);
    assert.equal(error.retryAfter, 3);
    return true;
  });
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
