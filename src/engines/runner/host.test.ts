import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { LEVELS } from './host.ts';

test("the engine process's log levels are pino's (host.ts names them without importing pino)", () => {
  assert.deepEqual(LEVELS, { ...pino.levels.labels });
});
