// The worker runner pipelines (RunnerOptions.decodeOn): it starts the next decode before the owners see
// their tokens, so a stop or forced tokens from onToken arrive with one token of that sequence already
// decoding. Whatever the owners decide, it must generate exactly what the loop runner (decode, then
// onToken, then the next decode) generates, and leave a KV that a next turn continues correctly.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GgmlType } from '../../../tiny-models/gguf-writer.ts';
import { encodeRandomChatModel } from '../../../tiny-models/random-chat.ts';
import { openLlamaLibrary } from './library.ts';
import { LlamaRunner, type GenerationEnd, type TokenDecision } from './runner.ts';

let dir: string;
let loop: LlamaRunner;
let worker: LlamaRunner;
let fresh: LlamaRunner;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'infera-pipeline-'));
  const path = join(dir, 'random.gguf');
  writeFileSync(
    path,
    encodeRandomChatModel({ hidden: 64, layers: 2, heads: 4, headsKv: 2, feedForward: 128, seed: 23, matrixType: GgmlType.F32, endBias: 100, asciiOnly: true }),
  );
  const lib = await openLlamaLibrary();
  const options = { contextSize: 512, sequences: 3, threads: 1 };
  loop = LlamaRunner.load(lib, path, { ...options, decodeOn: 'loop' });
  worker = LlamaRunner.load(lib, path, { ...options, decodeOn: 'worker' });
  fresh = LlamaRunner.load(lib, path, { ...options, decodeOn: 'loop', promptCache: false });
});

after(async () => {
  await loop?.dispose();
  await worker?.dispose();
  await fresh?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

interface Run {
  tokens: number[];
  end: GenerationEnd;
}

/** `decide(n, token)`: the owner's answer to its n-th token (1-based). */
function run(runner: LlamaRunner, prompt: number[], maxTokens: number, decide: (n: number, token: number) => TokenDecision = () => undefined): Promise<Run> {
  const tokens: number[] = [];
  return runner
    .generate({
      prompt,
      sampling: { temperature: 0 },
      maxTokens,
      onToken: (event) => {
        tokens.push(event.token);
        return decide(tokens.length, event.token);
      },
    })
    .done.then((end) => ({ tokens, end }));
}

const prompts = (runner: LlamaRunner) =>
  ['tell me about the sea and the lighthouse', 'alpha beta gamma delta', 'one two three four five six'].map((text) =>
    runner.tokenize(`<|im_start|>user\n${text}<|im_end|>\n<|im_start|>assistant\n`),
  );

test('pipelined, owners that stop, force tokens or run to the limit get exactly what the loop runner gives them', async () => {
  const scenario = (runner: LlamaRunner) => {
    const [a, b, c] = prompts(runner);
    return Promise.all([
      // Stops after its 5th token (a stop string): that sequence's 6th token was already decoding.
      run(runner, a!, 20, (n) => (n === 5 ? 'stop' : undefined)),
      // Forced tokens after its 3rd (a thought budget closing): evaluated after the sampled one.
      run(runner, b!, 14, (n) => (n === 3 ? { force: [a![1]!, a![2]!] } : undefined)),
      run(runner, c!, 9),
    ]);
  };
  const expected = await scenario(loop);
  const got = await scenario(worker);
  assert.deepEqual(
    got.map((r) => ({ tokens: r.tokens, reason: r.end.reason, generated: r.end.generatedTokens })),
    expected.map((r) => ({ tokens: r.tokens, reason: r.end.reason, generated: r.end.generatedTokens })),
  );
  assert.deepEqual(
    expected.map((r) => r.end.reason),
    ['stopped', 'length', 'length'],
  );
  assert.equal(expected[0]!.tokens.length, 5);
  assert.equal(expected[1]!.end.generatedTokens, 14);
  // What the forcing sequence's KV holds: its history as generated, the forced tokens in place (a token
  // evaluated twice or out of order would end the cached prefix there).
  for (const [runner, result] of [
    [loop, expected],
    [worker, got],
  ] as const) {
    const [a, b] = prompts(runner);
    const sampled = result[1]!.tokens;
    const history = [...b!, ...sampled.slice(0, 3), a![1]!, a![2]!, ...sampled.slice(3)];
    const next = [...history, ...runner.tokenize('<|im_end|>\n<|im_start|>user\nmore<|im_end|>\n<|im_start|>assistant\n')];
    const turn = await run(runner, next, 8);
    assert.equal(turn.end.cachedPromptTokens, history.length - 1, `${runner.decodeOn}: the whole history but its last sampled token came from the KV`);
    assert.deepEqual(turn.tokens, (await run(fresh, next, 8)).tokens, `${runner.decodeOn}: the next turn continues as a full evaluation`);
  }
});

test('pipelined, a sequence stopped with a token still decoding leaves a KV that the next turn continues exactly', async () => {
  const [first] = prompts(worker);
  const one = await run(worker, first!, 24, (n) => (n === 7 ? 'stop' : undefined));
  assert.equal(one.end.reason, 'stopped');
  const second = [...first!, ...one.tokens, ...worker.tokenize('<|im_end|>\n<|im_start|>user\nand then?<|im_end|>\n<|im_start|>assistant\n')];
  const two = await run(worker, second, 16);
  const reference = await run(fresh, second, 16);
  assert.ok(two.end.cachedPromptTokens >= first!.length + one.tokens.length - 1, `the first turn came from the KV (${two.end.cachedPromptTokens} cached)`);
  assert.deepEqual(two.tokens, reference.tokens);
});
