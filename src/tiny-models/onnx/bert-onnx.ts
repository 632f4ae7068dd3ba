// The BERT models of ../bert.ts as an ONNX export in the layout optimum / sentence-transformers write
// (model.onnx taking input_ids, attention_mask, token_type_ids; tokenizer.json; config.json; and for
// embedding models 1_Pooling/config.json). Built from the same tensors as the GGUF twin, so one text
// embedded by llama.cpp and by ONNX Runtime must give (nearly) the same vector: that is what lets
// tests check the ONNX engine against the llama.cpp one instead of against numbers we made up.
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { bertTensorSpecs, buildWordPieceVocab, randomBertWeights, type BertConfig, type BertTensorSpec } from '../bert.ts';
import { writeOnnxModel, type GraphSpec, type Initializer, type NodeSpec } from './onnx-writer.ts';

export interface OnnxBertBuild {
  config: BertConfig;
  weights: (spec: BertTensorSpec) => Float32Array;
}

const WORD_START = '\u2581';

/**
 * The GGUF vocabulary in Hugging Face's WordPiece spelling: llama.cpp marks word-initial pieces with
 * U+2581 and leaves continuations bare; tokenizer.json leaves word-initial pieces bare and prefixes
 * continuations with "##". Ids are unchanged.
 */
export function huggingFaceVocab(): Record<string, number> {
  const vocab = buildWordPieceVocab();
  const out: Record<string, number> = {};
  vocab.tokens.forEach((token, id) => {
    const control = token.startsWith('[') && token.endsWith(']') && id <= vocab.ids.mask;
    const name = control ? token : token.startsWith(WORD_START) ? token.slice(WORD_START.length) : `##${token}`;
    out[name] = id;
  });
  return out;
}

/** A BertTokenizerFast tokenizer.json (lowercasing, [CLS] A [SEP] B [SEP] with type ids 0/1). */
export function bertTokenizerJson(maxLength: number): object {
  const ids = buildWordPieceVocab().ids;
  const special = (content: string, id: number) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [
      special('[PAD]', ids.pad),
      special('[UNK]', ids.unk),
      special('[CLS]', ids.cls),
      special('[SEP]', ids.sep),
      special('[MASK]', ids.mask),
    ],
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '[SEP]', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: '[CLS]', type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '[SEP]', type_id: 0 } },
        { Sequence: { id: 'B', type_id: 1 } },
        { SpecialToken: { id: '[SEP]', type_id: 1 } },
      ],
      special_tokens: {
        '[CLS]': { id: '[CLS]', ids: [ids.cls], tokens: ['[CLS]'] },
        '[SEP]': { id: '[SEP]', ids: [ids.sep], tokens: ['[SEP]'] },
      },
    },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: {
      type: 'WordPiece',
      unk_token: '[UNK]',
      continuing_subword_prefix: '##',
      max_input_chars_per_word: 100,
      vocab: huggingFaceVocab(),
    },
    // Not read by tokenizers; kept so the file says what it was made for.
    infera: { model_max_length: maxLength },
  };
}

