// The llama.cpp encoder's thread pool at 1 client, in process: lone inputs one after another (a gap of
// --gap-ms between them, as the HTTP path leaves), and per encode the CPU time and voluntary context
// switches (sleeps, each followed by a wake-up) of the pool's worker threads, from /proc/self/task.
// Whether a worker is woken for every decode or still polling from the last one reads the same on a busy
// box, where the wall time does not. --root picks the tree whose encoder is loaded (a base worktree for
// an A/B: run it once per tree, alternating). Linux only. Not a test.
//
//   node --import tsx bench/encoder-pool-wakes.ts [--root /work/base] [--threads 2] [--encodes 30] [--gap-ms 2]
import { readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    root: { type: 'string', default: join(import.meta.dirname, '..') },
    threads: { type: 'string', default: '2' },
    encodes: { type: 'string', default: '30' },
    'gap-ms': { type: 'string', default: '2' },
  },
});
const root = resolve(values.root!);
const encodes = Number(values.encodes);
const gapMs = Number(values['gap-ms']);
const { LlamaEncoder } = (await import(join(root, 'src/engines/llama-cpp/ffi/encoder.ts'))) as typeof import('../src/engines/llama-cpp/ffi/encoder.ts');
const { openLlamaLibrary } = (await import(join(root, 'src/engines/llama-cpp/ffi/library.ts'))) as typeof import('../src/engines/llama-cpp/ffi/library.ts');
const { ensureBenchModel } = (await import(join(root, 'src/tiny-models/index.ts'))) as typeof import('../src/tiny-models/index.ts');

const path = await ensureBenchModel('bert-384x12-embed', join(tmpdir(), 'infera-bench-models'));
const lib = await openLlamaLibrary();
const tids = () => new Set(readdirSync('/proc/self/task'));
const stat = (tid: string) => {
  const fields = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
  const after = fields.slice(fields.lastIndexOf(')') + 2).split(' ');
  const status = readFileSync(`/proc/self/task/${tid}/status`, 'utf8');
  return { cpuMs: (Number(after[11]) + Number(after[12])) * 10, sleeps: Number(/\nvoluntary_ctxt_switches:\s+(\d+)/.exec(status)?.[1] ?? 0) };
};
// The pool's workers are the threads that appear while the encoder loads and runs its first decode.
const before = tids();
const encoder = LlamaEncoder.load(lib, path, { contextSize: 512, sequences: 32, threads: Number(values.threads), pooling: 'model', decodeOn: 'worker' });
const input = encoder.framed(encoder.tokenize('the quick brown fox jumps over lazy dog sea light keeper night storm'));
await encoder.encode(input);
const pool = [...tids()].filter((tid) => !before.has(tid));
const start = pool.map(stat);
const walls: number[] = [];
for (let i = 0; i < encodes; i++) {
  const started = performance.now();
  await encoder.encode(input);
  walls.push(performance.now() - started);
  await new Promise((resolve) => setTimeout(resolve, gapMs));
}
const end = pool.map(stat);
walls.sort((a, b) => a - b);
const per = (pick: (s: { cpuMs: number; sleeps: number }) => number, digits: number) =>
  pool.map((_, i) => ((pick(end[i]!) - pick(start[i]!)) / encodes).toFixed(digits)).join(' ');
console.log(
  `${root}: ${pool.length} pool worker(s), per lone encode of ${input.length} tokens (${gapMs} ms apart): sleeps ${per((s) => s.sleeps, 2)}, ` +
    `CPU ${per((s) => s.cpuMs, 1)} ms; wall p50 ${walls[encodes >> 1]!.toFixed(1)} ms; load ${readFileSync('/proc/loadavg', 'utf8').split(' ')[0]}`,
);
await encoder.dispose();
