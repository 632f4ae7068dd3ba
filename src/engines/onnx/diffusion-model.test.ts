import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { onnxDiffusionModelSchema } from './config.ts';
import { type InferaError, isAbortError } from '../../errors/index.ts';
import type { ImageCallOptions, ImageModel, LoadedModel } from '../../spec/index.ts';
import { ensureTinyDiffusionModel, type TinyDiffusionVariant } from '../../tiny-models/onnx/tiny-diffusion.ts';
import { DiffusionPipeline } from './diffusion-pipeline.ts';
import { writeOnnxModel } from '../../tiny-models/onnx/onnx-writer.ts';
import { loadOnnxDiffusionModel } from './diffusion-model.ts';

let root: string;
const loaded: LoadedModel<ImageModel>[] = [];

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'infera-sd-'));
});
after(async () => {
  await Promise.all(loaded.map((m) => m.dispose()));
  await rm(root, { recursive: true, force: true });
});

async function load(name: string, variant: TinyDiffusionVariant, onnx: Record<string, unknown> = {}, warnings: string[] = []) {
  const path = await ensureTinyDiffusionModel(join(root, name), variant);
  const config = onnxDiffusionModelSchema.parse({ id: `tiny/${name}`, type: 'text-to-image', engine: 'onnx-diffusion', path, maxQueue: 0, onnx: { threads: 1, ...onnx } });
  const model = await loadOnnxDiffusionModel(config, undefined, { log: { warn: (m) => warnings.push(m) } });
  loaded.push(model);
  return model.model;
}

const call = (overrides: Partial<ImageCallOptions> = {}): ImageCallOptions => ({
  prompt: 'a photo of a cat',
  negativePrompt: 'blurry',
  width: 64,
  height: 64,
  batchSize: 1,
  steps: 2,
  guidanceScale: 7.5,
  seed: 1234,
  signal: new AbortController().signal,
  ...overrides,
});

test('both export variants generate PNGs of the requested size', async () => {
  for (const variant of [{ export: 'legacy', scheduler: 'ddim' }, { export: 'current', scheduler: 'euler-ancestral' }] as const) {
    const model = await load(`${variant.export}-${variant.scheduler}`, variant);
    const result = await model.doGenerateImages(call({ width: 64, height: 80 }));
    assert.equal(result.images.length, 1);
    assert.equal(result.mediaType, 'image/png');
    assert.equal(result.seed, 1234);
    assert.ok(result.inferenceSeconds > 0);
    const meta = await sharp(result.images[0]).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height, meta.channels], ["png", 64, 80, 3]);
    const stats = await sharp(result.images[0]).stats();
    assert.ok(stats.channels.some((c) => c.stdev > 1), 'the image is not a flat colour');
  }
});

test('fp16 exports (float16 inputs/outputs) generate the same picture as fp32 up to half-precision rounding', async () => {
  const half = await load('fp16', { scheduler: 'euler', fp16: true });
  const full = await load('fp32', { scheduler: 'euler' });
  const options = call({ steps: 2, guidanceScale: 1 });
  const [a, b] = await Promise.all([half.doGenerateImages(options), full.doGenerateImages(options)]);
  const [pa, pb] = await Promise.all([a, b].map((r) => sharp(r.images[0]).raw().toBuffer()));
  let worst = 0;
  for (let i = 0; i < pa!.length; i++) worst = Math.max(worst, Math.abs(pa![i]! - pb![i]!));
  assert.ok(worst <= 8, `max pixel difference ${worst}`);
  assert.ok((await half.doGenerateImages(options)).images[0]!.equals(a.images[0]!), 'deterministic');
  // img2img through a float16 VAE encoder.
  const initImage = { data: new Uint8Array(64 * 64 * 3).fill(90), width: 64, height: 64, channels: 3 };
  assert.equal((await half.doGenerateImages(call({ initImage, strength: 0.5, steps: 2 }))).images.length, 1);
});

