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
}

export interface ImageResult {
  /** PNG files, one per image in the batch. */
  images: Buffer[];
  /** Seconds spent in inference. */
  inferenceSeconds: number;
  seed: number;
}

export interface ImageModel {
  readonly kind: 'text-to-image';
  readonly name: string;
  readonly limits: { minSize: number; maxSize: number; defaultSize: [number, number] };
  doGenerateImages(options: ImageCallOptions): Promise<ImageResult>;
}
