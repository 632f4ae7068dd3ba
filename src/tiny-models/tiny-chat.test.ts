// Checks the scripted chat model through node-llama-cpp itself, with the chat wrapper it picks from
// the embedded Qwen3 template: what other suites rely on when they import TINY_CHAT_SCRIPT.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  LlamaChat,
  QwenChatWrapper,
  type ChatHistoryItem,
  type ChatModelFunctions,
  type LLamaChatGenerateResponseOptions,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaModel,
} from 'node-llama-cpp';
import { createLlama } from '../engines/llama-cpp/runtime.ts';
import { encodeTinyChatModel, TINY_CHAT_SCRIPT } from './tiny-chat.ts';

let dir: string;
let model: LlamaModel;
let context: LlamaContext;
let sequence: LlamaContextSequence;

let llama: Llama;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tiny-chat-'));
  const path = join(dir, 'tiny-qwen3-chat.gguf');
  writeFileSync(path, encodeTinyChatModel());
  llama = await createLlama(false);
  model = await llama.loadModel({ modelPath: path });
  context = await model.createContext({ contextSize: 2048, threads: 1 });
  sequence = context.getSequence();
});

after(async () => {
  await context?.dispose();
  await model?.dispose();
  await llama?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

const functions = {
  get_weather: {
    description: 'Get the current weather for a city; returns json',
    params: { type: 'object', properties: { city: { type: 'string' } } },
  },
} as const satisfies ChatModelFunctions;

async function generate(
  history: ChatHistoryItem[],
  options: LLamaChatGenerateResponseOptions<ChatModelFunctions> = {},
  thoughts?: 'discourage',
) {
  sequence.clearHistory();
  const chat = new LlamaChat({
    contextSequence: sequence,
    autoDisposeSequence: false,
    // Resolving 'auto' renders the Jinja template several times; one explicit wrapper keeps tests fast.
    chatWrapper: new QwenChatWrapper(thoughts ? { thoughts } : {}),
  });
  try {
    const result = await chat.generateResponse(history, { maxTokens: 60, ...options });
    const thoughtSegments = result.fullResponse.filter((item) => typeof item !== 'string' && item.type === 'segment');
    return { result, chat, thoughts: thoughtSegments.map((s) => (s as { text: string }).text) };
  } finally {
    chat.dispose();
  }
}

const user = (text: string): ChatHistoryItem => ({ type: 'user', text });

test('encoding is byte-identical across runs', () => {
  assert.ok(encodeTinyChatModel().equals(encodeTinyChatModel()));
});

test('node-llama-cpp picks QwenChatWrapper from the embedded Qwen3 template', async () => {
  sequence.clearHistory();
  const chat = new LlamaChat({ contextSequence: sequence, autoDisposeSequence: false });
  assert.ok(chat.chatWrapper instanceof QwenChatWrapper);
  chat.dispose();
});

test('default script: a thought segment, then "\\n\\n" + the answer, then a natural stop', async () => {
  const { result, thoughts } = await generate([user('Hello there')]);
  assert.deepEqual(thoughts, [TINY_CHAT_SCRIPT.reasoning]);
  assert.equal(result.response, TINY_CHAT_SCRIPT.afterThought + TINY_CHAT_SCRIPT.answer);
  assert.equal(result.metadata.stopReason, 'eogToken');
});

test('thinking discouraged (empty think block in the prompt): only the answer', async () => {
  const { result, thoughts } = await generate([user('Hello there')], {}, 'discourage');
  assert.deepEqual(thoughts, []);
  assert.equal(result.response, TINY_CHAT_SCRIPT.answer);
  assert.equal(result.metadata.stopReason, 'eogToken');
});

test('"weather" with functions (no handlers): a get_weather call with {city: "Paris"}', async () => {
  const { result, thoughts } = await generate([user('What is the weather in Paris?')], { functions });
  assert.deepEqual(thoughts, [TINY_CHAT_SCRIPT.reasoningByMode.weather]);
  assert.equal(result.metadata.stopReason, 'functionCalls');
  assert.equal(result.functionCalls?.length, 1);
  assert.equal(result.functionCalls[0]!.functionName, TINY_CHAT_SCRIPT.toolName);
  assert.deepEqual(result.functionCalls[0]!.params, TINY_CHAT_SCRIPT.toolArguments);

  const discouraged = await generate([user('weather?')], { functions }, 'discourage');
  assert.deepEqual(discouraged.thoughts, []);
  assert.equal(discouraged.result.metadata.stopReason, 'functionCalls');
  assert.deepEqual(discouraged.result.functionCalls?.[0]?.params, TINY_CHAT_SCRIPT.toolArguments);
});

test('"weather" without functions: the raw Qwen3 <tool_call> text, then a stop', async () => {
  const { result } = await generate([user('Weather in Paris?')], {}, 'discourage');
  assert.equal(result.response, TINY_CHAT_SCRIPT.toolCall);
  assert.equal(result.metadata.stopReason, 'eogToken');
});

test('a tool result in the prompt wins over "weather": the answer uses it', async () => {
  const history: ChatHistoryItem[] = [
    user('What is the weather in Paris?'),
    {
      type: 'model',
      response: [{ type: 'functionCall', name: 'get_weather', params: { city: 'Paris' }, result: { sky: 'sunny' } }],
    },
  ];
  const { result, thoughts } = await generate(history, { functions });
  assert.deepEqual(thoughts, [TINY_CHAT_SCRIPT.reasoningByMode.toolResult]);
  assert.equal(result.response, TINY_CHAT_SCRIPT.afterThought + TINY_CHAT_SCRIPT.toolAnswer);
  assert.equal(result.metadata.stopReason, 'eogToken');

  const discouraged = await generate(history, { functions }, 'discourage');
  assert.equal(discouraged.result.response, TINY_CHAT_SCRIPT.toolAnswer);
});

test('"count" never stops by itself: max tokens ends it', async () => {
  const { result } = await generate([user('Please count')], { maxTokens: 30 }, 'discourage');
  assert.equal(result.metadata.stopReason, 'maxTokens');
  const words = result.response.split(' ').filter(Boolean);
  assert.equal(words.length, 30);
  assert.deepEqual(words.slice(0, 12), [...TINY_CHAT_SCRIPT.countWords, ...TINY_CHAT_SCRIPT.countWords].slice(0, 12).map((w) => w.trim()));
});

test('"json": the JSON answer, also under a JSON-schema grammar (which skips the thought)', async () => {
  const plain = await generate([user('Answer in json')], {}, 'discourage');
  assert.equal(plain.result.response, TINY_CHAT_SCRIPT.json);
  const grammar = await llama.createGrammarForJsonSchema({
    type: 'object',
    properties: { city: { type: 'string' }, temperature: { type: 'number' } },
  } as const);
  const constrained = await generate([user('Hello')], { grammar });
  assert.equal(constrained.result.response, TINY_CHAT_SCRIPT.json);
  assert.deepEqual(grammar.parse(constrained.result.response), JSON.parse(TINY_CHAT_SCRIPT.json));
});

test('trigger words inside the system message (tool docs, instructions) do not switch scripts', async () => {
  const { result } = await generate(
    [{ type: 'system', text: 'Always count and reply in JSON.' }, user('Hello')],
    { functions },
    'discourage',
  );
  assert.equal(result.response, TINY_CHAT_SCRIPT.answer);
});

test('sampling at high temperature follows the same script', async () => {
  for (const seed of [1, 2, 3]) {
    const { result } = await generate([user('Hi')], { temperature: 2, seed, topK: 0, topP: 1 }, 'discourage');
    assert.equal(result.response, TINY_CHAT_SCRIPT.answer);
  }
});
