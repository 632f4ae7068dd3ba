// What each server's decodes hold at N concurrent embedding clients, round by round, beside the rate and
// the CPU per embedding: llama-server from its own /metrics (`--metrics`: llama_decode calls, busy slots
// per decode, prompt tokens), Infera from the encoder's per-decode trace (INFERA_ENCODER_TRACE, a file
// the engine process appends one line to per decode: lane, threads, context, kind, inputs, tokens, wall,
// still queued — only builds with bench/encoder-trace.patch applied write it; without it the Infera columns
// stay empty). The trace file is written in the process that holds the model (the engine process, or the
// server with `isolation: none`).
// The servers alternate round by round, each round N closed-loop clients for --seconds. Not a test.
//
//   npm run build && node --import tsx bench/embed-batches.ts --llama-bin <dir> [--infera-bin a/bin/infera.js,b/bin/infera.js]
//        [--infera-engine '{"cpuBackend":"native"}' | '[{...}, {...}]'] [--clients 32] [--seconds 5] [--rounds 3]
//        [--infera-model '[{}, {"isolation":"none"}]'] [--threads 2] [--inputs vs|path] [--slots 8] [--keep-trace <dir>]
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, get } from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify as toYaml } from 'yaml';
import { ensureBenchModel } from '../src/tiny-models/index.ts';
import { type EmbedInputs, sentences } from './embed-inputs.ts';
import { embedOne, whenAnswering } from './embed-servers.ts';
import { treeCpuNs } from './proc-cpu.ts';

const { values } = parseArgs({
  options: {
    'llama-bin': { type: 'string' },
    'infera-bin': { type: 'string' },
    'infera-engine': { type: 'string', default: '{}' },
    /** Model-entry options of each --infera-bin (one object for all, or an array), e.g. '[{}, {"isolation":"none"}]'. */
    'infera-model': { type: 'string', default: '{}' },
    clients: { type: 'string', default: '32' },
    seconds: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '3' },
    threads: { type: 'string', default: '2' },
    slots: { type: 'string', default: '8' },
    words: { type: 'string', default: '12' },
    inputs: { type: 'string', default: 'vs' },
    port: { type: 'string', default: '8870' },
    /** A directory to copy each Infera server's encoder trace into (encoder-trace-<n>.txt) before the work dir is removed. */
    'keep-trace': { type: 'string' },
  },
});
const clients = Number(values.clients);
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const threads = Number(values.threads);
const slots = Number(values.slots);
const inferaBins = values['infera-bin'] ? values['infera-bin'].split(',') : [];
const engineArg = JSON.parse(values['infera-engine']!) as Record<string, unknown> | Record<string, unknown>[];
const engineOf = (index: number): Record<string, unknown> => (Array.isArray(engineArg) ? (engineArg[index] ?? {}) : engineArg);
const modelArg = JSON.parse(values['infera-model']!) as Record<string, unknown> | Record<string, unknown>[];
const modelOf = (index: number): Record<string, unknown> => (Array.isArray(modelArg) ? (modelArg[index] ?? {}) : modelArg);
const agent = new Agent({ keepAlive: true, maxSockets: Infinity });
const work = mkdtempSync(join(tmpdir(), 'infera-embed-batches-'));
const sentence = sentences(values.inputs as EmbedInputs, Number(values.words));
let port = Number(values.port);

interface Server {
  label: string;
  child: ChildProcess;
  port: number;
  model: string;
  /** Infera: the encoder's trace file. */
  trace?: string;
}

const modelPath = await ensureBenchModel('bert-384x12-embed', join(tmpdir(), 'infera-bench-models'));

