import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LlamaChat } from 'node-llama-cpp';
import { createLlama } from '../engines/llama-cpp/runtime.ts';
import { encodeRandomChatModel } from './random-chat.ts';

const options = { hidden: 64, layers: 2, heads: 4, headsKv: 2, feedForward: 128, seed: 7, endBias: 100 };

test('random qwen3 chat model: byte-identical across encodes, loads with QwenChatWrapper, never stops early', async () => {
  const bytes = encodeRandomChatModel(options);
  assert.ok(bytes.equals(encodeRandomChatModel(options)), 'same seed, same bytes');
  assert.ok(!bytes.equals(encodeRandomChatModel({ ...options, seed: 8 })), 'seed changes the weights');

  const dir = mkdtempSync(join(tmpdir(), 'random-chat-'));
  const llama = await createLlama(false);
  const path = join(dir, 'random.gguf');
  writeFileSync(path, bytes);
  const model = await llama.loadModel({ modelPath: path });
  try {
    assert.equal(model.fileInfo.metadata.general.architecture, 'qwen3');
    const context = await model.createContext({ contextSize: 512, threads: 1 });
    const chat = new LlamaChat({ contextSequence: context.getSequence() });
    assert.equal(chat.chatWrapper.wrapperName, 'Qwen');
    const result = await chat.generateResponse([{ type: 'user', text: 'Hello there' }], { maxTokens: 40 });
    assert.equal(result.metadata.stopReason, 'maxTokens', 'the end-token bias keeps it generating');
    assert.ok(result.response.length > 0);
    await context.dispose();
  } finally {
    await model.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('random qwen3 chat model with asciiOnly and a padded vocabulary: loads at that size and writes printable ASCII only, greedy and sampled', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'random-chat-ascii-'));
  const llama = await createLlama(false);
  const path = join(dir, 'random-ascii.gguf');
  writeFileSync(path, encodeRandomChatModel({ ...options, asciiOnly: true, vocabSize: 3000 }));
  const model = await llama.loadModel({ modelPath: path });
  try {
    assert.equal(model.fileInfo.metadata.tokenizer.ggml.tokens.length, 3000);
    const context = await model.createContext({ contextSize: 512, threads: 1 });
    for (const temperature of [0, 1.5]) {
      const sequence = context.getSequence();
      const chat = new LlamaChat({ contextSequence: sequence });
      const result = await chat.generateResponse([{ type: 'user', text: 'Hello there' }, { type: 'model', response: [] }], { maxTokens: 80, temperature, seed: 3 });
      assert.equal(result.metadata.stopReason, 'maxTokens');
      assert.match(result.response, /^[\t\n\x20-\x7e]+$/, `temperature ${temperature}: ${JSON.stringify(result.response)}`);
      assert.doesNotMatch(result.response, /<\/?(think|tool_call|tool_response)>/);
      chat.dispose({ disposeSequence: true });
    }
    await context.dispose();
  } finally {
    await model.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});
