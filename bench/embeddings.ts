// Embeddings and rerank throughput: micro-batched (the serving path's batcher) against one-at-a-time
// (requests served strictly in turn), at 1, 8 and 32 concurrent clients, in process (no HTTP, so the
// figures are the engine + batcher, not the network), for both engines:
//   llama-cpp: on each of `--runners`:
//              ffi: Infera's encoder (ffi/encoder.ts), every input queued at the time packed into one
//                   llama_decode; batched = `--contexts` contexts decoding side by side, one-at-a-time =
//                   one context; `--threads` threads per context.
//              node-llama-cpp: batched = the batcher over a pool of `--contexts` contexts (one input
//                   each at a time); one-at-a-time = one context. `--threads` threads per context.
//   onnx:      batched = the batcher feeding whole micro-batches to one ONNX Runtime session (padded
//              forward passes); one-at-a-time = the same session, one request per pass. `--onnx-threads`.
//
// Usage:
//   node --import tsx bench/embeddings.ts [--kind embed|rerank|both] [--engines llama-cpp,onnx] [--duration 6]
//        [--clients 1,8,32] [--contexts 2] [--threads 1] [--runners ffi,node-llama-cpp] [--batch-sequences 32] [--onnx-threads 2] [--onnx-batch rows] [--inputs 1] [--docs 8] [--wait ms] [--concurrency n]
//        [--rounds 2] [--model path.gguf] [--modes sequential,batched] [--cpu-backend auto|prebuilt|native]
// --cpu-backend is llamaCpp.cpuBackend for the FFI runner. The CPU backend is one per process, and
// node-llama-cpp's addon, once loaded, decides it: with --runners including node-llama-cpp the FFI rows
// compute on the addon's prebuilt backend whatever --cpu-backend says (the FFI loader logs which).
// The bge-small-shaped bench models (hidden 384, 12 layers, random weights) are generated into
// $TMPDIR/infera-bench-models: the GGUF by ensureBenchModel, its ONNX twin (same weights) by ensureOnnxBert.
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { llamaCppModelSchema } from '../src/engines/llama-cpp/config.ts';
import { createLlama } from '../src/engines/llama-cpp/runtime.ts';
import { onnxModelSchema } from '../src/engines/onnx/config.ts';
import { loadLlamaCppEmbeddingModel } from '../src/engines/llama-cpp/embedding.ts';
import { loadLlamaCppRerankModel } from '../src/engines/llama-cpp/rerank.ts';
import { describeCpuBackend, openedCpuBackend } from '../src/engines/llama-cpp/ffi/library.ts';
import { loadOnnxEmbeddingModel } from '../src/engines/onnx/embedding.ts';
import { loadOnnxRerankModel } from '../src/engines/onnx/rerank.ts';
import { Slots } from '../src/scheduler/slots.ts';
import { createEmbeddingBatcher, tokenizeInputs } from '../src/serving/embeddings.ts';
import { createRerankBatcher, estimateRerankTokens } from '../src/serving/rerank.ts';
import type { EmbeddingModel, RerankModel } from '../src/spec/index.ts';

