// GGUF cross-encoder rerankers, on Infera's FFI encoder (ffi/encoder.ts, RANK pooling: the chunks of a
// request, and of concurrent requests, packed into one llama_decode) or on node-llama-cpp's ranking
// contexts (llamaCpp.runner): BERT/XLM-R models with a classification head
// (bge-reranker-v2-m3 style; input `[CLS] query [SEP] document`, score = sigmoid(logit)) and Qwen3-Reranker
// style decoders whose GGUF carries a `chat_template.rerank` (llama.cpp already returns a probability).
//
// Long documents are split here, not by node-llama-cpp, so that `max_chunks_per_doc` and
// `overlap_tokens` mean what SiliconFlow documents: chunks of document tokens that fit next to the
// query in one context, consecutive chunks sharing `overlap_tokens` tokens; a document scores its best chunk.
import type { GgufFileInfo, LlamaModel, LlamaRankingContext, Token } from 'node-llama-cpp';
import type { LlamaCppModelConfig } from './config.ts';
import { loadEncoderModel } from './runtime.ts';
import { badRequest, ClientGoneError } from '../../errors/index.ts';
import type { LoadedModel, LoadProgress, PreferredBatching, RerankCallOptions, RerankModel, RerankResult } from '../../spec/index.ts';
import { chunkLimits, documentRoom, queryWithInstruction, RerankWorkMeter, splitIntoChunks } from '../shared/rerank-text.ts';
import { ContextPool } from './embedding-context-pool.ts';
import { encoderBatching, ffiLibrary, ggufInfo, llamaOf, supportsRanking, type LlamaCppLoadOptions } from './embedding.ts';
import { LlamaEncoder, type EncoderStats } from './ffi/encoder.ts';
import type { LlamaLibrary } from './ffi/library.ts';
import { abortSignalOf } from '../../spec/chat.ts';

export interface LlamaCppRerankModel extends RerankModel {
  readonly parallelism: number;
  /** What drives llama.cpp for this model. */
  readonly runner: 'ffi' | 'node-llama-cpp';
  /** The FFI encoder's counters (decodes, inputs, tokens), live in its own process; undefined on node-llama-cpp. */
  readonly encoderStats: EncoderStats | undefined;
  readonly contextSize: number;
  /** Text tokens (no special tokens) the engine would evaluate for this text. */
  countTokens(text: string): number;
}

// Qwen3-Reranker's GGUF template hard-codes one instruction in this slot; a request's `instruction` replaces it.
const QWEN3_INSTRUCT_SLOT = /<Instruct>: ([^\n]*)\n<Query>: \{query\}/;

/**
 * The llama-cpp reranker loader: the FFI encoder when the config asks for it and the library is there,
 * else node-llama-cpp's ranking contexts, with `onFallback` told why (one log line).
 */
export async function loadLlamaCppRerankModel(
  config: LlamaCppModelConfig,
  onProgress: LoadProgress | undefined,
  options: LlamaCppLoadOptions,
  onFallback: (reason: string) => void = () => {},
): Promise<LoadedModel<LlamaCppRerankModel>> {
  if (!config.path) throw new Error(`model ${config.id}: llama-cpp needs \`path\``);
  if (config.llamaCpp.runner === 'ffi') {
    const lib = await ffiLibrary(config);
    if (typeof lib !== 'string') return loadOnFfi(config, onProgress, options, lib);
    onFallback(`llama.cpp FFI runner not used for ${config.id}: ${lib}; running it on node-llama-cpp`);
  }
  return loadOnNodeLlamaCpp(config, onProgress, options);
}

/** How a reranker evaluates: node-llama-cpp's ranking-context pool or the FFI encoder. */
interface RankBackend {
  readonly runner: 'ffi' | 'node-llama-cpp';
  readonly encoderStats?: EncoderStats;
  readonly parallelism: number;
  /** Tokens one evaluation may hold. */
  readonly contextSize: number;
  /** The GGUF's tokenizer: node-llama-cpp's LlamaModel, or its rules over the FFI encoder's llama_vocab (FfiVocab). */
  readonly model: RerankTokenizer;
  /** Tokens evaluated for a cross-encoder pair (special tokens around query and document included). */
  pairLength(query: Token[], document: Token[]): number;
  /** Score of a cross-encoder pair. */
  rankPair(query: Token[], document: Token[], signal: AbortSignal): Promise<number>;
  /** Score of a filled prompt (templated rerankers). */
  rankPrompt(tokens: Token[], signal: AbortSignal): Promise<number>;
  dispose(): Promise<void>;
}

