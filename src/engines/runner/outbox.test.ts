import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as turn, setTimeout as sleep } from 'node:timers/promises';
import { Outbox } from './outbox.ts';
import type { ChildItem } from './protocol.ts';

/** An outbox on a clock the test moves, recording what it sends. */
function harness(intervalMs: number) {
  const sent: ChildItem[][] = [];
  let clock = 1000;
  const outbox = new Outbox((items) => sent.push(items), intervalMs, () => clock);
  return { sent, outbox, advance: (ms: number) => (clock += ms) };
}
const text = (id: number, chunk: string): ChildItem => ({ t: 'part', id, part: { type: 'text-delta', text: chunk } });

test('interval 0: everything posted in one loop turn is one message, one message per turn', async () => {
  const { sent, outbox } = harness(0);
  outbox.post(text(1, 'a'));
  outbox.post(text(2, 'b'));
  await turn();
  outbox.post(text(1, 'c'));
  outbox.post(text(2, 'd'));
  await turn();
  assert.deepEqual(sent, [[text(1, 'a'), text(2, 'b')], [text(1, 'c'), text(2, 'd')]]);
});

test("a step's parts go out in one message before the runner's next step (an immediate queued before them)", async () => {
  const events: string[] = [];
  const sent: ChildItem[][] = [];
  const outbox = new Outbox((items) => {
    sent.push(items);
    events.push('sent');
  }, 0);
  setImmediate(() => events.push('next step'));
  // The step's sampling resolves each stream's promise chain: posts at different microtask depths.
  outbox.post(text(1, 'a'));
  await Promise.resolve();
  outbox.post(text(2, 'b'));
  await turn();
  await turn();
  assert.deepEqual(events, ['sent', 'next step']);
  assert.deepEqual(sent, [[text(1, 'a'), text(2, 'b')]]);
});

test("a stream's first token goes at once; later deltas wait for the interval and then go together, in order", async () => {
  const { sent, outbox, advance } = harness(10);
  outbox.post(text(1, 'a'));
  await turn();
  assert.equal(sent.length, 1, 'the first token is not held');
  for (const chunk of ['b', 'c', 'd']) {
    advance(3);
    outbox.post(text(1, chunk));
    await turn();
  }
  assert.equal(sent.length, 1, 'deltas inside the interval wait');
  advance(2); // 11 ms since the first message
  outbox.post(text(1, 'e'));
  await turn();
  assert.deepEqual(sent[1], [text(1, 'b'), text(1, 'c'), text(1, 'd'), text(1, 'e')]);
});

test('a finish, an end, an error, a result, a tool-call start and a change of kind go at once with what waited', async () => {
  const urgent: [string, ChildItem][] = [
    ['finish part', { t: 'part', id: 1, part: { type: 'finish', finishReason: 'stop' } }],
    ['end', { t: 'end', id: 1 }],
    ['error', { t: 'error', id: 1, error: { name: 'Error', message: 'x' } }],
    ['result', { t: 'result', id: 7, value: 1 }],
    ['callback', { t: 'callback', callback: 3, args: [] }],
    ['tool-call start', { t: 'part', id: 1, part: { type: 'tool-call-start', index: 0, id: 'c', name: 'f' } }],
    ['reasoning → text', { t: 'part', id: 1, part: { type: 'text-delta', text: 'answer' } }],
  ];
  for (const [what, item] of urgent) {
    const { sent, outbox, advance } = harness(1000);
    const first: ChildItem = { t: 'part', id: 1, part: { type: 'reasoning-delta', text: 'r' } };
    const held: ChildItem = { t: 'part', id: 1, part: { type: 'reasoning-delta', text: 's' } };
    outbox.post(first);
    await turn();
    advance(1);
    outbox.post(held);
    await turn();
    assert.equal(sent.length, 1, `${what}: the second reasoning delta waits`);
    outbox.post(item);
    await turn();
    assert.deepEqual(sent[1], [held, item], `${what} goes at once, after what waited`);
  }
});

test("a tool call's argument deltas after its start may wait; a new stream's first delta may not", async () => {
  const { sent, outbox, advance } = harness(1000);
  outbox.post({ t: 'part', id: 1, part: { type: 'tool-call-start', index: 0, id: 'c', name: 'f' } });
  await turn();
  advance(1);
  outbox.post({ t: 'part', id: 1, part: { type: 'tool-call-delta', index: 0, argumentsDelta: '{' } });
  await turn();
  assert.equal(sent.length, 1);
  outbox.post(text(2, 'x'));
  await turn();
  assert.equal(sent.length, 2, "stream 2's first token is not held by stream 1's interval");
  assert.equal(sent[1]!.length, 2);
});

test('deltas whose stream produces nothing more still go out once the interval has passed', async () => {
  const sent: ChildItem[][] = [];
  const outbox = new Outbox((items) => sent.push(items), 30);
  outbox.post(text(1, 'a'));
  await turn();
  outbox.post(text(1, 'b'));
  await turn();
  assert.equal(sent.length, 1);
  await sleep(80);
  assert.deepEqual(sent[1], [text(1, 'b')]);
});

test('flush(true) sends what waits (the engine process closing)', async () => {
  const { sent, outbox } = harness(1000);
  outbox.post(text(1, 'a'));
  await turn();
  outbox.post(text(1, 'b'));
  await turn();
  outbox.flush(true);
  assert.deepEqual(sent[1], [text(1, 'b')]);
});
