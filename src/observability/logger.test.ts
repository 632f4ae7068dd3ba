// The access log's timestamp keeps pino's isoTime format while formatting once per millisecond; stdout lines
// are written together, by a line's write while lines keep coming and by a timer when they stop.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { BufferedStdout, createLogger, flatLineWriter, isoTime } from './logger.ts';

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

test("flatLineWriter's prepared line writes what the writer writes with the two open fields, and what it cannot to pino", () => {
  const lines: string[] = [];
  const logger = createLogger('info', { write: (line: string) => lines.push(line) } as unknown as NodeJS.WritableStream);
  let slow = 0;
  const info = logger.info.bind(logger);
  logger.info = ((...args: Parameters<typeof info>) => {
    slow += 1;
    return info(...args);
  }) as typeof logger.info;
  type FlatFields = Partial<Record<'id' | 'method' | 'url' | 'status' | 'ms' | 'key' | 'account' | 'code', string | number>>;
  const write = flatLineWriter<FlatFields>(logger, 'request', ['id', 'method', 'url', 'status', 'ms', 'key', 'account', 'code']);
  const untimed = (line: string) => line.replace(/,"time":"[^"]+"/, '');
  const fixedSets: FlatFields[] = [
    { method: 'GET', url: '/v1/models', status: 200, key: 'config', account: 'default' },
    { method: 'GET', url: '/v1/no-such-route?x=1', status: 404, code: 'unknown_route' },
    { method: 'GET', url: '/v1/models', status: 401, code: 'invalid_api_key' },
    {},
  ];
  for (const fixed of fixedSets) {
    const line = write.prepare({ ...fixed }, 'id', 'ms');
    assert.ok(line, `${JSON.stringify(fixed)} is prepared`);
    for (const [id, ms] of [['req_0123', 0], ['trace-me-1', 17], ['quote"d', 3], ['x', Number.NaN]] as const) {
      const before = slow;
      line(id, ms);
      const prepared = lines.pop()!;
      // The writer's line of the same fields, in its keys' order (its contract).
      write({ id, method: fixed.method, url: fixed.url, status: fixed.status, ms, key: fixed.key, account: fixed.account, code: fixed.code });
      const written = lines.pop()!;
      assert.equal(untimed(prepared), untimed(written), `${JSON.stringify({ ...fixed, id, ms })}`);
      assert.equal(slow - before, id.includes('"') || Number.isNaN(ms) ? 2 : 0, `${id} ${ms}: pino's path only for what needs it`);
    }
  }
  // A fixed field needing escapes: not prepared (the caller writes each line through the writer).
  assert.equal(write.prepare({ url: '/a"b' }, 'id', 'ms'), undefined);
  assert.throws(() => write.prepare({}, 'ms', 'id'), /must come before/);
  logger.level = 'warn';
  write.prepare({ method: 'GET' }, 'id', 'ms')!('x', 1);
  assert.equal(lines.length, 0);
});

test('BufferedStdout: while lines keep coming the time-based write is made by a line, not by the timer; what is left goes within flushMs', async () => {
  const flushMs = 100;
  const writes: { text: string; inLine: boolean; at: number }[] = [];
  let inLine = false;
  const out = new BufferedStdout(flushMs, { write: (text: string) => writes.push({ text, inLine, at: performance.now() }) });
  const line = (text: string) => {
    inLine = true;
    try {
      out.write(text);
    } finally {
      inLine = false;
    }
  };
  // A line every ~1 ms for ~10 flushMs, as an access log under one-connection traffic; the event loop
  // turns between lines, so a due timer runs.
  const sent: string[] = [];
  const until = performance.now() + flushMs * 10;
  let next = 0;
  while (performance.now() < until) {
    if (performance.now() >= next) {
      const text = `line ${sent.length}\n`;
      sent.push(text);
      line(text);
      next = performance.now() + 1;
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
  const streamed = writes.length;
  assert.ok(streamed >= 8, `only ${streamed} writes while lines came`);
  // One may come from the timer where this process lost the CPU for flushMs / 5 at the wrong moment.
  const fromTimer = writes.filter((w) => !w.inLine).length;
  assert.ok(fromTimer <= 1, `${fromTimer} of ${streamed} writes came from the timer while lines kept coming`);
  // Lines stop: the rest goes out from the timer, no later than flushMs after the first of them.
  const last = `last\n`;
  sent.push(last);
  const firstPending = writes.at(-1)!.at;
  line(last);
  await new Promise((resolve) => setTimeout(resolve, flushMs * 3));
  const tail = writes.slice(streamed);
  assert.ok(tail.length >= 1 && !tail.at(-1)!.inLine, 'the rest was not written by the timer');
  assert.ok(tail.at(-1)!.at - firstPending <= flushMs * 2, `the rest went out ${(tail.at(-1)!.at - firstPending).toFixed(0)} ms late`);
  assert.equal(writes.map((w) => w.text).join(''), sent.join(''), 'every line once, in order');
});
