// GGUF embedding models, on Infera's FFI encoder (ffi/encoder.ts: concurrent inputs packed into one
// llama_decode) or on node-llama-cpp's embedding contexts (llamaCpp.runner): BERT-family encoders (mean or CLS pooling, as the
// GGUF's `{arch}.pooling_type` says) and decoder embedders such as Qwen3-Embedding (last-token
// pooling; the EOS the GGUF asks for is appended by node-llama-cpp). llama.cpp returns raw pooled
// vectors, so L2 normalisation and Matryoshka truncation happen here.
import type { Llama, LlamaEmbeddingContext, LlamaModel, Token } from 'node-llama-cpp';
import type { LlamaCppModelConfig } from './config.ts';
import { loadEncoderModel } from './runtime.ts';
import { badRequest, ClientGoneError } from '../../errors/index.ts';
import type { EmbedCallOptions, EmbedResult, EmbeddingInput, EmbeddingModel, LoadedModel, LoadProgress } from '../../spec/index.ts';
import { checkedInputTokens } from '../shared/embedding-input.ts';
import { normalizeInPlace } from '../shared/vectors.ts';
import { ContextPool } from './embedding-context-pool.ts';
import { LlamaLibraryUnavailable, openLlamaLibrary, type LlamaLibrary } from './ffi/library.ts';
import { LlamaEncoder, type EncoderStats } from './ffi/encoder.ts';

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
  /** Inputs embedded at the same time: node-llama-cpp's contexts, or the FFI encoder's sequences per decode. */
  readonly parallelism: number;
  /** What drives llama.cpp for this model. */
  readonly runner: 'ffi' | 'node-llama-cpp';
  /** The FFI encoder's counters (decodes, inputs, tokens), live in its own process; undefined on node-llama-cpp. */
  readonly encoderStats: EncoderStats | undefined;
  /** Tokens one context can hold, special tokens included. */
  readonly contextSize: number;
}

/**
 * The llama-cpp embedding loader: the FFI encoder when the config asks for it and the library is
 * there, else node-llama-cpp's embedding contexts, with `onFallback` told why (one log line).
 */
export async function loadLlamaCppEmbeddingModel(
  config: LlamaCppModelConfig,
  onProgress: LoadProgress | undefined,
  options: LlamaCppLoadOptions,
  onFallback: (reason: string) => void = () => {},
): Promise<LoadedModel<LlamaCppEmbeddingModel>> {
  if (!config.path) throw new Error(`model ${config.id}: llama-cpp needs \`path\``);
  if (config.llamaCpp.runner === 'ffi') {
    const lib = await ffiLibrary(config);
    if (typeof lib !== 'string') return loadOnFfi(config, onProgress, options, lib);
    onFallback(`llama.cpp FFI runner not used for ${config.id}: ${lib}; running it on node-llama-cpp`);
  }
  return loadOnNodeLlamaCpp(config, onProgress, options);
}

/** The FFI library for an embedding/reranker model, or why it cannot serve it. */
export async function ffiLibrary(config: LlamaCppModelConfig): Promise<LlamaLibrary | string> {
  const options = config.llamaCpp;
  if (options.gpu !== false || options.gpuLayers !== 0) return 'GPU offload is configured (gpu / gpuLayers), and the FFI runner drives the CPU backend only';
  try {
    return await openLlamaLibrary();
  } catch (error) {
    if (error instanceof LlamaLibraryUnavailable) return error.message;
    throw error;
  }
}

/** How an embedding model evaluates inputs: node-llama-cpp's context pool or the FFI encoder. */
interface EmbeddingBackend {
  readonly runner: 'ffi' | 'node-llama-cpp';
  readonly encoderStats?: EncoderStats;
  readonly parallelism: number;
  readonly dimensions: number;
  /** Tokens the model can take, special tokens included. */
  readonly contextSize: number;
  /** Text tokens, no special tokens. */
  tokenize(text: string): number[];
  /** Tokens evaluated for these input tokens (special tokens around them included). */
  inputLength(tokens: number[]): number;
  embed(tokens: number[], signal: AbortSignal): Promise<ArrayLike<number>>;
  dispose(): Promise<void>;
}

async function loadOnNodeLlamaCpp(
  config: LlamaCppModelConfig,
  onProgress: LoadProgress | undefined,
  { llama, signal }: LlamaCppLoadOptions,
): Promise<LoadedModel<LlamaCppEmbeddingModel>> {
  const llamaOptions = config.llamaCpp;
  const model = await loadEncoderModel(llama, config, onProgress, signal);
  const contexts: LlamaEmbeddingContext[] = [];
  try {
    refuseReranker(config, model);
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
    const pool = new ContextPool(contexts);
    const backend: EmbeddingBackend = {
      runner: 'node-llama-cpp',
      parallelism: pool.size,
      dimensions: model.embeddingVectorSize,
      contextSize,
      tokenize: (text) => model.tokenize(text, false) as number[],
      inputLength: (tokens) => pool.contexts[0]!.calculateInputLength(tokens as Token[]),
      embed: (tokens, signal) => pool.use(async (context) => (await context.getEmbeddingFor(tokens as Token[])).vector, signal),
      dispose: async () => {
        await pool.dispose();
        await model.dispose();
      },
    };
    const embedding = new LlamaCppEmbedding(config, backend, poolingOf(model), vocabularySizeOf(model));
    return { model: embedding, dispose: () => backend.dispose() };
  } catch (error) {
    await Promise.allSettled(contexts.map((context) => context.dispose()));
    await model.dispose();
    throw error;
  }
}

