// GGUF embedding models, on Infera's FFI encoder (ffi/encoder.ts: concurrent inputs packed into one
// llama_decode) or on node-llama-cpp's embedding contexts (llamaCpp.runner): BERT-family encoders (mean or CLS pooling, as the
// GGUF's `{arch}.pooling_type` says) and decoder embedders such as Qwen3-Embedding (last-token
// pooling; the EOS the GGUF asks for is appended by node-llama-cpp). llama.cpp returns raw pooled
// vectors, so L2 normalisation and Matryoshka truncation happen here.
import type { GgufFileInfo, Llama, LlamaEmbeddingContext, Token } from 'node-llama-cpp';
import type { LlamaCppModelConfig } from './config.ts';
import { loadEncoderModel } from './runtime.ts';
import { NLC_PATHS, nlcModule, type ReadGgufModule } from './nlc-parts.ts';
import { badRequest, ClientGoneError } from '../../errors/index.ts';
import type { EmbedCallOptions, EmbedResult, EmbeddingModel, LoadedModel, LoadProgress, PreferredBatching } from '../../spec/index.ts';
import { checkedCallTokens } from '../shared/embedding-input.ts';
import { normalizeInPlace } from '../shared/vectors.ts';
import { ContextPool } from './embedding-context-pool.ts';
import { LlamaLibraryUnavailable, openLlamaLibrary, type LlamaLibrary } from './ffi/library.ts';
import { LlamaEncoder, type EncoderStats } from './ffi/encoder.ts';
import { checkGgufFileOnce, GgufCheckError, type GgufSummary } from './gguf-check.ts';
import { abortSignalOf } from '../../spec/chat.ts';

