// Engine `onnx`: encoder embedding models and rerankers from an ONNX export folder. Cheap to import:
// onnxruntime-node is imported inside load(), so a server without ONNX models never loads it.
import { defineEngine } from '../descriptor.ts';
import { pathBytes, requireLocalPath } from '../shared/files.ts';
import { onnxModelSchema, resolveOnnxPaths } from './config.ts';

export const onnx = defineEngine({
  name: 'onnx',
  kinds: ['embedding', 'reranker'],
  schema: onnxModelSchema,
  resolvePaths: resolveOnnxPaths,
  estimateMemory: (config) => pathBytes(config.path),
  async check(config) {
    requireLocalPath(config.path);
  },
  async load({ config, onProgress, signal, logger, ownProcess }) {
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
  },
});
