import { test } from 'node:test';
import assert from 'node:assert/strict';
import { servesFromArgv } from './spare.ts';

test('the spare engine process is forked before the CLI loads for `infera` and `infera serve …` only', () => {
  assert.equal(servesFromArgv([]), true);
  assert.equal(servesFromArgv(['serve']), true);
  assert.equal(servesFromArgv(['serve', '--port', '0', '--config', 'x.yaml']), true);
  // Left to serve's action, as before (it forks the spare itself).
  assert.equal(servesFromArgv(['--port', '0']), false);
  assert.equal(servesFromArgv(['keys', 'list']), false);
  assert.equal(servesFromArgv(['models']), false);
  assert.equal(servesFromArgv(['serve', '--help']), false);
  assert.equal(servesFromArgv(['-h']), false);
  assert.equal(servesFromArgv(['serve', '--', 'x']), false);
});
