// Where one embeddings request's time goes at 1 client: Infera (compiled build, llama.cpp embedding model in
// its engine process) and llama-server on the same GGUF and threads, one request after another, the two
// servers alternating round by round. Per server and round: client wall time per request (median), and the
// CPU each thread of the server's process tree spent per request (schedstat, ns), grouped by process and by
// thread name, so that "the engine process spent X beyond the decode" can be read as which thread spent it.
// With --strace, a few requests per server run under `strace -f -tt` on the whole tree, and the timeline of
// one request (HTTP read → IPC → decode threads → IPC → HTTP write) is summarised as medians of the gaps.
//
//   npm run build && node --import tsx bench/embed-path.ts --llama-bin <dir> [--infera-bin a/bin/infera.js,b/bin/infera.js]
//        [--threads 2] [--requests 200] [--rounds 3] [--infera-engine '{"cpuBackend":"native"}'] [--strace 40]
//        (--infera-engine may be a JSON array, one llamaCpp object per --infera-bin, which may repeat:
//         --infera-bin b/bin/infera.js,b/bin/infera.js --infera-engine '[{}, {"poll":0}]')
//        [--engine onnx --onnx-options '{"spin":true}']   (Infera's ONNX engine on the same weights, bench-embed)
//        (--onnx-options may be a JSON array, one object per --infera-bin: '[{}, {"sessions":2}]')
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify as toYaml } from 'yaml';
import { ensureBenchModel } from '../src/tiny-models/index.ts';
import { ensureBenchOnnxBert } from './bench-onnx-bert.ts';
import { type EmbedInputs, sentences } from './embed-inputs.ts';
import { embedOne, spawnLlamaEmbeddings, whenAnswering } from './embed-servers.ts';
import { treeThreads } from './proc-cpu.ts';

const { values } = parseArgs({
  options: {
    'llama-bin': { type: 'string' },
    'infera-bin': { type: 'string' },
    'infera-engine': { type: 'string', default: '{}' },
    /** The Infera side's engine: llama-cpp on the GGUF, or onnx on the same weights exported (bench-embed), with --onnx-options merged into its onnx block. */
    engine: { type: 'string', default: 'llama-cpp' },
    'onnx-options': { type: 'string', default: '{}' },
    threads: { type: 'string', default: '2' },
    requests: { type: 'string', default: '200' },
    rounds: { type: 'string', default: '3' },
    words: { type: 'string', default: '12' },
    /** Whose sentences: 'path' (this bench's, ~33 tokens) or 'vs' (vs-llama-server's embeddings part, ~22 tokens): bench/embed-inputs.ts. */
    inputs: { type: 'string', default: 'path' },
    /** A round ends after this many seconds even if its requests are not all sent (0: no cap): on a loaded box a collapsed round otherwise takes minutes. */
    'round-seconds': { type: 'string', default: '0' },
    /** Concurrent clients, each sending --requests / clients requests one after another (default 1: the path of one request). */
    clients: { type: 'string', default: '1' },
    strace: { type: 'string', default: '0' },
    port: { type: 'string', default: '8840' },
    /** A directory: Infera's processes write V8 CPU profiles there (bench/cpu-profile-hook.mjs), from 20 s after spawn. */
    profile: { type: 'string' },
  },
});
const root = join(import.meta.dirname, '..');
const inferaBins = (values['infera-bin'] ?? join(root, 'bin', 'infera.js')).split(',');
const threads = Number(values.threads);
const requests = Number(values.requests);
const rounds = Number(values.rounds);
const words = Number(values.words);
const clients = Number(values.clients);
const straceRequests = Number(values.strace);
const roundCapMs = Number(values['round-seconds']) * 1000;
const engineArg = JSON.parse(values['infera-engine']!) as Record<string, unknown> | Record<string, unknown>[];
/** The llamaCpp block's extra options of the bin at `index` (one object for all, or one per bin). */
const engineOf = (index: number): Record<string, unknown> => (Array.isArray(engineArg) ? (engineArg[index] ?? {}) : engineArg);
const onnxOptionsArg = JSON.parse(values['onnx-options']!) as Record<string, unknown> | Record<string, unknown>[];
/** The onnx block's extra options of the bin at `index` (one object for all, or one per bin). */
const onnxOptionsOf = (index: number): Record<string, unknown> => (Array.isArray(onnxOptionsArg) ? (onnxOptionsArg[index] ?? {}) : onnxOptionsArg);
const agent = new Agent({ keepAlive: true, maxSockets: Infinity });
const work = mkdtempSync(join(tmpdir(), 'infera-embed-path-'));
const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * q)]!;
const median = (xs: number[]) => quantile(xs, 0.5);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
let port = Number(values.port);