/** What every llama-cpp load takes besides the model entry. */
export interface LlamaCppLoadOptions {
  /**
   * The server's Llama (LlamaRuntime); tests pass one from createLlama. A function is called only if
   * the model runs on node-llama-cpp: the FFI encoder needs no Llama (getLlama test-loads the addon in
   * a child process first, ~0.5 s and ~1 s of CPU at every engine-process start).
   */
  llama: Llama | (() => Promise<Llama>);
  /** Stops a load in progress (server shutdown). */
  signal?: AbortSignal;
  /**
   * Chat on the FFI runner: where llama_decode runs (see RunnerOptions.decodeOn). An engine process
   * of its own passes 'loop'; the default, 'worker', keeps a shared event loop free during decodes.
   * The FFI encoder of an embedding entry in an engine process decodes a lone input where llamaCpp.decodeOn
   * says (LlamaEncoder.forModel); reranker entries decode on the worker either way.
   */
  decodeOn?: 'loop' | 'worker';
  /**
   * Chat on the FFI runner: resolves when the server starts sending the model requests (EngineLoadContext
   * `serving`); deferred start-up work counts its delay from then. Unset: from the end of the load.
   */
  serving?: Promise<void>;
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

/**
 * The server's micro-batcher in front of the FFI encoder. The encoder packs whatever is queued into its
 * next decode, so the batcher should hand requests over as they come rather than hold them until one of
 * its default 2 batches in flight has finished: with 2, at 32 clients, every other decode took the 1–2
 * inputs that had queued while the previous one ran (a 64-token plain-attention decode), the rest
 * waiting in the server. As many batches in flight as the encoder has sequences keeps a decode's worth
 * of inputs in the engine's queue; beyond that the batcher's queue (and its 503) still applies.
 */
export function encoderBatching(parallelism: number): PreferredBatching {
  return { maxWaitMs: 0, concurrency: Math.max(2, parallelism) };
}

/** The Llama of the load options, made now if it was left to be made on demand. */
export function llamaOf(options: LlamaCppLoadOptions): Promise<Llama> {
  return typeof options.llama === 'function' ? options.llama() : Promise.resolve(options.llama);
}

/**
 * What the FFI encoders read from the GGUF's header (pooling, classification head, token embedding rows,
 * rerank template, architecture), in the shape of node-llama-cpp's GgufFileInfo that poolingOf,
 * supportsRanking and vocabularySizeOf read. It comes from Infera's own header check (gguf-check.ts), which
 * the load has usually just run on the file (llamaCpp.checkHeader; once per file version): node-llama-cpp's
 * reader loaded ~40 modules (fs-extra, retry, ...) into the engine process and parsed the whole header
 * (vocabulary included), ~13 MiB of RSS (measured in a bare Node process, bert-384x12-embed); the engine
 * process did not need them otherwise. A file the check refuses (with checkHeader off) is read with
 * node-llama-cpp's reader, as before.
 */
export async function ggufInfo(path: string): Promise<GgufFileInfo> {
  let summary: GgufSummary;
  try {
    summary = await checkGgufFileOnce(path);
  } catch (error) {
    if (!(error instanceof GgufCheckError)) throw error;
    const { readGgufFileInfo } = await nlcModule<ReadGgufModule>(NLC_PATHS.readGguf);
    return readGgufFileInfo(path, { sourceType: 'filesystem' });
  }
  const { metadata: flat, tensorShapes } = summary;
  const architecture = flat['general.architecture'];
  const metadata: Record<string, Record<string, unknown>> = {
    general: { architecture },
    tokenizer: { 'chat_template.rerank': flat['tokenizer.chat_template.rerank'] },
  };
  if (typeof architecture === 'string' && !(architecture in metadata)) metadata[architecture] = { pooling_type: flat[`${architecture}.pooling_type`] };
  const fullTensorInfo = Object.entries(tensorShapes).map(([name, dimensions]) => ({ name, dimensions }));
  return { metadata, fullTensorInfo } as unknown as GgufFileInfo;
}

/** The FFI library for an embedding/reranker model, or why it cannot serve it. */
export async function ffiLibrary(config: LlamaCppModelConfig): Promise<LlamaLibrary | string> {
  const options = config.llamaCpp;
  if (options.gpu !== false || options.gpuLayers !== 0) return 'GPU offload is configured (gpu / gpuLayers), and the FFI runner drives the CPU backend only';
  try {
    return await openLlamaLibrary({ cpuBackend: options.cpuBackend, cpuBackendDir: options.cpuBackendDir });
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
  options: LlamaCppLoadOptions,
): Promise<LoadedModel<LlamaCppEmbeddingModel>> {
  const { signal } = options;
  const llamaOptions = config.llamaCpp;
  const model = await loadEncoderModel(await llamaOf(options), config, onProgress, signal);
  const contexts: LlamaEmbeddingContext[] = [];
  try {
    refuseReranker(config, model.fileInfo, model.fileInsights.supportsRanking);
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
    const embedding = new LlamaCppEmbedding(config, backend, poolingOf(model.fileInfo), vocabularySizeOf(model.fileInfo));
    return { model: embedding, dispose: () => backend.dispose() };
  } catch (error) {
    await Promise.allSettled(contexts.map((context) => context.dispose()));
    await model.dispose();
    throw error;
  }
}

/**
 * On the FFI encoder. node-llama-cpp's JavaScript GGUF reader gives the header (pooling, classification
 * head, vocabulary rows); llama.cpp's own tokenizer and the encoder do the rest.
 */
async function loadOnFfi(
  config: LlamaCppModelConfig,
  onProgress: LoadProgress | undefined,
  { signal, decodeOn }: LlamaCppLoadOptions,
  lib: LlamaLibrary,
): Promise<LoadedModel<LlamaCppEmbeddingModel>> {
  const info = await ggufInfo(config.path);
  let encoder: LlamaEncoder | undefined;
  try {
    signal?.throwIfAborted();
    encoder = LlamaEncoder.forModel(lib, config.path, config.llamaCpp, 'model', decodeOn === 'loop' ? config.llamaCpp.decodeOn : 'worker');
    refuseReranker(config, info, supportsRanking(info, encoder.special));
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
      dispose: () => loadedEncoder.dispose(),
    };
    const embedding = new LlamaCppEmbedding(config, backend, poolingOf(info), vocabularySizeOf(info));
    return { model: embedding, dispose: () => backend.dispose() };
  } catch (error) {
    await encoder?.dispose();
    throw error;
  }
}

/**
 * A classification head without a declared mean/CLS/last pooling is a cross-encoder: its "embedding"
 * would be one score or the last token's state, never a sentence vector.
 */
function refuseReranker(config: LlamaCppModelConfig, info: GgufFileInfo, ranking: boolean): void {
  const pooling = poolingOf(info);
  if (pooling === 'rank' || (pooling === 'unspecified' && ranking))
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
  readonly preferredBatching: PreferredBatching | undefined;
  /** The tokenizer is here, in the engine process: serving sends the text and bills the count doEmbed returns. */
  readonly takesText = true;

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
    this.preferredBatching = backend.runner === 'ffi' ? encoderBatching(backend.parallelism) : undefined;
    // Special tokens llama.cpp adds around every input (e.g. [CLS] … [SEP]). node-llama-cpp refuses
    // inputs whose length (special tokens included) reaches the context size; the FFI encoder keeps that limit.
    const addedTokens = backend.inputLength([]);
    this.maxInputTokens = this.contextSize - 1 - addedTokens;
  }

