// Infera against llama.cpp's own `llama-server`, as a user choosing between the two would measure them:
// the same GGUF, the same llama.cpp commit (llama-server built from the source node-llama-cpp ships, by
// scripts/build-llama-server.sh), the same threads, context and parallel slots, both servers spawned as
// separate processes and measured in alternation over HTTP from this process. `llama-batched-bench` from the
// same build gives the no-server limit of each cell (llama.cpp's own loop: one decode per step, no sampling).
// Not a test: prints figures (and a markdown table) for docs/BENCHMARKS.md.
//
// Infera runs as the compiled build (`bin/infera.js serve` with a generated config, like llama-server from
// its command line), not the in-process app: that is what a user runs, its start-up time and RSS are a
// process's, and the bench client does not share an event loop with the server it measures.
//
//   npm run build && scripts/build-llama-server.sh && node --import tsx bench/vs-llama-server.ts [options]
//
// Parts (--parts, comma-separated; default all):
//   decode      {--models} × {--threads} × {--streams}, greedy, --tokens per stream
//   vocab       the 152k-vocabulary model, greedy and sampled, at --extra-threads
//   sampled     chat-512x8 with the sampled chain (temperature 0.7, top_p 0.9, top_k 40, repetition penalty 1.1)
//   embeddings  bert-384x12-embed at --embed-clients clients vs llama-server --embeddings: --embed-threads per
//               decode on both; llama-server batches its --embed-slots slots into one decode. Infera on its
//               default FFI runner packs up to 32 queued inputs (llamaCpp.batchSequences) into one decode on
//               each of --embed-contexts contexts (each with those threads); with --infera-engine
//               '{"runner":"node-llama-cpp"}' it runs --embed-contexts contexts one input at a time
//   onnx        the ONNX engine (engine `onnx`, --embed-threads intra-op threads) against llama-server on the
//               same weights as GGUF (same threads, --embed-slots slots): bench-embed vs bert-384x12-embed
//               (`--embeddings`), single-input /v1/embeddings requests, and bench-rerank vs
//               bert-384x12-rerank (`--reranking --flash-attn off`: llama.cpp's flash attention moves
//               reranker scores, see docs/BENCHMARKS.md), 4-document /v1/rerank requests; at
//               --embed-clients clients, --embed-seconds per measurement, alternating, medians of --rounds.
//               Also each server's CPU time per request (its whole process tree, from /proc): on a
//               shared box the steadier figure. --onnx-options '{"maxBatchSize":16}' is merged into the
//               model's `onnx` block.
//   startup     spawn → first answer, and idle RSS (whole process tree) per model
// --llama-args '<args>' go to llama-server and llama-batched-bench (e.g. --llama-args=-nr: see docs/BENCHMARKS.md;
// write it with '=' when the value starts with a dash: '--llama-args=--poll 0').
// The Infera side: --infera-engine '{"runner":"ffi"}' (or INFERA_BENCH_ENGINE) is merged into every
// llama-cpp model's `llamaCpp` options block, --infera-model '{"isolation":"none"}' (or INFERA_BENCH_MODEL)
// into the model entry itself; --infera-bin picks another build; --label names the column.
// Quiet box: before and during every measurement the CPU time of every process outside this bench's own
// tree is counted (/proc/stat minus ours); a measurement during which others used more than
// --max-other-cpu cores is retried (--retries), and a cell that stays busy is refused ("busy") unless
// --record-busy, which records it marked †. --max-load additionally waits for the 1-min load average.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { postJson } from './http-post.ts';
import { treeCpuJiffies, treeCpuNs } from './proc-cpu.ts';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify as toYaml } from 'yaml';
import { ensureBenchModel, type BenchModelKind } from '../src/tiny-models/index.ts';
import { drawnSentences } from './embed-inputs.ts';

const { values } = parseArgs({
  options: {
    parts: { type: 'string', default: 'decode,vocab,sampled,embeddings,onnx,startup' },
    models: { type: 'string', default: 'chat-512x8,chat-1024x16' },
    threads: { type: 'string', default: '1,2' },
    streams: { type: 'string', default: '1,8' },
    tokens: { type: 'string', default: '128' },
    rounds: { type: 'string', default: '3' },
    context: { type: 'string', default: '1024' },
    // Filler words before each decode prompt's question (the decode cells at a long context: attention
    // over the history dominates a step there, not the weights). Raise --context to hold them.
    'prompt-words': { type: 'string', default: '0' },
    slots: { type: 'string' },
    'extra-threads': { type: 'string', default: '2' },
    'embed-threads': { type: 'string', default: '2' },
    'embed-clients': { type: 'string', default: '1,32' },
    'embed-seconds': { type: 'string', default: '5' },
    'embed-slots': { type: 'string', default: '8' },
    'embed-contexts': { type: 'string', default: '1' },
    'startup-runs': { type: 'string', default: '3' },
    'startup-threads': { type: 'string', default: '1' },
    'max-other-cpu': { type: 'string', default: '0.25' },
    'max-load': { type: 'string' },
    'quiet-wait': { type: 'string', default: '60' },
    retries: { type: 'string', default: '2' },
    'record-busy': { type: 'boolean', default: false },
    'llama-bin': { type: 'string' },
    'llama-args': { type: 'string', default: '' },
    'infera-bin': { type: 'string' },
    'infera-engine': { type: 'string' },
    'infera-model': { type: 'string' },
    'onnx-options': { type: 'string' },
    'onnx-tasks': { type: 'string', default: 'embed,rerank' },
    label: { type: 'string', default: 'Infera' },
    'no-batched-bench': { type: 'boolean', default: false },
    port: { type: 'string', default: '8790' },
    out: { type: 'string' },
  },
});

