// The FFI runner's sampler chain with penalties over a large vocabulary: a top_k(k + lastN) goes in
// front of the penalties sampler (its hash lookup over every candidate is the dearest step of the chain),
// which must leave every sampled token as llama.cpp's chain as written samples it. A random-weight
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
let prefiltered: LlamaRunner;
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
  prefiltered = LlamaRunner.load(lib, path, options);
  plain = LlamaRunner.load(lib, path, { ...options, penaltyPrefilter: false });
});

after(async () => {
  await prefiltered?.dispose();
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

test('penalties behind a top_k(k + lastN) prefilter sample exactly what the plain chain samples', async () => {
  const prompt = prefiltered.tokenize('<|im_start|>user\nTell me about the sea.<|im_end|>\n<|im_start|>assistant\n');
  const chains: SamplingSpec[] = [
    { temperature: 0.7, topK: 40, topP: 0.9, seed: 1, penalties: { lastN: 64, repeat: 1.3, frequency: 0, presence: 0 } },
    { temperature: 1.2, topK: 20, seed: 2, penalties: { lastN: 128, repeat: 1.1, frequency: 0.5, presence: 0.4 } },
    { temperature: 0.9, topK: 8, minP: 0.02, seed: 3, penalties: { lastN: 32, repeat: 2, frequency: 1, presence: 1 } },
  ];
  const before = prefiltered.stats.prefilteredChains;
  for (const sampling of chains) {
    const fast = await sample(prefiltered, sampling, prompt);
    const reference = await sample(plain, sampling, prompt);
    assert.equal(fast.length, 160);
    assert.deepEqual(fast, reference, `chain ${JSON.stringify(sampling)}`);
    // The penalties do change what is sampled (so the comparison covers them), and a sampled token
    // comes back from the window again: the penalised set is not empty.
    const unpenalized = await sample(plain, { ...sampling, penalties: undefined }, prompt);
    assert.notDeepEqual(reference, unpenalized);
    assert.ok(new Set(reference).size < reference.length);
  }
  assert.equal(prefiltered.stats.prefilteredChains - before, chains.length);
  assert.equal(plain.stats.prefilteredChains, 0);
});

test('no prefilter where it would not be exact or would not pay: negative penalties, greedy, small vocabularies', async () => {
  const prompt = prefiltered.tokenize('hello');
  const before = prefiltered.stats.prefilteredChains;
  // A negative presence penalty raises logits: a token below the top k + lastN could rise into the top k.
  await sample(prefiltered, { temperature: 0.8, topK: 40, seed: 4, penalties: { lastN: 64, repeat: 1, frequency: 0, presence: -0.5 } }, prompt);
  await sample(prefiltered, { temperature: 0, penalties: { lastN: 64, repeat: 1.2, frequency: 0, presence: 0 } }, prompt);
  // (40 + 500) × 8 exceeds the 4,096 tokens.
  await sample(prefiltered, { temperature: 0.8, topK: 40, seed: 5, penalties: { lastN: 500, repeat: 1.2, frequency: 0, presence: 0 } }, prompt);
  assert.equal(prefiltered.stats.prefilteredChains, before);
});
