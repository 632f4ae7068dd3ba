// Stable Diffusion inference over an optimum ONNX export: CLIP tokenizer → text encoder → scheduled
// UNet loop with classifier-free guidance → VAE decode → PNG. Adapts to whatever the folder's
// sessions declare (int32/int64 ids, int64 [1] / float scalar / per-batch timesteps, fp16 or fp32,
// LCM's timestep_cond) instead of trusting dimension names, which differ between exports; where the
// declared shapes say too little (classic exports), the first UNet run finds the feed that works.
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { ClientGoneError } from '../../errors/index.ts';
import type { ImageCallOptions } from '../../spec/image.ts';
import { ClipTokenizer } from './clip-tokenizer.ts';
import { batchNoise, GaussianRandom } from './random.ts';
import { createScheduler, guidanceScaleEmbedding, type DiffusionScheduler, type SchedulerConfig } from './schedulers.ts';
import {
  createSession,
  floatData,
  floatTensor,
  intTensor,
  OnnxWorker,
  type ExecutionProvider,
  type OnnxSession,
  type ort,
  type SessionLogger,
  type SessionSettings,
  type TensorMetadata,
} from './sessions.ts';

export type OutputFormat = NonNullable<ImageCallOptions['outputFormat']>;

/** The engine call minus what the model wrapper owns; the pipeline may also run without a signal (benchmarks). */
export type PipelineRequest = Omit<ImageCallOptions, 'signal'> & { signal?: AbortSignal };

export interface PipelineResult {
  images: Buffer[];
  /** Wall time per stage; `total` includes the glue between sessions (see bench/images.ts). */
  seconds: { total: number; textEncoder: number; unet: number; vae: number; encode: number };
  stepsRun: number;
}

interface Component {
  session: OnnxSession;
  inputs: readonly TensorMetadata[];
  outputs: readonly TensorMetadata[];
  provider: ExecutionProvider;
}

export interface PipelineOptions extends SessionSettings {
  /** Folder with a TAESD export (vae_decoder/ and optionally vae_encoder/) used instead of the full VAE. */
  tinyVaePath?: string;
  log?: SessionLogger;
  onProgress?: (fraction: number) => void;
}

const exists = (path: string) => access(path).then(() => true, () => false);
const readJson = async <T>(path: string): Promise<T | undefined> =>
  (await exists(path)) ? (JSON.parse(await readFile(path, 'utf8')) as T) : undefined;

function input(component: Component, name: string): TensorMetadata | undefined {
  return component.inputs.find((value) => value.name === name);
}

function requireInput(component: Component, name: string, what: string): TensorMetadata {
  const found = input(component, name);
  if (!found) throw new Error(`onnx diffusion: ${what} has no input "${name}" (inputs: ${component.inputs.map((i) => i.name).join(', ')})`);
  return found;
}

/** The output named `preferred`, else the first: exports disagree on names (out_sample vs sample). */
function outputName(component: Component, preferred: string): string {
  return (component.outputs.find((value) => value.name === preferred) ?? component.outputs[0]!).name;
}

type TimestepFeed = 'scalar' | 'one' | 'rows';
interface UnetLayout {
  timestep: TimestepFeed;
  /** Run each row on its own (a UNet traced with a static batch of 1). */
  splitRows: boolean;
}
/** Float rows in the model's layout (row-major; dims[0] rows). */
export interface FloatRows {
  data: Float32Array;
  dims: number[];
}

function sliceRows(value: FloatRows, start: number, count: number): FloatRows {
  const rowSize = value.data.length / value.dims[0]!;
  return { data: value.data.slice(start * rowSize, (start + count) * rowSize), dims: [count, ...value.dims.slice(1)] };
}

export class DiffusionPipeline {
  readonly warnings: string[] = [];
  /** The UNet feed that worked, by row count: found on the first run, then reused. */
  private readonly layouts = new Map<number, UnetLayout>();

