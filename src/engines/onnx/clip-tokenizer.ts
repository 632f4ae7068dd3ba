// CLIP's byte-level BPE tokenizer, read from an export's tokenizer/ folder (vocab.json, merges.txt,
// tokenizer_config.json). Behaves like transformers' CLIPTokenizer without ftfy: lower-cased,
// whitespace-collapsed text, CLIP's pre-tokenizer regex, `</w>` end-of-word markers, BOS/EOS added,
// truncated and padded to model_max_length (77) with the pad token the export names (SD 2.x uses "!").
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

const PRETOKENIZE =
  /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+/giu;

function byteEncoder(): string[] {
  const isPrintable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const map: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) map[b] = isPrintable(b) ? String.fromCharCode(b) : String.fromCharCode(256 + extra++);
  return map;
}

/** Bytes of one word BPE merges at once (no vocabulary entry comes near it). */
const MAX_BPE_WORD = 256;

const HTML_ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", '#39': "'" };

export interface ClipTokenizerFiles {
  vocab: Record<string, number>;
  merges: string[];
  config?: { model_max_length?: number; pad_token?: string | { content: string }; bos_token?: string | { content: string }; eos_token?: string | { content: string } };
}

const tokenContent = (token: string | { content: string } | undefined) =>
  typeof token === 'object' && token !== null ? token.content : token;

export class ClipTokenizer {
  readonly maxLength: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  private readonly vocab: Map<string, number>;
  private readonly ranks = new Map<string, number>();
  private readonly cache = new Map<string, string[]>();
  private readonly bytes = byteEncoder();

  constructor(files: ClipTokenizerFiles) {
    this.vocab = new Map(Object.entries(files.vocab));
    const lines = files.merges.filter((line, index) => line.trim() && !(index === 0 && line.startsWith('#version')));
    for (const [rank, line] of lines.entries()) this.ranks.set(line.trim(), rank);
    const id = (token: string, what: string) => {
      const value = this.vocab.get(token);
      if (value === undefined) throw new Error(`tokenizer: ${what} token ${JSON.stringify(token)} is not in vocab.json`);
      return value;
    };
    this.maxLength = files.config?.model_max_length && files.config.model_max_length < 100_000 ? files.config.model_max_length : 77;
    this.bosId = id(tokenContent(files.config?.bos_token) ?? '<|startoftext|>', 'bos');
    this.eosId = id(tokenContent(files.config?.eos_token) ?? '<|endoftext|>', 'eos');
    this.padId = id(tokenContent(files.config?.pad_token) ?? '<|endoftext|>', 'pad');
  }

  static async fromFolder(dir: string): Promise<ClipTokenizer> {
    const [vocab, merges, config] = await Promise.all([
      readFile(join(dir, 'vocab.json'), 'utf8').then(JSON.parse),
      readFile(join(dir, 'merges.txt'), 'utf8').then((text) => text.split('\n')),
      readFile(join(dir, 'tokenizer_config.json'), 'utf8').then(JSON.parse).catch(() => undefined),
    ]);
    return new ClipTokenizer({ vocab, merges, config });
  }

  /**
   * Splits text into BPE pieces (strings as in vocab.json), without special tokens. Stops once `limit`
   * pieces are out: the text encoder reads 77 tokens, and BPE work on the rest of a long prompt (a
   * 300 KB one took seconds and overflowed the stack) is thrown away.
   */
  tokenize(text: string, limit = Number.POSITIVE_INFINITY): string[] {
    const cleaned = text
      .replace(/&(amp|lt|gt|quot|apos|#39);/g, (_, name: string) => HTML_ENTITIES[name] ?? _)
      .replace(/\s+/g, ' ')
      .trim()
      .toLowerCase();
    const pieces: string[] = [];
    for (const match of cleaned.matchAll(PRETOKENIZE)) {
      if (pieces.length >= limit) break;
      const word = match[0];
      if (word === '<|startoftext|>' || word === '<|endoftext|>') {
        pieces.push(word);
        continue;
      }
      const encoded = [...new TextEncoder().encode(word)].map((b) => this.bytes[b]!);
      // BPE is quadratic in the word's length; a "word" longer than any in the vocabulary is merged in
      // segments (only the last one carries the end-of-word marker).
      for (let start = 0; start < encoded.length && pieces.length < limit; start += MAX_BPE_WORD) {
        const end = Math.min(encoded.length, start + MAX_BPE_WORD);
        for (const piece of this.bpe(encoded.slice(start, end).join(''), end === encoded.length)) pieces.push(piece);
      }
    }
    return limit < pieces.length ? pieces.slice(0, limit) : pieces;
  }

  /** Token ids without BOS/EOS (at most `limit`). */
  encode(text: string, limit?: number): number[] {
    return this.tokenize(text, limit).map((piece) => this.vocab.get(piece) ?? this.eosId);
  }

  /** [BOS, ...ids, EOS, PAD...] of exactly maxLength ids; long prompts are truncated (EOS kept). */
  encodePadded(text: string): { ids: number[]; truncated: boolean } {
    const room = this.maxLength - 2;
    const ids = this.encode(text, room + 1);
    const truncated = ids.length > room;
    const out = [this.bosId, ...ids.slice(0, room), this.eosId];
    while (out.length < this.maxLength) out.push(this.padId);
    return { ids: out, truncated };
  }

  private bpe(token: string, wordEnd = true): string[] {
    const key = wordEnd ? token : `${token}\u0000`;
    const cached = this.cache.get(key);
    if (cached) return cached;
    const chars = [...token];
    let word = wordEnd ? [...chars.slice(0, -1), `${chars[chars.length - 1]}</w>`] : chars;
    while (word.length > 1) {
      let bestRank = Infinity;
      let best: [string, string] | undefined;
      for (let i = 0; i < word.length - 1; i++) {
        const rank = this.ranks.get(`${word[i]} ${word[i + 1]}`);
        if (rank !== undefined && rank < bestRank) [bestRank, best] = [rank, [word[i]!, word[i + 1]!]];
      }
      if (!best) break;
      const next: string[] = [];
      for (let i = 0; i < word.length; i++) {
        if (i < word.length - 1 && word[i] === best[0] && word[i + 1] === best[1]) {
          next.push(best[0] + best[1]);
          i++;
        } else next.push(word[i]!);
      }
      word = next;
    }
    if (this.cache.size < 10_000) this.cache.set(key, word);
    return word;
  }
}
