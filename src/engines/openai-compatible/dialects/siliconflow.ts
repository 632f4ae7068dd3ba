// SiliconFlow's cloud API, which Infera itself speaks: enable_thinking / thinking_budget as top-level
// fields, `prefix: true` on the last assistant message, rerank with chunking options and an instruction,
// images in its own shape (image_size, batch_size, num_inference_steps).
import { cohereRerank, type Dialect, openaiEmbeddings, prefixAsFlag, refuseRerankExtras, thinkingAsSiliconFlow } from './types.ts';

export const siliconflow: Dialect = {
  name: 'siliconflow',
  chat: true,
  completions: true,
  infill: true,
  images: true,
  sendsReasoning: true,
  embeddings: openaiEmbeddings(),
  rerank: cohereRerank(
    (upstream) => upstream.path('rerank'),
    (options) => {
      refuseRerankExtras(options, 'SiliconFlow', { chunks: true, instruction: true });
      return {
        ...(options.maxChunksPerDoc !== undefined ? { max_chunks_per_doc: options.maxChunksPerDoc } : {}),
        ...(options.overlapTokens !== undefined ? { overlap_tokens: options.overlapTokens } : {}),
        ...(options.instruction !== undefined ? { instruction: options.instruction } : {}),
      };
    },
  ),
  chatRequest(body, options) {
    thinkingAsSiliconFlow(body, options);
    prefixAsFlag(body, options);
  },
};
