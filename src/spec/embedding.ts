import type { StopSignal } from './chat.ts';
// Embedding and rerank engine contracts.

export type EmbeddingInput = { text: string } | { tokens: number[] };

/**
 * Micro-batcher settings an engine works best with (measured per engine; see docs/BENCHMARKS.md).
 * Engines that run a whole batch in one forward pass gain from a short wait; one-input-at-a-time
 * engines do not.
 */
export interface PreferredBatching {
  maxWaitMs?: number;
  concurrency?: number;
  maxBatchTokens?: number;
}

export interface EmbedCallOptions {
  inputs: EmbeddingInput[];
  /** Matryoshka truncation; only for models whose config declares it. */
  dimensions?: number;
  signal: StopSignal;
  /**
   * Set by serving for a model that `takesText`: what serving would have checked after tokenizing, for
   * the engine to check instead — the request's cap on text tokens summed over its inputs, and whether
   * it had a single (non-array) input, which 400s name `input` rather than `input[0]`.
   */
  request?: { maxTokens: number; single: boolean };
}

export interface EmbedResult {
  /** One vector per input, same order, L2-normalised when the model family expects it. */
  embeddings: Float32Array[];
  promptTokens: number;
  /** Tokens evaluated per input (same order), so a batch of several requests can bill each one. */
  tokensPerInput?: number[];
  /** What the ledger row should say (e.g. usage counted by Infera because the upstream sent none). */
  warnings?: string[];
}

export interface EmbeddingModel {
  readonly kind: 'embedding';
  readonly name: string;
  /** Native vector size; 0 when not known before an answer (a remote model without `upstream.dimensions`). */
  readonly dimensions: number;
  /** Max tokens of one input, not counting the special tokens the engine adds around it. */
  readonly maxInputTokens: number;
  readonly matryoshka: boolean;
  /** Token ids must be below this (token-array inputs are checked against it); undefined when unknown. */
  readonly vocabularySize?: number;
  tokenize(text: string): Promise<number[]>;
  /**
   * The engine takes text inputs as text and counts their tokens itself (a remote upstream with its own
   * tokenizer; a local engine, whose tokenizer lives in its engine process, so that one round trip
   * carries the text and brings back the vectors and the count): serving does not tokenize them first,
   * reserves the estimate, and bills the count the result reports. Local engines check what serving
   * would have (EmbedCallOptions.request).
   */
  readonly takesText?: boolean;
  doEmbed(options: EmbedCallOptions): Promise<EmbedResult>;
  /**
   * Engines that put many inputs into one forward pass take a whole micro-batch (several requests) at
   * once; one promise per call, same order. Without it the batcher calls doEmbed per request.
   */
  doEmbedBatch?(calls: EmbedCallOptions[]): Promise<EmbedResult>[];
  readonly preferredBatching?: PreferredBatching;
}

export interface RerankCallOptions {
  query: string;
  documents: string[];
  instruction?: string;
  /** Split long documents into chunks of at most this many tokens' worth (see protocol docs). */
  maxChunksPerDoc?: number;
  overlapTokens?: number;
  /** Truncate each document to this many tokens before chunking (Cohere v2 `max_tokens_per_doc`). */
  maxTokensPerDoc?: number;
  /**
   * The server's caps on pairs and evaluated tokens: an engine plans every chunk first and refuses the
   * request with a 400 naming `documents` (RerankWorkMeter) before it scores anything.
   */
  limits?: { maxPairs: number; maxTokens: number };
  signal: StopSignal;
}

export interface RerankResult {
  /** Score per input document, same order: sigmoid of the cross-encoder logit, best chunk wins. */
  scores: number[];
  inputTokens: number;
  /** Query-document pairs evaluated (documents plus extra chunks of long ones); billed as searches. */
  chunks?: number;
  /** What the ledger row should say (e.g. usage counted by Infera because the upstream sent none). */
  warnings?: string[];
}

export interface RerankModel {
  readonly kind: 'reranker';
  readonly name: string;
  readonly maxInputTokens: number;
  readonly acceptsInstruction: boolean;
  doRerank(options: RerankCallOptions): Promise<RerankResult>;
  /** As EmbeddingModel.doEmbedBatch: every query-document pair of several requests in shared forward passes. */
  doRerankBatch?(calls: RerankCallOptions[]): Promise<RerankResult>[];
  readonly preferredBatching?: PreferredBatching;
}