/** What the reranker asks of a tokenizer (LlamaModel and FfiVocab both have it). */
type RerankTokenizer = Pick<LlamaModel, 'tokenize' | 'detokenize'>;

function checkRanker(config: LlamaCppModelConfig, info: GgufFileInfo, ranking: boolean): PromptTemplate | undefined {
  if (!ranking)
    throw new Error(
      `model ${config.id}: ${config.path} is not a reranker (no cls.weight / cls.output.weight classification head); serve it as type embedding or chat`,
    );
  const rerankTemplate = (info.metadata as unknown as { tokenizer?: Record<string, unknown> }).tokenizer?.['chat_template.rerank'];
  // A GGUF rerank template (Qwen3-Reranker) is filled as text and tokenized whole, as llama-server and the
  // model's reference code do; node-llama-cpp's own template handling tokenizes the document apart from
  // the text around it ("<Document>: the" would read ":", " ", "the" instead of ":", " the").
  return typeof rerankTemplate === 'string' ? promptTemplate(rerankTemplate) : undefined;
}

async function loadOnNodeLlamaCpp(
  config: LlamaCppModelConfig,
  onProgress: LoadProgress | undefined,
  options: LlamaCppLoadOptions,
): Promise<LoadedModel<LlamaCppRerankModel>> {
  const llamaOptions = config.llamaCpp;
  const model = await loadEncoderModel(await llamaOf(options), config, onProgress, options.signal);
  const contexts: LlamaRankingContext[] = [];
  try {
    const prompt = checkRanker(config, model.fileInfo, model.fileInsights.supportsRanking);
    // Templated rerankers: the ranking contexts get a pass-through template and the finished token sequence.
    const template = prompt ? '{{query}}{{document}}' : undefined;
    const contextSize = Math.min(llamaOptions.contextSize, model.trainContextSize || llamaOptions.contextSize);
    for (let i = 0; i < llamaOptions.contexts; i++)
      contexts.push(await model.createRankingContext({ contextSize, batchSize: contextSize, threads: llamaOptions.threads, template }));
    const pool = new ContextPool(contexts);
    const backend: RankBackend = {
      runner: 'node-llama-cpp',
      parallelism: pool.size,
      contextSize,
      model,
      pairLength: (query, document) => pool.contexts[0]!.calculateInputLength(query, document),
      rankPair: (query, document, signal) => pool.use((ranking) => ranking.rank(query, document), signal),
      rankPrompt: (tokens, signal) => pool.use((ranking) => ranking.rank(tokens, []), signal),
      dispose: async () => {
        await pool.dispose();
        await model.dispose();
      },
    };
    const reranker = new LlamaCppRerank(config, backend, prompt);
    return { model: reranker, dispose: () => backend.dispose() };
  } catch (error) {
    await Promise.allSettled(contexts.map((context) => context.dispose()));
    await model.dispose();
    throw error;
  }
}

/**
 * On the FFI encoder with RANK pooling. The token sequences and the score are node-llama-cpp's
 * (LlamaRankingContext): `[BOS] query [EOS] [SEP] document [EOS]` for cross-encoders (each special token
 * where the vocabulary has one), the filled prompt with the vocabulary's begin/end tokens for templated
 * rerankers; the first class output, through a sigmoid unless llama.cpp already normalised it (qwen3's
 * RANK pooling ends in a softmax).
 */
