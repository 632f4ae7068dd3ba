// Where a decode step of the FFI runner goes: time inside llama_decode against everything else the loop
// does per step (sampling every sequence, the token events, building the next batch, the event-loop turn),
// at 1 and N streams, greedy and with the bench's sampled chain, on the 152k-vocabulary bench model. The
// runner decodes on the loop's thread (as in the engine process). Per step: wall, decode, sampling (the
// runner's sampling pass: the chain, the token event), and the rest; medians over rounds. --root runs
// another checkout's runner (one llama.cpp library per process: compare checkouts by alternating
// processes). --variant NAME=JSON (repeatable) loads this checkout's runner once more with those runner
// options (e.g. `--variant backend-greedy='{"backendGreedy":true}'`), measured in the same rounds. Not a
// test: prints figures.
//
// Usage: node --import tsx bench/decode-step.ts [--model chat-512x8-vocab152k] [--threads 2] [--streams 1,8]
//        [--tokens 128] [--rounds 5] [--root /work/main] [--variant NAME=JSON ...]
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ensureBenchModel, type BenchModelKind } from '../src/tiny-models/index.ts';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'chat-512x8-vocab152k' },
    threads: { type: 'string', default: '2' },
    streams: { type: 'string', default: '1,8' },
    tokens: { type: 'string', default: '128' },
    rounds: { type: 'string', default: '5' },
    chains: { type: 'string', default: 'greedy,sampled' },
    root: { type: 'string' },
    variant: { type: 'string', multiple: true, default: [] },
  },
});

import type { LlamaRunner as Runner, SamplingSpec as Sampling } from '../src/engines/llama-cpp/ffi/runner.ts';

type RunnerModule = typeof import('../src/engines/llama-cpp/ffi/runner.ts');
type LibraryModule = typeof import('../src/engines/llama-cpp/ffi/library.ts');

const path = await ensureBenchModel(values.model as BenchModelKind, join(tmpdir(), 'infera-bench-models'));
const streamsList = values.streams.split(',').map(Number);
const tokens = Number(values.tokens);
const threads = Number(values.threads);
const chains: Record<string, Sampling> = {
  greedy: { temperature: 0 },
  // vs-llama-server's sampled cell as the chat engine builds it (repetition penalty over 256 tokens).
  sampled: { temperature: 0.7, topP: 0.9, topK: 40, minP: 0, seed: 1, penalties: { lastN: 256, repeat: 1.1, frequency: 0, presence: 0 } },
};

const checkouts: Record<string, string> = { [values.root ?? 'this']: resolve(values.root ?? join(import.meta.dirname, '..')) };
const runners: Record<string, Runner> = {};
for (const [label, root] of Object.entries(checkouts)) {
  const { openLlamaLibrary } = (await import(join(root, 'src/engines/llama-cpp/ffi/library.ts'))) as LibraryModule;
  const { LlamaRunner } = (await import(join(root, 'src/engines/llama-cpp/ffi/runner.ts'))) as RunnerModule;
  const lib = await openLlamaLibrary();
  runners[label] = LlamaRunner.load(lib, path, { contextSize: 1024, sequences: Math.max(...streamsList), threads, decodeOn: 'loop' });
  if (values.root) continue;
  for (const variant of values.variant) {
    const at = variant.indexOf('=');
    runners[variant.slice(0, at)] = LlamaRunner.load(lib, path, { contextSize: 1024, sequences: Math.max(...streamsList), threads, decodeOn: 'loop', ...JSON.parse(variant.slice(at + 1)) });
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
let promptNumber = 0;

interface Figures {
  wall: number;
  decode: number;
  sample: number;
  choose: number;
  tps: number;
  /** CPU time of this process per step (every thread: at --threads 1 the steadier figure on a busy box). */
  cpu: number;
}

/** One round: `streams` generations at once; per-step figures over the steps after every prompt is in. */
async function round(runner: Runner, streams: number, sampling: Sampling): Promise<Figures> {
  const stats = runner.stats;
  let cpuMark: NodeJS.CpuUsage | undefined;
  let mark: { at: number; steps: number; decodeMs: number; sampleMs: number; chooseMs: number; tokens: number } | undefined;
  let started = 0;
  const generations = Array.from({ length: streams }, () => {
    const prompt = runner.tokenize(`<|im_start|>user\n(${++promptNumber}) Write a long story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n`);
    return runner.generate({
      prompt,
      sampling,
      maxTokens: tokens,
      cachePrompt: false,
      onToken: () => {
        // From the step in which the last stream got its first token: decode steps only.
        if (mark === undefined && ++started === streams) {
          cpuMark = process.cpuUsage();
          mark = { at: performance.now(), steps: stats.steps, decodeMs: stats.decodeMs, sampleMs: stats.sampleMs, chooseMs: (stats as { chooseMs?: number }).chooseMs ?? Number.NaN, tokens: stats.tokens };
        }
        return undefined;
      },
    }).done;
  });
  await Promise.all(generations);
  const end = performance.now();
  const cpuUsed = process.cpuUsage(cpuMark);
  const m = mark!;
  // The last step's sampling ends the measured span: count steps after the mark.
  const steps = stats.steps - m.steps;
  return {
    wall: (end - m.at) / steps,
    decode: (stats.decodeMs - m.decodeMs) / steps,
    sample: (stats.sampleMs - m.sampleMs) / steps,
    // (A checkout from before the runner counted it separately: NaN.)
    choose: (((stats as { chooseMs?: number }).chooseMs ?? Number.NaN) - m.chooseMs) / steps,
    tps: ((stats.tokens - m.tokens) * 1000) / (end - m.at),
    cpu: (cpuUsed.user + cpuUsed.system) / 1000 / steps,
  };
}

const rows: Record<string, unknown>[] = [];
for (const chain of values.chains.split(',')) {
  for (const streams of streamsList) {
    const figures: Record<string, Figures[]> = {};
    for (const runner of Object.values(runners)) await round(runner, streams, chains[chain]!); // warm-up
    for (let r = 0; r < Number(values.rounds); r++)
      for (const [label, runner] of Object.entries(runners)) {
        const list = figures[label] ?? [];
        list.push(await round(runner, streams, chains[chain]!));
        figures[label] = list;
      }
    for (const [label, list] of Object.entries(figures)) {
      const wall = median(list.map((f) => f.wall));
      const decode = median(list.map((f) => f.decode));
      const sample = median(list.map((f) => f.sample));
      const row = {
        runner: label,
        chain,
        streams,
        't/s': Number(median(list.map((f) => f.tps)).toFixed(1)),
        'step ms': Number(wall.toFixed(2)),
        'decode ms': Number(decode.toFixed(2)),
        'sample ms': Number(sample.toFixed(3)),
        'choose ms': Number(median(list.map((f) => f.choose)).toFixed(3)),
        'other ms': Number(median(list.map((f) => f.wall - f.decode - f.sample)).toFixed(3)),
        'outside decode ms': Number(median(list.map((f) => f.wall - f.decode)).toFixed(3)),
        'CPU ms': Number(median(list.map((f) => f.cpu)).toFixed(3)),
      };
      rows.push(row);
      console.log(JSON.stringify(row));
    }
  }
}
console.table(rows);
for (const runner of Object.values(runners)) await runner.dispose();
process.exit(0);
