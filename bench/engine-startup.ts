// Engine process start-up and memory of the compiled build: spawn `infera serve --config X` with one
// eager llama-cpp chat model (isolation: process, the default), time spawn → first chat answer (polled
// every 10 ms), then, 2 s after that answer, read the idle RSS of the server and of the model's engine
// process, and the CPU time (utime + stime) each has used so far (the engine process's also when the first
// answer came: deferred work, such as the chat wrapper resolved when idle, is not in that one). CPU time is the steadier figure on a
// shared box: wall time there mostly measures the other tenants. A script, not a timed test.
//
//   npm run build && node --import tsx bench/engine-startup.ts [--runs 5] [--models tiny,chat-512x8]
//
// --bin a.js,b.js compares builds: each run starts every build in turn (a, b, a, b, ...), so a change of
// load on the box falls on all of them alike.
// A build given as PATH@none runs its model with `isolation: none` (the runner in the server process,
// decoding on a worker thread: one Node process instead of two).
// --cache warm (default) keeps one INFERA_CACHE_DIR per build over its runs (the unmeasured first start
// fills it: the llama.cpp FFI chat engine's chat-wrapper resolution is then cached, as on any restart);
// --cache cold gives every run an empty one (a first start ever).
// --breakdown prints each process's RSS / PSS by mapping group (bench/smaps.ts) and V8's heap spaces.
// --llama-server PATH also starts llama.cpp's llama-server on the same GGUF (-c 512 -np 1, same threads)
// in the same rotation, polled with the same request: its first answer, RSS and PSS.
// Memory: VmRSS and PSS (/proc/PID/smaps_rollup: shared pages split between the processes mapping them,
// so the server's and the engine process's shared libraries and Node binary are not counted twice).
// --timeline prints when each start-up step happened (bench/timeline-hook.mjs) in both processes.
// --profile DIR writes a CPU profile of the server and of its engine process per run into DIR
// (bench/cpu-profile-hook.mjs, preloaded through NODE_OPTIONS, which the engine process inherits).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { stringify as toYaml } from 'yaml';
import { ensureBenchModel, ensureTinyModels, type BenchModelKind } from '../src/tiny-models/index.ts';
import { smapsBreakdown, type Part } from './smaps.ts';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    models: { type: 'string', default: 'tiny,chat-512x8' },
    threads: { type: 'string', default: '1' },
    profile: { type: 'string' },
    bin: { type: 'string', default: join(import.meta.dirname, '..', 'bin', 'infera.js') },
    cache: { type: 'string', default: 'warm' },
    'llama-server': { type: 'string' },
    breakdown: { type: 'boolean', default: false },
    // The model's context per sequence and sequences (llama-server: -c context×sequences -np sequences);
    // --context 1024 --sequences 8 --contexts 1 is bench/vs-llama-server.ts's start-up configuration.
    context: { type: 'string', default: '512' },
    sequences: { type: 'string', default: '1' },
    // An embedding model's lanes (llamaCpp.contexts; unset: the engine's default).
    contexts: { type: 'string' },
    timeline: { type: 'boolean', default: false },
    // The chat probe's body: `plain` (one user message, max_tokens 1) or `no-thinking`, the body
    // bench/vs-llama-server.ts's start-up part polls with (temperature 0, enable_thinking: false): that one
    // needs the model's no-thinking chat wrapper for the first answer.
    request: { type: 'string', default: 'plain' },
    // Extra llama-server arguments, e.g. --llama-args=-nr (no weight repacking: on an AMX machine a
    // native llama-server build crashes in the AMX kernels; then it holds no repacked copy of the weights).
    'llama-args': { type: 'string', default: '' },
  },
});
const runs = Number(values.runs);
const modelDir = join(tmpdir(), 'infera-bench-models');
const work = mkdtempSync(join(tmpdir(), 'infera-engine-startup-'));
const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** utime + stime, plus cutime + cstime: processes it started and reaped count (node-llama-cpp test-loads its binary in one). */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) * 1000) / CLOCK_TICKS;
}
const pssMiB = (pid: number) => Number(/^Pss:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1]) / 1024;
const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024;

/** The server's child processes (the engine process is its only long-lived one). */
function childrenOf(pid: number): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

function post(port: number, path: string, body: unknown): Promise<number> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(
      { host: '127.0.0.1', port, path, method: 'POST', headers: { 'content-type': 'application/json' } },
      (response) => {
        response.resume();
        response.on('end', () => resolve(response.statusCode ?? 0));
      },
    );
    request.on('error', reject);
    request.end(JSON.stringify(body));
  });
}

interface Sample {
  firstAnswerMs: number;
  serverRss: number;
  childRss: number;
  serverCpu: number;
  childCpu: number;
  serverPss: number;
  childPss: number;
  /** The engine process's CPU time when the first answer came (NaN without one): the start-up's own share, before any deferred work. */
  childCpuAtAnswer: number;
}

