// Infinity (michaelfeil/infinity): OpenAI-shaped /embeddings and a Cohere-shaped /rerank at the server
// root (no /v1 unless started with --url-prefix), whose results carry `document` as a bare string.
// Usage in both. No chat.
import { cohereRerank, type Dialect, openaiEmbeddings, refuseRerankExtras } from './types.ts';

export const infinity: Dialect = {
  name: 'infinity',
  chat: false,
  completions: false,
  infill: false,
  images: false,
  // Relative to the base URL, which for Infinity is the server root (or its --url-prefix).
  embeddings: openaiEmbeddings('embeddings', false, false),
  rerank: cohereRerank(
    (upstream) => upstream.path('rerank'),
    (options) => {
      refuseRerankExtras(options, 'Infinity');
      return {};
    },
  ),
  chatRequest() {},
};
