// ONNX Runtime session options A/B on the bench encoder, no Infera code: one [rows, tokens] pass per
// variant in turn, call after call, so every variant sees the same moments of a shared box; per-pass wall
// (quartiles) and the process's CPU per pass. What `onnx.spin` and `onnx.threads` do to one forward pass.
// Per variant also the CPU and voluntary context switches (sleeps) of its intra-op pool threads and of the
// calling thread per pass (/proc/self/task): how much of a pass the pool worked, and how often it was woken.
// On a busy box run it with real-time priority to approximate a quiet one (`chrt -f 10`, as root): the
// figures are then what the variants cost when their cores are free. Not a test.
//
// Usage: node --import tsx bench/onnx-session-options.ts [--tokens 22] [--rows 1] [--calls 60] [--gap-ms 1]
//          [--variants '[{"name":"sleep","threads":2,"config":{"session.intra_op.allow_spinning":"0"}}, …]']
//          (a variant's "model": another .onnx file with the same inputs, for exports written differently;
//          its "options": other session options, e.g. {"executionMode":"parallel","interOpNumThreads":2})
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { ensureBenchOnnxBert } from './bench-onnx-bert.ts';

const { values } = parseArgs({
  options: {
    tokens: { type: 'string', default: '22' },
    rows: { type: 'string', default: '1' },
    calls: { type: 'string', default: '60' },
    'gap-ms': { type: 'string', default: '1' },
    variants: { type: 'string' },
  },
});
const tokens = Number(values.tokens);
const rows = Number(values.rows);
const calls = Number(values.calls);
const gapMs = Number(values['gap-ms']);

interface Variant {
  name: string;
  threads: number;
  /** Session config entries (`extra` flattened): e.g. session.intra_op.allow_spinning. */
  config?: Record<string, string>;
  /** Another model file with the same inputs (e.g. the export as ONNX Runtime's transformer optimizer writes it). */
  model?: string;
  /** Other session options, merged over the defaults below (e.g. {"executionMode":"parallel","interOpNumThreads":2}). */
  options?: Record<string, unknown>;
}
// The defaults: today's setting, `onnx.spin`, and one thread.
const variants: Variant[] = values.variants
  ? JSON.parse(values.variants)
  : [
      { name: '2 threads, sleeping (default)', threads: 2, config: { 'session.intra_op.allow_spinning': '0' } },
      { name: '2 threads, spin (onnx.spin)', threads: 2, config: { 'session.intra_op.allow_spinning': '1', 'session.force_spinning_stop': '1' } },
      { name: '1 thread', threads: 1, config: {} },
    ];

/** {'a.b': v} → {a: {b: v}}: onnxruntime-node joins `extra`'s nested keys with dots. */
function nested(config: Record<string, string>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(config)) {
    const parts = key.split('.');
    let at = out;
    for (const part of parts.slice(0, -1)) {
      at[part] ??= {};
      at = at[part] as Record<string, unknown>;
    }
    at[parts.at(-1)!] = value;
  }
  return out;
}

const dir = await ensureBenchOnnxBert('embed');
// Each session's intra-op pool has threads of its own: the ones that appear while it is created. Their CPU
// time and voluntary context switches (each a sleep and a wake-up) over the run say how much of a pass the
// pool's worker threads did, and how often they were woken for it — both steady on a shared box.
const tids = () => new Set(readdirSync('/proc/self/task'));
const threadStat = (tid: string): { cpuMs: number; switches: number } => {
  try {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const status = readFileSync(`/proc/self/task/${tid}/status`, 'utf8');
    return { cpuMs: ((Number(fields[11]) + Number(fields[12])) * 1000) / 100, switches: Number(/\nvoluntary_ctxt_switches:\s+(\d+)/.exec(status)?.[1] ?? 0) };
  } catch {
    return { cpuMs: 0, switches: 0 };
  }
};
const poolThreads: string[][] = [];
const sessions: ort.InferenceSession[] = [];
for (const variant of variants) {
  const before = tids();
  sessions.push(
    await ort.InferenceSession.create(variant.model ?? join(dir, 'model.onnx'), {
      intraOpNumThreads: variant.threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      extra: nested(variant.config ?? {}),
      ...variant.options,
    }),
  );
  poolThreads.push([...tids()].filter((tid) => !before.has(tid)));
}
const mainTid = String(process.pid);
// [CLS] + words + [SEP]: ids 5… are ordinary vocabulary entries.
const row = [2, ...Array.from({ length: tokens - 2 }, (_, i) => 5 + ((i * 7919) % 500)), 3];
const tensor = (value: (i: number) => number) =>
  new ort.Tensor('int64', BigInt64Array.from({ length: rows * tokens }, (_, i) => BigInt(value(i % tokens))), [rows, tokens]);
const feeds = () => ({ input_ids: tensor((t) => row[t]!), attention_mask: tensor(() => 1), token_type_ids: tensor(() => 0) });

const wall = variants.map(() => [] as number[]);
const cpu = variants.map(() => [] as number[]);
/** The pools' threads and the calling (main) thread, summed over every pass of each variant. */
const workers = variants.map(() => ({ cpuMs: 0, switches: 0 }));
const caller = variants.map(() => ({ cpuMs: 0, switches: 0 }));
for (const session of sessions) for (let i = 0; i < 5; i++) await session.run(feeds());
for (let call = 0; call < calls; call++)
  for (const [k, session] of sessions.entries()) {
    const input = feeds();
    const poolBefore = poolThreads[k]!.map(threadStat);
    const mainBefore = threadStat(mainTid);
    const cpuBefore = process.cpuUsage();
    const started = performance.now();
    await session.run(input);
    wall[k]!.push(performance.now() - started);
    const used = process.cpuUsage(cpuBefore);
    cpu[k]!.push((used.user + used.system) / 1000);
    const mainAfter = threadStat(mainTid);
    caller[k]!.cpuMs += mainAfter.cpuMs - mainBefore.cpuMs;
    caller[k]!.switches += mainAfter.switches - mainBefore.switches;
    for (const [i, tid] of poolThreads[k]!.entries()) {
      const after = threadStat(tid);
      workers[k]!.cpuMs += after.cpuMs - poolBefore[i]!.cpuMs;
      workers[k]!.switches += after.switches - poolBefore[i]!.switches;
    }
    if (gapMs) await new Promise((resolve) => setTimeout(resolve, gapMs));
  }
const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) * q)]!;
console.log(`bench-embed (384x12), [${rows}, ${tokens}] passes, ${calls} per variant, alternating call by call`);
for (const [k, variant] of variants.entries())
  console.log(
    `${variant.name.padEnd(32)} wall p25/p50/p75 ${[0.25, 0.5, 0.75].map((q) => quantile(wall[k]!, q).toFixed(2)).join(' / ')} ms` +
      `   CPU per pass p50 ${quantile(cpu[k]!, 0.5).toFixed(2)} ms` +
      (k > 0 ? `   wall ${(quantile(wall[k]!, 0.5) / quantile(wall[0]!, 0.5)).toFixed(2)}× the first` : '') +
      `\n${''.padEnd(32)} per pass: calling thread ${(caller[k]!.cpuMs / calls).toFixed(2)} ms CPU, ${(caller[k]!.switches / calls).toFixed(1)} sleeps;` +
      ` ${poolThreads[k]!.length} pool thread(s) ${(workers[k]!.cpuMs / calls).toFixed(2)} ms CPU, ${(workers[k]!.switches / calls).toFixed(1)} sleeps`,
  );
process.exit(0);
