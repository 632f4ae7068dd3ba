// Where a 1-stream token's time goes behind `infera serve`: t/s over HTTP and the CPU per token of each
// thread of the server process, of the engine process (its loop thread, the ggml pool's workers, the
// rest) and of this client, from /proc schedstat (ns) and the threads' voluntary/involuntary context
// switches. Several builds (--bin, comma-separated) run as separate servers, measured in alternation.
// Not a test: prints figures.
//
// Usage: node --import tsx bench/step-probe.ts [--bin a/bin/infera.js,b/bin/infera.js] [--model chat-512x8]
//          [--threads 2] [--tokens 128] [--rounds 6] [--engine '{"cpuBackend":"native"}' | '[{...},{...}]'] [--port 27600]
//          [--env '[{},{"NAME":"value"}]']   (extra environment per server, one object per --bin entry)
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify as toYaml } from 'yaml';
import { type BenchModelKind, ensureBenchModel } from '../src/tiny-models/index.ts';
import { postJson } from './http-post.ts';

const { values } = parseArgs({
  options: {
    bin: { type: 'string', default: join(import.meta.dirname, '..', 'bin', 'infera.js') },
    model: { type: 'string', default: 'chat-512x8' },
    threads: { type: 'string', default: '2' },
    tokens: { type: 'string', default: '128' },
    rounds: { type: 'string', default: '6' },
    engine: { type: 'string', default: '{}' },
    /** Extra environment per server (one object per --bin entry), e.g. to A/B an engine-process setting on one build. */
    env: { type: 'string', default: '[]' },
    port: { type: 'string', default: '27600' },
  },
});
const bins = values.bin!.split(',');
/** --engine: one llamaCpp object for every server, or an array of them (one per server, bins may repeat: an A/B on one build). */
const engineOptions: Record<string, unknown>[] = (() => {
  const parsed = JSON.parse(values.engine!) as Record<string, unknown> | Record<string, unknown>[];
  const list = Array.isArray(parsed) ? parsed : bins.map(() => parsed);
  if (list.length !== bins.length) throw new Error('--engine: one object per --bin entry');
  return list;
})();
const tokens = Number(values.tokens);
const threads = Number(values.threads);
const path = await ensureBenchModel(values.model as BenchModelKind, join(tmpdir(), 'infera-bench-models'));
const agent = new Agent({ keepAlive: true });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface ThreadTimes {
  name: string;
  ns: number;
  vol: number;
  invol: number;
}
function threadsOf(pid: number): Map<string, ThreadTimes> {
  const out = new Map<string, ThreadTimes>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      const ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      const vol = Number(/voluntary_ctxt_switches:\s+(\d+)/.exec(status)![1]);
      const invol = Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(status)![1]);
      out.set(tid, { name: Number(tid) === pid ? 'main' : name, ns, vol, invol });
    } catch {
      // gone
    }
  }
  return out;
}
function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

interface Server {
  /** bin and engine options, as the figures are labelled. */
  label: string;
  bin: string;
  port: number;
  child: ChildProcess;
}
const extraEnv = JSON.parse(values.env!) as Record<string, string>[];
function start(bin: string, engine: Record<string, unknown>, port: number, env: Record<string, string> = {}): Server {
  const dataDir = mkdtempSync(join(tmpdir(), 'step-probe-'));
  const config = {
    server: { logLevel: process.env.STEP_PROBE_STDOUT ? 'debug' : 'warn', maxRequestsPerSocket: 0 },
    storage: { dataDir },
    models: [{ id: 'bench/chat', type: 'chat', eager: true, engine: 'llama-cpp', path, llamaCpp: { contextSize: 1024, sequences: 1, threads, ...engine } }],
  };
  writeFileSync(join(dataDir, 'infera.yaml'), toYaml(config));
  const child = spawn(process.execPath, [bin, 'serve', '--config', join(dataDir, 'infera.yaml'), '--port', String(port)], {
    env: { ...process.env, ...env, INFERA_API_KEY: '', INFERA_CONFIG: '', INFERA_DATA_DIR: dataDir },
    stdio: ['ignore', process.env.STEP_PROBE_STDOUT ? 'inherit' : 'ignore', 'inherit'],
  });
  return { label: `${bin} ${JSON.stringify(engine)}${Object.keys(env).length ? ` ${JSON.stringify(env)}` : ''}`, bin, port, child };
}

