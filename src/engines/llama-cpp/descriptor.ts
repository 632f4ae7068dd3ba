// Engine `llama-cpp`: GGUF chat, embedding and reranker models through node-llama-cpp. Cheap to import:
// node-llama-cpp is imported inside load().
import { defineEngine } from '../descriptor.ts';
import { requireLocalPath } from '../shared/files.ts';
import { llamaCppModelSchema } from './config.ts';

export const llamaCpp = defineEngine({
  name: 'llama-cpp',
  kinds: ['chat', 'embedding', 'reranker'],
  schema: llamaCppModelSchema,
  contextSize: (config) => config.llamaCpp.contextSize,
  async check(config) {
    requireLocalPath(config.path);
    // Before any node-llama-cpp call: llama.cpp trusts the header, and a hostile one can abort the process.
    if (config.llamaCpp.checkHeader) await (await import('./gguf-check.ts')).checkGgufFile(config.path);
  },
  async load({ config, onProgress, signal, logger, resources, ownProcess }) {
    signal.throwIfAborted();
    const { LlamaRuntime } = await import('./runtime.ts');
    const runtime = await resources.get(
      'llama-cpp',
      () => new LlamaRuntime(resources.logger.child({ engine: 'llama-cpp' })),
      (created) => created.dispose(),
    );
    const llama = await runtime.llama(config.llamaCpp.gpu);
    signal.throwIfAborted();
    return runtime.attributed(logger, async () => {
      const options = { llama, signal, decodeOn: ownProcess ? ('loop' as const) : ('worker' as const) };
      switch (config.type) {
        case 'chat':
          return (await import('./chat.ts')).loadChatModel(config, onProgress, options, (reason) => logger.info(reason));
        case 'embedding':
          return (await import('./embedding.ts')).loadLlamaCppEmbeddingModel(config, onProgress, options);
        case 'reranker':
          return (await import('./rerank.ts')).loadLlamaCppRerankModel(config, onProgress, options);
        default:
          throw new Error(`engine llama-cpp cannot serve ${config.type} models`);
      }
    });
  },
});
