// The one place that starts llama.cpp. Every llama-cpp model (chat, embedding, rerank) shares one
// Llama instance per GPU setting: the binding is process-wide and loading it twice wastes memory.
import { getLlama, LlamaLogLevel, type Llama } from 'node-llama-cpp';
import type { LlamaCppOptions } from '../../config/schema.ts';

type GpuSetting = LlamaCppOptions['gpu'];
const runtimes = new Map<string, Promise<Llama>>();

export interface RuntimeLogger {
  warn(message: string): void;
  debug(message: string): void;
}

/**
 * Never builds or downloads: the prebuilt binary ships in the npm package (offline machines).
 * `maxThreads` is only the pool ceiling; each context sets its own `threads` from config.
 */
export function getLlamaRuntime(gpu: GpuSetting, log?: RuntimeLogger): Promise<Llama> {
  const key = String(gpu);
  let runtime = runtimes.get(key);
  if (!runtime) {
    runtime = getLlama({
      gpu,
      build: 'never',
      skipDownload: true,
      progressLogs: false,
      logLevel: LlamaLogLevel.warn,
      logger: (level, message) => {
        const text = message.trim();
        if (!text) return;
        if (level === LlamaLogLevel.error || level === LlamaLogLevel.warn) log?.warn(`llama.cpp: ${text}`);
        else log?.debug(`llama.cpp: ${text}`);
      },
    });
    runtimes.set(key, runtime);
    runtime.catch(() => runtimes.delete(key));
  }
  return runtime;
}

export async function disposeLlamaRuntimes(): Promise<void> {
  const all = [...runtimes.values()];
  runtimes.clear();
  await Promise.allSettled(all.map(async (runtime) => (await runtime).dispose()));
}
