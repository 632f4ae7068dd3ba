// One bench-embed (384x12, fp32) forward pass shape, repeated on one ONNX Runtime session with profiling
// on: the pass's CPU (process, per pass) and, from the profile, each node's kernel time. On a shared box
// the per-node p10 over the passes is the figure that load moves least (a node rarely gets preempted in
// all of its runs), so "sum of per-node p10" estimates what the pass costs on a quiet box, op type by op
// type: how much is matrix products, how much the small serial ops, and how well 2 threads split it.
// Profiling itself adds a few µs a node (model_run is longer than without it). Not a test.
//
//   node --import tsx bench/onnx-pass-profile.ts [--threads 2] [--rows 1] [--tokens 22] [--calls 150] [--spin]
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { ensureBenchOnnxBert } from './bench-onnx-bert.ts';

const { values } = parseArgs({
  options: {
    threads: { type: 'string', default: '2' },
    rows: { type: 'string', default: '1' },
    tokens: { type: 'string', default: '22' },
    calls: { type: 'string', default: '150' },
    /** Pool threads spin inside a pass and sleep after it (Infera's `onnx.spin`); default: sleeping, as Infera runs. */
    spin: { type: 'boolean', default: false },
  },
});
const threads = Number(values.threads);
const rows = Number(values.rows);
const tokens = Number(values.tokens);
const calls = Number(values.calls);

const dir = await ensureBenchOnnxBert('embed');
const session = await ort.InferenceSession.create(join(dir, 'model.onnx'), {
  intraOpNumThreads: threads,
  interOpNumThreads: 1,
  executionMode: 'sequential',
  graphOptimizationLevel: 'all',
  extra: { session: values.spin ? { intra_op: { allow_spinning: '1' }, force_spinning_stop: '1' } : { intra_op: { allow_spinning: '0' } } },
  enableProfiling: true,
  profileFilePrefix: join(tmpdir(), `onnx-pass-profile-${process.pid}`),
});
// [CLS] + ordinary vocabulary ids + [SEP].
const row = [2, ...Array.from({ length: tokens - 2 }, (_, i) => 5 + ((i * 7919) % 500)), 3];
const tensor = (value: (t: number) => number) =>
  new ort.Tensor('int64', BigInt64Array.from({ length: rows * tokens }, (_, i) => BigInt(value(i % tokens))), [rows, tokens]);
const feeds = () => ({ input_ids: tensor((t) => row[t]!), attention_mask: tensor(() => 1), token_type_ids: tensor(() => 0) });
for (let i = 0; i < 5; i++) await session.run(feeds());
const cpu = process.cpuUsage();
for (let i = 0; i < calls; i++) await session.run(feeds());
const used = process.cpuUsage(cpu);
session.endProfiling();
await session.release();
// onnxruntime-node writes the file under the prefix (plus a time stamp) and does not return its name.
const profile = readdirSync(tmpdir()).find((name) => name.startsWith(`onnx-pass-profile-${process.pid}`));
if (!profile) throw new Error('no profile file');
const path = join(tmpdir(), profile);

interface Event {
  cat: string;
  name: string;
  dur: number;
  args?: { op_name?: string };
}
const events = JSON.parse(readFileSync(path, 'utf8')) as Event[];
rmSync(path, { force: true });
const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) * q)]!;
const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run').map((e) => e.dur).slice(5);
const nodes = new Map<string, { op: string; durations: number[] }>();
for (const e of events) {
  if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
  const node = nodes.get(e.name) ?? { op: e.args?.op_name ?? '?', durations: [] };
  node.durations.push(e.dur);
  nodes.set(e.name, node);
}
const byOp = new Map<string, { us: number; count: number }>();
let total = 0;
for (const { op, durations } of nodes.values()) {
  const us = quantile(durations, 0.1);
  total += us;
  const entry = byOp.get(op) ?? { us: 0, count: 0 };
  entry.us += us;
  entry.count++;
  byOp.set(op, entry);
}
console.log(
  `bench-embed [${rows}, ${tokens}], ${threads} thread(s), ${values.spin ? 'spinning in the pass' : 'sleeping pool'}, ${calls} passes: ` +
    `CPU ${((used.user + used.system) / 1000 / calls).toFixed(2)} ms a pass; model_run p10 / p50 ${(quantile(runs, 0.1) / 1000).toFixed(2)} / ${(quantile(runs, 0.5) / 1000).toFixed(2)} ms; ` +
    `sum of per-node p10 ${(total / 1000).toFixed(2)} ms over ${nodes.size} nodes`,
);
for (const [op, { us, count }] of [...byOp].sort((a, b) => b[1].us - a[1].us))
  if (us >= 10) console.log(`  ${op.padEnd(20)} ${(us / 1000).toFixed(3)} ms (${count} nodes)`);
process.exit(0);
