// Engine `llama-cpp`'s load(), apart from its descriptor so that an engine process (runner/child.ts,
// through ../loaders.ts) reaches it without the config schemas (zod and every engine's schema: ~85 ms
// of CPU before the process could start loading). Cheap to import: node-llama-cpp and the runner are
// imported inside.
import type { EngineLoadContext } from '../descriptor.ts';
import type { LoadedModel } from '../../spec/index.ts';
import type { LlamaCppModelConfig } from './config.ts';

/**
 * What a spare engine process started for a llama.cpp chat model (runner/host.ts) does while it waits for
 * the model: imports the FFI chat engine's modules and loads koffi, the steps of loadLlamaCpp that do not
 * depend on the model's options (not the libraries: a GPU model must leave them to node-llama-cpp's addon).
 * Whatever is still under way when the load message comes is joined, not repeated (the module cache).
 */
export async function preloadLlamaCppChat(): Promise<void> {
  await Promise.all([import('./runtime.ts'), import('./chat-ffi.ts')]);
  (await import('./ffi/library.ts')).loadKoffi();
}

export async function loadLlamaCpp({ config, onProgress, signal, logger, resources, ownProcess, serving }: EngineLoadContext<LlamaCppModelConfig>): Promise<LoadedModel> {
  signal.throwIfAborted();
  const { LlamaRuntime } = await import('./runtime.ts');
  const runtime = await resources.get(
    'llama-cpp',
    () => new LlamaRuntime(resources.logger.child({ engine: 'llama-cpp' })),
    (created) => created.dispose(),
  );
  const decodeOn = ownProcess ? ('loop' as const) : ('worker' as const);
  const logCpuBackend = async () => {
    const { describeCpuBackend, openedCpuBackend } = await import('./ffi/library.ts');
    const choice = config.llamaCpp.runner === 'ffi' ? await openedCpuBackend() : undefined;
    if (!choice) return;
    const { level, text } = describeCpuBackend(choice, config.llamaCpp.cpuBackend);
    logger[level](`${config.id}: ${text}`);
  };
  if (config.type === 'chat' && config.llamaCpp.runner === 'ffi') {
    // The FFI runner needs no Llama (node-llama-cpp's addon, ~1 s to start, and the package's root):
    // one is made only when the model falls back to node-llama-cpp (chat.ts's loadChatModel, inlined
    // so that this path does not import chat.ts and with it all of node-llama-cpp).
    const cacheDir = process.env.INFERA_CACHE_DIR || undefined;
    const loaded = await runtime.attributed(logger, async () =>
      (await import('./chat-ffi.ts')).loadFfiChatModel(config, onProgress, { signal, decodeOn, cacheDir, serving }),
    );
    if (typeof loaded !== 'string') {
      await logCpuBackend();
      return loaded;
    }
    logger.info(`llama.cpp FFI runner not used for ${config.id}: ${loaded}; running it on node-llama-cpp`);
  }
  signal.throwIfAborted();
  const loaded = await runtime.attributed(logger, async () => {
    // Chat here runs on node-llama-cpp; embedding and reranker models ask for the Llama only if they
    // fall back to it (their FFI encoder needs none: no getLlama at the start of their engine process).
    const llama = config.type === 'chat' ? await runtime.llama(config.llamaCpp.gpu) : () => runtime.llama(config.llamaCpp.gpu);
    signal.throwIfAborted();
    const options = { llama, signal, decodeOn };
    switch (config.type) {
      case 'chat':
        return (await import('./chat.ts')).loadLlamaCppChatModel(config, onProgress, options);
      case 'embedding':
        return (await import('./embedding.ts')).loadLlamaCppEmbeddingModel(config, onProgress, options, (reason) => logger.info(reason));
      case 'reranker':
        return (await import('./rerank.ts')).loadLlamaCppRerankModel(config, onProgress, options, (reason) => logger.info(reason));
      default:
        throw new Error(`engine llama-cpp cannot serve ${config.type} models`);
    }
  });
  // Embedding and reranker models that fell back to node-llama-cpp compute on its addon's backend.
  if ((loaded.model as { runner?: unknown }).runner === 'ffi') await logCpuBackend();
  return loaded;
}
