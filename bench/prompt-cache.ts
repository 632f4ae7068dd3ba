// Prompt cache: time to first token of a conversation's first and second turn (~2,000 tokens of
// history), Infera against llama.cpp's own llama-server (built by scripts/build-llama-server.sh from the
// source node-llama-cpp bundles), the same GGUF, threads, context per slot and slots, both spawned as
// processes and asked in alternation from this one. Turn 1 is a conversation neither server has seen
// (a numbered opening); turn 2 is the same history plus the model's answer and a short new message, so a
// server with a prompt cache evaluates only the new part. Not a test: prints figures for docs/BENCHMARKS.md.
//
//   npm run build && node --import tsx bench/prompt-cache.ts [--servers infera,llama-server] [options]
//
// Per turn: wall time from the request to the first content token, and the CPU time (ms) the server's
// process tree used for the whole request (/proc/<pid>/stat, children included): on a busy box the CPU
// time is the steadier figure. Medians over --rounds conversations. --servers infera measures Infera alone
// (llama-server not built yet); --infera-engine '{"promptCache":false}' (merged into llamaCpp) shows Infera
// without the cache; --infera-model '{"isolation":"none"}' is merged into the model entry.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { postJson } from './http-post.ts';
import { treeCpuJiffies } from './proc-cpu.ts';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify as toYaml } from 'yaml';
import { ensureBenchModel, type BenchModelKind } from '../src/tiny-models/index.ts';

const { values } = parseArgs({
  options: {
    servers: { type: 'string', default: 'infera,llama-server' },
    model: { type: 'string', default: 'chat-512x8' },
    threads: { type: 'string', default: '1' },
    context: { type: 'string', default: '4096' },
    slots: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '5' },
    /** Characters of history text (the bench vocabulary is near one token per character). */
    history: { type: 'string', default: '1900' },
    answer: { type: 'string', default: '32' },
    'llama-bin': { type: 'string' },
    'infera-bin': { type: 'string' },
    'infera-engine': { type: 'string' },
    'infera-model': { type: 'string' },
    port: { type: 'string', default: '8890' },
  },
});

const serverNames = values.servers!.split(',').map((s) => s.trim()) as ServerName[];
const kind = values.model as BenchModelKind;
const threads = Number(values.threads);
const contextPerSlot = Number(values.context);
const slots = Number(values.slots);
const rounds = Number(values.rounds);
const historyChars = Number(values.history);
const answerTokens = Number(values.answer);
const root = join(import.meta.dirname, '..');
const inferaBin = values['infera-bin'] ?? join(root, 'bin', 'infera.js');
const engineOptions: Record<string, unknown> = values['infera-engine'] ? JSON.parse(values['infera-engine']) : {};
const modelOptions: Record<string, unknown> = values['infera-model'] ? JSON.parse(values['infera-model']) : {};
const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
// A connection per request: llama-server may close a kept-alive socket after a stream (a reused one then hangs up).
const agent = new Agent({ keepAlive: false, maxSockets: Infinity });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

type ServerName = 'infera' | 'llama-server';
interface Server {
  name: ServerName;
  port: number;
  child: ChildProcess;
  model: string;
  log: () => string;
}

function llamaServerPath(): string {
  if (values['llama-bin']) return join(values['llama-bin'], 'llama-server');
  const built = spawnSync('bash', [join(root, 'scripts', 'build-llama-server.sh'), '--cached'], { encoding: 'utf8' });
  if (built.status !== 0) throw new Error(`llama-server is not built (scripts/build-llama-server.sh --cached exited ${built.status}); use --servers infera`);
  return join(built.stdout.trim().split('\n').at(-1)!, 'llama-server');
}

const work = mkdtempSync(join(tmpdir(), 'infera-prompt-cache-'));
let port = Number(values.port);

