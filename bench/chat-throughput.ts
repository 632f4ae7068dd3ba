// Decode speed and time to first token through Infera's HTTP API (SSE streams) versus calling
// node-llama-cpp directly (LlamaChat.generateResponse on a context sequence) on the same GGUF, same
// threads, same context settings, at 1 and N concurrent streams. Not a test: prints figures for
// docs/BENCHMARKS.md.
//
// Usage: node --import tsx bench/chat-throughput.ts [--model chat-512x8|chat-1024x16] [--weights q8_0|f16|f32]
//          [--threads 2] [--tokens 128] [--concurrency 8] [--rounds 3]
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { LlamaChat, resolveChatWrapper, type ChatWrapper, type LlamaContext } from 'node-llama-cpp';
import { createLlama } from '../src/engines/llama-cpp/runtime.ts';
import { ensureBenchModel, type BenchWeights } from '../src/tiny-models/index.ts';

const { values } = parseArgs({
  options: {
    threads: { type: 'string', default: '2' },
    tokens: { type: 'string', default: '128' },
    concurrency: { type: 'string', default: '8' },
    rounds: { type: 'string', default: '3' },
    port: { type: 'string', default: '8713' },
    model: { type: 'string', default: 'chat-512x8' },
    weights: { type: 'string', default: 'q8_0' },
  },
});
const threads = Number(values.threads);
const tokens = Number(values.tokens);
const concurrency = Number(values.concurrency);
const rounds = Number(values.rounds);
const port = Number(values.port);
const contextSize = 1024;
const prompt = 'Write a long story about a lighthouse keeper and the sea.';

const dir = join(tmpdir(), 'infera-bench-models');
mkdirSync(dir, { recursive: true });
const benchKind = values.model as 'chat-512x8' | 'chat-1024x16';
const weights = values.weights as BenchWeights;
const modelPath = await ensureBenchModel(benchKind, dir, weights);

interface Run {
  /** Aggregate generated tokens per second over the decode phase (first token → last token). */
  tokensPerSecond: number;
  /** Median time to first token, ms. */
  ttftMs: number;
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * Runs `streams` copies of one stream at once; each reports when its first and last tokens came and how
 * many it made. The decode phase ends at the last token on both sides: what follows it (sequence
 * disposal; over HTTP also usage settlement, the end of the response and parsing it) is not decoding.
 */
async function measureStreams(streams: number, stream: () => Promise<{ first: number; last: number; generated: number }>): Promise<Run> {
  const started = performance.now();
  const firsts: number[] = [];
  let generated = 0;
  let lastToken = 0;
  await Promise.all(
    Array.from({ length: streams }, async () => {
      const one = await stream();
      generated += one.generated;
      firsts.push(one.first - started);
      lastToken = Math.max(lastToken, one.last);
    }),
  );
  const decodeStart = started + Math.min(...firsts);
  return { tokensPerSecond: generated / ((lastToken - decodeStart) / 1000), ttftMs: median(firsts) };
}

// ---- direct: node-llama-cpp, no HTTP ----------------------------------------------------------------
// Two ways of consuming the tokens: `onToken` (token ids only) and `onTextChunk` (the text of each
// token, which node-llama-cpp detokenizes per token: what any consumer that streams text, Infera
// included, has to ask for). Both are reported; the HTTP ratio is given against each.
function direct(context: LlamaContext, wrapper: ChatWrapper, streams: number, text = false): Promise<Run> {
  return measureStreams(streams, async () => {
    const sequence = context.getSequence();
    try {
      const chat = new LlamaChat({ contextSequence: sequence, chatWrapper: wrapper });
      let first = 0;
      let last = 0;
      const mark = () => {
        last = performance.now();
        if (!first) first = last;
      };
      await chat.generateResponse([{ type: 'user', text: prompt }, { type: 'model', response: [] }], {
        maxTokens: tokens,
        temperature: 0,
        // Infera sends no repetition penalty unless the request asks; node-llama-cpp defaults to one.
        repeatPenalty: false,
        ...(text ? { onTextChunk: mark } : { onToken: mark }),
      });
      const generated = chat.sequence.tokenMeter.usedOutputTokens;
      chat.dispose({ disposeSequence: false });
      return { first, last, generated };
    } finally {
      sequence.dispose();
    }
  });
}

// ---- through Infera's HTTP API ----------------------------------------------------------------------
// node:http rather than fetch: on 2 cores the client shares a core with the server's event loop, and
// fetch's web streams cost several times more per chunk than a plain 'data' listener.
function postStream(body: unknown): Promise<{ first: number; last: number; text: string }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(
      { host: '127.0.0.1', port, path: '/v1/chat/completions', method: 'POST', headers: { 'content-type': 'application/json' } },
      (response) => {
        let first = 0;
        let last = 0;
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => {
          const now = performance.now();
          if (!first) first = now;
          // The finish chunk follows the last token at once (the engine emits it when generation returns).
          if (!last && chunk.includes('"finish_reason":"')) last = now;
          chunks.push(chunk);
        });
        response.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          if (response.statusCode !== 200) reject(new Error(`HTTP ${response.statusCode}: ${text}`));
          else resolve({ first, last, text });
        });
        response.on('error', reject);
      },
    );
    request.on('error', reject);
    request.end(JSON.stringify(body));
  });
}

