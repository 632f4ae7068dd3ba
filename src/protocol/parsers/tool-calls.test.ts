import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ToolCallParser, parseHermesToolCall, type ToolCallParserPart } from './tool-calls.ts';
import { RawOutputParser, parseRawOutput, type RawOutputPart } from './raw-output.ts';

interface Collected {
  text: string;
  reasoning: string;
  calls: { index: number; id: string; name: string; arguments: string }[];
}

function collect(parts: (ToolCallParserPart | RawOutputPart)[]): Collected {
  const out: Collected = { text: '', reasoning: '', calls: [] };
  for (const part of parts) {
    if (part.type === 'text-delta') {
      assert.notEqual(part.text, '');
      out.text += part.text;
    } else if (part.type === 'reasoning-delta') out.reasoning += part.text;
    else if (part.type === 'tool-call-start') {
      assert.equal(part.index, out.calls.length, 'indexes count up from 0 in order');
      out.calls.push({ index: part.index, id: part.id, name: part.name, arguments: '' });
    } else {
      const call = out.calls[part.index];
      assert.ok(call, `arguments for call ${part.index} came after its start`);
      call.arguments += part.argumentsDelta;
    }
  }
  return out;
}

const ids = () => {
  let n = 0;
  return () => `call_${n++}`;
};

function runTools(chunks: string[]): Collected {
  const parser = new ToolCallParser({ createId: ids() });
  return collect([...chunks.flatMap((c) => parser.push(c)), ...parser.end()]);
}

function runRaw(chunks: string[], startInThinking = false): Collected {
  const parser = new RawOutputParser({ thinking: { startInThinking }, toolCalls: { createId: ids() } });
  return collect([...chunks.flatMap((c) => parser.push(c)), ...parser.end()]);
}

function* splits(text: string): Generator<string[]> {
  for (let i = 0; i <= text.length; i++) yield [text.slice(0, i), text.slice(i)];
  yield [...text];
}

function* threeWaySplits(text: string): Generator<string[]> {
  for (let i = 0; i <= text.length; i++)
    for (let j = i; j <= text.length; j++) yield [text.slice(0, i), text.slice(i, j), text.slice(j)];
}

test('parseHermesToolCall accepts object or string arguments and "parameters"', () => {
  assert.deepEqual(parseHermesToolCall('{"name":"f","arguments":{"a":1}}'), { name: 'f', arguments: '{"a":1}' });
  assert.deepEqual(parseHermesToolCall('{"name":"f","arguments":"{\\"a\\":1}"}'), { name: 'f', arguments: '{"a":1}' });
  assert.deepEqual(parseHermesToolCall('{"name":"f","parameters":{"b":2}}'), { name: 'f', arguments: '{"b":2}' });
  assert.deepEqual(parseHermesToolCall('{"name":"f"}'), { name: 'f', arguments: '{}' });
  assert.equal(parseHermesToolCall('{"arguments":{}}'), undefined);
  assert.equal(parseHermesToolCall('{"name":"f",'), undefined);
  assert.equal(parseHermesToolCall('[1]'), undefined);
});

test('text, then two tool calls, at every split point', () => {
  const sample =
    'Checking both.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n' +
    '<tool_call>\n{"name": "get_time", "arguments": {"tz": "CET"}}\n</tool_call>';
  for (const chunks of splits(sample)) {
    const got = runTools(chunks);
    assert.equal(got.text, 'Checking both.', JSON.stringify(chunks));
    assert.deepEqual(got.calls, [
      { index: 0, id: 'call_0', name: 'get_weather', arguments: '{"city":"Paris"}' },
      { index: 1, id: 'call_1', name: 'get_time', arguments: '{"tz":"CET"}' },
    ]);
  }
});

test('markers split in two places never leak into text', () => {
  const sample = 'a<tool_call>{"name":"f"}</tool_call>b';
  for (const chunks of threeWaySplits(sample)) {
    const got = runTools(chunks);
    assert.equal(got.text, 'ab', JSON.stringify(chunks));
    assert.deepEqual(got.calls.map((c) => c.name), ['f'], JSON.stringify(chunks));
  }
});

