export * from './chat.ts';
export * from './embedding.ts';
export * from './image.ts';

import type { ChatModel } from './chat.ts';
import type { EmbeddingModel, RerankModel } from './embedding.ts';
import type { ImageModel } from './image.ts';

export type AnyModel = ChatModel | EmbeddingModel | RerankModel | ImageModel;
export type ModelType = AnyModel['kind'];

/** A loaded model instance that holds native memory. The registry disposes it on unload/shutdown. */
export interface LoadedModel<M extends AnyModel = AnyModel> {
  model: M;
  dispose(): Promise<void>;
}

/**
 * What a model is doing now, from its own admission queue (metrics, the console, tests). Asynchronous
 * because the model may live in an engine process: the answer crosses the process boundary.
 */
export interface EngineStats {
  /** Requests holding a sequence / slot. */
  active: number;
  /** Requests waiting for one. */
  queued: number;
}

/** Progress while loading (0..1), shown on the console for long loads. */
export type LoadProgress = (fraction: number) => void;