  private constructor(
    readonly dir: string,
    private readonly worker: OnnxWorker,
    readonly tokenizer: ClipTokenizer,
    readonly scheduler: DiffusionScheduler,
    readonly textEncoder: Component,
    readonly unet: Component,
    readonly vaeDecoder: Component,
    readonly vaeEncoder: Component | undefined,
    /** Latents are multiplied by this after encoding and divided by it before decoding. */
    readonly scalingFactor: number,
    readonly encoderScalingFactor: number,
    readonly latentChannels: number,
  ) {}

  get hasTimestepCond(): boolean {
    return input(this.unet, 'timestep_cond') !== undefined;
  }
  get supportsImageToImage(): boolean {
    return this.vaeEncoder !== undefined;
  }
  get schedulerKind(): string {
    return this.scheduler.kind;
  }

  static async load(dir: string, options: PipelineOptions): Promise<DiffusionPipeline> {
    for (const required of ['unet/model.onnx', 'text_encoder/model.onnx', 'vae_decoder/model.onnx', 'tokenizer/vocab.json'])
      if (!(await exists(join(dir, required))))
        throw new Error(`onnx diffusion: ${join(dir, required)} is missing; expected an optimum ONNX export folder`);
    const tokenizer = await ClipTokenizer.fromFolder(join(dir, 'tokenizer'));
    const schedulerConfig = (await readJson<SchedulerConfig>(join(dir, 'scheduler/scheduler_config.json'))) ?? {};
    const scheduler = createScheduler(schedulerConfig);

    const vaeDir = options.tinyVaePath ?? dir;
    // TAESD shares SD's latent space, so a tiny VAE folder without an encoder keeps the export's own.
    const encoderDir = (await exists(join(vaeDir, 'vae_encoder/model.onnx'))) ? vaeDir : dir;
    const encoderPath = join(encoderDir, 'vae_encoder/model.onnx');
    const paths = [
      join(dir, 'text_encoder/model.onnx'),
      join(dir, 'unet/model.onnx'),
      join(vaeDir, 'vae_decoder/model.onnx'),
      ...((await exists(encoderPath)) ? [encoderPath] : []),
    ];
    const components: Component[] = [];
    // The stages run one after another, so one worker thread hosts them all.
    const worker = new OnnxWorker();
    // After one component falls back to CPU the rest skip the CUDA attempt: one warning, not four.
    let settings: SessionSettings = { threads: options.threads, executionProviders: options.executionProviders };
    try {
      for (const [index, path] of paths.entries()) {
        const { session, provider } = await createSession(path, settings, options.log, worker);
        if (provider === 'cpu' && settings.executionProviders.includes('cuda')) settings = { ...settings, executionProviders: ['cpu'] };
        components.push({ session, provider, inputs: session.inputMetadata, outputs: session.outputMetadata });
        options.onProgress?.((index + 1) / paths.length);
      }
    } catch (error) {
      await worker.terminate();
      throw error;
    }
    const [textEncoder, unet, vaeDecoder, vaeEncoder] = components as [Component, Component, Component, Component | undefined];

    // AutoencoderKL exports carry 0.18215 (SD 1.x/2.x); TAESD works on unscaled latents (1.0).
    const vaeConfig = await readJson<{ scaling_factor?: number }>(join(vaeDir, 'vae_decoder/config.json'));
    const scalingFactor = vaeConfig?.scaling_factor ?? (options.tinyVaePath ? 1 : 0.18215);
    const encoderConfig = await readJson<{ scaling_factor?: number }>(join(encoderDir, 'vae_encoder/config.json'));
    let latentChannels = 4;
    try {
      const sampleShape = requireInput(unet, 'sample', 'unet').shape;
      if (typeof sampleShape[1] === 'number') latentChannels = sampleShape[1];
      requireInput(unet, 'timestep', 'unet');
      requireInput(unet, 'encoder_hidden_states', 'unet');
      requireInput(textEncoder, 'input_ids', 'text_encoder');
      const known = new Set(['sample', 'timestep', 'encoder_hidden_states', 'timestep_cond']);
      const extra = unet.inputs.filter((i) => !known.has(i.name)).map((i) => i.name);
      if (extra.length)
        throw new Error(
          `onnx diffusion: ${dir} has a UNet with inputs this pipeline does not feed (${extra.join(', ')}); ` +
            'SD 1.x, SD 2.x, SD-Turbo and LCM exports are supported, SDXL-style pipelines are not.',
        );
    } catch (error) {
      await worker.terminate();
      throw error;
    }

    const pipeline = new DiffusionPipeline(
      dir, worker, tokenizer, scheduler, textEncoder, unet, vaeDecoder, vaeEncoder,
      scalingFactor, encoderConfig?.scaling_factor ?? (encoderDir === vaeDir ? scalingFactor : 0.18215), latentChannels,
    );
    pipeline.warnings.push(...scheduler.warnings);
    return pipeline;
  }

