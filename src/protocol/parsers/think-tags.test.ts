import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ThinkTagParser, partialTagSuffix, type ThinkPart, type ThinkTagParserOptions } from './think-tags.ts';

interface Split {
  reasoning: string;
  text: string;
  parts: ThinkPart[];
}

function run(chunks: string[], options?: ThinkTagParserOptions): Split {
  const parser = new ThinkTagParser(options);
  const parts = [...chunks.flatMap((c) => parser.push(c)), ...parser.end()];
  const out: Split = { reasoning: '', text: '', parts };
  for (const p of parts) {
    assert.notEqual(p.text, '', 'no empty parts are emitted');
    if (p.type === 'reasoning-delta') out.reasoning += p.text;
    else out.text += p.text;
  }
  return out;
}

/** Every way to cut `text` into two deltas, plus one delta per character. */
function* splits(text: string): Generator<string[]> {
  for (let i = 0; i <= text.length; i++) yield [text.slice(0, i), text.slice(i)];
  yield [...text];
}

/** Every way to cut into three deltas (catches a tag split in two places). */
function* threeWaySplits(text: string): Generator<string[]> {
  for (let i = 0; i <= text.length; i++)
    for (let j = i; j <= text.length; j++) yield [text.slice(0, i), text.slice(i, j), text.slice(j)];
}

test('partialTagSuffix finds a tag prefix at the end only', () => {
  assert.equal(partialTagSuffix('abc</th', '</think>'), 4);
  assert.equal(partialTagSuffix('abc<', '</think>'), 1);
  assert.equal(partialTagSuffix('abc', '</think>'), 0);
  assert.equal(partialTagSuffix('</think>', '</think>'), 0, 'a whole tag is not a partial one');
});

test('a think block then an answer, at every split point', () => {
  const sample = '<think>\nLet me add 2 and 2.\n</think>\n\nThe answer is 4.';
  for (const chunks of splits(sample)) {
    const got = run(chunks);
    assert.equal(got.reasoning, 'Let me add 2 and 2.', JSON.stringify(chunks));
    assert.equal(got.text, 'The answer is 4.', JSON.stringify(chunks));
  }
});

test('a tag split in any two places ("</th" + "in" + "k>") never leaks into content', () => {
  const sample = '<think>a<b</think>c</thinking>';
  for (const chunks of threeWaySplits(sample)) {
    const got = run(chunks);
    assert.equal(got.reasoning, 'a<b', JSON.stringify(chunks));
    assert.equal(got.text, 'c</thinking>', JSON.stringify(chunks));
  }
});

test('reasoning streams before the block closes, content only after', () => {
  const parser = new ThinkTagParser();
  assert.deepEqual(parser.push('<think>'), []);
  assert.deepEqual(parser.push('step one'), [{ type: 'reasoning-delta', text: 'step one' }]);
  assert.deepEqual(parser.push(' then</th'), [{ type: 'reasoning-delta', text: ' then' }]);
  assert.deepEqual(parser.push('ink>Done'), [{ type: 'text-delta', text: 'Done' }]);
  assert.deepEqual(parser.end(), []);
});

test('no tags at all: everything is content, leading whitespace kept', () => {
  for (const sample of ['Hello there', '  indented answer', '<b>bold</b> answer', '<thinking is fun']) {
    for (const chunks of splits(sample)) {
      const got = run(chunks);
      assert.equal(got.text, sample, JSON.stringify(chunks));
      assert.equal(got.reasoning, '');
    }
  }
});

test('a <think> tag after the start is answer text, not a second block', () => {
  const sample = 'Use the <think> tag like this: <think>x</think>';
  for (const chunks of splits(sample)) assert.deepEqual(run(chunks).text, sample);
});

test('the template already opened <think>: the response starts as reasoning', () => {
  const sample = 'I should greet.\n</think>\n\nHello!';
  for (const chunks of splits(sample)) {
    const got = run(chunks, { startInThinking: true });
    assert.equal(got.reasoning, 'I should greet.', JSON.stringify(chunks));
    assert.equal(got.text, 'Hello!', JSON.stringify(chunks));
  }
  // Some models repeat the opening tag anyway.
  for (const chunks of splits('<think>\nhmm</think>ok')) {
    const got = run(chunks, { startInThinking: true });
    assert.deepEqual([got.reasoning, got.text], ['hmm', 'ok'], JSON.stringify(chunks));
  }
});

test('an unclosed block (cut by max_tokens) is all reasoning', () => {
  for (const chunks of splits('<think>still thinking </thi')) {
    const got = run(chunks);
    assert.equal(got.reasoning, 'still thinking </thi', JSON.stringify(chunks));
    assert.equal(got.text, '');
  }
});

test('an empty think block (thinking switched off) yields only content', () => {
  for (const chunks of splits('<think>\n\n</think>\n\nHi')) {
    const got = run(chunks);
    assert.deepEqual([got.reasoning, got.text], ['', 'Hi'], JSON.stringify(chunks));
  }
});

test('whitespace inside reasoning is kept; only the edges of the block are trimmed', () => {
  const sample = '<think>\n line 1\n\n line 2 \n</think>answer';
  for (const chunks of splits(sample)) {
    assert.equal(run(chunks).reasoning, 'line 1\n\n line 2', JSON.stringify(chunks));
  }
});

test('a response that is only a partial open tag is text', () => {
  assert.deepEqual(run(['<thi']).text, '<thi');
  assert.deepEqual(run(['  ']).text, '  ');
});

test('custom tags', () => {
  const got = run(['<seed:think>x</seed', ':think>y'], { openTag: '<seed:think>', closeTag: '</seed:think>' });
  assert.deepEqual([got.reasoning, got.text], ['x', 'y']);
});

test('phase reports where the parser is', () => {
  const parser = new ThinkTagParser();
  assert.equal(parser.phase, 'start');
  parser.push('<think>a');
  assert.equal(parser.phase, 'reasoning');
  parser.push('</think>b');
  assert.equal(parser.phase, 'content');
});

test('long reasoning streamed in small deltas stays linear', () => {
  const parser = new ThinkTagParser();
  const started = performance.now();
  let reasoning = '';
  const sink = (parts: ThinkPart[]) => {
    for (const p of parts) if (p.type === 'reasoning-delta') reasoning += p.text;
  };
  sink(parser.push('<think>'));
  for (let i = 0; i < 100_000; i++) sink(parser.push(i % 10 === 0 ? ' \n ' : 'abcd'));
  sink(parser.push('</think>answer'));
  sink(parser.end());
  const elapsed = performance.now() - started;
  assert.equal(reasoning.length, 90_000 * 4 + 9_999 * 3);
  assert.ok(elapsed < 2000, `took ${elapsed.toFixed(0)} ms`);
});
