// POST /v1/images/generations: wire body (SiliconFlow + OpenAI fields) → internal request, and the
// result → one body both families read.
//
// Decisions:
// - Both field families are accepted: image_size|size, batch_size|n, guidance_scale|cfg. When both
//   names of a pair are sent with different values the request is refused (400 naming the second)
//   rather than one silently winning.
// - `seed`: integer 0–9999999999, or a string of digits (some apps send strings), or null/absent →
//   a random seed, which the response always echoes so the image can be reproduced.
// - Fields the diffusion pipeline cannot honour are not dropped silently (API-CONTRACT): `image2`,
//   `image3` (multi-image editing models only) are always refused; `prompt_enhancement: true`, a
//   `quality` other than auto/standard, and any `style` are refused under server.strictParameters
//   (the default) and ignored with a warning otherwise.
// - Size limits depend on the model (its config declares them: imageLimitsOf), so serving checks them
//   with checkImageSize before the model loads, still naming the field the client used.
// - Response: SiliconFlow's `images[{url}]`, `timings.inference` (seconds), `seed`, plus OpenAI's
//   `created` and `data[{url}]`; with response_format b64_json each data item also carries b64_json
//   (Cherry Studio 1.9 needs it; real SiliconFlow omits it).
import { z } from 'zod';
import { badRequest } from '../errors/index.ts';
import { imageSizeProblem, type ImageLimits } from '../spec/image.ts';
import { numberBetween, parseBody } from './common/validation.ts';
import { DEFAULT_REQUEST_LIMITS, type RequestLimits } from '../config/requests.ts';
import { keepAliveField } from './common/keep-alive.ts';

export const MAX_SEED = 9_999_999_999;
export const MAX_BATCH = 4;
export const DEFAULT_STEPS = 20;
export const DEFAULT_GUIDANCE = 7.5;

const sizeString = z
  .string()
  .regex(/^\s*\d{1,5}\s*[xX×*]\s*\d{1,5}\s*$/, { error: 'must be "WIDTHxHEIGHT", e.g. "1024x1024"' });

const seed = z.union([
  numberBetween(0, MAX_SEED, { int: true }),
  z.string().regex(/^\d{1,10}$/, { error: `must be an integer between 0 and ${MAX_SEED} (a number or a string of digits)` }),
  z.null(),
]);

const batch = numberBetween(1, MAX_BATCH, { int: true });
const guidance = numberBetween(0, 20);

export const imageGenerationRequestSchema = z.object({
  model: z.string().min(1),
  prompt: z.string().min(1),
  negative_prompt: z.string().nullish(),
  image_size: sizeString.nullish(),
  size: z.union([z.literal('auto'), sizeString]).nullish(),
  batch_size: batch.nullish(),
  n: batch.nullish(),
  num_inference_steps: numberBetween(1, 100, { int: true }).nullish(),
  guidance_scale: guidance.nullish(),
  cfg: guidance.nullish(),
  seed: seed.optional(),
  prompt_enhancement: z.boolean().nullish(),
  image: z.string().min(1).nullish(),
  image2: z.string().nullish(),
  image3: z.string().nullish(),
  /** img2img denoising strength (diffusers' `strength`); the model's configured default otherwise. */
  strength: numberBetween(0, 1).nullish(),
  output_format: z.enum(['png', 'jpeg', 'jpg', 'webp']).nullish(),
  response_format: z.enum(['url', 'b64_json']).nullish(),
  quality: z.string().nullish(),
  style: z.string().nullish(),
  user: z.string().nullish(),
  keep_alive: keepAliveField,
});

export type SizeParam = 'image_size' | 'size';

export interface ImageGenerationRequest {
  model: string;
  prompt: string;
  negativePrompt?: string;
  /** Absent: the model's default size. */
  size?: { width: number; height: number; param: SizeParam };
  batchSize: number;
  steps: number;
  guidanceScale: number;
  /** The field that carried guidanceScale when the request sent one (absent: the default). */
  guidanceParam?: 'guidance_scale' | 'cfg';
  /** Absent: pick a random seed (and echo it). */
  seed?: number;
  /** img2img input: a data URI or an http(s) URL. */
  image?: string;
  strength?: number;
  outputFormat: 'png' | 'jpeg' | 'webp';
  responseFormat: 'url' | 'b64_json';
  /** Fields accepted but not honoured (lenient mode only). */
  warnings: string[];
  /** keep_alive in milliseconds (Infinity: never); absent: the model's own. */
  keepAliveMs?: number;
}

function parseSize(text: string, param: SizeParam): { width: number; height: number; param: SizeParam } {
  const [width, height] = text.split(/[xX×*]/).map((part) => Number(part.trim())) as [number, number];
  return { width, height, param };
}

function pick<T>(first: T | null | undefined, second: T | null | undefined, firstName: string, secondName: string): T | undefined {
  const a = first ?? undefined;
  const b = second ?? undefined;
  if (a !== undefined && b !== undefined && a !== b)
    throw badRequest(`${secondName}: conflicts with ${firstName} (${JSON.stringify(a)} vs ${JSON.stringify(b)}); send one of them.`, secondName);
  return a ?? b;
}

