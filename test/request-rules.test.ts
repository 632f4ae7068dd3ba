// Each request rule has one owner and is refused once, as early as its knowledge allows, with a 400 in
// OpenAI's error shape naming the field. Wire rules (tool names, tool_choice, logprobs with stream) and
// rules the model's config declares (image sizes) fire before any model load: the first server's model
// files do not exist, so a rule checked after the load would answer 500 model_load_failed instead.
// Rules that need the loaded model (context window, img2img) fire before the request queues.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import sharp from 'sharp';
import { ensureTinyModels } from '../src/tiny-models/index.ts';
import { ensureTinyDiffusionModel } from '../src/tiny-models/onnx/index.ts';
import { http, startTestServer, SHARED_DATA_DIR, type TestServer } from './helpers/server.ts';

const CHAT = 'tiny/chat';
const IMAGE = 'tiny/image';
const hi = [{ role: 'user' as const, content: 'hi' }];
const tool = (name: string) => ({ type: 'function' as const, function: { name, parameters: { type: 'object', properties: {} } } });

async function expect400(server: TestServer, path: string, body: Record<string, unknown>, param: string, message?: RegExp) {
  const response = await http(server.baseURL, path, { body });
  const where = `${JSON.stringify(body).slice(0, 200)} → ${response.status} ${response.text}`;
  assert.equal(response.status, 400, where);
  assert.equal(response.json.error.param, param, where);
  assert.equal(response.json.error.type, 'invalid_request_error', where);
  if (message) assert.match(response.json.error.message, message, where);
  return response.json.error as { message: string; code: string | null };
}

