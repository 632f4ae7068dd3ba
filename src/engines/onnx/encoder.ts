// A Transformer encoder exported to ONNX (optimum / sentence-transformers layout: model.onnx or
// onnx/model.onnx next to tokenizer.json and config.json), run with true batching: the inputs of many
// requests go through one forward pass, padded to the longest row of their group. This is what the
// llama.cpp binding cannot do for BERT-style models (it reads one pooled vector per context), and the
// reason this engine exists: see docs/BENCHMARKS.md, "Embeddings and rerank".
import { access, readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { createSession, InThreadHost, intTensor, floatData, type OnnxSession, type SessionLogger, type SessionSettings, type TensorMetadata } from './sessions.ts';

export interface EncoderRow {
  /** Token ids with the special tokens the model expects around them ([CLS] … [SEP]). */
  ids: number[];
  typeIds: number[];
}

export interface EncoderOptions extends SessionSettings {
  /** Model file inside the folder when it is not model.onnx or onnx/model.onnx (e.g. onnx/model_quantized.onnx). */
  file?: string;
  /** Rows per forward pass. */
  maxBatchSize: number;
  /** Padded tokens (rows × longest row) per forward pass: bounds the memory of one pass. */
  maxBatchTokens: number;
  log?: SessionLogger;
  /** Run the session on this thread (an engine process of its own) instead of a worker thread. */
  inThread?: boolean;
}

/** One output row as the caller reads it: `data` holds the whole group's output. */
export interface OutputView {
  data: Float32Array;
  dims: readonly number[];
  /** Row inside the group. */
  row: number;
  /** Real (unpadded) tokens of the row. */
  length: number;
}

const exists = (path: string) => access(path).then(() => true, () => false);
const readJson = async <T>(path: string): Promise<T | undefined> =>
  (await exists(path)) ? (JSON.parse(await readFile(path, 'utf8')) as T) : undefined;

interface HfConfig {
  model_type?: string;
  max_position_embeddings?: number;
  hidden_size?: number;
  pad_token_id?: number;
  vocab_size?: number;
}

/** Models whose position ids start after the padding index, so two positions are never usable. */
const OFFSET_POSITION_MODELS = new Set(['roberta', 'xlm-roberta', 'camembert']);

export class OnnxEncoder {
  private constructor(
    readonly dir: string,
    private readonly tokenizer: Tokenizer,
    private readonly session: OnnxSession,
    readonly config: HfConfig,
    /** Tokens one row may hold, special tokens included. */
    readonly maxLength: number,
    private readonly padId: number,
    private readonly options: EncoderOptions,
  ) {}

  static async load(path: string, options: EncoderOptions): Promise<OnnxEncoder> {
    const dir = resolve(path);
    const candidates = options.file ? [join(dir, options.file)] : [join(dir, 'model.onnx'), join(dir, 'onnx', 'model.onnx')];
    let modelPath: string | undefined;
    for (const candidate of candidates) if (!modelPath && (await exists(candidate))) modelPath = candidate;
    if (!modelPath)
      throw new Error(`onnx: no model file in ${dir} (looked for ${candidates.map((c) => c.slice(dir.length + 1)).join(', ')}); set onnx.file`);
    // Exports put tokenizer files at the top (sentence-transformers) or next to the model (optimum).
    const tokenizerDir = (await exists(join(dir, 'tokenizer.json'))) ? dir : dirname(modelPath);
    const tokenizerJson = await readJson<Record<string, unknown>>(join(tokenizerDir, 'tokenizer.json'));
    if (!tokenizerJson) throw new Error(`onnx: ${join(dir, 'tokenizer.json')} is missing; export the model with its fast tokenizer`);
    const tokenizerConfig = (await readJson<Record<string, unknown>>(join(tokenizerDir, 'tokenizer_config.json'))) ?? {};
    const config = (await readJson<HfConfig>(join(dir, 'config.json'))) ?? (await readJson<HfConfig>(join(tokenizerDir, 'config.json'))) ?? {};
    const tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);

    const positions = config.max_position_embeddings
      ? config.max_position_embeddings - (OFFSET_POSITION_MODELS.has(config.model_type ?? '') ? 2 : 0)
      : undefined;
    // tokenizer_config's model_max_length is a huge sentinel (1e30) when unset.
    const declared = typeof tokenizerConfig.model_max_length === 'number' && tokenizerConfig.model_max_length < 1e6 ? tokenizerConfig.model_max_length : undefined;
    const maxLength = Math.min(positions ?? 512, declared ?? Infinity);
    const padId = padTokenId(tokenizer, tokenizerJson, tokenizerConfig, config);

    const { session } = await createSession(modelPath, options, options.log, options.inThread ? new InThreadHost() : undefined);
    const encoder = new OnnxEncoder(dir, tokenizer, session, config, maxLength, padId, options);
    try {
      encoder.requireInput('input_ids');
      encoder.requireInput('attention_mask');
    } catch (error) {
      await session.release();
      throw error;
    }
    return encoder;
  }

  get inputs(): readonly TensorMetadata[] {
    return this.session.inputMetadata;
  }

  get outputs(): readonly TensorMetadata[] {
    return this.session.outputMetadata;
  }

  get vocabularySize(): number {
    return this.config.vocab_size ?? this.tokenizer.get_vocab(true).size;
  }

  private requireInput(name: string): TensorMetadata {
    const input = this.inputs.find((i) => i.name === name);
    if (!input) throw new Error(`onnx: ${this.dir} has no '${name}' input (inputs: ${this.inputs.map((i) => i.name).join(', ')}); not an encoder export`);
    return input;
  }

  /** Token ids of a text, without special tokens. */
  textTokens(text: string): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  /**
   * The row the model sees for one sequence or a pair, laid out by the tokenizer's own post-processor
   * (BERT: [CLS] a [SEP] b [SEP] with type ids 0/1; XLM-R: <s> a </s></s> b </s>). Working from ids
   * lets rerank chunk a document's tokens and still frame each chunk exactly as the tokenizer would.
   */
  row(a: readonly number[], b?: readonly number[]): EncoderRow {
    const processor = this.tokenizer.post_processor;
    if (!processor) return { ids: [...a, ...(b ?? [])], typeIds: [...a.map(() => 0), ...(b ?? []).map(() => 1)] };
    const toTokens = (ids: readonly number[]) => ids.map((id) => this.tokenizer.id_to_token(id) ?? '');
    const aTokens = toTokens(a);
    const bTokens = b ? toTokens(b) : [];
    const out = processor.post_process(aTokens, b ? bTokens : null);
    const tokens = [...out.tokens, ...(out.tokens_pair ?? [])];
    // The post-processor keeps both sequences in order and only adds special tokens around them: walk
    // the sequences back to their own ids (an id need not round-trip through its token string) and
    // look up only the added ones.
    const ids: number[] = [];
    let ia = 0;
    let ib = 0;
    for (const token of tokens) {
      let id: number | undefined;
      if (ia < a.length && token === aTokens[ia]) id = a[ia++];
      else if (ia === a.length && ib < bTokens.length && token === bTokens[ib]) id = b![ib++];
      else id = this.tokenizer.token_to_id(token);
      if (id === undefined) throw new Error(`onnx: tokenizer post-processor produced unknown token '${token}'`);
      ids.push(id);
    }
    return { ids, typeIds: out.token_type_ids ?? ids.map(() => 0) };
  }

  /**
   * Runs `rows` in groups of similar length (longest first) and reads each row's result with `read`.
   * `skip(i)` is asked before each group: rows whose caller left are not computed (result undefined).
   */
  async forward<T>(
    rows: readonly EncoderRow[],
    output: string,
    read: (view: OutputView) => T,
    skip: (index: number) => boolean = () => false,
  ): Promise<(T | undefined)[]> {
    const results: (T | undefined)[] = new Array(rows.length).fill(undefined);
    const order = rows.map((_, index) => index).sort((x, y) => rows[y]!.ids.length - rows[x]!.ids.length);
    const idsType = this.requireInput('input_ids').type;
    const maskType = this.requireInput('attention_mask').type;
    const typeInput = this.inputs.find((i) => i.name === 'token_type_ids');
    const positionInput = this.inputs.find((i) => i.name === 'position_ids');
    for (const [start, end] of groupByLength(order.map((index) => rows[index]!.ids.length), this.options.maxBatchSize, this.options.maxBatchTokens)) {
      const group = order.slice(start, end).filter((index) => !skip(index));
      if (group.length === 0) continue;
      const width = Math.max(...group.map((index) => rows[index]!.ids.length));
      const ids = new Array<number>(group.length * width).fill(this.padId);
      const mask = new Array<number>(group.length * width).fill(0);
      const types = new Array<number>(group.length * width).fill(0);
      group.forEach((index, r) => {
        const row = rows[index]!;
        for (let t = 0; t < row.ids.length; t++) {
          ids[r * width + t] = row.ids[t]!;
          mask[r * width + t] = 1;
          types[r * width + t] = row.typeIds[t] ?? 0;
        }
      });
      const dims = [group.length, width];
      const feeds = {
        input_ids: intTensor(idsType, ids, dims),
        attention_mask: intTensor(maskType, mask, dims),
        ...(typeInput ? { token_type_ids: intTensor(typeInput.type, types, dims) } : {}),
        ...(positionInput ? { position_ids: intTensor(positionInput.type, positionIds(group.length, width), dims) } : {}),
      };
      const out = (await this.session.run(feeds, [output]))[output];
      if (!out) throw new Error(`onnx: ${this.dir} produced no '${output}' output`);
      const data = floatData(out);
      group.forEach((index, r) => {
        results[index] = read({ data, dims: out.dims, row: r, length: rows[index]!.ids.length });
      });
    }
    return results;
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}

/**
 * Pass overhead in padded-token equivalents: what one more forward pass costs next to computing this
 * many more (padding) tokens. Measured on the 384×12 bench model, 2 threads: a one-row pass of 21 tokens
 * takes ≈ 7 ms where the row's share of a 32-row pass is ≈ 3.4 ms, so ≈ 3.6 ms ≈ 20 tokens' work.
 */
const PASS_COST_TOKENS = 24;

/**
 * Splits rows sorted by length (longest first) into consecutive groups, one forward pass each, with
 * the fewest padded tokens plus passes (dynamic programming over the cut points). One 32-row pass of
 * mixed lengths pads every row to the longest; cutting it where lengths drop wins more than the extra
 * pass costs (measured: 32 clients, ~20-token sentences, 218 → 26x embeddings/s with smaller groups).
 * Returns [start, end) pairs.
 */
export function groupByLength(lengths: readonly number[], maxRows: number, maxTokens: number): [number, number][] {
  const n = lengths.length;
  const cost = new Array<number>(n + 1).fill(Infinity);
  const cut = new Array<number>(n + 1).fill(0);
  cost[0] = 0;
  for (let end = 1; end <= n; end++)
    for (let size = 1; size <= Math.min(maxRows, end); size++) {
      const start = end - size;
      const padded = size * lengths[start]!;
      // A single row always fits: a row longer than the budget still needs its pass.
      if (size > 1 && padded > maxTokens) break;
      const total = cost[start]! + padded + PASS_COST_TOKENS;
      if (total < cost[end]!) {
        cost[end] = total;
        cut[end] = start;
      }
    }
  const groups: [number, number][] = [];
  for (let end = n; end > 0; end = cut[end]!) groups.unshift([cut[end]!, end]);
  return groups;
}

function positionIds(rows: number, width: number): number[] {
  return Array.from({ length: rows * width }, (_, i) => i % width);
}

function padTokenId(tokenizer: Tokenizer, json: Record<string, unknown>, tokenizerConfig: Record<string, unknown>, config: HfConfig): number {
  const padding = json.padding as { pad_id?: number } | null | undefined;
  if (typeof padding?.pad_id === 'number') return padding.pad_id;
  const configured = tokenizerConfig.pad_token;
  const name = typeof configured === 'string' ? configured : (configured as { content?: string } | undefined)?.content;
  const id = name !== undefined ? tokenizer.token_to_id(name) : undefined;
  // Padded positions are masked out, so any valid id works when the export names none.
  return id ?? config.pad_token_id ?? 0;
}
