// Where the CPU of one generated token goes at 1 stream, beyond the decode and the token choice: the
// bare FFI runner (decode + choice + its loop, an onToken that does nothing) against the chat model in a
// supervised engine process (isolation: process, the default: the same runner on the engine's loop
// thread, plus the chat layer — UTF-8 decoding, the reasoning/tool-call parser, stop strings, max_tokens
// accounting — and one IPC message per step to the server process, which turns it into stream parts).
// CPU time from /proc (schedstat, ns) rather than wall time: the box is shared. Per token = the
// difference between a long and a short generation divided by the tokens between them, so per-request
// costs (template, prompt, spawn of the request) cancel out. Sides alternate per round. Not a test.
//
// Usage: node --import tsx bench/step-split.ts [--model chat-512x8-vocab152k] [--threads 1] [--short 16]
//          [--long 112] [--rounds 5]
import { readdirSync, readFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { engines } from '../src/engines/index.ts';
import { llamaCppModelSchema } from '../src/engines/llama-cpp/config.ts';
import { openLlamaLibrary } from '../src/engines/llama-cpp/ffi/library.ts';
import { type FfiChatModel, OutputState } from '../src/engines/llama-cpp/chat-ffi.ts';
import type { Plan } from '../src/engines/llama-cpp/chat-plan.ts';
import { LlamaRunner, type TokenEvent } from '../src/engines/llama-cpp/ffi/runner.ts';
import { createLogger } from '../src/observability/logger.ts';
import { ModelRegistry } from '../src/registry/registry.ts';
import type { ChatModel } from '../src/spec/index.ts';
import { type BenchModelKind, ensureBenchModel } from '../src/tiny-models/index.ts';
import { treeCpuNs } from './proc-cpu.ts';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'chat-512x8-vocab152k' },
    threads: { type: 'string', default: '1' },
    short: { type: 'string', default: '16' },
    long: { type: 'string', default: '112' },
    rounds: { type: 'string', default: '5' },
  },
});
const threads = Number(values.threads);
const lengths = [Number(values.short), Number(values.long)] as const;
const path = await ensureBenchModel(values.model as BenchModelKind, join(tmpdir(), 'infera-bench-models'));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** CPU ns of this process's own threads (not its children). */
function selfCpuNs(): number {
  let total = 0;
  for (const tid of readdirSync('/proc/self/task'))
    try {
      total += Number(readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // gone meanwhile
    }
  return total;
}
/** CPU ns of the main (event-loop) threads of this process's children: the engine process's loop thread, decode included. */
function childMainNs(): number {
  let total = 0;
  for (const tid of readdirSync('/proc/self/task'))
    for (const pid of readFileSync(`/proc/self/task/${tid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean))
      try {
        total += Number(readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // gone meanwhile
      }
  return total;
}
/** CPU ns of this process's main thread (the bare runner decodes there). */
const selfMainNs = () => Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]);
function cpu(): { self: number; children: number; selfMain: number; childMain: number } {
  const self = selfCpuNs();
  return { self, children: treeCpuNs(process.pid) - self, selfMain: selfMainNs(), childMain: childMainNs() };
}

const lib = await openLlamaLibrary();
const runner = LlamaRunner.load(lib, path, { contextSize: 1024, sequences: 1, threads, decodeOn: 'loop' });
const configs = (['process', 'none'] as const).map((isolation) =>
  llamaCppModelSchema.parse({ id: isolation, type: 'chat', engine: 'llama-cpp', path, isolation, llamaCpp: { threads, contextSize: 1024, sequences: 1 } }),
);
const registry = new ModelRegistry(configs, { engines, logger: createLogger('warn') });
const models: Record<string, ChatModel> = {};
for (const id of ['process', 'none']) {
  const lease = await registry.acquire(id, 'chat');
  lease.release();
  models[id] = lease.model;
}
// The in-process chat model's runner: its counters split the loop's time (isolation: none, decode on koffi's worker).
const inlineRunner = (models.none as unknown as { runner?: LlamaRunner }).runner;

let promptNumber = 0;
async function bare(tokens: number): Promise<number> {
  let generated = 0;
  const prompt = runner.tokenize(`<|im_start|>user\n(${++promptNumber}) Write a long story about a lighthouse keeper and the sea.<|im_end|>\n<|im_start|>assistant\n`);
  await runner.generate({ prompt, sampling: { temperature: 0 }, maxTokens: tokens, cachePrompt: false, onToken: () => void generated++ }).done;
  return generated;
}
async function engine(tokens: number, model = models.process!): Promise<number> {
  let generated = 0;
  const parts = model.doStream({
    messages: [{ role: 'user', content: `(${++promptNumber}) Write a long story about a lighthouse keeper and the sea.` }],
    sampling: { temperature: 0 },
    thinking: { enabled: false },
    maxTokens: tokens,
    signal: new AbortController().signal,
  });
  for await (const part of parts) if (part.type === 'finish') generated = part.usage.completionTokens;
  return generated;
}

interface Sample {
  self: number;
  children: number;
  selfMain: number;
  childMain: number;
  tokens: number;
}
async function measure(run: (tokens: number) => Promise<number>, tokens: number): Promise<Sample> {
  const before = cpu();
  const generated = await run(tokens);
  const after = cpu();
  return { self: after.self - before.self, children: after.children - before.children, selfMain: after.selfMain - before.selfMain, childMain: after.childMain - before.childMain, tokens: generated };
}

const inline = (tokens: number) => engine(tokens, models.none!);
const sides = { bare, engine, inline } as const;
const perToken: Record<string, { self: number[]; children: number[]; event: number[]; main: number[] }> = {};
for (const label of Object.keys(sides)) perToken[label] = { self: [], children: [], event: [], main: [] };
console.log(`# step split: ${values.model}, ${threads} thread(s), 1 stream, greedy, ${lengths.join(' vs ')} tokens, load ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
for (const side of Object.values(sides)) await side(lengths[0]); // warm-up
for (let round = 0; round < Number(values.rounds); round++)
  for (const [label, run] of Object.entries(sides)) {
    const counters = label === 'inline' ? inlineRunner?.stats : label === 'bare' ? runner.stats : undefined;
    const mark = counters && { event: counters.sampleMs - counters.chooseMs, tokens: counters.tokens };
    const short = await measure(run, lengths[0]);
    const long = await measure(run, lengths[1]);
    // The sampling pass less the choice: building the token event and the owner's onToken (bare: nothing;
    // inline: the chat layer), wall ms per token on the loop's thread.
    if (counters && mark) perToken[label]!.event.push(((counters.sampleMs - counters.chooseMs - mark.event) * 1000) / (counters.tokens - mark.tokens));
    const tokens = long.tokens - short.tokens;
    perToken[label]!.self.push((long.self - short.self) / tokens / 1000);
    perToken[label]!.children.push((long.children - short.children) / tokens / 1000);
    // The thread a token waits for: this process's loop thread (bare) or the engine process's (engine).
    perToken[label]!.main.push((label === 'engine' ? long.childMain - short.childMain : long.selfMain - short.selfMain) / tokens / 1000);
  }
const f = (x: number) => x.toFixed(0);
const bareSelf = median(perToken.bare!.self);
const engineChild = median(perToken.engine!.children);
const engineMain = median(perToken.engine!.self);
console.log('| per token (µs of CPU, medians) | bare runner | engine process | server process (IPC in, stream parts) |');
console.log('|---|---|---|---|');
console.log(`| CPU | ${f(bareSelf)} | ${f(engineChild)} | ${f(engineMain)} |`);
console.log(`engine process − bare runner (chat layer + IPC out): ${f(engineChild - bareSelf)} µs/token; + server side: ${f(engineChild - bareSelf + engineMain)} µs/token`);
const events = (label: string) => (perToken[label]!.event.length > 0 ? f(median(perToken[label]!.event)) : 'n/a');
console.log(`token event + onToken on the loop's thread (wall µs/token): bare ${events('bare')}, chat layer in process ${events('inline')}`);
console.log(`loop thread only (µs of CPU per token, medians): bare runner ${f(median(perToken.bare!.main))}, engine process ${f(median(perToken.engine!.main))}; rounds bare ${perToken.bare!.main.map(f).join(' ')}; engine ${perToken.engine!.main.map(f).join(' ')}`);
console.log(`in process (isolation none) CPU µs/token: ${f(median(perToken.inline!.self))}`);
console.log(`rounds: bare ${perToken.bare!.self.map(f).join(' ')}; engine ${perToken.engine!.children.map(f).join(' ')}; main ${perToken.engine!.self.map(f).join(' ')}`);
// The chat layer alone, replayed: the token events of one real greedy answer fed again and again into
// the engine's per-request OutputState (UTF-8 decoding, reasoning/tool-call parser, stop strings,
// max_tokens accounting, the stream parts it emits), CPU per token of this process.
{
  const events: TokenEvent[] = [];
  const prompt = runner.tokenize('<|im_start|>user\nWrite a long story about a lighthouse keeper and the sea.<|im_end|>\n<|im_start|>assistant\n');
  await runner.generate({ prompt, sampling: { temperature: 0 }, maxTokens: lengths[1], cachePrompt: false, onToken: (event) => void events.push(event) }).done;
  const plan = { stop: ['\n\n\n'], thinking: false, thoughtBudget: 0, forceCall: false, totalLimit: 4096, bannedTokens: [], warnings: [] } as unknown as Plan;
  const chatModel = models.none as unknown as FfiChatModel;
  const perEvent: number[] = [];
  for (let round = 0; round < 5; round++) {
    let parts = 0;
    const reps = 400;
    const before = process.cpuUsage();
    for (let r = 0; r < reps; r++) {
      const output = new OutputState(chatModel, plan, () => void parts++);
      for (const event of events) output.onToken(event);
    }
    const used = process.cpuUsage(before);
    if (parts === 0) throw new Error('the replay emitted nothing');
    perEvent.push((used.user + used.system) / (reps * events.length));
  }
  console.log(`chat layer replayed (OutputState.onToken, ${events.length} tokens × 400, 5 rounds): ${median(perEvent).toFixed(2)} µs of CPU per token`);
}
console.log(`load after: ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
await runner.dispose();
await registry.close();
process.exit(0);
