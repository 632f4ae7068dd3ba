// What batching can gain on this machine at all: raw ONNX Runtime (no Infera code) on the bge-small-shaped
// bench encoder, rows per second at batch sizes 1…64 for rows of a given length; then the onnx engine's
// doEmbed on a 32-row batch against the raw session on the same batch (the engine's own cost per pass).
// The ceiling for "batched / one-at-a-time" in bench/embeddings.ts. Not a test.
//
// Usage: node --import tsx bench/onnx-encoder-batching.ts [--tokens 21] [--threads 2] [--batches 1,4,8,16,32,64]
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { onnxModelSchema } from '../src/engines/onnx/config.ts';
import { loadOnnxEmbeddingModel } from '../src/engines/onnx/embedding.ts';
import { ensureBenchOnnxBert } from './bench-onnx-bert.ts';

const { values } = parseArgs({
  options: {
    tokens: { type: 'string', default: '21' },
    threads: { type: 'string', default: '2' },
    batches: { type: 'string', default: '1,4,8,16,32,64' },
    rounds: { type: 'string', default: '5' },
  },
});
const tokens = Number(values.tokens);
const threads = Number(values.threads);
const rounds = Number(values.rounds);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const dir = await ensureBenchOnnxBert('embed');
const session = await ort.InferenceSession.create(join(dir, 'model.onnx'), {
  intraOpNumThreads: threads,
  interOpNumThreads: 1,
  executionMode: 'sequential',
  graphOptimizationLevel: 'all',
});
// [CLS] + words + [SEP]: ids 5… are ordinary vocabulary entries.
const row = [2, ...Array.from({ length: tokens - 2 }, (_, i) => 5 + ((i * 7919) % 500)), 3];
const feeds = (rows: number) => {
  const n = rows * tokens;
  return {
    input_ids: new ort.Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt(row[i % tokens]!)), [rows, tokens]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(n).fill(1n), [rows, tokens]),
    token_type_ids: new ort.Tensor('int64', new BigInt64Array(n), [rows, tokens]),
  };
};
/** Milliseconds per call of `run`, median of `rounds` rounds of enough calls for ~0.5 s each. */
async function time(run: () => Promise<unknown>, calls: number): Promise<number> {
  await run();
  const perRound: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const started = performance.now();
    for (let i = 0; i < calls; i++) await run();
    perRound.push((performance.now() - started) / calls);
  }
  return median(perRound);
}

console.log(`raw onnxruntime-node, 384x12 encoder, ${tokens}-token rows, ${threads} intra-op threads, median of ${rounds} rounds`);
let single = 0;
for (const batch of values.batches!.split(',').map(Number)) {
  const input = feeds(batch);
  const ms = await time(() => session.run(input), Math.max(2, Math.round(64 / batch)));
  const rate = (batch * 1000) / ms;
  if (batch === 1) single = rate;
  console.log(`batch ${String(batch).padStart(3)}: ${ms.toFixed(1).padStart(7)} ms/pass  ${rate.toFixed(1).padStart(7)} rows/s${single ? `  ${(rate / single).toFixed(2)}× batch 1` : ''}`);
}

const model = (await loadOnnxEmbeddingModel(onnxModelSchema.parse({ id: 'bench/onnx', type: 'embedding', engine: 'onnx', path: dir, onnx: { threads } }))).model;
const signal = new AbortController().signal;
const inputs = Array.from({ length: 32 }, () => ({ tokens: row.slice(1, -1) }));
const raw32 = feeds(32);
const engine = await time(() => model.doEmbed({ inputs, signal }), 8);
const raw = await time(() => session.run(raw32), 8);
console.log(`32 rows: engine doEmbed ${engine.toFixed(1)} ms vs raw session.run ${raw.toFixed(1)} ms (+${(engine - raw).toFixed(1)} ms per pass)`);
process.exit(0);
