// Engine `onnx-diffusion`: Stable Diffusion optimum export folders (text-to-image). The pipeline code
// lives with the other ONNX code in src/engines/onnx and is imported inside load(), so a server that
// serves no image model never loads ONNX Runtime or sharp.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { defineEngine } from '../descriptor.ts';
import { onnxDiffusionModelSchema, resolveOnnxPaths } from '../onnx/config.ts';
import { loadOnnxDiffusion } from '../onnx/load.ts';
import { pathBytes, requireLocalPath } from '../shared/files.ts';
import { imageLimitsOf } from '../../spec/image.ts';

export const onnxDiffusion = defineEngine({
  name: 'onnx-diffusion',
  kinds: ['text-to-image'],
  schema: onnxDiffusionModelSchema,
  resolvePaths: resolveOnnxPaths,
  estimateMemory: (config) => pathBytes(config.path),
  imageLimits: (config) => imageLimitsOf(config.id, config.onnx, 'onnx.defaultSize'),
  // An LCM-distilled UNet is one with a guidance embedding input (timestep_cond), which diffusers' UNet
  // config declares as time_cond_proj_dim; optimum copies that config next to the graph. Without it
  // (diffusers' old conversion script writes none) nothing is said until the graph is loaded.
  capabilities(config) {
    let unet: { time_cond_proj_dim?: unknown };
    try {
      unet = JSON.parse(readFileSync(join(config.path, 'unet/config.json'), 'utf8'));
    } catch {
      return undefined;
    }
    if (typeof unet !== 'object' || unet === null || !('time_cond_proj_dim' in unet)) return undefined;
    const lcm = typeof unet.time_cond_proj_dim === 'number' && unet.time_cond_proj_dim > 0;
    // The pipeline takes the tiny VAE's encoder when it has one, else the export's own.
    const encoder = [config.onnx.tinyVaePath, config.path].some((dir) => dir !== undefined && existsSync(join(dir, 'vae_encoder/model.onnx')));
    return { negativePrompt: !lcm, guidanceScale: true, imageToImage: encoder };
  },
  async check(config) {
    requireLocalPath(config.path);
  },
  load: loadOnnxDiffusion,
});
