// The one place that starts llama.cpp. A server's llama-cpp models (chat, embedding, rerank) share one
// Llama instance per GPU setting through that server's LlamaRuntime: loading the binding twice wastes
// memory, and node-llama-cpp sizes GPU offloading per instance. The runtime belongs to the server (its
// EngineResources), never to the process, and is disposed when that server closes.
import type { Llama, LlamaLogLevel as LlamaLogLevelEnum, LlamaModel, LlamaModelOptions } from 'node-llama-cpp';
import type { Logger } from 'pino';
import type { LlamaCppOptions } from './config.ts';
import { nlcModule } from './nlc-parts.ts';
import { setFfiLogSink } from './ffi/library.ts';

// The enum's own module (7 ms), not the package root: an FFI chat engine process makes a runtime but
// never a Llama, and must not load all of node-llama-cpp (nlc-parts.ts). getLlama is imported on use.
const { LlamaLogLevel } = await nlcModule<{ LlamaLogLevel: typeof LlamaLogLevelEnum }>('bindings/types.js');
type LlamaLogLevel = LlamaLogLevelEnum;

type GpuSetting = LlamaCppOptions['gpu'];

export type LlamaLogSink = (level: LlamaLogLevel, message: string) => void;

/** Pino level names for llama.cpp's: its info lines are load chatter, so they are debug here. */
function pinoLevel(level: LlamaLogLevel): 'error' | 'warn' | 'debug' | 'trace' {
  switch (level) {
    case LlamaLogLevel.fatal:
    case LlamaLogLevel.error:
      return 'error';
    case LlamaLogLevel.warn:
      return 'warn';
    case LlamaLogLevel.info:
    case LlamaLogLevel.log:
      return 'debug';
    default:
      return 'trace';
  }
}

/** The most detailed llama.cpp level worth producing for this logger (filtering in the addon is cheaper). */
function llamaLevelFor(logger: Logger | undefined): LlamaLogLevel {
  if (logger?.isLevelEnabled('trace')) return LlamaLogLevel.debug;
  if (logger?.isLevelEnabled('debug')) return LlamaLogLevel.info;
  return LlamaLogLevel.warn;
}

/** The FFI library's levels (llama.cpp's own, read from its log hook) in node-llama-cpp's terms. */
const FFI_LEVELS = { error: LlamaLogLevel.error, warn: LlamaLogLevel.warn, info: LlamaLogLevel.info, debug: LlamaLogLevel.debug } as const;

/** Writes one llama.cpp line to a pino logger. */
export function logToPino(logger: Logger, level: LlamaLogLevel, message: string): void {
  const text = message.trim();
  if (text) logger[pinoLevel(level)](`llama.cpp: ${text}`);
}

/**
 * A new Llama. Never builds or downloads: the prebuilt binary ships in the npm package (offline
 * machines). `maxThreads` is only the pool ceiling; each context sets its own `threads` from config.
 * Servers get theirs from a LlamaRuntime; tests and benchmarks call this and dispose what they get.
 */
export async function createLlama(gpu: GpuSetting, options: { sink?: LlamaLogSink; logLevel?: LlamaLogLevel } = {}): Promise<Llama> {
  const { getLlama } = await import('node-llama-cpp');
  return getLlama({
    gpu,
    build: 'never',
    skipDownload: true,
    progressLogs: false,
    logLevel: options.logLevel ?? LlamaLogLevel.warn,
    logger: (level, message) => options.sink?.(level, message),
  });
}

/**
 * One server's llama.cpp. Lines llama.cpp logs while exactly one model loads go to that model's logger
 * (they are about it); anything else goes to the server's.
 *
 * Limit of node-llama-cpp 3.21.1: llama.cpp's log callback is process-wide in the native addon, and
 * when a second Llama is created in the same process (two servers in one test process, or models with
 * two different `gpu` settings) the addon releases the first callback in a way that also drops the new
 * one, so llama.cpp prints its lines to stdout from then on. One server with one GPU setting (the
 * production case) routes every line here.
 */
export class LlamaRuntime {
  private readonly instances = new Map<string, Promise<Llama>>();
  private readonly loading = new Set<Logger>();

  /** llama.cpp's lines from the FFI runner and encoders (no addon): the same routing as the addon's. */
  private readonly removeFfiSink: () => void;

  constructor(private readonly logger: Logger) {
    // pino drops what its level does not want, as the addon's logLevel does (llamaLevelFor).
    this.removeFfiSink = setFfiLogSink((level, text) => this.log(FFI_LEVELS[level], text));
  }

  llama(gpu: GpuSetting): Promise<Llama> {
    const key = String(gpu);
    let instance = this.instances.get(key);
    if (!instance) {
      instance = createLlama(gpu, { sink: (level, message) => this.log(level, message), logLevel: llamaLevelFor(this.logger) });
      this.instances.set(key, instance);
      instance.catch(() => this.instances.delete(key));
    }
    return instance;
  }

  /** Runs a model load with llama.cpp's lines attributed to that model's logger. */
  async attributed<T>(logger: Logger, load: () => Promise<T>): Promise<T> {
    this.loading.add(logger);
    try {
      return await load();
    } finally {
      this.loading.delete(logger);
    }
  }

  private log(level: LlamaLogLevel, message: string): void {
    const target = this.loading.size === 1 ? [...this.loading][0]! : this.logger;
    logToPino(target, level, message);
  }

  async dispose(): Promise<void> {
    this.removeFfiSink();
    const all = [...this.instances.values()];
    this.instances.clear();
    await Promise.allSettled(all.map(async (instance) => (await instance).dispose()));
  }
}

/**
 * An embedding or reranker model on node-llama-cpp, with the attention the FFI encoder uses
 * (ffi/encoder.ts): plain for rerankers (flash attention's F16 rounding moved their scores by up to
 * 2 %), llama.cpp's default for embedding models, so both runners give the same vectors and scores.
 */
export function loadEncoderModel(
  llama: Llama,
  config: { path: string; type: string; llamaCpp: { gpuLayers?: LlamaModelOptions['gpuLayers'] } },
  onProgress: ((progress: number) => void) | undefined,
  signal: AbortSignal | undefined,
): Promise<LlamaModel> {
  return llama.loadModel({
    modelPath: config.path,
    gpuLayers: config.llamaCpp.gpuLayers,
    onLoadProgress: onProgress,
    loadSignal: signal,
    ...(config.type === 'reranker' ? { defaultContextFlashAttention: false } : {}),
  });
}
