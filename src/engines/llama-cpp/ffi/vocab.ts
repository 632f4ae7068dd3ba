// The tokenizer of a model loaded by the FFI runner, read through its own llama_vocab: what the chat
// wrappers, the chat planner and text completion used to get from node-llama-cpp's vocabulary-only
// LlamaModel. With this the engine process neither loads node-llama-cpp's addon (getLlama test-loads it
// in a child process first: ~1 s of CPU) nor reads the GGUF a second time. The behaviour is
// node-llama-cpp 3.21.1's LlamaModel (tokenize, detokenize, its special-token rules and the
// "trimLeadingSpace" workaround), over the same llama.cpp calls its addon makes (common_tokenize with
// add_special off, llama_detokenize without removing specials); ffi-vocab.test.ts compares the two.
import type { Token, Tokenizer } from 'node-llama-cpp';
import type { LlamaBindings, Pointer } from './library.ts';

/** llama.h enum llama_vocab_type, in node-llama-cpp's names (LlamaVocabularyType). */
const VOCAB_TYPES = ['none', 'spm', 'bpe', 'wpm', 'ugm', 'rwkv', 'plamo2'] as const;
/** llama.h enum llama_token_attr. */
const ATTR_UNKNOWN = 1 << 0;
const ATTR_CONTROL = 1 << 3;

export class FfiVocab {
  readonly vocabularyType: string;
  readonly vocabularySize: number;
  readonly tokens: {
    bos: Token | null;
    eos: Token | null;
    eot: Token | null;
    nl: Token | null;
    sep: Token | null;
    bosString: string | null;
    eosString: string | null;
    eotString: string | null;
    nlString: string | null;
    shouldPrependBosToken: boolean;
    infill: { prefix: Token | null; suffix: Token | null; middle: Token | null };
  };
  /** node-llama-cpp's Tokenizer shape (a function with detokenize, isSpecialToken and isEogToken), for LlamaText and the chat wrappers. */
  readonly tokenizer: Tokenizer;

  constructor(
    private readonly api: LlamaBindings,
    private vocab: Pointer,
  ) {
    this.vocabularyType = VOCAB_TYPES[api.llama_vocab_type(vocab) as number] ?? 'none';
    this.vocabularySize = api.llama_vocab_n_tokens(vocab) as number;
    // The addon's rules: BOS/EOS count only as control tokens, the others only when not unknown.
    const control = (token: number) => (token >= 0 && (this.attr(token) & ATTR_CONTROL) !== 0 ? (token as Token) : null);
    const known = (token: number) => (token >= 0 && (this.attr(token) & ATTR_UNKNOWN) === 0 ? (token as Token) : null);
    const text = (token: Token | null) => (token === null ? null : ((api.llama_vocab_get_text(vocab, token) as string | null) ?? null));
    const bos = control(api.llama_vocab_bos(vocab) as number);
    const eos = control(api.llama_vocab_eos(vocab) as number);
    const eot = known(api.llama_vocab_eot(vocab) as number);
    const nl = known(api.llama_vocab_nl(vocab) as number);
    this.tokens = {
      bos,
      eos,
      eot,
      nl,
      sep: known(api.llama_vocab_sep(vocab) as number),
      bosString: text(bos),
      eosString: text(eos),
      eotString: text(eot),
      nlString: text(nl),
      shouldPrependBosToken: bos !== null && (api.llama_vocab_get_add_bos(vocab) as boolean),
      infill: {
        prefix: known(api.llama_vocab_fim_pre(vocab) as number),
        suffix: known(api.llama_vocab_fim_suf(vocab) as number),
        middle: known(api.llama_vocab_fim_mid(vocab) as number),
      },
    };
    const tokenize = ((text: string, specialTokens?: boolean | 'builtin', options?: 'trimLeadingSpace') =>
      this.tokenize(text, specialTokens, options)) as Tokenizer;
    Object.assign(tokenize, {
      detokenize: (tokens: readonly Token[], specialTokens?: boolean, lastTokens?: readonly Token[]) => this.detokenize(tokens, specialTokens, lastTokens),
      isSpecialToken: (token: Token) => this.isSpecialToken(token),
      isEogToken: (token: Token) => this.isEogToken(token),
    });
    this.tokenizer = Object.freeze(tokenize);
  }

  /**
   * Reads from another llama_vocab of the same GGUF from now on (the chat wrappers keep this tokenizer:
   * the vocabulary-only model they were resolved with is freed once the runner's model is loaded).
   */
  rebind(vocab: Pointer): void {
    this.vocab = vocab;
  }

  private attr(token: number): number {
    return this.api.llama_vocab_get_attr(this.vocab, token) as number;
  }

  isEogToken(token: Token): boolean {
    return this.api.llama_vocab_is_eog(this.vocab, token) as boolean;
  }

  isSpecialToken(token: Token | undefined): boolean {
    if (token == null) return false;
    if ((this.attr(token) & ATTR_CONTROL) !== 0 || this.isEogToken(token)) return true;
    if (this.detokenize([token], false) === '') return this.detokenize([token], true) !== '';
    return false;
  }

