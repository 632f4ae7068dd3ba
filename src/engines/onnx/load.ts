// Engines `onnx` and `onnx-diffusion`: their load(), apart from their descriptors so that an engine
// process (runner/child.ts, through ../loaders.ts) reaches them without the config schemas (zod and every
// engine's schema). Cheap to import: ONNX Runtime and sharp are imported inside.
import type { EngineLoadContext } from '../descriptor.ts';
import type { LoadedModel } from '../../spec/index.ts';
import type { z } from 'zod';
import type { onnxDiffusionModelSchema, onnxModelSchema } from './config.ts';

export async function loadOnnx({ config, onProgress, signal, logger, ownProcess }: EngineLoadContext<z.output<typeof onnxModelSchema>>): Promise<LoadedModel> {
  const options = { log: logger, ownProcess };
  const loaded =
    config.type === 'embedding'
      ? await (await import('./embedding.ts')).loadOnnxEmbeddingModel(config, onProgress, options)
      : await (await import('./rerank.ts')).loadOnnxRerankModel(config, onProgress, options);
  if (signal.aborted) {
    await loaded.dispose();
    signal.throwIfAborted();
  }
  return loaded;
}

export async function loadOnnxDiffusion({ config, onProgress, signal, logger }: EngineLoadContext<z.output<typeof onnxDiffusionModelSchema>>): Promise<LoadedModel> {
  const loaded = await (await import('./diffusion-model.ts')).loadOnnxDiffusionModel(config, onProgress, { log: logger });
  if (signal.aborted) {
    await loaded.dispose();
    signal.throwIfAborted();
  }
  return loaded;
}
