// GGUF embedding models through node-llama-cpp: BERT-family encoders (mean or CLS pooling, as the
// GGUF's `{arch}.pooling_type` says) and decoder embedders such as Qwen3-Embedding (last-token
// pooling; the EOS the GGUF asks for is appended by node-llama-cpp). llama.cpp returns raw pooled
// vectors, so L2 normalisation and Matryoshka truncation happen here.
import type { Llama, LlamaEmbeddingContext, LlamaModel, Token } from 'node-llama-cpp';
import type { LlamaCppModelConfig } from './config.ts';
import { badRequest, ClientGoneError } from '../../errors/index.ts';
import type { EmbedCallOptions, EmbedResult, EmbeddingInput, EmbeddingModel, LoadedModel, LoadProgress } from '../../spec/index.ts';
import { checkedInputTokens } from '../shared/embedding-input.ts';
import { normalizeInPlace } from '../shared/vectors.ts';
import { ContextPool } from './embedding-context-pool.ts';

/** What every llama-cpp load takes besides the model entry. */
export interface LlamaCppLoadOptions {
  /** The server's Llama (LlamaRuntime); tests pass one from createLlama. */
  llama: Llama;
  /** Stops a load in progress (server shutdown). */
  signal?: AbortSignal;
  /**
   * Chat on the FFI runner: where llama_decode runs (see RunnerOptions.decodeOn). An engine process
   * of its own passes 'loop'; the default, 'worker', keeps a shared event loop free during decodes.
   */
  decodeOn?: 'loop' | 'worker';
}

export type PoolingName = 'none' | 'mean' | 'cls' | 'last' | 'rank' | 'unspecified';
const POOLING_NAMES: Record<number, PoolingName> = { 0: 'none', 1: 'mean', 2: 'cls', 3: 'last', 4: 'rank' };

export interface LlamaCppEmbeddingModel extends EmbeddingModel {
  /** Pooling declared in the GGUF (llama.cpp applies it); "unspecified" means llama.cpp's default for the architecture. */
  readonly pooling: PoolingName;
  /** Contexts in the pool: inputs embedded at the same time. */
  readonly parallelism: number;
  /** Tokens one context can hold, special tokens included. */
  readonly contextSize: number;
}

export async function loadLlamaCppEmbeddingModel(
  config: LlamaCppModelConfig,
  onProgress: LoadProgress | undefined,
  { llama, signal }: LlamaCppLoadOptions,
): Promise<LoadedModel<LlamaCppEmbeddingModel>> {
  if (!config.path) throw new Error(`model ${config.id}: llama-cpp needs \`path\``);
  const llamaOptions = config.llamaCpp;
  const model = await llama.loadModel({
    modelPath: config.path,
    gpuLayers: llamaOptions.gpuLayers,
    onLoadProgress: onProgress,
    loadSignal: signal,
  });
  const contexts: LlamaEmbeddingContext[] = [];
  try {
    // A classification head without a declared mean/CLS/last pooling is a cross-encoder: its "embedding"
    // would be one score or the last token's state, never a sentence vector.
    const pooling = poolingOf(model);
    if (pooling === 'rank' || (pooling === 'unspecified' && model.fileInsights.supportsRanking))
      throw new Error(`model ${config.id}: ${config.path} is a reranker (classification head); serve it as type reranker`);
    const contextSize = Math.min(llamaOptions.contextSize, model.trainContextSize || llamaOptions.contextSize);
    for (let i = 0; i < llamaOptions.contexts; i++)
      contexts.push(
        await model.createEmbeddingContext({
          contextSize,
          // Encoders attend over the whole input at once, so one batch must hold a whole input.
          batchSize: contextSize,
          threads: llamaOptions.threads,
        }),
      );
    const embedding = new LlamaCppEmbedding(config, model, new ContextPool(contexts), contextSize);
    return {
      model: embedding,
      dispose: async () => {
        await embedding.pool.dispose();
        await model.dispose();
      },
    };
  } catch (error) {
    await Promise.allSettled(contexts.map((context) => context.dispose()));
    await model.dispose();
    throw error;
  }
}

