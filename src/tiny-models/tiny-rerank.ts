// The tiny reranker: BERT with the cls / cls.output head that llama.cpp's rank pooling reads. Its
// weights are written by hand so the score rises with the share of words that query and document
// have in common (a bag-of-words relevance, enough for "the relevant document ranks first" tests).
// The recipe is described in README.md.
import { buildWordPieceVocab, encodeBert, type BertConfig, type BertTensorSpec } from './bert.ts';
import { ENGLISH_WORDS } from './english-words.ts';
import { GgmlType } from './gguf-writer.ts';
import { mulberry32 } from './random.ts';

const HIDDEN = 128;
/** Dimensions 0..95 carry a word's identity (balanced ±1); 96..127 carry Walsh-pattern features. */
const IDENTITY = 96;
const EXTRA = HIDDEN - IDENTITY;
const WORD_START = '\u2581';

const config: BertConfig = {
  name: 'infera-tiny-bert-rerank',
  hidden: HIDDEN,
  layers: 2,
  heads: 1,
  feedForward: 32,
  contextLength: 512,
  reranker: true,
};

/** Walsh function k over the 32 extra dims: zero mean for k > 0, mutually orthogonal, norm² 32. */
const walsh = (k: number) => Float64Array.from({ length: EXTRA }, (_, j) => (popcount(k & j) % 2 ? -1 : 1));
const popcount = (n: number) => n.toString(2).replaceAll('0', '').length;
const PATTERN = { word: walsh(1), cls: walsh(2), duplicate: walsh(3), score: walsh(4), other: walsh(5) };

/** Attention score of a token for each copy of its own word (and for [CLS], the sink). */
const MATCH_SCORE = 42;
/** Layer 1: [CLS]'s score for whole-word tokens, so it averages over them only. */
const GATHER_SCORE = 40;
/** Score head: logit = OUT·tanh(SLOPE·(CENTER − mean duplicate share)). */
const CENTER = 0.46;
const SLOPE = 12;
const OUT = 4;

export function encodeTinyReranker(): Buffer {
  const vocab = buildWordPieceVocab();
  const words = new Set(ENGLISH_WORDS);
  const isWord = vocab.tokens.map((t) => t.startsWith(WORD_START) && words.has(t.slice(1)));
  const sqrtHead = Math.sqrt(HIDDEN);

  // Embeddings: whole words and other pieces get [identity, pattern] with norm² = 128 and mean 0, so
  // the embedding LayerNorm leaves them unchanged. [CLS] has no identity: it becomes [0, 2·cls].
  const embedding = (t: number): Float64Array => {
    const v = new Float64Array(HIDDEN);
    if (t === vocab.ids.cls) {
      v.set(PATTERN.cls, IDENTITY);
      return v;
    }
    const signs: number[] = Array.from({ length: IDENTITY }, (_, i) => (i < IDENTITY / 2 ? 1 : -1));
    const random = mulberry32(0x5eed + t);
    for (let i = signs.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [signs[i], signs[j]] = [signs[j]!, signs[i]!];
    }
    v.set(signs, 0);
    v.set(isWord[t] ? PATTERN.word : PATTERN.other, IDENTITY);
    return v;
  };

  const weights = (spec: BertTensorSpec): Float32Array => {
    const [cols, rows = 1] = spec.dims as [number, number?];
    const out = new Float32Array(cols * rows);
    const set = (row: number, col: number, value: number) => {
      out[row * cols + col] = value;
    };
    const setPattern = (row: number, pattern: Float64Array, scale: number) => {
      for (const [j, p] of pattern.entries()) set(row, IDENTITY + j, p * scale);
    };
    switch (spec.name) {
      case 'token_embd.weight':
        for (let t = 0; t < vocab.tokens.length; t++) {
          for (const [d, x] of embedding(t).entries()) set(t, d, x);
        }
        break;
      case 'token_embd_norm.weight':
      case 'blk.0.attn_output_norm.weight':
      case 'blk.0.layer_output_norm.weight':
      case 'blk.1.attn_output_norm.weight':
      case 'blk.1.layer_output_norm.weight':
        out.fill(1);
        break;
      // Layer 0: every token attends to the copies of its word and to [CLS]; only [CLS] has a
      // value, so a word with c copies receives 1/(c+1): 1/2 when unique, 1/3 when shared.
      case 'blk.0.attn_q.weight': {
        const alpha = (MATCH_SCORE * sqrtHead) / IDENTITY;
        for (let d = 0; d < IDENTITY; d++) set(d, d, alpha);
        const sink = Math.sqrt(MATCH_SCORE * sqrtHead);
        const any = PATTERN.word.map((w, j) => w + PATTERN.other[j]!);
        setPattern(IDENTITY, any, sink / EXTRA);
        break;
      }
      case 'blk.0.attn_k.weight':
        for (let d = 0; d < IDENTITY; d++) set(d, d, 1);
        setPattern(IDENTITY, PATTERN.cls, Math.sqrt(MATCH_SCORE * sqrtHead) / (2 * EXTRA));
        break;
      case 'blk.0.attn_v.weight':
        setPattern(0, PATTERN.cls, 1 / (2 * EXTRA));
        break;
      case 'blk.0.attn_output.weight':
        for (const [j, p] of PATTERN.duplicate.entries()) set(IDENTITY + j, 0, p / Math.sqrt(EXTRA));
        break;
      // Layer 1: [CLS] averages that share over the whole-word tokens.
      case 'blk.1.attn_q.weight':
        setPattern(0, PATTERN.cls, (GATHER_SCORE * sqrtHead) / (2 * EXTRA));
        break;
      case 'blk.1.attn_k.weight':
        setPattern(0, PATTERN.word, 1 / EXTRA);
        break;
      case 'blk.1.attn_v.weight':
        setPattern(0, PATTERN.duplicate, 1 / Math.sqrt(EXTRA));
        break;
      case 'blk.1.attn_output.weight':
        for (const [j, p] of PATTERN.score.entries()) set(IDENTITY + j, 0, p / Math.sqrt(EXTRA));
        break;
      // Head: read the mean share back off the score pattern, then logit = OUT·tanh(SLOPE·(CENTER − mean)).
      case 'cls.weight':
        setPattern(0, PATTERN.score, -SLOPE / Math.sqrt(EXTRA));
        break;
      case 'cls.bias':
        out[0] = SLOPE * CENTER;
        break;
      case 'cls.output.weight':
        out[0] = OUT;
        break;
      default:
        // Position and token-type embeddings, all biases and both FFNs stay zero: a bag of words.
        break;
    }
    return out;
  };

  return encodeBert({ config, weights, matrixType: GgmlType.F32 });
}
