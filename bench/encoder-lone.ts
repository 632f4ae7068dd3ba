// One lone input after another through the llama.cpp encoder, in process, several encoder variants
// loaded side by side and called in turn (variant after variant, encode by encode), so that each sees
// the same moments of a shared box: wall per encode (p10, p50, p90) and the process's CPU per encode, in
// the call and with the gap before it (a polling pool worker spins through the gap). What a 1-client request's decode costs under each
// setting, without the HTTP path around it. Linux only. Not a test.
//
//   node --import tsx bench/encoder-lone.ts [--threads 2] [--encodes 200] [--gap-ms 4] [--batch 1]
//        [--variants '[{"name":"default"},{"name":"flash","plainAttentionForSmallBatches":false},{"name":"loop","decodeOn":"loop"}]']
// A variant is a name and LlamaEncoder.load options (EncoderOptions) over the defaults here.
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { LlamaEncoder, type EncoderOptions } from '../src/engines/llama-cpp/ffi/encoder.ts';
import { openLlamaLibrary } from '../src/engines/llama-cpp/ffi/library.ts';
import { ensureBenchModel } from '../src/tiny-models/index.ts';
import { type EmbedInputs, sentences } from './embed-inputs.ts';

const { values } = parseArgs({
  options: {
    threads: { type: 'string', default: '2' },
    encodes: { type: 'string', default: '200' },
    'gap-ms': { type: 'string', default: '4' },
    /** Inputs queued together per step (1: a lone client). */
    batch: { type: 'string', default: '1' },
    words: { type: 'string', default: '12' },
    /** Whose sentences: 'path' (embed-path's, ~33 tokens) or 'vs' (vs-llama-server's, ~22 tokens): bench/embed-inputs.ts. */
    inputs: { type: 'string', default: 'path' },
    block: { type: 'string', default: '20' },
    variants: { type: 'string' },
    model: { type: 'string', default: 'bert-384x12-embed' },
  },
});
const threads = Number(values.threads);
const encodes = Number(values.encodes);
const gapMs = Number(values['gap-ms']);
const batch = Number(values.batch);
type Variant = { name: string } & Partial<EncoderOptions>;
const variants: Variant[] = values.variants
  ? JSON.parse(values.variants)
  : [{ name: 'default' }, { name: 'flash attention', plainAttentionForSmallBatches: false }, { name: 'decode on loop', decodeOn: 'loop' }];

const path = await ensureBenchModel(values.model as 'bert-384x12-embed', join(tmpdir(), 'infera-bench-models'));
const lib = await openLlamaLibrary();
const encoders = variants.map((variant) =>
  LlamaEncoder.load(lib, path, { contextSize: 512, sequences: 32, threads, pooling: 'model', decodeOn: 'worker', ...variant }),
);
const sentence = sentences(values.inputs as EmbedInputs, Number(values.words));

/** This process's CPU µs (every thread: the pool's workers included). */
const processCpuUs = () => {
  const usage = process.cpuUsage();
  return usage.user + usage.system;
};
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const walls = variants.map(() => [] as number[]);
const cpuCall = variants.map(() => 0);
const cpuBlock = variants.map(() => 0);
for (const encoder of encoders) for (let i = 0; i < 5; i++) await encoder.encode(encoder.framed(encoder.tokenize(sentence())));
let tokens = 0;
// Blocks of --block encodes per variant, in turn, with a second between blocks: a pool that polls (ggml's
// level 50) keeps a worker spinning for a while after its last decode, which must not land in the next
// variant's block. The block's CPU (gaps included) shows that spinning; the call's CPU does not.
const block = Number(values.block);
for (let done = 0; done < encodes; done += block)
  for (let v = 0; v < encoders.length; v++) {
    const index = (v + done / block) % encoders.length;
    const encoder = encoders[index]!;
    await sleep(1000);
    const b0 = processCpuUs();
    for (let i = 0; i < block; i++) {
      const inputs = Array.from({ length: batch }, () => encoder.framed(encoder.tokenize(sentence())));
      tokens += inputs[0]!.length;
      await sleep(gapMs);
      const c0 = processCpuUs();
      const t0 = performance.now();
      await Promise.all(inputs.map((input) => encoder.encode(input)));
      walls[index]!.push(performance.now() - t0);
      cpuCall[index]! += processCpuUs() - c0;
    }
    cpuBlock[index]! += processCpuUs() - b0;
  }
const n = Math.ceil(encodes / block) * block;
const q = (xs: number[], f: number) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * f)]!;
console.log(
  `encoder-lone: ${new Date().toISOString()}, ${threads} threads, ${batch} input(s) of ~${(tokens / n / encoders.length).toFixed(0)} tokens per encode, ${gapMs} ms apart, ${n} each; load ${readFileSync('/proc/loadavg', 'utf8').split(' ')[0]}`,
);
for (const [v, variant] of variants.entries())
  console.log(
    `  ${variant.name.padEnd(28)} wall p50 ${q(walls[v]!, 0.5).toFixed(2)} ms, p10 ${q(walls[v]!, 0.1).toFixed(2)}, p90 ${q(walls[v]!, 0.9).toFixed(2)}; CPU per encode: in the call ${(cpuCall[v]! / n / 1000).toFixed(2)} ms, with the gap ${(cpuBlock[v]! / n / 1000).toFixed(2)} ms`,
  );
for (const [v, variant] of variants.entries()) {
  const { decodes, smallDecodes, splitDecodes, fallbackDecodes, loopDecodes } = encoders[v]!.stats;
  console.log(
    `  ${variant.name.padEnd(28)} decodes ${decodes}: on the plain-attention context ${smallDecodes}, split ${splitDecodes}, on half the threads after a collapse ${fallbackDecodes}, on the loop ${loopDecodes}`,
  );
}
for (const encoder of encoders) await encoder.dispose();
