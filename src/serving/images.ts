// POST /v1/images/generations: parse → resolve the image model → size check against the limits its
// config declares → admit (keys, IPM limits, balance), all before any model load → img2img check
// against the loaded model (whether its export has a VAE encoder) → fetch/decode the input image →
// generate (the engine queues per model and stops between steps when the client leaves) → store
// files → answer with links that point back at this server and expire.
import { randomInt } from 'node:crypto';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { InferaConfig } from '../config/schema.ts';
import { badRequest } from '../errors/index.ts';
import { buildImagesResponse, checkImageSize, checkImageWork, type ImageGenerationRequest, MAX_SEED, parseImageGenerationRequest } from '../protocol/images.ts';
import type { ImageModel, ImageResult } from '../spec/index.ts';
import type { ModelEntry, ModelLease } from '../registry/registry.ts';
import type { RequestContext, ServeResult, Services } from './context.ts';
import { admitFor, failedReport, usageReport } from './usage.ts';
import { decodeInitImage, loadImageInput } from './images-input.ts';
import { ImageStore } from './images-store.ts';
import { abortSignalOf } from '../spec/chat.ts';

/** Path under which stored images are served (outside the authenticated API scope: the name is the key). */
export const IMAGE_FILES_PATH = '/v1/images/files';

/** One server's image store, opened (and swept) on first use; the route opens it at startup. */
export class LazyImageStore {
  private store: Promise<ImageStore> | undefined;

  constructor(
    private readonly config: Pick<InferaConfig, 'images' | 'storage'>,
    private readonly logger: Logger,
  ) {}

  get(): Promise<ImageStore> {
    if (!this.store) {
      const { images, storage } = this.config;
      const store = ImageStore.open({
        dir: images.dir ?? join(storage.dataDir, 'images'),
        ttlSeconds: images.ttlSeconds,
        log: { warn: (message) => this.logger.warn(message) },
      });
      this.store = store;
      store.catch(() => {
        if (this.store === store) this.store = undefined;
      });
    }
    return this.store;
  }

  /** Stops the sweeper (shutdown). Files stay on disk; the next start sweeps what expired meanwhile. */
  async close(): Promise<void> {
    const store = this.store;
    this.store = undefined;
    (await store?.catch(() => undefined))?.close();
  }
}

export function imageStoreFor(services: Services): Promise<ImageStore> {
  return services.imageStore.get();
}

export interface ImageServeOptions {
  /** Scheme://host[:port] clients reach this server at (server.publicUrl, else the listen address). */
  origin: string;
}

/** An image request that passed the checks needing neither the loaded model nor the platform. */
export interface CheckedImageRequest {
  request: ImageGenerationRequest;
  entry: ModelEntry;
  declared: ReturnType<Services['registry']['imageLimits']>;
}

/**
 * What an image request is refused for before any work (throws those 400s): the body's rules, the
 * model id, and the size and work against the limits the model declares up front. The HTTP layer runs
 * it on its own (src/http/quick.ts) and passes the result in.
 */
export function checkImageGenerationRequest(services: Services, body: unknown): CheckedImageRequest {
  const limits = services.config.requests;
  const request = parseImageGenerationRequest(body, { strict: services.config.server.strictParameters, limits });
  const entry = services.registry.resolve(request.model, 'text-to-image');
  const declared = services.registry.imageLimits(entry);
  if (request.size && declared) checkImageSize(request.size, declared);
  const declaredSize = request.size ? [request.size.width, request.size.height] : declared?.defaultSize;
  if (declaredSize) checkImageWork(request, declaredSize[0]!, declaredSize[1]!, limits.maxImagePixelSteps);
  return { request, entry, declared };
}

