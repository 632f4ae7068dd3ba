// The llama.cpp chat engine against the scripted tiny qwen3 model (real llama.cpp, real GGUF, real
// Qwen3 template): every script, tools, grammars, limits, cancellation and admission. Both runners
// must pass it: chat.test.ts runs it on the FFI runner, chat-node-llama-cpp.test.ts on LlamaChat.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { ClientGoneError, InferaError } from '../../errors/index.ts';
import type { ChatCallOptions, ChatStreamPart } from '../../spec/chat.ts';
import { TINY_CHAT_SCRIPT, ensureTinyModels } from '../../tiny-models/index.ts';
import type { Llama } from 'node-llama-cpp';
import { loadChatModel } from './chat.ts';
import { llamaCppModelSchema } from './config.ts';
import { createLlama } from './runtime.ts';

const SEQUENCES = 2;
const MAX_QUEUE = 1;
const weatherTool = {
  name: 'get_weather',
  description: 'Current weather for a city',
  parameters: {
    $schema: 'http://json-schema.org/draft-07/schema#',
    type: 'object',
    properties: { city: { type: 'string', description: 'City name' } },
    required: ['city'],
    additionalProperties: false,
  },
};
const weatherSchema = {
  type: 'object',
  properties: { city: { type: 'string' }, temperature: { type: 'number' } },
  required: ['city', 'temperature'],
  additionalProperties: false,
};

let dir: string;
let loaded: Awaited<ReturnType<typeof loadChatModel>>;
let model: typeof loaded.model;

const ask = (content: string, extra: Partial<ChatCallOptions> = {}): ChatCallOptions => ({
  messages: [{ role: 'user', content }],
  sampling: { temperature: 0 },
  thinking: {},
  signal: new AbortController().signal,
  ...extra,
});

async function collect(options: ChatCallOptions): Promise<ChatStreamPart[]> {
  const parts: ChatStreamPart[] = [];
  for await (const part of model.doStream(options)) parts.push(part);
  return parts;
}

/** What a stream adds up to, in the shape of a non-stream result. */
function fold(parts: ChatStreamPart[]) {
  const calls: { id: string; name: string; arguments: string }[] = [];
  let text = '';
  let reasoning = '';
  for (const part of parts) {
    if (part.type === 'text-delta') text += part.text;
    else if (part.type === 'reasoning-delta') reasoning += part.text;
    else if (part.type === 'tool-call-start') calls[part.index] = { id: part.id, name: part.name, arguments: '' };
    else if (part.type === 'tool-call-delta') calls[part.index]!.arguments += part.argumentsDelta;
  }
  const finish = parts.at(-1);
  assert.equal(finish?.type, 'finish', 'the last part is finish');
  assert.equal(parts.filter((part) => part.type === 'finish').length, 1);
  return { text, reasoning, calls, finish: finish as Extract<ChatStreamPart, { type: 'finish' }> };
}

async function rejectsWith(promise: Promise<unknown> | (() => unknown), status: number, param: string | null, code?: string) {
  await assert.rejects(
    typeof promise === 'function' ? async () => promise() : promise,
    (error: unknown) => {
      assert.ok(error instanceof InferaError, `expected InferaError, got ${String(error)}`);
      assert.equal(error.status, status);
      assert.equal(error.param, param);
      if (code) assert.equal(error.code, code);
      return true;
    },
  );
}

const waitUntil = async (condition: () => boolean, timeoutMs = 2000) => {
  const start = performance.now();
  while (!condition()) {
    if (performance.now() - start > timeoutMs) throw new Error('condition not reached in time');
    await new Promise((resolve) => setImmediate(resolve));
  }
  return performance.now() - start;
};

let llama: Llama;

