// Text completion on the llama.cpp engine against the scripted tiny models (real llama.cpp, real
// GGUFs), on both runners (Infera's FFI loop and node-llama-cpp's LlamaCompletion): the plain Qwen3
// model has no FIM tokens, its coder variant has Qwen2.5-Coder's. Raw prompts, FIM, limits, logprobs,
// token prompts, cancellation and unloading.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Llama } from 'node-llama-cpp';
import { ClientGoneError, InferaError } from '../../errors/index.ts';
import type { CompletionCallOptions, CompletionStreamPart } from '../../spec/chat.ts';
import type { LoadedModel } from '../../spec/index.ts';
import { FIM_TOKENS, TINY_CHAT_SCRIPT, ensureTinyModels } from '../../tiny-models/index.ts';
import { buildTinyChatVocab } from '../../tiny-models/tiny-chat.ts';
import type { FfiChatModel } from './chat-ffi.ts';
import { loadChatModel, type LlamaCppChatModel } from './chat.ts';
import { llamaCppModelSchema } from './config.ts';
import { createLlama } from './runtime.ts';

const CONTEXT = 512;
/** Either runner's chat model: both take text completions on their chat sequences. */
type CompletingModel = LlamaCppChatModel | FfiChatModel;

const HELLO = `${TINY_CHAT_SCRIPT.thinkingPrefix()}${TINY_CHAT_SCRIPT.answer}`;
const complete = (prompt: CompletionCallOptions['prompt'], extra: Partial<CompletionCallOptions> = {}): CompletionCallOptions => ({
  prompt,
  maxTokens: 40,
  sampling: { temperature: 0 },
  signal: new AbortController().signal,
  ...extra,
});

async function collect(model: CompletingModel, options: CompletionCallOptions): Promise<CompletionStreamPart[]> {
  const parts: CompletionStreamPart[] = [];
  for await (const part of model.doCompleteStream(options)) parts.push(part);
  return parts;
}

async function rejectsWith(promise: Promise<unknown>, status: number, param: string | null, code?: string) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof InferaError, `expected InferaError, got ${String(error)}`);
    assert.equal(error.status, status);
    assert.equal(error.param, param);
    if (code) assert.equal(error.code, code);
    return true;
  });
}

const waitUntil = async (condition: () => boolean, timeoutMs = 2000) => {
  const start = performance.now();
  while (!condition()) {
    if (performance.now() - start > timeoutMs) throw new Error('condition not reached in time');
    await new Promise((resolve) => setImmediate(resolve));
  }
  return performance.now() - start;
};

