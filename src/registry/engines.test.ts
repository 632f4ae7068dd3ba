// The engine table drives config validation and loading: an engine is one descriptor, and a table
// passed in (not a global) is all a server needs to serve a new one. Engine logs reach the server's
// logger, bound to the model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { createRequire } from 'node:module';
import { z } from 'zod';
import { engineModelSchema } from '../config/model.ts';
import { ConfigError, loadConfig } from '../config/load.ts';
import { engines } from '../engines/index.ts';
import { defineEngine } from '../engines/descriptor.ts';
import { llamaCppModelSchema } from '../engines/llama-cpp/config.ts';
import { onnxModelSchema } from '../engines/onnx/config.ts';
import { createLogger } from '../observability/logger.ts';
import type { EmbeddingModel } from '../spec/index.ts';
import { http, SHARED_DATA_DIR, startTestServer } from '../../test/helpers/server.ts';
import { ModelRegistry } from './registry.ts';

const configError = (yaml: string, table = engines) => {
  const root = mkdtempSync(join(tmpdir(), 'infera-engines-'));
  writeFileSync(join(root, 'infera.yaml'), yaml);
  try {
    loadConfig({}, {}, root, table);
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error.message;
  }
  assert.fail('the config was accepted');
};

test('config: an unknown engine is an error naming the key and listing the engines of the table', () => {
  const message = configError('models:\n  - id: a\n    type: chat\n    engine: vllm\n    path: x.gguf\n');
  assert.match(message, /models\[0\]\.engine: unknown engine "vllm"; known engines: llama-cpp, onnx, onnx-diffusion/);
});

test('config: a type the engine does not serve is an error on models[i].type naming the engines that do', () => {
  const message = configError(
    'models:\n  - id: a\n    type: chat\n    engine: llama-cpp\n    path: a.gguf\n  - id: b\n    type: chat\n    engine: onnx\n    path: b\n',
  );
  assert.match(message, /models\[1\]\.type: engine onnx serves embedding, reranker, not chat \(chat models: engine llama-cpp or openai-compatible\)/);
  assert.doesNotMatch(message, /models\[0\]/);
});