  async tokenize(text: string): Promise<number[]> {
    return this.backend.tokenize(text);
  }

  async doEmbed(call: EmbedCallOptions): Promise<EmbedResult> {
    const { dimensions } = call;
    const signal = abortSignalOf(call.signal);
    const size = this.outputSize(dimensions);
    const tokenLists = checkedCallTokens(call, (text) => this.backend.tokenize(text), this);
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

  private finish(raw: ArrayLike<number>, size: number): Float32Array {
    // Matryoshka models put the coarse meaning first: truncate, then re-normalise the prefix.
    const vector = Float32Array.from(size === raw.length ? (raw as ArrayLike<number>) : Array.prototype.slice.call(raw, 0, size));
    return this.config.normalize ? normalizeInPlace(vector) : vector;
  }
}

/** The special tokens supportsRanking asks about: the encoder's llama_vocab ids. */
export interface SpecialTokens {
  eos: number | undefined;
  sep: number | undefined;
}

/**
 * node-llama-cpp 3.21.1's GgufInsights.supportsRanking, on the header alone: a classification head
 * (cls.weight or cls.output.weight) and a SEP or EOS token or a usable `chat_template.rerank`, and not
 * an encoder-decoder model. GgufInsights reads SEP and EOS from the header with llama.cpp's defaults
 * (llama_vocab::impl::load); here they are llama.cpp's own.
 */
export function supportsRanking(info: GgufFileInfo, special: SpecialTokens): boolean {
  if (!(info.fullTensorInfo ?? []).some((tensor) => tensor.name === 'cls.weight' || tensor.name === 'cls.output.weight')) return false;
  const template = (info.metadata as unknown as { tokenizer?: Record<string, unknown> }).tokenizer?.['chat_template.rerank'];
  const templated = typeof template === 'string' && template.includes('{query}') && template.includes('{document}');
  // GgufInsights.hasEncoder && hasDecoder: the t5 architecture.
  const encoderDecoder = info.metadata?.general?.architecture === 't5';
  return (special.sep !== undefined || special.eos !== undefined || templated) && !encoderDecoder;
}

function poolingOf(info: GgufFileInfo): PoolingName {
  const metadata = info.metadata as unknown as Record<string, Record<string, unknown> | undefined>;
  const poolingType = metadata[info.metadata.general.architecture]?.pooling_type;
  return typeof poolingType === 'number' ? (POOLING_NAMES[poolingType] ?? 'unspecified') : 'unspecified';
}

/** Rows of token_embd (ids at or above it would read out of bounds in llama.cpp). */
export function vocabularySizeOf(info: GgufFileInfo): number | undefined {
  const tensor = info.fullTensorInfo?.find((tensorInfo) => tensorInfo.name === 'token_embd.weight');
  const rows = tensor?.dimensions[1];
  if (rows !== undefined) return Number(rows);
  const tokens = (info.metadata as unknown as { tokenizer?: { ggml?: { tokens?: unknown[] } } }).tokenizer?.ggml?.tokens;
  return Array.isArray(tokens) ? tokens.length : undefined;
}