test('a tiny VAE (TAESD) folder replaces the decoder, with its own scaling factor', async () => {
  const taesd = await ensureTinyDiffusionModel(join(root, 'taesd-source'), { vaeEncoder: false });
  await writeFile(join(taesd, 'vae_decoder/config.json'), JSON.stringify({ _class_name: 'AutoencoderTiny', scaling_factor: 1.0 }));
  const plain = await load('with-vae', { scheduler: 'euler' });
  const tiny = await load('with-taesd', { scheduler: 'euler' }, { tinyVaePath: taesd });
  const [a, b] = await Promise.all([plain.doGenerateImages(call()), tiny.doGenerateImages(call())]);
  assert.ok(!a.images[0]!.equals(b.images[0]!), 'decoded by the other VAE (scaling 1.0 instead of 0.18215)');
  assert.equal(tiny.imageToImage, true, "img2img keeps the export's own encoder");
  const initImage = { data: new Uint8Array(64 * 64 * 3).fill(90), width: 64, height: 64, channels: 3 };
  assert.equal((await tiny.doGenerateImages(call({ initImage, strength: 0.5 }))).images.length, 1);
});

test('same seed → byte-identical PNG (also across separately loaded pipelines); other seed differs', async () => {
  const a = await load('det-a', { scheduler: 'euler-ancestral' });
  const b = await load('det-b', { scheduler: 'euler-ancestral' });
  const first = await a.doGenerateImages(call({ steps: 3 }));
  const again = await a.doGenerateImages(call({ steps: 3 }));
  const elsewhere = await b.doGenerateImages(call({ steps: 3 }));
  const other = await a.doGenerateImages(call({ steps: 3, seed: 1235 }));
  assert.ok(first.images[0]!.equals(again.images[0]!));
  assert.ok(first.images[0]!.equals(elsewhere.images[0]!));
  assert.ok(!first.images[0]!.equals(other.images[0]!));
  const jpeg = await a.doGenerateImages(call({ outputFormat: 'jpeg' }));
  assert.equal(jpeg.mediaType, 'image/jpeg');
  assert.equal((await sharp(jpeg.images[0]).metadata()).format, 'jpeg');
});

test('same seed → byte-identical PNG across processes (2 pinned threads)', async () => {
  const folder = await ensureTinyDiffusionModel(join(root, 'cross-process'), { scheduler: 'euler-ancestral' });
  const helper = fileURLToPath(new URL('./testing/generate-hash.ts', import.meta.url));
  const hash = (seed: number) =>
    new Promise<string>((resolve, reject) =>
      execFile(process.execPath, ['--import', 'tsx', helper, folder, String(seed), '2'], (error, stdout) => (error ? reject(error) : resolve(stdout))),
    );
  // One child process against this one: a separate process, runtime and session set.
  const a = await hash(77);
  assert.match(a, /^[0-9a-f]{64}$/);
  const pipeline = await DiffusionPipeline.load(folder, { threads: 2, executionProviders: ['cpu'] });
  const local = await pipeline.generate({ ...call({ steps: 3, seed: 77 }) });
  assert.equal(createHash('sha256').update(local.images[0]!).digest('hex'), a, 'and equal to this process');
  await pipeline.dispose();
});

test('a batch gives distinct images; image 0 equals the single image with the same seed (every scheduler, 4 threads)', async () => {
  // With 4 threads ORT splits a 6-row UNet batch differently from a 2-row one, so a batched UNet
  // made image 0 drift from the single image under ddim and euler-ancestral.
  for (const scheduler of ['euler', 'euler-ancestral', 'ddim', 'lcm'] as const) {
    const model = await load(`batch-${scheduler}`, { scheduler }, { threads: 4 });
    const single = await model.doGenerateImages(call({ steps: 4 }));
    const batch = await model.doGenerateImages(call({ steps: 4, batchSize: 3 }));
    assert.equal(batch.images.length, 3);
    assert.ok(batch.images[0]!.equals(single.images[0]!), scheduler);
    assert.ok(!batch.images[1]!.equals(batch.images[0]!), scheduler);
    assert.ok(!batch.images[2]!.equals(batch.images[1]!), scheduler);
  }
});