let counter = 0;
async function run(server: Server): Promise<{ tps: number; events: number }> {
  let first = 0;
  let last = 0;
  let events = 0;
  const body = { model: 'bench/chat', messages: [{ role: 'user', content: `(${++counter}) Write a long story about a lighthouse keeper and the sea.` }], max_tokens: tokens, stream: true, temperature: 0, enable_thinking: false };
  const { status, text } = await postJson(agent, server.port, '/v1/chat/completions', body, (chunk) => {
    const now = performance.now();
    if (/"content":"[^"]/.test(chunk.toString('latin1'))) {
      events++;
      if (!first) first = now;
    }
    if (chunk.includes('"finish_reason":"')) last = now;
  });
  if (status !== 200) throw new Error(`HTTP ${status}: ${text.slice(0, 300)}`);
  return { tps: (tokens - 1) / ((last - first) / 1000), events };
}

async function ready(server: Server): Promise<void> {
  for (let i = 0; i < 600; i++) {
    try {
      await run(server);
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  throw new Error(`${server.label} did not answer`);
}

const servers = bins.map((bin, i) => start(bin, engineOptions[i]!, Number(values.port) + i, extraEnv[i]));
process.on('exit', () => {
  for (const server of servers) server.child.kill('SIGKILL');
});
for (const server of servers) await ready(server);
for (const server of servers) for (let i = 0; i < 2; i++) await run(server);

type Row = { tps: number; events: number; cpu: Record<string, number>; cs: Record<string, string> };
const rows = new Map<string, Row[]>(servers.map((server) => [server.label, []]));
for (let round = 0; round < Number(values.rounds); round++) {
  for (const server of round % 2 ? [...servers].reverse() : servers) {
    const engine = childPids(server.child.pid!)[0]!;
    const snap = () => ({ server: threadsOf(server.child.pid!), engine: threadsOf(engine), client: threadsOf(process.pid) });
    const before = snap();
    const { tps, events } = await run(server);
    const after = snap();
    const cpu: Record<string, number> = {};
    const cs: Record<string, string> = {};
    for (const side of ['server', 'engine', 'client'] as const) {
      const sums = new Map<string, { ns: number; vol: number; invol: number }>();
      for (const [tid, now] of after[side]) {
        const was = before[side].get(tid) ?? { ns: 0, vol: 0, invol: 0 };
        // The loop thread apart from the rest (the ggml pool's workers, V8's and libuv's threads).
        const key = `${side}:${now.name === 'main' ? 'main' : 'other'}`;
        const sum = sums.get(key) ?? { ns: 0, vol: 0, invol: 0 };
        sum.ns += now.ns - was.ns;
        sum.vol += now.vol - was.vol;
        sum.invol += now.invol - was.invol;
        sums.set(key, sum);
      }
      for (const [key, sum] of sums) {
        if (sum.ns < 1e6) continue;
        cpu[key] = sum.ns / 1000 / tokens;
        cs[key] = `${sum.vol}/${sum.invol}`;
      }
    }
    rows.get(server.label)!.push({ tps, events, cpu, cs });
    console.log(`round ${round + 1} ${server.label}: ${tps.toFixed(1)} t/s, ${events} reads, load ${loadavg()[0]!.toFixed(2)}; µs/token ${Object.entries(cpu).map(([k, v]) => `${k} ${v.toFixed(0)} (${cs[k]})`).join(', ')}`);
  }
}
console.log('\nmedians:');
for (const [label, list] of rows) {
  const keys = [...new Set(list.flatMap((row) => Object.keys(row.cpu)))].sort();
  console.log(`${label}: ${median(list.map((row) => row.tps)).toFixed(1)} t/s; ${keys.map((key) => `${key} ${median(list.map((row) => row.cpu[key] ?? 0)).toFixed(0)}`).join(', ')} µs/token`);
}
agent.destroy();
// SIGTERM, not SIGKILL: a profile hook (bench/cpu-profile-hook.mjs) writes its profile at exit.
await Promise.all(
  servers.map((server) => {
    const exited = new Promise((resolve) => server.child.once('exit', resolve));
    server.child.kill('SIGTERM');
    return exited;
  }),
);
process.exit(0);
