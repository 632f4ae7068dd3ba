// The FFI runner's fast sampling must choose exactly what llama.cpp's sampler chain as written chooses
// (llama_sampler_sample over the whole vocabulary): chains with top_k (and greedy behind penalties)
// over only the candidates top_k can keep, with the logit bias applied by the runner, and penalties
// behind a top_k(k + lastN) prefilter in grammar chains. A random-weight
// model with a 4,096-token vocabulary, seeded sampling: the two runners must agree token for token.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GgmlType } from '../../../tiny-models/gguf-writer.ts';
import { encodeRandomChatModel } from '../../../tiny-models/random-chat.ts';
import { openLlamaLibrary } from './library.ts';
import { LlamaRunner, type SamplingSpec } from './runner.ts';

let dir: string;
let fast: LlamaRunner;
let plain: LlamaRunner;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'infera-ffi-sampling-'));
  const path = join(dir, 'random.gguf');
  writeFileSync(
    path,
    encodeRandomChatModel({ hidden: 64, layers: 2, heads: 4, headsKv: 2, feedForward: 128, seed: 23, matrixType: GgmlType.F32, endBias: 100, vocabSize: 4096 }),
  );
  const lib = await openLlamaLibrary();
  const options = { contextSize: 512, sequences: 2, threads: 1 };
  fast = LlamaRunner.load(lib, path, options);
  plain = LlamaRunner.load(lib, path, { ...options, fastSampling: false });
});

after(async () => {
  await fast?.dispose();
  await plain?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

async function sample(runner: LlamaRunner, sampling: SamplingSpec, prompt: number[]): Promise<number[]> {
  const tokens: number[] = [];
  await runner.generate({
    prompt,
    sampling,
    maxTokens: 160,
    cachePrompt: false,
    onToken: (event) => {
      tokens.push(event.token);
      return undefined;
    },
  }).done;
  return tokens;
}

const penalties = (lastN: number, repeat: number, frequency = 0, presence = 0) => ({ lastN, repeat, frequency, presence });

/** Two generations in one batch per step (both runners alike, so the logits are the same). */
async function samplePair(runner: LlamaRunner, a: SamplingSpec, b: SamplingSpec, prompt: number[]): Promise<number[][]> {
  return Promise.all([sample(runner, a, prompt), sample(runner, b, [...prompt, prompt[0]!])]);
}

test('top_k chains and greedy behind penalties: the top candidates through the chain choose what the whole vocabulary does', async () => {
  const prompt = fast.tokenize('<|im_start|>user\nTell me about the sea.<|im_end|>\n<|im_start|>assistant\n');
  const lifted = [...Array(4096).keys()].filter((token) => token >= 100 && !fast.isEog(token)).slice(0, 30).map((token) => [token, 5] as [number, number]);
  const chains: SamplingSpec[] = [
    // (More than 128 candidates each: fewer go through llama.cpp's chain, whose partial sort is faster.)
    { temperature: 0.7, topK: 40, topP: 0.9, seed: 1, penalties: penalties(128, 1.3) },
    { temperature: 1.2, topK: 20, seed: 2, penalties: penalties(128, 1.1, 0.5, 0.4) },
    { temperature: 0.9, topK: 8, minP: 0.02, seed: 3, penalties: penalties(160, 2, 1, 1) },
    { temperature: 1.5, topK: 200, seed: 4 },
    { temperature: 1, topK: 160, topP: 0.95, seed: 5, logitBias: [[7, -Infinity], [11, 3], [12, -2]] },
    { temperature: 0, penalties: penalties(160, 1.5) },
    // 30 tokens lifted above the rest and pushed below it once said: after a few of them, what is
    // chosen ranks below the top k + (a few) of the raw logits, but within the top k + lastN.
    { temperature: 0, penalties: penalties(160, 1, 0, 10), logitBias: lifted },
    { temperature: 0.8, topK: 4, seed: 8, penalties: penalties(160, 1, 0, 10), logitBias: lifted },
  ];
  const before = fast.stats.candidateTokens;
  for (const sampling of chains) {
    const fastTokens = await sample(fast, sampling, prompt);
    const reference = await sample(plain, sampling, prompt);
    assert.equal(fastTokens.length, 160);
    assert.deepEqual(fastTokens, reference, `chain ${JSON.stringify(sampling)}`);
    if (sampling.penalties) {
      // The penalties do change what is chosen (so the comparison covers them).
      assert.notDeepEqual(reference, await sample(plain, { ...sampling, penalties: undefined }, prompt));
    }
  }
  // The seed is not ignored: another one samples otherwise.
  assert.notDeepEqual(await sample(fast, { ...chains[3]!, seed: 99 }, prompt), await sample(fast, chains[3]!, prompt));
  assert.deepEqual(await samplePair(fast, chains[0]!, chains[4]!, prompt), await samplePair(plain, chains[0]!, chains[4]!, prompt));
  assert.equal(fast.stats.candidateTokens - before, 160 * (chains.length + 2 + 2));
  assert.equal(plain.stats.candidateTokens, 0);
});

test('chains the candidates do not take run through llama_sampler_sample: grammar, few candidates (both with the penalties prefilter), penalties that raise, no top_k, plain greedy', async () => {
  const prompt = fast.tokenize('<|im_start|>user\nTell me about the sea.<|im_end|>\n<|im_start|>assistant\n');
  const chains: SamplingSpec[] = [
    { temperature: 0.8, topK: 40, topP: 0.9, seed: 9 },
    { temperature: 0.8, topK: 40, seed: 10, penalties: penalties(64, 1.3) },
    { temperature: 0 },
    { temperature: 0, logitBias: [[7, -Infinity], [11, 3]] },
    // A negative presence penalty raises logits: a token below the top k + lastN could rise into the top k.
    { temperature: 0.8, topK: 40, seed: 4, penalties: penalties(64, 1, 0, -0.5) },
    { temperature: 0.8, topP: 0.9, seed: 5 },
    // (40 + 500) × 8 exceeds the 4,096 tokens.
    { temperature: 0.8, topK: 40, seed: 6, penalties: penalties(500, 1.2) },
    { temperature: 0.7, topK: 40, seed: 7, penalties: penalties(64, 1.3), grammar: { text: 'root ::= [a-z ]+' } },
  ];
  const counts = () => fast.stats.candidateTokens;
  const before = { fast: counts(), prefiltered: fast.stats.prefilteredChains };
  for (const sampling of chains) assert.deepEqual(await sample(fast, sampling, prompt), await sample(plain, sampling, prompt), `chain ${JSON.stringify(sampling)}`);
  assert.equal(counts(), before.fast);
  assert.equal(fast.stats.prefilteredChains - before.prefiltered, 2);
  assert.equal(plain.stats.prefilteredChains, 0);
});