test("config: each engine validates its own keys; another engine's options block is named as such", () => {
  const message = configError(
    'models:\n  - id: a\n    type: embedding\n    engine: onnx\n    path: a\n    llamaCpp: { threads: 2 }\n    onnx: { threads: 0 }\n  - id: b\n    type: chat\n    engine: llama-cpp\n',
  );
  assert.match(message, /models\[0\]: llamaCpp: options of engine llama-cpp; this model's engine is onnx/);
  assert.match(message, /models\[0\]\.onnx\.threads/);
  assert.match(message, /models\[1\]\.path/, 'llama-cpp requires path');
});

/** A test-only engine: deterministic "embeddings" from character codes, no files, its own options. */
const echoSchema = engineModelSchema('echo', { echo: z.object({ dimensions: z.number().int().positive() }).strict() });
const echo = defineEngine({
  name: 'echo',
  kinds: ['embedding'],
  schema: echoSchema,
  async load({ config, onProgress, logger, resources }) {
    const shared = await resources.get('echo', () => ({ disposed: false, loads: 0 }), (state) => {
      state.disposed = true;
    });
    shared.loads++;
    logger.warn('echo: loaded');
    const { dimensions } = config.echo;
    const model: EmbeddingModel = {
      kind: 'embedding',
      name: config.id,
      dimensions,
      maxInputTokens: 512,
      matryoshka: false,
      tokenize: async (text) => [...text].map((c) => c.charCodeAt(0)),
      doEmbed: async ({ inputs }) => {
        // A fault the server did not anticipate, with internals in its message (the 500 test below).
        const texts = inputs.map((input) => ('text' in input ? input.text : String.fromCharCode(...input.tokens)));
        if (texts.includes('explode')) throw new TypeError('secret: /var/lib/internal.db is locked by pid 4242');
        const embeddings = inputs.map((input) => {
          const tokens = 'text' in input ? [...input.text].map((c) => c.charCodeAt(0)) : input.tokens;
          const vector = new Float32Array(dimensions);
          for (let i = 0; i < tokens.length; i++) vector[i % dimensions]! += tokens[i]!;
          return vector;
        });
        const promptTokens = inputs.reduce((sum, input) => sum + ('text' in input ? input.text.length : input.tokens.length), 0);
        return { embeddings, promptTokens };
      },
    };
    onProgress(1);
    return { model, dispose: async () => undefined };
  },
});

test('a new engine is one descriptor in a table passed to the config and the server: it validates, loads and serves', async () => {
  // A test double lives in this file, not in Infera's engine table: it runs in the server process.
  const entry = { id: 'test/echo', type: 'embedding', engine: 'echo', isolation: 'none', echo: { dimensions: 4 } };
  // The built-in table does not know it; the extended one validates its options.
  assert.match(configError(`models:\n  - ${JSON.stringify(entry)}\n`), /unknown engine "echo"/);
  const table = [...engines, echo];
  assert.match(configError('models:\n  - { id: e, type: embedding, engine: echo, echo: { dimensions: 0 } }\n', table), /models\[0\]\.echo\.dimensions/);
  assert.match(configError('models:\n  - { id: e, type: chat, engine: echo, echo: { dimensions: 2 } }\n', table), /models\[0\]\.type: engine echo serves embedding, not chat/);

  const lines: Record<string, unknown>[] = [];
  const server = await startTestServer({ config: { models: [entry] }, engines: table });
  try {
    const services = server.server.services;
    // startTestServer's logger is silent; the registry's children come from it, so check the wiring with our own below.
    const response = await http(server.baseURL, '/embeddings', { body: { model: 'test/echo', input: ['ab', 'a'] } });
    assert.equal(response.status, 200, response.text);
    assert.deepEqual(response.json.data[0].embedding, [97, 98, 0, 0]);
    assert.deepEqual(response.json.data[1].embedding, [97, 0, 0, 0]);
    assert.equal(response.json.usage.prompt_tokens, 3);
    const models = await http(server.baseURL, '/models');
    assert.ok(models.json.data.some((model: { id: string }) => model.id === 'test/echo'));
    assert.equal(services.registry.resources.size, 1, "the engine's shared state lives in this server's resources");
  } finally {
    await server.close();
  }

  // The load context: the model's child logger, and resources disposed when the registry closes.
  const logger = createLogger('info', new Writable({
      write: (chunk, _encoding, done) => {
        lines.push(JSON.parse(String(chunk)));
        done();
      },
    }));
  const config = echoSchema.parse(entry);
  const registry = new ModelRegistry([config], { engines: table, logger });
  (await registry.acquire('test/echo', 'embedding')).release();
  const state = await registry.resources.get<{ disposed: boolean; loads: number }>('echo', () => assert.fail('created twice'), () => undefined);
  assert.deepEqual(state, { disposed: false, loads: 1 });
  await registry.close();
  assert.equal(state.disposed, true);
  assert.ok(lines.some((line) => line.msg === 'echo: loaded' && line.model === 'test/echo' && line.engine === 'echo'), JSON.stringify(lines));
});

/** Lines a pino logger at `level` writes, parsed. */
function capturedLogger(level: string) {
  const lines: { level: number; msg: string; model?: string }[] = [];
  const stream = new Writable({
    write: (chunk, _encoding, done) => {
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  return { logger: createLogger(level, stream), lines };
}

/** Fails the test if anything calls console.* while `work` runs (engine output must go to the logger). */
async function withoutConsole<T>(work: () => Promise<T>): Promise<T> {
  const calls: string[] = [];
  const saved = { log: console.log, warn: console.warn, error: console.error, info: console.info };
  for (const name of Object.keys(saved) as (keyof typeof saved)[]) console[name] = (...args: unknown[]) => void calls.push(`${name}: ${args.join(' ')}`);
  try {
    return await work();
  } finally {
    Object.assign(console, saved);
    assert.deepEqual(calls, [], 'nothing is written through console.*');
  }
}

test("llama.cpp's log lines reach the server's logger, bound to the model that was loading", async () => {
  const { ensureTinyModels } = await import('../tiny-models/index.ts');
  const paths = await ensureTinyModels(join(SHARED_DATA_DIR, 'tiny-models'));
  const { logger, lines } = capturedLogger('debug');
  const config = llamaCppModelSchema.parse({ id: 'tiny-embed', type: 'embedding', engine: 'llama-cpp', path: paths.embedding, llamaCpp: { threads: 1, contexts: 1 } });
  const registry = new ModelRegistry([config], { engines, logger });
  try {
    await withoutConsole(async () => (await registry.acquire('tiny-embed', 'embedding')).release());
  } finally {
    await registry.close();
  }
  const llamaLines = lines.filter((line) => line.msg.startsWith('llama.cpp: '));
  assert.ok(llamaLines.length > 0, 'llama.cpp logged through the logger');
  assert.ok(
    llamaLines.some((line) => line.model === 'tiny-embed' && /llama_model_loader|load/.test(line.msg)),
    `load lines carry the model id: ${JSON.stringify(llamaLines.slice(0, 3))}`,
  );
});

test("ONNX engine warnings (CUDA unavailable → CPU) reach the server's logger, bound to the model", async () => {
  const { ensureOnnxBert } = await import('../tiny-models/onnx/index.ts');
  const folder = await ensureOnnxBert('tiny-embed', join(SHARED_DATA_DIR, 'tiny-models', 'tiny-bert-embed-onnx'));
  const { logger, lines } = capturedLogger('info');
  const config = onnxModelSchema.parse({ id: 'onnx-embed', type: 'embedding', engine: 'onnx', path: folder, onnx: { threads: 1, executionProviders: ['cuda', 'cpu'] } });
  const registry = new ModelRegistry([config], { engines, logger });
  try {
    await withoutConsole(async () => (await registry.acquire('onnx-embed', 'embedding')).release());
  } finally {
    await registry.close();
  }
  const fallback = lines.filter((line) => /falling back to CPU/.test(line.msg));
  for (const line of fallback) assert.equal(line.model, 'onnx-embed');
  // This package ships no CUDA provider library: without one the fallback must have been logged.
  const ortDir = dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
  const cudaShipped = existsSync(join(ortDir, 'bin', 'napi-v6', 'linux', 'x64', 'libonnxruntime_providers_cuda.so'));
  if (!cudaShipped) assert.equal(fallback.length, 1, JSON.stringify(lines));
});

test('an unanticipated fault is a 500 in the error shape that says nothing of the internals and names the request id', async () => {
  const server = await startTestServer({ config: { models: [{ id: 'test/echo', type: 'embedding', engine: 'echo', isolation: 'none', echo: { dimensions: 4 } }] }, engines: [...engines, echo] });
  try {
    const response = await http(server.baseURL, '/embeddings', { body: { model: 'test/echo', input: 'explode' } });
    assert.equal(response.status, 500);
    assert.equal(response.json.error.code, 'internal_error');
    assert.doesNotMatch(response.text, /secret|internal\.db|4242/);
    assert.match(response.json.error.message, /x-request-id/);
    assert.ok(response.headers.get('x-request-id'));
    // The server keeps serving.
    assert.equal((await http(server.baseURL, '/embeddings', { body: { model: 'test/echo', input: 'fine' } })).status, 200);
  } finally {
    await server.close();
  }
});
