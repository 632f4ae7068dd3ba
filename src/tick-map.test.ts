import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pinnedTick } from './tick-map.ts';

// What keeps nextTick's maps alive is that the object held is a tick object itself (the same literal,
// the same maps); on a Node whose executionAsyncResource() inside a tick answered anything else, the
// pin would hold nothing useful and this fails.
test('tick-map holds one of process.nextTick tick objects', async () => {
  await new Promise<void>((resolve) => setImmediate(resolve));
  const tick = pinnedTick();
  assert.ok(tick);
  const keys = Reflect.ownKeys(tick).map(String);
  assert.deepEqual(keys, ['callback', 'args', 'Symbol(async_id_symbol)', 'Symbol(trigger_async_id_symbol)']);
  assert.equal(typeof (tick as { callback: unknown }).callback, 'function');
});
