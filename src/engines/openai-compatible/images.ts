// Image generation against an upstream in SiliconFlow's shape (image_size, batch_size,
// num_inference_steps, guidance_scale; `images: [{url}]`), which Infera and SiliconFlow speak; an
// OpenAI-shaped answer (`data: [{b64_json | url}]`) is read too. The files are fetched here (the
// upstream's links expire and may not be reachable by the client), through the upstream's pool when
// they are on its origin.
import { request as undiciRequest } from 'undici';
import type { ImageCallOptions, ImageLimits, ImageModel, ImageResult } from '../../spec/index.ts';
import { num, obj } from './dialects/types.ts';
import { quote, readText, type Upstream } from './upstream.ts';

/** Largest image file accepted from an upstream. */
const MAX_IMAGE_BYTES = 64 * 1024 * 1024;

export class RemoteImageModel implements ImageModel {
  readonly kind = 'text-to-image' as const;
  readonly name: string;
  readonly imageToImage: boolean;

  constructor(
    private readonly upstream: Upstream,
    readonly limits: ImageLimits,
  ) {
    this.name = upstream.model;
    this.imageToImage = upstream.options.imageToImage;
  }

  async doGenerateImages(options: ImageCallOptions): Promise<ImageResult> {
    const started = performance.now();
    const body: Record<string, unknown> = {
      model: this.upstream.model,
      prompt: options.prompt,
      image_size: `${options.width}x${options.height}`,
      batch_size: options.batchSize,
      num_inference_steps: options.steps,
      guidance_scale: options.guidanceScale,
      seed: options.seed,
    };
    if (options.negativePrompt) body.negative_prompt = options.negativePrompt;
    if (options.outputFormat && options.outputFormat !== 'png') body.output_format = options.outputFormat;
    if (options.initImage) {
      const { default: sharp } = await import('sharp');
      const { data, width, height, channels } = options.initImage;
      const png = await sharp(Buffer.from(data.buffer, data.byteOffset, data.byteLength), { raw: { width, height, channels: channels as 1 | 2 | 3 | 4 } }).png().toBuffer();
      body.image = `data:image/png;base64,${png.toString('base64')}`;
      if (options.strength !== undefined) body.strength = options.strength;
    }
    const answer = await this.upstream.json(this.upstream.path('images/generations'), body, options.signal);
    const list = Array.isArray(answer.images) ? answer.images : Array.isArray(answer.data) ? answer.data : undefined;
    if (!list?.length) throw this.upstream.broken(`answered without images: ${quote(JSON.stringify(answer))}`);
    let mediaType: string | undefined;
    const images = await Promise.all(
      list.map(async (item, i) => {
        const entry = obj(item) ?? {};
        if (typeof entry.b64_json === 'string') return Buffer.from(entry.b64_json, 'base64');
        if (typeof entry.url !== 'string') throw this.upstream.broken(`answered image ${i} without a url or b64_json`);
        const file = await this.download(entry.url, options.signal);
        mediaType ??= file.type;
        return file.bytes;
      }),
    );
    const timings = obj(answer.timings);
    return {
      images,
      ...(mediaType ? { mediaType } : {}),
      inferenceSeconds: num(timings?.inference) ?? (performance.now() - started) / 1000,
      seed: num(answer.seed) ?? options.seed,
    };
  }

  private async download(url: string, signal: AbortSignal): Promise<{ bytes: Buffer; type: string }> {
    if (url.startsWith('data:')) {
      const match = /^data:([^;,]+)?(;base64)?,(.*)$/s.exec(url);
      if (!match?.[2]) throw this.upstream.broken('answered with an image data: URI that is not base64');
      return { bytes: Buffer.from(match[3]!, 'base64'), type: match[1] ?? 'image/png' };
    }
    const { timeouts } = this.upstream.options;
    let response: Awaited<ReturnType<typeof undiciRequest>>;
    try {
      response = await undiciRequest(url, { signal, headersTimeout: timeouts.firstByteSeconds * 1000, bodyTimeout: timeouts.idleSeconds * 1000 });
    } catch (error) {
      throw this.upstream.broken(`answered with an image link that cannot be fetched (${(error as Error).message})`, error);
    }
    const type = String(response.headers['content-type'] ?? '');
    if (response.statusCode !== 200 || !type.startsWith('image/')) {
      const text = await readText(response.body, 4096).catch(() => '');
      throw this.upstream.broken(`answered with an image link that gives ${response.statusCode} ${type}: ${quote(text)}`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of response.body) {
      size += chunk.length;
      if (size > MAX_IMAGE_BYTES) {
        response.body.destroy();
        throw this.upstream.broken(`answered with an image larger than ${MAX_IMAGE_BYTES} bytes`);
      }
      chunks.push(chunk as Buffer);
    }
    return { bytes: Buffer.concat(chunks), type };
  }
}