test('no tool calls: text passes through unchanged (including lookalike tags)', () => {
  for (const sample of ['plain answer', 'x < y and <tool>z</tool>', 'ends with <tool_c', 'trailing space \n']) {
    for (const chunks of splits(sample)) assert.equal(runTools(chunks).text, sample, JSON.stringify(chunks));
  }
});

test('text holds back only what could be a marker', () => {
  const parser = new ToolCallParser();
  assert.deepEqual(parser.push('Hello <to'), [{ type: 'text-delta', text: 'Hello' }]);
  assert.deepEqual(parser.push('day'), [{ type: 'text-delta', text: ' <today' }]);
});

test('malformed JSON inside a block is emitted as text, not lost', () => {
  const sample = 'x<tool_call>{"name": "f", "arguments": {oops}</tool_call>y';
  for (const chunks of splits(sample)) {
    const got = runTools(chunks);
    assert.equal(got.text, 'x<tool_call>{"name": "f", "arguments": {oops}</tool_call>y', JSON.stringify(chunks));
    assert.deepEqual(got.calls, []);
  }
});

test('an unclosed block at the end is a call when its JSON is complete, else text', () => {
  for (const chunks of splits('<tool_call>{"name":"f","arguments":{}}')) {
    assert.deepEqual(runTools(chunks).calls.map((c) => c.name), ['f'], JSON.stringify(chunks));
  }
  for (const chunks of splits('<tool_call>{"name":"f","argu')) {
    const got = runTools(chunks);
    assert.deepEqual([got.text, got.calls.length], ['<tool_call>{"name":"f","argu', 0], JSON.stringify(chunks));
  }
});

test('ids are unique by default', () => {
  const parser = new ToolCallParser();
  const parts = [...parser.push('<tool_call>{"name":"a"}</tool_call><tool_call>{"name":"b"}</tool_call>'), ...parser.end()];
  const starts = parts.filter((p) => p.type === 'tool-call-start');
  assert.equal(starts.length, 2);
  assert.match(starts[0]!.id, /^call_[0-9a-f]{24}$/);
  assert.notEqual(starts[0]!.id, starts[1]!.id);
  assert.equal(parser.toolCallCount, 2);
});

test('raw output: tool call after a think block, at every split point', () => {
  const sample = '<think>\nThe user wants weather; call the tool.\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>';
  for (const chunks of splits(sample)) {
    const got = runRaw(chunks);
    assert.equal(got.reasoning, 'The user wants weather; call the tool.', JSON.stringify(chunks));
    assert.equal(got.text, '', JSON.stringify(chunks));
    assert.deepEqual(got.calls, [{ index: 0, id: 'call_0', name: 'get_weather', arguments: '{"city":"Oslo"}' }]);
  }
});

test('raw output: tool-call markers inside the think block stay reasoning', () => {
  const sample = '<think>maybe <tool_call>{"name":"x"}</tool_call>?</think>no call';
  for (const chunks of splits(sample)) {
    const got = runRaw(chunks);
    assert.equal(got.reasoning, 'maybe <tool_call>{"name":"x"}</tool_call>?');
    assert.equal(got.text, 'no call');
    assert.deepEqual(got.calls, []);
  }
});

test('raw output: template-opened thinking, answer text and a call', () => {
  const sample = 'plan</think>Let me look.<tool_call>{"name":"search","arguments":{"q":"x"}}</tool_call>';
  for (const chunks of splits(sample)) {
    const got = runRaw(chunks, true);
    assert.deepEqual([got.reasoning, got.text, got.calls.length], ['plan', 'Let me look.', 1], JSON.stringify(chunks));
  }
});