const { values } = parseArgs({
  options: {
    kind: { type: 'string', default: 'both' },
    duration: { type: 'string', default: '6' },
    clients: { type: 'string', default: '1,8,32' },
    contexts: { type: 'string', default: '2' },
    threads: { type: 'string', default: '1' },
    'onnx-threads': { type: 'string', default: '2' },
    'onnx-batch': { type: 'string' },
    engines: { type: 'string', default: 'llama-cpp,onnx' },
    runners: { type: 'string', default: 'ffi,node-llama-cpp' },
    'batch-sequences': { type: 'string', default: '32' },
    inputs: { type: 'string', default: '1' },
    docs: { type: 'string', default: '8' },
    wait: { type: 'string' },
    concurrency: { type: 'string' },
    model: { type: 'string' },
    modes: { type: 'string', default: 'sequential,batched' },
    rounds: { type: 'string', default: '2' },
    'cpu-backend': { type: 'string', default: 'auto' },
  },
});
const durationMs = Number(values.duration) * 1000;
const clientCounts = values.clients!.split(',').map(Number);
const contexts = Number(values.contexts);
const threads = Number(values.threads);
const onnxThreads = Number(values['onnx-threads']);
type Engine = 'llama-cpp' | 'onnx';
type Runner = 'ffi' | 'node-llama-cpp';
const runners = values.runners!.split(',') as Runner[];
const batchSequences = Number(values['batch-sequences']);
/** What one row measures: onnx, or llama-cpp on one runner (named `llama-cpp/ffi`, `llama-cpp/node-llama-cpp`). */
interface Backend {
  engine: Engine;
  runner?: Runner;
  name: string;
}
const backends: Backend[] = (values.engines!.split(',') as Engine[]).flatMap((engine): Backend[] =>
  engine === 'onnx' ? [{ engine, name: engine }] : runners.map((runner) => ({ engine, runner, name: `${engine}/${runner}` })),
);
const inputsPerRequest = Number(values.inputs);
const docsPerRequest = Number(values.docs);
const modes = values.modes!.split(',') as ('sequential' | 'batched')[];
/** Other jobs share these cores: each cell runs `rounds` times, modes interleaved, and the best round counts. */
const rounds = Number(values.rounds);
/** Batcher overrides; without --wait each engine gets its own preferred settings, as in the server. */
const batching = {
  ...(values.wait === undefined ? {} : { maxWaitMs: Number(values.wait) }),
  ...(values.concurrency === undefined ? {} : { concurrency: Number(values.concurrency) }),
};

const WORDS =
  'the a of to and in is it that for on with as by at from this be are was or not cat dog fish bird tree car house sun moon water fire earth wind red blue green apple banana cherry paris london tokyo river mountain ocean city music book code data model query document search rank vector hello world'.split(
    ' ',
  );
let seed = 12345;
const random = () => {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  return seed / 2 ** 31;
};
/** A sentence of about `words` words (short texts are what retrieval apps embed at query time). */
const sentence = (words: number) => Array.from({ length: words }, () => WORDS[Math.floor(random() * WORDS.length)]).join(' ');

async function benchModelPath(kind: 'embed' | 'rerank', engine: Engine): Promise<string> {
  if (values.model) return values.model;
  const dir = join(tmpdir(), 'infera-bench-models');
  if (engine === 'onnx') {
    const { ensureBenchOnnxBert } = await import('./bench-onnx-bert.ts');
    return ensureBenchOnnxBert(kind, dir);
  }
  const { ensureBenchModel } = await import('../src/tiny-models/index.ts');
  return ensureBenchModel(kind === 'embed' ? 'bert-384x12-embed' : 'bert-384x12-rerank', dir);
}

interface Cell {
  kind: string;
  mode: string;
  clients: number;
  requests: number;
  items: number;
  tokens: number;
  seconds: number;
  p50: number;
  p99: number;
  /** CPU seconds this process used during the cell: on a shared box, how much of the machine it actually got. */
  cpuSeconds: number;
}

/** `clients` loops each sending one request after another for the duration; returns throughput and latency. */
async function drive(clients: number, send: () => Promise<{ items: number; tokens: number }>): Promise<Omit<Cell, 'kind' | 'mode' | 'clients'>> {
  const latencies: number[] = [];
  let items = 0;
  let tokens = 0;
  const cpu = process.cpuUsage();
  const start = performance.now();
  const deadline = start + durationMs;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < deadline) {
        const t0 = performance.now();
        const done = await send();
        latencies.push(performance.now() - t0);
        items += done.items;
        tokens += done.tokens;
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  const used = process.cpuUsage(cpu);
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN;
  return { requests: latencies.length, items, tokens, seconds, p50: at(0.5), p99: at(0.99), cpuSeconds: (used.user + used.system) / 1e6 };
}

