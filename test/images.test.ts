// End to end through the real server on the tiny generated Stable Diffusion pipeline: the official
// openai SDK (b64_json and url), plain HTTP with SiliconFlow's fields, links, errors, img2img, and a
// client that leaves mid-generation.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import sharp from 'sharp';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Admission, AdmissionRequest, Gate, UsageReport } from '../src/platform/gate.ts';
import { ensureTinyDiffusionModel } from '../src/tiny-models/onnx/index.ts';
import { http, startTestServer, type TestServer } from './helpers/server.ts';
import { validateAgainstOpenApi } from './helpers/openapi.ts';

const MODEL = 'infera/tiny-stable-diffusion';

/** Records what the serving path admits and settles (the ledger's view of each request). */
class RecordingGate implements Gate {
  readonly settled: { request: AdmissionRequest; usage: UsageReport }[] = [];
  async authenticate() {
    return { accountId: 'test', keyId: 'anonymous', keyName: 'test' };
  }
  async admit(request: AdmissionRequest): Promise<Admission> {
    return { headers: {}, resize: async () => {}, settle: async (usage) => void this.settled.push({ request, usage }) };
  }
  async userInfo() {
    return {};
  }
  async close() {}
}

async function pngSize(data: Buffer) {
  const meta = await sharp(data).metadata();
  return `${meta.format} ${meta.width}x${meta.height}`;
}