for (const runner of ['ffi', 'node-llama-cpp'] as const) {
  describe(`text completion on the ${runner} runner`, () => {
    let dir: string;
    let llama: Llama;
    let chatLoaded: LoadedModel<CompletingModel>;
    let coderLoaded: LoadedModel<CompletingModel>;
    let chat: CompletingModel;
    let coder: CompletingModel;

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'infera-completions-'));
      const paths = await ensureTinyModels(dir);
      llama = await createLlama(false);
      const load = (id: 'chat' | 'coder') =>
        loadChatModel(
          llamaCppModelSchema.parse({ id, type: 'chat', engine: 'llama-cpp', path: paths[id], maxQueue: 1, llamaCpp: { contextSize: CONTEXT, sequences: 2, threads: 1, runner } }),
          undefined,
          { llama },
          (reason) => assert.fail(reason),
        ) as Promise<LoadedModel<CompletingModel>>;
      chatLoaded = await load('chat');
      coderLoaded = await load('coder');
      chat = chatLoaded.model;
      coder = coderLoaded.model;
    });

    after(async () => {
      await chatLoaded?.dispose();
      await coderLoaded?.dispose();
      await llama?.dispose();
      rmSync(dir, { recursive: true, force: true });
    });

    test('a raw prompt is continued without the chat template; the stream adds up to the JSON answer', async () => {
      const result = await chat.doComplete(complete('Hello there'));
      assert.equal(result.text, HELLO);
      assert.equal(result.finishReason, 'stop');
      assert.equal(result.usage.promptTokens, await chat.checkCompletion(complete('Hello there')));
      assert.ok(result.usage.completionTokens >= 9);
      assert.equal(result.logprobs, undefined);
      const parts = await collect(chat, complete('Hello there'));
      const finish = parts.at(-1);
      assert.equal(finish?.type, 'finish');
      assert.equal(parts.filter((part) => part.type === 'finish').length, 1);
      assert.equal(parts.map((part) => (part.type === 'text-delta' ? part.text : '')).join(''), result.text);
      assert.ok(finish.type === 'finish');
      const { cachedPromptTokens, ...counts } = finish.usage;
      assert.deepEqual(counts, { promptTokens: result.usage.promptTokens, completionTokens: result.usage.completionTokens });
      // The same prompt again: the FFI runner's prompt cache holds all of it but the last token
      // (node-llama-cpp's engine reports none).
      if (cachedPromptTokens !== undefined) assert.equal(cachedPromptTokens, counts.promptTokens - 1);
      assert.equal(chat.slots.active, 0);
    });

    test('FIM: the coder variant fills in the middle; a model without FIM tokens refuses suffix with a 400 naming it', async () => {
      assert.equal(coder.infill, true);
      assert.equal(chat.infill, false);
      const fim = complete('def add(a, b):\n', { suffix: '\nprint(add(1, 2))\n' });
      const result = await coder.doComplete(fim);
      assert.equal(result.text, TINY_CHAT_SCRIPT.fimMiddle);
      assert.equal(result.finishReason, 'stop');
      // Prefix, suffix and middle markers are prompt tokens; the client's text is data, not markup.
      const plainCount = await coder.checkCompletion(complete('def add(a, b):\n'));
      const suffixCount = await coder.checkCompletion(complete('\nprint(add(1, 2))\n'));
      assert.equal(result.usage.promptTokens, plainCount + suffixCount + 3);
      const markup = await coder.checkCompletion(complete(FIM_TOKENS.middle, { suffix: 'x' }));
      assert.ok(markup > 3 + 1 + 1, 'FIM markup written by the client inside a FIM prompt is plain text');
      assert.equal(await coder.checkCompletion(complete(FIM_TOKENS.middle)), 1, 'in a plain prompt, markup is the token');
      // A plain prompt may carry the FIM markup itself (what FIM clients do against servers without suffix).
      const raw = await coder.doComplete(complete(`${FIM_TOKENS.prefix}def add(a, b):\n${FIM_TOKENS.suffix}\nprint(add(1, 2))\n${FIM_TOKENS.middle}`));
      assert.equal(raw.text, TINY_CHAT_SCRIPT.fimMiddle);
      await rejectsWith(chat.checkCompletion(fim), 400, 'suffix');
      await rejectsWith(chat.doComplete(fim), 400, 'suffix');
      assert.throws(() => chat.doCompleteStream(fim), (error: InferaError) => error.param === 'suffix');
    });

    test('max_tokens bounds the answer (length); 0 generates nothing; stop strings end it; an empty prompt starts a document', async () => {
      const counted = await chat.doComplete(complete('Please count', { maxTokens: 12 }));
      assert.equal(counted.finishReason, 'length');
      assert.equal(counted.usage.completionTokens, 12);
      const none = await chat.doComplete(complete('Please count', { maxTokens: 0, echo: true, topLogprobs: 1 }));
      assert.deepEqual(none, { text: 'Please count', finishReason: 'length', usage: { promptTokens: counted.usage.promptTokens, completionTokens: 0 }, logprobs: [], warnings: [] });
      const stopped = await chat.doComplete(complete('Please count', { maxTokens: 100, stop: [' three'] }));
      assert.equal(stopped.finishReason, 'stop');
      assert.ok(stopped.text.endsWith(' one two'), stopped.text);
      // A stop string that begins inside a token: the text keeps what comes before it, and so do the logprobs.
      const inside = await chat.doComplete(complete('Please count', { maxTokens: 100, stop: ['hre'], topLogprobs: 1 }));
      assert.equal(inside.finishReason, 'stop');
      assert.ok(inside.text.endsWith(' one two t'), inside.text);
      assert.equal(inside.logprobs!.map((entry) => entry.token).join(''), inside.text);
      // An empty prompt starts a new document (the beginning-of-text token).
      const empty = await chat.doComplete(complete('', { maxTokens: 1 }));
      assert.equal(empty.usage.promptTokens, 1);
      assert.equal(empty.text, '<think>');
    });

    test('logprobs: one entry per generated token, JSON and stream alike, never for the echoed prompt', async () => {
      const result = await chat.doComplete(complete('Please count', { maxTokens: 10, topLogprobs: 3 }));
      assert.equal(result.logprobs!.length, 10);
      assert.equal(result.logprobs!.map((entry) => entry.token).join(''), result.text);
      for (const entry of result.logprobs!) {
        assert.equal(entry.topLogprobs.length, 3);
        assert.equal(entry.topLogprobs[0]!.token, entry.token, 'the scripted choice is the most likely');
      }
      const parts = await collect(chat, complete('Please count', { maxTokens: 10, topLogprobs: 3, echo: true }));
      const deltas = parts.filter((part) => part.type === 'text-delta');
      assert.deepEqual(deltas[0], { type: 'text-delta', text: 'Please count' });
      assert.deepEqual(deltas.slice(1).flatMap((part) => part.logprobs ?? []), result.logprobs);
    });

    test('token prompts: evaluated as given, checked against the vocabulary, echoed as their text', async () => {
      const { vocab } = buildTinyChatVocab();
      const ids = [vocab.id('Please'.slice(0, 1)), vocab.id(' count')];
      const result = await chat.doComplete(complete(ids, { maxTokens: 8, echo: true }));
      assert.ok(result.text.startsWith(`P count${TINY_CHAT_SCRIPT.thinkingPrefix('count')}`), result.text);
      assert.equal(result.usage.promptTokens, 2);
      await rejectsWith(chat.checkCompletion(complete([ids[0]!, 1_000_000])), 400, 'prompt[1]');
    });

    test('a prompt and max_tokens that do not fit the context are a 400 context_length_exceeded naming prompt', async () => {
      await rejectsWith(chat.checkCompletion(complete('Hello', { maxTokens: CONTEXT })), 400, 'prompt', 'context_length_exceeded');
      await rejectsWith(chat.doComplete(complete(' count'.repeat(CONTEXT), { maxTokens: 1 })), 400, 'prompt', 'context_length_exceeded');
    });

    test('cancellation: an abort mid-stream, return() before the first next(), and an aborted doComplete free the sequence', async () => {
      const controller = new AbortController();
      const iterator = chat.doCompleteStream(complete('Please count', { maxTokens: 400, signal: controller.signal }))[Symbol.asyncIterator]();
      for (let i = 0; i < 5; i++) assert.equal((await iterator.next()).done, false);
      assert.equal(chat.slots.active, 1);
      assert.deepEqual(await chat.stats(), { active: 1, queued: 0 }, 'stats() reads the same slots');
      controller.abort();
      const freedMs = await waitUntil(() => chat.slots.active === 0, 100);
      console.log(`completion: abort signal → sequence free: ${freedMs.toFixed(1)} ms`);
      await assert.rejects(async () => {
        for (;;) if ((await iterator.next()).done) break;
      }, ClientGoneError);

      const untouched = chat.doCompleteStream(complete('Please count', { maxTokens: 400 }))[Symbol.asyncIterator]();
      await waitUntil(() => chat.slots.active === 1);
      await untouched.return!();
      assert.equal(chat.slots.active, 0, 'released by the time return() resolves');

      const stop = new AbortController();
      const pending = chat.doComplete(complete('Please count', { maxTokens: 400, signal: stop.signal }));
      await waitUntil(() => chat.slots.active === 1);
      stop.abort();
      await assert.rejects(pending, ClientGoneError);
      assert.equal(chat.slots.active, 0);
    });

    test('dispose() ends a running completion with a retryable 503 and refuses new ones', async () => {
      const running = coder.doComplete(complete('Please count', { maxTokens: 400 }));
      await waitUntil(() => coder.slots.active === 1);
      const disposed = coderLoaded.dispose();
      await rejectsWith(running, 503, null, 'model_unloading');
      await disposed;
      await rejectsWith(coder.checkCompletion(complete('Hello')), 503, null, 'model_unloading');
      coderLoaded = undefined as unknown as LoadedModel<CompletingModel>;
    });
  });
}
