// Where one /v1/embeddings request's wall time goes at 1 client on Infera's ONNX engine (bench-embed, the
// weights of bert-384x12-embed), stage by stage from the client's send to its receive: the bench client's
// own marks plus those bench/onnx-path-hook.mjs takes in the server and the engine process (one clock:
// CLOCK_MONOTONIC), medians over --requests back-to-back requests, per round. Beside it, llama-server on
// the GGUF twin (--llama-bin): its client wall and CPU per request, the servers alternating round by round.
// Per server also the CPU each thread of its process tree spent per request and how often each thread
// slept (voluntary context switches: every one is a wake-up someone paid for on the request's path).
//
// With --clients N > 1 (closed-loop clients, as bench/vs-llama-server.ts's 32-client cells) the stages are
// left out (requests overlap) and Infera's micro-batches are read from its /metrics instead: batches per
// round, requests per batch, and the queue wait. ONNX_PATH_DEBUG=1 prints the first requests' raw marks.
//
//   npm run build && node --import tsx bench/onnx-path.ts [--infera-bin a/bin/infera.js,b/bin/infera.js]
//        [--llama-bin <dir>] [--requests 300] [--rounds 3] [--threads 2] [--clients 1]
//        [--onnx-options '{…}' | '[{…}, {…}]']
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, get as httpGet } from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify as toYaml } from 'yaml';
import { ensureBenchModel } from '../src/tiny-models/index.ts';
import { ensureBenchOnnxBert } from './bench-onnx-bert.ts';
import { sentences } from './embed-inputs.ts';
import { embedOne, spawnLlamaEmbeddings, whenAnswering } from './embed-servers.ts';
import { type TreeThread, treeThreads } from './proc-cpu.ts';

const { values } = parseArgs({
  options: {
    'llama-bin': { type: 'string' },
    'infera-bin': { type: 'string' },
    'onnx-options': { type: 'string', default: '{}' },
    threads: { type: 'string', default: '2' },
    requests: { type: 'string', default: '300' },
    rounds: { type: 'string', default: '3' },
    words: { type: 'string', default: '12' },
    clients: { type: 'string', default: '1' },
    port: { type: 'string', default: '8870' },
  },
});
const root = join(import.meta.dirname, '..');
const inferaBins = (values['infera-bin'] ?? join(root, 'bin', 'infera.js')).split(',');
const threads = Number(values.threads);
const requests = Number(values.requests);
const rounds = Number(values.rounds);
const words = Number(values.words);
const clients = Number(values.clients);
const optionsArg = JSON.parse(values['onnx-options']!) as Record<string, unknown> | Record<string, unknown>[];
const optionsOf = (index: number) => (Array.isArray(optionsArg) ? (optionsArg[index] ?? {}) : optionsArg);
const agent = new Agent({ keepAlive: true, maxSockets: Infinity });
const work = mkdtempSync(join(tmpdir(), 'infera-onnx-path-'));
const median = (xs: number[]) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]! : Number.NaN);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const now = () => process.hrtime.bigint();
let port = Number(values.port);

interface Server {
  label: string;
  child: ChildProcess;
  port: number;
  model: string;
  /** The hook's marks (Infera only). */
  marks?: string;
}

// The same inputs as bench/vs-llama-server.ts's onnx part: twelve words, a different sentence each time.
const sentence = sentences('vs', words);

function spawnInfera(bin: string, onnxPath: string, label: string, options: Record<string, unknown>): Server {
  const dataDir = mkdtempSync(join(work, 'infera-'));
  const config = {
    server: { logLevel: 'warn', maxRequestsPerSocket: 0 },
    storage: { dataDir },
    models: [{ id: 'bench/embed', type: 'embedding', eager: true, maxQueue: 1000, engine: 'onnx', path: onnxPath, onnx: { threads, ...options } }],
  };
  writeFileSync(join(dataDir, 'infera.yaml'), toYaml(config));
  const marks = join(dataDir, 'marks.txt');
  const p = port++;
  const child = spawn(process.execPath, [bin, 'serve', '--config', join(dataDir, 'infera.yaml'), '--port', String(p)], {
    env: {
      ...process.env,
      INFERA_API_KEY: '',
      INFERA_CONFIG: '',
      INFERA_DATA_DIR: dataDir,
      NODE_OPTIONS: `--import ${join(import.meta.dirname, 'onnx-path-hook.mjs')}`,
      INFERA_BENCH_PATH_FILE: marks,
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return { label, child, port: p, model: 'bench/embed', marks };
}

const spawnLlama = (dir: string, modelPath: string): Server => spawnLlamaEmbeddings(dir, modelPath, threads, port++);
const embed = (server: Server) => embedOne(agent, server, sentence());
const ready = (server: Server) => whenAnswering(server, () => embed(server));

/** Every thread of the process tree, keyed pid/tid, with its role: the server's own or the engine process's. */
function threadsOf(rootPid: number): Map<string, TreeThread & { role: string }> {
  const out = new Map<string, TreeThread & { role: string }>();
  for (const [key, thread] of treeThreads(rootPid)) out.set(key, { ...thread, role: thread.pid === rootPid ? 'server' : 'engine' });
  return out;
}

interface Round {
  wallMs: number[];
  rate: number;
  cpuUs: Map<string, number>;
  switches: Map<string, number>;
  totalCpuUs: number;
  /** Client send / receive of each request, ns. */
  spans: [bigint, bigint][];
  load: number;
  /** Infera's micro-batches over the round (from /metrics). */
  batching?: string;
}

/** Infera's micro-batcher histograms (Prometheus text): batches, requests batched, queue-wait sum. */
async function batchCounters(server: Server): Promise<{ batches: number; requests: number; waitSeconds: number; buckets: Map<string, number> } | undefined> {
  if (!server.marks) return undefined;
  const text = await new Promise<string>((resolve, reject) => {
    const request = httpGet({ host: '127.0.0.1', port: server.port, path: '/metrics', agent }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => (body += chunk));
      response.on('end', () => resolve(body));
    });
    request.on('error', reject);
  });
  const value = (re: RegExp) => Number(re.exec(text)?.[1] ?? Number.NaN);
  const buckets = new Map<string, number>();
  for (const m of text.matchAll(/^infera_batch_size_bucket\{[^}]*le="([^"]+)"[^}]*\} (\d+)/gm)) buckets.set(m[1]!, Number(m[2]));
  return {
    batches: value(/^infera_batch_size_count\{[^}]*\} (\d+)/m),
    requests: value(/^infera_batch_size_sum\{[^}]*\} (\d+)/m),
    waitSeconds: value(/^infera_queue_wait_seconds_sum\{[^}]*\} ([\d.e+-]+)/m),
    buckets,
  };
}

