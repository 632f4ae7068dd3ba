// Engine `onnx`: encoder embedding models and rerankers from an ONNX export folder. Cheap to import:
// onnxruntime-node is imported inside load(), so a server without ONNX models never loads it.
import { defineEngine } from '../descriptor.ts';
import { pathBytes, requireLocalPath } from '../shared/files.ts';
import { onnxModelSchema, resolveOnnxPaths } from './config.ts';
import { loadOnnx } from './load.ts';

export const onnx = defineEngine({
  name: 'onnx',
  kinds: ['embedding', 'reranker'],
  schema: onnxModelSchema,
  resolvePaths: resolveOnnxPaths,
  estimateMemory: (config) => pathBytes(config.path),
  async check(config) {
    requireLocalPath(config.path);
  },
  load: loadOnnx,
});
