// The decode's CPU per input by batch shape, in process: the same fixed inputs decoded in batches of k
// (LlamaEncoder `sequences` = k; all inputs queued at once, so every decode but the last holds k), each
// shape its own encoder, the shapes taking turns round by round, on the calling thread (decodeOn 'loop':
// no worker hop), 1 thread by default so that no barrier or polling worker enters the figure. Prints the
// median over rounds of the process's CPU per input and per token for each shape: the compute floor of
// one embedding at each batch composition, and what llama-server's shapes (1 input alone, 8 slots of
// ~22 tokens) cost with the same kernels. Linux, not a test.
//
//   node --import tsx bench/encoder-shapes.ts [--threads 1] [--inputs vs] [--count 48] [--rounds 7]
//        [--shapes '[{"name":"1 plain","sequences":1},{"name":"8 flash","sequences":8,"plainAttentionForSmallBatches":false}]']
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type EncoderOptions, LlamaEncoder } from '../src/engines/llama-cpp/ffi/encoder.ts';
import { openLlamaLibrary } from '../src/engines/llama-cpp/ffi/library.ts';
import { ensureBenchModel } from '../src/tiny-models/index.ts';
import { type EmbedInputs, sentences } from './embed-inputs.ts';

const { values } = parseArgs({
  options: {
    threads: { type: 'string', default: '1' },
    inputs: { type: 'string', default: 'vs' },
    words: { type: 'string', default: '12' },
    /** Inputs per round (the same ones every round and shape). */
    count: { type: 'string', default: '48' },
    rounds: { type: 'string', default: '7' },
    shapes: { type: 'string' },
    'cpu-backend': { type: 'string', default: 'auto' },
  },
});
const threads = Number(values.threads);
const count = Number(values.count);
const rounds = Number(values.rounds);
/** `lone`: the inputs go one after another (each awaited), as one client's requests do, whatever `sequences` allows. */
type Shape = { name: string; lone?: boolean } & Partial<EncoderOptions>;
const shapes: Shape[] = values.shapes
  ? JSON.parse(values.shapes)
  : [1, 2, 4, 8, 16, 32].map((k) => ({ name: `${k} per decode`, sequences: k }));

const path = await ensureBenchModel('bert-384x12-embed', join(tmpdir(), 'infera-bench-models'));
const lib = await openLlamaLibrary({ cpuBackend: values['cpu-backend'] as 'auto' });
const encoders = shapes.map(({ name: _, lone: __, ...options }) =>
  LlamaEncoder.load(lib, path, { contextSize: 512, sequences: 32, threads, pooling: 'model', decodeOn: 'loop', splitLargeBatches: false, ...options }),
);
/** Every input through `encoder`: all queued at once (packed `sequences` per decode), or one after another. */
async function encodeAll(encoder: LlamaEncoder, lone: boolean | undefined): Promise<void> {
  if (lone) for (const input of inputs) await encoder.encode(input);
  else await Promise.all(inputs.map((input) => encoder.encode(input)));
}
const sentence = sentences(values.inputs as EmbedInputs, Number(values.words));
const inputs = Array.from({ length: count }, () => encoders[0]!.framed(encoders[0]!.tokenize(sentence())));
const tokens = inputs.reduce((sum, input) => sum + input.length, 0);
const cpuUs = () => {
  const usage = process.cpuUsage();
  return usage.user + usage.system;
};
// Warm-up: each shape once.
for (const [s, encoder] of encoders.entries()) await encodeAll(encoder, shapes[s]!.lone);
const perInput = shapes.map(() => [] as number[]);
const decodes = shapes.map(() => 0);
for (let round = 0; round < rounds; round++)
  for (let i = 0; i < encoders.length; i++) {
    const s = (i + round) % encoders.length;
    const encoder = encoders[s]!;
    const d0 = encoder.stats.decodes;
    const c0 = cpuUs();
    await encodeAll(encoder, shapes[s]!.lone);
    perInput[s]!.push((cpuUs() - c0) / 1000 / count);
    decodes[s] = encoder.stats.decodes - d0;
  }
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
console.log(
  `encoder-shapes: ${new Date().toISOString()}, ${threads} thread(s), ${lib.cpuBackend.kind} CPU backend, ${count} inputs of ${(tokens / count).toFixed(1)} tokens (${values.inputs}), ${rounds} rounds; load ${readFileSync('/proc/loadavg', 'utf8').split(' ')[0]}`,
);
for (const [s, shape] of shapes.entries()) {
  const xs = perInput[s]!;
  const m = median(xs);
  console.log(
    `  ${shape.name.padEnd(30)} ${decodes[s]} decodes/round (${(tokens / decodes[s]!).toFixed(0)} tokens each): CPU ${m.toFixed(2)} ms per input (min ${Math.min(...xs).toFixed(2)}, max ${Math.max(...xs).toFixed(2)}), ${((m * 1000 * count) / tokens).toFixed(0)} µs per token`,
  );
}
for (const encoder of encoders) await encoder.dispose();