const list = (s: string) => s.split(',').map((x) => x.trim()).filter(Boolean);
const parts = new Set(list(values.parts!));
const chatModels = list(values.models!) as BenchModelKind[];
const threadCounts = list(values.threads!).map(Number);
const streamCounts = list(values.streams!).map(Number);
const tokens = Number(values.tokens);
const rounds = Number(values.rounds);
const contextPerSlot = Number(values.context);
const slots = Number(values.slots ?? Math.max(...streamCounts));
const extraThreads = Number(values['extra-threads']);
const embedThreads = Number(values['embed-threads']);
const embedClients = list(values['embed-clients']!).map(Number);
const embedSeconds = Number(values['embed-seconds']);
const embedSlots = Number(values['embed-slots']);
const embedContexts = Number(values['embed-contexts']);
const startupRuns = Number(values['startup-runs']);
const startupThreads = Number(values['startup-threads']);
const maxOtherCpu = Number(values['max-other-cpu']);
const maxLoad = values['max-load'] === undefined ? Infinity : Number(values['max-load']);
const quietWaitMs = Number(values['quiet-wait']) * 1000;
const retries = Number(values.retries);
const recordBusy = values['record-busy']!;
const label = values.label!;
const basePort = Number(values.port);
const root = join(import.meta.dirname, '..');
const inferaBin = values['infera-bin'] ?? join(root, 'bin', 'infera.js');
const engineJson = values['infera-engine'] ?? process.env.INFERA_BENCH_ENGINE;
const engineOptions: Record<string, unknown> = engineJson ? JSON.parse(engineJson) : {};
if (typeof engineOptions !== 'object' || engineOptions === null || Array.isArray(engineOptions)) throw new Error('--infera-engine must be a JSON object');
const modelJson = values['infera-model'] ?? process.env.INFERA_BENCH_MODEL;
const modelOptions: Record<string, unknown> = modelJson ? JSON.parse(modelJson) : {};
if (typeof modelOptions !== 'object' || modelOptions === null || Array.isArray(modelOptions)) throw new Error('--infera-model must be a JSON object');
const onnxOptions: Record<string, unknown> = values['onnx-options'] ? JSON.parse(values['onnx-options']) : {};
const onnxTasks = list(values['onnx-tasks']!) as EncoderTask[];
if (slots < Math.max(...streamCounts)) throw new Error(`--slots ${slots} is below the largest stream count`);

// ---- set-up -------------------------------------------------------------------------------------------

