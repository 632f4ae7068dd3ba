// Another Infera server: SiliconFlow's API (./siliconflow.ts) plus Cohere v2's max_tokens_per_doc on
// rerank. Its /v1/models says each model's type and aliases, which the quick form (../discover.ts) reads.
import { cohereRerank, type Dialect, refuseRerankExtras } from './types.ts';
import { siliconflow } from './siliconflow.ts';

export const infera: Dialect = {
  ...siliconflow,
  name: 'infera',
  rerank: cohereRerank(
    (upstream) => upstream.path('rerank'),
    (options) => {
      refuseRerankExtras(options, 'Infera', { chunks: true, instruction: true, maxTokensPerDoc: true });
      return {
        ...(options.maxChunksPerDoc !== undefined ? { max_chunks_per_doc: options.maxChunksPerDoc } : {}),
        ...(options.overlapTokens !== undefined ? { overlap_tokens: options.overlapTokens } : {}),
        ...(options.maxTokensPerDoc !== undefined ? { max_tokens_per_doc: options.maxTokensPerDoc } : {}),
        ...(options.instruction !== undefined ? { instruction: options.instruction } : {}),
      };
    },
  ),
};
