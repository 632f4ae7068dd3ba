// The access log's timestamp keeps pino's isoTime format while formatting once per millisecond.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { createLogger, flatLineWriter, isoTime } from './logger.ts';

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

test('flatLineWriter writes what logger.info(fields, msg) writes, and leaves what it cannot write as is to pino', () => {
  const capture = () => {
    const lines: string[] = [];
    return { lines, stream: { write: (line: string) => lines.push(line) } as unknown as NodeJS.WritableStream };
  };
  const ours = capture();
  const theirs = capture();
  const logger = createLogger('info', ours.stream);
  const reference = createLogger('info', theirs.stream);
  let slow = 0;
  const info = logger.info.bind(logger);
  logger.info = ((...args: Parameters<typeof info>) => {
    slow += 1;
    return info(...args);
  }) as typeof logger.info;
  type FlatFields = Partial<Record<'id' | 'method' | 'url' | 'status' | 'ms' | 'key' | 'account' | 'model' | 'code' | 'secret', string | number>>;
  const write = flatLineWriter<FlatFields>(logger, 'request', ['id', 'method', 'url', 'status', 'ms', 'key', 'account', 'model', 'code']);
  const cases: [FlatFields, 'fast' | 'pino'][] = [
    [{ id: 'req_0123', method: 'GET', url: '/v1/models', status: 200, ms: 0, key: 'config', account: 'default' }, 'fast'],
    [{ id: 'req_1', method: 'POST', url: '/v1/chat/completions', status: 400, ms: 12, key: undefined, model: 'Qwen/Qwen3-8B', code: 'invalid_request' }, 'fast'],
    [{ id: 'x', method: 'GET', url: `/v1/models/${'é'.repeat(60)}${'a'.repeat(60)}`, status: 404, ms: -0 }, 'fast'],
    [{ id: 'x', method: 'GET', url: '/v1/models/"quoted"\\', status: 404, ms: 1 }, 'pino'],
    [{ id: 'x', method: 'GET', url: '/tab\there', status: 404, ms: 1 }, 'pino'],
    [{ id: 'x', method: 'GET', url: '/half\ud800', status: 404, ms: 1 }, 'pino'],
    [{ id: 'x', status: Number.NaN }, 'pino'],
    [{}, 'fast'],
  ];
  for (const [fields, path] of cases) {
    const before = slow;
    write(fields);
    reference.info(fields, 'request');
    assert.equal(slow - before, path === 'pino' ? 1 : 0, `${JSON.stringify(fields)} takes ${path}'s path`);
  }
  const untimed = (line: string) => line.replace(/,"time":"[^"]+"/, '');
  assert.deepEqual(ours.lines.map(untimed), theirs.lines.map(untimed));
  assert.ok(ours.lines.every((line) => /,"time":"\d{4}-\d\d-\d\dT[\d:.]+Z"/.test(line)));
  // A key pino redacts (or serializes) sends every line through pino.
  const redacting = flatLineWriter<FlatFields>(logger, 'request', ['id', 'secret']);
  const before = slow;
  redacting({ id: 'x', secret: 'sk-123' });
  reference.info({ id: 'x', secret: 'sk-123' }, 'request');
  assert.equal(slow - before, 1);
  assert.equal(untimed(ours.lines.at(-1)!), untimed(theirs.lines.at(-1)!));
  assert.match(ours.lines.at(-1)!, /"secret":"\[redacted\]"/);
  // Below the logger's level nothing is written, as by logger.info.
  logger.level = 'warn';
  write(cases[0]![0]);
  assert.equal(ours.lines.length, cases.length + 1);
});
