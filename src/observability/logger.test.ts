// The access log's timestamp keeps pino's isoTime format while formatting once per millisecond.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { isoTime } from './logger.ts';

test('isoTime writes what pino.stdTimeFunctions.isoTime writes, and follows the clock', async () => {
  for (let i = 0; i < 3; i++) {
    const before = Date.now();
    const ours = isoTime();
    const theirs = pino.stdTimeFunctions.isoTime();
    const after = Date.now();
    assert.match(ours, /^,"time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"$/);
    // Same millisecond as pino's unless the clock ticked in between.
    if (before === after) assert.equal(ours, theirs);
    const at = Date.parse(ours.slice(9, -1));
    assert.ok(at >= before && at <= after, `${ours} within ${before}..${after}`);
    await new Promise((resolve) => setTimeout(resolve, 3));
  }
});
