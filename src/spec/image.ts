// Image generation engine contract.

/**
 * The sizes a model generates: sides within min..max and width × height within maxPixels. Any side
 * length: a side that is not a multiple of 8 (latents are 1/8 of the image; Qwen-Image lists 1140x1472)
 * is generated at the next multiple of 8 and center-cropped.
 */
export interface ImageLimits {
  minSize: number;
  maxSize: number;
  maxPixels: number;
  defaultSize: [number, number];
}

/**
 * A model's size limits, as its config declares them. The one owner of the size rule: the engine builds
 * `ImageModel.limits` from it, and its descriptor's `imageLimits` hands the same limits to serving, which
 * checks a requested size against them before the model is loaded, so a bad size is refused without a pipeline load. A default size the limits refuse is an
 * operator mistake, reported as such rather than blamed on a request.
 */
export function imageLimitsOf(
  modelId: string,
  sizes: { minSize: number; maxSize: number; maxPixels: number; defaultSize: string },
  /** The config key the default size comes from, for the operator's error message. */
  setting = 'defaultSize',
): ImageLimits {
  const { minSize, maxSize, maxPixels } = sizes;
  const [width, height] = sizes.defaultSize.split('x').map(Number) as [number, number];
  const limits: ImageLimits = { minSize, maxSize, maxPixels, defaultSize: [width, height] };
  if (imageSizeProblem(width, height, limits))
    throw new Error(`model ${modelId}: ${setting} ${sizes.defaultSize}: ${imageSizeProblem(width, height, limits)}`);
  return limits;
}

/** Why a model cannot generate width×height, or undefined when it can. */
export function imageSizeProblem(width: number, height: number, limits: Pick<ImageLimits, 'minSize' | 'maxSize' | 'maxPixels'>): string | undefined {
  for (const [name, value] of [['width', width], ['height', height]] as const)
    if (value < limits.minSize || value > limits.maxSize) return `${name} ${value} is outside this model's range ${limits.minSize}–${limits.maxSize}`;
  if (width * height > limits.maxPixels) {
    const side = Math.floor(Math.sqrt(limits.maxPixels));
    return `${width}x${height} is ${width * height} pixels, more than this model's ${limits.maxPixels} (the largest square is ${side}x${side})`;
  }
  return undefined;
}

export interface ImageCallOptions {
  prompt: string;
  negativePrompt?: string;
  width: number;
  height: number;
  batchSize: number;
  steps: number;
  guidanceScale: number;
  seed: number;
  /** img2img: decoded input image as RGBA/RGB pixels plus its size, and the denoising strength. */
  initImage?: { data: Uint8Array; width: number; height: number; channels: number };
  strength?: number;
  signal: AbortSignal;
  /** Called after each denoising step (progress, and a place to notice aborts between steps). */
  onStep?: (step: number, total: number) => void;
  /** Encoding of the returned files; PNG when absent. */
  outputFormat?: 'png' | 'jpeg' | 'webp';
}

export interface ImageResult {
  /** PNG files, one per image in the batch. */
  images: Buffer[];
  /** MIME type of `images` (image/png unless outputFormat asked otherwise). */
  mediaType?: string;
  /** Seconds spent in inference. */
  inferenceSeconds: number;
  seed: number;
}

/** Which request fields can change this model's images (known once its graph is loaded). */
export interface ImageCapabilities {
  /** Classifier-free guidance: false for LCM-distilled UNets (timestep_cond), which run without it. */
  negativePrompt: boolean;
  /** guidance_scale acts: as CFG's scale, or as LCM's embedded guidance (timestep_cond). */
  guidanceScale: boolean;
}

export interface ImageModel {
  readonly kind: 'text-to-image';
  readonly name: string;
  /** imageLimitsOf(config): callers only pass sizes these limits allow. */
  readonly limits: ImageLimits;
  /** Whether `initImage` (img2img) is accepted; absent means false. Callers check it before passing one. */
  readonly imageToImage?: boolean;
  /** img2img strength used when a call gives none. */
  readonly defaultStrength?: number;
  /** Absent: every field acts. */
  readonly capabilities?: ImageCapabilities;
  /** Settings the model was loaded with that it cannot honour (e.g. an unimplemented scheduler). */
  readonly warnings?: string[];
  doGenerateImages(options: ImageCallOptions): Promise<ImageResult>;
}
