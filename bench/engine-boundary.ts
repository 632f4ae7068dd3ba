// What the engine-process boundary costs per generated token: the same GGUF, threads and streams,
// loaded in the server process (isolation: none) and in a supervised engine process (isolation:
// process, the default), measured in alternation. Decode t/s counts from the first streamed part to
// the last, so load time and prompt evaluation are not in it. Not a test: prints figures for
// docs/BENCHMARKS.md ("Engine process boundary").
//
// Usage: node --import tsx bench/engine-boundary.ts [--model tiny|chat-512x8|chat-1024x16] [--threads 1]
//          [--streams 1,8] [--tokens 128] [--rounds 5]
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { engines } from '../src/engines/index.ts';
import { llamaCppModelSchema } from '../src/engines/llama-cpp/config.ts';
import { createLogger } from '../src/observability/logger.ts';
import { ModelRegistry } from '../src/registry/registry.ts';
import type { ChatModel } from '../src/spec/index.ts';
import { ensureBenchModel, ensureTinyModels } from '../src/tiny-models/index.ts';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'chat-512x8' },
    threads: { type: 'string', default: '1' },
    streams: { type: 'string', default: '1,8' },
    tokens: { type: 'string', default: '128' },
    rounds: { type: 'string', default: '5' },
  },
});
const threads = Number(values.threads);
const tokens = Number(values.tokens);
const rounds = Number(values.rounds);
const streamCounts = values.streams.split(',').map(Number);
const dir = join(tmpdir(), 'infera-bench-models');
const path =
  values.model === 'tiny'
    ? (await ensureTinyModels(join(dir, 'tiny'))).chat
    : await ensureBenchModel(values.model as 'chat-512x8' | 'chat-1024x16', dir);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function decodeRate(model: ChatModel, streams: number): Promise<number> {
  let first = Number.POSITIVE_INFINITY;
  let last = 0;
  let generated = 0;
  await Promise.all(
    Array.from({ length: streams }, async () => {
      const parts = model.doStream({
        messages: [{ role: 'user', content: 'Write a long story about a lighthouse keeper and the sea.' }],
        sampling: { temperature: 0 },
        thinking: { enabled: false },
        maxTokens: tokens,
        signal: new AbortController().signal,
      });
      for await (const part of parts) {
        const now = performance.now();
        if (part.type === 'finish') generated += part.usage.completionTokens;
        else {
          first = Math.min(first, now);
          last = Math.max(last, now);
        }
      }
    }),
  );
  return generated / ((last - first) / 1000);
}

const registries = new Map<string, { registry: ModelRegistry; model: ChatModel }>();
for (const isolation of ['none', 'process'] as const) {
  const config = llamaCppModelSchema.parse({
    id: isolation,
    type: 'chat',
    engine: 'llama-cpp',
    path,
    isolation,
    llamaCpp: { threads, contextSize: 1024, sequences: Math.max(...streamCounts) },
  });
  const registry = new ModelRegistry([config], { engines, logger: createLogger('warn') });
  const lease = await registry.acquire(isolation, 'chat');
  lease.release();
  registries.set(isolation, { registry, model: lease.model });
}

console.log(`# engine boundary: ${values.model}, ${threads} thread(s), ${tokens} tokens/stream, ${rounds} rounds, load ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
console.log('| streams | in the server process t/s | engine process t/s | ratio | boundary cost |');
console.log('|---|---|---|---|---|');
for (const streams of streamCounts) {
  const rates: Record<string, number[]> = { none: [], process: [] };
  // Warm-up of both, then alternate so drift in the machine's load falls on both sides alike.
  for (const side of ['none', 'process']) await decodeRate(registries.get(side)!.model, streams);
  for (let round = 0; round < rounds; round++)
    for (const side of round % 2 === 0 ? ['none', 'process'] : ['process', 'none']) rates[side]!.push(await decodeRate(registries.get(side)!.model, streams));
  const inline = median(rates.none!);
  const isolated = median(rates.process!);
  console.log(`| ${streams} | ${inline.toFixed(0)} | ${isolated.toFixed(0)} | ${(isolated / inline).toFixed(3)} | ${((1 - isolated / inline) * 100).toFixed(1)} % |`);
}
console.log(`load after: ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
for (const { registry } of registries.values()) await registry.close();