describe('refused before any model load', () => {
  let server: TestServer;
  let client: OpenAI;
  before(async () => {
    server = await startTestServer({
      config: {
        models: [
          { id: CHAT, type: 'chat', engine: 'llama-cpp', path: '/nonexistent/chat.gguf' },
          { id: IMAGE, type: 'text-to-image', engine: 'onnx-diffusion', path: '/nonexistent/sd', onnx: { minSize: 64, maxSize: 512 } },
        ],
      },
    });
    client = new OpenAI({ baseURL: server.baseURL, apiKey: 'unused-on-loopback', maxRetries: 0 });
  });
  after(() => server.close());

  const state = (id: string) => server.server.services.registry.find(id)!.state;

  test('a tool name the engine cannot take (server:get_weather): 400 naming tools[0].function.name, through the SDK', async () => {
    await assert.rejects(
      client.chat.completions.create({ model: CHAT, messages: hi, tools: [tool('server:get_weather')] }),
      (error: unknown) =>
        error instanceof OpenAI.BadRequestError && error.param === 'tools[0].function.name' && /letters, digits, _, \. or -/.test(error.message),
    );
    await expect400(server, '/chat/completions', { model: CHAT, messages: hi, tools: [tool('ok'), tool('x'.repeat(65))] }, 'tools[1].function.name');
    await expect400(server, '/chat/completions', { model: CHAT, messages: hi, functions: [{ name: 'a b' }] }, 'functions[0].name');
    await expect400(server, '/chat/completions', { model: CHAT, messages: hi, tools: [tool('f'), tool('f')] }, 'tools[1].function.name', /twice/);
    assert.equal(state(CHAT), 'unloaded');
  });

  test('tool_choice against the tools, and logprobs with stream: refused by the protocol only', async () => {
    await expect400(server, '/chat/completions', { model: CHAT, messages: hi, tools: [tool('f')], tool_choice: { type: 'function', function: { name: 'g' } } }, 'tool_choice');
    await expect400(server, '/chat/completions', { model: CHAT, messages: hi, tool_choice: 'required' }, 'tool_choice');
    await expect400(server, '/chat/completions', { model: CHAT, messages: hi, logprobs: true, stream: true }, 'logprobs');
    assert.equal(state(CHAT), 'unloaded');
  });

  test('an image size outside what the model config declares: 400 naming the field the client used', async () => {
    await expect400(server, '/images/generations', { model: IMAGE, prompt: 'x', image_size: '512x520' }, 'image_size', /height 520 is outside this model's range 64–512/);
    await expect400(server, '/images/generations', { model: IMAGE, prompt: 'x', image_size: '1024x1024' }, 'image_size', /64–512/);
    await expect400(server, '/images/generations', { model: IMAGE, prompt: 'x', size: '32x32' }, 'size');
    assert.equal(state(IMAGE), 'unloaded');
  });

  test('a valid request does reach the load (so the 400s above really came first)', async () => {
    const chat = await http(server.baseURL, '/chat/completions', { body: { model: CHAT, messages: hi, tools: [tool('server.get_weather')] } });
    assert.equal(chat.status, 503);
    assert.equal(chat.json.error.code, 'model_load_failed');
    assert.ok(Number(chat.headers.get('retry-after')) >= 1, 'says when the next load is tried');
    const image = await http(server.baseURL, '/images/generations', { body: { model: IMAGE, prompt: 'x', image_size: '64x64' } });
    assert.equal(image.status, 503);
    assert.equal(state(IMAGE), 'failed');
  });
});

describe('rules that need the loaded model: refused once, before the request queues', () => {
  let server: TestServer;
  const modelDir = mkdtempSync(join(tmpdir(), 'infera-rules-'));
  before(async () => {
    const paths = await ensureTinyModels(join(SHARED_DATA_DIR, 'tiny-models'));
    const noEncoder = await ensureTinyDiffusionModel(join(modelDir, 'sd-no-encoder'), { vaeEncoder: false });
    server = await startTestServer({
      config: {
        models: [
          { id: CHAT, type: 'chat', engine: 'llama-cpp', path: paths.chat, llamaCpp: { contextSize: 512, sequences: 2, threads: 1 } },
          { id: IMAGE, type: 'text-to-image', engine: 'onnx-diffusion', path: noEncoder, onnx: { threads: 1, defaultSize: '64x64' } },
        ],
      },
    });
  });
  after(async () => {
    await server.close();
    rmSync(modelDir, { recursive: true, force: true });
  });

  test('context window: one limit (the engine’s, margin included) and one message, for any overshoot, stream or not', async () => {
    const ok = await http(server.baseURL, '/chat/completions', { body: { model: CHAT, messages: hi, max_tokens: 4, enable_thinking: false } });
    assert.equal(ok.status, 200, ok.text);
    const promptTokens: number = ok.json.usage.prompt_tokens;
    const messages: string[] = [];
    let reserved: number | undefined;
    for (const overshoot of [500, 10_000, 1_000_000])
      for (const extra of [{}, { stream: true, n: 2 }]) {
        const error = await expect400(server, '/chat/completions', { model: CHAT, messages: hi, max_tokens: overshoot, enable_thinking: false, ...extra }, 'messages');
        assert.equal(error.code, 'context_length_exceeded');
        const parts = /maximum context length is (\d+) tokens.*requested (\d+) tokens \((\d+) in the messages, (\d+) in the completion, (\d+) reserved\)/.exec(error.message);
        assert.ok(parts, error.message);
        const [context, requested, prompt, completion, margin] = parts.slice(1).map(Number) as [number, number, number, number, number];
        assert.deepEqual([context, prompt, completion, requested], [512, promptTokens, overshoot, prompt + completion + margin]);
        reserved = margin;
        messages.push(error.message.replace(/\d+/g, 'N'));
      }
    // The limit is exactly the engine's: the largest max_tokens that fits is accepted, one more is not,
    // and is refused in the same words as a far larger overshoot (no second, looser check elsewhere).
    const room = 512 - promptTokens - reserved!;
    const largest = await http(server.baseURL, '/chat/completions', { body: { model: CHAT, messages: hi, max_tokens: room, enable_thinking: false } });
    assert.equal(largest.status, 200, largest.text);
    const justOver = await expect400(server, '/chat/completions', { model: CHAT, messages: hi, max_tokens: room + 1, enable_thinking: false }, 'messages');
    messages.push(justOver.message.replace(/\d+/g, 'N'));
    assert.equal(new Set(messages).size, 1, 'the same rule answers every overshoot');
    const lease = await server.server.services.registry.acquire(CHAT, 'chat');
    lease.release();
    const slots = await lease.model.stats!();
    assert.deepEqual([slots.active, slots.queued], [0, 0], 'refused requests never took a sequence');
  });

  test('img2img on a model without a VAE encoder: 400 naming image, before the input image is read', async () => {
    const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#336699' } }).png().toBuffer();
    const error = await expect400(
      server,
      '/images/generations',
      { model: IMAGE, prompt: 'x', image: `data:image/png;base64,${png.toString('base64')}`, num_inference_steps: 1 },
      'image',
      /cannot take an input image/,
    );
    assert.equal(error.code, 'image_to_image_unsupported');
    // Checked before fetching: an unreachable URL gets the same answer, not a fetch error.
    const unreachable = await expect400(server, '/images/generations', { model: IMAGE, prompt: 'x', image: 'http://127.0.0.1:9/x.png' }, 'image');
    assert.equal(unreachable.message, error.message);
    const text = await http(server.baseURL, '/images/generations', { body: { model: IMAGE, prompt: 'x', num_inference_steps: 1 } });
    assert.equal(text.status, 200, text.text);
  });
});
