// Engine `llama-cpp`: GGUF chat, embedding and reranker models on Infera's FFI runner or node-llama-cpp. Cheap to import:
// node-llama-cpp is imported inside load().
import { defineEngine } from '../descriptor.ts';
import { requireLocalPath } from '../shared/files.ts';
import { llamaCppModelSchema } from './config.ts';
import { loadLlamaCpp } from './load.ts';

export const llamaCpp = defineEngine({
  name: 'llama-cpp',
  kinds: ['chat', 'embedding', 'reranker'],
  schema: llamaCppModelSchema,
  contextSize: (config) => config.llamaCpp.contextSize,
  estimateMemory: async (config) => (await import('./memory.ts')).estimateLlamaCppMemory(config),
  async check(config) {
    requireLocalPath(config.path);
    // Before any node-llama-cpp call: llama.cpp trusts the header, and a hostile one can abort the process.
    if (config.llamaCpp.checkHeader) await (await import('./gguf-check.ts')).checkGgufFileOnce(config.path);
  },
  load: loadLlamaCpp,
});