describe('images end to end', () => {
  let server: TestServer;
  const gate = new RecordingGate();
  const modelDir = mkdtempSync(join(tmpdir(), 'infera-images-e2e-'));
  before(async () => {
    // Configured like the default tiny model (same id and alias), so this file does not depend on
    // the other tiny models being generated.
    const path = await ensureTinyDiffusionModel(join(modelDir, 'tiny-sd'));
    const models = [
      { id: MODEL, aliases: ['Kwai-Kolors/Kolors'], type: 'text-to-image', engine: 'onnx-diffusion', path, onnx: { threads: 2, defaultSize: '64x64' } },
      { id: 'infera/tiny-qwen3-chat', type: 'chat', engine: 'llama-cpp', path: '/nonexistent/chat.gguf' },
    ];
    server = await startTestServer({ gate, config: { models } });
  });
  after(async () => {
    await server.close();
    rmSync(modelDir, { recursive: true, force: true });
  });

  test('openai SDK images.generate: b64_json and url; the response matches OpenAI’s ImagesResponse', async () => {
    const client = new OpenAI({ baseURL: server.baseURL, apiKey: 'sk-anything' });
    const b64 = await client.images.generate({ model: MODEL, prompt: 'a photo of a cat', size: '64x64' as never, response_format: 'b64_json' });
    assert.deepEqual(validateAgainstOpenApi('ImagesResponse', b64), []);
    const bytes = Buffer.from(b64.data![0]!.b64_json!, 'base64');
    assert.equal(await pngSize(bytes), 'png 64x64');

    const linked = await client.images.generate({ model: MODEL, prompt: 'a photo of a cat', size: '64x64' as never, n: 2 });
    assert.equal(linked.data!.length, 2);
    assert.equal(linked.data![0]!.b64_json, undefined);
    // Links are fetchable without the API key, from this server.
    const file = await fetch(linked.data![0]!.url!);
    assert.equal(file.status, 200);
    assert.equal(file.headers.get('content-type'), 'image/png');
    assert.match(file.headers.get('cache-control') ?? '', /max-age=\d+/);
    assert.ok(linked.data![0]!.url!.startsWith(`${server.url}/v1/images/files/`));
    assert.equal(await pngSize(Buffer.from(await file.arrayBuffer())), 'png 64x64');
  });

  test('SiliconFlow fields over plain HTTP: images, timings, seed echo, determinism, aliases and paths', async () => {
    const body = {
      model: 'Kwai-Kolors/Kolors',
      prompt: 'an island near sea, with seagulls',
      negative_prompt: '',
      image_size: '64x64',
      batch_size: 2,
      num_inference_steps: 2,
      guidance_scale: 7.5,
      seed: '4242',
    };
    const first = await http(server.baseURL, '/images/generations', { body });
    assert.equal(first.status, 200, first.text);
    assert.equal(first.json.images.length, 2);
    assert.equal(first.json.data.length, 2);
    assert.equal(first.json.seed, 4242);
    assert.equal(typeof first.json.timings.inference, 'number');
    assert.equal(typeof first.json.created, 'number');
    for (const path of ['/v1/image/generations', '/images/generations']) {
      const again = await http(server.url, path, { body });
      assert.equal(again.status, 200, `${path}: ${again.text}`);
      for (let i = 0; i < 2; i++) {
        const [a, b] = await Promise.all([first.json.images[i].url, again.json.images[i].url].map(async (url: string) => Buffer.from(await (await fetch(url)).arrayBuffer())));
        assert.ok(a.equals(b), 'same seed and settings → byte-identical PNG');
      }
      assert.notEqual(again.json.images[0].url, first.json.images[0].url, 'every generation gets its own link');
    }
    const random = await http(server.baseURL, '/images/generations', { body: { model: MODEL, prompt: 'x', image_size: '64x64', num_inference_steps: 1 } });
    assert.equal(random.status, 200);
    assert.ok(Number.isInteger(random.json.seed) && random.json.seed >= 0 && random.json.seed <= 9999999999);
    const b64 = await http(server.baseURL, '/images/generations', { body: { ...body, batch_size: 1, response_format: 'b64_json', output_format: 'jpeg' } });
    assert.equal(await pngSize(Buffer.from(b64.json.data[0].b64_json, 'base64')), 'jpeg 64x64');
    assert.ok(b64.json.data[0].url);
    const settledOk = gate.settled.filter((s) => s.request.endpoint === 'images' && s.usage.outcome === 'ok');
    assert.ok(settledOk.some((s) => s.request.images === 2 && s.usage.images === 2), 'IPM counts every image of a batch');
  });

  test('the default size serves when none is sent (the tiny model’s 64x64)', async () => {
    const response = await http(server.baseURL, '/images/generations', { body: { model: MODEL, prompt: 'a dog', num_inference_steps: 1 } });
    assert.equal(response.status, 200);
    const file = Buffer.from(await (await fetch(response.json.images[0].url)).arrayBuffer());
    assert.equal(await pngSize(file), 'png 64x64');
  });

  test('bad sizes, steps, guidance, seeds and batch sizes are 400 naming the field', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ image_size: '63x64' }, 'image_size'],
      [{ image_size: '2048x2048' }, 'image_size'],
      [{ size: '32x32' }, 'size'],
      [{ num_inference_steps: 0 }, 'num_inference_steps'],
      [{ num_inference_steps: 101 }, 'num_inference_steps'],
      [{ guidance_scale: 21 }, 'guidance_scale'],
      [{ seed: -5 }, 'seed'],
      [{ batch_size: 5 }, 'batch_size'],
      [{ image2: 'data:image/png;base64,AAAA' }, 'image2'],
      [{ image: 'data:image/png;base64,bm90IGFuIGltYWdl' }, 'image'],
    ];
    for (const [fields, param] of cases) {
      const response = await http(server.baseURL, '/images/generations', { body: { model: MODEL, prompt: 'x', ...fields } });
      assert.equal(response.status, 400, `${JSON.stringify(fields)} → ${response.text}`);
      assert.equal(response.json.error.param, param);
      assert.equal(typeof response.json.code, 'number');
    }
    const unknown = await http(server.baseURL, '/images/generations', { body: { model: 'no/such-model', prompt: 'x' } });
    assert.equal(unknown.status, 400, 'an unknown model is a 400 with SiliconFlow code 20012');
    assert.equal(unknown.json.code, 20012);
    const chatModel = await http(server.baseURL, '/images/generations', { body: { model: 'infera/tiny-qwen3-chat', prompt: 'x' } });
    assert.equal(chatModel.status, 400);
    assert.equal(chatModel.json.error.param, 'model');
  });

  test('image links: unknown names 404, expired names 410', async () => {
    assert.equal((await fetch(`${server.url}/v1/images/files/nothing.png`)).status, 404);
    assert.equal((await fetch(`${server.url}/v1/images/files/1-${'a'.repeat(32)}.png`)).status, 410);
  });

  test('img2img from a data URI; loopback URLs refused by default', async () => {
    const init = await sharp({ create: { width: 80, height: 64, channels: 3, background: { r: 0, g: 128, b: 255 } } }).png().toBuffer();
    const dataUri = `data:image/png;base64,${init.toString('base64')}`;
    const body = { model: MODEL, prompt: 'a painting', image: dataUri, num_inference_steps: 4, strength: 0.5, seed: 1 };
    const response = await http(server.baseURL, '/images/generations', { body });
    assert.equal(response.status, 200, response.text);
    const file = Buffer.from(await (await fetch(response.json.images[0].url)).arrayBuffer());
    assert.equal(await pngSize(file), 'png 80x64', 'without a size the input image’s size is used');
    const text = await http(server.baseURL, '/images/generations', { body: { ...body, image: undefined, image_size: '80x64' } });
    const textFile = Buffer.from(await (await fetch(text.json.images[0].url)).arrayBuffer());
    assert.ok(!file.equals(textFile), 'the input image changes the result');

    const loopback = await http(server.baseURL, '/images/generations', { body: { ...body, image: `${server.url}/health` } });
    assert.equal(loopback.status, 400);
    assert.equal(loopback.json.error.param, 'image');
    assert.match(loopback.json.error.message, /private/);
  });

  test('img2img from an http URL when images.allowPrivateUrls is set (here: a link this server handed out)', async () => {
    const first = await http(server.baseURL, '/images/generations', { body: { model: MODEL, prompt: 'a cat', image_size: '64x64', num_inference_steps: 1, seed: 5 } });
    const models = [{ id: MODEL, type: 'text-to-image', engine: 'onnx-diffusion', path: join(modelDir, 'tiny-sd'), onnx: { threads: 2, defaultSize: '64x64' } }];
    const open = await startTestServer({ config: { models, images: { allowPrivateUrls: true } } });
    try {
      const body = { model: MODEL, prompt: 'a dog', image: first.json.images[0].url, num_inference_steps: 2, strength: 0.5, seed: 5 };
      const response = await http(open.baseURL, '/images/generations', { body });
      assert.equal(response.status, 200, response.text);
      const file = Buffer.from(await (await fetch(response.json.images[0].url)).arrayBuffer());
      assert.equal(await pngSize(file), 'png 64x64');
      const gone = await http(open.baseURL, '/images/generations', { body: { ...body, image: `${server.url}/v1/images/files/nothing.png` } });
      assert.equal(gone.status, 400);
      assert.match(gone.json.error.message, /HTTP 404/);
    } finally {
      await open.close();
    }
  });

  test('a client that leaves mid-generation stops the loop (settled as cancelled)', async () => {
    const controller = new AbortController();
    const body = { model: MODEL, prompt: 'a long one', image_size: '1024x1024', batch_size: 4, num_inference_steps: 50, seed: 3 }; // the most work requests.maxImagePixelSteps allows
    const pending = fetch(`${server.baseURL}/images/generations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: controller.signal,
    }).catch((error) => error);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const started = performance.now();
    controller.abort();
    await pending;
    for (let i = 0; i < 100 && !gate.settled.some((s) => s.usage.outcome === 'cancelled'); i++) await new Promise((r) => setTimeout(r, 20));
    const cancelled = gate.settled.find((s) => s.usage.outcome === 'cancelled');
    assert.ok(cancelled, 'the generation was cancelled, not finished');
    assert.equal(cancelled.usage.images, 0);
    // The next request is served promptly: the slot was released at the next step.
    const next = await http(server.baseURL, '/images/generations', { body: { model: MODEL, prompt: 'x', image_size: '64x64', num_inference_steps: 1 } });
    assert.equal(next.status, 200);
    assert.ok(performance.now() - started < 5000);
  });
});