  async dispose(): Promise<void> {
    await this.worker.terminate();
  }

  /** Text embeddings for the given prompts, one row each: [rows, 77, hidden]. */
  async encodeText(prompts: string[]): Promise<{ data: Float32Array; dims: number[] }> {
    const idsInput = requireInput(this.textEncoder, 'input_ids', 'text_encoder');
    const ids = prompts.flatMap((prompt) => this.tokenizer.encodePadded(prompt).ids);
    const result = await this.textEncoder.session.run({
      input_ids: intTensor(idsInput.type, ids, [prompts.length, this.tokenizer.maxLength]),
    });
    const hidden = result[outputName(this.textEncoder, 'last_hidden_state')]!;
    return { data: floatData(hidden), dims: [...hidden.dims] };
  }

  /**
   * How to feed `rows` UNet rows, most preferred first. The timestep's declared shape is a hint only:
   * classic exports declare a symbolic dim yet reshape the timestep to [1, 1] inside, so the reference
   * pipelines' feed (one value) comes first and one value per row second; a UNet whose batch is fixed
   * at 1 (or that takes neither) runs one row at a time.
   */
  private unetLayouts(rows: number): UnetLayout[] {
    const meta = requireInput(this.unet, 'timestep', 'unet');
    const declared = meta.shape[0];
    const feeds: TimestepFeed[] = meta.shape.length === 0 ? ['scalar'] : declared === 1 || rows === 1 ? ['one'] : typeof declared === 'number' ? ['rows'] : ['one', 'rows'];
    const sampleBatch = requireInput(this.unet, 'sample', 'unet').shape[0];
    const batched = rows === 1 || typeof sampleBatch !== 'number' || sampleBatch === rows;
    const layouts: UnetLayout[] = batched ? feeds.map((timestep) => ({ timestep, splitRows: false })) : [];
    if (rows > 1) layouts.push({ timestep: feeds[0] === 'scalar' ? 'scalar' : 'one', splitRows: true });
    return layouts;
  }

  private timestepTensor(t: number, feed: TimestepFeed, rows: number): ort.Tensor {
    const meta = requireInput(this.unet, 'timestep', 'unet');
    const dims = feed === 'scalar' ? [] : [feed === 'rows' ? rows : 1];
    const values = new Array<number>(feed === 'rows' ? rows : 1).fill(t);
    // Integer inputs truncate fractional (linspace-spaced) timesteps, as numpy's cast does in optimum's pipeline.
    return meta.type.startsWith('int') ? intTensor(meta.type, values.map(Math.trunc), dims) : floatTensor(meta.type, Float32Array.from(values), dims);
  }

