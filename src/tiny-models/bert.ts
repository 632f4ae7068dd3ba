// BERT-architecture GGUF assembly (llama.cpp's src/models/bert.cpp): WordPiece vocabulary, embedding
// models (mean pooling) and rerankers (the cls / cls.output classification head).
import { encodeGguf, GgmlType, gguf, GgufValueType, type GgufTensor } from './gguf-writer.ts';
import { TokenType } from './byte-bpe.ts';
import { ENGLISH_SUFFIXES, ENGLISH_WORDS } from './english-words.ts';
import { mulberry32, randomUniform, seedFromName } from './random.ts';

/** llama.cpp's WPM tokenizer marks word-initial pieces with U+2581; continuations carry no "##". */
const WORD_START = '\u2581';

export interface WordPieceVocab {
  tokens: string[];
  types: TokenType[];
  ids: { pad: number; unk: number; cls: number; sep: number; mask: number };
}

export function buildWordPieceVocab(): WordPieceVocab {
  const tokens = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'];
  const types = tokens.map(() => TokenType.CONTROL);
  const seen = new Set(tokens);
  const add = (token: string) => {
    if (seen.has(token)) return;
    seen.add(token);
    tokens.push(token);
    types.push(TokenType.NORMAL);
  };
  const singles = [...'abcdefghijklmnopqrstuvwxyz0123456789', ...'!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~'];
  for (const ch of singles) add(WORD_START + ch);
  for (const ch of 'abcdefghijklmnopqrstuvwxyz0123456789') add(ch);
  for (const word of ENGLISH_WORDS) add(WORD_START + word);
  for (const suffix of ENGLISH_SUFFIXES) add(suffix);
  return { tokens, types, ids: { pad: 0, unk: 1, cls: 2, sep: 3, mask: 4 } };
}

export interface BertConfig {
  name: string;
  hidden: number;
  layers: number;
  heads: number;
  feedForward: number;
  contextLength: number;
  /** Adds the reranker head (cls, cls.output) instead of mean pooling. */
  reranker: boolean;
}

export interface BertTensorSpec {
  name: string;
  dims: number[];
  kind: 'embedding' | 'position' | 'type' | 'norm-weight' | 'bias' | 'matrix';
}

export function bertTensorSpecs(c: BertConfig, vocabSize: number): BertTensorSpec[] {
  const h = c.hidden;
  const specs: BertTensorSpec[] = [
    { name: 'token_embd.weight', dims: [h, vocabSize], kind: 'embedding' },
    { name: 'token_types.weight', dims: [h, 2], kind: 'type' },
    { name: 'position_embd.weight', dims: [h, c.contextLength], kind: 'position' },
    { name: 'token_embd_norm.weight', dims: [h], kind: 'norm-weight' },
    { name: 'token_embd_norm.bias', dims: [h], kind: 'bias' },
  ];
  for (let i = 0; i < c.layers; i++) {
    const p = `blk.${i}.`;
    for (const m of ['attn_q', 'attn_k', 'attn_v', 'attn_output']) {
      specs.push({ name: `${p}${m}.weight`, dims: [h, h], kind: 'matrix' }, { name: `${p}${m}.bias`, dims: [h], kind: 'bias' });
    }
    specs.push(
      { name: `${p}attn_output_norm.weight`, dims: [h], kind: 'norm-weight' },
      { name: `${p}attn_output_norm.bias`, dims: [h], kind: 'bias' },
      { name: `${p}ffn_up.weight`, dims: [h, c.feedForward], kind: 'matrix' },
      { name: `${p}ffn_up.bias`, dims: [c.feedForward], kind: 'bias' },
      { name: `${p}ffn_down.weight`, dims: [c.feedForward, h], kind: 'matrix' },
      { name: `${p}ffn_down.bias`, dims: [h], kind: 'bias' },
      { name: `${p}layer_output_norm.weight`, dims: [h], kind: 'norm-weight' },
      { name: `${p}layer_output_norm.bias`, dims: [h], kind: 'bias' },
    );
  }
  if (c.reranker) {
    specs.push(
      { name: 'cls.weight', dims: [h, h], kind: 'matrix' },
      { name: 'cls.bias', dims: [h], kind: 'bias' },
      { name: 'cls.output.weight', dims: [h, 1], kind: 'matrix' },
      { name: 'cls.output.bias', dims: [1], kind: 'bias' },
    );
  }
  return specs;
}

export interface BertBuild {
  config: BertConfig;
  weights: (spec: BertTensorSpec) => Float32Array;
  /** Type for the big matrices; embeddings of positions and token types always stay F32 (F16 there
   * aborts the process in llama.cpp's CPU get_rows+add path). */
  matrixType: GgmlType;
}

export function encodeBert(build: BertBuild): Buffer {
  const { config: c } = build;
  const vocab = buildWordPieceVocab();
  const metadata = {
    'general.architecture': 'bert',
    'general.name': c.name,
    'general.license': 'MIT',
    'bert.context_length': gguf.u32(c.contextLength),
    'bert.embedding_length': gguf.u32(c.hidden),
    'bert.block_count': gguf.u32(c.layers),
    'bert.feed_forward_length': gguf.u32(c.feedForward),
    'bert.attention.head_count': gguf.u32(c.heads),
    'bert.attention.layer_norm_epsilon': gguf.f32(1e-12),
    'bert.attention.causal': false,
    ...(c.reranker ? {} : { 'bert.pooling_type': gguf.u32(1) }),
    'tokenizer.ggml.model': 'bert',
    'tokenizer.ggml.pre': 'default',
    'tokenizer.ggml.token_type_count': gguf.u32(2),
    'tokenizer.ggml.tokens': vocab.tokens,
    'tokenizer.ggml.token_type': gguf.array(GgufValueType.INT32, vocab.types),
    'tokenizer.ggml.padding_token_id': gguf.u32(vocab.ids.pad),
    'tokenizer.ggml.unknown_token_id': gguf.u32(vocab.ids.unk),
    // llama.cpp reads [CLS] as the BOS id (it ignores cls_token_id); rank pooling reads its row.
    'tokenizer.ggml.bos_token_id': gguf.u32(vocab.ids.cls),
    'tokenizer.ggml.cls_token_id': gguf.u32(vocab.ids.cls),
    'tokenizer.ggml.seperator_token_id': gguf.u32(vocab.ids.sep),
    'tokenizer.ggml.mask_token_id': gguf.u32(vocab.ids.mask),
  };
  const tensors: GgufTensor[] = bertTensorSpecs(c, vocab.tokens.length).map((spec) => ({
    name: spec.name,
    dims: spec.dims,
    type: spec.kind === 'matrix' || spec.kind === 'embedding' ? build.matrixType : GgmlType.F32,
    data: build.weights(spec),
  }));
  return encodeGguf({ metadata, tensors });
}

/**
 * Seeded random weights. Token embeddings are large next to everything the layers add, so the output
 * stays close to a bag of words: texts that share words get similar mean-pooled vectors.
 */
export function randomBertWeights(seed: number, layerScale = 0.02): (spec: BertTensorSpec) => Float32Array {
  return (spec) => {
    const length = spec.dims.reduce((a, b) => a * b, 1);
    const random = mulberry32(seedFromName(spec.name, seed));
    switch (spec.kind) {
      case 'norm-weight':
        return new Float32Array(length).fill(1);
      case 'bias':
        return new Float32Array(length);
      case 'embedding':
        return randomUniform(random, length, 1);
      case 'position':
      case 'type':
        return randomUniform(random, length, 0.02);
      case 'matrix':
        return randomUniform(random, length, layerScale * Math.sqrt(3));
    }
  };
}