  /** llama.cpp's tokenizer as node-llama-cpp's addon calls it (common_tokenize, add_special off). */
  private raw(text: string, parseSpecial: boolean): Token[] {
    const bytes = Buffer.from(text, 'utf8');
    let out = new Int32Array(bytes.length + 2);
    let count = this.api.llama_tokenize(this.vocab, bytes, bytes.length, out, out.length, false, parseSpecial) as number;
    if (count < 0) {
      out = new Int32Array(-count);
      count = this.api.llama_tokenize(this.vocab, bytes, bytes.length, out, out.length, false, parseSpecial) as number;
    }
    return Array.from(out.subarray(0, count)) as Token[];
  }

  /** node-llama-cpp's LlamaModel.tokenize, line for line. */
  tokenize(text: string, specialTokens: boolean | 'builtin' = false, options?: 'trimLeadingSpace'): Token[] {
    if (text === '') return [];
    if (specialTokens === 'builtin') {
      const pick = { BOS: this.tokens.bos, EOS: this.tokens.eos, NL: this.tokens.nl, EOT: this.tokens.eot, SEP: this.tokens.sep }[text];
      if (pick === undefined) throw new Error(`Unknown builtin special token: ${text}`);
      return pick === null ? [] : [pick];
    }
    if (options === 'trimLeadingSpace') {
      const leadingSpaces = (value: string) => value.length - value.replace(/^ +/, '').length;
      const newline = '\n';
      if (specialTokens) {
        const textLeadingSpaces = leadingSpaces(text);
        const { bos, bosString, eos, eosString, nl, nlString, eot, eotString } = this.tokens;
        const [workaroundToken, workaroundString] =
          bos != null && bosString != null
            ? [bos, bosString]
            : eos != null && eosString != null
              ? [eos, eosString]
              : nl != null && nlString != null
                ? [nl, nlString]
                : eot != null && eotString != null
                  ? [eot, eotString]
                  : [null, null];
        if (workaroundToken != null && workaroundString != null) {
          const tokens = this.raw(workaroundString + text, true);
          const at = tokens.indexOf(workaroundToken);
          if (at >= 0 && at <= 1) {
            tokens.splice(0, at + 1);
            if (leadingSpaces(this.detokenize(tokens, true)) === textLeadingSpaces) return tokens;
          }
        }
        const workaroundTokens = this.raw(newline, true);
        if (text.startsWith(newline)) {
          const tokens = this.raw(text, true);
          if (this.detokenize(tokens, true).startsWith(newline)) return tokens;
        }
        const tokens = this.raw(newline + text, true);
        if (workaroundTokens.length > 0 && workaroundTokens.every((token, index) => tokens[index] === token)) {
          tokens.splice(0, workaroundTokens.length);
          if (leadingSpaces(this.detokenize(tokens, true)) === textLeadingSpaces) return tokens;
        }
      } else {
        const workaroundTokens = this.raw(newline, false);
        if (text.startsWith(newline)) {
          const tokens = this.raw(text, false);
          if (this.detokenize(tokens, false).startsWith(newline)) return tokens;
        }
        const tokens = this.raw(newline + text, false);
        if (workaroundTokens.length > 0 && workaroundTokens.every((token, index) => tokens[index] === token)) {
          tokens.splice(0, workaroundTokens.length);
          return tokens;
        }
      }
    }
    return this.raw(text, Boolean(specialTokens));
  }

  private rawDetokenize(tokens: readonly Token[], specialTokens: boolean): string {
    const ids = Int32Array.from(tokens);
    let out = Buffer.alloc(Math.max(16, tokens.length));
    let length = this.api.llama_detokenize(this.vocab, ids, ids.length, out, out.length, false, specialTokens) as number;
    if (length < 0) {
      out = Buffer.alloc(-length);
      length = this.api.llama_detokenize(this.vocab, ids, ids.length, out, out.length, false, specialTokens) as number;
    }
    return out.toString('utf8', 0, Math.max(0, length));
  }

  /** node-llama-cpp's LlamaModel.detokenize (with its lastTokens continuation rule). */
  detokenize(tokens: readonly Token[], specialTokens = false, lastTokens?: readonly Token[]): string {
    if (tokens.length === 0) return '';
    if (lastTokens == null || lastTokens.length === 0) return this.rawDetokenize(tokens, specialTokens);
    const added = lastTokens.slice(-3); // node-llama-cpp maxRecentDetokenizerTokens
    const addedText = this.rawDetokenize(added, specialTokens);
    if (addedText === '') return this.rawDetokenize(tokens, specialTokens);
    const text = this.rawDetokenize([...added, ...tokens], specialTokens);
    if (text.startsWith(addedText)) return text.slice(addedText.length);
    return this.rawDetokenize(tokens, specialTokens);
  }
}

/**
 * A model's GGUF metadata by key, as llama.cpp keeps it after loading (even a vocabulary-only model):
 * every value that is not an array, as a string (numbers in decimal). Undefined for a missing key.
 */
export function metadataFromModel(api: LlamaBindings, model: Pointer): (key: string) => string | undefined {
  return (key) => {
    let buffer = Buffer.alloc(256);
    let length = api.llama_model_meta_val_str(model, key, buffer, buffer.length) as number;
    if (length < 0) return undefined;
    // The length of the whole value, when it did not fit (snprintf's contract).
    if (length >= buffer.length) {
      buffer = Buffer.alloc(length + 1);
      length = api.llama_model_meta_val_str(model, key, buffer, buffer.length) as number;
    }
    return buffer.toString('utf8', 0, length);
  };
}
