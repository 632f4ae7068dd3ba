// Embedding models exported to ONNX (BERT / XLM-R / bge / e5 / gte families as sentence-transformers or
// optimum write them), batched across requests: every input of a micro-batch goes through shared
// forward passes. Pooling follows the export's 1_Pooling/config.json (or config `onnx.pooling`);
// vectors are L2-normalised here, as for the llama.cpp engine.
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import type { OnnxModelConfig } from './config.ts';
import { ClientGoneError } from '../../errors/index.ts';
import type { EmbedCallOptions, EmbedResult, EmbeddingModel, LoadedModel, LoadProgress, PreferredBatching } from '../../spec/index.ts';
import { checkedCallTokens } from '../shared/embedding-input.ts';
import { normalizeInPlace } from '../shared/vectors.ts';
import { OnnxEncoder, type EncoderRow, type OutputView } from './encoder.ts';
import type { SessionLogger } from './sessions.ts';

export type OnnxPooling = 'cls' | 'mean' | 'last' | 'sentence_embedding';

export interface OnnxEmbeddingModel extends EmbeddingModel {
  readonly pooling: OnnxPooling;
}

/**
 * Measured with bench/embeddings.ts on 2 cores (docs/BENCHMARKS.md): with one batch in flight, the next
 * batch is whatever queued during the current pass, so waiting buys nothing under load (32 clients:
 * 254 / 255 / 256 embeddings/s at 0 / 2 / 5 ms) and costs a lone client its latency (p50 5.7 / 8.4 /
 * 10.7 ms). A second batch in flight gained nothing (259 vs 255): the session runs one pass at a time.
 */
export const ONNX_BATCHING: PreferredBatching = { maxWaitMs: 0, concurrency: 1 };

export async function loadOnnxEmbeddingModel(
  config: OnnxModelConfig,
  onProgress?: LoadProgress,
  options: EncoderLoadOptions = {},
): Promise<LoadedModel<OnnxEmbeddingModel>> {
  const encoder = await loadEncoder(config, options);
  try {
    const pooling = await poolingOf(config, encoder);
    const model = new OnnxEmbedding(config, encoder, pooling);
    onProgress?.(1);
    return { model, dispose: () => encoder.dispose() };
  } catch (error) {
    await encoder.dispose();
    throw error;
  }
}

export interface EncoderLoadOptions {
  log?: SessionLogger;
  /** The model has an engine process of its own: its session runs on that process's main thread. */
  ownProcess?: boolean;
}

export function loadEncoder(config: OnnxModelConfig, { log, ownProcess }: EncoderLoadOptions = {}): Promise<OnnxEncoder> {
  const onnx = config.onnx;
  return OnnxEncoder.load(config.path, {
    threads: onnx.threads,
    executionProviders: onnx.executionProviders,
    file: onnx.file,
    maxBatchSize: onnx.maxBatchSize,
    maxBatchTokens: onnx.maxBatchTokens,
    spin: onnx.spin,
    log,
    inThread: ownProcess,
  });
}

async function poolingOf(config: OnnxModelConfig, encoder: OnnxEncoder): Promise<OnnxPooling> {
  if (config.onnx.pooling) return config.onnx.pooling;
  if (encoder.outputs.some((o) => o.name === 'sentence_embedding')) return 'sentence_embedding';
  const st = await readFile(join(encoder.dir, '1_Pooling', 'config.json'), 'utf8').then(
    (text) => JSON.parse(text) as Record<string, unknown>,
    () => undefined,
  );
  if (st?.pooling_mode_cls_token) return 'cls';
  if (st?.pooling_mode_mean_tokens) return 'mean';
  if (st?.pooling_mode_lasttoken) return 'last';
  throw new Error(
    `model ${config.id}: ${encoder.dir} does not say how to pool token states (no 1_Pooling/config.json with cls/mean/lasttoken, ` +
      'no sentence_embedding output); set onnx.pooling to cls, mean or last as the model card says',
  );
}

class OnnxEmbedding implements OnnxEmbeddingModel {
  readonly kind = 'embedding' as const;
  readonly name: string;
  readonly dimensions: number;
  readonly maxInputTokens: number;
  readonly matryoshka: boolean;
  readonly vocabularySize: number;
  readonly preferredBatching = ONNX_BATCHING;
  /** The tokenizer is here, in the engine process: serving sends the text and bills the count doEmbed returns. */
  readonly takesText = true;
  private readonly output: string;

