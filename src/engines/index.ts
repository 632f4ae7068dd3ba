// The engine table: every engine Infera can serve models with. Adding an engine is one folder with a
// descriptor (src/engines/descriptor.ts) and one line here, plus one in loaders.ts (what an engine
// process imports instead of this table; loaders.test.ts fails until both list it); the config schema,
// the config loader and the registry read this table and nothing else about engines.
import type { EngineTable } from './descriptor.ts';
import { llamaCpp } from './llama-cpp/descriptor.ts';
import { onnxDiffusion } from './onnx-diffusion/descriptor.ts';
import { onnx } from './onnx/descriptor.ts';
import { openaiCompatible } from './openai-compatible/descriptor.ts';

export const engines: EngineTable = [llamaCpp, onnx, onnxDiffusion, openaiCompatible];

export type { EngineDescriptor, EngineLoadContext, EngineTable } from './descriptor.ts';
