import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import * as ort from 'onnxruntime-node';
import { ensureTinyDiffusionModel, tinyDiffusionFiles } from './tiny-diffusion.ts';

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true }))
    // The generator's own manifest (generated-files.ts) is bookkeeping, not part of the export layout.
    if (entry.isFile() && entry.name !== '.infera-generated.json') out.push(relative(dir, join(entry.parentPath, entry.name)));
  return out.sort();
}

test('the tiny pipeline has optimum folder layout and real signatures in both export variants', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'infera-tiny-sd-'));
  try {
    const expectations = {
      legacy: { ids: 'int32', timestep: { type: 'int64', shape: [1] }, encoderOut: 'latent_sample', encoderChannels: 4 },
      current: { ids: 'int64', timestep: { type: 'float32', shape: [] }, encoderOut: 'latent_parameters', encoderChannels: 8 },
    } as const;
    for (const [variant, expected] of Object.entries(expectations) as [keyof typeof expectations, (typeof expectations)[keyof typeof expectations]][]) {
      const root = await ensureTinyDiffusionModel(join(dir, variant), { export: variant, scheduler: 'lcm' });
      assert.deepEqual(await listFiles(root), [
        'model_index.json',
        'scheduler/scheduler_config.json',
        'text_encoder/config.json',
        'text_encoder/model.onnx',
        'tokenizer/merges.txt',
        'tokenizer/special_tokens_map.json',
        'tokenizer/tokenizer_config.json',
        'tokenizer/vocab.json',
        'unet/config.json',
        'unet/model.onnx',
        'vae_decoder/config.json',
        'vae_decoder/model.onnx',
        'vae_encoder/config.json',
        'vae_encoder/model.onnx',
      ]);
      const session = (name: string) => ort.InferenceSession.create(join(root, name, 'model.onnx'), { intraOpNumThreads: 1 });
      const text = await session('text_encoder');
      assert.deepEqual(text.inputMetadata.map((m) => [m.name, m.isTensor && m.type]), [['input_ids', expected.ids]]);
      assert.deepEqual(text.outputNames, ['last_hidden_state', 'pooler_output']);
      const unet = await session('unet');
      const inputs = Object.fromEntries(unet.inputMetadata.map((m) => [m.name, m.isTensor ? { type: m.type, shape: m.shape } : null]));
      assert.deepEqual(Object.keys(inputs), ['sample', 'timestep', 'encoder_hidden_states', 'timestep_cond']);
      assert.deepEqual(inputs.timestep, expected.timestep);
      assert.deepEqual(inputs.timestep_cond?.shape, ['batch_size', 256]);
      assert.deepEqual(unet.outputNames, ['out_sample']);
      const decoder = await session('vae_decoder');
      assert.deepEqual([decoder.inputNames, decoder.outputNames], [['latent_sample'], ['sample']]);
      const encoder = await session('vae_encoder');
      assert.deepEqual(encoder.outputNames, [expected.encoderOut]);
      const encoded = await encoder.run({ sample: new ort.Tensor('float32', new Float32Array(3 * 64 * 64), [1, 3, 64, 64]) });
      assert.deepEqual(encoded[expected.encoderOut]!.dims, [1, expected.encoderChannels, 8, 8]);
      const decoded = await decoder.run({ latent_sample: new ort.Tensor('float32', new Float32Array(4 * 8 * 8), [1, 4, 8, 8]) });
      assert.deepEqual(decoded.sample!.dims, [1, 3, 64, 64]);
      for (const s of [text, unet, decoder, encoder]) await s.release();
    }
    const plain = tinyDiffusionFiles({ scheduler: 'euler', vaeEncoder: false });
    assert.equal(plain.has('vae_encoder/model.onnx'), false);
    assert.equal(JSON.parse(new TextDecoder().decode(plain.get('scheduler/scheduler_config.json'))).
      _class_name, 'EulerDiscreteScheduler');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('regeneration is byte-identical and leaves unchanged files alone', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'infera-tiny-sd-'));
  try {
    const started = performance.now();
    const a = await ensureTinyDiffusionModel(join(dir, 'a'));
    const elapsed = performance.now() - started;
    const b = await ensureTinyDiffusionModel(join(dir, 'b'));
    for (const file of await listFiles(a)) assert.deepEqual(await readFile(join(a, file)), await readFile(join(b, file)), file);
    const before = (await stat(join(a, 'unet/model.onnx'))).mtimeMs;
    await new Promise((r) => setTimeout(r, 20));
    await ensureTinyDiffusionModel(a);
    assert.equal((await stat(join(a, 'unet/model.onnx'))).mtimeMs, before, 'an identical file is not rewritten');
    assert.ok(elapsed < 2000, `generation took ${elapsed} ms`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('classic timestep variants take exactly one timestep value, as the reported exports do', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'infera-tiny-sd-'));
  try {
    for (const [classic, shape] of [['fixed', [1]], ['dynamic', ['steps']]] as const) {
      const root = await ensureTinyDiffusionModel(join(dir, classic), { classicTimestep: classic, staticBatch: true });
      const unet = await ort.InferenceSession.create(join(root, 'unet/model.onnx'), { intraOpNumThreads: 1, logSeverityLevel: 4 });
      const meta = Object.fromEntries(unet.inputMetadata.map((m) => [m.name, m.isTensor ? { type: m.type, shape: m.shape } : null]));
      assert.deepEqual(meta.timestep, { type: 'float32', shape });
      assert.deepEqual(meta.sample?.shape, [1, 4, 'height', 'width']);
      const feeds = (steps: number) => ({
        sample: new ort.Tensor('float32', new Float32Array(4 * 8 * 8), [1, 4, 8, 8]),
        timestep: new ort.Tensor('float32', new Float32Array(steps).fill(500), [steps]),
        encoder_hidden_states: new ort.Tensor('float32', new Float32Array(77 * 32), [1, 77, 32]),
      });
      assert.deepEqual((await unet.run(feeds(1))).out_sample!.dims, [1, 4, 8, 8]);
      // One value per CFG row is what the engine used to feed: the fixed graph rejects it, the symbolic one fails in its Reshape.
      await assert.rejects(unet.run(feeds(2)), classic === 'fixed' ? /dimensions/ : /Reshape/);
      await unet.release();
    }
    // optimum <= 1.23 types the same one-value timestep int64.
    const legacy = await ensureTinyDiffusionModel(join(dir, 'legacy'), { export: 'legacy', classicTimestep: 'fixed' });
    const unet = await ort.InferenceSession.create(join(legacy, 'unet/model.onnx'), { intraOpNumThreads: 1, logSeverityLevel: 4 });
    const timestep = unet.inputMetadata.find((m) => m.name === 'timestep');
    assert.deepEqual(timestep?.isTensor ? { type: timestep.type, shape: timestep.shape } : null, { type: 'int64', shape: [1] });
    const feeds = (steps: number) => ({
      sample: new ort.Tensor('float32', new Float32Array(steps * 4 * 8 * 8), [steps, 4, 8, 8]),
      timestep: new ort.Tensor('int64', new BigInt64Array(steps).fill(500n), [steps]),
      encoder_hidden_states: new ort.Tensor('float32', new Float32Array(steps * 77 * 32), [steps, 77, 32]),
    });
    assert.deepEqual((await unet.run(feeds(1))).out_sample!.dims, [1, 4, 8, 8]);
    await assert.rejects(unet.run(feeds(2)), /dimensions/);
    await unet.release();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