/** ONNX graph of BertModel (last_hidden_state) or BertForSequenceClassification with one label (logits). */
export function bertOnnxGraph(build: OnnxBertBuild): GraphSpec {
  const c = build.config;
  const h = c.hidden;
  const headSize = h / c.heads;
  const vocabSize = buildWordPieceVocab().tokens.length;
  const specs = new Map(bertTensorSpecs(c, vocabSize).map((spec) => [spec.name, spec]));
  const initializers: Initializer[] = [];
  const nodes: NodeSpec[] = [];

  // GGUF stores a matrix as [out][in] rows (ne0 = in); MatMul(x, W) wants W as [in][out].
  const tensor = (name: string, transpose = false): string => {
    const spec = specs.get(name);
    if (!spec) throw new Error(`bert-onnx: no tensor ${name}`);
    const data = build.weights(spec);
    const [inner, outer = 1] = spec.dims;
    if (spec.kind === 'embedding' || spec.kind === 'position' || spec.kind === 'type')
      initializers.push({ name, type: 'float32', dims: [outer, inner], values: data });
    else if (spec.dims.length === 1) initializers.push({ name, type: 'float32', dims: [inner], values: data });
    else {
      if (!transpose) throw new Error(`bert-onnx: matrix ${name} needs transposing`);
      const t = new Float32Array(data.length);
      for (let o = 0; o < outer; o++) for (let i = 0; i < inner; i++) t[i * outer + o] = data[o * inner + i];
      initializers.push({ name, type: 'float32', dims: [inner, outer], values: t });
    }
    return name;
  };
  const constant = (name: string, type: 'float32' | 'int64', dims: number[], values: number[]) => {
    initializers.push({ name, type, dims, values });
    return name;
  };
  const node = (op: string, inputs: string[], output: string, attributes?: NodeSpec['attributes']) => {
    nodes.push({ op, inputs, outputs: [output], attributes });
    return output;
  };
  const layerNorm = (x: string, prefix: string, out: string) =>
    node('LayerNormalization', [x, tensor(`${prefix}.weight`), tensor(`${prefix}.bias`)], out, { axis: -1, epsilon: 1e-12 });
  const linear = (x: string, prefix: string, out: string) =>
    node('Add', [node('MatMul', [x, tensor(`${prefix}.weight`, true)], `${out}_mm`), tensor(`${prefix}.bias`)], out);

  // Embeddings: word + token type + position (positions 0..seq-1, sliced by the input's length).
  const seqLength = node('Slice', [node('Shape', ['input_ids'], 'ids_shape'), constant('one_i', 'int64', [1], [1]), constant('two_i', 'int64', [1], [2])], 'seq_len');
  const positions = node('Slice', [tensor('position_embd.weight'), constant('zero_i', 'int64', [1], [0]), seqLength, constant('axis0', 'int64', [1], [0])], 'positions');
  const words = node('Gather', [tensor('token_embd.weight'), 'input_ids'], 'words', { axis: 0 });
  const types = node('Gather', [tensor('token_types.weight'), 'token_type_ids'], 'types', { axis: 0 });
  const embedded = node('Add', [node('Add', [words, types], 'words_types'), positions], 'embedded');
  let x = layerNorm(embedded, 'token_embd_norm', 'x_0');

  // Padding positions get a large negative score before softmax, spelled the way transformers'
  // get_extended_attention_mask exports it (mask[:, None, None, :] → float → (1 - m) * finfo.min) and
  // the scores divided by sqrt(head size) as BertSelfAttention does: the subgraph ONNX Runtime's
  // transformer optimizer recognises and fuses into one Attention node, as it does a real optimum export.
  const maskBias = node(
    'Mul',
    [
      node(
        'Sub',
        [
          constant('one_f', 'float32', [], [1]),
          node(
            'Cast',
            [node('Unsqueeze', [node('Unsqueeze', ['attention_mask', constant('mask_axis1', 'int64', [1], [1])], 'mask_u1'), constant('mask_axis2', 'int64', [1], [2])], 'mask_u2')],
            'mask_f',
            { to: 1 },
          ),
        ],
        'mask_inv',
      ),
      constant('mask_min', 'float32', [], [-3.4028234663852886e38]),
    ],
    'mask_bias',
  );
  const splitHeads = constant('split_heads', 'int64', [4], [0, 0, c.heads, headSize]);
  const mergeHeads = constant('merge_heads', 'int64', [3], [0, 0, h]);
  const scale = constant('attn_scale', 'float32', [], [Math.sqrt(headSize)]);
  const sqrt2 = constant('sqrt2', 'float32', [], [Math.SQRT2]);
  const half = constant('half', 'float32', [], [0.5]);

  for (let l = 0; l < c.layers; l++) {
    const p = `blk.${l}`;
    const heads = (name: string, perm: number[]) =>
      node('Transpose', [node('Reshape', [linear(x, `${p}.${name}`, `${p}_${name}`), splitHeads], `${p}_${name}_split`)], `${p}_${name}_heads`, { perm });
    const q = heads('attn_q', [0, 2, 1, 3]);
    const k = heads('attn_k', [0, 2, 3, 1]);
    const v = heads('attn_v', [0, 2, 1, 3]);
    const scores = node('Add', [node('Div', [node('MatMul', [q, k], `${p}_qk`), scale], `${p}_qk_scaled`), maskBias], `${p}_scores`);
    const probs = node('Softmax', [scores], `${p}_probs`, { axis: -1 });
    const context = node('Reshape', [node('Transpose', [node('MatMul', [probs, v], `${p}_ctx_heads`)], `${p}_ctx_t`, { perm: [0, 2, 1, 3] }), mergeHeads], `${p}_ctx`);
    const attended = node('Add', [linear(context, `${p}.attn_output`, `${p}_attn_out`), x], `${p}_attn_res`);
    const x1 = layerNorm(attended, `${p}.attn_output_norm`, `${p}_x1`);
    const up = linear(x1, `${p}.ffn_up`, `${p}_up`);
    // GELU, erf form (what BERT checkpoints use): x * 0.5 * (1 + erf(x / sqrt 2))
    const erf = node('Erf', [node('Div', [up, sqrt2], `${p}_up_div`)], `${p}_erf`);
    const gelu = node('Mul', [node('Mul', [up, node('Add', [erf, constant(`${p}_one`, 'float32', [], [1])], `${p}_erf1`)], `${p}_gelu_a`), half], `${p}_gelu`);
    const down = node('Add', [linear(gelu, `${p}.ffn_down`, `${p}_down`), x1], `${p}_ffn_res`);
    x = layerNorm(down, `${p}.layer_output_norm`, l === c.layers - 1 && !c.reranker ? 'last_hidden_state' : `x_${l + 1}`);
  }

  const inputs: GraphSpec['inputs'] = ['input_ids', 'attention_mask', 'token_type_ids'].map((name) => ({
    name,
    type: 'int64' as const,
    shape: ['batch_size', 'sequence_length'],
  }));
  if (!c.reranker)
    return { name: c.name, inputs, outputs: [{ name: 'last_hidden_state', type: 'float32', shape: ['batch_size', 'sequence_length', h] }], initializers, nodes };

  // BertForSequenceClassification: pooler (dense + tanh on [CLS]) then the one-label classifier.
  const cls = node('Gather', [x, constant('cls_index', 'int64', [], [0])], 'cls_state', { axis: 1 });
  const pooled = node('Tanh', [linear(cls, 'cls', 'pooler_dense')], 'pooled');
  linear(pooled, 'cls.output', 'logits');
  return { name: c.name, inputs, outputs: [{ name: 'logits', type: 'float32', shape: ['batch_size', 1] }], initializers, nodes };
}