async function measure(server: Server): Promise<Round> {
  for (let i = 0; i < 10; i++) await embed(server);
  const batchesBefore = await batchCounters(server);
  const before = threadsOf(server.child.pid!);
  const wallMs: number[] = [];
  const spans: [bigint, bigint][] = [];
  const started = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      for (let i = 0; i < Math.ceil(requests / clients); i++) {
        const t0 = now();
        await embed(server);
        const t1 = now();
        spans.push([t0, t1]);
        wallMs.push(Number(t1 - t0) / 1e6);
      }
    }),
  );
  const rate = wallMs.length / ((performance.now() - started) / 1000);
  const after = threadsOf(server.child.pid!);
  const cpuUs = new Map<string, number>();
  const switches = new Map<string, number>();
  let total = 0;
  for (const [key, t] of after) {
    const was = before.get(key);
    const name = `${t.role}:${t.name}`;
    const us = (t.ns - (was?.ns ?? 0)) / 1000 / wallMs.length;
    cpuUs.set(name, (cpuUs.get(name) ?? 0) + us);
    switches.set(name, (switches.get(name) ?? 0) + (t.switches - (was?.switches ?? 0)) / wallMs.length);
    total += us;
  }
  const batchesAfter = await batchCounters(server);
  let batching: string | undefined;
  if (batchesBefore && batchesAfter) {
    const batches = batchesAfter.batches - batchesBefore.batches;
    const batched = batchesAfter.requests - batchesBefore.requests;
    const histogram = [...batchesAfter.buckets]
      .map(([le, count]) => `≤${le}: ${count - (batchesBefore.buckets.get(le) ?? 0)}`)
      .join(', ');
    batching = `${batches} batches, ${(batched / batches).toFixed(1)} requests a batch, queue wait ${(((batchesAfter.waitSeconds - batchesBefore.waitSeconds) / batched) * 1000).toFixed(2)} ms a request (cumulative: ${histogram})`;
  }
  return { wallMs, rate, cpuUs, switches, totalCpuUs: total, spans, load: loadavg()[0]!, batching };
}

const STAGES = [
  ['client → server parsed', 'send', 'in'],
  ['server: route, auth, batcher → IPC', 'in', 'call'],
  ['IPC to the engine', 'call', 'recv'],
  ['engine: args, tokenize, rows, tensors', 'recv', 'run'],
  ['ORT run (incl. its setImmediate)', 'run', 'ran'],
  ['engine: pool, normalize, flush tick', 'ran', 'reply'],
  ['engine: serialize + write', 'reply', 'replied'],
  ['send → server has it (incl. serialize)', 'reply', 'back'],
  ['server: answer JSON → socket', 'back', 'out'],
  ['socket → client has the body', 'out', 'recv-client'],
] as const;

/**
 * Per request: each stage's end is the first mark of its kind at or after the stage's start (a mark of the
 * previous request, such as its answer's 'out' once the socket drained, can fall inside this one's span).
 * Stage durations in µs.
 */
