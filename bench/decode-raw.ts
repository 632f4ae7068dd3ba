// What a bare llama_decode loop costs in this process, against the runner's own step, on the same
// context: is the runner's decode slower than llama.cpp's (llama-batched-bench's loop: one token, logits
// out, no sampling, nothing between decodes), and if so, which of the things the runner does between
// decodes makes it so. Modes, measured in alternation on one context, per decode step (medians over
// rounds): `raw` — llama_decode back to back from JavaScript (batched-bench's loop through koffi);
// `logits` — plus llama_get_logits_ith and the argmax over the row; `turn` — plus a setImmediate turn of
// the event loop between decodes; `runner` — LlamaRunner.generate, greedy, a no-op onToken. Wall and
// process CPU per step (CPU counts the pool's spinning worker too). Not a test: prints figures.
//
// Usage: node --import tsx bench/decode-raw.ts [--model chat-512x8-vocab152k] [--threads 2] [--tokens 128]
//        [--streams 1] [--rounds 5] [--modes raw,logits,turn,runner] [--variant NAME=JSON ...] (runner options, runner mode)
//        [--cpu-backend prebuilt|native|auto] (as llamaCpp.cpuBackend; chat models load the prebuilt under auto)
import { readdirSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createArgmax } from '../src/engines/llama-cpp/ffi/argmax.ts';
import { type CpuBackendSetting, openLlamaLibrary } from '../src/engines/llama-cpp/ffi/library.ts';
import { LlamaRunner } from '../src/engines/llama-cpp/ffi/runner.ts';
import { type BenchModelKind, ensureBenchModel } from '../src/tiny-models/index.ts';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'chat-512x8-vocab152k' },
    threads: { type: 'string', default: '2' },
    // N sequences, one token each per decode (llama-batched-bench's -npl N; the runner: N concurrent generates).
    streams: { type: 'string', default: '1' },
    tokens: { type: 'string', default: '128' },
    rounds: { type: 'string', default: '5' },
    modes: { type: 'string', default: 'raw,logits,turn,runner' },
    variant: { type: 'string', multiple: true, default: [] },
    'cpu-backend': { type: 'string', default: 'prebuilt' },
  },
});
const path = await ensureBenchModel(values.model as BenchModelKind, join(tmpdir(), 'infera-bench-models'));
const tokens = Number(values.tokens);
const threads = Number(values.threads);
const streams = Number(values.streams);
const lib = await openLlamaLibrary({ cpuBackend: values['cpu-backend'] as CpuBackendSetting });
const base = { contextSize: 1024, sequences: streams, threads, decodeOn: 'loop' as const };
const runners: Record<string, LlamaRunner> = { default: LlamaRunner.load(lib, path, base) };
for (const variant of values.variant) {
  const at = variant.indexOf('=');
  runners[variant.slice(0, at)] = LlamaRunner.load(lib, path, { ...base, ...JSON.parse(variant.slice(at + 1)) });
}
const runner = runners.default!;
// llama_perf_context's n_reused: how many decodes reused the previous compute graph (llama.cpp rebuilds
// and re-allocates it otherwise). Not in the runner's bindings; the same libllama, opened again.
const libllama = lib.koffi.load(join(lib.binsDir, readdirSync(lib.binsDir).find((f) => /^libllama\.v[0-9.]+\.so$|^libllama\.so$/.test(f))!));
const perfData = lib.koffi.struct('llama_perf_context_data_bench', { t_start_ms: 'double', t_load_ms: 'double', t_p_eval_ms: 'double', t_eval_ms: 'double', n_p_eval: 'int32_t', n_eval: 'int32_t', n_reused: 'int32_t' });
const perfContext = libllama.func('llama_perf_context', perfData, [lib.types.context]) as unknown as (ctx: unknown) => { n_reused: number; n_eval: number; n_p_eval: number };
// The runner's context and batch (private: this bench drives them directly between the runner's rounds).
const inner = runner as unknown as { context: unknown; memory: unknown; batch: { struct: Record<string, unknown>; token: Int32Array; pos: Int32Array; seqId: Int32Array[]; logits: Int8Array }; slots: { kv: number[] }[] };
const { api, koffi } = lib;
const argmax = createArgmax()!;
// Views of the logits row by address, as the runner keeps them (a fresh koffi.view per step costs ~0.1 ms).
const rows = new Map<bigint, Float32Array>();
const prompt = runner.tokenize('<|im_start|>user\nWrite a long story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n');

interface Figures {
  wall: number;
  cpu: number;
}

const reused: Record<string, number[]> = {};
async function measure(label: string, r: LlamaRunner, body: () => Promise<Figures>): Promise<Figures> {
  const ctx = (r as unknown as { context: unknown }).context;
  const before = perfContext(ctx).n_reused;
  const figures = await body();
  const list = reused[label] ?? [];
  list.push(perfContext(ctx).n_reused - before);
  reused[label] = list;
  return figures;
}

