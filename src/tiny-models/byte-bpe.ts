// Byte-level BPE vocabulary in the form llama.cpp's "gpt2" tokenizer reads: token texts are written in
// GPT-2's byte-to-unicode alphabet (space → "Ġ", newline → "Ċ"), merges are "left right" pairs in the
// same alphabet. With all 256 byte tokens present any UTF-8 text tokenizes; merges only decide which
// multi-byte tokens prompts can produce.
import { gguf, GgufValueType, type GgufMetadataValue } from './gguf-writer.ts';

/** llama.cpp token types (llama_token_type). */
export enum TokenType {
  NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  USER_DEFINED = 4,
  UNUSED = 5,
  BYTE = 6,
}

/** GPT-2's bytes_to_unicode table: printable bytes map to themselves, the rest to U+0100 upwards. */
export const BYTE_TO_UNICODE: readonly string[] = (() => {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const table: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    table[b] = printable.includes(b) ? String.fromCodePoint(b) : String.fromCodePoint(256 + extra++);
  }
  return table;
})();

/** Text → token text in the byte-level alphabet, e.g. " one" → "Ġone". */
export function toByteLevel(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) out += BYTE_TO_UNICODE[byte];
  return out;
}

export interface VocabToken {
  /** Plain text of the token (special tokens literally, e.g. "<|im_end|>"). */
  text: string;
  type: TokenType;
}

/**
 * Builds a vocabulary: 256 byte tokens first (id = position in GPT-2 byte order), then every token the
 * merges create, then the extra tokens in the order given. Throws on a duplicate token text, which
 * llama.cpp would reject at load time.
 */
export class ByteBpeVocab {
  readonly tokens: VocabToken[] = [];
  /** Merges in byte-level alphabet, rank order. */
  readonly merges: string[] = [];
  private readonly ids = new Map<string, number>();

  constructor() {
    for (let b = 0; b < 256; b++) this.addRaw(BYTE_TO_UNICODE[b]!, TokenType.NORMAL);
  }

  /** Adds merges so that `word` (plain text) becomes one token; every prefix becomes a token too. */
  addWord(word: string): number {
    const chars = [...toByteLevel(word)];
    let left = chars[0]!;
    for (const next of chars.slice(1)) {
      const merged = left + next;
      if (!this.ids.has(merged)) {
        this.merges.push(`${left} ${next}`);
        this.addRaw(merged, TokenType.NORMAL);
      }
      left = merged;
    }
    return this.ids.get(left)!;
  }

  /** Adds one merge of two existing tokens (plain text), e.g. ["_", "weather"]. */
  addMerge(left: string, right: string): number {
    const a = toByteLevel(left);
    const b = toByteLevel(right);
    if (!this.ids.has(a) || !this.ids.has(b)) throw new Error(`merge of unknown tokens ${left} + ${right}`);
    this.merges.push(`${a} ${b}`);
    return this.addRaw(a + b, TokenType.NORMAL);
  }

  /** A token no merge produces: a special token (literal text) or a whole-string output token. */
  addToken(text: string, type: TokenType): number {
    const stored = type === TokenType.CONTROL || type === TokenType.USER_DEFINED ? text : toByteLevel(text);
    return this.addRaw(stored, type);
  }

  id(text: string): number {
    const id = this.ids.get(toByteLevel(text)) ?? this.ids.get(text);
    if (id === undefined) throw new Error(`no token ${JSON.stringify(text)}`);
    return id;
  }

  has(text: string): boolean {
    return this.ids.has(toByteLevel(text)) || this.ids.has(text);
  }

  get size(): number {
    return this.tokens.length;
  }

  private addRaw(stored: string, type: TokenType): number {
    if (this.ids.has(stored)) throw new Error(`duplicate token ${JSON.stringify(stored)}`);
    const id = this.tokens.length;
    this.tokens.push({ text: stored, type });
    this.ids.set(stored, id);
    return id;
  }

  /** GGUF metadata for the tokenizer (model "gpt2", pre "qwen2"). */
  metadata(ids: { bos: number; eos: number; pad: number }): Record<string, GgufMetadataValue> {
    return {
      'tokenizer.ggml.model': 'gpt2',
      'tokenizer.ggml.pre': 'qwen2',
      'tokenizer.ggml.tokens': this.tokens.map((t) => t.text),
      'tokenizer.ggml.token_type': gguf.array(
        GgufValueType.INT32,
        this.tokens.map((t) => t.type),
      ),
      'tokenizer.ggml.merges': this.merges,
      'tokenizer.ggml.bos_token_id': gguf.u32(ids.bos),
      'tokenizer.ggml.eos_token_id': gguf.u32(ids.eos),
      'tokenizer.ggml.padding_token_id': gguf.u32(ids.pad),
      'tokenizer.ggml.add_bos_token': false,
    };
  }
}