async function loadOnFfi(
  config: LlamaCppModelConfig,
  onProgress: LoadProgress | undefined,
  { signal }: LlamaCppLoadOptions,
  lib: LlamaLibrary,
): Promise<LoadedModel<LlamaCppRerankModel>> {
  const info = await ggufInfo(config.path);
  let encoder: LlamaEncoder | undefined;
  try {
    signal?.throwIfAborted();
    encoder = LlamaEncoder.forModel(lib, config.path, config.llamaCpp, 'rank');
    const prompt = checkRanker(config, info, supportsRanking(info, encoder.special));
    onProgress?.(1);
    const loaded = encoder;
    const vocab = encoder.vocabulary();
    const { bos, eos, sep } = vocab.tokens;
    const architecture = info.metadata?.general?.architecture as string | undefined;
    const normalised = architecture === 'qwen3' || architecture === 'qwen3vl';
    const pairInput = (query: Token[], document: Token[]): Token[] =>
      query.length === 0 && document.length === 0
        ? []
        : [...(bos == null ? [] : [bos]), ...query, ...(eos == null ? [] : [eos]), ...(sep == null ? [] : [sep]), ...document, ...(eos == null ? [] : [eos])];
    const score = async (tokens: number[], signal: AbortSignal) => {
      if (tokens.length === 0) return 0;
      const out = await loaded.encode(tokens, signal);
      if (out.length === 0) return 0;
      return normalised ? out[0]! : 1 / (1 + Math.exp(-out[0]!));
    };
    const backend: RankBackend = {
      runner: 'ffi',
      encoderStats: encoder.stats,
      parallelism: encoder.sequences * encoder.lanesCount,
      contextSize: encoder.contextSize,
      model: vocab,
      pairLength: (query, document) => pairInput(query, document).length,
      rankPair: (query, document, signal) => score(pairInput(query, document), signal),
      rankPrompt: (tokens, signal) => score(loaded.framed(tokens), signal),
      dispose: () => loaded.dispose(),
    };
    const reranker = new LlamaCppRerank(config, backend, prompt);
    return { model: reranker, dispose: () => backend.dispose() };
  } catch (error) {
    await encoder?.dispose();
    throw error;
  }
}

interface Chunk {
  document: number;
  /** Document tokens (cross-encoders), or the whole filled prompt (templated rerankers). */
  tokens: Token[];
}

/** A GGUF `chat_template.rerank` split around its document, with its instruction slot if it has one. */
export interface PromptTemplate {
  /** Text before the document, with `{query}` in it. */
  head: string;
  tail: string;
  /** The instruction the template hard-codes (Qwen3-Reranker); a request's `instruction` replaces it. */
  defaultInstruction?: string;
}

/** Undefined for templates this engine cannot fill (no `{query}` before a `{document}`). */
export function promptTemplate(text: string): PromptTemplate | undefined {
  const at = text.indexOf('{document}');
  if (at < 0 || !text.slice(0, at).includes('{query}')) return undefined;
  return { head: text.slice(0, at), tail: text.slice(at + '{document}'.length), defaultInstruction: QWEN3_INSTRUCT_SLOT.exec(text)?.[1] };
}

/** The template's text before the document, for this query and instruction (function replacers: no `$&` surprises). */
export function fillHead(template: PromptTemplate, query: string, instruction: string | undefined): string {
  if (template.defaultInstruction !== undefined)
    return template.head.replace(QWEN3_INSTRUCT_SLOT, () => `<Instruct>: ${instruction ?? template.defaultInstruction}\n<Query>: ${query}`);
  return template.head.replace('{query}', () => queryWithInstruction(query, instruction, undefined));
}

class LlamaCppRerank implements LlamaCppRerankModel {
  readonly kind = 'reranker' as const;
  readonly name: string;
  readonly maxInputTokens: number;
  readonly acceptsInstruction: boolean;
  readonly parallelism: number;
  readonly contextSize: number;
  readonly runner: 'ffi' | 'node-llama-cpp';
  readonly encoderStats: EncoderStats | undefined;
  readonly preferredBatching: PreferredBatching | undefined;
  private readonly model: RerankTokenizer;

  constructor(
    config: LlamaCppModelConfig,
    private readonly backend: RankBackend,
    /** Set for templated rerankers (Qwen3-Reranker): Infera fills and tokenizes the whole prompt. */
    private readonly prompt: PromptTemplate | undefined,
  ) {
    this.name = config.id;
    this.acceptsInstruction = config.acceptsInstruction;
    this.parallelism = backend.parallelism;
    this.contextSize = backend.contextSize;
    this.runner = backend.runner;
    this.encoderStats = backend.encoderStats;
    this.preferredBatching = backend.runner === 'ffi' ? encoderBatching(backend.parallelism) : undefined;
    this.model = backend.model;
    // node-llama-cpp refuses a pair whose evaluated length reaches the context size.
    this.maxInputTokens = this.contextSize - 1;
  }

  countTokens(text: string): number {
    return this.tokenize(text).length;
  }

  async doRerank(options: RerankCallOptions): Promise<RerankResult> {
    if (options.instruction !== undefined && !this.acceptsInstruction)
      throw badRequest(`Model '${this.name}' does not take an instruction; omit \`instruction\`.`, 'instruction');
    return this.prompt ? this.rerankWithPrompt(this.prompt, options) : this.rerankPairs(options);
  }

