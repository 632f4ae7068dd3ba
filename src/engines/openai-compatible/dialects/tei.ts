// Hugging Face Text Embeddings Inference: native /embed (inputs → bare arrays of floats) and /rerank
// ({query, texts} → [{index, score}]), neither with a token count (the engine counts and says so). No chat.
import { type Dialect, num, obj, refuseRerankExtras } from './types.ts';

export const tei: Dialect = {
  name: 'tei',
  chat: false,
  completions: false,
  infill: false,
  images: false,
  embeddings: {
    tokenInputs: true,
    path: (upstream) => upstream.rootPath('/embed'),
    body: (_model, inputs, dimensions) => ({ inputs, truncate: false, normalize: true, ...(dimensions ? { dimensions } : {}) }),
    parse: (answer) => ({ vectors: Array.isArray(answer) ? answer : [] }),
  },
  rerank: {
    path: (upstream) => upstream.rootPath('/rerank'),
    body(_model, options) {
      refuseRerankExtras(options, 'TEI');
      return { query: options.query, texts: options.documents, raw_scores: false, return_text: false, truncate: false };
    },
    parse: (answer) => ({
      results: Array.isArray(answer)
        ? answer.map((item) => ({ index: num(obj(item)?.index) ?? -1, score: num(obj(item)?.score) ?? Number.NaN }))
        : [],
    }),
  },
  chatRequest() {},
};
