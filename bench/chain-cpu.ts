// CPU per streamed token of every thread of a running server's process tree (Infera's server and its
// engine process, or llama-server) and of this client, with voluntary/involuntary context switches, over
// greedy or sampled requests: what each side of the chain (decode → server → client) costs per token, for
// either server, measured the same way. With --streams N each round is N concurrent requests (as
// vs-llama-server's N-stream cells), and it also prints how the round's wall splits: the spread of the
// streams' first tokens (prompts admitted in different steps: the aggregate t/s of vs-llama-server, first
// token of any stream → last of all, counts that spread and the ragged end), and the rate while all N
// streams run (the part llama-batched-bench's S_TG compares with). Not a test: prints figures.
//
// Usage: node --import tsx bench/chain-cpu.ts --port P --pid PID [--dialect infera|llama] [--model bench/chat]
//          [--tokens 128] [--requests 6] [--streams 1] [--sampling greedy|sampled]
import { readdirSync, readFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { postJson } from './http-post.ts';

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    pid: { type: 'string' },
    dialect: { type: 'string', default: 'infera' },
    model: { type: 'string', default: 'bench/chat' },
    tokens: { type: 'string', default: '128' },
    requests: { type: 'string', default: '6' },
    streams: { type: 'string', default: '1' },
    sampling: { type: 'string', default: 'greedy' },
  },
});
const port = Number(values.port);
const root = Number(values.pid);
const tokens = Number(values.tokens);
// llama-server closes a kept-alive connection after a stream: a fresh one per request there.
const agent = new Agent({ keepAlive: values.dialect !== 'llama', maxSockets: 64 });