function viaHttp(streams: number): Promise<Run> {
  return measureStreams(streams, async () => {
    const { first, last, text } = await postStream({
      model: 'bench/chat',
      messages: [{ role: 'user', content: prompt }],
      stream: true,
      max_tokens: tokens,
      temperature: 0,
      enable_thinking: false,
    });
    const usage = text
      .split('\n\n')
      .filter((e) => e.startsWith('data: {'))
      .map((e) => JSON.parse(e.slice(6)))
      .findLast((c) => c.usage)?.usage;
    // completion_tokens counts reasoning too (SiliconFlow): the bench model may emit think tags.
    return { first, last, generated: usage.completion_tokens as number };
  });
}

function startServer(): Promise<ChildProcess> {
  const configDir = join(tmpdir(), 'infera-bench-chat');
  mkdirSync(configDir, { recursive: true });
  const configPath = join(configDir, 'infera.yaml');
  writeFileSync(
    configPath,
    [
      'server: { logLevel: warn }',
      `storage: { dataDir: ${configDir} }`,
      'models:',
      '  - id: bench/chat',
      '    type: chat',
      '    engine: llama-cpp',
      `    path: ${modelPath}`,
      '    eager: true',
      `    llamaCpp: { contextSize: ${contextSize}, sequences: ${concurrency}, threads: ${threads} }`,
      '',
    ].join('\n'),
  );
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['bin/infera.js', 'serve', '--config', configPath, '--port', String(port)], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let seen = '';
    child.stderr!.on('data', (chunk) => {
      seen += chunk;
      if (/bench\/chat: ready/.test(seen)) resolve(child);
      if (/: failed/.test(seen)) reject(new Error(seen));
    });
    child.once('exit', (code) => reject(new Error(`server exited ${code}: ${seen}`)));
  });
}

// Both sides loaded at once and measured in alternation, so that load from other processes on this
// shared box hits both alike (measuring one side after the other skewed the ratio by ±20 %). They
// never run at the same moment: each measurement has the cores to itself.
const llama = await createLlama(false);
const model = await llama.loadModel({ modelPath });
const context = await model.createContext({ contextSize, sequences: concurrency, threads });
// Resolved once, as Infera does at load time (resolving renders the Jinja template: slow).
const wrapper = resolveChatWrapper(model);
const server = await startServer();
const results: Record<string, Run[]> = { direct1: [], directText1: [], http1: [], directN: [], httpN: [] };
const loadBefore = loadavg()[0]!;
try {
  await direct(context, wrapper, 1); // warm-up
  await viaHttp(1);
  for (let round = 0; round < rounds; round++) {
    results.direct1.push(await direct(context, wrapper, 1));
    results.directText1.push(await direct(context, wrapper, 1, true));
    results.http1.push(await viaHttp(1));
    results.directN.push(await direct(context, wrapper, concurrency));
    results.httpN.push(await viaHttp(concurrency));
  }
} finally {
  server.kill('SIGTERM');
  await context.dispose();
  await model.dispose();
}

const summary = Object.fromEntries(
  Object.entries(results).map(([name, runs]) => [name, { tokensPerSecond: median(runs.map((r) => r.tokensPerSecond)), ttftMs: median(runs.map((r) => r.ttftMs)) }]),
);
const perRound = Object.fromEntries(Object.entries(results).map(([name, runs]) => [name, runs.map((r) => Math.round(r.tokensPerSecond))]));
const load = { before: loadBefore, after: loadavg()[0]! };
console.log(JSON.stringify({ model: benchKind, weights, threads, tokens, concurrency, rounds, contextSize, load, summary }, null, 2));
for (const [name, values] of Object.entries(perRound)) console.log(`${name} per round (t/s): ${values.join(' ')}`);
const f = (x: number) => x.toFixed(1);
const pct = (a: number, b: number) => `${((100 * a) / b).toFixed(1)} %`;
console.log(
  `single stream: direct ${f(summary.direct1.tokensPerSecond)} t/s (token ids) / ${f(summary.directText1.tokensPerSecond)} t/s (text), ` +
    `via HTTP ${f(summary.http1.tokensPerSecond)} t/s → ${pct(summary.http1.tokensPerSecond, summary.direct1.tokensPerSecond)} of token-id direct, ` +
    `${pct(summary.http1.tokensPerSecond, summary.directText1.tokensPerSecond)} of text direct (target ≥ 97 %)`,
);
console.log(`TTFT single: direct ${f(summary.direct1.ttftMs)} ms, via HTTP ${f(summary.http1.ttftMs)} ms`);
console.log(`${concurrency} streams: direct ${f(summary.directN.tokensPerSecond)} t/s, via HTTP ${f(summary.httpN.tokensPerSecond)} t/s → HTTP ${concurrency}-stream / HTTP single = ${(summary.httpN.tokensPerSecond / summary.http1.tokensPerSecond).toFixed(2)}× (target ≥ 3×)`);
process.exit(0);
