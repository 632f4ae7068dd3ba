// Engine `onnx-diffusion`: Stable Diffusion optimum export folders (text-to-image). The pipeline code
// lives with the other ONNX code in src/engines/onnx and is imported inside load(), so a server that
// serves no image model never loads ONNX Runtime or sharp.
import { defineEngine } from '../descriptor.ts';
import { onnxDiffusionModelSchema, resolveOnnxPaths } from '../onnx/config.ts';
import { pathBytes, requireLocalPath } from '../shared/files.ts';
import { imageLimitsOf } from '../../spec/image.ts';

export const onnxDiffusion = defineEngine({
  name: 'onnx-diffusion',
  kinds: ['text-to-image'],
  schema: onnxDiffusionModelSchema,
  resolvePaths: resolveOnnxPaths,
  estimateMemory: (config) => pathBytes(config.path),
  imageLimits: (config) => imageLimitsOf(config.id, config.onnx, 'onnx.defaultSize'),
  async check(config) {
    requireLocalPath(config.path);
  },
  async load({ config, onProgress, signal, logger }) {
    const loaded = await (await import('../onnx/diffusion-model.ts')).loadOnnxDiffusionModel(config, onProgress, { log: logger });
    if (signal.aborted) {
      await loaded.dispose();
      signal.throwIfAborted();
    }
    return loaded;
  },
});