function stagesOf(marksFile: string, spans: [bigint, bigint][]): Map<string, number[]> {
  const marks = readFileSync(marksFile, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [, , ns, what] = line.split(' ');
      return { ns: BigInt(ns!), what: what! };
    })
    .sort((a, b) => (a.ns < b.ns ? -1 : a.ns > b.ns ? 1 : 0));
  const out = new Map<string, number[]>(STAGES.map(([name]) => [name, []]));
  out.set('runs per request', []);
  let at = 0;
  for (const [send, recv] of spans) {
    while (at < marks.length && marks[at]!.ns < send) at++;
    const inside: { ns: bigint; what: string }[] = [{ ns: send, what: 'send' }];
    for (let i = at; i < marks.length && marks[i]!.ns <= recv; i++) inside.push(marks[i]!);
    inside.push({ ns: recv, what: 'recv-client' });
    const first = (what: string, from: bigint) => inside.find((m) => m.what === what && m.ns >= from)?.ns;
    out.get('runs per request')!.push(inside.filter((m) => m.what === 'run').length);
    const times = new Map<string, bigint>([['send', send]]);
    for (const [name, from, to] of STAGES) {
      const a = times.get(from);
      const b = a === undefined ? undefined : first(to, a);
      if (b !== undefined) times.set(to, b);
      if (a !== undefined && b !== undefined) out.get(name)!.push(Number(b - a) / 1000);
    }
    if (process.env.ONNX_PATH_DEBUG && out.get('runs per request')!.length <= 3)
      console.log(inside.map(({ what, ns }) => `${what} +${(Number(ns - send) / 1000).toFixed(0)}`).join(', '));
  }
  return out;
}

const onnxPath = await ensureBenchOnnxBert('embed');
const servers: Server[] = [];
const stopAll = () => {
  for (const s of servers) if (s.child.exitCode === null) s.child.kill('SIGTERM');
};
process.on('SIGINT', () => {
  stopAll();
  process.exit(130);
});
try {
  for (const [index, bin] of inferaBins.entries()) {
    const options = optionsOf(index);
    const named = inferaBins.length > 1 ? `infera ${basename(dirname(dirname(bin)))}` : 'infera';
    servers.push(spawnInfera(bin, onnxPath, Object.keys(options).length ? `${named} ${JSON.stringify(options)}` : named, options));
  }
  if (values['llama-bin']) servers.push(spawnLlama(values['llama-bin'], await ensureBenchModel('bert-384x12-embed', join(tmpdir(), 'infera-bench-models'))));
  for (const server of servers) await ready(server);
  console.log(`onnx-path: ${new Date().toISOString()}, ${threads} threads, ${clients} client(s), ${requests} requests/round, ${words}-word inputs; ${servers.map((s) => s.label).join(', ')}`);
  const results = new Map<string, Round[]>(servers.map((s) => [s.label, []]));
  for (let round = 0; round < rounds; round++)
    for (const server of round % 2 ? [...servers].reverse() : servers) {
      const r = await measure(server);
      results.get(server.label)!.push(r);
      console.log(
        `round ${round + 1} ${server.label}: wall p50 ${median(r.wallMs).toFixed(2)} ms, ${r.rate.toFixed(1)} req/s, CPU ${(r.totalCpuUs / 1000).toFixed(2)} ms/request, load ${r.load.toFixed(2)}` +
          (r.batching ? `\n  ${r.batching}` : ''),
      );
    }
  // The servers flush their marks on exit.
  const exits = servers.map((s) => new Promise((resolve) => (s.child.exitCode === null ? s.child.once('exit', resolve) : resolve(undefined))));
  stopAll();
  await Promise.race([Promise.all(exits), sleep(15_000)]);
  for (const server of servers) {
    const rs = results.get(server.label)!;
    console.log(
      `\n${server.label}: wall p50 ${median(rs.map((r) => median(r.wallMs))).toFixed(2)} ms (rounds ${rs.map((r) => median(r.wallMs).toFixed(2)).join(' / ')}), ` +
        `${median(rs.map((r) => r.rate)).toFixed(1)} req/s, CPU ${(median(rs.map((r) => r.totalCpuUs)) / 1000).toFixed(2)} ms/request`,
    );
    if (server.marks && clients === 1) {
      const perRound = rs.map((r) => stagesOf(server.marks!, r.spans));
      console.log(`  stage (median µs per request, rounds)`);
      for (const name of perRound[0]!.keys()) {
        const meds = perRound.map((m) => median(m.get(name)!));
        console.log(`  ${name.padEnd(40)} ${median(meds).toFixed(name === 'runs per request' ? 2 : 0).padStart(7)}   (${meds.map((x) => x.toFixed(name === 'runs per request' ? 2 : 0)).join(' / ')})`);
      }
    }
    const names = new Set(rs.flatMap((r) => [...r.cpuUs.keys()]));
    const rows = [...names]
      .map((name) => [name, median(rs.map((r) => r.cpuUs.get(name) ?? 0)), median(rs.map((r) => r.switches.get(name) ?? 0))] as const)
      .filter(([, us, sw]) => us >= 10 || sw >= 0.05)
      .sort((a, b) => b[1] - a[1]);
    console.log(`  CPU per request by thread (median of rounds):`);
    for (const [name, us, sw] of rows) console.log(`  ${name.padEnd(40)} ${us.toFixed(0).padStart(6)} µs, ${sw.toFixed(2)} sleeps`);
  }
} finally {
  stopAll();
  await sleep(300);
  rmSync(work, { recursive: true, force: true });
}