function tree(pid: number): number[] {
  const kids = (() => {
    try {
      return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    } catch {
      return [];
    }
  })();
  return [pid, ...kids.flatMap(tree)];
}
function threads(pid: number, label: string, into: Map<string, { ns: number; vol: number; invol: number }>): void {
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      const name = Number(tid) === pid ? 'main' : readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      into.set(`${label}/${tid}/${name}`, {
        ns,
        vol: Number(/\nvoluntary_ctxt_switches:\s+(\d+)/.exec(status)![1]),
        invol: Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(status)![1]),
      });
    } catch {
      // gone
    }
  }
}
function snapshot(): Map<string, { ns: number; vol: number; invol: number }> {
  const out = new Map<string, { ns: number; vol: number; invol: number }>();
  for (const [i, pid] of tree(root).entries()) threads(pid, i === 0 ? `server:${pid}` : `child:${pid}`, out);
  threads(process.pid, 'client', out);
  return out;
}
let counter = 0;
function body() {
  const base: Record<string, unknown> = {
    model: values.model,
    messages: [{ role: 'user', content: `(${++counter}) Write a long story about a lighthouse keeper and the sea.` }],
    max_tokens: tokens,
    stream: true,
  };
  if (values.sampling === 'greedy') base.temperature = 0;
  else {
    Object.assign(base, { temperature: 0.7, top_p: 0.9, top_k: 40, min_p: 0 });
    if (values.dialect === 'infera') base.repetition_penalty = 1.1;
    else Object.assign(base, { repeat_penalty: 1.1, repeat_last_n: 256 });
  }
  if (values.dialect === 'infera') base.enable_thinking = false;
  else base.chat_template_kwargs = { enable_thinking: false };
  return base;
}
interface Stream {
  start: number;
  first: number;
  last: number;
  /** Arrival time of every content frame (a read may hold several). */
  times: number[];
  reads: number;
}
async function one(): Promise<Stream> {
  const start = performance.now();
  let first = 0;
  let last = 0;
  let reads = 0;
  const times: number[] = [];
  const { status, text } = await postJson(agent, port, '/v1/chat/completions', body(), (chunk) => {
    const now = performance.now();
    const frames = chunk.toString('latin1').match(/"content":"[^"]/g)?.length ?? 0;
    if (frames > 0) {
      reads++;
      for (let i = 0; i < frames; i++) times.push(now);
      if (!first) first = now;
    }
    if (chunk.includes('"finish_reason":"')) last = now;
  });
  if (status !== 200) throw new Error(`HTTP ${status}: ${text.slice(0, 300)}`);
  return { start, first, last, times, reads };
}
const streams = Number(values.streams);
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
interface Round {
  tps: number;
  ms: number;
  reads: number;
  /** First token of the first stream → first token of the last stream, ms. */
  firstSpread: number;
  /** Last token of the first stream to finish → last of all, ms. */
  lastSpread: number;
  /** Aggregate t/s from the last stream's first token to the first stream's last: all N streams running. */
  allRunning: number;
  /** Median time to first token over the round's streams, ms. */
  ttft: number;
}
async function round(): Promise<Round> {
  const start = performance.now();
  const runs = await Promise.all(Array.from({ length: streams }, () => one()));
  const firstFirst = Math.min(...runs.map((r) => r.first));
  const lastFirst = Math.max(...runs.map((r) => r.first));
  const firstLast = Math.min(...runs.map((r) => r.last));
  const lastLast = Math.max(...runs.map((r) => r.last));
  // Content frames (one per token on both servers) that arrived while all N streams ran.
  if (process.env.CHAIN_CPU_FIRSTS)
    console.error(`firsts (ms after the round's start): ${runs.map((r) => (r.first - start).toFixed(0)).sort((a, b) => Number(a) - Number(b)).join(' ')}; requests sent ${runs.map((r) => (r.start - start).toFixed(1)).join(' ')}`);
  const inside = runs.reduce((sum, r) => sum + r.times.filter((t) => t > lastFirst && t <= firstLast).length, 0);
  return {
    tps: (tokens * streams) / ((lastLast - firstFirst) / 1000),
    ms: performance.now() - start,
    reads: runs.reduce((sum, r) => sum + r.reads, 0),
    firstSpread: lastFirst - firstFirst,
    lastSpread: lastLast - firstLast,
    allRunning: inside / ((firstLast - lastFirst) / 1000),
    ttft: med(runs.map((r) => r.first - r.start)),
  };
}
await round();
const before = snapshot();
const cpu0 = process.cpuUsage();
const runs: Round[] = [];
for (let i = 0; i < Number(values.requests); i++) runs.push(await round());
const after = snapshot();
const total = tokens * runs.length * streams;
const list = (xs: number[], digits = 0) => xs.map((x) => x.toFixed(digits)).join(' ');
console.log(`${streams} stream(s) × ${runs.length} rounds, load ${loadavg()[0]!.toFixed(2)}`);
console.log(`round ms median ${med(runs.map((r) => r.ms)).toFixed(1)} (${list(runs.map((r) => r.ms))})`);
console.log(`t/s median ${med(runs.map((r) => r.tps)).toFixed(1)} (${list(runs.map((r) => r.tps))}), TTFT median ${med(runs.map((r) => r.ttft)).toFixed(0)} ms (${list(runs.map((r) => r.ttft))}), reads/token ${(runs.reduce((s, r) => s + r.reads, 0) / total).toFixed(2)}`);
if (streams > 1)
  console.log(
    `first-token spread ms median ${med(runs.map((r) => r.firstSpread)).toFixed(1)} (${list(runs.map((r) => r.firstSpread), 1)}), last-token spread ${med(runs.map((r) => r.lastSpread)).toFixed(1)} (${list(runs.map((r) => r.lastSpread), 1)}), ` +
      `t/s while all ${streams} run ${med(runs.map((r) => r.allRunning)).toFixed(1)} (${list(runs.map((r) => r.allRunning))})`,
  );
const clientCpu = process.cpuUsage(cpu0);
console.log(`  client (process.cpuUsage)                 ${((clientCpu.user + clientCpu.system) / total).toFixed(1).padStart(8)} µs/token`);
for (const [key, now] of after) {
  const was = before.get(key) ?? { ns: 0, vol: 0, invol: 0 };
  const us = (now.ns - was.ns) / 1000 / total;
  if (us < 1) continue;
  console.log(`  ${key.padEnd(36)} ${us.toFixed(1).padStart(8)} µs/token  vol ${((now.vol - was.vol) / total).toFixed(2)}  invol ${((now.invol - was.invol) / total).toFixed(2)} /token`);
}
agent.destroy();
