// What the FFI runner adds over node-llama-cpp's LlamaChat, on the scripted tiny qwen3 model: one
// llama_decode per step for all running sequences, an event loop that keeps turning during
// generation, the prompt cache, and the fallback to node-llama-cpp when the runner cannot serve a
// model. (The behaviour both runners share is chat.test.ts, which runs on the FFI runner.)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Llama } from 'node-llama-cpp';
import type { ChatCallOptions } from '../../spec/chat.ts';
import { TINY_CHAT_SCRIPT, ensureTinyModels } from '../../tiny-models/index.ts';
import { LlamaCppChatModel, loadChatModel } from './chat.ts';
import { FfiChatModel } from './chat-ffi.ts';
import { llamaCppModelSchema } from './config.ts';
import { createLlama } from './runtime.ts';

let dir: string;
let llama: Llama;
let chatPath: string;
let loaded: Awaited<ReturnType<typeof loadChatModel>>;
let model: FfiChatModel;

const configFor = (llamaCpp: Record<string, unknown>) =>
  llamaCppModelSchema.parse({ id: 'tiny-chat', type: 'chat', engine: 'llama-cpp', path: chatPath, maxQueue: 4, llamaCpp });

const ask = (content: string, extra: Partial<ChatCallOptions> = {}): ChatCallOptions => ({
  messages: [{ role: 'user', content }],
  sampling: { temperature: 0 },
  thinking: { enabled: false },
  signal: new AbortController().signal,
  ...extra,
});

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'infera-chat-ffi-'));
  chatPath = (await ensureTinyModels(dir)).chat;
  llama = await createLlama(false);
  loaded = await loadChatModel(configFor({ contextSize: 1024, sequences: 4, threads: 1 }), undefined, { llama }, (reason) => assert.fail(reason));
  assert.ok(loaded.model instanceof FfiChatModel);
  model = loaded.model;
});

