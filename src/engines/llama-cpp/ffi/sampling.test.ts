// The FFI runner's fast sampling must choose exactly what llama.cpp's sampler chain as written chooses
// (llama_sampler_sample over the whole vocabulary): penalties and the logit bias applied by the runner
// to the logits, chains with a large top_k over only the candidates top_k can keep, and penalties
// behind a top_k(k + lastN) prefilter in grammar chains, and plain greedy chosen inside the decode
// (llama.cpp's backend sampling) against the host's argmax. A random-weight
// model with a 4,096-token vocabulary, seeded sampling: the two runners must agree token for token.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GgmlType } from '../../../tiny-models/gguf-writer.ts';
import { encodeRandomChatModel } from '../../../tiny-models/random-chat.ts';
import { openLlamaLibrary, setFfiLogSink } from './library.ts';
import { LlamaRunner, type SamplingSpec, type TokenDecision } from './runner.ts';

let dir: string;
let fast: LlamaRunner;
let plain: LlamaRunner;
/** The defaults: plain greedy through the runner's WebAssembly argmax. */
let standard: LlamaRunner;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'infera-ffi-sampling-'));
  const path = join(dir, 'random.gguf');
  writeFileSync(
    path,
    encodeRandomChatModel({ hidden: 64, layers: 2, heads: 4, headsKv: 2, feedForward: 128, seed: 23, matrixType: GgmlType.F32, endBias: 100, vocabSize: 4096 }),
  );
  const lib = await openLlamaLibrary();
  const options = { contextSize: 512, sequences: 2, threads: 1 };
  fast = LlamaRunner.load(lib, path, { ...options, backendGreedy: true });
  standard = LlamaRunner.load(lib, path, options);
  plain = LlamaRunner.load(lib, path, { ...options, fastSampling: false, backendGreedy: false });
});