/**
 * On the FFI encoder. node-llama-cpp still reads the GGUF's header (a vocabulary-only load: pooling,
 * classification head, vocabulary rows); llama.cpp's own tokenizer and the encoder do the rest.
 */
async function loadOnFfi(
  config: LlamaCppModelConfig,
  onProgress: LoadProgress | undefined,
  { llama, signal, decodeOn }: LlamaCppLoadOptions,
  lib: LlamaLibrary,
): Promise<LoadedModel<LlamaCppEmbeddingModel>> {
  const vocab = await llama.loadModel({ modelPath: config.path, vocabOnly: true, loadSignal: signal });
  let encoder: LlamaEncoder | undefined;
  try {
    refuseReranker(config, vocab);
    signal?.throwIfAborted();
    encoder = LlamaEncoder.forModel(lib, config.path, config.llamaCpp, 'model', decodeOn);
    onProgress?.(1);
    const loadedEncoder = encoder;
    const backend: EmbeddingBackend = {
      runner: 'ffi',
      encoderStats: encoder.stats,
      parallelism: encoder.sequences * encoder.lanesCount,
      dimensions: encoder.outputSize,
      contextSize: encoder.contextSize,
      tokenize: (text) => loadedEncoder.tokenize(text),
      inputLength: (tokens) => loadedEncoder.framed(tokens).length,
      embed: (tokens, signal) => loadedEncoder.encode(loadedEncoder.framed(tokens), signal),
      dispose: async () => {
        await loadedEncoder.dispose();
        await vocab.dispose();
      },
    };
    const embedding = new LlamaCppEmbedding(config, backend, poolingOf(vocab), vocabularySizeOf(vocab));
    return { model: embedding, dispose: () => backend.dispose() };
  } catch (error) {
    await encoder?.dispose();
    await vocab.dispose();
    throw error;
  }
}

/**
 * A classification head without a declared mean/CLS/last pooling is a cross-encoder: its "embedding"
 * would be one score or the last token's state, never a sentence vector.
 */
function refuseReranker(config: LlamaCppModelConfig, model: LlamaModel): void {
  const pooling = poolingOf(model);
  if (pooling === 'rank' || (pooling === 'unspecified' && model.fileInsights.supportsRanking))
    throw new Error(`model ${config.id}: ${config.path} is a reranker (classification head); serve it as type reranker`);
}

class LlamaCppEmbedding implements LlamaCppEmbeddingModel {
  readonly kind = 'embedding' as const;
  readonly name: string;
  readonly dimensions: number;
  readonly maxInputTokens: number;
  readonly matryoshka: boolean;
  readonly parallelism: number;
  readonly contextSize: number;
  readonly runner: 'ffi' | 'node-llama-cpp';
  readonly encoderStats: EncoderStats | undefined;

  constructor(
    private readonly config: LlamaCppModelConfig,
    private readonly backend: EmbeddingBackend,
    readonly pooling: PoolingName,
    readonly vocabularySize: number | undefined,
  ) {
    this.name = config.id;
    this.dimensions = backend.dimensions;
    this.matryoshka = config.matryoshka;
    this.parallelism = backend.parallelism;
    this.contextSize = backend.contextSize;
    this.runner = backend.runner;
    this.encoderStats = backend.encoderStats;
    // Special tokens llama.cpp adds around every input (e.g. [CLS] … [SEP]). node-llama-cpp refuses
    // inputs whose length (special tokens included) reaches the context size; the FFI encoder keeps that limit.
    const addedTokens = backend.inputLength([]);
    this.maxInputTokens = this.contextSize - 1 - addedTokens;
  }

  async tokenize(text: string): Promise<number[]> {
    return this.backend.tokenize(text);
  }

  async doEmbed({ inputs, dimensions, signal }: EmbedCallOptions): Promise<EmbedResult> {
    const size = this.outputSize(dimensions);
    const tokenLists = inputs.map((input, index) => this.tokensOf(input, index));
    if (signal.aborted) throw new ClientGoneError();
    const embeddings = await Promise.all(tokenLists.map(async (tokens) => this.finish(await this.backend.embed(tokens, signal), size)));
    if (signal.aborted) throw new ClientGoneError();
    const tokensPerInput = tokenLists.map((tokens) => this.backend.inputLength(tokens));
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

  private tokensOf(input: EmbeddingInput, index: number): number[] {
    return checkedInputTokens(input, index, (text) => this.backend.tokenize(text), this);
  }

  private finish(raw: ArrayLike<number>, size: number): Float32Array {
    // Matryoshka models put the coarse meaning first: truncate, then re-normalise the prefix.
    const vector = Float32Array.from(size === raw.length ? (raw as ArrayLike<number>) : Array.prototype.slice.call(raw, 0, size));
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