  private async runUnetWith(layout: UnetLayout, latents: Float32Array, latentDims: number[], t: number, context: FloatRows, timestepCond?: FloatRows): Promise<Float32Array> {
    const rows = latentDims[0]!;
    if (layout.splitRows && rows > 1) {
      const rowSize = latents.length / rows;
      const out = new Float32Array(latents.length);
      for (let r = 0; r < rows; r++) {
        const one = await this.runUnetWith(
          layout,
          latents.slice(r * rowSize, (r + 1) * rowSize),
          [1, ...latentDims.slice(1)],
          t,
          sliceRows(context, r, 1),
          timestepCond && sliceRows(timestepCond, r, 1),
        );
        out.set(one, r * rowSize);
      }
      return out;
    }
    const sample = requireInput(this.unet, 'sample', 'unet');
    const contextMeta = requireInput(this.unet, 'encoder_hidden_states', 'unet');
    const feeds: Record<string, ort.Tensor> = {
      sample: floatTensor(sample.type, latents, latentDims),
      timestep: this.timestepTensor(t, layout.timestep, rows),
      encoder_hidden_states: floatTensor(contextMeta.type, context.data, context.dims),
    };
    if (timestepCond) feeds.timestep_cond = floatTensor(requireInput(this.unet, 'timestep_cond', 'unet').type, timestepCond.data, timestepCond.dims);
    const result = await this.unet.session.run(feeds);
    return floatData(result[outputName(this.unet, 'out_sample')]!);
  }

  /** One UNet evaluation of `latentDims[0]` rows; `context` and `timestepCond` carry one row per latent row. */
  async runUnet(latents: Float32Array, latentDims: number[], t: number, context: FloatRows, timestepCond?: FloatRows): Promise<Float32Array> {
    const rows = latentDims[0]!;
    const known = this.layouts.get(rows);
    if (known) return this.runUnetWith(known, latents, latentDims, t, context, timestepCond);
    const candidates = this.unetLayouts(rows);
    let first: unknown;
    for (const layout of candidates) {
      try {
        const out = await this.runUnetWith(layout, latents, latentDims, t, context, timestepCond);
        this.layouts.set(rows, layout);
        return out;
      } catch (error) {
        first ??= error;
      }
    }
    throw first;
  }

  /** Decodes one image's latents (already divided by the scaling factor) to [3, H, W] floats in [-1, 1]. */
  async decodeLatents(latents: Float32Array, dims: number[]): Promise<Float32Array> {
    const meta = this.vaeDecoder.inputs.find((i) => i.name === 'latent_sample') ?? this.vaeDecoder.inputs[0]!;
    const result = await this.vaeDecoder.session.run({ [meta.name]: floatTensor(meta.type, latents, dims) });
    return floatData(result[outputName(this.vaeDecoder, 'sample')]!);
  }

  private async encodeImage(image: NonNullable<PipelineRequest['initImage']>, width: number, height: number): Promise<Float32Array> {
    // Callers check supportsImageToImage (ImageModel.imageToImage) first; this only guards the invariant.
    if (!this.vaeEncoder) throw new Error('onnx diffusion: no vae_encoder in this export, so it cannot take an input image');
    if (image.width !== width || image.height !== height)
      throw new Error(`onnx diffusion: init image is ${image.width}x${image.height}, expected ${width}x${height}`);
    const plane = width * height;
    const pixels = new Float32Array(3 * plane);
    for (let p = 0; p < plane; p++)
      for (let c = 0; c < 3; c++) pixels[c * plane + p] = image.data[p * image.channels + Math.min(c, image.channels - 1)]! / 127.5 - 1;
    const meta = this.vaeEncoder.inputs.find((i) => i.name === 'sample') ?? this.vaeEncoder.inputs[0]!;
    const result = await this.vaeEncoder.session.run({ [meta.name]: floatTensor(meta.type, pixels, [1, 3, height, width]) });
    const output = result[this.vaeEncoder.outputs[0]!.name]!;
    const data = floatData(output);
    // latent_parameters = mean ‖ logvar (2×channels): use the mean (the distribution's mode), like
    // diffusers' retrieve_latents(sample_mode="argmax"); a 4-channel output already is the latent.
    const latentSize = this.latentChannels * (height / 8) * (width / 8);
    const latents = data.slice(0, latentSize);
    for (let i = 0; i < latents.length; i++) latents[i] = latents[i]! * this.encoderScalingFactor;
    return latents;
  }