interface Server {
  label: string;
  child: ChildProcess;
  port: number;
  model: string;
}

const sentence = sentences(values.inputs as EmbedInputs, words);

function spawnInfera(bin: string, modelPath: string, label: string, onnxOptions: Record<string, unknown>, engine: Record<string, unknown>): Server {
  const dataDir = mkdtempSync(join(work, 'infera-'));
  const config = {
    server: { logLevel: 'warn', maxRequestsPerSocket: 0 },
    storage: { dataDir },
    models: [
      values.engine === 'onnx'
        ? { id: 'bench/embed', type: 'embedding', eager: true, maxQueue: 1000, engine: 'onnx', path: onnxPath, onnx: { threads, ...onnxOptions } }
        : { id: 'bench/embed', type: 'embedding', eager: true, maxQueue: 1000, engine: 'llama-cpp', path: modelPath, llamaCpp: { contextSize: 512, contexts: 1, threads, ...engine } },
    ],
  };
  writeFileSync(join(dataDir, 'infera.yaml'), toYaml(config));
  const p = port++;
  const child = spawn(process.execPath, [bin, 'serve', '--config', join(dataDir, 'infera.yaml'), '--port', String(p)], {
    env: {
      ...process.env,
      INFERA_API_KEY: '',
      INFERA_CONFIG: '',
      INFERA_DATA_DIR: dataDir,
      ...(values.profile
        ? { NODE_OPTIONS: `--import ${join(import.meta.dirname, 'cpu-profile-hook.mjs')}`, INFERA_BENCH_PROFILE_DIR: values.profile, INFERA_BENCH_PROFILE_DELAY_MS: '20000' }
        : {}),
    },
    stdio: ['ignore', 'ignore', 'ignore'],
  });
  return { label, child, port: p, model: 'bench/embed' };
}

const spawnLlama = (dir: string, modelPath: string): Server => spawnLlamaEmbeddings(dir, modelPath, threads, port++);
const embed = (server: Server) => embedOne(agent, server, sentence());
const ready = (server: Server) => whenAnswering(server, () => embed(server));

const threadsOf = treeThreads;

interface Round {
  wallMs: number[];
  /** Requests per second over the round. */
  rate: number;
  /** CPU µs per request by "process role / thread name". */
  cpu: Map<string, number>;
  /** Voluntary context switches per request, same keys. */
  switches: Map<string, number>;
  totalCpuUs: number;
  load: number;
}

async function measure(server: Server): Promise<Round> {
  for (let i = 0; i < 10; i++) await embed(server);
  const before = threadsOf(server.child.pid!);
  const wallMs: number[] = [];
  const started = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      for (let i = 0; i < Math.ceil(requests / clients) && (roundCapMs === 0 || performance.now() - started < roundCapMs); i++) {
        const t0 = performance.now();
        await embed(server);
        wallMs.push(performance.now() - t0);
      }
    }),
  );
  const rate = wallMs.length / ((performance.now() - started) / 1000);
  const after = threadsOf(server.child.pid!);
  const cpu = new Map<string, number>();
  const switches = new Map<string, number>();
  let total = 0;
  for (const [key, now] of after) {
    const was = before.get(key)?.ns ?? 0;
    const role = now.pid === server.child.pid ? 'server' : 'engine';
    const name = `${role}:${now.name}`;
    const us = (now.ns - was) / 1000 / wallMs.length;
    cpu.set(name, (cpu.get(name) ?? 0) + us);
    switches.set(name, (switches.get(name) ?? 0) + (now.switches - (before.get(key)?.switches ?? 0)) / wallMs.length);
    total += us;
  }
  return { wallMs, rate, cpu, switches, totalCpuUs: total, load: loadavg()[0]! };
}

/** Runs `count` requests with strace on the tree; returns the per-request gaps between marked syscalls. */
async function traced(server: Server, count: number): Promise<string> {
  const out = join(work, `strace-${server.label.replace(/\W/g, '_')}.txt`);
  const pids = [...new Set([...threadsOf(server.child.pid!).values()].map((t) => t.pid))];
  const tracer = spawn('strace', ['-f', '-tt', '-T', '-o', out, '-e', 'trace=read,write,writev,sendmsg,recvmsg,recvfrom,sendto,futex,epoll_wait,epoll_pwait,poll', ...pids.flatMap((p) => ['-p', String(p)])], {
    stdio: 'ignore',
  });
  await sleep(1500);
  for (let i = 0; i < count; i++) {
    await embed(server);
    await sleep(20);
  }
  tracer.kill('SIGINT');
  await new Promise((resolve) => tracer.once('exit', resolve));
  return out;
}