/** A free TCP port (llama-server needs one named). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createNetServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

const cacheDirs = new Map<string, string>();

/** An embedding model (bert-*) is asked for an embedding, a chat model for one token. */
const isEmbedding = (path: string) => /bert-/.test(path);
const requestFor = (path: string) =>
  isEmbedding(path)
    ? { path: '/v1/embeddings', body: { model: 'bench/chat', input: 'Hello' } }
    : {
        path: '/v1/chat/completions',
        body: {
          model: 'bench/chat',
          messages: [{ role: 'user', content: 'Hello' }],
          max_tokens: 1,
          ...(values.request === 'no-thinking' && { temperature: 0, enable_thinking: false }),
        },
      };
if (values.request !== 'plain' && values.request !== 'no-thinking') throw new Error('--request is plain or no-thinking');

async function once(bin: string, path: string, threads: number, label = bin): Promise<Sample> {
  if (bin === 'llama-server') return onceLlamaServer(path, threads);
  // PATH[@isolation[@NODE_OPTIONS]]: NODE_OPTIONS reach the server and (inherited) its engine process.
  const [script, isolation = 'process', nodeOptions = ''] = bin.split('@') as [string, string, string];
  const dataDir = mkdtempSync(join(work, 'run-'));
  if (values.cache === 'warm' && !cacheDirs.has(bin)) cacheDirs.set(bin, mkdtempSync(join(work, 'cache-')));
  const configPath = join(dataDir, 'infera.yaml');
  writeFileSync(
    configPath,
    toYaml({
      server: { logLevel: 'warn', port: 0 },
      storage: { dataDir },
      models: [
        {
          id: 'bench/chat',
          type: isEmbedding(path) ? 'embedding' : 'chat',
          engine: 'llama-cpp',
          path,
          eager: true,
          isolation,
          llamaCpp: isEmbedding(path)
            ? { contextSize: Number(values.context), ...(values.contexts && { contexts: Number(values.contexts) }), threads }
            : { contextSize: Number(values.context), sequences: Number(values.sequences), threads },
        },
      ],
    }),
  );
  const since = performance.now();
  const spawnedAt = Date.now();
  const child: ChildProcess = spawn(process.execPath, [script, 'serve', '--config', configPath], {
    env: {
      ...process.env,
      INFERA_API_KEY: '',
      INFERA_CONFIG: '',
      INFERA_DATA_DIR: dataDir,
      INFERA_CACHE_DIR: values.cache === 'warm' ? cacheDirs.get(bin)! : join(dataDir, 'cache'),
      NODE_OPTIONS: [
        process.env.NODE_OPTIONS ?? '',
        nodeOptions,
        values.profile ? `--import ${join(import.meta.dirname, 'cpu-profile-hook.mjs')}` : '',
        values.breakdown ? `--import ${join(import.meta.dirname, 'memory-hook.mjs')}` : '',
        values.timeline ? `--import ${join(import.meta.dirname, 'timeline-hook.mjs')}` : '',
      ]
        .filter(Boolean)
        .join(' '),
      ...(values.profile && { INFERA_BENCH_PROFILE_DIR: values.profile }),
      ...(values.breakdown && { INFERA_BENCH_MEMORY_DIR: dataDir }),
      ...(values.timeline && { INFERA_BENCH_TIMELINE_FILE: join(dataDir, 'timeline.txt') }),
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  let port = 0;
  child.stderr!.on('data', (chunk) => {
    log = (log + chunk).slice(-4000);
    // An ephemeral port (other runs and other users share the box): the banner says which.
    port ||= Number(/serving the SiliconFlow \/ OpenAI API at http:\/\/[^:]+:(\d+)/.exec(log)?.[1] ?? 0);
  });
  try {
    const firstAnswerMs = await firstAnswer('infera', child, since, () => port, () => log, path);
    const engineAtAnswer = childrenOf(child.pid!)[0];
    const childCpuAtAnswer = engineAtAnswer === undefined ? Number.NaN : cpuMs(engineAtAnswer);
    if (values.timeline) printTimeline(label, spawnedAt, join(dataDir, 'timeline.txt'));
    // Idle: after the first answer has settled (lazy allocations done, GC had a chance).
    await sleep(2000);
    const engines = childrenOf(child.pid!);
    if (engines.length !== (isolation === 'none' ? 0 : 1)) throw new Error(`expected ${isolation === 'none' ? 'no' : 'one'} engine process, found ${engines.length}`);
    const engine = engines[0];
    if (values.breakdown) await printBreakdown(label, dataDir, [child.pid!, ...engines]);
    if (engine === undefined) {
      return oneProcess(firstAnswerMs, child.pid!);
    }
    return {
      firstAnswerMs,
      serverRss: rssMiB(child.pid!),
      childRss: rssMiB(engine),
      serverCpu: cpuMs(child.pid!),
      childCpu: cpuMs(engine),
      serverPss: pssMiB(child.pid!),
      childPss: pssMiB(engine),
      childCpuAtAnswer,
    };
  } finally {
    if (child.exitCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/**
 * --timeline: each step (bench/timeline-hook.mjs) in ms after spawn (wall clock, both processes on one
 * axis), in ms after its own process started, and the CPU time its process had used by then.
 */
function printTimeline(label: string, spawnedAt: number, file: string): void {
  console.log(`\n${label}: timeline (ms after spawn / after its process started / its CPU ms by then)`);
  const marks = readFileSync(file, 'utf8').trim().split('\n').map((line) => line.split(' '));
  marks.sort((a, b) => Number(a[1]) - Number(b[1]));
  for (const [role, wall, own, cpu, ...what] of marks)
    console.log(`  ${String(Number(wall) - spawnedAt).padStart(6)} ${Number(own).toFixed(0).padStart(6)} ${cpu!.padStart(6)}  ${role!.padEnd(6)} ${what.join(' ')}`);
}

/** Polls a one-token chat every 10 ms from `since` until it answers 200: the time to the first answer. */
async function firstAnswer(name: string, child: ChildProcess, since: number, port: () => number | undefined, log: () => string, model: string): Promise<number> {
  const { path, body } = requestFor(model);
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${name} exited ${child.exitCode}: ${log()}`);
    const at = port();
    const status = at ? await post(at, path, body).catch(() => 0) : 0;
    if (status === 200) return performance.now() - since;
    if (performance.now() - since > 120_000) throw new Error(`no answer within 120 s: ${log()}`);
    await sleep(10);
  }
}

/** A sample of a single process (llama-server, or Infera with isolation: none): its figures in the server columns. */
function oneProcess(firstAnswerMs: number, pid: number): Sample {
  return { firstAnswerMs, serverRss: rssMiB(pid), childRss: 0, serverCpu: cpuMs(pid), childCpu: 0, serverPss: pssMiB(pid), childPss: 0, childCpuAtAnswer: Number.NaN };
}

/** llama-server on the same GGUF: one process (its numbers go in the server columns; the engine's are 0). */
async function onceLlamaServer(path: string, threads: number): Promise<Sample> {
  const port = await freePort();
  const since = performance.now();
  const args = ['-m', path, '--host', '127.0.0.1', '--port', String(port), '-c', String(Number(values.context) * Number(values.sequences)), '-np', values.sequences, '-t', String(threads), '-tb', String(threads), '--no-webui'];
  if (isEmbedding(path)) args.push('--embedding');
  args.push(...values['llama-args'].split(' ').filter(Boolean));
  const child: ChildProcess = spawn(values['llama-server']!, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (chunk) => {
    log = (log + chunk).slice(-4000);
  });
  try {
    const firstAnswerMs = await firstAnswer('llama-server', child, since, () => port, () => log, path);
    await sleep(2000);
    if (values.breakdown) await printBreakdown('llama-server', undefined, [child.pid!]);
    return oneProcess(firstAnswerMs, child.pid!);
  } finally {
    if (child.exitCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
  }
}

/**
 * --breakdown: each process's RSS / PSS by mapping (bench/smaps.ts) and, for Node processes (through
 * bench/memory-hook.mjs, asked with SIGUSR2), V8's own account of its heap spaces.
 */
async function printBreakdown(label: string, reportDir: string | undefined, pids: number[]): Promise<void> {
  if (reportDir) for (const pid of pids) process.kill(pid, 'SIGUSR2');
  await sleep(300);
  for (const pid of pids) {
    const { parts, threads } = smapsBreakdown(pid);
    const total = [...parts.values()].reduce((sum, p) => ({ rss: sum.rss + p.rss, pss: sum.pss + p.pss }), { rss: 0, pss: 0 } as Part);
    const role = pids.length === 1 ? 'process' : pid === pids[0] ? 'server' : 'engine';
    console.log(`\n${label}: ${role} ${pid}, ${threads} threads, RSS ${total.rss.toFixed(1)} MiB, PSS ${total.pss.toFixed(1)} MiB`);
    for (const [group, part] of [...parts].sort((a, b) => b[1].rss - a[1].rss))
      if (part.rss >= 0.1) console.log(`  ${part.rss.toFixed(1).padStart(6)} ${part.pss.toFixed(1).padStart(6)}  ${group}`);
    if (!reportDir) continue;
    const file = readdirSync(reportDir).find((f) => f.endsWith(`-${pid}.json`));
    if (!file) continue;
    const report = JSON.parse(readFileSync(join(reportDir, file), 'utf8')) as {
      execArgv: string[];
      cjs: string[];
      memoryUsage: Record<string, number>;
      spaces: { space_name: string; space_size: number; space_used_size: number; physical_space_size: number }[];
    };
    const mib = (bytes: number) => (bytes / 1048576).toFixed(1);
    const u = report.memoryUsage;
    console.log(`  V8 (execArgv ${report.execArgv.join(' ') || '-'}): heapTotal ${mib(u.heapTotal!)} used ${mib(u.heapUsed!)} external ${mib(u.external!)} arrayBuffers ${mib(u.arrayBuffers!)}`);
    const packages = new Map<string, number>();
    for (const file of report.cjs) {
      const name = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(file.split('node_modules').length > 2 ? file.slice(file.lastIndexOf('node_modules')) : file)?.[1] ?? 'app';
      packages.set(name, (packages.get(name) ?? 0) + 1);
    }
    console.log(`  CommonJS modules loaded: ${report.cjs.length} (${[...packages].sort((a, b) => b[1] - a[1]).map(([n, c]) => `${n} ${c}`).join(', ')})`);
    console.log(`  V8 spaces physical/used MiB: ${report.spaces.filter((s) => s.physical_space_size > 0).map((s) => `${s.space_name} ${mib(s.physical_space_size)}/${mib(s.space_used_size)}`).join(', ')}`);
  }
}

const load = () => loadavg().map((l) => l.toFixed(2)).join(' ');
console.log(`${new Date().toISOString()} load average ${load()}, node ${process.version}, builds: ${values.bin}`);
const tiny = await ensureTinyModels(join(modelDir, 'tiny'));
const bins = [...values.bin.split(','), ...(values['llama-server'] ? ['llama-server'] : [])];
const rows: string[] = [];
const atAnswer: string[] = [];
for (const name of values.models.split(',')) {
  const path = name === 'tiny' ? tiny.chat : await ensureBenchModel(name as BenchModelKind, modelDir);
  // One unmeasured start each: page cache and the compiled code cache warm, as for every measured run.
  for (const bin of bins) await once(bin, path, Number(values.threads));
  const samples = bins.map((): Sample[] => []);
  for (let i = 0; i < runs; i++)
    for (const [b, bin] of bins.entries()) {
      const sample = await once(bin, path, Number(values.threads), `${name} ${bin} run ${i + 1}`);
      samples[b]!.push(sample);
      console.log(
        `${name} ${bin} run ${i + 1}: first answer ${sample.firstAnswerMs.toFixed(0)} ms; engine process ${sample.childRss.toFixed(1)} MiB, ` +
          `${sample.childCpu.toFixed(0)} ms CPU (${sample.childCpuAtAnswer.toFixed(0)} at the first answer), PSS ${sample.childPss.toFixed(1)}; server ${sample.serverRss.toFixed(1)} MiB, ${sample.serverCpu.toFixed(0)} ms CPU, ` +
          `PSS ${sample.serverPss.toFixed(1)}; total RSS ${(sample.serverRss + sample.childRss).toFixed(1)} PSS ${(sample.serverPss + sample.childPss).toFixed(1)} (load ${load()})`,
      );
    }
  for (const [b, bin] of bins.entries()) {
    const m = (key: keyof Sample) => median(samples[b]!.map((s) => s[key]));
    atAnswer.push(`${name} ${bin} ${m('childCpuAtAnswer').toFixed(0)}`);
    rows.push(
      `| ${name} | ${bin} | ${m('firstAnswerMs').toFixed(0)} | ${m('childCpu').toFixed(0)} | ${m('childRss').toFixed(1)} | ${m('childPss').toFixed(1)} | ` +
        `${m('serverCpu').toFixed(0)} | ${m('serverRss').toFixed(1)} | ${m('serverPss').toFixed(1)} | ${median(samples[b]!.map((x) => x.serverRss + x.childRss)).toFixed(1)} | ` +
        `${median(samples[b]!.map((x) => x.serverPss + x.childPss)).toFixed(1)} |`,
    );
  }
}
rmSync(work, { recursive: true, force: true });
console.log(`\nmedians of ${runs}, load average at end ${load()}`);
console.log(`medians of ${runs}, cache ${values.cache}`);
console.log(
  '| model | build | first answer (ms) | engine process CPU (ms) | engine idle RSS (MiB) | engine PSS (MiB) | server CPU (ms) | server idle RSS (MiB) | server PSS (MiB) | total RSS (MiB) | total PSS (MiB) |',
);
console.log('|---|---|---|---|---|---|---|---|---|---|---|');
for (const row of rows) console.log(row);
console.log(`engine process CPU at the first answer (ms), medians: ${atAnswer.join(', ')}`);
