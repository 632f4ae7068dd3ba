// One server's micro-batchers: one per loaded embedding or rerank model, created on first use. Kept
// on the server's services (not in module state), so two servers in one process never share a queue.
import type { ModelConfig } from '../config/schema.ts';
import type { EmbeddingModel, RerankModel } from '../spec/index.ts';
import { createEmbeddingBatcher, type EmbeddingBatcher } from './embeddings.ts';
import { createRerankBatcher, type RerankBatcher } from './rerank.ts';

export class ModelBatchers {
  // Weak: a batcher lives as long as its model instance (a reloaded model gets a fresh one).
  private readonly embeddings = new WeakMap<EmbeddingModel, EmbeddingBatcher>();
  private readonly rerankers = new WeakMap<RerankModel, RerankBatcher>();

  embedding(model: EmbeddingModel, config: ModelConfig): EmbeddingBatcher {
    let batcher = this.embeddings.get(model);
    if (!batcher) {
      batcher = createEmbeddingBatcher(model, config);
      this.embeddings.set(model, batcher);
    }
    return batcher;
  }

  rerank(model: RerankModel, config: ModelConfig): RerankBatcher {
    let batcher = this.rerankers.get(model);
    if (!batcher) {
      batcher = createRerankBatcher(model, config);
      this.rerankers.set(model, batcher);
    }
    return batcher;
  }
}