function llamaBinDir(): string {
  if (values['llama-bin']) return values['llama-bin'];
  // The script prints the cached bin directory at once when the build exists, or builds it (~11 min).
  const built = spawnSync('bash', [join(root, 'scripts', 'build-llama-server.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (built.status !== 0) throw new Error('scripts/build-llama-server.sh failed');
  return built.stdout.trim().split('\n').at(-1)!;
}
const llamaBin = llamaBinDir();
const llamaServer = join(llamaBin, 'llama-server');
// Extra arguments for llama-server and llama-batched-bench alike, e.g. `-nr` (no weight repacking): on a
// Sapphire Rapids VM the native build's AMX kernels die with SIGILL on the first prompt batch.
const llamaArgs = list(values['llama-args']!.replace(/\s+/g, ','));
const batchedBench = join(llamaBin, 'llama-batched-bench');
if (!existsSync(join(root, 'dist', 'cli', 'main.js')) && !values['infera-bin']) throw new Error('dist/ is missing: run `npm run build` first');

const modelDir = join(tmpdir(), 'infera-bench-models');
const work = mkdtempSync(join(tmpdir(), 'infera-vs-llama-'));
const agent = new Agent({ keepAlive: true, maxSockets: Infinity });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
const cpuModel = cpus()[0]?.model ?? 'unknown CPU';

// ---- what else uses the CPU ---------------------------------------------------------------------------

/** All processes' busy CPU time (jiffies; steal counts: the hypervisor gave the core to someone else). */
function machineBusy(): number {
  const [, ...fields] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/);
  const [user, nice, system, , , irq, softirq, steal] = fields.map(Number);
  return user! + nice! + system! + irq! + softirq! + (steal ?? 0);
}


interface Window {
  /** Cores that processes outside this bench used on average during the window. */
  others: number;
}

function openWindow(): () => Window {
  const start = performance.now();
  const machine = machineBusy();
  const own = treeCpuJiffies(process.pid);
  return () => {
    const seconds = (performance.now() - start) / 1000;
    const others = (machineBusy() - machine - (treeCpuJiffies(process.pid) - own)) / CLOCK_TICKS / seconds;
    return { others: Math.max(0, others) };
  };
}

/** Waits (up to --quiet-wait) until the load average is under --max-load and others use under --max-other-cpu over 1 s. */
async function waitQuiet(): Promise<{ load: number; others: number }> {
  const deadline = performance.now() + quietWaitMs;
  for (;;) {
    const close = openWindow();
    await sleep(1000);
    const { others } = close();
    const load = loadavg()[0]!;
    if ((others <= maxOtherCpu && load <= maxLoad) || performance.now() > deadline) return { load, others };
  }
}

/**
 * Runs one measurement; retried while others used more than --max-other-cpu cores during it. Returns the
 * last try with the highest load seen by any try, so a busy figure is never passed off as a quiet one.
 */
async function measured<T>(run: () => Promise<T>, starved: (value: T) => boolean = () => false): Promise<{ value: T; others: number; busy: boolean }> {
  let last: { value: T; others: number; busy: boolean } | undefined;
  for (let attempt = 0; attempt <= retries; attempt++) {
    if (attempt > 0) await waitQuiet();
    const close = openWindow();
    const value = await run();
    const { others } = close();
    last = { value, others, busy: others > maxOtherCpu || starved(value) };
    if (!last.busy) return last;
  }
  return last!;
}

// ---- servers ------------------------------------------------------------------------------------------

interface Server {
  name: 'infera' | 'llama-server';
  port: number;
  child: ChildProcess;
  log: () => string;
  /** The model id requests name. */
  model: string;
}

/** Every server and llama-batched-bench still running: an interrupt stops them before it reports. */
const children = new Set<ChildProcess>();

let portCounter = 0;
const nextPort = () => basePort + (portCounter++ % 50);

interface ChatSetup {
  kind: 'chat';
  path: string;
  threads: number;
}
interface EmbedSetup {
  kind: 'embedding';
  path: string;
  threads: number;
}
type EncoderTask = 'embed' | 'rerank';
/** The ONNX engine on `onnxPath` for Infera, the same weights as GGUF (`path`) for llama-server. */
interface EncoderSetup {
  kind: 'encoder';
  task: EncoderTask;
  path: string;
  onnxPath: string;
  threads: number;
}
type Setup = ChatSetup | EmbedSetup | EncoderSetup;

const modelIdOf = (setup: Setup) => (setup.kind === 'chat' ? 'bench/chat' : setup.kind === 'encoder' && setup.task === 'rerank' ? 'bench/rerank' : 'bench/embed');

function inferaConfig(setup: Setup, dataDir: string): string {
  const engine =
    setup.kind === 'encoder'
      ? { engine: 'onnx', path: setup.onnxPath, onnx: { threads: setup.threads, ...onnxOptions } }
      : {
          engine: 'llama-cpp',
          path: setup.path,
          llamaCpp:
            setup.kind === 'chat'
              ? { contextSize: contextPerSlot, sequences: slots, threads: setup.threads, ...engineOptions }
              : { contextSize: 512, contexts: embedContexts, threads: setup.threads, ...engineOptions },
        };
  const config = {
    // maxRequestsPerSocket 0: past Node's default 1,000 requests on one kept-alive connection the server
    // answers 503, which a 5 s run of small requests reaches.
    server: { logLevel: 'warn', maxRequestsPerSocket: 0 },
    storage: { dataDir },
    models: [
      {
        id: modelIdOf(setup),
        type: setup.kind === 'chat' ? 'chat' : setup.kind === 'encoder' && setup.task === 'rerank' ? 'reranker' : 'embedding',
        eager: true,
        maxQueue: 1000,
        ...engine,
        ...modelOptions,
      },
    ],
  };
  const path = join(dataDir, 'infera.yaml');
  writeFileSync(path, toYaml(config));
  return path;
}

function llamaServerArgs(setup: Setup, port: number): string[] {
  const common = ['-m', setup.path, '--host', '127.0.0.1', '--port', String(port), '-t', String(setup.threads), '-tb', String(setup.threads), '--no-webui', ...llamaArgs];
  if (setup.kind === 'chat') return [...common, '-c', String(contextPerSlot * slots), '-np', String(slots)];
  const pool = ['-c', String(512 * embedSlots), '-np', String(embedSlots)];
  // Rerankers with flash attention off: llama.cpp's CPU flash attention rounds Q·K to F16 and moves scores.
  if (setup.kind === 'encoder' && setup.task === 'rerank') return [...common, '--reranking', '--flash-attn', 'off', ...pool];
  return [...common, '--embeddings', ...pool];
}

function spawnServer(name: Server['name'], setup: Setup): Server {
  const port = nextPort();
  let output = '';
  let child: ChildProcess;
  if (name === 'infera') {
    const dataDir = mkdtempSync(join(work, 'infera-'));
    const configPath = inferaConfig(setup, dataDir);
    child = spawn(process.execPath, [inferaBin, 'serve', '--config', configPath, '--port', String(port)], {
      env: { ...process.env, INFERA_API_KEY: '', INFERA_CONFIG: '', INFERA_DATA_DIR: dataDir },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
  } else {
    child = spawn(llamaServer, llamaServerArgs(setup, port), { stdio: ['ignore', 'ignore', 'pipe'] });
  }
  children.add(child);
  child.once('exit', () => children.delete(child));
  // Kept short: only for the error message if the server dies.
  child.stderr!.on('data', (chunk) => {
    output = (output + chunk).slice(-4000);
  });
  return { name, port, child, log: () => output, model: name === 'infera' ? modelIdOf(setup) : 'bench' };
}

async function stopServer(server: Server): Promise<void> {
  if (server.child.exitCode !== null) return;
  const exited = new Promise((resolve) => server.child.once('exit', resolve));
  server.child.kill('SIGTERM');
  const timeout = setTimeout(() => server.child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timeout);
}

// ---- HTTP -----------------------------------------------------------------------------------------------

function post(port: number, path: string, body: unknown, onData?: (chunk: Buffer) => void): Promise<{ status: number; text: string }> {
  return postJson(agent, port, path, body, onData);
}

let promptCounter = 0;
/** A different prompt every time (a numbered opening), so neither server can reuse a cached prefix. */
const promptWords = Number(values['prompt-words']);
const filler = Array.from({ length: promptWords }, (_, i) => `word${i % 50}`).join(' ');
const nextPrompt = () => `(${++promptCounter}) ${filler ? `${filler}\n` : ''}Write a long story about a lighthouse keeper and the sea.`;

type Sampling = 'greedy' | 'sampled';

/** The same request for both servers, each in its own dialect (thinking off, penalty, usage chunk). */
function chatBody(server: Server, maxTokens: number, sampling: Sampling, stream: boolean) {
  const body: Record<string, unknown> = {
    model: server.model,
    messages: [{ role: 'user', content: nextPrompt() }],
    max_tokens: maxTokens,
    stream,
    ...(stream ? { stream_options: { include_usage: true } } : {}),
  };
  if (sampling === 'greedy') body.temperature = 0;
  else {
    // The chain node-llama-cpp runs for these parameters (top_k 40 is its default), spelled out for both.
    Object.assign(body, { temperature: 0.7, top_p: 0.9, top_k: 40, min_p: 0 });
    if (server.name === 'infera') body.repetition_penalty = 1.1;
    // llama-server's names; 256 is Infera's penalty window.
    else Object.assign(body, { repeat_penalty: 1.1, repeat_last_n: 256 });
  }
  if (server.name === 'infera') body.enable_thinking = false;
  else body.chat_template_kwargs = { enable_thinking: false };
  return body;
}

interface StreamResult {
  /** performance.now() of the request, its first content token and its finish chunk. */
  start: number;
  first: number;
  last: number;
  generated: number;
  promptTokens: number;
  /** 'data' events that carried a token: far fewer than tokens means the client read late, in bulk. */
  events: number;
}

async function chatStream(server: Server, sampling: Sampling): Promise<StreamResult> {
  const start = performance.now();
  let first = 0;
  let last = 0;
  let events = 0;
  const { status, text } = await post(server.port, '/v1/chat/completions', chatBody(server, tokens, sampling, true), (chunk) => {
    const now = performance.now();
    // A token's chunk carries non-empty content; the first chunk of either server may be the role alone.
    if (/"content":"[^"]/.test(chunk.toString('latin1'))) {
      events++;
      if (!first) first = now;
    }
    if (!last && chunk.includes('"finish_reason":"')) last = now;
  });
  if (status !== 200) throw new Error(`${server.name}: HTTP ${status}: ${text.slice(0, 500)}`);
  const usage = text
    .split('\n')
    .filter((line) => line.startsWith('data: {'))
    .map((line) => JSON.parse(line.slice(6)))
    .findLast((event) => event.usage)?.usage;
  if (!usage) throw new Error(`${server.name}: no usage in the stream`);
  if (usage.completion_tokens !== tokens) throw new Error(`${server.name}: ${usage.completion_tokens} tokens instead of ${tokens} (the bench model must not stop early)`);
  return { start, first: first || last, last, generated: usage.completion_tokens, promptTokens: usage.prompt_tokens, events };
}

interface DecodeRun {
  /** Aggregate t/s over the decode phase: first token of any stream → last token of all. */
  tps: number;
  /** Median time to first token over the streams, ms. */
  ttft: number;
  /**
   * The server's CPU time (its whole process tree, every thread) per generated token, µs: steadier than
   * t/s on a shared box, and it shows where a server spends more (spinning pool threads included).
   */
  cpuUs: number;
  promptTokens: number;
  /**
   * Some stream's tokens arrived in fewer than half as many reads as tokens: the client was starved of CPU
   * and read them late in bulk, so its first/last times (and the t/s) are wrong. Counted as busy.
   */
  starved: boolean;
}

async function decodeRun(server: Server, streams: number, sampling: Sampling): Promise<DecodeRun> {
  const cpu0 = treeCpuNs(server.child.pid!);
  const results = await Promise.all(Array.from({ length: streams }, () => chatStream(server, sampling)));
  const cpuNs = treeCpuNs(server.child.pid!) - cpu0;
  const decodeStart = Math.min(...results.map((r) => r.first));
  const end = Math.max(...results.map((r) => r.last));
  const generated = results.reduce((sum, r) => sum + r.generated, 0);
  return {
    tps: generated / ((end - decodeStart) / 1000),
    ttft: median(results.map((r) => r.first - r.start)),
    cpuUs: cpuNs / 1000 / generated,
    promptTokens: results[0]!.promptTokens,
    starved: results.some((r) => r.events < r.generated / 2),
  };
}

/** Polls with a one-token request until the server answers it; resolves with the time since `since`. */
async function firstAnswer(server: Server, kind: 'chat' | 'embedding' | 'rerank', since: number): Promise<number> {
  for (;;) {
    const { exitCode, signalCode } = server.child;
    if (exitCode !== null || signalCode !== null)
      throw new Error(`${server.name} exited ${exitCode ?? signalCode}${signalCode ? ' (a SIGILL or SIGSEGV of llama.cpp in AMX kernels: try --llama-args=-nr)' : ''}: ${server.log()}`);
    try {
      const { status } =
        kind === 'chat'
          ? await post(server.port, '/v1/chat/completions', chatBody(server, 1, 'greedy', false))
          : kind === 'rerank'
            ? await post(server.port, '/v1/rerank', { model: server.model, query: 'hello', documents: ['hello world'] })
            : await post(server.port, '/v1/embeddings', { model: server.model, input: 'hello world' });
      if (status === 200) return performance.now() - since;
    } catch {
      // not listening yet
    }
    if (performance.now() - since > 300_000) throw new Error(`${server.name}: no answer within 300 s: ${server.log()}`);
    await sleep(10);
  }
}

async function startPair(setup: Setup): Promise<Server[]> {
  const servers = [spawnServer('infera', setup), spawnServer('llama-server', setup)];
  const since = performance.now();
  try {
    const probe = setup.kind === 'encoder' ? (setup.task === 'rerank' ? 'rerank' : 'embedding') : setup.kind;
    await Promise.all(servers.map((server) => firstAnswer(server, probe, since)));
  } catch (error) {
    await Promise.all(servers.map(stopServer));
    throw error;
  }
  return servers;
}

/** Sum of VmRSS (MiB) over a process and its descendants: Infera may run engines in child processes. */
function treeRssMiB(rootPid: number): number {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(parent, [...(children.get(parent) ?? []), Number(entry)]);
    } catch {
      // gone meanwhile
    }
  }
  let kib = 0;
  const pending = [rootPid];
  while (pending.length) {
    const pid = pending.pop()!;
    try {
      kib += Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
    } catch {
      // gone meanwhile
    }
    pending.push(...(children.get(pid) ?? []));
  }
  return kib / 1024;
}

// ---- llama-batched-bench ------------------------------------------------------------------------------

/** S_TG (t/s) of llama-batched-bench per parallel-sequence count, for one model and thread count. */
async function batchedBenchRun(path: string, threads: number, promptTokens: number): Promise<Map<number, number>> {
  const args = [
    '-m', path,
    '-c', String(contextPerSlot * slots),
    '-npp', String(promptTokens),
    '-ntg', String(tokens),
    '-npl', streamCounts.join(','),
    '-t', String(threads),
    '-tb', String(threads),
    '--output-format', 'jsonl',
    ...llamaArgs,
  ];
  // Asynchronous, so that an interrupt reaches the handler below while it runs.
  const child = spawn(batchedBench, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let output = '';
  child.stdout!.on('data', (chunk) => {
    output += chunk;
  });
  child.stderr!.on('data', (chunk) => {
    output += chunk;
  });
  const status = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  children.delete(child);
  if (status !== 0) throw new Error(`llama-batched-bench exited ${status ?? 'on a signal'} (a SIGILL in AMX kernels: try --llama-args=-nr): ${output.slice(-2000)}`);
  const speeds = new Map<number, number>();
  for (const line of output.split('\n')) {
    if (!line.startsWith('{"n_kv_max"')) continue;
    const row = JSON.parse(line);
    speeds.set(row.pl, row.speed_tg);
  }
  return speeds;
}

// ---- parts ----------------------------------------------------------------------------------------------

interface Sample {
  value: number;
  busy: boolean;
  others: number;
  /** The client read the streams in bulk: the figure is wrong, not only noisy, and never recorded. */
  starved?: boolean;
}
interface DecodeCell {
  model: string;
  threads: number;
  streams: number;
  sampling: Sampling;
  infera: Sample[];
  llama: Sample[];
  inferaTtft: number[];
  llamaTtft: number[];
  inferaCpu: number[];
  llamaCpu: number[];
  batched: Sample[];
  loads: number[];
}
const decodeCells: DecodeCell[] = [];

async function decodeGroup(kind: BenchModelKind, threads: number, samplings: Sampling[], withBatchedBench: boolean): Promise<void> {
  const path = await ensureBenchModel(kind, modelDir);
  console.log(`\n== ${kind}, ${threads} thread(s), ${slots} slots, context ${contextPerSlot}/slot: starting both servers`);
  const [infera, llama] = await startPair({ kind: 'chat', path, threads });
  try {
    // Warm-up: the first decodes of a fresh context are slower on both.
    for (const server of [infera!, llama!]) await decodeRun(server, Math.max(...streamCounts), 'greedy');
    const cells = new Map<string, DecodeCell>();
    let promptTokens = 0;
    for (let round = 0; round < rounds; round++) {
      for (const sampling of samplings)
        for (const streams of streamCounts) {
          const key = `${sampling}/${streams}`;
          if (!cells.has(key)) {
            const cell: DecodeCell = { model: kind, threads, streams, sampling, infera: [], llama: [], inferaTtft: [], llamaTtft: [], inferaCpu: [], llamaCpu: [], batched: [], loads: [] };
            cells.set(key, cell);
            // Listed at once, so an interrupted run still reports the rounds it finished.
            decodeCells.push(cell);
          }
          const cell = cells.get(key)!;
          const quiet = await waitQuiet();
          cell.loads.push(quiet.load);
          // Alternate who goes first, so neither side always runs right after the other.
          const order = round % 2 === 0 ? [infera!, llama!] : [llama!, infera!];
          for (const server of order) {
            const { value, others, busy } = await measured(
              () => decodeRun(server, streams, sampling),
              (run) => run.starved,
            );
            promptTokens = value.promptTokens;
            (server.name === 'infera' ? cell.infera : cell.llama).push({ value: value.tps, busy, others, starved: value.starved });
            // A bulk read delays the first token too: NaN, left out of the median.
            (server.name === 'infera' ? cell.inferaTtft : cell.llamaTtft).push(value.starved ? Number.NaN : value.ttft);
            (server.name === 'infera' ? cell.inferaCpu : cell.llamaCpu).push(value.cpuUs);
          }
          console.log(
            `round ${round + 1} ${sampling} ${streams} stream(s): ${label} ${cell.infera.at(-1)!.value.toFixed(1)} t/s, llama-server ${cell.llama.at(-1)!.value.toFixed(1)} t/s, ` +
              `TTFT ${cell.inferaTtft.at(-1)!.toFixed(0)} / ${cell.llamaTtft.at(-1)!.toFixed(0)} ms, ` +
              `CPU ${cell.inferaCpu.at(-1)!.toFixed(0)} / ${cell.llamaCpu.at(-1)!.toFixed(0)} µs/token, others ${Math.max(cell.infera.at(-1)!.others, cell.llama.at(-1)!.others).toFixed(2)} cores, load ${quiet.load.toFixed(2)}` +
                `${starvedNote(cell)}`,
          );
        }
      if (withBatchedBench && !values['no-batched-bench']) {
        await waitQuiet();
        const { value, others, busy } = await measured(() => batchedBenchRun(path, threads, promptTokens));
        for (const cell of cells.values()) {
          const speed = value.get(cell.streams);
          if (speed !== undefined) cell.batched.push({ value: speed, busy, others });
        }
        console.log(`round ${round + 1} llama-batched-bench (prompt ${promptTokens} tokens): ${[...value].map(([pl, s]) => `${pl} seq ${s.toFixed(1)} t/s`).join(', ')}`);
      }
    }
  } finally {
    await Promise.all([stopServer(infera!), stopServer(llama!)]);
  }
}

/** Marks a round in which the client read some stream in bulk (see DecodeRun.starved). */
function starvedNote(cell: DecodeCell): string {
  return [cell.infera.at(-1)!, cell.llama.at(-1)!].some((sample) => sample.starved) ? ' (client read a stream in bulk: that figure is dropped)' : '';
}

interface EmbedCell {
  clients: number;
  infera: Sample[];
  llama: Sample[];
  /** CPU milliseconds each server's process tree spent per embedding: the steadier figure on a shared box. */
  inferaCpu: number[];
  llamaCpu: number[];
}
const embedCells: EmbedCell[] = [];

const sentence = drawnSentences();

/** `clients` loops, each sending one single-input /v1/embeddings request after another for --embed-seconds. */
async function embedRun(server: Server, clients: number): Promise<{ rate: number; cpuMs: number }> {
  let items = 0;
  const cpu = treeCpuJiffies(server.child.pid!);
  const start = performance.now();
  const deadline = start + embedSeconds * 1000;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < deadline) {
        const { status, text } = await post(server.port, '/v1/embeddings', { model: server.model, input: sentence(12) });
        if (status !== 200) throw new Error(`${server.name}: HTTP ${status}: ${text.slice(0, 300)}`);
        items++;
      }
    }),
  );
  const cpuMs = ((treeCpuJiffies(server.child.pid!) - cpu) / CLOCK_TICKS) * 1000;
  return { rate: items / ((performance.now() - start) / 1000), cpuMs: cpuMs / items };
}