/** The suite on one runner: chat.test.ts (FFI) and chat-node-llama-cpp.test.ts (LlamaChat). */
export function defineChatSuite(runner: 'ffi' | 'node-llama-cpp'): void {
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'infera-chat-'));
    const paths = await ensureTinyModels(dir);
    const config = llamaCppModelSchema.parse({
      id: 'tiny-chat',
      type: 'chat',
      engine: 'llama-cpp',
      path: paths.chat,
      maxQueue: MAX_QUEUE,
      llamaCpp: { contextSize: 1024, sequences: SEQUENCES, threads: 1, runner },
    });
    const progress: number[] = [];
    llama = await createLlama(false);
    loaded = await loadChatModel(config, (fraction) => progress.push(fraction), { llama }, (reason) => assert.fail(reason));
    model = loaded.model;
    assert.ok(progress.length > 0 && progress.at(-1) === 1, 'load progress reaches 1');
  });

  after(async () => {
    await loaded?.dispose();
    await llama?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  describe('scripts', () => {
    test('default: think block, then the answer, stop', async () => {
      const result = await model.doGenerate(ask('Hello there'));
      assert.equal(result.reasoning, TINY_CHAT_SCRIPT.reasoning);
      assert.equal(result.text, TINY_CHAT_SCRIPT.answer);
      assert.deepEqual(result.toolCalls, []);
      assert.equal(result.finishReason, 'stop');
      assert.equal(result.usage.promptTokens, await model.checkPrompt(ask('Hello there')));
      assert.ok(result.usage.reasoningTokens >= 4, `reasoning tokens ${result.usage.reasoningTokens}`);
      // 4 answer tokens (+ end token) on top of the reasoning.
      assert.ok(result.usage.completionTokens >= result.usage.reasoningTokens + 4);
      assert.equal(result.usage.cachedPromptTokens, 0);

      const parts = await collect(ask('Hello there'));
      const folded = fold(parts);
      assert.equal(folded.reasoning, result.reasoning);
      assert.equal(folded.text, result.text);
      const firstText = parts.findIndex((part) => part.type === 'text-delta');
      const lastReasoning = parts.findLastIndex((part) => part.type === 'reasoning-delta');
      assert.ok(lastReasoning >= 0 && lastReasoning < firstText, 'reasoning streams before the answer');
      assert.equal(folded.finish.finishReason, 'stop');
      // The same prompt again may find its tokens in the sequence's KV (the FFI runner's prompt cache).
      assert.deepEqual({ ...folded.finish.usage, cachedPromptTokens: 0 }, result.usage);
    });

    test('thinking disabled: answer only, fewer completion tokens', async () => {
      const result = await model.doGenerate(ask('Hello there', { thinking: { enabled: false } }));
      assert.equal(result.reasoning, '');
      assert.equal(result.text, TINY_CHAT_SCRIPT.answer);
      assert.equal(result.usage.reasoningTokens, 0);
      assert.equal(result.finishReason, 'stop');
      const parts = await collect(ask('Hello there', { thinking: { enabled: false } }));
      assert.ok(!parts.some((part) => part.type === 'reasoning-delta'));
      assert.equal(fold(parts).text, TINY_CHAT_SCRIPT.answer);
    });

    test('weather + tools: a get_weather call with {city:"Paris"}, finish tool_calls', async () => {
      const result = await model.doGenerate(ask('What is the weather in Paris?', { tools: [weatherTool] }));
      assert.equal(result.finishReason, 'tool_calls');
      assert.equal(result.reasoning, TINY_CHAT_SCRIPT.reasoningByMode.weather);
      assert.equal(result.text, '', 'no tool-call markup leaks into the content');
      assert.equal(result.toolCalls.length, 1);
      const [call] = result.toolCalls;
      assert.match(call!.id, /^call_[A-Za-z0-9]{16}$/);
      assert.equal(call!.name, TINY_CHAT_SCRIPT.toolName);
      assert.deepEqual(JSON.parse(call!.arguments), TINY_CHAT_SCRIPT.toolArguments);

      const parts = await collect(ask('What is the weather in Paris?', { tools: [weatherTool] }));
      const folded = fold(parts);
      assert.equal(folded.finish.finishReason, 'tool_calls');
      assert.equal(folded.calls.length, 1);
      assert.match(folded.calls[0]!.id, /^call_/);
      assert.notEqual(folded.calls[0]!.id, call!.id, 'ids are fresh per call');
      assert.equal(folded.calls[0]!.name, 'get_weather');
      assert.deepEqual(JSON.parse(folded.calls[0]!.arguments), { city: 'Paris' });
      const start = parts.findIndex((part) => part.type === 'tool-call-start');
      const firstDelta = parts.findIndex((part) => part.type === 'tool-call-delta');
      assert.ok(start >= 0 && start < firstDelta, 'start (id, name) comes before argument fragments');
    });

    test('weather with thinking disabled still calls the tool', async () => {
      const result = await model.doGenerate(ask('weather in Paris?', { tools: [weatherTool], thinking: { enabled: false } }));
      assert.equal(result.finishReason, 'tool_calls');
      assert.equal(result.reasoning, '');
      assert.deepEqual(JSON.parse(result.toolCalls[0]!.arguments), { city: 'Paris' });
    });

    test("tool_choice 'none': no call even when the model wants one, no <tool_call> text", async () => {
      const result = await model.doGenerate(
        ask('What is the weather in Paris?', { tools: [weatherTool], toolChoice: 'none', maxTokens: 20 }),
      );
      assert.deepEqual(result.toolCalls, []);
      assert.notEqual(result.finishReason, 'tool_calls');
      assert.ok(!result.text.includes('<tool_call>') && !result.text.includes('get_weather'), result.text);
      const parts = await collect(ask('weather?', { tools: [weatherTool], toolChoice: 'none', maxTokens: 20 }));
      assert.ok(!parts.some((part) => part.type === 'tool-call-start'));
    });

    test("tool_choice 'required' and a named function force a call without a trigger word", async () => {
      for (const toolChoice of ['required', { name: 'get_weather' }] as const) {
        const other = { name: 'get_time', parameters: { type: 'object', properties: { zone: { type: 'string' } } } };
        const tools = toolChoice === 'required' ? [weatherTool] : [other, weatherTool];
        const result = await model.doGenerate(ask('Hello there', { tools, toolChoice, maxTokens: 40 }));
        assert.equal(result.finishReason, 'tool_calls', JSON.stringify(result));
        assert.equal(result.toolCalls[0]!.name, 'get_weather');
        assert.equal(typeof JSON.parse(result.toolCalls[0]!.arguments).city, 'string');
      }
    });

    test('parallel_tool_calls false: at most one call', async () => {
      const result = await model.doGenerate(ask('weather?', { tools: [weatherTool], parallelToolCalls: false }));
      assert.equal(result.toolCalls.length, 1);
      assert.equal(result.finishReason, 'tool_calls');
    });

    test('a tool result in the conversation gets the short answer', async () => {
      const options: ChatCallOptions = {
        messages: [
          { role: 'system', content: 'You are helpful.' },
          { role: 'user', content: 'What is the weather in Paris?' },
          {
            role: 'assistant',
            content: null,
            reasoning: TINY_CHAT_SCRIPT.reasoningByMode.weather,
            toolCalls: [{ id: 'call_abc', name: 'get_weather', arguments: '{"city":"Paris"}' }],
          },
          { role: 'tool', toolCallId: 'call_abc', content: 'sunny, 21 C' },
        ],
        tools: [weatherTool],
        sampling: { temperature: 0 },
        thinking: {},
        signal: new AbortController().signal,
      };
      const result = await model.doGenerate(options);
      assert.equal(result.text, TINY_CHAT_SCRIPT.toolAnswer);
      assert.equal(result.finishReason, 'stop');
      assert.deepEqual(result.toolCalls, []);
      assert.equal(fold(await collect(options)).text, TINY_CHAT_SCRIPT.toolAnswer);
    });

    test('json: json_schema output parses and matches the schema; json_object too', async () => {
      const validate = new Ajv().compile(weatherSchema);
      for (const thinking of [{}, { enabled: false }]) {
        const result = await model.doGenerate(
          ask('Reply in json please', { thinking, responseFormat: { type: 'json_schema', name: 'weather', schema: weatherSchema } }),
        );
        const value = JSON.parse(result.text);
        assert.ok(validate(value), JSON.stringify(validate.errors));
        assert.deepEqual(value, JSON.parse(TINY_CHAT_SCRIPT.json));
        assert.equal(result.finishReason, 'stop');
      }
      const object = await model.doGenerate(ask('Reply in json', { responseFormat: { type: 'json_object' } }));
      assert.equal(typeof JSON.parse(object.text), 'object');
      const streamed = fold(await collect(ask('json', { responseFormat: { type: 'json_schema', schema: weatherSchema } })));
      assert.ok(validate(JSON.parse(streamed.text)));
    });
  });

  describe('limits and sampling', () => {
    test('max_tokens counts answer tokens only: count → exactly N words, finish length', async () => {
      const words = TINY_CHAT_SCRIPT.countWords;
      for (const thinking of [{ enabled: false }, {}]) {
        const result = await model.doGenerate(ask('Please count', { maxTokens: 5, thinking }));
        assert.equal(result.finishReason, 'length');
        assert.equal(result.text, words.slice(0, 5).join(''));
        if (thinking.enabled !== false) {
          assert.equal(result.reasoning, TINY_CHAT_SCRIPT.reasoningByMode.count);
          assert.ok(result.usage.reasoningTokens > 0);
        }
        const folded = fold(await collect(ask('Please count', { maxTokens: 5, thinking })));
        assert.equal(folded.text, result.text);
        assert.equal(folded.finish.finishReason, 'length');
      }
    });

    test('max_tokens bounds a tool call with thinking on exactly as with thinking off (the chain of thought excluded)', async () => {
      // Two parameters, so that the scripted arguments take several tokens and max_tokens can cut them.
      const reportTool = { ...weatherTool, parameters: weatherSchema };
      const call = (thinking: ChatCallOptions['thinking'], maxTokens?: number) =>
        ask('weather in Paris?', { tools: [reportTool], thinking, ...(maxTokens === undefined ? {} : { maxTokens }) });
      const whole = await model.doGenerate(call({ enabled: false }));
      assert.equal(whole.finishReason, 'tool_calls');
      const wholeThinking = await model.doGenerate(call({}));
      assert.equal(wholeThinking.reasoning, TINY_CHAT_SCRIPT.reasoningByMode.weather);
      assert.deepEqual(wholeThinking.toolCalls.map((c) => c.arguments), whole.toolCalls.map((c) => c.arguments));
      // Answer tokens of the whole call without thinking: max_tokens just below it must cut it in both modes.
      const needed = whole.usage.completionTokens;
      for (const maxTokens of [1, needed - 5, needed - 4, needed - 2]) {
        const off = await model.doGenerate(call({ enabled: false }, maxTokens));
        const on = await model.doGenerate(call({}, maxTokens));
        assert.equal(off.finishReason, 'length', `thinking off, max_tokens ${maxTokens}`);
        assert.equal(on.finishReason, 'length', `thinking on, max_tokens ${maxTokens}`);
        assert.deepEqual(on.toolCalls.map((c) => c.arguments), off.toolCalls.map((c) => c.arguments), `max_tokens ${maxTokens}`);
        assert.equal(on.reasoning, TINY_CHAT_SCRIPT.reasoningByMode.weather);
        // What is billed after the thought stays within max_tokens, plus the blank line after the thought
        // and the token or two sampled before the stop took effect.
        assert.ok(on.usage.completionTokens - on.usage.reasoningTokens <= maxTokens + 3, `${JSON.stringify(on.usage)} for max_tokens ${maxTokens}`);
        const streamed = fold(await collect(call({}, maxTokens)));
        assert.equal(streamed.finish.finishReason, 'length');
        assert.deepEqual(streamed.calls.map((c) => c.arguments), on.toolCalls.map((c) => c.arguments));
      }
      const cut = await model.doGenerate(call({}, needed - 4));
      assert.equal(cut.toolCalls.length, 1);
      assert.throws(() => JSON.parse(cut.toolCalls[0]!.arguments), 'the arguments were cut mid-object');
    });

    test('thinking budget caps the reasoning', async () => {
      const full = await model.doGenerate(ask('Please count', { maxTokens: 2 }));
      const capped = await model.doGenerate(ask('Please count', { maxTokens: 2, thinking: { budgetTokens: 2 } }));
      assert.ok(capped.usage.reasoningTokens < full.usage.reasoningTokens);
      assert.ok(capped.reasoning.length < full.reasoning.length);
      assert.equal(capped.text, TINY_CHAT_SCRIPT.countWords.slice(0, 2).join(''));
    });

    test('a stop string ends the answer before it; the stop text is not returned', async () => {
      const result = await model.doGenerate(ask('Hello there', { stop: [' a tiny'] }));
      assert.equal(result.text, 'Hello! I am');
      assert.equal(result.finishReason, 'stop');
      const folded = fold(await collect(ask('Hello there', { stop: [' a tiny'], thinking: { enabled: false } })));
      assert.equal(folded.text, 'Hello! I am');
    });

    test('sampling options and penalties are accepted (peaked scripted logits keep the output)', async () => {
      const result = await model.doGenerate(
        ask('Hello there', {
          sampling: { temperature: 0.8, topP: 0.9, topK: 20, minP: 0.05, seed: 42, frequencyPenalty: 0.5, presencePenalty: 0.2, repetitionPenalty: 1.1 },
        }),
      );
      assert.equal(result.text, TINY_CHAT_SCRIPT.answer);
    });

    test('logprobs (non-stream): one entry per answer token, with alternatives', async () => {
      const result = await model.doGenerate(ask('Hello there', { topLogprobs: 2, thinking: { enabled: false } }));
      assert.ok(result.logprobs);
      assert.equal(result.logprobs.map((entry) => entry.token).join(''), result.text);
      for (const entry of result.logprobs) {
        assert.ok(entry.logprob <= 0);
        assert.ok(entry.topLogprobs.length >= 1 && entry.topLogprobs.length <= 2);
        assert.equal(entry.topLogprobs[0]!.token, entry.token, 'greedy picks the top alternative');
        assert.deepEqual(entry.bytes, [...Buffer.from(entry.token)]);
      }
      assert.equal((await model.doGenerate(ask('Hello there'))).logprobs, undefined);
    });
  });

  describe('bad requests name the field', () => {
    test('rejections', async () => {
      await rejectsWith(
        model.doGenerate(ask('json', { tools: [weatherTool], responseFormat: { type: 'json_object' } })),
        400,
        'response_format',
      );
      await rejectsWith(
        model.doGenerate(ask('json', { responseFormat: { type: 'json_schema', schema: { type: 'string', pattern: '^a+$' } } })),
        400,
        'response_format.json_schema',
      );
      await rejectsWith(
        model.doGenerate(ask('hi', { tools: [{ name: 'f', strict: true, parameters: { type: 'object', properties: { n: { type: 'integer', minimum: 1 } } } }] })),
        400,
        'tools[0].function.parameters',
      );
      await rejectsWith(
        model.doGenerate({
          ...ask(''),
          messages: [{ role: 'user', content: [{ type: 'text', text: 'look' }, { type: 'image', url: 'data:image/png;base64,AA' }] }],
        }),
        400,
        'messages[0].content[1]',
      );
      await rejectsWith(
        model.doGenerate({ ...ask(''), messages: [{ role: 'user', content: 'x' }, { role: 'tool', toolCallId: 'call_x', content: 'r' }] }),
        400,
        'messages[1].tool_call_id',
      );
      await rejectsWith(model.doGenerate(ask('hi', { maxTokens: 2000 })), 400, 'messages', 'context_length_exceeded');
      await rejectsWith(model.doGenerate(ask('word '.repeat(1100))), 400, 'messages', 'context_length_exceeded');
      assert.equal(model.slots.active, 0, 'rejected requests never took a sequence');
    });

    test('a schema whose grammar takes longer than grammarCompileMs (requests.jsonSchema.maxCompileMs) is refused naming the field and the cap', async () => {
      const format = { type: 'json_schema' as const, schema: weatherSchema };
      // 0 ms: no compilation is that fast, so this refusal does not depend on the box's speed.
      await assert.rejects(model.doGenerate(ask('json', { responseFormat: format, grammarCompileMs: 0 })), (error: unknown) => {
        assert.ok(error instanceof InferaError && error.status === 400, String(error));
        assert.equal(error.param, 'response_format.json_schema');
        assert.match(error.message, /took \d+ ms, more than requests\.jsonSchema\.maxCompileMs \(0 ms\)/);
        return true;
      });
      // LlamaChat builds its tools grammar inside its own generation, where it cannot be timed apart.
      if (runner === 'ffi') await rejectsWith(model.doGenerate(ask('weather?', { tools: [weatherTool], grammarCompileMs: 0 })), 400, 'tools');
      const ok = await model.doGenerate(ask('json', { responseFormat: format, grammarCompileMs: 60_000 }));
      assert.equal(ok.finishReason, 'stop');
      assert.equal(model.slots.active, 0, 'refused requests gave their sequence back');
    });

    test('a non-strict tool schema with unenforceable keywords is accepted with a warning', async () => {
      const tool = { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string', pattern: '^[A-Z]' } } } };
      const result = await model.doGenerate(ask('weather?', { tools: [tool] }));
      assert.equal(result.finishReason, 'tool_calls');
      assert.ok(result.warnings.some((warning) => warning.includes('pattern')), JSON.stringify(result.warnings));
    });
  });

  describe('cancellation and admission', () => {
    test('abort mid-stream frees the sequence within 100 ms', async () => {
      const controller = new AbortController();
      const iterator = model.doStream(ask('Please count', { thinking: { enabled: false }, signal: controller.signal }))[Symbol.asyncIterator]();
      for (let i = 0; i < 5; i++) assert.equal((await iterator.next()).done, false);
      assert.equal(model.slots.active, 1);
      const start = performance.now();
      controller.abort();
      const freedMs = await waitUntil(() => model.slots.active === 0, 100);
      console.log(`abort signal → sequence free: ${freedMs.toFixed(1)} ms`);
      // The consumer sees the end (buffered parts, then ClientGoneError), never a hang.
      await assert.rejects(async () => {
        for (;;) if ((await iterator.next()).done) break;
      }, ClientGoneError);
      assert.ok(performance.now() - start < 1000);
      await proveAllSequencesFree();
    });

    test('return() mid-stream and before the first next() free the sequence', async () => {
      const midStream = model.doStream(ask('Please count', { thinking: { enabled: false } }))[Symbol.asyncIterator]();
      await midStream.next();
      let start = performance.now();
      await midStream.return!();
      const midMs = performance.now() - start;
      assert.equal(model.slots.active, 0, 'released by the time return() resolves');
      assert.ok(midMs < 100, `return() took ${midMs} ms`);

      const untouched = model.doStream(ask('Please count', { thinking: { enabled: false } }))[Symbol.asyncIterator]();
      await waitUntil(() => model.slots.active === 1); // generation started without any next()
      start = performance.now();
      await untouched.return!();
      const earlyMs = performance.now() - start;
      assert.equal(model.slots.active, 0);
      assert.ok(earlyMs < 100, `return() took ${earlyMs} ms`);
      console.log(`return() → sequence free: mid-stream ${midMs.toFixed(1)} ms, before first next() ${earlyMs.toFixed(1)} ms`);
      assert.deepEqual(await untouched.next(), { done: true, value: undefined });
      await proveAllSequencesFree();
    });

    test('a signal aborted before the first token, and an abort of doGenerate, free the sequence', async () => {
      const gone = new AbortController();
      gone.abort();
      await assert.rejects(model.doGenerate(ask('Hello', { signal: gone.signal })), ClientGoneError);
      const early = new AbortController();
      const iterator = model.doStream(ask('Please count', { signal: early.signal }))[Symbol.asyncIterator]();
      early.abort();
      await assert.rejects(async () => {
        for (;;) if ((await iterator.next()).done) break;
      }, ClientGoneError);
      assert.equal(model.slots.active, 0);

      const controller = new AbortController();
      const pending = model.doGenerate(ask('Please count', { signal: controller.signal }));
      await waitUntil(() => model.slots.active === 1);
      await new Promise((resolve) => setTimeout(resolve, 20));
      controller.abort();
      await assert.rejects(pending, ClientGoneError);
      assert.equal(model.slots.active, 0);
      await proveAllSequencesFree();
    });

    test(`${SEQUENCES} requests run together, 1 more queues, the next gets 503`, async () => {
      const controllers = Array.from({ length: SEQUENCES + 1 }, () => new AbortController());
      const iterators = controllers
        .slice(0, SEQUENCES)
        .map((controller) => model.doStream(ask('Please count', { thinking: { enabled: false }, signal: controller.signal }))[Symbol.asyncIterator]());
      // Both streams produce parts while the other is still running: they share the context's batches.
      for (let round = 0; round < 3; round++) for (const iterator of iterators) assert.equal((await iterator.next()).done, false);
      assert.equal(model.slots.active, SEQUENCES);

      const queued = model.doGenerate(ask('Hello there', { thinking: { enabled: false }, signal: controllers[SEQUENCES]!.signal }));
      await waitUntil(() => model.slots.queued === 1);
      await rejectsWith(model.doGenerate(ask('Hello there')), 503, null, 'overloaded');
      try {
        await model.doGenerate(ask('Hello there'));
      } catch (error) {
        // Computed from the queue (src/scheduler/queue-wait.ts): at least a second.
        assert.ok((error as InferaError).retryAfter! >= 1);
      }

      await iterators[0]!.return!();
      const result = await queued; // the freed sequence serves the queued request
      assert.equal(result.text, TINY_CHAT_SCRIPT.answer);
      await iterators[1]!.return!();
      assert.equal(model.slots.active, 0);
      assert.equal(model.slots.queued, 0);
    });

    test('a queued request whose client leaves is dropped from the queue', async () => {
      const running = Array.from({ length: SEQUENCES }, () =>
        model.doStream(ask('Please count', { thinking: { enabled: false } }))[Symbol.asyncIterator](),
      );
      for (const iterator of running) await iterator.next();
      const leaving = new AbortController();
      const queued = model.doGenerate(ask('Hello', { signal: leaving.signal }));
      await waitUntil(() => model.slots.queued === 1);
      leaving.abort();
      await assert.rejects(queued, ClientGoneError);
      assert.equal(model.slots.queued, 0);
      for (const iterator of running) await iterator.return!();
      assert.equal(model.slots.active, 0);
    });
  });

  describe('unloading', () => {
    // Last on purpose: it disposes the shared model.
    test('dispose() ends running requests with a retryable 503, refuses new ones, then frees the model', async () => {
      const iterator = model.doStream(ask('Please count', { thinking: { enabled: false } }))[Symbol.asyncIterator]();
      await iterator.next();
      const pending = model.doGenerate(ask('Please count', { thinking: { enabled: false } }));
      const outcome = pending.then(
        () => 'finished',
        (error: unknown) => error,
      );
      await waitUntil(() => model.slots.active === 2);
      await loaded.dispose();
      assert.equal(model.slots.active, 0);
      await rejectsWith(outcome.then((value) => Promise.reject(value)), 503, null, 'model_unloading');
      await assert.rejects(async () => {
        for (;;) if ((await iterator.next()).done) break;
      }, (error: unknown) => error instanceof InferaError && error.status === 503);
      await rejectsWith(model.doGenerate(ask('Hello')), 503, null, 'model_unloading');
    });
  });
}

/** Every sequence can be taken again right away: SEQUENCES streams all hold one at once, none queued. */
async function proveAllSequencesFree(): Promise<void> {
  assert.equal(model.slots.active, 0);
  const iterators = Array.from({ length: SEQUENCES }, () =>
    model.doStream(ask('Please count', { thinking: { enabled: false } }))[Symbol.asyncIterator](),
  );
  for (const iterator of iterators) assert.equal((await iterator.next()).done, false);
  assert.equal(model.slots.active, SEQUENCES);
  assert.equal(model.slots.queued, 0);
  for (const iterator of iterators) await iterator.return!();
  assert.equal(model.slots.active, 0);
}
