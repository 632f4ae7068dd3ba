// What a pulled model is, for `infera models`: its kind and the engine that runs it, from the preset it
// was pulled for or else from its files' layout.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Preset } from './presets.ts';
import type { ManifestModel } from './store.ts';

export interface LocalModelInfo {
  kind: string;
  engine: string;
}

export function describeLocal(model: ManifestModel, modelsDir: string, presets: Preset[]): LocalModelInfo {
  const preset = presets.find((candidate) => candidate.id === model.preset);
  if (preset) return { kind: preset.type, engine: preset.entry.engine };
  const path = join(modelsDir, model.path);
  if (model.path.toLowerCase().endsWith('.gguf')) return { kind: 'gguf (chat, embedding or reranker)', engine: 'llama-cpp' };
  if (existsSync(join(path, 'unet', 'model.onnx'))) return { kind: 'text-to-image', engine: 'onnx-diffusion' };
  if (existsSync(join(path, 'model.onnx')) || existsSync(join(path, 'onnx', 'model.onnx'))) return { kind: 'embedding or reranker', engine: 'onnx' };
  return { kind: 'files', engine: '-' };
}
