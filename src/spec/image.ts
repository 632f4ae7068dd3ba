// Image generation engine contract.

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

export interface ImageModel {
  readonly kind: 'text-to-image';
  readonly name: string;
  readonly limits: { minSize: number; maxSize: number; defaultSize: [number, number] };
  /** Whether `initImage` (img2img) is accepted; absent means false. */
  readonly imageToImage?: boolean;
  /** img2img strength used when a call gives none. */
  readonly defaultStrength?: number;
  /** Settings the model was loaded with that it cannot honour (e.g. an unimplemented scheduler). */
  readonly warnings?: string[];
  doGenerateImages(options: ImageCallOptions): Promise<ImageResult>;
}
