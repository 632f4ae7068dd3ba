// The five places where the llama.cpp chat engine reaches into node-llama-cpp beyond its public API,
// each checked against the installed node-llama-cpp with the tiny qwen3 model. A failure here means an
// upgrade changed something the engine relies on: the message names the internal, the installed
// version and the file that relies on it. (The engine pins node-llama-cpp exactly for this reason.)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  LlamaChat,
  QwenChatWrapper,
  getModuleVersion,
  type BatchItem,
  type ChatHistoryItem,
  type ChatWrapper,
  type ChatWrapperGenerateContextStateOptions,
  type ChatWrapperGeneratedContextState,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaModel,
  type PrioritizedBatchItem,
  type Token,
} from 'node-llama-cpp';
import { llamaCppModelSchema } from './config.ts';
import type { LoadedModel } from '../../spec/index.ts';
import { TINY_CHAT_SCRIPT, ensureTinyModels } from '../../tiny-models/index.ts';
import { sequenceOrderedStrategy } from './chat-batching.ts';
import { createLlama } from './runtime.ts';
import { NLC_DIST, NLC_PATHS, nlcModule, type GbnfJsonModule } from './nlc-parts.ts';
import { forcingFunctionCall, recordingProbabilities, type LlamaCppChatModel, type SampledToken, loadLlamaCppChatModel } from './chat.ts';

let dir: string;
let loaded: LoadedModel<LlamaCppChatModel>;
let version: string;
let llama: Llama;
/** The engine's own objects (private fields, reached the way only a test may). */
let engine: { model: LlamaModel; context: LlamaContext; wrappers: { standard: ChatWrapper; noThinking: ChatWrapper } };

/** "node-llama-cpp internal X changed (installed V): FILE relies on it: WHY" */
const changed = (internal: string, file: string, why: string) =>
  `node-llama-cpp internal ${internal} changed (installed ${version}): ${file} relies on it: ${why}`;

const weather = { get_weather: { description: 'Current weather for a city', params: { type: 'object', properties: { city: { type: 'string' } } } } } as const;
const hello: ChatHistoryItem[] = [{ type: 'user', text: 'Hello there' }];

before(async () => {
  version = await getModuleVersion();
  dir = mkdtempSync(join(tmpdir(), 'infera-internals-'));
  const paths = await ensureTinyModels(dir);
  const config = llamaCppModelSchema.parse({
    id: 'tiny-chat',
    type: 'chat',
    engine: 'llama-cpp',
    path: paths.chat,
    llamaCpp: { contextSize: 1024, sequences: 3, threads: 1 },
  });
  llama = await createLlama(false);
  loaded = await loadLlamaCppChatModel(config, undefined, { llama });
  engine = loaded.model as unknown as typeof engine;
});

