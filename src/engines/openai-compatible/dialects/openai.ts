// Any server that speaks OpenAI's API and nothing more is known about: every field goes as OpenAI
// names it, unknown client fields pass through, and the server itself judges them (its 400s come back
// naming the field). Rerank, if it has one, in the Jina / Cohere shape most servers copied.
import { badRequest } from '../../../errors/index.ts';
import { cohereRerank, type Dialect, openaiEmbeddings, refusePrefix, refuseRerankExtras } from './types.ts';

export const openai: Dialect = {
  name: 'openai',
  chat: true,
  completions: true,
  infill: false,
  images: true,
  embeddings: openaiEmbeddings(),
  rerank: cohereRerank(
    (upstream) => upstream.path('rerank'),
    (options) => {
      refuseRerankExtras(options, 'this upstream (dialect openai)');
      return {};
    },
  ),
  chatRequest(body, options) {
    refusePrefix(options, 'this upstream (dialect openai)');
    // OpenAI's own switch; a budget has no OpenAI field.
    if (options.thinking.enabled === false) body.reasoning_effort = 'none';
    if (options.thinking.budgetTokens !== undefined)
      throw badRequest('thinking_budget: is not supported by this upstream (dialect openai); use reasoning_effort.', 'thinking_budget');
  },
};
