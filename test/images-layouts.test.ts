// Image export variants through the real server: classic UNet layouts (a one-value timestep, a static
// batch of 1) that used to answer 500 on every request, and LCM's limits (no classifier-free guidance,
// so negative_prompt cannot act), as /v1/models and the x-infera-ignored header report them, and the
// sizes SiliconFlow lists under the default pixel budget.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { ensureTinyDiffusionModel } from '../src/tiny-models/onnx/index.ts';
import { http, startTestServer, type TestServer } from './helpers/server.ts';

const CLASSIC = 'tiny/sd-classic-timestep';
const CLASSIC_STATIC = 'tiny/sd-classic-static-batch';
const CLASSIC_INT64 = 'tiny/sd-classic-int64';
const LCM = 'tiny/sd-lcm';
const EULER = 'tiny/sd-euler';

describe('image export variants end to end', () => {
  let server: TestServer;
  const modelDir = mkdtempSync(join(tmpdir(), 'infera-images-layouts-'));
  before(async () => {
    const variants = {
      [CLASSIC]: { classicTimestep: 'dynamic' },
      [CLASSIC_STATIC]: { classicTimestep: 'fixed', staticBatch: true },
      // optimum ≤ 1.23's dtype: an int64 timestep declared [1], reshaped to [1, 1] inside.
      [CLASSIC_INT64]: { export: 'legacy', classicTimestep: 'fixed' },
      [LCM]: { scheduler: 'lcm' },
      [EULER]: { scheduler: 'euler' },
    } as const;
    const models = [];
    for (const [id, variant] of Object.entries(variants)) {
      const path = await ensureTinyDiffusionModel(join(modelDir, id.replace('/', '-')), variant);
      models.push({ id, type: 'text-to-image', engine: 'onnx-diffusion', path, onnx: { threads: 2, defaultSize: '64x64' } });
    }
    // diffusers' old conversion script writes no unet/config.json: only the loaded graph can tell.
    unlinkSync(join(models[0]!.path, 'unet/config.json'));
    server = await startTestServer({ config: { models } });
  });
  after(async () => {
    await server.close();
    rmSync(modelDir, { recursive: true, force: true });
  });

  const generate = (model: string, extra: Record<string, unknown> = {}) =>
    http(server.baseURL, '/images/generations', {
      body: { model, prompt: 'a photo of a cat', image_size: '64x64', batch_size: 2, num_inference_steps: 2, seed: 7, ...extra },
    });

  test('before any load, /v1/models says what the export declares (unet/config.json time_cond_proj_dim: LCM); an export without that file says nothing yet', async () => {
    const list = await http(server.baseURL, '/models?sub_type=text-to-image');
    const entries = Object.fromEntries(list.json.data.map((m: { id: string; infera: { state: string; capabilities?: unknown } }) => [m.id, m.infera]));
    for (const id of [LCM, EULER, CLASSIC]) assert.equal(entries[id].state, 'unloaded', id);
    assert.deepEqual(entries[LCM].capabilities, { negative_prompt: false, guidance_scale: true, image_to_image: true });
    assert.deepEqual(entries[EULER].capabilities, { negative_prompt: true, guidance_scale: true, image_to_image: true });
    assert.equal(entries[CLASSIC].capabilities, undefined);
    assert.deepEqual((await http(server.baseURL, `/models/${LCM}`)).json.infera.capabilities, entries[LCM].capabilities);
  });

  test('classic layouts (timestep reshaped to [1, 1]: float symbolic, float [1] with a static batch, int64 [1]) answer 200 with and without guidance', async () => {
    for (const model of [CLASSIC, CLASSIC_STATIC, CLASSIC_INT64])
      for (const guidance_scale of [7.5, 1]) {
        const response = await generate(model, { guidance_scale, negative_prompt: 'blurry' });
        assert.equal(response.status, 200, `${model} guidance ${guidance_scale}: ${response.text}`);
        assert.equal(response.json.images.length, 2);
        const file = Buffer.from(await (await fetch(response.json.images[1].url)).arrayBuffer());
        const meta = await sharp(file).metadata();
        assert.deepEqual([meta.format, meta.width, meta.height], ['png', 64, 64]);
      }
  });

  test('LCM: /v1/models says negative_prompt cannot act; a request that sends it gets x-infera-ignored', async () => {
    const lcm = await generate(LCM, { negative_prompt: 'blurry', guidance_scale: 8 });
    assert.equal(lcm.status, 200, lcm.text);
    assert.equal(lcm.headers.get('x-infera-ignored'), 'negative_prompt');
    // Without it nothing is flagged; guidance_scale acts on LCM as its embedded guidance.
    const plain = await generate(LCM, { guidance_scale: 8 });
    assert.equal(plain.headers.get('x-infera-ignored'), null);
    const euler = await generate(EULER, { negative_prompt: 'blurry', guidance_scale: 7.5 });
    assert.equal(euler.headers.get('x-infera-ignored'), null, 'CFG reads the negative prompt');
    const unguided = await generate(EULER, { negative_prompt: 'blurry', cfg: 1 });
    assert.equal(unguided.headers.get('x-infera-ignored'), 'negative_prompt', 'no CFG at guidance ≤ 1');

    const list = await http(server.baseURL, '/models?sub_type=text-to-image');
    const capabilities = Object.fromEntries(list.json.data.map((m: { id: string; infera: { capabilities?: unknown } }) => [m.id, m.infera.capabilities]));
    assert.deepEqual(capabilities[LCM], { negative_prompt: false, guidance_scale: true, image_to_image: true });
    assert.deepEqual(capabilities[EULER], { negative_prompt: true, guidance_scale: true, image_to_image: true });
    // Loaded (by the classic-layout test), the graph tells what its files did not.
    assert.deepEqual(capabilities[CLASSIC], { negative_prompt: true, guidance_scale: true, image_to_image: true });
    assert.deepEqual((await http(server.baseURL, `/models/${LCM}`)).json.infera.capabilities, capabilities[LCM]);
  });

  test('same seed: image 0 of a batch is byte-identical to the single image (LCM, Euler with CFG, a static-batch classic export)', async () => {
    const png = async (url: string) => Buffer.from(await (await fetch(url)).arrayBuffer());
    for (const [model, extra] of [
      [LCM, { guidance_scale: 8 }],
      [EULER, { guidance_scale: 7.5, negative_prompt: 'blurry' }],
      [CLASSIC_STATIC, { guidance_scale: 7.5 }],
    ] as const) {
      const single = await generate(model, { ...extra, batch_size: 1, num_inference_steps: 3, seed: 99 });
      const batch = await generate(model, { ...extra, batch_size: 3, num_inference_steps: 3, seed: 99 });
      assert.equal(single.status, 200, single.text);
      assert.equal(batch.status, 200, batch.text);
      assert.equal(batch.json.seed, 99);
      const [one, ...many] = await Promise.all([single.json.images[0].url, ...batch.json.images.map((i: { url: string }) => i.url)].map(png));
      assert.equal(many.length, 3);
      assert.ok(many[0]!.equals(one!), `${model}: image 0 of the batch equals the single image`);
      assert.ok(!many[1]!.equals(many[0]!) && !many[2]!.equals(many[1]!), `${model}: the other images differ`);
    }
  });

  test('SiliconFlow-listed sizes beyond 1024 and off the multiple-of-8 grid generate; over the pixel budget is a 400 naming image_size', async () => {
    for (const size of ['720x1440', '1140x1472']) {
      const response = await generate(EULER, { image_size: size, batch_size: 1, num_inference_steps: 1 });
      assert.equal(response.status, 200, `${size}: ${response.text}`);
      const file = Buffer.from(await (await fetch(response.json.images[0].url)).arrayBuffer());
      const meta = await sharp(file).metadata();
      assert.equal(`${meta.width}x${meta.height}`, size);
    }
    const over = await generate(EULER, { image_size: '1536x1536', batch_size: 1 });
    assert.equal(over.status, 400, over.text);
    assert.equal(over.json.error.param, 'image_size');
    assert.match(over.json.error.message, /largest square is 1328x1328/);
  });
});