function spawnInfera(bin: string, index: number): Server {
  const dataDir = mkdtempSync(join(work, 'infera-'));
  const trace = join(dataDir, 'encoder-trace.txt');
  const config = {
    server: { logLevel: 'warn', maxRequestsPerSocket: 0 },
    storage: { dataDir },
    models: [
      { id: 'bench/embed', type: 'embedding', eager: true, maxQueue: 1000, engine: 'llama-cpp', path: modelPath, llamaCpp: { contextSize: 512, contexts: 1, threads, ...engineOf(index) }, ...modelOf(index) },
    ],
  };
  writeFileSync(join(dataDir, 'infera.yaml'), toYaml(config));
  const p = port++;
  const child = spawn(process.execPath, [bin, 'serve', '--config', join(dataDir, 'infera.yaml'), '--port', String(p)], {
    env: { ...process.env, INFERA_API_KEY: '', INFERA_CONFIG: '', INFERA_DATA_DIR: dataDir, INFERA_ENCODER_TRACE: trace },
    stdio: ['ignore', 'ignore', 'ignore'],
  });
  const named = inferaBins.length > 1 ? `infera ${basename(dirname(dirname(bin)))}` : 'infera';
  const options = { ...(Array.isArray(engineArg) ? engineOf(index) : {}), ...(Array.isArray(modelArg) ? modelOf(index) : {}) };
  return { label: Object.keys(options).length ? `${named} ${JSON.stringify(options)}` : named, child, port: p, model: 'bench/embed', trace };
}

function spawnLlama(dir: string): Server {
  const p = port++;
  // As bench/embed-servers.ts (vs-llama-server's embeddings part), plus --metrics.
  const args = ['-m', modelPath, '--host', '127.0.0.1', '--port', String(p), '-t', String(threads), '-tb', String(threads), '--no-webui', '--embeddings'];
  const child = spawn(join(dir, 'llama-server'), [...args, '-c', String(512 * slots), '-np', String(slots), '--metrics'], { stdio: ['ignore', 'ignore', 'ignore'] });
  return { label: 'llama-server', child, port: p, model: 'bench' };
}