function spawnServer(name: ServerName, modelPath: string): Server {
  let output = '';
  let child: ChildProcess;
  const serverPort = port++;
  if (name === 'infera') {
    const dataDir = mkdtempSync(join(work, 'infera-'));
    const config = {
      server: { logLevel: 'warn', maxRequestsPerSocket: 0 },
      storage: { dataDir },
      models: [
        {
          id: 'bench/chat',
          type: 'chat',
          engine: 'llama-cpp',
          path: modelPath,
          eager: true,
          ...modelOptions,
          llamaCpp: { contextSize: contextPerSlot, sequences: slots, threads, ...engineOptions },
        },
      ],
    };
    const configPath = join(dataDir, 'infera.yaml');
    writeFileSync(configPath, toYaml(config));
    child = spawn(process.execPath, [inferaBin, 'serve', '--config', configPath, '--port', String(serverPort)], {
      env: { ...process.env, INFERA_API_KEY: '', INFERA_CONFIG: '', INFERA_DATA_DIR: dataDir },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
  } else {
    const args = ['-m', modelPath, '--host', '127.0.0.1', '--port', String(serverPort), '-t', String(threads), '-tb', String(threads), '--no-webui'];
    child = spawn(llamaServerPath(), [...args, '-c', String(contextPerSlot * slots), '-np', String(slots)], { stdio: ['ignore', 'ignore', 'pipe'] });
  }
  child.stderr!.on('data', (chunk) => {
    output = (output + chunk).slice(-4000);
  });
  return { name, port: serverPort, child, model: name === 'infera' ? 'bench/chat' : 'bench', log: () => output };
}

function post(server: Server, body: unknown, onData?: (chunk: Buffer) => void): Promise<{ status: number; text: string }> {
  return postJson(agent, server.port, '/v1/chat/completions', body, onData);
}

type Message = { role: 'system' | 'user' | 'assistant'; content: string };

function body(server: Server, messages: Message[], maxTokens: number) {
  return {
    model: server.model,
    messages,
    max_tokens: maxTokens,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
    ...(server.name === 'infera' ? { enable_thinking: false } : { chat_template_kwargs: { enable_thinking: false } }),
  };
}

interface Turn {
  ttftMs: number;
  /** Server CPU from the request to its first token, and for the whole request. */
  cpuFirstMs: number;
  cpuMs: number;
  promptTokens: number;
  cachedTokens: number | undefined;
  text: string;
}

async function turn(server: Server, messages: Message[]): Promise<Turn> {
  const cpu0 = treeCpuJiffies(server.child.pid!);
  const start = performance.now();
  let first = 0;
  let cpuFirst = 0;
  const { status, text } = await post(server, body(server, messages, answerTokens), (chunk) => {
    if (!first && /"content":"[^"]/.test(chunk.toString('latin1'))) {
      first = performance.now();
      cpuFirst = treeCpuJiffies(server.child.pid!);
    }
  }).catch((error: Error) => {
    throw new Error(`${server.name}: ${error.message}; its log ends:\n${server.log()}`);
  });
  const cpuMs = ((treeCpuJiffies(server.child.pid!) - cpu0) / CLOCK_TICKS) * 1000;
  if (status !== 200) throw new Error(`${server.name}: HTTP ${status}: ${text.slice(0, 300)}`);
  const events = text
    .split('\n')
    .filter((line) => line.startsWith('data: {'))
    .map((line) => JSON.parse(line.slice(6)));
  const usage = events.findLast((event) => event.usage)?.usage;
  if (!usage) throw new Error(`${server.name}: no usage in the stream`);
  const answer = events.map((event) => event.choices?.[0]?.delta?.content ?? '').join('');
  return { ttftMs: first - start, cpuFirstMs: ((cpuFirst - cpu0) / CLOCK_TICKS) * 1000, cpuMs, promptTokens: usage.prompt_tokens, cachedTokens: usage.prompt_tokens_details?.cached_tokens, text: answer };
}

async function ready(server: Server): Promise<void> {
  const since = performance.now();
  for (;;) {
    if (server.child.exitCode !== null) throw new Error(`${server.name} exited ${server.child.exitCode}: ${server.log()}`);
    try {
      const { status } = await post(server, { ...body(server, [{ role: 'user', content: 'hi' }], 1), stream: false, stream_options: undefined });
      if (status === 200) return;
    } catch {
      // not listening yet
    }
    if (performance.now() - since > 300_000) throw new Error(`${server.name}: no answer within 300 s: ${server.log()}`);
    await sleep(20);
  }
}

const WORDS = ['harbor', 'lantern', 'tide', 'gull', 'rope', 'keeper', 'stone', 'wave', 'mist', 'salt', 'north', 'bell'];
/** Deterministic filler text of about `chars` characters. */
function text(seed: number, chars: number): string {
  let out = '';
  for (let i = 0; out.length < chars; i++) out += `${WORDS[(seed * 5 + i * 7 + ((i * i) % 11)) % WORDS.length]} `;
  return out.trim();
}

/** A conversation neither server has seen: a numbered opening, then a long system prompt and question. */
function conversation(round: number): { first: Message[]; second: (answer: string) => Message[] } {
  const system = `(${round}) You are the keeper's log. ${text(round, Math.round(historyChars * 0.2))}`;
  const user = `Tell me about this: ${text(round + 100, Math.round(historyChars * 0.8))}`;
  const first: Message[] = [
    { role: 'system', content: system },
    { role: 'user', content: user },
  ];
  return { first, second: (answer) => [...first, { role: 'assistant', content: answer }, { role: 'user', content: 'And what happened next, in a few words?' }] };
}

async function main(): Promise<void> {
  const modelPath = await ensureBenchModel(kind, join(tmpdir(), 'infera-bench-models'));
  const servers = serverNames.map((name) => spawnServer(name, modelPath));
  try {
    await Promise.all(servers.map(ready));
    const load = loadavg().map((x) => x.toFixed(2)).join(' ');
    console.log(`${new Date().toISOString()} prompt cache, ${kind}, ${threads} thread(s), ${slots} slots × ${contextPerSlot} tokens, ${rounds} rounds, answer ${answerTokens} tokens; load ${load}`);
    const results = new Map<ServerName, { one: Turn[]; two: Turn[] }>(servers.map((server) => [server.name, { one: [], two: [] }]));
    for (let round = 0; round < rounds; round++) {
      const talk = conversation(round);
      // Alternate which server goes first.
      const order = round % 2 === 0 ? servers : [...servers].reverse();
      for (const server of order) {
        const one = await turn(server, talk.first);
        const two = await turn(server, talk.second(one.text));
        results.get(server.name)!.one.push(one);
        results.get(server.name)!.two.push(two);
        console.log(
          `  round ${round} ${server.name.padEnd(12)} turn 1: ${one.promptTokens} prompt tokens, ttft ${one.ttftMs.toFixed(0)} ms, cpu ${one.cpuFirstMs.toFixed(0)}/${one.cpuMs.toFixed(0)} ms | ` +
            `turn 2: ${two.promptTokens} prompt tokens (${two.cachedTokens ?? '?'} cached), ttft ${two.ttftMs.toFixed(0)} ms, cpu ${two.cpuFirstMs.toFixed(0)}/${two.cpuMs.toFixed(0)} ms`,
        );
      }
    }
    console.log(`\nload after: ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
    console.log(
      '| server | turn-1 prompt | turn-1 TTFT ms | turn-1 CPU to 1st token / whole, ms | turn-2 prompt (cached) | turn-2 TTFT ms | turn-2 CPU to 1st token / whole, ms | turn 2 / turn 1: TTFT, CPU to 1st token |',
    );
    console.log('|---|---|---|---|---|---|---|---|');
    const row = new Map<ServerName, { ttft2: number; cpuFirst2: number; cpu2: number }>();
    for (const [name, { one, two }] of results) {
      const m = (turns: Turn[], key: 'ttftMs' | 'cpuFirstMs' | 'cpuMs') => median(turns.map((t) => t[key]));
      const [ttft1, ttft2] = [m(one, 'ttftMs'), m(two, 'ttftMs')];
      const [first1, first2] = [m(one, 'cpuFirstMs'), m(two, 'cpuFirstMs')];
      row.set(name, { ttft2, cpuFirst2: first2, cpu2: m(two, 'cpuMs') });
      console.log(
        `| ${name} | ${one[0]!.promptTokens} | ${ttft1.toFixed(0)} | ${first1.toFixed(0)} / ${m(one, 'cpuMs').toFixed(0)} | ${two[0]!.promptTokens} (${two[0]!.cachedTokens ?? '?'}) | ` +
          `${ttft2.toFixed(0)} | ${first2.toFixed(0)} / ${m(two, 'cpuMs').toFixed(0)} | ${(ttft2 / ttft1).toFixed(3)}, ${(first2 / first1).toFixed(3)} |`,
      );
    }
    const infera = row.get('infera');
    const llama = row.get('llama-server');
    if (infera && llama)
      console.log(
        `\nInfera / llama-server, turn 2: TTFT ${(infera.ttft2 / llama.ttft2).toFixed(2)}, CPU to first token ${(infera.cpuFirst2 / llama.cpuFirst2).toFixed(2)}, CPU whole request ${(infera.cpu2 / llama.cpu2).toFixed(2)}`,
      );
  } finally {
    for (const server of servers) server.child.kill('SIGTERM');
    rmSync(work, { recursive: true, force: true });
    agent.destroy();
  }
}

await main();
