// llama.cpp's llama-server: OpenAI's /v1 routes, rerank at /rerank, thinking through the chat template
// (`chat_template_kwargs`); rerank scores are raw logits. With --reasoning-format none (or an old build) the thought stays in the text
// as `<think>…</think>`, which the engine splits; otherwise it arrives as `reasoning_content`. A final
// assistant message is continued as it is (llama-server prefills it), so prefix completion needs no field.
import { cohereRerank, type Dialect, openaiEmbeddings, type RerankRoute, refuseRerankExtras, thinkingAsTemplateKwargs } from './types.ts';

/** llama-server's relevance_score is the model's raw logit; the contract's score is its sigmoid (as TEI, vLLM and Infera give). */
function logitScores(route: RerankRoute): RerankRoute {
  return {
    ...route,
    parse(answer) {
      const parsed = route.parse(answer);
      return { ...parsed, results: parsed.results.map(({ index, score }) => ({ index, score: 1 / (1 + Math.exp(-score)) })) };
    },
  };
}

export const llamaServer: Dialect = {
  name: 'llama-server',
  servesOneModel: true,
  chat: true,
  completions: true,
  infill: false,
  images: false,
  embeddings: openaiEmbeddings(),
  rerank: logitScores(
    cohereRerank(
      (upstream) => upstream.rootPath('/rerank'),
      (options) => {
        refuseRerankExtras(options, 'llama-server');
        return {};
      },
    ),
  ),
  chatRequest(body, options) {
    thinkingAsTemplateKwargs(body, options);
  },
};