test('classic UNet layouts: a one-value timestep (declared [1] or symbolic) and a static batch of 1 all generate', async () => {
  const reference = await load('layout-reference', { scheduler: 'euler' });
  for (const variant of [
    { classicTimestep: 'fixed' },
    { classicTimestep: 'dynamic' },
    { staticBatch: true },
    { staticBatch: true, classicTimestep: 'dynamic' },
  ] as const) {
    const name = `layout-${variant.classicTimestep ?? 'scalar'}-${variant.staticBatch ? 'static' : 'batched'}`;
    const model = await load(name, { scheduler: 'euler', ...variant });
    for (const guidanceScale of [7.5, 1]) {
      const result = await model.doGenerateImages(call({ batchSize: 2, guidanceScale }));
      assert.equal(result.images.length, 2, name);
      const meta = await sharp(result.images[0]).metadata();
      assert.deepEqual([meta.width, meta.height], [64, 64], name);
      // Same weights, same timestep value: the picture matches the default layout's up to float noise.
      const expected = await reference.doGenerateImages(call({ batchSize: 2, guidanceScale }));
      const [a, b] = await Promise.all([result.images[1]!, expected.images[1]!].map((png) => sharp(png).raw().toBuffer()));
      let worst = 0;
      for (let i = 0; i < a!.length; i++) worst = Math.max(worst, Math.abs(a![i]! - b![i]!));
      assert.ok(worst <= 2, `${name}: max pixel difference ${worst}`);
    }
  }
});

test('classifier-free guidance doubles the UNet rows only when guidance > 1 and the UNet has no timestep_cond; images run one by one', async () => {
  for (const [variant, guidanceScale, rows] of [
    [{ scheduler: 'euler' }, 7.5, 2],
    [{ scheduler: 'euler' }, 1, 1],
    [{ scheduler: 'euler' }, 0, 1],
    [{ scheduler: 'lcm' }, 8.5, 1],
  ] as const) {
    const dir = await ensureTinyDiffusionModel(join(root, `cfg-${variant.scheduler}`), variant);
    const pipeline = await DiffusionPipeline.load(dir, { threads: 1, executionProviders: ['cpu'] });
    const seen: number[] = [];
    const run = pipeline.unet.session.run.bind(pipeline.unet.session);
    (pipeline.unet.session as { run: unknown }).run = (feeds: Record<string, { dims: readonly number[] }>) => {
      seen.push(feeds.sample!.dims[0]!);
      if (variant.scheduler === 'lcm') assert.deepEqual(feeds.timestep_cond!.dims, [1, 256]);
      return run(feeds as never);
    };
    const result = await pipeline.generate({ ...call({ batchSize: 2, steps: 4, guidanceScale }) });
    // 4 steps × 2 images.
    assert.deepEqual(seen, Array(8).fill(rows), `${variant.scheduler} guidance ${guidanceScale}`);
    assert.equal(result.stepsRun, 4);
    await pipeline.dispose();
  }
  const model = await load('cfg-effect', { scheduler: 'euler' });
  const guided = await model.doGenerateImages(call({ guidanceScale: 7.5 }));
  const unguided = await model.doGenerateImages(call({ guidanceScale: 1 }));
  const otherNegative = await model.doGenerateImages(call({ guidanceScale: 7.5, negativePrompt: 'low quality' }));
  assert.ok(!guided.images[0]!.equals(unguided.images[0]!));
  assert.ok(!guided.images[0]!.equals(otherNegative.images[0]!), 'negative_prompt changes the image under CFG');
});

test('img2img: an init image is encoded, noised to strength and denoised; no VAE encoder → imageToImage false', async () => {
  const model = await load('img2img', { scheduler: 'ddim' });
  assert.equal(model.imageToImage, true);
  const pixels = new Uint8Array(64 * 64 * 3);
  for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 7) % 256;
  const initImage = { data: pixels, width: 64, height: 64, channels: 3 };
  const weak = await model.doGenerateImages(call({ initImage, strength: 0.25, steps: 4 }));
  const again = await model.doGenerateImages(call({ initImage, strength: 0.25, steps: 4 }));
  const strong = await model.doGenerateImages(call({ initImage, strength: 1, steps: 4 }));
  const text = await model.doGenerateImages(call({ steps: 4 }));
  assert.ok(weak.images[0]!.equals(again.images[0]!));
  assert.ok(!weak.images[0]!.equals(strong.images[0]!));
  assert.ok(!weak.images[0]!.equals(text.images[0]!));

  const plain = await load('no-encoder', { scheduler: 'euler', vaeEncoder: false });
  assert.equal(plain.imageToImage, false);
  // Serving refuses `image` for such a model (400 naming it, test/request-rules.test.ts); the engine does not check again.
});

