// vLLM and SGLang: OpenAI's API plus their own switches. Thinking goes to the chat template
// (`chat_template_kwargs`, which Qwen3-style templates read); prefix completion is
// `continue_final_message`. Reasoning comes back as `reasoning_content` (older) or `reasoning` (newer,
// with --reasoning-parser), or as raw `<think>` text without one (the engine's parsers split it). Usage
// comes in the stream when asked with stream_options, which the engine always does.
import { cohereRerank, type Dialect, openaiEmbeddings, prefixAsContinue, refuseRerankExtras, thinkingAsTemplateKwargs } from './types.ts';

const make = (name: 'vllm' | 'sglang'): Dialect => ({
  name,
  chat: true,
  completions: true,
  // vLLM refuses `suffix` ("suffix is not currently supported").
  infill: false,
  images: false,
  embeddings: openaiEmbeddings(),
  rerank: cohereRerank(
    (upstream) => upstream.path('rerank'),
    (options) => {
      refuseRerankExtras(options, name === 'vllm' ? 'vLLM' : 'SGLang');
      return {};
    },
  ),
  chatRequest(body, options) {
    thinkingAsTemplateKwargs(body, options);
    prefixAsContinue(body, options);
  },
});

export const vllm = make('vllm');
export const sglang = make('sglang');