async function embeddingsPart(): Promise<void> {
  const path = await ensureBenchModel('bert-384x12-embed', modelDir);
  console.log(`\n== embeddings: bert-384x12-embed, ${embedThreads} threads (Infera: ${embedContexts} contexts; llama-server: ${embedSlots} slots)`);
  const [infera, llama] = await startPair({ kind: 'embedding', path, threads: embedThreads });
  try {
    for (const server of [infera!, llama!]) await embedRun(server, Math.max(...embedClients)).catch(() => 0);
    for (const clients of embedClients) {
      const cell: EmbedCell = { clients, infera: [], llama: [], inferaCpu: [], llamaCpu: [] };
      embedCells.push(cell);
      for (let round = 0; round < rounds; round++) {
        await waitQuiet();
        const order = round % 2 === 0 ? [infera!, llama!] : [llama!, infera!];
        for (const server of order) {
          const { value, others, busy } = await measured(() => embedRun(server, clients));
          (server.name === 'infera' ? cell.infera : cell.llama).push({ value: value.rate, busy, others });
          (server.name === 'infera' ? cell.inferaCpu : cell.llamaCpu).push(value.cpuMs);
        }
        console.log(
          `round ${round + 1} ${clients} client(s): ${label} ${cell.infera.at(-1)!.value.toFixed(1)} /s, llama-server ${cell.llama.at(-1)!.value.toFixed(1)} /s, ` +
            `CPU ${cell.inferaCpu.at(-1)!.toFixed(1)} / ${cell.llamaCpu.at(-1)!.toFixed(1)} ms/embedding`,
        );
      }
    }
  } finally {
    await Promise.all([stopServer(infera!), stopServer(llama!)]);
  }
}