test('the model declares the limits its config gives (imageLimitsOf); a default size outside them fails the load', async () => {
  const model = await load('sizes', { scheduler: 'euler' }, { minSize: 64, maxSize: 128, defaultSize: '96x64' });
  assert.deepEqual(model.limits, { minSize: 64, maxSize: 128, maxPixels: 1328 * 1328, defaultSize: [96, 64] });
  await assert.rejects(load('bad-default', { scheduler: 'euler' }, { minSize: 64, maxSize: 128, defaultSize: '256x256' }), /onnx.defaultSize 256x256/);
});

test('abort between steps stops the loop at the next step', async () => {
  const model = await load('abort', { scheduler: 'euler' });
  const controller = new AbortController();
  const steps: number[] = [];
  await assert.rejects(
    model.doGenerateImages(
      call({
        steps: 10,
        signal: controller.signal,
        onStep: (step) => {
          steps.push(step);
          if (step === 2) controller.abort();
        },
      }),
    ),
    (e) => isAbortError(e),
  );
  assert.deepEqual(steps, [1, 2]);
  const already = new AbortController();
  already.abort();
  await assert.rejects(model.doGenerateImages(call({ signal: already.signal })), (e) => isAbortError(e));
});

test('one generation at a time per model; a full queue answers 503 with Retry-After', async () => {
  const model = await load('slots', { scheduler: 'euler' });
  const first = model.doGenerateImages(call({ steps: 4 }));
  await assert.rejects(model.doGenerateImages(call()), (e: InferaError) => e.status === 503 && e.retryAfter !== undefined);
  await first;
});

test('a UNet needing inputs the pipeline does not feed (SDXL) fails to load with a clear message', async () => {
  const folder = await ensureTinyDiffusionModel(join(root, 'sdxl-like'));
  const f = (name: string, shape: (number | string)[]) => ({ name, type: 'float32' as const, shape });
  await writeFile(
    join(folder, 'unet/model.onnx'),
    writeOnnxModel({
      name: 'unet',
      inputs: [f('sample', ['b', 4, 'h', 'w']), f('timestep', []), f('encoder_hidden_states', ['b', 77, 32]), f('text_embeds', ['b', 1280]), f('time_ids', ['b', 6])],
      outputs: [f('out_sample', ['b', 4, 'h', 'w'])],
      initializers: [],
      nodes: [{ op: 'Identity', inputs: ['sample'], outputs: ['out_sample'] }],
    }),
  );
  await assert.rejects(DiffusionPipeline.load(folder, { threads: 1, executionProviders: ['cpu'] }), /text_embeds, time_ids.*SDXL/s);
});

test('cuda requested: works (GPU build) or warns and falls back to CPU', async () => {
  const warnings: string[] = [];
  const model = await load('cuda', { scheduler: 'euler' }, { executionProviders: ['cuda', 'cpu'] }, warnings);
  const result = await model.doGenerateImages(call({ steps: 1 }));
  assert.equal(result.images.length, 1);
  // The CPU-only package cannot load CUDA here, so the warning must be there unless a CUDA build is installed.
  if (warnings.length) {
    assert.equal(warnings.length, 1, 'one warning per model, not per session');
    assert.match(warnings[0]!, /falling back to CPU/);
  }
});

test('a side that is not a multiple of 8 is generated at the next one and center-cropped (also img2img)', async () => {
  const model = await load('odd-size', { scheduler: 'euler' });
  const odd = await model.doGenerateImages(call({ width: 68, height: 60 }));
  const whole = await model.doGenerateImages(call({ width: 72, height: 64 }));
  const meta = await sharp(odd.images[0]).metadata();
  assert.deepEqual([meta.width, meta.height], [68, 60]);
  const cropped = await sharp(whole.images[0]).extract({ left: 2, top: 2, width: 68, height: 60 }).raw().toBuffer();
  assert.ok((await sharp(odd.images[0]).raw().toBuffer()).equals(cropped), 'same latents, the centered window');
  const initImage = { data: new Uint8Array(68 * 60 * 3).fill(90), width: 68, height: 60, channels: 3 };
  const edited = await model.doGenerateImages(call({ width: 68, height: 60, initImage, strength: 0.5 }));
  assert.deepEqual([(await sharp(edited.images[0]).metadata()).width, (await sharp(edited.images[0]).metadata()).height], [68, 60]);
});