  async generate(request: PipelineRequest): Promise<PipelineResult> {
    const started = performance.now();
    const seconds = { total: 0, textEncoder: 0, unet: 0, vae: 0, encode: 0 };
    const { batchSize } = request;
    // Latents are 1/8 of the image: a side that is not a multiple of 8 is generated at the next one
    // and the picture center-cropped to the size asked for (the init image is edge-padded to match).
    const width = Math.ceil(request.width / 8) * 8;
    const height = Math.ceil(request.height / 8) * 8;
    const checkAbort = () => {
      if (request.signal?.aborted) throw new ClientGoneError();
    };
    const latentHeight = height / 8;
    const latentWidth = width / 8;
    const perImage = this.latentChannels * latentHeight * latentWidth;
    const guidance = !this.hasTimestepCond && request.guidanceScale > 1;

    let mark = performance.now();
    const prompts = guidance ? [request.negativePrompt ?? '', request.prompt] : [request.prompt];
    const text = await this.encodeText(prompts);
    // Rows in diffusers' order (unconditional, then conditional), fed per image: the UNet always sees
    // the same rows for an image whatever the batch size, because ORT's threaded kernels split a larger
    // batch differently and the float results (hence the PNG bytes) would drift from the single image's.
    const context: FloatRows = { data: text.data, dims: text.dims };
    seconds.textEncoder += (performance.now() - mark) / 1000;
    checkAbort();

    let timestepCond: FloatRows | undefined;
    const condMeta = input(this.unet, 'timestep_cond');
    if (condMeta) {
      const dim = typeof condMeta.shape[1] === 'number' ? condMeta.shape[1] : 256;
      timestepCond = { data: guidanceScaleEmbedding(request.guidanceScale, dim), dims: [1, dim] };
    }

    const generators = Array.from({ length: batchSize }, (_, i) => new GaussianRandom(request.seed, i));
    const strength = request.initImage ? (request.strength ?? 1) : 1;
    const plan = this.scheduler.plan(request.steps, strength);
    let latents: Float32Array;
    if (request.initImage) {
      mark = performance.now();
      const encoded = await this.encodeImage(padImage(request.initImage, width, height), width, height);
      seconds.vae += (performance.now() - mark) / 1000;
      latents = new Float32Array(batchSize * perImage);
      for (let b = 0; b < batchSize; b++) latents.set(encoded, b * perImage);
      plan.addNoise(latents, batchNoise(generators, perImage));
    } else {
      latents = batchNoise(generators, perImage);
      if (plan.initNoiseSigma !== 1) for (let i = 0; i < latents.length; i++) latents[i] = latents[i]! * plan.initNoiseSigma;
    }

    const unetRows = guidance ? 2 : 1;
    const modelInput = new Float32Array(unetRows * perImage);
    const guided = new Float32Array(latents.length);
    const noise = () => batchNoise(generators, perImage);
    for (let i = 0; i < plan.timesteps.length; i++) {
      const scale = plan.inputScale(i);
      for (let b = 0; b < batchSize; b++) {
        checkAbort();
        mark = performance.now();
        scaleInto(modelInput, latents.subarray(b * perImage, (b + 1) * perImage), scale, unetRows);
        const output = await this.runUnet(modelInput, [unetRows, this.latentChannels, latentHeight, latentWidth], plan.timesteps[i]!, context, timestepCond);
        guided.set(guidance ? applyGuidance(output, perImage, request.guidanceScale) : output, b * perImage);
        seconds.unet += (performance.now() - mark) / 1000;
      }
      plan.step(i, guided, latents, noise);
      request.onStep?.(i + 1, plan.timesteps.length);
    }

    const images: Buffer[] = [];
    for (let b = 0; b < batchSize; b++) {
      checkAbort();
      mark = performance.now();
      const one = latents.slice(b * perImage, (b + 1) * perImage);
      for (let k = 0; k < one.length; k++) one[k] = one[k]! / this.scalingFactor;
      const decoded = await this.decodeLatents(one, [1, this.latentChannels, latentHeight, latentWidth]);
      seconds.vae += (performance.now() - mark) / 1000;
      mark = performance.now();
      const rgb = cropCenter(toRgb(decoded, width, height), width, height, request.width, request.height);
      images.push(await encodeImage(rgb, request.width, request.height, request.outputFormat ?? 'png'));
      seconds.encode += (performance.now() - mark) / 1000;
    }
    seconds.total = (performance.now() - started) / 1000;
    return { images, seconds, stepsRun: plan.timesteps.length };
  }
}

