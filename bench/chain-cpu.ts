// CPU per streamed token of every thread of a running server's process tree (Infera's server and its
// engine process, or llama-server) and of this client, with voluntary/involuntary context switches, over
// 1-stream greedy or sampled requests: what each side of the chain (decode → server → client) costs per
// token, for either server, measured the same way. Not a test: prints figures.
//
// Usage: node --import tsx bench/chain-cpu.ts --port P --pid PID [--dialect infera|llama] [--model bench/chat]
//          [--tokens 128] [--requests 6] [--sampling greedy|sampled]
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
    sampling: { type: 'string', default: 'greedy' },
  },
});
const port = Number(values.port);
const root = Number(values.pid);
const tokens = Number(values.tokens);
// llama-server closes a kept-alive connection after a stream: a fresh one per request there.
const agent = new Agent({ keepAlive: values.dialect !== 'llama' });

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
async function one(): Promise<{ tps: number; reads: number; ms: number }> {
  const start = performance.now();
  let first = 0;
  let last = 0;
  let reads = 0;
  const { status, text } = await postJson(agent, port, '/v1/chat/completions', body(), (chunk) => {
    const now = performance.now();
    if (/"content":"[^"]/.test(chunk.toString('latin1'))) {
      reads++;
      if (!first) first = now;
    }
    if (chunk.includes('"finish_reason":"')) last = now;
  });
  if (status !== 200) throw new Error(`HTTP ${status}: ${text.slice(0, 300)}`);
  return { tps: (tokens - 1) / ((last - first) / 1000), reads, ms: performance.now() - start };
}
await one();
const before = snapshot();
const runs: { tps: number; reads: number; ms: number }[] = [];
for (let i = 0; i < Number(values.requests); i++) runs.push(await one());
const after = snapshot();
const total = tokens * runs.length;
const tps = runs.map((r) => r.tps).sort((a, b) => a - b);
const ms = runs.map((r) => r.ms).sort((a, b) => a - b);
console.log(`request ms median ${ms[ms.length >> 1]!.toFixed(1)} (${ms.map((t) => t.toFixed(0)).join(' ')})`);
console.log(`t/s median ${tps[tps.length >> 1]!.toFixed(1)} (${tps.map((t) => t.toFixed(0)).join(' ')}), reads/token ${(runs.reduce((s, r) => s + r.reads, 0) / total).toFixed(2)}, load ${loadavg()[0]!.toFixed(2)}`);
for (const [key, now] of after) {
  const was = before.get(key) ?? { ns: 0, vol: 0, invol: 0 };
  const us = (now.ns - was.ns) / 1000 / total;
  if (us < 1) continue;
  console.log(`  ${key.padEnd(36)} ${us.toFixed(1).padStart(8)} µs/token  vol ${((now.vol - was.vol) / total).toFixed(2)}  invol ${((now.invol - was.invol) / total).toFixed(2)} /token`);
}
agent.destroy();