const modelPath = await ensureBenchModel('bert-384x12-embed', join(tmpdir(), 'infera-bench-models'));
const onnxPath = values.engine === 'onnx' ? await ensureBenchOnnxBert('embed') : '';
const servers: Server[] = [];
const stopAll = () => {
  for (const s of servers) if (s.child.exitCode === null) s.child.kill('SIGTERM');
};
process.on('SIGINT', () => {
  stopAll();
  process.exit(130);
});
try {
  // Several builds: each column is named after its checkout's directory.
  for (const [index, bin] of inferaBins.entries()) {
    const options = onnxOptionsOf(index);
    const named = inferaBins.length > 1 ? `infera ${basename(dirname(dirname(bin)))}` : 'infera';
    const label =
      values.engine === 'onnx' && Array.isArray(onnxOptionsArg) && Object.keys(options).length
        ? `${named} ${JSON.stringify(options)}`
        : values.engine !== 'onnx' && Array.isArray(engineArg)
          ? `${named} ${JSON.stringify(engineOf(index))}`
          : named;
    servers.push(spawnInfera(bin, modelPath, label, options, engineOf(index)));
  }
  if (values['llama-bin']) servers.push(spawnLlama(values['llama-bin'], modelPath));
  for (const server of servers) await ready(server);
  console.log(`embed-path: ${new Date().toISOString()}, ${threads} threads, ${clients} client(s), ${requests} requests/round, ${words}-word inputs (${values.inputs}); ${servers.map((s) => s.label).join(', ')}; bins ${inferaBins.join(', ')}`);
  const results = new Map<string, Round[]>(servers.map((s) => [s.label, []]));
  for (let round = 0; round < rounds; round++)
    for (const server of round % 2 ? [...servers].reverse() : servers) {
      const r = await measure(server);
      results.get(server.label)!.push(r);
      console.log(
        `round ${round + 1} ${server.label}: wall p50 ${median(r.wallMs).toFixed(2)} ms (p10 ${quantile(r.wallMs, 0.1).toFixed(2)}), ${r.rate.toFixed(1)} requests/s, CPU ${(r.totalCpuUs / 1000).toFixed(2)} ms/request, load ${r.load.toFixed(2)}`,
      );
    }
  for (const server of servers) {
    const rs = results.get(server.label)!;
    const names = new Set(rs.flatMap((r) => [...r.cpu.keys()]));
    const rows = [...names]
      .map((name) => [name, median(rs.map((r) => r.cpu.get(name) ?? 0)), median(rs.map((r) => r.switches.get(name) ?? 0))] as const)
      .filter(([, us, sw]) => us >= 10 || sw >= 0.05)
      .sort((a, b) => b[1] - a[1]);
    console.log(
      `\n${server.label}: wall p50 ${median(rs.map((r) => median(r.wallMs))).toFixed(2)} ms (rounds ${rs.map((r) => median(r.wallMs).toFixed(2)).join(' / ')}; p10 ${rs.map((r) => quantile(r.wallMs, 0.1).toFixed(2)).join(' / ')}), ` +
        `CPU ${(median(rs.map((r) => r.totalCpuUs)) / 1000).toFixed(2)} ms/request`,
    );
    const best = rs.reduce((a, b) => (b.rate > a.rate ? b : a));
    console.log(`  best round: ${best.rate.toFixed(1)} requests/s, wall p50 ${median(best.wallMs).toFixed(2)} ms, CPU ${(best.totalCpuUs / 1000).toFixed(2)} ms/request, load ${best.load.toFixed(2)}`);
    const allSwitches = median(rs.map((r) => [...r.switches.values()].reduce((a, b) => a + b, 0)));
    console.log(`  voluntary context switches, all threads: ${allSwitches.toFixed(2)} per request`);
    for (const [name, us, sw] of rows) console.log(`  ${name.padEnd(34)} ${us.toFixed(0).padStart(6)} µs/request, ${sw.toFixed(2)} switches/request`);
  }
  if (straceRequests > 0)
    for (const server of servers) {
      const file = await traced(server, straceRequests);
      console.log(`\nstrace of ${server.label}: ${file}`);
    }
} finally {
  stopAll();
  await sleep(500);
  if (straceRequests === 0) rmSync(work, { recursive: true, force: true });
}
