// The stream parsers on bodies cut at every byte: whatever the chunking, the same events, in order,
// with SSE's line rules (CRLF, comments, multi-line data, named events, one optional space after the
// colon) and a character split between two chunks decoded whole.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { EventBatches, type EventParser, NdjsonParser, SseParser, type StreamEvent } from './events.ts';

/** Events of `body` cut into chunks at `cuts` (byte offsets). */
function parse(parser: EventParser, body: string, cuts: number[]): StreamEvent[] {
  const bytes = Buffer.from(body, 'utf8');
  const events: StreamEvent[] = [];
  let start = 0;
  for (const cut of [...cuts, bytes.length]) {
    events.push(...parser.push(bytes.subarray(start, cut)));
    start = cut;
  }
  events.push(...parser.end());
  return events;
}

/** Every way of cutting `body` in two, and one byte per chunk. */
function everyCut(make: () => EventParser, body: string): StreamEvent[][] {
  const length = Buffer.byteLength(body);
  const results = [parse(make(), body, [])];
  for (let cut = 1; cut < length; cut++) results.push(parse(make(), body, [cut]));
  results.push(parse(make(), body, Array.from({ length: length - 1 }, (_, i) => i + 1)));
  return results;
}

describe('SseParser', () => {
  test('the same events however the body is cut', () => {
    const body =
      ': keep-alive comment\r\n' +
      'data: {"a":1}\r\n\r\n' +
      'event: error\n' +
      'data: first line\n' +
      'data:second line\n\n' +
      'data\n\n' +
      'id: 7\nretry: 10\n\n' +
      'data: {"text":"héllo — ✓ 😀"}\n\n' +
      'data:  [DONE] \n\n' +
      'data: {"after":true}';
    const expected: StreamEvent[] = [
      { type: 'data', data: '{"a":1}' },
      { type: 'data', data: 'first line\nsecond line', event: 'error' },
      { type: 'data', data: '' },
      { type: 'data', data: '{"text":"héllo — ✓ 😀"}' },
      { type: 'done' },
      // A last event without its blank line still counts.
      { type: 'data', data: '{"after":true}' },
    ];
    for (const events of everyCut(() => new SseParser(), body)) assert.deepEqual(events, expected);
  });

  test('an event name without data waits for the next event that has data', () => {
    assert.deepEqual(parse(new SseParser(), 'event: ping\n\ndata: x\n\n', []), [{ type: 'data', data: 'x', event: 'ping' }]);
  });

  test('all of a chunk’s events come back from its push', () => {
    const parser = new SseParser();
    assert.deepEqual(parser.push(Buffer.from('data: 1\n\ndata: 2\n\ndata: [DONE]\n\n')), [
      { type: 'data', data: '1' },
      { type: 'data', data: '2' },
      { type: 'done' },
    ]);
    assert.deepEqual(parser.end(), []);
  });
});

describe('NdjsonParser', () => {
  test('one event per non-blank line however the body is cut, the last line without its newline included', () => {
    const body = '{"a":1}\r\n\n  {"b":"ü ✓"}\n{"c":3}';
    const expected: StreamEvent[] = [
      { type: 'data', data: '{"a":1}' },
      { type: 'data', data: '{"b":"ü ✓"}' },
      { type: 'data', data: '{"c":3}' },
    ];
    for (const events of everyCut(() => new NdjsonParser(), body)) assert.deepEqual(events, expected);
  });
});

describe('EventBatches', () => {
  test('one batch per chunk that completes events, the end’s last event included; return() closes the body', async () => {
    const chunks = ['data: 1\n\nda', 'ta: 2\n', '\n: comment\n\n', 'data: 3'].map((text) => Buffer.from(text));
    let closed = false;
    const body: AsyncIterable<Buffer> = {
      [Symbol.asyncIterator]: () => {
        let i = 0;
        return {
          next: async () => (i < chunks.length ? { done: false, value: chunks[i++]! } : { done: true, value: undefined }),
          return: async () => {
            closed = true;
            return { done: true, value: undefined };
          },
        };
      },
    };
    const batches: StreamEvent[][] = [];
    for await (const batch of new EventBatches(body, new SseParser())) batches.push(batch);
    assert.deepEqual(batches, [[{ type: 'data', data: '1' }], [{ type: 'data', data: '2' }], [{ type: 'data', data: '3' }]]);
    assert.equal(closed, false);
    for await (const _batch of new EventBatches(body, new SseParser())) break;
    assert.equal(closed, true);
  });
});
