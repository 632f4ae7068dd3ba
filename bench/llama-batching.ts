// How much llama.cpp (as node-llama-cpp 3.21.1 ships it) gains from batching on this machine, with no
// chat, sampling or JavaScript per token in the way: k tokens decoded in one call, taken from ONE
// sequence (a prompt-style batch) or from k sequences (what k concurrent chat streams need). The
// k-sequence figure over the 1-token figure is the ceiling for "N streams / 1 stream" in any server
// built on this library. Not a test: prints figures for docs/BENCHMARKS.md.
//
// Usage: node --import tsx bench/llama-batching.ts [--model chat-512x8|chat-1024x16] [--weights q8_0|f16|f32] [--threads 1]
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { LlamaContextSequence } from 'node-llama-cpp';
import { createLlama } from '../src/engines/llama-cpp/runtime.ts';
import { ensureBenchModel, type BenchModelKind, type BenchWeights } from '../src/tiny-models/index.ts';

const { values } = parseArgs({
  options: {
    threads: { type: 'string', default: '1' },
    model: { type: 'string', default: 'chat-512x8' },
    weights: { type: 'string', default: 'q8_0' },
    rounds: { type: 'string', default: '3' },
  },
});
const path = await ensureBenchModel(values.model as BenchModelKind, join(tmpdir(), 'infera-bench-models'), values.weights as BenchWeights);
const llama = await createLlama(false);
const model = await llama.loadModel({ modelPath: path });
const context = await model.createContext({ contextSize: 1024, sequences: 8, threads: Number(values.threads) });
const text = model.tokenize('Write a long story about a lighthouse keeper and the sea. '.repeat(200));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
// llama.cpp merges only consecutive increasing sequence ids into one micro-batch (see
// src/engines/llama-cpp/chat-batching.ts); ids are reused in any order, so sort them (internal field).
const byId = (a: LlamaContextSequence, b: LlamaContextSequence) =>
  (a as unknown as { _sequenceId: number })._sequenceId - (b as unknown as { _sequenceId: number })._sequenceId;

const steps = 48;
const result: Record<string, number> = {};
for (const k of [1, 2, 4, 8]) {
  for (const mode of ['one sequence', 'k sequences'] as const) {
    const rates: number[] = [];
    for (let round = 0; round < Number(values.rounds); round++) {
      const sequences = Array.from({ length: mode === 'one sequence' ? 1 : k }, () => context.getSequence()).sort(byId);
      await Promise.all(sequences.map((s) => s.evaluateWithoutGeneratingNewTokens(text.slice(0, 40))));
      const started = performance.now();
      for (let i = 0; i < steps; i++) {
        if (mode === 'one sequence') await sequences[0]!.evaluateWithoutGeneratingNewTokens(text.slice(40 + i * k, 40 + (i + 1) * k));
        else await Promise.all(sequences.map((s, j) => s.evaluateWithoutGeneratingNewTokens([text[40 + i + j]!])));
      }
      rates.push((steps * k) / ((performance.now() - started) / 1000));
      for (const s of sequences) await s.dispose();
    }
    result[`${k} tokens, ${mode}`] = Math.round(median(rates));
  }
}
const single = result['1 tokens, one sequence']!;
console.log(JSON.stringify({ model: values.model, weights: values.weights, threads: Number(values.threads), tokensPerSecond: result }, null, 2));
console.log(
  `8 sequences / 1 token: ${(result['8 tokens, k sequences']! / single).toFixed(2)}x; ` +
    `8 tokens of one sequence / 1 token: ${(result['8 tokens, one sequence']! / single).toFixed(2)}x`,
);
await context.dispose();
await model.dispose();
process.exit(0);