interface EncoderSample extends Sample {
  /** CPU milliseconds the server's process tree spent per request. */
  cpuMs: number;
}
interface EncoderCell {
  task: EncoderTask;
  clients: number;
  infera: EncoderSample[];
  llama: EncoderSample[];
  loads: number[];
}
const encoderCells: EncoderCell[] = [];

/** The request both servers get: one ~20-token input, or a ~6-word query with 4 documents of 24 words (~48 tokens a pair). */
function encoderRequest(server: Server, task: EncoderTask): { path: string; body: unknown; check: (json: { data?: unknown[]; results?: unknown[] }) => boolean } {
  if (task === 'embed')
    return { path: '/v1/embeddings', body: { model: server.model, input: sentence(12) }, check: (json) => json.data?.length === 1 };
  return {
    path: '/v1/rerank',
    body: { model: server.model, query: sentence(6), documents: Array.from({ length: 4 }, () => sentence(24)) },
    check: (json) => json.results?.length === 4,
  };
}

/** `clients` loops of one request after another for --embed-seconds: requests/s and the server's CPU ms per request. */
async function encoderRun(server: Server, task: EncoderTask, clients: number): Promise<{ rate: number; cpuMs: number }> {
  let requests = 0;
  const cpu = treeCpuJiffies(server.child.pid!);
  const start = performance.now();
  const deadline = start + embedSeconds * 1000;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < deadline) {
        const { path, body, check } = encoderRequest(server, task);
        const { status, text } = await post(server.port, path, body);
        if (status !== 200 || !check(JSON.parse(text))) throw new Error(`${server.name} ${path}: HTTP ${status}: ${text.slice(0, 300)}`);
        requests++;
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  const cpuMs = ((treeCpuJiffies(server.child.pid!) - cpu) / CLOCK_TICKS) * 1000;
  return { rate: requests / seconds, cpuMs: cpuMs / requests };
}

