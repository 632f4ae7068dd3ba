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
    // getLlama spends most of its time waiting for a process that test-loads the binary: the engine's
    // modules load meanwhile. (Not the FFI runner's libraries: opened before getLlama has set its log
    // hook, llama.cpp would print its load lines to stderr.)
    const llamaReady = runtime.llama(config.llamaCpp.gpu);
    await Promise.all([llamaReady, preload(config)]);
    const llama = await llamaReady;
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

/** What load() will import for this entry; a failure here is left to load() itself to report. */
async function preload(config: { type: string; llamaCpp: { runner: string } }): Promise<void> {
  try {
    if (config.type !== 'chat') return;
    await import('./chat.ts');
    if (config.llamaCpp.runner === 'ffi') await import('./chat-ffi.ts');
  } catch {
    // load() imports them again and meets the same error where it is handled.
  }
}