/** The files of one export, keyed by path relative to the model directory. */
export function bertOnnxFiles(build: OnnxBertBuild): Map<string, Uint8Array> {
  const c = build.config;
  const json = (value: unknown) => new TextEncoder().encode(`${JSON.stringify(value, null, 2)}\n`);
  const files = new Map<string, Uint8Array>();
  files.set('model.onnx', writeOnnxModel(bertOnnxGraph(build)));
  files.set('tokenizer.json', json(bertTokenizerJson(c.contextLength)));
  files.set('tokenizer_config.json', json({ tokenizer_class: 'BertTokenizer', do_lower_case: true, model_max_length: c.contextLength }));
  files.set(
    'config.json',
    json({
      architectures: [c.reranker ? 'BertForSequenceClassification' : 'BertModel'],
      model_type: 'bert',
      hidden_size: c.hidden,
      num_hidden_layers: c.layers,
      num_attention_heads: c.heads,
      intermediate_size: c.feedForward,
      max_position_embeddings: c.contextLength,
      type_vocab_size: 2,
      vocab_size: buildWordPieceVocab().tokens.length,
      ...(c.reranker ? { id2label: { 0: 'LABEL_0' } } : {}),
    }),
  );
  if (!c.reranker) files.set('1_Pooling/config.json', json({ word_embedding_dimension: c.hidden, pooling_mode_mean_tokens: true, pooling_mode_cls_token: false }));
  return files;
}

/** The ONNX encoders Infera generates: tiny ones for tests, bge-small-shaped ones for bench/embeddings.ts. */
export type OnnxBertKind = 'tiny-embed' | 'tiny-rerank' | 'bench-embed' | 'bench-rerank';

const shapes = {
  tiny: { hidden: 128, layers: 2, heads: 4, feedForward: 256 },
  bench: { hidden: 384, layers: 12, heads: 12, feedForward: 1536 },
} as const;

/** Config + weights of each kind: the GGUF twin (encodeBert with the same build) holds the same model. */
export function onnxBertBuild(kind: OnnxBertKind): OnnxBertBuild & { seed: number } {
  const [size, role] = kind.split('-') as ['tiny' | 'bench', 'embed' | 'rerank'];
  const seed = { 'tiny-embed': 101, 'tiny-rerank': 102, 'bench-embed': 384, 'bench-rerank': 385 }[kind];
  const config: BertConfig = { name: `infera-${size}-bert-${role}`, ...shapes[size], contextLength: 512, reranker: role === 'rerank' };
  return { config, weights: randomBertWeights(seed), seed };
}

/**
 * Writes the export of `kind` into `dir` unless identical files are there, atomically per file
 * (parallel test processes may ask at once), and returns `dir`.
 */
export async function ensureOnnxBert(kind: OnnxBertKind, dir: string): Promise<string> {
  for (const [path, bytes] of bertOnnxFiles(onnxBertBuild(kind))) {
    const target = join(dir, path);
    const existing = await readFile(target).catch(() => undefined);
    if (existing && Buffer.compare(existing, bytes) === 0) continue;
    await mkdir(dirname(target), { recursive: true });
    const temporary = `${target}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    await writeFile(temporary, bytes);
    await rename(temporary, target);
  }
  return dir;
}