after(async () => {
  await loaded?.dispose();
  await llama?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

/** A sequence of the engine's context, disposed after `use`. */
async function withSequence<T>(use: (sequence: LlamaContextSequence) => Promise<T>): Promise<T> {
  const sequence = engine.context.getSequence();
  try {
    return await use(sequence);
  } finally {
    await sequence.dispose();
  }
}

test('LlamaContext._queuedDecodes: the batch items, in order, with their sequence ids (chat-batching.ts)', async () => {
  const file = 'chat-batching.ts (sequenceOrderedStrategy)';
  const calls: { queue: unknown; items: readonly BatchItem[]; out: PrioritizedBatchItem[] }[] = [];
  let context: LlamaContext | undefined;
  const ordered = sequenceOrderedStrategy(() => context);
  // The engine's strategy exactly as loadLlamaCppChatModel installs it, watched from outside.
  context = await engine.model.createContext({
    contextSize: 256,
    sequences: 3,
    threads: 1,
    batching: {
      itemPrioritizationStrategy: (options) => {
        const queue = (context as unknown as { _queuedDecodes?: unknown })._queuedDecodes;
        const snapshot = Array.isArray(queue) ? queue.map((entry: { sequenceId?: unknown; tokens?: unknown }) => ({ sequenceId: entry.sequenceId, tokens: entry.tokens })) : queue;
        const out = ordered(options);
        calls.push({ queue: snapshot, items: options.items, out });
        return out;
      },
    },
  });
  try {
    const sequences = [context.getSequence(), context.getSequence(), context.getSequence()];
    const prompt = (text: string) => engine.model.tokenize(text);
    // A fresh context hands out ids 0, 1, 2 in getSequence() order. Queued in the order 2, 0, 1 within
    // one tick, so they share one batch.
    const order = [2, 0, 1];
    await Promise.all(order.map((id, i) => sequences[id]!.evaluateWithoutGeneratingNewTokens(prompt(`Hello there ${'a '.repeat(i + 1)}`))));
    const first = calls[0];
    assert.ok(first, 'the prioritization strategy was called');
    assert.ok(Array.isArray(first.queue), changed('LlamaContext._queuedDecodes', file, `it must be an array while the strategy runs; found ${typeof first.queue}`));
    const queue = first.queue as { sequenceId: unknown; tokens: unknown }[];
    assert.equal(queue.length, first.items.length, changed('LlamaContext._queuedDecodes', file, 'it must hold exactly one entry per batch item'));
    queue.forEach((entry, i) => {
      assert.equal(typeof entry.sequenceId, 'number', changed('LlamaContext._queuedDecodes[].sequenceId', file, 'each entry must carry its sequence id as a number'));
      assert.ok(entry.tokens === first.items[i]!.tokens, changed('LlamaContext._queuedDecodes[].tokens', file, 'entry i must share its tokens array with batch item i (that is how ids are matched to items)'));
    });
    assert.deepEqual(queue.map((entry) => entry.sequenceId), order, changed('LlamaContext._queuedDecodes', file, 'entries must be in the order the sequences asked to decode, with the ids of those sequences'));
    const idOf = new Map(first.items.map((item, i) => [item, queue[i]!.sequenceId]));
    assert.deepEqual(first.out.map((entry) => idOf.get(entry.item)), [0, 1, 2], `${file}: the items are not put in sequence-id order`);
  } finally {
    await context.dispose();
  }
});

test('QwenChatWrapper._flatFunctionResultString: tool results are rendered as the template does, unquoted (chat.ts)', () => {
  const file = 'chat.ts (qwenToolResults)';
  const history: ChatHistoryItem[] = [
    { type: 'user', text: 'What is the weather in Paris?' },
    { type: 'model', response: [{ type: 'functionCall', name: 'get_weather', params: { city: 'Paris' }, result: 'sunny, 21 C' }] },
  ];
  for (const [name, wrapper] of Object.entries(engine.wrappers)) {
    assert.ok(wrapper instanceof QwenChatWrapper, `the tiny qwen3 model resolves to ${wrapper.wrapperName}, not QwenChatWrapper`);
    assert.equal(
      (wrapper as unknown as Record<string, unknown>)._flatFunctionResultString,
      true,
      changed('QwenChatWrapper._flatFunctionResultString', file, `the ${name} wrapper must keep the option it was resolved with`),
    );
    const rendered = wrapper.generateContextState({ chatHistory: history, availableFunctions: weather }).contextText.toString();
    assert.match(rendered, /<tool_response>\nsunny, 21 C\n<\/tool_response>/, changed('QwenChatWrapper._flatFunctionResultString', file, `the ${name} wrapper must render a string result unquoted; got ${JSON.stringify(rendered)}`));
  }
});

test('LlamaContextSequence.evaluate: a thin loop over evaluateWithMetadata(tokens, {}, options) (chat.ts logprobs proxy)', async () => {
  const file = 'chat.ts (recordingProbabilities)';
  await withSequence(async (sequence) => {
    const calls: unknown[][] = [];
    const real = sequence.evaluateWithMetadata.bind(sequence);
    (sequence as unknown as { evaluateWithMetadata: unknown }).evaluateWithMetadata = (...args: Parameters<typeof real>) => {
      calls.push(args);
      return real(...args);
    };
    const tokens = engine.model.tokenize('Hello there');
    const options = { temperature: 0 };
    const generated: Token[] = [];
    for await (const token of sequence.evaluate(tokens, options)) {
      generated.push(token);
      if (generated.length === 3) break;
    }
    assert.equal(calls.length, 1, changed('LlamaContextSequence.evaluate', file, `it must call evaluateWithMetadata once per evaluate (called ${calls.length} times); the proxy replaces evaluate with such a call`));
    assert.ok(calls[0]![0] === tokens, changed('LlamaContextSequence.evaluate', file, 'it must pass its tokens to evaluateWithMetadata as they are'));
    assert.deepEqual(calls[0]![1], {}, changed('LlamaContextSequence.evaluate', file, 'it must ask evaluateWithMetadata for no metadata (the proxy asks for probabilities instead)'));
    assert.ok(calls[0]![2] === options, changed('LlamaContextSequence.evaluate', file, 'it must pass its options to evaluateWithMetadata as they are'));
    assert.equal(generated.length, 3);
  });
});

test('LlamaChat samples every token through contextSequence.evaluate (chat.ts logprobs proxy)', async () => {
  const file = 'chat.ts (recordingProbabilities)';
  const generate = (proxied: boolean) =>
    withSequence(async (sequence) => {
      const sampled: SampledToken[] = [];
      const members = new Set<string | symbol>();
      const recording = recordingProbabilities(sequence, sampled);
      // Which members LlamaChat reads, to tell a direct evaluateWithMetadata call from an unused proxy.
      const watched = new Proxy(recording, {
        get: (target, property) => {
          members.add(property);
          return Reflect.get(target, property);
        },
      });
      const chat = new LlamaChat({ contextSequence: proxied ? watched : sequence, chatWrapper: engine.wrappers.noThinking });
      try {
        const outputBefore = sequence.tokenMeter.usedOutputTokens;
        const response = await chat.generateResponse(hello, { temperature: 0, maxTokens: 20 });
        return { response, sampled, members, output: sequence.tokenMeter.usedOutputTokens - outputBefore };
      } finally {
        chat.dispose({ disposeSequence: false });
      }
    });
  const plain = await generate(false);
  const proxied = await generate(true);
  assert.equal(plain.response.response, TINY_CHAT_SCRIPT.answer, 'the tiny model answers its script');
  assert.ok(proxied.members.has('evaluate'), changed('LlamaChat → LlamaContextSequence.evaluate', file, 'LlamaChat no longer reads `evaluate` from its sequence, so logprobs would be empty'));
  assert.ok(!proxied.members.has('evaluateWithMetadata'), changed('LlamaChat → LlamaContextSequence.evaluateWithMetadata', file, 'LlamaChat now samples through evaluateWithMetadata directly, bypassing the proxy'));
  assert.equal(proxied.sampled.length, proxied.output, changed('LlamaChat → LlamaContextSequence.evaluate', file, `every sampled token must pass the proxy (${proxied.sampled.length} recorded, ${proxied.output} generated)`));
  assert.deepEqual(proxied.response.response, plain.response.response, `${file}: generating through the proxy changed the answer`);
});

test('LlamaChat reaches an overridden ChatWrapper.generateContextState and honours the forced call (chat.ts forcingFunctionCall)', async () => {
  const file = 'chat.ts (forcingFunctionCall)';
  const states: ChatWrapperGeneratedContextState[] = [];
  const forced = forcingFunctionCall(engine.wrappers.noThinking);
  const override = forced.generateContextState;
  forced.generateContextState = function (options: ChatWrapperGenerateContextStateOptions) {
    const state = override.call(this, options);
    states.push(state);
    return state;
  };
  const response = await withSequence(async (sequence) => {
    const chat = new LlamaChat({ contextSequence: sequence, chatWrapper: forced });
    try {
      return await chat.generateResponse(hello, { temperature: 0, maxTokens: 40, functions: weather, documentFunctionParams: true });
    } finally {
      chat.dispose({ disposeSequence: false });
    }
  });
  assert.ok(states.length > 0, changed('ChatWrapper.generateContextState', file, 'LlamaChat no longer calls it on the wrapper object it is given, so the override is never reached'));
  const state = states.at(-1)!;
  const kind = state.functionCall ? 'functionCall.initiallyEngaged' : 'noPrefixTrigger {type: "functionCall"}';
  assert.ok(state.functionCall?.initiallyEngaged === true || state.noPrefixTrigger?.type === 'functionCall', `${file}: the override returned neither form of forced call`);
  assert.equal(
    response.functionCalls?.[0]?.functionName,
    'get_weather',
    changed(`ChatWrapperGeneratedContextState.${kind}`, file, `LlamaChat must start the answer with a function call; answered ${JSON.stringify(response.response)}`),
  );
});

test('node-llama-cpp emits a token before it dispatches the next decode with setImmediate (chat-stream.ts double-setImmediate wake)', async () => {
  const file = 'chat-stream.ts (wakeNextTurn)';
  const events: string[] = [];
  await withSequence(async (sequence) => {
    // The native decode call is where the next token's computation starts.
    const native = (engine.context as unknown as { _ctx?: { decodeBatch?: (...args: unknown[]) => Promise<void> } })._ctx;
    assert.equal(typeof native?.decodeBatch, 'function', `node-llama-cpp internal LlamaContext._ctx.decodeBatch changed (installed ${version}): this test watches it to see when a decode starts`);
    const decodeBatch = native!.decodeBatch!;
    // The binding's methods are read-only on its prototype; an own property shadows it.
    Object.defineProperty(native, 'decodeBatch', {
      configurable: true,
      value(this: unknown, ...args: unknown[]) {
        events.push('decode');
        return decodeBatch.apply(this, args);
      },
    });
    const chat = new LlamaChat({ contextSequence: sequence, chatWrapper: engine.wrappers.noThinking });
    try {
      let emitted = 0;
      await chat.generateResponse(hello, {
        temperature: 0,
        maxTokens: 20,
        onResponseChunk: () => {
          const i = emitted++;
          events.push(`emit ${i}`);
          setImmediate(() => {
            events.push(`one turn ${i}`);
            setImmediate(() => events.push(`two turns ${i}`));
          });
        },
      });
    } finally {
      chat.dispose({ disposeSequence: false });
      delete (native as { decodeBatch?: unknown }).decodeBatch;
    }
  });
  await new Promise((resolve) => setImmediate(() => setImmediate(resolve)));
  const emits = events.filter((event) => event.startsWith('emit '));
  assert.ok(emits.length >= 3, `expected several emitted chunks, got ${events.join(', ')}`);
  let checked = 0;
  for (let i = 0; i < emits.length; i++) {
    const at = events.indexOf(`emit ${i}`);
    const decode = events.indexOf('decode', at);
    if (decode < 0) continue; // the last token: nothing decodes after it
    checked++;
    const one = events.indexOf(`one turn ${i}`);
    const two = events.indexOf(`two turns ${i}`);
    assert.ok(one < decode, changed('LlamaContext._scheduleDecode (setImmediate dispatch)', file, `an immediate queued when chunk ${i} is emitted must run before the next decode, or one turn would do; events: ${events.join(', ')}`));
    assert.ok(decode < two, changed('LlamaContext._scheduleDecode (setImmediate dispatch)', file, `the next decode must have started two turns after chunk ${i} was emitted; events: ${events.join(', ')}`));
  }
  assert.ok(checked >= 2, `expected chunks followed by a decode, got ${events.join(', ')}`);
});

test('the modules nlc-parts.ts imports by file path exist and are the package root’s own instances', async () => {
  const root = (await import('node-llama-cpp')) as unknown as Record<string, unknown>;
  const file = 'src/engines/llama-cpp/nlc-parts.ts (the FFI chat engine imports them without the package root)';
  const expect: Record<Exclude<keyof typeof NLC_PATHS, 'jsonGrammar'>, string[]> = {
    llamaText: ['LlamaText', 'SpecialTokensText', 'isLlamaText'],
    qwen: ['QwenChatWrapper'],
    resolveChatWrapper: ['resolveChatWrapper', 'chatWrappers'],
    gbnfJson: [],
    readGguf: ['readGgufFileInfo'],
  };
  for (const [key, names] of Object.entries(expect)) {
    const path = NLC_PATHS[key as keyof typeof expect];
    const module = await nlcModule<Record<string, unknown>>(path).catch((error: Error) => assert.fail(changed(`module ${path}`, file, error.message)));
    for (const name of names) assert.equal(module[name], root[name], changed(`module ${path}`, file, `its ${name} is not the one node-llama-cpp exports`));
  }
  const { getGbnfGrammarForGbnfJsonSchema } = await nlcModule<GbnfJsonModule>(NLC_PATHS.gbnfJson);
  assert.equal(
    getGbnfGrammarForGbnfJsonSchema({ type: 'string' }),
    (await llama.createGrammarForJsonSchema({ type: 'string' })).grammar,
    changed('getGbnfGrammarForGbnfJsonSchema', file, 'it must give the grammar createGrammarForJsonSchema does'),
  );
  assert.equal(
    readFileSync(new URL(NLC_PATHS.jsonGrammar, NLC_DIST), 'utf8'),
    (await llama.getGrammarFor('json')).grammar,
    changed('llama/grammars/json.gbnf', file, "it must be the grammar getGrammarFor('json') reads"),
  );
  const { LlamaLogLevel } = await nlcModule<Record<string, unknown>>('bindings/types.js');
  assert.equal(LlamaLogLevel, root.LlamaLogLevel, changed('module bindings/types.js', 'src/engines/llama-cpp/runtime.ts', 'its LlamaLogLevel is not the exported one'));
});