test('parseRawOutput gives the whole-text split', () => {
  const got = parseRawOutput('<think>r</think>t<tool_call>{"name":"f","arguments":{"a":[1]}}</tool_call>');
  assert.equal(got.reasoning, 'r');
  assert.equal(got.text, 't');
  assert.equal(got.toolCalls.length, 1);
  assert.equal(got.toolCalls[0]!.name, 'f');
  assert.equal(got.toolCalls[0]!.arguments, '{"a":[1]}');
  assert.deepEqual(parseRawOutput('<think>r</think><tool_call>{}</tool_call>', { toolCalls: false }), {
    reasoning: 'r',
    text: '<tool_call>{}</tool_call>',
    toolCalls: [],
  });
  assert.deepEqual(parseRawOutput('<think>r</think>t', { thinking: false }), { reasoning: '', text: '<think>r</think>t', toolCalls: [] });
});

test('a long argument block streamed in small deltas stays fast (no rescanning)', () => {
  const parser = new ToolCallParser({ createId: ids() });
  const value = 'x'.repeat(400_000);
  const started = performance.now();
  const parts: ToolCallParserPart[] = [...parser.push('<tool_call>{"name":"write","arguments":{"text":"')];
  for (let i = 0; i < value.length; i += 4) parts.push(...parser.push(value.slice(i, i + 4)));
  parts.push(...parser.push('"}}</tool_call>'), ...parser.end());
  const elapsed = performance.now() - started;
  const got = collect(parts);
  assert.equal(got.calls[0]!.arguments, JSON.stringify({ text: value }));
  assert.ok(elapsed < 2000, `took ${elapsed.toFixed(0)} ms`);
});

test('streamArguments: start once the header is complete, arguments in fragments, the closing brace held back', () => {
  const parser = new ToolCallParser({ createId: ids(), streamArguments: true });
  const chunks = ['Sure. <tool_call>\n{"name": "', 'get_weather', '", "arguments": ', '{"city": ', '"Paris"}', '}\n', '</tool', '_call>\n<tool_call>{"name": "noop", "arguments": {}}</tool_call>'];
  const perChunk = chunks.map((chunk) => parser.push(chunk));
  const parts = [...perChunk.flat(), ...parser.end()];
  // Nothing of the call before its name is complete; the start comes with the arguments' first fragment.
  assert.deepEqual(perChunk[1], []);
  assert.equal(perChunk[2]!.find((p) => p.type === 'tool-call-start')?.type, 'tool-call-start');
  // "{"city": "Paris"}" may still be followed by the object's own "}": its last brace waits (and so
  // does whitespace, which may be layout before it).
  assert.deepEqual(perChunk[3], [{ type: 'tool-call-delta', index: 0, argumentsDelta: '{"city":' }]);
  assert.deepEqual(perChunk[4], [{ type: 'tool-call-delta', index: 0, argumentsDelta: ' "Paris"' }]);
  const collected = collect(parts);
  assert.equal(collected.text, 'Sure.');
  assert.deepEqual(
    collected.calls.map(({ name, arguments: args }) => ({ name, args })),
    [
      { name: 'get_weather', args: '{"city": "Paris"}' },
      { name: 'noop', args: '{}' },
    ],
  );
});

test('streamArguments: a call cut off keeps the arguments sent so far; a block without the header is parsed whole', () => {
  const cut = new ToolCallParser({ createId: ids(), streamArguments: true });
  const parts = [...cut.push('<tool_call>{"name": "f", "arguments": {"a": 1, "b": '), ...cut.end()];
  assert.deepEqual(collect(parts).calls.map((call) => call.arguments), ['{"a": 1, "b": ']);
  // Cut right after complete arguments: the brace held back was theirs.
  const complete = new ToolCallParser({ createId: ids(), streamArguments: true });
  const done = collect([...complete.push('<tool_call>{"name": "f", "arguments": {"a": 1}'), ...complete.end()]);
  assert.deepEqual(done.calls.map((call) => call.arguments), ['{"a": 1}']);
  const other = new ToolCallParser({ createId: ids(), streamArguments: true });
  const whole = collect([...other.push('<tool_call>{"arguments": {"x": 1}, "name": "g"}</tool_call>'), ...other.end()]);
  assert.deepEqual(whole.calls.map(({ name, arguments: args }) => ({ name, args })), [{ name: 'g', args: '{"x":1}' }]);
});