  private async score(chunks: Chunk[], documentCount: number, signal: AbortSignal, evaluate: (chunk: Chunk) => Promise<number>): Promise<number[]> {
    if (signal.aborted) throw new ClientGoneError();
    const chunkScores = await Promise.all(chunks.map((chunk) => evaluate(chunk)));
    if (signal.aborted) throw new ClientGoneError();
    const scores = new Array<number>(documentCount).fill(0);
    chunks.forEach((chunk, index) => {
      scores[chunk.document] = Math.max(scores[chunk.document]!, chunkScores[index]!);
    });
    return scores;
  }

  /** Cross-encoders: node-llama-cpp frames query and document tokens ([CLS] q [SEP] d …). */
  private async rerankPairs(options: RerankCallOptions): Promise<RerankResult> {
    const { documents } = options;
    const signal = abortSignalOf(options.signal);
    const query = this.tokenize(this.queryText(options.query, options.instruction));
    // Tokens the template and special tokens add around query + document.
    const probe = this.tokenize('a');
    const frame = this.backend.pairLength(query, probe) - probe.length;
    const room = documentRoom(this.contextSize - 1 - frame, this.name, this.maxInputTokens);
    const { maxChunks, overlap } = chunkLimits(options);
    const meter = new RerankWorkMeter(options.limits);
    const chunks: Chunk[] = documents.flatMap((text, document) =>
      splitIntoChunks(this.tokenize(text).slice(0, options.maxTokensPerDoc), room, overlap, maxChunks).map((tokens) => {
        meter.add(frame + query.length + tokens.length);
        return { document, tokens };
      }),
    );
    const scores = await this.score(chunks, documents.length, signal, (chunk) => this.backend.rankPair(query, chunk.tokens, signal));
    const inputTokens = chunks.reduce((sum, chunk) => sum + this.backend.pairLength(query, chunk.tokens), 0);
    return { scores, inputTokens, chunks: chunks.length };
  }

  /**
   * Templated rerankers: the filled prompt is tokenized as one text. Long documents are chunked by their
   * own tokens and each chunk goes back to text before filling, so chunk edges may differ from a
   * whole-prompt tokenization by a token; the room keeps a margin for that.
   */
  private async rerankWithPrompt(template: PromptTemplate, options: RerankCallOptions): Promise<RerankResult> {
    const { documents } = options;
    const signal = abortSignalOf(options.signal);
    const head = fillHead(template, options.query, this.acceptsInstruction ? options.instruction : undefined);
    const promptTokens = (text: string) => this.model.tokenize(head + text + template.tail, true);
    const margin = 2;
    const room = documentRoom(this.contextSize - 1 - promptTokens('').length - margin, this.name, this.maxInputTokens);
    const { maxChunks, overlap } = chunkLimits(options);
    const frame = promptTokens('').length;
    // Every chunk is planned and counted before any prompt is filled (filling tokenizes the query again).
    const meter = new RerankWorkMeter(options.limits);
    const planned = documents.map((text) => {
      const tokens = this.tokenize(text);
      const kept = options.maxTokensPerDoc !== undefined && tokens.length > options.maxTokensPerDoc ? tokens.slice(0, options.maxTokensPerDoc) : undefined;
      const parts = !kept && tokens.length <= room ? undefined : splitIntoChunks(kept ?? tokens, room, overlap, maxChunks);
      for (const part of parts ?? [tokens]) meter.add(frame + part.length);
      return { text, parts };
    });
    const chunks: Chunk[] = planned.flatMap(({ text, parts }, document) =>
      parts === undefined
        ? [{ document, tokens: promptTokens(text) }]
        : parts.map((part) => ({ document, tokens: promptTokens(this.model.detokenize(part)) })),
    );
    const scores = await this.score(chunks, documents.length, signal, (chunk) => this.backend.rankPrompt(chunk.tokens, signal));
    return { scores, inputTokens: chunks.reduce((sum, chunk) => sum + chunk.tokens.length, 0), chunks: chunks.length };
  }

  private queryText(query: string, instruction: string | undefined): string {
    return this.acceptsInstruction ? queryWithInstruction(query, instruction, undefined) : query;
  }

  private tokenize(text: string): Token[] {
    // The same tokenization node-llama-cpp's ranking context applies to string inputs.
    return this.model.tokenize(text, false, 'trimLeadingSpace');
  }
}

export { queryWithInstruction, splitIntoChunks };