  constructor(
    private readonly config: OnnxModelConfig,
    private readonly encoder: OnnxEncoder,
    readonly pooling: OnnxPooling,
  ) {
    this.name = config.id;
    this.matryoshka = config.matryoshka;
    this.vocabularySize = encoder.vocabularySize;
    this.maxInputTokens = encoder.maxLength - encoder.row([]).ids.length;
    this.output = pooling === 'sentence_embedding' ? 'sentence_embedding' : tokenStatesOutput(encoder, config.id);
    const last = encoder.outputs.find((o) => o.name === this.output)?.shape.at(-1);
    const size = typeof last === 'number' ? last : encoder.config.hidden_size;
    if (!size) throw new Error(`model ${config.id}: cannot tell the vector size (no fixed last dimension on '${this.output}', no hidden_size in config.json)`);
    this.dimensions = size;
  }

  async tokenize(text: string): Promise<number[]> {
    return this.encoder.textTokens(text);
  }

  doEmbed(call: EmbedCallOptions): Promise<EmbedResult> {
    return this.doEmbedBatch([call])[0]!;
  }

  doEmbedBatch(calls: EmbedCallOptions[]): Promise<EmbedResult>[] {
    // Bad input fails its own call only; the rest of the batch still runs.
    const planned = calls.map((call) => {
      try {
        return { rows: checkedCallTokens(call, (text) => this.encoder.textTokens(text), this).map((tokens) => this.encoder.row(tokens)) };
      } catch (error) {
        return { error };
      }
    });
    const rows: EncoderRow[] = [];
    const owner: number[] = [];
    planned.forEach((plan, callIndex) => {
      for (const row of plan.rows ?? []) {
        rows.push(row);
        owner.push(callIndex);
      }
    });
    const vectors = this.encoder.forward(rows, this.output, (view) => this.pool(view), (index) => calls[owner[index]!]!.signal.aborted);
    return planned.map(async (plan, callIndex) => {
      if (plan.error) throw plan.error;
      const call = calls[callIndex]!;
      const all = await vectors;
      if (call.signal.aborted) throw new ClientGoneError();
      const size = call.dimensions ?? this.dimensions;
      const embeddings: Float32Array[] = [];
      const tokensPerInput: number[] = [];
      all.forEach((vector, index) => {
        if (owner[index] !== callIndex) return;
        const truncated = size === vector!.length ? vector! : vector!.slice(0, size);
        embeddings.push(this.config.normalize ? normalizeInPlace(truncated) : truncated);
        tokensPerInput.push(rows[index]!.ids.length);
      });
      return { embeddings, promptTokens: tokensPerInput.reduce((a, b) => a + b, 0), tokensPerInput };
    });
  }

  /** One vector from a row of the output: already pooled, or token states pooled over the real tokens. */
  private pool({ data, dims, row, length }: OutputView): Float32Array {
    if (dims.length === 2) return data.slice(row * dims[1]!, (row + 1) * dims[1]!);
    const width = dims[1]!;
    const hidden = dims[2]!;
    const base = row * width * hidden;
    if (this.pooling === 'cls') return data.slice(base, base + hidden);
    if (this.pooling === 'last') return data.slice(base + (length - 1) * hidden, base + length * hidden);
    const out = new Float32Array(hidden);
    for (let t = 0; t < length; t++) for (let h = 0; h < hidden; h++) out[h] += data[base + t * hidden + h]!;
    for (let h = 0; h < hidden; h++) out[h] /= length;
    return out;
  }
}

/** The [batch, sequence, hidden] output: last_hidden_state / token_embeddings by name, else the only 3-D one. */
function tokenStatesOutput(encoder: OnnxEncoder, id: string): string {
  const named = encoder.outputs.find((o) => o.name === 'last_hidden_state' || o.name === 'token_embeddings');
  if (named) return named.name;
  const threeD = encoder.outputs.filter((o) => o.shape.length === 3);
  if (threeD.length === 1) return threeD[0]!.name;
  throw new Error(`model ${id}: cannot find the token-states output among ${encoder.outputs.map((o) => o.name).join(', ')}`);
}