function configFor(kind: 'embed' | 'rerank', path: string, pool: number, runner: Runner = 'ffi') {
  // A busy box serves 32 clients slowly: the bench measures throughput, not the queue-wait limit.
  const common = { id: `bench/${kind}`, type: kind === 'embed' ? 'embedding' : 'reranker', path, maxQueue: 10_000, maxQueueWaitSeconds: 600 };
  return {
    llamaCpp: llamaCppModelSchema.parse({ ...common, engine: 'llama-cpp', llamaCpp: { threads, contexts: pool, contextSize: 512, runner, batchSequences, cpuBackend: values['cpu-backend'] } }),
    onnx: onnxModelSchema.parse({
      ...common,
      engine: 'onnx',
      onnx: { threads: onnxThreads, ...(values['onnx-batch'] ? { maxBatchSize: Number(values['onnx-batch']) } : {}) },
    }),
  };
}

// Made on first use: the addon loads node-llama-cpp's CPU backend into the process (see --cpu-backend).
let made: ReturnType<typeof createLlama> | undefined;
const llama = () => (made ??= createLlama(false));

type Send = () => Promise<{ items: number; tokens: number }>;

/** Runs every (clients, mode) cell `rounds` times with the modes interleaved; keeps each cell's best round. */
async function runCells(kind: string, senders: Record<string, Send>): Promise<Cell[]> {
  const cells: Cell[] = [];
  for (const send of Object.values(senders)) await drive(1, send).catch((error) => console.error('warm-up failed', error));
  for (const clients of clientCounts) {
    const best = new Map<string, Cell>();
    for (let round = 0; round < rounds; round++)
      for (const [mode, send] of Object.entries(senders)) {
        const cell = { kind, mode, clients, ...(await drive(clients, send)) };
        const previous = best.get(mode);
        if (!previous || cell.items / cell.seconds > previous.items / previous.seconds) best.set(mode, cell);
      }
    for (const cell of best.values()) {
      cells.push(cell);
      print(cell);
    }
  }
  return cells;
}

let printed = false;
/** Which ggml CPU backend the FFI rows compute on (once). */
async function printCpuBackend(model: object): Promise<void> {
  const choice = (model as { runner?: unknown }).runner === 'ffi' && !printed ? await openedCpuBackend() : undefined;
  if (!choice) return;
  printed = true;
  console.log(describeCpuBackend(choice).text);
}

async function benchEmbeddings(): Promise<Cell[]> {
  const senders: Record<string, Send> = {};
  const disposers: (() => Promise<void>)[] = [];
  for (const { engine, runner, name } of backends)
  for (const mode of modes) {
    const configs = configFor('embed', await benchModelPath('embed', engine), mode === 'sequential' ? 1 : contexts, runner);
    const loaded = engine === 'onnx' ? await loadOnnxEmbeddingModel(configs.onnx) : await loadLlamaCppEmbeddingModel(configs.llamaCpp, undefined, { llama }, (reason) => {
            throw new Error(reason);
          });
    const config = engine === 'onnx' ? configs.onnx : configs.llamaCpp;
    disposers.push(loaded.dispose);
    const model: EmbeddingModel = loaded.model;
    await printCpuBackend(model);
    const turn = new Slots(1, 10_000, 'bench');
    const batcher = createEmbeddingBatcher(model, config, batching);
    senders[`${name} ${mode}`] = async () => {
      // As the server does: tokenize (and check) once, then hand the engine token arrays.
      const { inputs, tokens } = await tokenizeInputs(model, { inputs: Array.from({ length: inputsPerRequest }, () => ({ text: sentence(12) })), single: false });
      if (mode === 'sequential') {
        const lease = await turn.acquire();
        try {
          const result = await model.doEmbed({ inputs, signal: new AbortController().signal });
          return { items: result.embeddings.length, tokens: result.promptTokens };
        } finally {
          lease.release();
        }
      }
      const result = await batcher.submit({ inputs }, tokens);
      return { items: result.embeddings.length, tokens: result.promptTokens };
    };
  }
  const cells = await runCells('embeddings', senders);
  for (const dispose of disposers) await dispose();
  return cells;
}