/** llama-server's counters: decodes, busy slots summed over decodes, prompt tokens. */
async function llamaCounters(server: Server): Promise<{ decodes: number; busy: number; tokens: number; seconds: number }> {
  const text = await new Promise<string>((resolve, reject) => {
    get({ host: '127.0.0.1', port: server.port, path: '/metrics', agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
  const value = (name: string) => Number(/^llamacpp:(\S+) (\S+)$/m.exec(text.split('\n').find((line) => line.startsWith(`llamacpp:${name} `)) ?? '')?.[2] ?? NaN);
  const decodes = value('n_decode_total');
  return { decodes, busy: value('n_busy_slots_per_decode') * decodes, tokens: value('prompt_tokens_total'), seconds: value('prompt_seconds_total') };
}

/** The trace lines written so far (time, lane, threads, context, kind, inputs, tokens, wall ms, queued[, loop]). */
function traceLines(server: Server): string[][] {
  if (!server.trace || !existsSync(server.trace)) return [];
  return readFileSync(server.trace, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => line.split(' '));
}

const quantile = (xs: number[], q: number) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length * q)]! : NaN);

async function round(server: Server): Promise<string> {
  const llamaBefore = server.label === 'llama-server' ? await llamaCounters(server) : undefined;
  const traceBefore = traceLines(server).length;
  const cpu0 = treeCpuNs(server.child.pid!);
  // The other servers, idle meanwhile: what their processes still run (V8's compiler and GC threads, a
  // polling ggml worker, SQLite's checkpoint) takes cores from this round's server.
  const bystanders = servers.filter((other) => other !== server);
  const bystander0 = bystanders.map((other) => treeCpuNs(other.child.pid!));
  const load0 = loadavg()[0]!;
  let done = 0;
  const walls: number[] = [];
  const started = performance.now();
  const deadline = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < deadline) {
        const t0 = performance.now();
        await embedOne(agent, server, sentence());
        walls.push(performance.now() - t0);
        done++;
      }
    }),
  );
  const wall = (performance.now() - started) / 1000;
  const cpuMs = (treeCpuNs(server.child.pid!) - cpu0) / 1e6 / done;
  const idleCores = bystanders.map((other, i) => `${other.label.split(' ')[0]} ${((treeCpuNs(other.child.pid!) - bystander0[i]!) / 1e9 / wall).toFixed(3)}`).join(', ');
  const head = `${server.label}: ${(done / wall).toFixed(1)} /s, request wall p50 ${quantile(walls, 0.5).toFixed(2)} ms, CPU ${cpuMs.toFixed(1)} ms/embedding, load ${load0.toFixed(2)} → ${loadavg()[0]!.toFixed(2)}, idle servers meanwhile ${idleCores || '-'} cores`;
  if (llamaBefore) {
    const after = await llamaCounters(server);
    const decodes = after.decodes - llamaBefore.decodes;
    return `${head}; ${decodes} decodes (${(decodes / wall).toFixed(1)}/s), ${((after.busy - llamaBefore.busy) / decodes).toFixed(2)} busy slots and ${((after.tokens - llamaBefore.tokens) / decodes).toFixed(1)} prompt tokens per decode, ${(done / decodes).toFixed(2)} embeddings per decode, ${(((after.seconds - llamaBefore.seconds) * 1000) / decodes).toFixed(2)} ms of prompt time (decode wall) per decode`;
  }
  const lines = traceLines(server).slice(traceBefore);
  if (lines.length === 0) return `${head}; (no encoder trace: a build without INFERA_ENCODER_TRACE)`;
  const inputs = lines.map((l) => Number(l[5]));
  const tokens = lines.map((l) => Number(l[6]));
  const ms = lines.map((l) => Number(l[7]));
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const byThreads = new Map<string, number>();
  for (const l of lines) byThreads.set(`${l[2]}t ${l[3]} ${l[4]}`, (byThreads.get(`${l[2]}t ${l[3]} ${l[4]}`) ?? 0) + 1);
  return (
    `${head}; ${lines.length} decodes (${(lines.length / wall).toFixed(1)}/s: ${[...byThreads].map(([k, v]) => `${k} ${v}`).join(', ')}), ` +
    `inputs per decode mean ${(sum(inputs) / lines.length).toFixed(2)} (p10 ${quantile(inputs, 0.1)}, p50 ${quantile(inputs, 0.5)}, p90 ${quantile(inputs, 0.9)}), ` +
    `tokens per decode mean ${(sum(tokens) / lines.length).toFixed(1)} (p50 ${quantile(tokens, 0.5)}, max ${Math.max(...tokens)}), ` +
    `decode wall ${(sum(ms) / lines.length).toFixed(2)} ms per decode (p50 ${quantile(ms, 0.5).toFixed(2)}), ${(sum(ms) / sum(inputs)).toFixed(2)} ms per input (thread-ms per input ${(sum(lines.map((l) => Number(l[7]) * Number(l[2]))) / sum(inputs)).toFixed(2)})`
  );
}

const servers: Server[] = inferaBins.map((bin, index) => spawnInfera(bin, index));
if (values['llama-bin']) servers.push(spawnLlama(values['llama-bin']));
const stopAll = () => {
  for (const s of servers) if (s.child.exitCode === null) s.child.kill('SIGTERM');
};
process.on('SIGINT', () => {
  stopAll();
  process.exit(130);
});
try {
  for (const server of servers) await whenAnswering(server, () => embedOne(agent, server, sentence()));
  console.log(`embed-batches: ${new Date().toISOString()}, ${threads} threads, ${clients} clients, ${seconds} s rounds, ${values.inputs} inputs; llama-server ${slots} slots; ${servers.map((s) => s.label).join(', ')}`);
  // Warm-up: one round each at the same concurrency (not reported).
  for (const server of servers) await round(server);
  for (let r = 0; r < rounds; r++)
    for (const server of r % 2 ? [...servers].reverse() : servers) console.log(`round ${r + 1} ${await round(server)}`);
} finally {
  stopAll();
  if (values['keep-trace'])
    for (const [n, server] of servers.entries()) if (server.trace && existsSync(server.trace)) copyFileSync(server.trace, join(values['keep-trace'], `encoder-trace-${n}.txt`));
  await new Promise((resolve) => setTimeout(resolve, 500));
  rmSync(work, { recursive: true, force: true });
}
