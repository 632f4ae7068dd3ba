// The contract between Infera and an engine. Each engine folder exports one EngineDescriptor, and the
// engine table (src/engines/index.ts) lists them: config validation, path resolution and model loading
// all go through the table, so an engine is one folder plus one line there.
//
// A descriptor module must stay cheap to import (zod and types only): the CLI and the config loader
// import every descriptor, and a server that serves no image model must never load ONNX Runtime. The
// heavy engine code is imported inside load().
import type { z } from 'zod';
import type { Logger } from 'pino';
import type { ModelConfig, ModelTypeName } from '../config/model.ts';
import type { ImageLimits, LoadedModel, LoadProgress } from '../spec/index.ts';
import type { EngineResources } from './resources.ts';

export interface EngineLoadContext<C extends ModelConfig = ModelConfig> {
  /** The validated entry (this engine's schema, paths already absolute). */
  config: C;
  onProgress: LoadProgress;
  /** Aborted when the server shuts down while the model is still loading. */
  signal: AbortSignal;
  /** The server's logger, bound to this model: engine warnings go here, never to the console. */
  logger: Logger;
  /** Engine state shared by this server's models (e.g. one llama.cpp runtime); disposed when the server closes. */
  resources: EngineResources;
  /**
   * The model is loaded in an engine process of its own (src/engines/runner/): the engine may then run
   * native work on the process's main thread (llama-cpp's FFI runner decodes there instead of on a
   * worker thread). Unset: the main thread is the server's and must stay free.
   */
  ownProcess?: boolean;
  /**
   * Resolves when the server starts routing requests to the model: at once for a model loaded on demand,
   * at adoption for one an engine process loaded before the server was listening (runner/host.ts). Work
   * an engine defers until idle after its load waits for it, so that it does not fall just before the
   * first request. Unset: the end of the load.
   */
  serving?: Promise<void>;
}

export interface EngineDescriptor<C extends ModelConfig = ModelConfig> {
  /** The value of `engine` in a model entry. */
  readonly name: string;
  /** The model types it serves; any other `type` is a config error. */
  readonly kinds: readonly ModelTypeName[];
  /** Its model entry: the common keys plus its own (build it with engineModelSchema). */
  readonly schema: z.ZodType<C> & { readonly shape: Readonly<Record<string, unknown>> };
  /** Makes the paths inside its own options absolute (`path` itself is resolved for every engine). */
  resolvePaths?(config: C, absolute: (path: string) => string): void;
  /**
   * Cheap checks of the model's files (present, a header the engine can read safely), run in the server
   * process before the engine process starts or load() runs: a refused file costs no process start and
   * no native code. Throws an Error whose message names the file and the problem.
   */
  check?(config: C): Promise<void>;
  load(context: EngineLoadContext<C>): Promise<LoadedModel>;
  /**
   * Image engines: the sizes the entry's options allow, known before any load, so a request for a size
   * the model cannot make is refused without loading it (the loaded model's `limits` are the same).
   */
  imageLimits?(config: C): ImageLimits;
  /**
   * What the model's files say it can honour, read without loading it (small files, synchronously), so
   * /v1/models can say so before the first load: image engines' negativePrompt, guidanceScale and
   * imageToImage. Undefined when the files do not tell; the loaded model's own answer replaces it.
   */
  capabilities?(config: C): Readonly<Record<string, boolean>> | undefined;
  /**
   * Chat engines: the context window (tokens per sequence) the entry's options set, known before any
   * load. Admission reserves a request without max_tokens against it (docs/PLATFORM.md).
   */
  contextSize?(config: C): number;
  /**
   * Bytes the model takes once loaded, estimated before loading it (its files, its KV cache): what the
   * memory budget (lifecycle.memoryBudget) counts. Absent: the engine holds no local memory (a remote
   * upstream), and its models count toward neither the budget nor lifecycle.maxLoaded.
   */
  estimateMemory?(config: C): Promise<number>;
  /**
   * Engines that serve a model from another server: its name (host:port), base URL and the URL of its
   * active health check (src/routing/health.ts). Absent: an in-process engine, healthy while its model can load.
   */
  remote?(config: C): { name: string; baseUrl: string; healthUrl: string };
}

/** The engines a server knows. Passed to the config schema and the registry (tests pass their own). */
export type EngineTable = readonly EngineDescriptor<ModelConfig>[];

/** Checks the descriptor's types against its schema; returns it unchanged. */
export function defineEngine<C extends ModelConfig>(descriptor: EngineDescriptor<C>): EngineDescriptor<C> {
  return descriptor;
}
