// Each engine's load() for an engine process (runner/child.ts), reached without the engine table: the
// table's descriptors carry the config schemas, and importing them (zod and every engine's schema) cost
// the engine process ~85 ms of CPU before it could start loading its model. The descriptors' load is
// the very same function (loaders.test.ts checks both tables name the same engines and functions).
import type { EngineDescriptor } from './descriptor.ts';

type Load = EngineDescriptor['load'];

export const engineLoaders: Readonly<Record<string, () => Promise<Load>>> = {
  'llama-cpp': async () => (await import('./llama-cpp/load.ts')).loadLlamaCpp as Load,
  onnx: async () => (await import('./onnx/load.ts')).loadOnnx as Load,
  'onnx-diffusion': async () => (await import('./onnx/load.ts')).loadOnnxDiffusion as Load,
  // Runs in the server process unless configured otherwise (its schema's default): its descriptor will do.
  'openai-compatible': async () => (await import('./openai-compatible/descriptor.ts')).openaiCompatible.load as Load,
};

/**
 * What a spare engine process (runner/host.ts) started for a kind of model (`engine/type`) loads before
 * its model is known: only steps its loader takes for any such model, so a load joins them.
 */
export const enginePreloads: Readonly<Record<string, () => Promise<void>>> = {
  'llama-cpp/chat': async () => (await import('./llama-cpp/load.ts')).preloadLlamaCppChat(),
};
