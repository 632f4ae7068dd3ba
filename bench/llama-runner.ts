// Aggregate decode speed of the llama-cpp chat engine on its two runners, measured the same way in
// alternation: Infera's FFI loop (src/engines/llama-cpp/ffi/) and node-llama-cpp's LlamaChat. N
// concurrent greedy requests of `--tokens` answer tokens each go through the engine's ChatModel (the
// whole chat path: template, parsers, limits), and the figures are generated tokens over the wall time
// from the first request to the last token, and the process's CPU time per generated token (which a
// busy shared box distorts less than wall time; it also counts spinning pool threads). Bench models never emit an end token (see
// src/tiny-models/README.md), so every request runs to its limit. Not a test: prints figures.
//
// Usage: node --import tsx bench/llama-runner.ts [--model chat-512x8|chat-1024x16] [--threads 1,2] [--streams 1,8] [--tokens 128] [--rounds 3]
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { ChatCallOptions, ChatModel } from '../src/spec/chat.ts';
import { loadChatModel } from '../src/engines/llama-cpp/chat.ts';
import { llamaCppModelSchema } from '../src/engines/llama-cpp/config.ts';
import { createLlama } from '../src/engines/llama-cpp/runtime.ts';
import { ensureBenchModel, type BenchModelKind } from '../src/tiny-models/index.ts';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'chat-512x8' },
    threads: { type: 'string', default: '1,2' },
    streams: { type: 'string', default: '1,8' },
    tokens: { type: 'string', default: '128' },
    rounds: { type: 'string', default: '3' },
    // ffi (decode on koffi's worker thread), ffi-loop (decode on the loop's thread), node-llama-cpp.
    runners: { type: 'string', default: 'ffi-loop,ffi,node-llama-cpp' },
  },
});
const path = await ensureBenchModel(values.model as BenchModelKind, join(tmpdir(), 'infera-bench-models'));
const llama = await createLlama(false);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const tokens = Number(values.tokens);
const list = (text: string) => text.split(',').map((item) => item.trim());

async function measure(model: ChatModel, streams: number): Promise<{ rate: number; cpuUs: number }> {
  const ask = (i: number): ChatCallOptions => ({
    messages: [{ role: 'user', content: `Tell me a long story about lighthouse number ${i}.` }],
    sampling: { temperature: 0 },
    thinking: { enabled: false },
    maxTokens: tokens,
    signal: new AbortController().signal,
  });
  const started = performance.now();
  const cpu = process.cpuUsage();
  const results = await Promise.all(Array.from({ length: streams }, (_, i) => model.doGenerate(ask(i))));
  const seconds = (performance.now() - started) / 1000;
  const used = process.cpuUsage(cpu);
  const generated = results.reduce((sum, result) => sum + result.usage.completionTokens, 0);
  return { rate: generated / seconds, cpuUs: (used.user + used.system) / generated };
}

const rows: Record<string, unknown>[] = [];
for (const threads of list(values.threads).map(Number)) {
  const streamsList = list(values.streams).map(Number);
  const loaded = new Map<string, Awaited<ReturnType<typeof loadChatModel>>>();
  for (const runner of list(values.runners)) {
    const config = llamaCppModelSchema.parse({
      id: `bench-${runner}`,
      type: 'chat',
      engine: 'llama-cpp',
      path,
      maxQueue: 64,
      llamaCpp: { contextSize: 1024, sequences: Math.max(...streamsList), threads, runner: runner === 'ffi-loop' ? 'ffi' : runner },
    });
    const decodeOn = runner === 'ffi-loop' ? 'loop' : 'worker';
    loaded.set(runner, await loadChatModel(config, undefined, { llama, decodeOn }, (reason) => console.error(reason)));
  }
  for (const streams of streamsList) {
    const rates = new Map<string, number[]>();
    const cpus = new Map<string, number[]>();
    // Warm-up, then alternate runners round by round so that drift hits both alike.
    for (const [, entry] of loaded) await measure(entry.model, streams);
    for (let round = 0; round < Number(values.rounds); round++)
      for (const [runner, entry] of loaded) {
        const { rate, cpuUs } = await measure(entry.model, streams);
        rates.set(runner, [...(rates.get(runner) ?? []), rate]);
        cpus.set(runner, [...(cpus.get(runner) ?? []), cpuUs]);
      }
    const row: Record<string, unknown> = { model: values.model, threads, streams };
    for (const [runner, list] of rates) row[`${runner} t/s`] = Math.round(median(list));
    for (const [runner, list] of cpus) row[`${runner} cpu µs/tok`] = Math.round(median(list));
    const nlc = rates.get('node-llama-cpp');
    for (const ffi of ['ffi', 'ffi-loop']) {
      const rate = rates.get(ffi);
      if (rate && nlc) row[`${ffi} / node-llama-cpp`] = Number((median(rate) / median(nlc)).toFixed(2));
    }
    rows.push(row);
    console.log(JSON.stringify(row));
  }
  for (const [, entry] of loaded) await entry.dispose();
}
console.table(rows);
await llama.dispose();
process.exit(0);
