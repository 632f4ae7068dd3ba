// ImageModel over an optimum Stable Diffusion export: loads the pipeline's sessions once and admits
// generations through a per-model Slots queue (one at a time by default: a CPU diffusion step already
// uses every pinned thread, so running two only interleaves them and doubles memory).
import { resolve } from 'node:path';
import type { OnnxModelConfig } from './config.ts';
import { Slots } from '../../scheduler/slots.ts';
import { imageLimitsOf, type ImageCallOptions, type ImageModel, type ImageResult, type LoadedModel, type LoadProgress } from '../../spec/index.ts';
import { DiffusionPipeline } from './diffusion-pipeline.ts';
import type { SessionLogger } from './sessions.ts';

export interface OnnxDiffusionLoadOptions {
  log?: SessionLogger;
  /** Base for a relative `config.path` / `tinyVaePath` (the config file's folder); default: cwd. */
  baseDir?: string;
}

const mediaTypes = { png: 'image/png', jpeg: 'image/jpeg', webp: 'image/webp' } as const;

export async function loadOnnxDiffusionModel(
  config: OnnxModelConfig,
  onProgress?: LoadProgress,
  options: OnnxDiffusionLoadOptions = {},
): Promise<LoadedModel<ImageModel>> {
  if (!config.path) throw new Error(`model ${config.id}: engine onnx-diffusion needs \`path\` (an optimum export folder)`);
  const onnx = config.onnx;
  const base = options.baseDir ?? process.cwd();
  const limits = imageLimitsOf(config.id, config.onnx, 'onnx.defaultSize');
  const pipeline = await DiffusionPipeline.load(resolve(base, config.path), {
    threads: onnx.threads,
    executionProviders: onnx.executionProviders,
    tinyVaePath: onnx.tinyVaePath ? resolve(base, onnx.tinyVaePath) : undefined,
    log: options.log,
    onProgress,
  });
  for (const warning of pipeline.warnings) options.log?.warn(`model ${config.id}: ${warning}`);

  const slots = new Slots(onnx.concurrency, config.maxQueue, `Image model ${config.id}`, { maxWaitMs: config.maxQueueWaitSeconds * 1000 });

  const model: ImageModel = {
    kind: 'text-to-image',
    name: config.id,
    limits,
    imageToImage: pipeline.supportsImageToImage,
    defaultStrength: onnx.defaultStrength,
    // An LCM UNet takes the guidance scale as an embedding and runs without CFG, so nothing reads the negative prompt.
    capabilities: { negativePrompt: !pipeline.hasTimestepCond, guidanceScale: true },
    warnings: pipeline.warnings,
    async doGenerateImages(call: ImageCallOptions): Promise<ImageResult> {
      const lease = await slots.acquire(call.signal);
      try {
        const format = call.outputFormat ?? 'png';
        const result = await pipeline.generate({
          ...call,
          strength: call.initImage ? (call.strength ?? onnx.defaultStrength) : undefined,
          outputFormat: format,
        });
        return { images: result.images, mediaType: mediaTypes[format], inferenceSeconds: result.seconds.total, seed: call.seed };
      } finally {
        lease.release();
      }
    },
  };
  return { model, dispose: () => pipeline.dispose() };
}
