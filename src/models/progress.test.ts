// The pull progress as people see it: a redrawn bar with size, speed and ETA on a terminal, a plain
// line per 5 % elsewhere.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { progressPrinter } from './progress.ts';

function sink() {
  let text = '';
  const write = (chunk: string) => {
    text += chunk;
    return true;
  };
  return { stream: { write } as unknown as NodeJS.WriteStream, text: () => text };
}

const run = (isTty: boolean) => {
  const out = sink();
  const print = progressPrinter(out.stream, isTty);
  print({ type: 'resolved', ref: 'hf:o/r:Q8_0', endpoint: 'https://hf-mirror.com', files: 2, bytes: 2_000_000, fetch: 1, fetchBytes: 1_000_000 });
  for (let bytes = 0; bytes <= 1_000_000; bytes += 10_000) print({ type: 'progress', ref: 'hf:o/r:Q8_0', downloaded: bytes, total: 1_000_000 });
  print({ type: 'done', ref: 'hf:o/r:Q8_0', path: '/m/hf/o/r/r-Q8_0.gguf', size: 2_000_000, skipped: false });
  return out.text();
};

test('not a terminal: the source, then one line per 5 %, then where it went', () => {
  const text = run(false);
  assert.match(text, /^hf:o\/r:Q8_0 from https:\/\/hf-mirror\.com: 2 files, 2\.0 MB \(1 already here\); fetching 1\.0 MB\n/);
  const lines = text.split('\n').filter((line) => /%/.test(line));
  assert.equal(lines.length, 21, text);
  assert.match(lines[1]!, /^ {2}hf:o\/r:Q8_0: 5% {2}50\.0 KB \/ 1\.0 MB {2}\S+ \S+\/s {2}ETA \S+$/);
  assert.match(text, /hf:o\/r:Q8_0: done in \d+\.\d s → \/m\/hf\/o\/r\/r-Q8_0\.gguf\n$/);
});

test('a terminal: one line redrawn with a bar, size, speed and ETA', () => {
  const text = run(true);
  assert.match(text, /\r {2}\[#{30}\] 100% {2}1\.0 MB \/ 1\.0 MB {2}\S+ \S+\/s {2}ETA \S+/);
  assert.ok(text.includes('\u001b[K\n'), 'each redraw clears the rest of the line');
  assert.ok(text.split('\n').length <= 4, 'the bar is redrawn in place, not printed line after line');
});
