// The engine process's streamIntervalMs A/B in one sitting (docs/BENCHMARKS.md, dec5): one `infera serve` (the
// compiled build, bin/infera.js) with the same GGUF as one model per interval, differing only in
// streamIntervalMs; requests alternate between them, so the box's load hits all alike. Medians of t/s, TTFT,
// the server tree's CPU per token. Not a test.
//   node --import tsx bench/stream-interval.ts [threads=2] [rounds=8] [intervals=0,10,20] [model=chat-512x8] [streams=1] [llamaCpp JSON]
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { stringify } from 'yaml';
import { postJson } from './http-post.ts';
import { treeCpuNs } from './proc-cpu.ts';
import { ensureBenchModel } from '../src/tiny-models/index.ts';
const [threads = '2', rounds = '8', intervals = '0,10,20', model = 'chat-512x8', streams = '1', extra = '{}'] = process.argv.slice(2);
const ivs = intervals.split(',').map(Number);
const path = await ensureBenchModel(model as never, join(tmpdir(), 'infera-bench-models'));
const dataDir = mkdtempSync(join(tmpdir(), 'dec5ab-'));
const models = ivs.map((iv) => ({ id: `m${iv}`, type: 'chat', eager: true, maxQueue: 1000, engine: 'llama-cpp', path, streamIntervalMs: iv, llamaCpp: { contextSize: 1024, sequences: 8, threads: Number(threads), cpuBackend: 'native', ...JSON.parse(extra) } }));
writeFileSync(join(dataDir, 'infera.yaml'), stringify({ server: { logLevel: 'warn', maxRequestsPerSocket: 0 }, storage: { dataDir }, models }));
const port = 20000 + Math.floor(Math.random() * 20000);
const child = spawn(process.execPath, ['bin/infera.js', 'serve', '--config', join(dataDir, 'infera.yaml'), '--port', String(port)], { env: { ...process.env, INFERA_API_KEY: '', INFERA_CONFIG: '', INFERA_DATA_DIR: dataDir }, stdio: ['ignore', 'ignore', 'ignore'] });
const agent = new Agent({ keepAlive: true });
let n = 0;
async function one(id: string) {
  const start = performance.now(); let first = 0, last = 0, events = 0;
  const { status, text } = await postJson(agent, port, '/v1/chat/completions', { model: id, messages: [{ role: 'user', content: `(${++n}) Write a long story about a lighthouse keeper and the sea.` }], max_tokens: 128, stream: true, stream_options: { include_usage: true }, temperature: 0, enable_thinking: false }, (chunk) => {
    const now = performance.now();
    if (/"content":"[^"]/.test(chunk.toString('latin1'))) { events++; if (!first) first = now; }
    if (!last && chunk.includes('"finish_reason":"')) last = now;
  });
  if (status !== 200) throw new Error(text);
  const usage = text.split('\n').filter((l) => l.startsWith('data: {')).map((l) => JSON.parse(l.slice(6))).findLast((e) => e.usage)?.usage;
  return { ttft: first - start, first, last, events, gen: usage.completion_tokens };
}
for (const m of models) for (let i = 0; i < 600; i++) { try { await one(m.id); break; } catch { await new Promise((r) => setTimeout(r, 200)); } }
const res: Record<string, { tps: number; ttft: number; events: number; cpuUs: number }[]> = {};
for (let r = 0; r < Number(rounds); r++) for (const m of models) {
  const c0 = treeCpuNs(child.pid!);
  const rs = await Promise.all(Array.from({ length: Number(streams) }, () => one(m.id)));
  const cpu = treeCpuNs(child.pid!) - c0;
  const gen = rs.reduce((s, x) => s + x.gen, 0);
  const t = (Math.max(...rs.map((x) => x.last)) - Math.min(...rs.map((x) => x.first))) / 1000;
  res[m.id] ??= [];
  res[m.id]!.push({ tps: gen / t, ttft: rs[0]!.ttft, events: rs[0]!.events, cpuUs: cpu / 1000 / gen });
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const [id, out] of Object.entries(res)) console.log(JSON.stringify({ id, threads, streams, tps: +med(out.map((o) => o.tps)).toFixed(1), ttft: +med(out.map((o) => o.ttft)).toFixed(1), reads: med(out.map((o) => o.events)), cpuUs: Math.round(med(out.map((o) => o.cpuUs))), all: out.map((o) => Math.round(o.tps)) }));
console.log('load', readFileSync('/proc/loadavg', 'utf8').trim());
child.kill('SIGTERM');
