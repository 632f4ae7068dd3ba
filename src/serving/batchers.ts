// One server's micro-batchers: one per loaded embedding or rerank model, created on first use. Kept
// on the server's services (not in module state), so two servers in one process never share a queue.
import type { ModelConfig } from '../config/schema.ts';
import type { InferaMetrics, QueueView } from '../observability/metrics.ts';
import type { MicroBatcher } from '../scheduler/micro-batcher.ts';
import type { EmbeddingModel, RerankModel } from '../spec/index.ts';
import { createEmbeddingBatcher, type EmbeddingBatcher } from './embeddings.ts';
import { createRerankBatcher, type RerankBatcher } from './rerank.ts';

export class ModelBatchers {
  // Weak: a batcher lives as long as its model instance (a reloaded model gets a fresh one).
  private readonly embeddings = new WeakMap<EmbeddingModel, EmbeddingBatcher>();
  private readonly rerankers = new WeakMap<RerankModel, RerankBatcher>();
  /** The metrics' queue views, kept alive exactly as long as their batcher (the metrics hold them weakly). */
  private readonly views = new WeakMap<object, QueueView>();

  constructor(private readonly metrics?: InferaMetrics) {}

  embedding(model: EmbeddingModel, config: ModelConfig): EmbeddingBatcher {
    let batcher = this.embeddings.get(model);
    if (!batcher) {
      batcher = this.observed(createEmbeddingBatcher(model, config), config);
      this.embeddings.set(model, batcher);
    }
    return batcher;
  }

  rerank(model: RerankModel, config: ModelConfig): RerankBatcher {
    let batcher = this.rerankers.get(model);
    if (!batcher) {
      batcher = this.observed(createRerankBatcher(model, config), config);
      this.rerankers.set(model, batcher);
    }
    return batcher;
  }

  private observed<I, O>(batcher: MicroBatcher<I, O>, config: ModelConfig): MicroBatcher<I, O> {
    if (!this.metrics) return batcher;
    const observer = this.metrics.batcher(config.id, () => batcher.stats().queued);
    batcher.onBatch = observer.onBatch;
    this.views.set(batcher, observer.view);
    return batcher;
  }
}
