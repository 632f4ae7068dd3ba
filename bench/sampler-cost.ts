// What sampling costs per token on the FFI runner over a real-size vocabulary (chat-512x8-vocab152k,
// Qwen's 151,936 tokens), per sampler chain: the runner's time choosing tokens (on the decode thread,
// after each llama_decode) over the sampled tokens. Runs each chain on a runner with fast sampling
// (argmax, top candidates: the default) and one running llama.cpp's chain as written
// (llama_sampler_sample), alternating. Not a test: prints figures.
//
// Usage: node --import tsx bench/sampler-cost.ts [--model chat-512x8-vocab152k] [--tokens 128] [--rounds 3] [--threads 1]
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { openLlamaLibrary } from '../src/engines/llama-cpp/ffi/library.ts';
import { LlamaRunner, type SamplingSpec } from '../src/engines/llama-cpp/ffi/runner.ts';
import { ensureBenchModel, type BenchModelKind } from '../src/tiny-models/index.ts';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'chat-512x8-vocab152k' },
    tokens: { type: 'string', default: '128' },
    rounds: { type: 'string', default: '3' },
    threads: { type: 'string', default: '1' },
  },
});
const path = await ensureBenchModel(values.model as BenchModelKind, join(tmpdir(), 'infera-bench-models'));
const lib = await openLlamaLibrary();
const options = { contextSize: 1024, sequences: 1, threads: Number(values.threads), decodeOn: 'loop' as const };
const runners = { fast: LlamaRunner.load(lib, path, options), plain: LlamaRunner.load(lib, path, { ...options, fastSampling: false }) };
const tokens = Number(values.tokens);
const penalties = { lastN: 256, repeat: 1.1, frequency: 0, presence: 0 };
const chains: Record<string, SamplingSpec> = {
  greedy: { temperature: 0 },
  'greedy, 3 banned tokens': { temperature: 0, logitBias: [[1, -Infinity], [2, -Infinity], [3, -Infinity]] },
  'temperature 0.7 (whole vocabulary)': { temperature: 0.7, seed: 1 },
  'top_k 40, top_p 0.9, temperature 0.7': { temperature: 0.7, topK: 40, topP: 0.9, seed: 1 },
  '… + repetition penalty 1.1 over 256 (the bench chain)': { temperature: 0.7, topK: 40, topP: 0.9, seed: 1, penalties },
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
let promptNumber = 0;

async function sampleUs(runner: LlamaRunner, sampling: SamplingSpec): Promise<number> {
  const before = { ms: runner.stats.chooseMs, tokens: runner.stats.tokens };
  await runner.generate({
    prompt: runner.tokenize(`<|im_start|>user\n(${++promptNumber}) Write a long story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n`),
    sampling,
    maxTokens: tokens,
    cachePrompt: false,
    onToken: () => undefined,
  }).done;
  return ((runner.stats.chooseMs - before.ms) * 1000) / (runner.stats.tokens - before.tokens);
}

const rows: Record<string, unknown>[] = [];
for (const [name, sampling] of Object.entries(chains)) {
  const figures: Record<string, number[]> = { fast: [], plain: [] };
  for (const runner of Object.values(runners)) await sampleUs(runner, sampling); // warm-up
  for (let round = 0; round < Number(values.rounds); round++)
    for (const [label, runner] of Object.entries(runners)) figures[label]!.push(await sampleUs(runner, sampling));
  const row = { chain: name, 'µs/token (fast)': Math.round(median(figures.fast!)), 'µs/token (plain chain)': Math.round(median(figures.plain!)) };
  rows.push(row);
  console.log(JSON.stringify(row));
}
console.table(rows);
for (const runner of Object.values(runners)) await runner.dispose();