class LlamaCppEmbedding implements LlamaCppEmbeddingModel {
  readonly kind = 'embedding' as const;
  readonly name: string;
  readonly dimensions: number;
  readonly maxInputTokens: number;
  readonly matryoshka: boolean;
  readonly vocabularySize: number | undefined;
  readonly pooling: PoolingName;
  readonly parallelism: number;
  /** Special tokens llama.cpp adds around every input (e.g. [CLS] … [SEP]). */
  private readonly addedTokens: number;

  constructor(
    private readonly config: LlamaCppModelConfig,
    private readonly model: LlamaModel,
    readonly pool: ContextPool<LlamaEmbeddingContext>,
    readonly contextSize: number,
  ) {
    this.name = config.id;
    this.dimensions = model.embeddingVectorSize;
    this.matryoshka = config.matryoshka;
    this.parallelism = pool.size;
    this.addedTokens = pool.contexts[0].calculateInputLength([]);
    // node-llama-cpp refuses inputs whose length (special tokens included) reaches the context size.
    this.maxInputTokens = contextSize - 1 - this.addedTokens;
    this.vocabularySize = vocabularySizeOf(model);
    this.pooling = poolingOf(model);
  }

  async tokenize(text: string): Promise<number[]> {
    return this.model.tokenize(text, false) as number[];
  }

  async doEmbed({ inputs, dimensions, signal }: EmbedCallOptions): Promise<EmbedResult> {
    const size = this.outputSize(dimensions);
    const tokenLists = inputs.map((input, index) => this.tokensOf(input, index));
    const embeddings = await Promise.all(
      tokenLists.map((tokens) =>
        this.pool.use(async (context) => {
          const { vector } = await context.getEmbeddingFor(tokens);
          return this.finish(vector, size);
        }, signal),
      ),
    );
    if (signal.aborted) throw new ClientGoneError();
    const tokensPerInput = tokenLists.map((tokens) => this.evaluatedLength(tokens));
    return { embeddings, promptTokens: tokensPerInput.reduce((sum, count) => sum + count, 0), tokensPerInput };
  }

  private outputSize(dimensions: number | undefined): number {
    if (dimensions === undefined || dimensions === this.dimensions) return this.dimensions;
    if (!this.matryoshka)
      throw badRequest(
        `Model '${this.name}' has a fixed size of ${this.dimensions} dimensions; \`dimensions\` must be omitted or ${this.dimensions}.`,
        'dimensions',
      );
    if (!Number.isInteger(dimensions) || dimensions < 1 || dimensions > this.dimensions)
      throw badRequest(`\`dimensions\` must be an integer from 1 to ${this.dimensions} for model '${this.name}'.`, 'dimensions');
    return dimensions;
  }

  private tokensOf(input: EmbeddingInput, index: number): Token[] {
    return checkedInputTokens(input, index, (text) => this.model.tokenize(text, false), this) as Token[];
  }

  private evaluatedLength(tokens: Token[]): number {
    return this.pool.contexts[0].calculateInputLength(tokens);
  }

  private finish(raw: readonly number[], size: number): Float32Array {
    // Matryoshka models put the coarse meaning first: truncate, then re-normalise the prefix.
    const vector = Float32Array.from(size === raw.length ? raw : raw.slice(0, size));
    return this.config.normalize ? normalizeInPlace(vector) : vector;
  }
}

function poolingOf(model: LlamaModel): PoolingName {
  const metadata = model.fileInfo.metadata as unknown as Record<string, Record<string, unknown> | undefined>;
  const poolingType = metadata[model.fileInfo.metadata.general.architecture]?.pooling_type;
  return typeof poolingType === 'number' ? (POOLING_NAMES[poolingType] ?? 'unspecified') : 'unspecified';
}

/** Rows of token_embd (ids at or above it would read out of bounds in llama.cpp). */
export function vocabularySizeOf(model: LlamaModel): number | undefined {
  const tensor = model.fileInfo.fullTensorInfo?.find((info) => info.name === 'token_embd.weight');
  const rows = tensor?.dimensions[1];
  if (rows !== undefined) return Number(rows);
  const tokens = (model.fileInfo.metadata as unknown as { tokenizer?: { ggml?: { tokens?: unknown[] } } }).tokenizer?.ggml?.tokens;
  return Array.isArray(tokens) ? tokens.length : undefined;
}