after(async () => {
  await fast?.dispose();
  await plain?.dispose();
  await standard?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

/** `decide` answers each token (after it is recorded), e.g. with tokens to force. */
async function sample(runner: LlamaRunner, sampling: SamplingSpec, prompt: number[], maxTokens = 160, decide?: (tokens: number[]) => TokenDecision): Promise<number[]> {
  const tokens: number[] = [];
  await runner.generate({
    prompt,
    sampling,
    maxTokens,
    cachePrompt: false,
    onToken: (event) => {
      tokens.push(event.token);
      return decide?.(tokens);
    },
  }).done;
  return tokens;
}

const penalties = (lastN: number, repeat: number, frequency = 0, presence = 0) => ({ lastN, repeat, frequency, presence });

/** Two generations in one batch per step (both runners alike, so the logits are the same). */
async function samplePair(runner: LlamaRunner, a: SamplingSpec, b: SamplingSpec, prompt: number[]): Promise<number[][]> {
  return Promise.all([sample(runner, a, prompt), sample(runner, b, [...prompt, prompt[0]!])]);
}

test('penalties and the bias applied by the runner, and a large top_k over its candidates, choose what the whole chain does', async () => {
  const prompt = fast.tokenize('<|im_start|>user\nTell me about the sea.<|im_end|>\n<|im_start|>assistant\n');
  const lifted = [...Array(4096).keys()].filter((token) => token >= 100 && !fast.isEog(token)).slice(0, 30).map((token) => [token, 5] as [number, number]);
  // Each chain with the way the runner takes it: penalties written into the logits (then the whole
  // chain), a top_k above 128 over its candidates, or both.
  const chains: [SamplingSpec, 'penalised' | 'candidates' | 'both'][] = [
    [{ temperature: 0.7, topK: 40, topP: 0.9, seed: 1, penalties: penalties(128, 1.3) }, 'penalised'],
    [{ temperature: 1.2, topK: 20, seed: 2, penalties: penalties(128, 1.1, 0.5, 0.4) }, 'penalised'],
    // Frequency and presence whose products round in float32.
    [{ temperature: 1.1, topK: 30, seed: 12, penalties: penalties(200, 1.05, 0.3, 0.7) }, 'penalised'],
    [{ temperature: 0.9, topK: 8, minP: 0.02, seed: 3, penalties: penalties(160, 2, 1, 1) }, 'penalised'],
    [{ temperature: 1.5, topK: 200, seed: 4 }, 'candidates'],
    [{ temperature: 1, topK: 160, topP: 0.95, seed: 5, logitBias: [[7, -Infinity], [11, 3], [12, -2]] }, 'candidates'],
    [{ temperature: 1, topK: 300, seed: 13, penalties: penalties(64, 1.4, 0.2), logitBias: [[11, 3]] }, 'both'],
    [{ temperature: 0, penalties: penalties(160, 1.5) }, 'penalised'],
    // 30 tokens lifted above the rest and pushed below it once said: the bias and the penalties both
    // act on what is chosen, in llama.cpp's order (bias first).
    [{ temperature: 0, penalties: penalties(160, 1, 0, 10), logitBias: lifted }, 'penalised'],
    [{ temperature: 0.8, topK: 4, seed: 8, penalties: penalties(160, 1, 0, 10), logitBias: lifted }, 'penalised'],
    // A negative presence penalty raises logits: the runner applies it as it is.
    [{ temperature: 0.8, topK: 40, seed: 4, penalties: penalties(64, 1, 0, -0.5) }, 'penalised'],
    // A window larger than the generation, and one smaller than it (tokens leave the window).
    [{ temperature: 0.8, topK: 40, seed: 6, penalties: penalties(500, 1.2) }, 'penalised'],
    [{ temperature: 0.9, topK: 40, seed: 14, penalties: penalties(8, 3) }, 'penalised'],
  ];
  for (const [sampling, way] of chains) {
    const before = { candidates: fast.stats.candidateTokens, penalised: fast.stats.penalisedTokens };
    const fastTokens = await sample(fast, sampling, prompt);
    const reference = await sample(plain, sampling, prompt);
    assert.equal(fastTokens.length, 160);
    assert.deepEqual(fastTokens, reference, `chain ${JSON.stringify(sampling)}`);
    assert.equal(fast.stats.candidateTokens - before.candidates, way === 'penalised' ? 0 : 160, `candidates: ${JSON.stringify(sampling)}`);
    assert.equal(fast.stats.penalisedTokens - before.penalised, way === 'penalised' ? 160 : 0, `penalised: ${JSON.stringify(sampling)}`);
    if (sampling.penalties) {
      // The penalties do change what is chosen (so the comparison covers them).
      assert.notDeepEqual(reference, await sample(plain, { ...sampling, penalties: undefined }, prompt));
    }
  }
  // The seed is not ignored: another one samples otherwise.
  assert.notDeepEqual(await sample(fast, { ...chains[4]![0], seed: 99 }, prompt), await sample(fast, chains[4]![0], prompt));
  // Two sequences in one batch, each with its own window.
  assert.deepEqual(await samplePair(fast, chains[0]![0], chains[5]![0], prompt), await samplePair(plain, chains[0]![0], chains[5]![0], prompt));
  assert.deepEqual(await samplePair(fast, chains[0]![0], chains[3]![0], prompt), await samplePair(plain, chains[0]![0], chains[3]![0], prompt));
  assert.equal(plain.stats.candidateTokens + plain.stats.penalisedTokens, 0);
});

test('forced tokens enter the runner\'s penalty window as they enter the chain\'s', async () => {
  const prompt = fast.tokenize('<|im_start|>user\nTell me about the sea.<|im_end|>\n<|im_start|>assistant\n');
  const sampling: SamplingSpec = { temperature: 0.8, topK: 40, seed: 21, penalties: penalties(64, 1, 0, 10) };
  // What the model goes on with after 10 tokens, unforced: forcing exactly those makes them the
  // likely next choices, which a presence penalty of 10 then has to push away in both runners.
  const free = await sample(plain, sampling, prompt);
  const run = (runner: LlamaRunner) => sample(runner, sampling, prompt, 120, (tokens) => (tokens.length === 10 ? { force: free.slice(10, 30) } : undefined));
  const reference = await run(plain);
  assert.deepEqual(await run(fast), reference);
});

test('chains the runner leaves to llama_sampler_sample as written: grammar (with the penalties prefilter), no penalties', async () => {
  const prompt = fast.tokenize('<|im_start|>user\nTell me about the sea.<|im_end|>\n<|im_start|>assistant\n');
  const chains: SamplingSpec[] = [
    { temperature: 0.8, topK: 40, topP: 0.9, seed: 9 },
    { temperature: 0, logitBias: [[7, -Infinity], [11, 3]] },
    { temperature: 0.8, topP: 0.9, seed: 5 },
    // Penalties llama.cpp leaves out of the chain.
    { temperature: 0.8, topK: 40, seed: 10, penalties: penalties(64, 1) },
    { temperature: 0.7, topK: 40, seed: 7, penalties: penalties(64, 1.3), grammar: { text: 'root ::= [a-z ]+' } },
  ];
  const counts = () => fast.stats.candidateTokens + fast.stats.penalisedTokens + fast.stats.backendTokens;
  const before = { fast: counts(), prefiltered: fast.stats.prefilteredChains };
  for (const sampling of chains) assert.deepEqual(await sample(fast, sampling, prompt), await sample(plain, sampling, prompt), `chain ${JSON.stringify(sampling)}`);
  assert.equal(counts(), before.fast);
  assert.equal(fast.stats.prefilteredChains - before.prefiltered, 1);
  assert.equal(plain.stats.prefilteredChains, 0);
});

test('plain greedy is chosen inside the decode, alone and batched with host-sampled sequences on the same slots, as the host argmax chooses', async () => {
  const prompt = fast.tokenize('<|im_start|>user\nTell me about the sea.<|im_end|>\n<|im_start|>assistant\n');
  const greedy: SamplingSpec = { temperature: 0 };
  const sampled: SamplingSpec = { temperature: 0.8, topK: 40, seed: 31 };
  const before = fast.stats.backendTokens;
  const reference = await sample(plain, greedy, prompt);
  assert.deepEqual(await sample(fast, greedy, prompt), reference);
  assert.equal(fast.stats.backendTokens - before, 160);
  // The same slots then serve host-sampled requests (the greedy chain must be detached, or llama.cpp
  // would not copy their logits out), greedy beside sampled in one batch, and greedy again.
  for (let round = 0; round < 2; round++) {
    assert.deepEqual(await samplePair(fast, greedy, sampled, prompt), await samplePair(plain, greedy, sampled, prompt), `round ${round}`);
    assert.deepEqual(await samplePair(fast, sampled, greedy, prompt), await samplePair(plain, sampled, greedy, prompt), `round ${round}, swapped`);
  }
  assert.equal(fast.stats.backendTokens - before, 160 * 5);
  assert.equal(plain.stats.backendTokens, 0);
  // Greedy asking for logprobs needs the logits on the host: chosen there, with the same logprobs.
  const withLogprobs = async (runner: LlamaRunner) => {
    const seen: string[] = [];
    await runner.generate({ prompt, sampling: greedy, maxTokens: 20, cachePrompt: false, topLogprobs: 2, onToken: (event) => void seen.push(JSON.stringify([event.token, event.logprobs])) }).done;
    return seen;
  };
  assert.deepEqual(await withLogprobs(fast), await withLogprobs(plain));
  assert.equal(fast.stats.backendTokens - before, 160 * 5);
});

test('plain greedy through the runner\'s argmax chooses as llama_sampler_sample does, beside sampled sequences; greedy with a bias or penalties (written into the logits first) as the chain does', async () => {
  const prompt = standard.tokenize('<|im_start|>user\nTell me about the sea.<|im_end|>\n<|im_start|>assistant\n');
  const greedy: SamplingSpec = { temperature: 0 };
  const sampled: SamplingSpec = { temperature: 0.8, topK: 40, seed: 31 };
  const before = standard.stats.argmaxTokens;
  assert.deepEqual(await sample(standard, greedy, prompt), await sample(plain, greedy, prompt));
  assert.equal(standard.stats.argmaxTokens - before, 160);
  assert.deepEqual(await samplePair(standard, greedy, sampled, prompt), await samplePair(plain, greedy, sampled, prompt));
  assert.deepEqual(await samplePair(standard, sampled, greedy, prompt), await samplePair(plain, sampled, greedy, prompt));
  assert.equal(standard.stats.argmaxTokens - before, 160 * 3);
  for (const other of [{ temperature: 0, logitBias: [[7, -Infinity], [11, 3]] }, { temperature: 0, penalties: penalties(64, 1.3) }] as SamplingSpec[]) {
    assert.deepEqual(await sample(standard, other, prompt), await sample(plain, other, prompt), JSON.stringify(other));
  }
  assert.equal(standard.stats.argmaxTokens - before, 160 * 3);
  assert.equal(plain.stats.argmaxTokens, 0);
});

test('a two-thread pool whose workers sleep between decodes (poll 0, llama-server --poll 0) decodes what the spinning default does', async () => {
  const lib = await openLlamaLibrary();
  const path = join(dir, 'random.gguf');
  const spinning = LlamaRunner.load(lib, path, { contextSize: 512, sequences: 2, threads: 2 });
  const sleeping = LlamaRunner.load(lib, path, { contextSize: 512, sequences: 2, threads: 2, poll: 0 });
  try {
    const prompt = spinning.tokenize('<|im_start|>user\nTell me about the sea.<|im_end|>\n<|im_start|>assistant\n');
    // Two-thread decodes stall on a busy 2-core box (spinning barriers): few tokens.
    const reference = await sample(spinning, { temperature: 0 }, prompt, 32);
    assert.equal(reference.length, 32);
    assert.deepEqual(await sample(sleeping, { temperature: 0 }, prompt, 32), reference);
    // The level reaches the pool: after its last decode the default's worker keeps spinning (ggml polls
    // through 1024 × 128 × 50 pause instructions), poll 0's sleeps at once: process CPU over an idle window.
    const idleCpuMs = async (runner: LlamaRunner) => {
      await sample(runner, { temperature: 0 }, prompt, 4);
      const before = process.cpuUsage();
      await new Promise((resolve) => setTimeout(resolve, 100));
      const used = process.cpuUsage(before);
      return (used.user + used.system) / 1000;
    };
    // poll 0's first, a second after the spinning pool's last decode (the reference above): that pool's
    // worker spins for ~0.1–0.3 s after each graph on an idle core (longer than the window below), and its
    // CPU would count in poll 0's window (it did on a quiet box: 101.9 vs 100.3 ms).
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const slept = await idleCpuMs(sleeping);
    const spun = await idleCpuMs(spinning);
    assert.ok(slept < 10 && spun > slept + 5, `idle CPU after the last decode: poll 50 ${spun.toFixed(1)} ms, poll 0 ${slept.toFixed(1)} ms`);
  } finally {
    await spinning.dispose();
    await sleeping.dispose();
  }
});

test('flashAttention on / off reaches the context llama.cpp creates (its own log line says which), and both decode', async () => {
  const lib = await openLlamaLibrary();
  const path = join(dir, 'random.gguf');
  const lines: string[] = [];
  const remove = setFfiLogSink((_level, text) => lines.push(text));
  const load = (flashAttention: 'on' | 'off') => {
    lines.length = 0;
    const runner = LlamaRunner.load(lib, path, { contextSize: 512, sequences: 1, threads: 1, flashAttention });
    return { runner, said: lines.filter((line) => /flash_attn\s*=/.test(line)).join(' | ') };
  };
  const off = load('off');
  const on = load('on');
  remove();
  try {
    assert.match(off.said, /flash_attn\s*=\s*disabled/, `llama.cpp said: ${off.said}`);
    assert.match(on.said, /flash_attn\s*=\s*enabled/, `llama.cpp said: ${on.said}`);
    const prompt = off.runner.tokenize('<|im_start|>user\nTell me about the sea.<|im_end|>\n<|im_start|>assistant\n');
    assert.equal((await sample(off.runner, { temperature: 0 }, prompt, 16)).length, 16);
    assert.equal((await sample(on.runner, { temperature: 0 }, prompt, 16)).length, 16);
  } finally {
    await off.runner.dispose();
    await on.runner.dispose();
  }
});
