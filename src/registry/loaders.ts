// Which engine loads which model. Engines are imported on first use: onnxruntime-node and the
// llama.cpp binding are heavy, and a server that serves only remote models should never load them.
import type { ModelConfig } from '../config/schema.ts';
import type { ModelLoader } from './registry.ts';

export function engineLoaderFor(config: ModelConfig): ModelLoader {
  switch (config.engine) {
    case 'llama-cpp':
      switch (config.type) {
        case 'chat':
          return async (c, p) => (await import('../engines/llama-cpp/chat.ts')).loadLlamaCppChatModel(c, p);
        case 'embedding':
          return async (c, p) => (await import('../engines/llama-cpp/embedding.ts')).loadLlamaCppEmbeddingModel(c, p);
        case 'reranker':
          return async (c, p) => (await import('../engines/llama-cpp/rerank.ts')).loadLlamaCppRerankModel(c, p);
        default:
          break;
      }
      break;
    case 'onnx':
      if (config.type === 'embedding') return async (c, p) => (await import('../engines/onnx/embedding.ts')).loadOnnxEmbeddingModel(c, p);
      if (config.type === 'reranker') return async (c, p) => (await import('../engines/onnx/rerank.ts')).loadOnnxRerankModel(c, p);
      break;
    case 'onnx-diffusion':
      return async (c, p) => (await import('../engines/onnx/index.ts')).loadOnnxDiffusionModel(c, p);
  }
  return async () => {
    throw new Error(`engine ${config.engine} cannot serve ${config.type} models in this version`);
  };
}