async function onnxPart(): Promise<void> {
  const { ensureBenchOnnxBert } = await import('./bench-onnx-bert.ts');
  for (const task of onnxTasks) {
    const setup: EncoderSetup = {
      kind: 'encoder',
      task,
      path: await ensureBenchModel(task === 'embed' ? 'bert-384x12-embed' : 'bert-384x12-rerank', modelDir),
      onnxPath: await ensureBenchOnnxBert(task, modelDir),
      threads: embedThreads,
    };
    console.log(`\n== onnx ${task}: ${setup.onnxPath} vs llama-server on ${setup.path}, ${embedThreads} threads (llama-server: ${embedSlots} slots)`);
    const [infera, llama] = await startPair(setup);
    try {
      for (const server of [infera!, llama!]) await encoderRun(server, task, Math.max(...embedClients));
      for (const clients of embedClients) {
        const cell: EncoderCell = { task, clients, infera: [], llama: [], loads: [] };
        encoderCells.push(cell);
        for (let round = 0; round < rounds; round++) {
          const quiet = await waitQuiet();
          cell.loads.push(quiet.load);
          const order = round % 2 === 0 ? [infera!, llama!] : [llama!, infera!];
          for (const server of order) {
            const { value, others, busy } = await measured(() => encoderRun(server, task, clients));
            (server.name === 'infera' ? cell.infera : cell.llama).push({ value: value.rate, cpuMs: value.cpuMs, busy, others });
          }
          const [i, l] = [cell.infera.at(-1)!, cell.llama.at(-1)!];
          console.log(
            `round ${round + 1} ${task} ${clients} client(s): ${label} ${i.value.toFixed(1)} req/s (${i.cpuMs.toFixed(2)} CPU ms/req), ` +
              `llama-server ${l.value.toFixed(1)} req/s (${l.cpuMs.toFixed(2)} CPU ms/req), others ${Math.max(i.others, l.others).toFixed(2)} cores, load ${quiet.load.toFixed(2)}`,
          );
        }
      }
    } finally {
      await Promise.all([stopServer(infera!), stopServer(llama!)]);
    }
  }
}

