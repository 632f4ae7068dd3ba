import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { InferaError } from '../errors/index.ts';
import { buildImagesResponse, checkImageSize, parseImageGenerationRequest } from './images.ts';
import { onnxOptionsSchema } from '../engines/onnx/config.ts';

const base = { model: 'm', prompt: 'a cat' };
const rejects = (body: Record<string, unknown>, param: string, options?: { strict: boolean }) =>
  assert.throws(
    () => parseImageGenerationRequest(body, options),
    (e: InferaError) => e.status === 400 && e.param === param,
    `${JSON.stringify(body)} should be refused naming ${param}`,
  );

test('defaults and SiliconFlow fields', () => {
  const plain = parseImageGenerationRequest(base);
  assert.deepEqual(
    { ...plain, warnings: undefined },
    { model: 'm', prompt: 'a cat', negativePrompt: undefined, size: undefined, batchSize: 1, steps: 20, guidanceScale: 7.5, guidanceParam: undefined, seed: undefined, image: undefined, strength: undefined, outputFormat: 'png', responseFormat: 'url', warnings: undefined },
  );
  const sf = parseImageGenerationRequest({ ...base, image_size: '1024x768', batch_size: 4, num_inference_steps: 30, guidance_scale: 0, seed: 9999999999, negative_prompt: '', prompt_enhancement: false });
  assert.deepEqual(sf.size, { width: 1024, height: 768, param: 'image_size' });
  assert.equal(sf.batchSize, 4);
  assert.equal(sf.steps, 30);
  assert.equal(sf.guidanceScale, 0);
  assert.equal(sf.guidanceParam, 'guidance_scale');
  assert.equal(sf.seed, 9999999999);
  assert.equal(sf.negativePrompt, '');
});

test('OpenAI fields and aliases: size, n, cfg, digit-string seed, null seed, output/response format', () => {
  const openai = parseImageGenerationRequest({ ...base, size: '512x512', n: 2, cfg: 4, seed: '42', response_format: 'b64_json', output_format: 'jpg', quality: 'standard' });
  assert.deepEqual(openai.size, { width: 512, height: 512, param: 'size' });
  assert.equal(openai.batchSize, 2);
  assert.equal(openai.guidanceScale, 4);
  assert.equal(openai.guidanceParam, 'cfg');
  assert.equal(openai.seed, 42);
  assert.equal(openai.responseFormat, 'b64_json');
  assert.equal(openai.outputFormat, 'jpeg');
  assert.equal(parseImageGenerationRequest({ ...base, seed: null }).seed, undefined);
  assert.equal(parseImageGenerationRequest({ ...base, size: 'auto' }).size, undefined);
  // Same value under both names is fine.
  assert.equal(parseImageGenerationRequest({ ...base, n: 3, batch_size: 3 }).batchSize, 3);
});

test('bad values are refused with 400 naming the field', () => {
  rejects({ ...base, num_inference_steps: 0 }, 'num_inference_steps');
  rejects({ ...base, num_inference_steps: 101 }, 'num_inference_steps');
  rejects({ ...base, num_inference_steps: 2.5 }, 'num_inference_steps');
  rejects({ ...base, guidance_scale: 20.5 }, 'guidance_scale');
  rejects({ ...base, guidance_scale: -1 }, 'guidance_scale');
  rejects({ ...base, cfg: 21 }, 'cfg');
  rejects({ ...base, batch_size: 5 }, 'batch_size');
  rejects({ ...base, n: 0 }, 'n');
  rejects({ ...base, seed: -1 }, 'seed');
  rejects({ ...base, seed: 10000000000 }, 'seed');
  rejects({ ...base, seed: '12a' }, 'seed');
  rejects({ ...base, seed: 1.5 }, 'seed');
  rejects({ ...base, image_size: 'big' }, 'image_size');
  rejects({ ...base, size: '512' }, 'size');
  rejects({ ...base, prompt: '' }, 'prompt');
  rejects({ model: 'm' }, 'prompt');
  rejects({ ...base, response_format: 'png' }, 'response_format');
  rejects({ ...base, n: 2, batch_size: 3 }, 'n');
  rejects({ ...base, cfg: 2, guidance_scale: 3 }, 'cfg');
  rejects({ ...base, size: '512x512', image_size: '256x256' }, 'size');
  rejects({ ...base, image2: 'data:image/png;base64,AAAA' }, 'image2');
  rejects({ ...base, image3: 'https://example.com/x.png' }, 'image3');
  rejects({ ...base, strength: 1.5 }, 'strength');
});

test('fields the pipeline cannot honour: 400 when strict, warnings when lenient', () => {
  for (const [field, value] of [['prompt_enhancement', true], ['quality', 'hd'], ['style', 'vivid']] as const) {
    rejects({ ...base, [field]: value }, field);
    const lenient = parseImageGenerationRequest({ ...base, [field]: value }, { strict: false });
    assert.match(lenient.warnings[0]!, new RegExp(field));
  }
});

test('size check against the model: sides within limits and pixels within the budget, naming the field the client used', () => {
  const limits = { minSize: 64, maxSize: 1024, maxPixels: 512 * 1024 };
  checkImageSize({ width: 64, height: 1024, param: 'size' }, limits);
  checkImageSize({ width: 100, height: 70, param: 'size' }, limits);
  for (const [width, height] of [[63, 64], [56, 64], [1032, 64], [1024, 1024]])
    for (const param of ['image_size', 'size'] as const)
      assert.throws(() => checkImageSize({ width, height, param }, limits), (e: InferaError) => e.status === 400 && e.param === param);
  assert.throws(() => checkImageSize({ width: 1024, height: 1024, param: 'image_size' }, limits), /1048576 pixels.*largest square is 724x724/);
});

test('the default limits take every size SiliconFlow lists for its image models, and refuse beyond the budget', () => {
  const limits = onnxOptionsSchema.parse({});
  const listed = [
    // Kwai-Kolors/Kolors
    '1024x1024', '960x1280', '768x1024', '720x1440', '720x1280',
    // Qwen/Qwen-Image (1140 is not a multiple of 8)
    '1328x1328', '1664x928', '928x1664', '1472x1140', '1140x1472', '1584x1056', '1056x1584',
    // FLUX.1 / SD 3.5
    '512x1024', '768x512', '1024x576', '576x1024',
  ];
  for (const size of listed) {
    const [width, height] = size.split('x').map(Number) as [number, number];
    checkImageSize({ width, height, param: 'image_size' }, limits);
  }
  assert.throws(
    () => checkImageSize({ width: 1536, height: 1536, param: 'image_size' }, limits),
    (e: InferaError) => e.status === 400 && e.param === 'image_size' && /largest square is 1328x1328/.test(e.message),
  );
});

test('response carries both families; b64_json only when asked', () => {
  const files = [Buffer.from('one'), Buffer.from('two')];
  const urls = ['http://h/v1/images/files/a.png', 'http://h/v1/images/files/b.png'];
  const asUrl = buildImagesResponse({ urls, files, seed: 7, inferenceSeconds: 1.23456, responseFormat: 'url', created: 100 });
  assert.deepEqual(asUrl, {
    images: [{ url: urls[0] }, { url: urls[1] }],
    timings: { inference: 1.235 },
    seed: 7,
    created: 100,
    data: [{ url: urls[0] }, { url: urls[1] }],
  });
  const asB64 = buildImagesResponse({ urls, files, seed: 7, inferenceSeconds: 1, responseFormat: 'b64_json' });
  assert.deepEqual(asB64.data[1], { url: urls[1], b64_json: Buffer.from('two').toString('base64') });
  assert.equal(typeof asB64.created, 'number');
});