after(async () => {
  await loaded?.dispose();
  await llama?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

test('concurrent streams share one llama_decode per step', async () => {
  const before = { ...model.runner.stats };
  const results = await Promise.all(Array.from({ length: 4 }, () => model.doGenerate(ask('Please count', { maxTokens: 24 }))));
  for (const result of results) assert.equal(result.text, TINY_CHAT_SCRIPT.countWords.concat(TINY_CHAT_SCRIPT.countWords, TINY_CHAT_SCRIPT.countWords).slice(0, 24).join(''));
  const steps = model.runner.stats.steps - before.steps;
  const tokens = model.runner.stats.tokens - before.tokens;
  assert.equal(tokens, 4 * 24);
  // 24 tokens each, plus at most a prefill step per request when they arrive apart.
  assert.ok(steps <= 24 + 4, `${steps} decodes for 4 × 24 tokens`);
});

test('requests whose prompts were checked together share their first decode, though one starts later', async () => {
  // The server checks every prompt with the engine, then starts it: a burst of clients reaches an idle
  // runner one start at a time. The hold is long here so that the test sees the rule, not the timing.
  model.admissionHoldMs = 2_000;
  model.runner.admissionHoldMaxMs = 2_000;
  try {
    const before = { ...model.runner.stats };
    await model.checkPrompt(ask('Please count'));
    await model.checkPrompt(ask('Now count again'));
    const first = model.doGenerate(ask('Please count', { maxTokens: 6 }));
    const later = new Promise((resolve) => setTimeout(resolve, 30)).then(() => model.doGenerate(ask('Now count again', { maxTokens: 6 })));
    await Promise.all([first, later]);
    assert.equal(model.runner.stats.tokens - before.tokens, 12);
    // One prefill step for both (their first tokens), then five more, and one decoded in vain where the
    // runner pipelines (decodeOn 'worker': the chat layer's stop comes after the next decode started).
    // Without the hold: each its own 6-7 steps, the first request long finished when the other starts.
    const steps = model.runner.stats.steps - before.steps;
    assert.ok(steps <= 7, `${steps} decodes for two 6-token answers`);
    // A lone request is not held: its own check is taken off when it starts.
    const started = performance.now();
    await model.checkPrompt(ask('Please count'));
    await model.doGenerate(ask('Please count', { maxTokens: 2 }));
    assert.ok(performance.now() - started < 1_000, `a lone request waited ${(performance.now() - started).toFixed(0)} ms`);
  } finally {
    model.admissionHoldMs = 20;
    model.runner.admissionHoldMaxMs = 40;
  }
});

test('a burst whose prompts exceed a prefill chunk and 512 tokens is prefilled in one decode', async () => {
  // vs-llama-server's 8-stream cells send 8 prompts of ~70 tokens at once (~560): with prompt tokens
  // bounded by the prefill chunk (256) and the batch (512) even with nothing generating, the later
  // streams' first tokens came one or two prefill steps after the first ones, inside the measured window.
  const filler = (first: string) => `${first} ${Array.from({ length: 30 }, (_, i) => TINY_CHAT_SCRIPT.countWords[i % 10]!.trim()).join(' ')} Please count`;
  const prompts = ['Hello', 'Now', 'Again', 'Please'].map(filler);
  const before = { ...model.runner.stats };
  const results = await Promise.all(prompts.map((content) => model.doGenerate(ask(content, { maxTokens: 3 }))));
  const promptTokens = results.reduce((sum, result) => sum + result.usage.promptTokens, 0);
  assert.ok(promptTokens > 512, `${promptTokens} prompt tokens`);
  assert.equal(model.runner.stats.tokens - before.tokens, 4 * 3);
  // One prefill step for all four (their first tokens), two more, and one decoded in vain where the
  // runner pipelines. Before: 256 prompt tokens a step, the last prompt's first token in the third step.
  const steps = model.runner.stats.steps - before.steps;
  assert.ok(steps <= 4, `${steps} decodes for four 3-token answers after ${promptTokens} prompt tokens`);
});

test('the event loop keeps turning while sequences generate', async () => {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const started = performance.now();
  await Promise.all([model.doGenerate(ask('Please count', { maxTokens: 200 })), model.doGenerate(ask('Please count', { maxTokens: 200 }))]);
  clearInterval(timer);
  const ms = performance.now() - started;
  assert.ok(ticks >= Math.min(20, ms / 10), `${ticks} timer ticks in ${ms.toFixed(0)} ms of generation`);
});

test('prompt cache: the second turn of a conversation reuses the first turn from the KV cache', async () => {
  const first = await model.doGenerate(ask('Hello there'));
  assert.equal(first.text, TINY_CHAT_SCRIPT.answer);
  const second = await model.doGenerate({
    ...ask(''),
    messages: [
      { role: 'user', content: 'Hello there' },
      { role: 'assistant', content: first.text },
      { role: 'user', content: 'And again?' },
    ],
  });
  assert.equal(second.text, TINY_CHAT_SCRIPT.answer);
  // Qwen3's template renders the earlier answer without the empty think block the first prompt ended
  // with (<think>, \n\n, </think>, \n\n): everything before it comes from the cache.
  assert.ok(second.usage.cachedPromptTokens >= first.usage.promptTokens - 4, JSON.stringify({ first: first.usage, second: second.usage }));
  assert.ok(second.usage.cachedPromptTokens < second.usage.promptTokens);
  // A different conversation takes another sequence or starts over: nothing wrong is reused.
  const other = await model.doGenerate(ask('Please count', { maxTokens: 3 }));
  assert.equal(other.text, TINY_CHAT_SCRIPT.countWords.slice(0, 3).join(''));
});

test('a model the runner cannot serve (GPU offload configured) loads on node-llama-cpp, with the reason', async () => {
  const reasons: string[] = [];
  const fallback = await loadChatModel(configFor({ contextSize: 512, sequences: 1, threads: 1, gpuLayers: 1 }), undefined, { llama }, (reason) =>
    reasons.push(reason),
  );
  try {
    assert.ok(fallback.model instanceof LlamaCppChatModel);
    assert.equal(reasons.length, 1);
    assert.match(reasons[0]!, /GPU offload/);
    assert.equal((await fallback.model.doGenerate(ask('Hello there'))).text, TINY_CHAT_SCRIPT.answer);
  } finally {
    await fallback.dispose();
  }
  const chosen = await loadChatModel(configFor({ contextSize: 512, sequences: 1, threads: 1, runner: 'node-llama-cpp' }), undefined, { llama }, (reason) =>
    assert.fail(reason),
  );
  assert.ok(chosen.model instanceof LlamaCppChatModel, 'runner: node-llama-cpp is honoured without a log line');
  await chosen.dispose();
});

test('first start: the no-thinking wrapper is resolved when the model is idle after load, and the cache entry written then', async () => {
  const cacheDir = join(dir, 'wrapper-cache');
  const cold = await loadChatModel(configFor({ contextSize: 512, sequences: 1, threads: 1 }), undefined, { llama, cacheDir }, (reason) => assert.fail(reason));
  try {
    // Not at load: the entry needs both wrappers.
    assert.equal(existsSync(cacheDir), false);
    const entries = () => (existsSync(cacheDir) ? readdirSync(cacheDir).filter((name) => name.endsWith('.json')) : []);
    for (const until = Date.now() + 20_000; entries().length === 0 && Date.now() < until; ) await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(entries().length, 1);
    // The same answers as the model loaded with both wrappers resolved at once (no cache: deferred, read on use).
    for (const thinking of [false, true])
      assert.equal(
        (await cold.model.doGenerate(ask('Please count', { maxTokens: 8, thinking: { enabled: thinking } }))).text,
        (await model.doGenerate(ask('Please count', { maxTokens: 8, thinking: { enabled: thinking } }))).text,
      );
  } finally {
    await cold.dispose();
  }
});

test('first start: the idle resolution waits for the server to start serving the model (a spare engine process loads before it listens)', async () => {
  const cacheDir = join(dir, 'wrapper-cache-serving');
  let startServing!: () => void;
  const serving = new Promise<void>((resolve) => (startServing = resolve));
  const cold = await loadChatModel(configFor({ contextSize: 512, sequences: 1, threads: 1 }), undefined, { llama, cacheDir, serving }, (reason) =>
    assert.fail(reason),
  );
  try {
    const entries = () => (existsSync(cacheDir) ? readdirSync(cacheDir).filter((name) => name.endsWith('.json')) : []);
    // Idle for three times the delay, but not serving yet: nothing resolved, nothing written.
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    assert.equal(entries().length, 0);
    startServing();
    for (const until = Date.now() + 20_000; entries().length === 0 && Date.now() < until; ) await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(entries().length, 1);
  } finally {
    await cold.dispose();
  }
});

test('the runner refuses what would abort llama.cpp: tokens outside the vocabulary, a prompt beyond the context', () => {
  const { runner } = model;
  const spec = { sampling: { temperature: 0 }, maxTokens: 4, onToken: () => undefined };
  assert.throws(() => runner.generate({ ...spec, prompt: [runner.vocabSize] }), /outside the vocabulary/);
  assert.throws(() => runner.generate({ ...spec, prompt: [1], sampling: { temperature: 0, logitBias: [[-1, 1]] } }), /outside the vocabulary/);
  assert.throws(() => runner.generate({ ...spec, prompt: Array(runner.contextSize).fill(1) }), /exceed the context/);
  assert.equal(runner.active, 0, 'nothing refused took a sequence');
});
