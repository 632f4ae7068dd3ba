// A random-weight qwen3 chat model with the Qwen tokenizer and template: it loads and generates
// (gibberish) through node-llama-cpp. Used for size/speed benchmarks where content does not matter.
import { readFileSync } from 'node:fs';
import { BYTE_TO_UNICODE, TokenType, type ByteBpeVocab } from './byte-bpe.ts';
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
  /**
   * Also bias off (by endBias) every token that is not plain printable ASCII: byte tokens ≥ 0x80 (alone
   * they are invalid UTF-8, which llama-server answers with HTTP 500), control bytes and the tag tokens
   * (`<think>`, `<tool_call>`, …, which would send a server's reasoning or tool-call parser down another path).
   */
  asciiOnly?: boolean;
  /**
   * Total vocabulary size: the chat vocabulary is padded with generated lowercase ASCII words (" abc", …)
   * up to it, so sampling and the output layer cost what they cost on a real-size vocabulary (Qwen: 151,936).
   */
  vocabSize?: number;
}

/** Deterministic filler words: " aaa", " aab", … (three letters and up), skipping texts already in the vocabulary. */
function fillerWords(vocab: ByteBpeVocab, count: number): string[] {
  const words: string[] = [];
  for (let n = 0; words.length < count; n++) {
    let word = '';
    // Bijective base-26 from the first three-letter word on.
    for (let x = n + 26 + 26 * 26; x > 0; x = Math.floor((x - 1) / 26)) word = String.fromCharCode(97 + ((x - 1) % 26)) + word;
    const text = ` ${word}`;
    if (!vocab.has(text)) words.push(text);
  }
  return words;
}

const UNICODE_TO_BYTE = new Map(BYTE_TO_UNICODE.map((char, byte) => [char, byte]));

/** Whether a token prints as ASCII text: normal type, every byte printable or tab/newline. */
function isPlainAscii(token: { text: string; type: TokenType }): boolean {
  if (token.type !== TokenType.NORMAL) return false;
  for (const char of token.text) {
    const byte = UNICODE_TO_BYTE.get(char);
    if (byte === undefined || byte > 0x7e || (byte < 0x20 && byte !== 0x09 && byte !== 0x0a)) return false;
  }
  return true;
}

export function encodeRandomChatModel(o: RandomChatOptions): Buffer {
  let chatVocab = buildChatVocab([]);
  if (o.vocabSize !== undefined && o.vocabSize > chatVocab.vocab.size) {
    chatVocab = buildChatVocab([], fillerWords(chatVocab.vocab, o.vocabSize - chatVocab.vocab.size));
  }
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
  const suppressed = [chatVocab.special.imEnd, chatVocab.special.endOfText, chatVocab.special.imStart];
  if (o.asciiOnly) {
    const ends = new Set(suppressed);
    chatVocab.vocab.tokens.forEach((token, id) => {
      if (!ends.has(id) && !isPlainAscii(token)) suppressed.push(id);
    });
  }
  // qwen3 has no output bias, so the bias rides on a constant feature: hidden dimension 0 is 1 in every
  // token embedding and no layer writes to it, so after the final norm it is always positive and an
  // output row of -endBias on it (zero elsewhere) keeps the suppressed tokens far below everything else.
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
      for (const id of suppressed) {
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