async function benchRerank(): Promise<Cell[]> {
  const senders: Record<string, Send> = {};
  const disposers: (() => Promise<void>)[] = [];
  for (const { engine, runner, name } of backends)
  for (const mode of modes) {
    const configs = configFor('rerank', await benchModelPath('rerank', engine), mode === 'sequential' ? 1 : contexts, runner);
    const loaded = engine === 'onnx' ? await loadOnnxRerankModel(configs.onnx) : await loadLlamaCppRerankModel(configs.llamaCpp, undefined, { llama }, (reason) => {
            throw new Error(reason);
          });
    const config = engine === 'onnx' ? configs.onnx : configs.llamaCpp;
    disposers.push(loaded.dispose);
    const model: RerankModel = loaded.model;
    const turn = new Slots(1, 10_000, 'bench');
    const batcher = createRerankBatcher(model, config, batching);
    senders[`${name} ${mode}`] = async () => {
      const job = { query: sentence(6), documents: Array.from({ length: docsPerRequest }, () => sentence(24)) };
      if (mode === 'sequential') {
        const lease = await turn.acquire();
        try {
          const result = await model.doRerank({ ...job, signal: new AbortController().signal });
          return { items: result.scores.length, tokens: result.inputTokens };
        } finally {
          lease.release();
        }
      }
      const result = await batcher.submit(job, estimateRerankTokens(job));
      return { items: result.scores.length, tokens: result.inputTokens };
    };
  }
  const cells = await runCells('rerank', senders);
  for (const dispose of disposers) await dispose();
  return cells;
}

function print(cell: Cell): void {
  const unit = cell.kind === 'embeddings' ? 'embeddings/s' : 'docs/s';
  console.log(
    `${cell.kind.padEnd(10)} ${cell.mode.padEnd(20)} clients=${String(cell.clients).padStart(2)}  ` +
      `${(cell.items / cell.seconds).toFixed(1).padStart(7)} ${unit}  ${(cell.tokens / cell.seconds).toFixed(0).padStart(6)} tokens/s  ` +
      `p50 ${cell.p50.toFixed(1)} ms  p99 ${cell.p99.toFixed(1)} ms  (${cell.requests} requests)  ` +
      `cores used ${(cell.cpuSeconds / cell.seconds).toFixed(2)}, ${(cell.items / cell.cpuSeconds).toFixed(1)} per CPU-second`,
  );
}

function summary(cells: Cell[]): void {
  const rate = (kind: string, mode: string, clients: number) => {
    const cell = cells.find((c) => c.kind === kind && c.mode === mode && c.clients === clients);
    return cell ? cell.items / cell.seconds : undefined;
  };
  const ratio = (label: string, a: number | undefined, b: number | undefined) => {
    if (a !== undefined && b !== undefined) console.log(`${label} = ${(a / b).toFixed(2)}×`);
  };
  for (const kind of new Set(cells.map((c) => c.kind)))
    for (const clients of clientCounts) {
      for (const { name } of backends)
        ratio(`${kind} clients=${clients}: ${name} batched / ${name} one-at-a-time`, rate(kind, `${name} batched`, clients), rate(kind, `${name} sequential`, clients));
      ratio(`${kind} clients=${clients}: llama-cpp/ffi batched / llama-cpp/node-llama-cpp batched`, rate(kind, 'llama-cpp/ffi batched', clients), rate(kind, 'llama-cpp/node-llama-cpp batched', clients));
      for (const runner of runners)
        ratio(`${kind} clients=${clients}: onnx batched / llama-cpp/${runner} batched`, rate(kind, 'onnx batched', clients), rate(kind, `llama-cpp/${runner} batched`, clients));
    }
}

console.log(
  `bench: ${backends.map((backend) => backend.name).join(',')} batch-sequences=${batchSequences} contexts=${contexts} threads=${threads} onnx-threads=${onnxThreads} inputs/request=${inputsPerRequest} docs/request=${docsPerRequest} ` +
    `batching=${JSON.stringify(batching)} duration=${durationMs / 1000}s rounds=${rounds} (best round per cell)`,
);
const all: Cell[] = [];
if (values.kind === 'embed' || values.kind === 'both') all.push(...(await benchEmbeddings()));
if (values.kind === 'rerank' || values.kind === 'both') all.push(...(await benchRerank()));
summary(all);