// The per-element loops live in small functions so V8 optimises them on their own; inside the big
// async generate() they ran several times slower (bench/images.ts measures this glue).

/** dst = src × scale, repeated `copies` times (CFG feeds the same latents twice). */
function scaleInto(dst: Float32Array, src: Float32Array, scale: number, copies: number): void {
  const n = src.length;
  for (let k = 0; k < n; k++) dst[k] = src[k]! * scale;
  for (let c = 1; c < copies; c++) dst.copyWithin(c * n, 0, n);
}

/** Classifier-free guidance: uncond + g·(cond − uncond), from [uncond rows ‖ cond rows]. */
function applyGuidance(output: Float32Array, n: number, scale: number): Float32Array {
  const guided = new Float32Array(n);
  for (let k = 0; k < n; k++) {
    const unconditional = output[k]!;
    guided[k] = unconditional + scale * (output[n + k]! - unconditional);
  }
  return guided;
}

type RawImage = NonNullable<PipelineRequest['initImage']>;

/** Grows an interleaved image to width × height around its center, repeating the edge pixels. */
export function padImage(image: RawImage, width: number, height: number): RawImage {
  if (image.width === width && image.height === height) return image;
  const left = Math.floor((width - image.width) / 2);
  const top = Math.floor((height - image.height) / 2);
  const { channels } = image;
  const data = new Uint8Array(width * height * channels);
  for (let y = 0; y < height; y++) {
    const sy = Math.min(image.height - 1, Math.max(0, y - top));
    for (let x = 0; x < width; x++) {
      const sx = Math.min(image.width - 1, Math.max(0, x - left));
      const from = (sy * image.width + sx) * channels;
      data.set(image.data.subarray(from, from + channels), (y * width + x) * channels);
    }
  }
  return { ...image, data, width, height };
}

/** The centered width × height window of interleaved RGB (the inverse of padImage's placement). */
export function cropCenter(rgb: Uint8Array, fromWidth: number, fromHeight: number, width: number, height: number): Uint8Array {
  if (fromWidth === width && fromHeight === height) return rgb;
  const left = Math.floor((fromWidth - width) / 2);
  const top = Math.floor((fromHeight - height) / 2);
  const out = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const from = ((top + y) * fromWidth + left) * 3;
    out.set(rgb.subarray(from, from + width * 3), y * width * 3);
  }
  return out;
}

/**
 * [3, H, W] floats in [-1, 1] → interleaved RGB bytes. Uint8ClampedArray clamps and rounds half to
 * even, exactly like diffusers' numpy_to_pil ((x / 2 + 0.5).clamp(0, 1) × 255, np.round).
 */
export function toRgb(chw: Float32Array, width: number, height: number): Uint8Array {
  const plane = width * height;
  const out = new Uint8ClampedArray(plane * 3);
  for (let c = 0; c < 3; c++) {
    const offset = c * plane;
    for (let p = 0, q = c; p < plane; p++, q += 3) out[q] = (chw[offset + p]! / 2 + 0.5) * 255;
  }
  return new Uint8Array(out.buffer);
}

export async function encodeImage(rgb: Uint8Array, width: number, height: number, format: OutputFormat): Promise<Buffer> {
  const image = sharp(Buffer.from(rgb.buffer, rgb.byteOffset, rgb.byteLength), { raw: { width, height, channels: 3 } });
  if (format === 'jpeg') return image.jpeg({ quality: 90 }).toBuffer();
  if (format === 'webp') return image.webp({ quality: 90 }).toBuffer();
  return image.png().toBuffer();
}
