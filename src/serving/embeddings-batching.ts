// Micro-batcher settings shared by the embeddings and rerank serving paths, and the per-model
// batchers themselves. One batcher per loaded model instance (a reloaded model gets a fresh one).
import type { ModelConfig } from '../config/schema.ts';
import { MicroBatcher, type BatchEntry } from '../scheduler/micro-batcher.ts';

export interface BatchingSettings {
  /** Tokens one batch may hold (TEI-style budget); a larger single request runs alone. */
  maxBatchTokens: number;
  /** How long the first request of a batch waits for company when the model is idle. */
  maxWaitMs: number;
  /** Batches in flight per model: 2 lets the next batch start on contexts the previous one has freed. */
  concurrency: number;
}

// Measured with bench/embeddings.ts (docs/BENCHMARKS.md, "Embeddings and rerank"): llama.cpp contexts
// take one input at a time, so a wait buys no bigger matrix multiply, only latency (1 client: p50 25.6 ms
// at 0 ms, 28.5 ms at 2 ms, 32.2 ms at 5 ms; 32 clients: no difference). Batches still form from what
// queues while both batch slots are busy. Engines that run a whole batch in one call may want a wait.
export const DEFAULT_BATCHING: BatchingSettings = { maxBatchTokens: 8192, maxWaitMs: 0, concurrency: 2 };

export function createBatcher<I, O>(
  config: ModelConfig,
  execute: (entries: BatchEntry<I>[], signal: AbortSignal) => Promise<O[]> | Promise<O>[],
  settings: BatchingSettings = DEFAULT_BATCHING,
): MicroBatcher<I, O> {
  return new MicroBatcher<I, O>({
    label: `Model '${config.id}'`,
    maxQueue: config.maxQueue,
    maxBatchTokens: settings.maxBatchTokens,
    maxWaitMs: settings.maxWaitMs,
    concurrency: settings.concurrency,
    maxQueueWaitMs: config.maxQueueWaitSeconds * 1000,
    execute,
  });
}