interface StartupCell {
  model: string;
  inferaMs: number[];
  llamaMs: number[];
  inferaRss: number[];
  llamaRss: number[];
  busy: boolean;
}
const startupCells: StartupCell[] = [];

async function startupPart(): Promise<void> {
  const models: [string, Setup][] = [];
  for (const kind of [...new Set<BenchModelKind>([...chatModels, 'chat-512x8-vocab152k'])])
    models.push([kind, { kind: 'chat', path: await ensureBenchModel(kind, modelDir), threads: startupThreads }]);
  models.push(['bert-384x12-embed', { kind: 'embedding', path: await ensureBenchModel('bert-384x12-embed', modelDir), threads: startupThreads }]);
  console.log(`\n== start-up (spawn → first answer) and idle RSS, ${startupThreads} thread(s)`);
  for (const [name, setup] of models) {
    const cell: StartupCell = { model: name, inferaMs: [], llamaMs: [], inferaRss: [], llamaRss: [], busy: false };
    startupCells.push(cell);
    for (let run = 0; run < startupRuns; run++) {
      const order: Server['name'][] = run % 2 === 0 ? ['infera', 'llama-server'] : ['llama-server', 'infera'];
      for (const which of order) {
        await waitQuiet();
        const { value, busy } = await measured(async () => {
          // Both files were just read by the other side or a previous run: the page cache is warm for both.
          const since = performance.now();
          const server = spawnServer(which, setup);
          try {
            const ms = await firstAnswer(server, setup.kind === 'chat' ? 'chat' : 'embedding', since);
            // Idle: after the first answer has settled (lazy allocations done, GC had a chance).
            await sleep(2000);
            return { ms, rss: treeRssMiB(server.child.pid!) };
          } finally {
            await stopServer(server);
          }
        });
        cell.busy ||= busy;
        (which === 'infera' ? cell.inferaMs : cell.llamaMs).push(value.ms);
        (which === 'infera' ? cell.inferaRss : cell.llamaRss).push(value.rss);
      }
    }
    console.log(
      `${name}: first answer ${label} ${median(cell.inferaMs).toFixed(0)} ms / llama-server ${median(cell.llamaMs).toFixed(0)} ms; ` +
        `idle RSS ${median(cell.inferaRss).toFixed(0)} / ${median(cell.llamaRss).toFixed(0)} MiB`,
    );
  }
}

// ---- report ---------------------------------------------------------------------------------------------

/** Median of a cell's samples, or why it is not recorded. */
function figure(all: Sample[]): { text: string; value?: number } {
  if (!all.length) return { text: '–' };
  const samples = all.filter((s) => !s.starved);
  if (!samples.length) return { text: 'client starved' };
  const busy = samples.some((s) => s.busy);
  const value = median(samples.map((s) => s.value));
  if (busy && !recordBusy) return { text: `busy (${Math.max(...samples.map((s) => s.others)).toFixed(2)} cores)` };
  return { text: `${value.toFixed(1)}${busy ? ' †' : ''}`, value };
}
const ttftText = (xs: number[]) => {
  const usable = xs.filter((x) => !Number.isNaN(x));
  return usable.length ? median(usable).toFixed(0) : '–';
};
/** Medians of the servers' CPU per token, and their ratio. */
const cpuText = (infera: number[], llama: number[]) =>
  infera.length && llama.length ? `${median(infera).toFixed(0)} / ${median(llama).toFixed(0)} (${(median(infera) / median(llama)).toFixed(2)}×)` : '–';
const ratio = (a?: number, b?: number) => (a !== undefined && b !== undefined ? `${(a / b).toFixed(2)}×` : '–');

