// The Qwen-style byte-level vocabulary shared by the scripted chat model and the benchmark chat model.
import { ByteBpeVocab, TokenType } from './byte-bpe.ts';

/** Qwen3's special tokens: ChatML markers are control tokens, the tag tokens are user-defined (Qwen3
 * marks them special=false, so llama.cpp matches them in plain text too and prints them). */
export const CHAT_SPECIAL_TOKENS = {
  endOfText: '<|endoftext|>',
  imStart: '<|im_start|>',
  imEnd: '<|im_end|>',
  thinkStart: '<think>',
  thinkEnd: '</think>',
  toolCallStart: '<tool_call>',
  toolCallEnd: '</tool_call>',
  toolResponseStart: '<tool_response>',
  toolResponseEnd: '</tool_response>',
} as const;

const CONTROL = new Set<string>([CHAT_SPECIAL_TOKENS.endOfText, CHAT_SPECIAL_TOKENS.imStart, CHAT_SPECIAL_TOKENS.imEnd]);

/** Words that prompts tokenize to single tokens (ChatML roles, common "\n\n"). */
const COMMON_WORDS = ['system', 'user', 'assistant', 'tool'];

export interface ChatVocab {
  vocab: ByteBpeVocab;
  special: Record<keyof typeof CHAT_SPECIAL_TOKENS, number>;
}

/**
 * Bytes, the merges for `words` (each also with a leading space, the way GPT-2-style pre-tokenizers
 * split words), "\n\n", the special tokens, then `extraTokens` as whole-string tokens.
 */
export function buildChatVocab(words: readonly string[], extraTokens: readonly string[] = []): ChatVocab {
  const vocab = new ByteBpeVocab();
  vocab.addWord('\n\n');
  for (const word of [...COMMON_WORDS, ...words]) {
    vocab.addWord(word);
    if (!vocab.has(` ${word}`)) vocab.addMerge(' ', word);
  }
  const special = {} as Record<keyof typeof CHAT_SPECIAL_TOKENS, number>;
  for (const [key, text] of Object.entries(CHAT_SPECIAL_TOKENS) as [keyof typeof CHAT_SPECIAL_TOKENS, string][]) {
    special[key] = vocab.addToken(text, CONTROL.has(text) ? TokenType.CONTROL : TokenType.USER_DEFINED);
  }
  for (const text of extraTokens) vocab.addToken(text, TokenType.NORMAL);
  return { vocab, special };
}

export function chatTokenizerMetadata({ vocab, special }: ChatVocab) {
  return vocab.metadata({ bos: special.endOfText, eos: special.imEnd, pad: special.endOfText });
}
