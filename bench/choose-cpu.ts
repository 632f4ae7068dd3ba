// CPU time per token choice of the FFI runner over a real-size vocabulary (chat-512x8-vocab152k, 152k
// tokens): the same logits (one decode's) chosen from again and again by each chain, with fast sampling
// (penalties and bias written into the logits by the runner, a large top_k over its candidates) and
// with llama.cpp's chain as written (llama_sampler_sample),
// alternating. CPU time of this process (1 decode thread, idle while choosing) rather than wall time:
// on a shared box it is the steadier figure. Reaches into the runner's private choose(). Not a test.
//
// Usage: node --import tsx bench/choose-cpu.ts [--rounds 3] [--calls 300] [--model chat-512x8-vocab152k | chat-512x8]
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { openLlamaLibrary } from '../src/engines/llama-cpp/ffi/library.ts';
import { LlamaRunner, type SamplingSpec } from '../src/engines/llama-cpp/ffi/runner.ts';
import { type BenchModelKind, ensureBenchModel } from '../src/tiny-models/index.ts';

const { values } = parseArgs({
  options: { rounds: { type: 'string', default: '3' }, calls: { type: 'string', default: '300' }, model: { type: 'string', default: 'chat-512x8-vocab152k' } },
});
const path = await ensureBenchModel(values.model as BenchModelKind, join(tmpdir(), 'infera-bench-models'));
const lib = await openLlamaLibrary();
const options = { contextSize: 256, sequences: 1, threads: 1, decodeOn: 'loop' as const };
const runners = { fast: LlamaRunner.load(lib, path, options), plain: LlamaRunner.load(lib, path, { ...options, fastSampling: false }) };
const penalties = { lastN: 256, repeat: 1.1, frequency: 0, presence: 0 };
const chains: Record<string, SamplingSpec> = {
  greedy: { temperature: 0 },
  'greedy + repetition penalty 1.1 over 256': { temperature: 0, penalties },
  'top_k 40, top_p 0.9, temperature 0.7': { temperature: 0.7, topK: 40, topP: 0.9, seed: 1 },
  '… + repetition penalty (the bench chain)': { temperature: 0.7, topK: 40, topP: 0.9, seed: 1, penalties },
};
interface Private {
  createSampler(sampling: SamplingSpec): { chain: unknown; penalties?: { accept(token: number): void } };
  choose(sampler: unknown, index: number): number;
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const calls = Number(values.calls);
const rows: Record<string, unknown>[] = [];
for (const [name, sampling] of Object.entries(chains)) {
  const figures: Record<string, number[]> = { fast: [], plain: [] };
  for (let round = 0; round < Number(values.rounds); round++)
    for (const [label, runner] of Object.entries(runners)) {
      await runner.generate({ prompt: runner.tokenize('hello there'), sampling: { temperature: 0 }, maxTokens: 1, cachePrompt: false, onToken: () => undefined }).done;
      const inner = runner as unknown as Private;
      const sampler = inner.createSampler(sampling);
      // A full penalty window of distinct tokens, as after 256 tokens of real text (the choices below
      // would otherwise fill it with a few tokens chosen again and again).
      // (From token 1000 on the 152k vocabulary; on a small one, from token 1.)
      const first = runner.vocabSize > 1256 ? 1000 : 1;
      for (let token = first; token < Math.min(first + 256, runner.vocabSize); token++) {
        lib.api.llama_sampler_accept(sampler.chain, token);
        sampler.penalties?.accept(token);
      }
      const cpu = process.cpuUsage();
      for (let i = 0; i < calls; i++) inner.choose(sampler, -1);
      const used = process.cpuUsage(cpu);
      figures[label]!.push((used.user + used.system) / calls);
      lib.api.llama_sampler_free(sampler.chain);
    }
  const row = { chain: name, 'CPU µs/choice (fast)': Math.round(median(figures.fast!)), 'CPU µs/choice (chain as written)': Math.round(median(figures.plain!)) };
  rows.push(row);
  console.log(JSON.stringify(row));
}
console.table(rows);
for (const runner of Object.values(runners)) await runner.dispose();
process.exit(0);