function report(): string {
  const lines: string[] = [];
  if (decodeCells.length) {
    lines.push(
      `| model | threads | streams | sampling | ${label} t/s | llama-server t/s | ${label} / llama-server | batched-bench t/s | ${label} / batched-bench | TTFT ${label} / llama-server (ms) | CPU µs/token ${label} / llama-server | load avg |`,
      '|---|---|---|---|---|---|---|---|---|---|---|---|',
    );
    for (const c of decodeCells) {
      if (!c.infera.length || !c.llama.length) continue;
      const i = figure(c.infera);
      const l = figure(c.llama);
      const b = figure(c.batched);
      lines.push(
        `| ${c.model} | ${c.threads} | ${c.streams} | ${c.sampling} | ${i.text} | ${l.text} | **${ratio(i.value, l.value)}** | ${b.text} | ${ratio(i.value, b.value)} | ` +
          `${ttftText(c.inferaTtft)} / ${ttftText(c.llamaTtft)} | ${cpuText(c.inferaCpu, c.llamaCpu)} | ${Math.min(...c.loads).toFixed(2)}–${Math.max(...c.loads).toFixed(2)} |`,
      );
    }
  }
  if (embedCells.length) {
    lines.push(
      '',
      `| embeddings (bert-384x12-embed, ${embedThreads} threads) | ${label} /s | llama-server /s | ratio | CPU ms/embedding ${label} / llama-server | CPU ratio (llama / ${label}) |`,
      '|---|---|---|---|---|---|',
    );
    for (const c of embedCells) {
      if (!c.infera.length || !c.llama.length) continue;
      const i = figure(c.infera);
      const l = figure(c.llama);
      const [ic, lc] = [median(c.inferaCpu), median(c.llamaCpu)];
      lines.push(`| ${c.clients} client(s) | ${i.text} | ${l.text} | **${ratio(i.value, l.value)}** | ${ic.toFixed(1)} / ${lc.toFixed(1)} | ${ratio(lc, ic)} |`);
    }
  }
  if (encoderCells.length) {
    lines.push(
      '',
      `| onnx engine vs llama-server (${embedThreads} threads) | clients | ${label} req/s | llama-server req/s | ratio | CPU ms/req ${label} / llama-server | CPU ratio (llama / ${label}) | load avg |`,
      '|---|---|---|---|---|---|---|---|',
    );
    for (const c of encoderCells) {
      if (!c.infera.length || !c.llama.length) continue;
      const i = figure(c.infera);
      const l = figure(c.llama);
      const ci = median(c.infera.map((s) => s.cpuMs));
      const cl = median(c.llama.map((s) => s.cpuMs));
      const what = c.task === 'embed' ? 'embeddings, 1 input' : 'rerank, 4 documents';
      lines.push(
        `| ${what} | ${c.clients} | ${i.text} | ${l.text} | **${ratio(i.value, l.value)}** | ${ci.toFixed(2)} / ${cl.toFixed(2)} | ${(cl / ci).toFixed(2)}× | ` +
          `${Math.min(...c.loads).toFixed(2)}–${Math.max(...c.loads).toFixed(2)} |`,
      );
    }
  }
  if (startupCells.length) {
    lines.push(
      '',
      `| start-up (${startupThreads} thread) | first answer ${label} (ms) | first answer llama-server (ms) | idle RSS ${label} (MiB) | idle RSS llama-server (MiB) | RSS difference |`,
      '|---|---|---|---|---|---|',
    );
    for (const c of startupCells) {
      if (!c.inferaMs.length || !c.llamaMs.length) continue;
      const mark = c.busy ? ' †' : '';
      const ri = median(c.inferaRss);
      const rl = median(c.llamaRss);
      lines.push(`| ${c.model} | ${median(c.inferaMs).toFixed(0)}${mark} | ${median(c.llamaMs).toFixed(0)}${mark} | ${ri.toFixed(0)} | ${rl.toFixed(0)} | ${ri >= rl ? '+' : '−'}${Math.abs(ri - rl).toFixed(0)} |`);
    }
  }
  return lines.join('\n');
}

const started = new Date();
const loadStart = loadavg();
const head =
  `bench/vs-llama-server: ${started.toISOString()}, ${cpuModel}, ${availableParallelism()} cores; llama.cpp ${llamaBin}; ` +
  `${llamaArgs.length ? `llama.cpp args ${llamaArgs.join(' ')}; ` : ''}Infera ${inferaBin}${engineJson ? ` engine ${JSON.stringify(engineOptions)}` : ''}${modelJson ? ` model ${JSON.stringify(modelOptions)}` : ''}; tokens ${tokens}/stream, rounds ${rounds} (median), ` +
  `slots ${slots}, context ${contextPerSlot}/slot; quiet = others ≤ ${maxOtherCpu} cores${Number.isFinite(maxLoad) ? `, load ≤ ${maxLoad}` : ''}; ` +
  `load average at start ${loadStart.map((x) => x.toFixed(2)).join(' ')}`;
console.log(head);

function finish(code: number, why?: string): never {
  const table = report();
  const loadEnd = loadavg();
  const summary =
    `${head}\nload average at end ${loadEnd.map((x) => x.toFixed(2)).join(' ')}; took ${((Date.now() - started.getTime()) / 60000).toFixed(1)} min` +
    `${why ? `; ${why}` : ''}\n\n${table}\n`;
  console.log(`\n${summary}`);
  if (!recordBusy) console.log('busy = others used more than --max-other-cpu during every try: not recorded (--record-busy records it, marked †).');
  else console.log('† = other processes used more than --max-other-cpu cores during at least one of the measurements: indicative only.');
  if (values.out) writeFileSync(values.out, summary);
  process.exit(code);
}

// An interrupted run (the busy box made it too slow) still stops its servers and reports the finished rounds.
for (const signal of ['SIGINT', 'SIGTERM'] as const)
  process.once(signal, () => {
    for (const child of children) child.kill('SIGKILL');
    agent.destroy();
    rmSync(work, { recursive: true, force: true });
    finish(130, `interrupted (${signal}): partial`);
  });

let failed: unknown;
try {
  if (parts.has('decode')) for (const kind of chatModels) for (const threads of threadCounts) await decodeGroup(kind, threads, ['greedy'], true);
  if (parts.has('vocab')) await decodeGroup('chat-512x8-vocab152k', extraThreads, ['greedy', 'sampled'], true);
  if (parts.has('sampled')) await decodeGroup('chat-512x8', extraThreads, ['sampled'], false);
  if (parts.has('embeddings')) await embeddingsPart();
  if (parts.has('onnx')) await onnxPart();
  if (parts.has('startup')) await startupPart();
} catch (error) {
  failed = error;
} finally {
  // Whatever a failure left running (a server, llama-batched-bench) goes too.
  for (const child of children) child.kill('SIGKILL');
  agent.destroy();
  rmSync(work, { recursive: true, force: true });
}

if (failed) console.error(failed);
finish(failed ? 1 : 0, failed ? 'failed: partial' : undefined);