export function parseImageGenerationRequest(
  body: unknown,
  options: { strict: boolean; limits?: Pick<RequestLimits, 'maxImagePromptChars'> } = { strict: true },
): ImageGenerationRequest {
  const wire = parseBody(imageGenerationRequestSchema, body);
  const maxPrompt = (options.limits ?? DEFAULT_REQUEST_LIMITS).maxImagePromptChars;
  const promptChars = wire.prompt.length + (wire.negative_prompt?.length ?? 0);
  if (promptChars > maxPrompt) {
    const param = wire.prompt.length > maxPrompt ? 'prompt' : 'negative_prompt';
    throw badRequest(
      `${param}: prompt and negative_prompt have ${promptChars} characters; this server takes at most ${maxPrompt} (the text encoder reads the first 77 tokens).`,
      param,
    );
  }
  const warnings: string[] = [];
  const unsupported = (param: string, message: string) => {
    if (options.strict) throw badRequest(`${param}: ${message}`, param, 'unsupported_parameter');
    warnings.push(`${param} ignored: ${message}`);
  };
  for (const param of ['image2', 'image3'] as const)
    if (wire[param]) throw badRequest(`${param}: this model takes at most one input image (\`image\`).`, param, 'unsupported_parameter');
  if (wire.prompt_enhancement) unsupported('prompt_enhancement', 'prompt enhancement is not available on this server.');
  if (wire.quality && !['auto', 'standard'].includes(wire.quality))
    unsupported('quality', `"${wire.quality}" cannot be honoured; use num_inference_steps and guidance_scale instead.`);
  if (wire.style) unsupported('style', 'styles are a DALL·E 3 feature; put the style into the prompt.');

  const imageSize = wire.image_size ? parseSize(wire.image_size, 'image_size') : undefined;
  const openaiSize = wire.size && wire.size !== 'auto' ? parseSize(wire.size, 'size') : undefined;
  if (imageSize && openaiSize && (imageSize.width !== openaiSize.width || imageSize.height !== openaiSize.height))
    throw badRequest(`size: conflicts with image_size (${wire.size} vs ${wire.image_size}); send one of them.`, 'size');

  const seedValue = wire.seed === undefined || wire.seed === null ? undefined : Number(wire.seed);
  if (seedValue !== undefined && seedValue > MAX_SEED)
    throw badRequest(`seed: must be an integer between 0 and ${MAX_SEED}`, 'seed');

  return {
    model: wire.model,
    prompt: wire.prompt,
    negativePrompt: wire.negative_prompt ?? undefined,
    size: imageSize ?? openaiSize,
    batchSize: pick(wire.batch_size, wire.n, 'batch_size', 'n') ?? 1,
    steps: wire.num_inference_steps ?? DEFAULT_STEPS,
    guidanceScale: pick(wire.guidance_scale, wire.cfg, 'guidance_scale', 'cfg') ?? DEFAULT_GUIDANCE,
    guidanceParam: wire.guidance_scale != null ? 'guidance_scale' : wire.cfg != null ? 'cfg' : undefined,
    seed: seedValue,
    image: wire.image ?? undefined,
    strength: wire.strength ?? undefined,
    outputFormat: wire.output_format === 'jpg' ? 'jpeg' : (wire.output_format ?? 'png'),
    responseFormat: wire.response_format ?? 'url',
    warnings,
    ...(wire.keep_alive != null ? { keepAliveMs: wire.keep_alive } : {}),
  };
}

/** The server's cap on batch × width × height × steps (config `requests.maxImagePixelSteps`), as a 400. */
export function checkImageWork(request: Pick<ImageGenerationRequest, 'batchSize' | 'steps'>, width: number, height: number, cap: number): void {
  const work = request.batchSize * width * height * request.steps;
  if (work > cap)
    throw badRequest(
      `num_inference_steps: ${request.batchSize} image(s) × ${width}×${height} pixels × ${request.steps} steps = ${work} pixel-steps is more than this server takes ` +
        `(at most ${cap} per request); lower the steps, the size or the batch.`,
      'num_inference_steps',
    );
}

/** The model's size rule (imageSizeProblem) as a 400 naming the field the client used. */
export function checkImageSize(
  size: { width: number; height: number; param: SizeParam },
  limits: Pick<ImageLimits, 'minSize' | 'maxSize' | 'maxPixels'>,
): void {
  const problem = imageSizeProblem(size.width, size.height, limits);
  if (problem) throw badRequest(`${size.param}: ${problem}.`, size.param);
}

export const imagesResponseSchema = z.object({
  images: z.array(z.object({ url: z.string() })).describe("SiliconFlow's list of the generated images."),
  timings: z.object({ inference: z.number().min(0).describe('Seconds.') }),
  seed: z.number().int().min(0),
  created: z.number().int(),
  data: z
    .array(z.union([z.object({ url: z.string() }), z.object({ url: z.string(), b64_json: z.string() })]))
    .describe("OpenAI's list: b64_json too with response_format b64_json."),
});
export type ImagesResponse = z.infer<typeof imagesResponseSchema>;

export function buildImagesResponse(input: {
  urls: string[];
  files: Buffer[];
  seed: number;
  inferenceSeconds: number;
  responseFormat: 'url' | 'b64_json';
  created?: number;
}): ImagesResponse {
  return {
    images: input.urls.map((url) => ({ url })),
    timings: { inference: Math.round(input.inferenceSeconds * 1000) / 1000 },
    seed: input.seed,
    created: input.created ?? Math.floor(Date.now() / 1000),
    data: input.urls.map((url, i) =>
      input.responseFormat === 'b64_json' ? { url, b64_json: input.files[i]!.toString('base64') } : { url },
    ),
  };
}
