// llama.cpp's backend sampling (RunnerOptions.backendSampling): plain greedy chosen inside the decode
// graph must give the text llama_sampler_sample gives, alone, with several sequences per decode, next to
// sequences that still sample on the CPU from raw logits in the same batch, and across a slot switching
// between the two (llama_set_sampler attaches and detaches). Random-weight models with a 4,096-token
// and a 151,936-token (Qwen-size) vocabulary.
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
const runners: { vocab: number; backend: LlamaRunner; cpu: LlamaRunner }[] = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'infera-ffi-backend-sampling-'));
  const lib = await openLlamaLibrary();
  for (const vocabSize of [4096, 151936]) {
    const path = join(dir, `random-${vocabSize}.gguf`);
    writeFileSync(
      path,
      encodeRandomChatModel({ hidden: 32, layers: 2, heads: 4, headsKv: 2, feedForward: 64, seed: 31, matrixType: GgmlType.F32, endBias: 100, vocabSize }),
    );
    const options = { contextSize: 256, sequences: 3, threads: 2 };
    runners.push({ vocab: vocabSize, backend: LlamaRunner.load(lib, path, { ...options, backendSampling: true }), cpu: LlamaRunner.load(lib, path, options) });
  }
});

after(async () => {
  for (const { backend, cpu } of runners) {
    await backend.dispose();
    await cpu.dispose();
  }
  rmSync(dir, { recursive: true, force: true });
});

async function sample(runner: LlamaRunner, sampling: SamplingSpec, prompt: number[], topLogprobs?: number): Promise<number[]> {
  const tokens: number[] = [];
  await runner.generate({
    prompt,
    sampling,
    maxTokens: 48,
    cachePrompt: false,
    ...(topLogprobs === undefined ? {} : { topLogprobs }),
    onToken: (event) => {
      tokens.push(event.token);
      return undefined;
    },
  }).done;
  return tokens;
}

const greedy: SamplingSpec = { temperature: 0 };
const sampled: SamplingSpec = { temperature: 0.8, topK: 40, topP: 0.9, seed: 3 };

test('greedy chosen in the decode graph gives the text llama_sampler_sample gives', async () => {
  for (const { vocab, backend, cpu } of runners) {
    const prompts = ['Tell me about the sea.', 'Write a poem.', 'Why is the sky blue?'].map((text) =>
      backend.tokenize(`<|im_start|>user\n${text}<|im_end|>\n<|im_start|>assistant\n`),
    );
    const before = { ...backend.stats };
    // One stream, then three in one decode per step.
    assert.deepEqual(await sample(backend, greedy, prompts[0]!), await sample(cpu, greedy, prompts[0]!), `vocabulary ${vocab}, one stream`);
    const all = async (runner: LlamaRunner) => Promise.all(prompts.map((prompt) => sample(runner, greedy, prompt)));
    const [backendTexts, cpuTexts] = [await all(backend), await all(cpu)];
    assert.deepEqual(backendTexts, cpuTexts, `vocabulary ${vocab}, three streams`);
    assert.ok(new Set(cpuTexts.map((tokens) => tokens.join())).size > 1, 'different prompts, different texts');
    // Sampled and logprobs sequences next to greedy ones in the same decodes: those keep the CPU path,
    // on raw logits llama.cpp copies only because they have no backend sampler.
    const mixed = async (runner: LlamaRunner) =>
      Promise.all([sample(runner, greedy, prompts[0]!), sample(runner, sampled, prompts[1]!), sample(runner, greedy, prompts[2]!, 2)]);
    assert.deepEqual(await mixed(backend), await mixed(cpu), `vocabulary ${vocab}, mixed`);
    // Greedy again on slots that were just detached for the CPU chains.
    assert.deepEqual(await all(backend), cpuTexts, `vocabulary ${vocab}, after the mixed batch`);
    assert.equal(backend.stats.backendTokens - before.backendTokens, 48 * (1 + 3 + 1 + 3), 'the greedy tokens came from the decode graph');
    assert.ok(backend.stats.samplerSwitches - before.samplerSwitches >= 3, 'slots attached and detached');
    assert.equal(cpu.stats.backendTokens, 0);
  }
});
