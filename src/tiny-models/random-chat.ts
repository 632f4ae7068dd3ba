// A random-weight qwen3 chat model with the Qwen tokenizer and template: it loads and generates
// (gibberish) through node-llama-cpp. Used for size/speed benchmarks where content does not matter.
import { readFileSync } from 'node:fs';
import { buildChatVocab, chatTokenizerMetadata } from './chat-vocab.ts';
import { GgmlType } from './gguf-writer.ts';
import { encodeQwen3, randomQwen3Weights, type Qwen3Config, type TensorSpec } from './qwen3.ts';

export const QWEN3_CHAT_TEMPLATE = readFileSync(new URL('./qwen3-chat-template.jinja', import.meta.url), 'utf8');

export interface RandomChatOptions {
  hidden: number;
  layers: number;
  heads: number;
  headsKv: number;
  feedForward: number;
  seed: number;
  matrixType?: GgmlType;
  /** Logit bias on every end-of-generation token so decode runs to max_tokens. */
  endBias?: number;
}

export function encodeRandomChatModel(o: RandomChatOptions): Buffer {
  const chatVocab = buildChatVocab([]);
  const config: Qwen3Config = {
    name: `infera-random-qwen3-${o.hidden}x${o.layers}`,
    vocabSize: chatVocab.vocab.size,
    hidden: o.hidden,
    layers: o.layers,
    heads: o.heads,
    headsKv: o.headsKv,
    headDim: o.hidden / o.heads,
    feedForward: o.feedForward,
    contextLength: 32768,
    ropeFreqBase: 1_000_000,
    rmsEps: 1e-6,
  };
  const random = randomQwen3Weights(o.seed);
  const endIds = [chatVocab.special.imEnd, chatVocab.special.endOfText, chatVocab.special.imStart];
  // qwen3 has no output bias, so the bias rides on a constant feature: hidden dimension 0 is 1 in every
  // token embedding and no layer writes to it, so after the final norm it is always positive and an
  // output row of -endBias on it (zero elsewhere) keeps the end tokens far below everything else.
  const weights = (spec: TensorSpec) => {
    const data = random(spec);
    if (!o.endBias) return data;
    if (spec.name === 'token_embd.weight') {
      for (let t = 0; t < config.vocabSize; t++) data[t * o.hidden] = 1;
    } else if (spec.name.endsWith('attn_output.weight')) {
      data.fill(0, 0, config.heads * config.headDim);
    } else if (spec.name.endsWith('ffn_down.weight')) {
      data.fill(0, 0, o.feedForward);
    } else if (spec.name === 'output.weight') {
      for (const id of endIds) {
        data.fill(0, id * o.hidden, (id + 1) * o.hidden);
        data[id * o.hidden] = -o.endBias;
      }
    }
    return data;
  };
  return encodeQwen3({
    config,
    tokenizer: chatTokenizerMetadata(chatVocab),
    chatTemplate: QWEN3_CHAT_TEMPLATE,
    weights,
    matrixType: o.matrixType ?? GgmlType.Q8_0,
  });
}