export async function serveImageGeneration(
  services: Services,
  context: RequestContext,
  body: unknown,
  options: ImageServeOptions,
  given?: CheckedImageRequest,
): Promise<ServeResult> {
  const limits = services.config.requests;
  const { request, entry, declared } = given ?? checkImageGenerationRequest(services, body);
  // Logged once the request passed its checks (a refused request's ignored fields are not worth a line).
  for (const warning of request.warnings) context.logger.warn(warning);
  const admission = await admitFor(services, context, entry, request.model, 'images', {
    estimatedTokens: 0,
    images: request.batchSize,
    worstCase: { promptTokens: 0, completionTokens: 0, images: request.batchSize, documents: 0 },
  });
  let lease: ModelLease<ImageModel> | undefined;
  try {
    let result: ImageResult;
    let urls: string[];
    let ignored: Record<string, string>;
    try {
      lease = await services.registry.acquire(entry.config.id, 'text-to-image', { keepAliveMs: request.keepAliveMs });
      const model = lease.model;
      // An engine that declares no limits up front (known only once loaded) is checked here, once.
      if (!declared) {
        if (request.size) checkImageSize(request.size, model.limits);
        const [width, height] = request.size ? [request.size.width, request.size.height] : model.limits.defaultSize;
        checkImageWork(request, width, height, limits.maxImagePixelSteps);
      }
      if (request.image && !model.imageToImage)
        throw badRequest(`image: model '${request.model}' cannot take an input image (its export has no VAE encoder).`, 'image', 'image_to_image_unsupported');
      let initImage: Awaited<ReturnType<typeof decodeInitImage>> | undefined;
      if (request.image) {
        const { images } = services.config;
        const bytes = await loadImageInput(request.image, {
          allowPrivateUrls: images.allowPrivateUrls,
          maxBytes: images.maxInputBytes,
          timeoutMs: images.fetchTimeoutMs,
          signal: abortSignalOf(context.signal),
          agents: services.fetchAgents,
        });
        initImage = await decodeInitImage(bytes, request.size, model.limits);
      }
      const [width, height] = request.size
        ? [request.size.width, request.size.height]
        : initImage
          ? [initImage.width, initImage.height]
          : model.limits.defaultSize;
      // Sizes known only now (an input image's, or a model that declares no limits before loading).
      checkImageWork(request, width, height, limits.maxImagePixelSteps);
      result = await model.doGenerateImages({
        prompt: request.prompt,
        negativePrompt: request.negativePrompt,
        width,
        height,
        batchSize: request.batchSize,
        steps: request.steps,
        guidanceScale: request.guidanceScale,
        seed: request.seed ?? randomInt(0, MAX_SEED + 1),
        initImage,
        strength: request.strength,
        outputFormat: request.outputFormat,
        signal: abortSignalOf(context.signal),
      });
      ignored = ignoredHeader(request, model);
      const store = await imageStoreFor(services);
      const saved = await Promise.all(result.images.map((image) => store.save(image, result.mediaType ?? 'image/png')));
      urls = saved.map((file) => `${options.origin.replace(/\/+$/, '')}${IMAGE_FILES_PATH}/${file.name}`);
    } catch (error) {
      await admission.settle(failedReport(context, error));
      throw error;
    }
    await admission.settle(usageReport(context, { images: result.images.length }, 'ok', 200));
    return {
      type: 'json',
      body: buildImagesResponse({
        urls,
        files: result.images,
        seed: result.seed,
        inferenceSeconds: result.inferenceSeconds,
        responseFormat: request.responseFormat,
      }),
      headers: { ...admission.headers, ...ignored },
    };
  } finally {
    lease?.release();
  }
}

/**
 * Fields the request sent that could not change its images, in `x-infera-ignored` (strict mode has no
 * say here: they are valid, just inert for this model): negative_prompt without classifier-free
 * guidance (an LCM UNet, or guidance_scale ≤ 1), guidance_scale on a model that takes none.
 */
function ignoredHeader(request: ImageGenerationRequest, model: ImageModel): Record<string, string> {
  const capabilities = model.capabilities ?? { negativePrompt: true, guidanceScale: true };
  const ignored: string[] = [];
  if (request.negativePrompt && (!capabilities.negativePrompt || request.guidanceScale <= 1)) ignored.push('negative_prompt');
  if (request.guidanceParam && !capabilities.guidanceScale) ignored.push(request.guidanceParam);
  return ignored.length ? { 'x-infera-ignored': ignored.join(',') } : {};
}

/** GET /v1/images/files/:name → the stored file, 404 (unknown) or 410 (expired). */
export async function serveImageFile(services: Services, name: string) {
  const store = await imageStoreFor(services);
  return store.read(name);
}