async function rawRound(mode: 'raw' | 'logits' | 'turn'): Promise<Figures> {
  const { batch } = inner;
  const tokenOf: number[] = [];
  for (let seq = 0; seq < streams; seq++) {
    api.llama_memory_seq_rm(inner.memory, seq, -1, -1);
    for (let i = 0; i < prompt.length; i++) {
      batch.token[i] = prompt[i]!;
      batch.pos[i] = i;
      batch.seqId[i]![0] = seq;
      batch.logits[i] = i === prompt.length - 1 ? 1 : 0;
    }
    batch.struct.n_tokens = prompt.length;
    if (api.llama_decode(inner.context, batch.struct) !== 0) throw new Error('prompt decode failed');
    tokenOf.push(prompt[prompt.length - 1]!);
  }
  batch.struct.n_tokens = streams;
  for (let seq = 0; seq < streams; seq++) {
    batch.logits[seq] = 1;
    batch.seqId[seq]![0] = seq;
  }
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < tokens; i++) {
    for (let seq = 0; seq < streams; seq++) {
      batch.token[seq] = tokenOf[seq]!;
      batch.pos[seq] = prompt.length + i;
    }
    if (api.llama_decode(inner.context, batch.struct) !== 0) throw new Error('decode failed');
    for (let seq = 0; seq < streams; seq++) {
      if (mode === 'raw') tokenOf[seq] = (tokenOf[seq]! * 7 + 13) % Math.min(1000, runner.vocabSize);
      else {
        const pointer = api.llama_get_logits_ith(inner.context, seq);
        const address = koffi.address(pointer) as bigint;
        let row = rows.get(address);
        if (!row) {
          row = new Float32Array(koffi.view(pointer, runner.vocabSize * 4));
          rows.set(address, row);
        }
        tokenOf[seq] = argmax(row);
      }
    }
    if (mode === 'turn') await new Promise<void>((resolve) => setImmediate(resolve));
  }
  const wall = (performance.now() - t0) / tokens;
  const cpu = process.cpuUsage(cpu0);
  // Leave the sequences empty, as the runner's prompt cache believes them to be.
  for (let seq = 0; seq < streams; seq++) {
    api.llama_memory_seq_rm(inner.memory, seq, -1, -1);
    inner.slots[seq]!.kv = [];
  }
  return { wall, cpu: (cpu.user + cpu.system) / 1000 / tokens };
}

async function runnerRound(r: LlamaRunner): Promise<Figures> {
  let cpu0: NodeJS.CpuUsage | undefined;
  let t0 = 0;
  let seen = 0;
  // Timed from the first generated token of any stream (the prompts are decoded before it) over the
  // `tokens` steps after it.
  await Promise.all(
    Array.from({ length: streams }, () =>
      r.generate({
        prompt,
        sampling: { temperature: 0 },
        maxTokens: tokens + 1,
        cachePrompt: false,
        onToken: () => {
          if (seen++ === 0) {
            cpu0 = process.cpuUsage();
            t0 = performance.now();
          }
          return undefined;
        },
      }).done,
    ),
  );
  const wall = (performance.now() - t0) / tokens;
  const cpu = process.cpuUsage(cpu0);
  return { wall, cpu: (cpu.user + cpu.system) / 1000 / tokens };
}

const modes = values.modes.split(',');
const labels = [...modes.filter((m) => m !== 'runner'), ...(modes.includes('runner') ? Object.keys(runners).map((name) => `runner:${name}`) : [])];
const run = (label: string) =>
  label.startsWith('runner:') ? measure(label, runners[label.slice(7)]!, () => runnerRound(runners[label.slice(7)]!)) : measure(label, runner, () => rawRound(label as 'raw'));
for (const label of labels) await run(label); // warm-up
const figures: Record<string, Figures[]> = {};
for (let round = 0; round < Number(values.rounds); round++)
  for (const label of labels) {
    const list = figures[label] ?? [];
    list.push(await run(label));
    if (process.env.DECODE_RAW_PROGRESS) console.error(`round ${round + 1} ${label}: ${list.at(-1)!.wall.toFixed(2)} ms wall, ${list.at(-1)!.cpu.toFixed(2)} ms CPU per step`);
    figures[label] = list;
  }
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
console.log(`load ${loadavg().map((l) => l.toFixed(2)).join(' ')}, ${threads} threads, ${streams} streams, ${tokens} tokens, ${values.rounds} rounds, CPU backend ${lib.cpuBackend.kind} ${lib.cpuBackend.file}`);
console.table(
  labels.map((label) => ({
    mode: label,
    'step ms (median)': Number(median(figures[label]!.map((f) => f.wall)).toFixed(3)),
    'steps ms': figures[label]!.map((f) => f.wall.toFixed(2)).join(' '),
    'CPU ms/step': Number(median(figures[label]!.map((f) => f.cpu)).toFixed(3)),
    'CPU per round': figures[label]!.map((f) => f.cpu.toFixed(2)).join(' '),
    'graphs reused/round': reused[label]!.join(' '),
  })),
);
for (const r of Object.values(runners)) await r.dispose();
process.exit(0);
