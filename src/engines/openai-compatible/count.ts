// Token counts Infera makes itself, for the answers of an upstream that reports no usage (TEI, some
// Ollama and llama-server answers, a stream cut before its usage chunk). With the model's tokenizer.json
// (`upstream.tokenizer`) they are exact for the text; without one they are estimates from its length.
// Either way the answer's warnings say so, and the ledger row keeps the sentence.
import { readFile } from 'node:fs/promises';

/** About this many characters a token: English BPE averages ~4; the estimate errs on the high side. */
const CHARS_PER_TOKEN = 3;

export interface TokenCounter {
  count(text: string): number;
  /** The ledger note for counts made with this counter. */
  readonly note: string;
}

export async function createCounter(upstreamLabel: string, tokenizerPath: string | undefined): Promise<TokenCounter> {
  if (tokenizerPath) {
    const { Tokenizer } = await import('@huggingface/tokenizers');
    const json = JSON.parse(await readFile(tokenizerPath, 'utf8')) as Record<string, unknown>;
    const tokenizer = new Tokenizer(json, {});
    return {
      count: (text) => (text === '' ? 0 : tokenizer.encode(text, { add_special_tokens: false }).ids.length),
      note: `${upstreamLabel} reported no usage: tokens counted by Infera with ${tokenizerPath}`,
    };
  }
  return {
    count: estimateTokens,
    note: `${upstreamLabel} reported no usage: tokens estimated by Infera from the text length (set upstream.tokenizer for exact counts)`,
  };
}

export function estimateTokens(text: string): number {
  return text === '' ? 0 : Math.ceil(text.length / CHARS_PER_TOKEN);
}
