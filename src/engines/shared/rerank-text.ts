// Engine-neutral parts of cross-encoder reranking: how long documents become chunks and how an
// instruction joins the query. Shared by the llama.cpp and ONNX Runtime rerankers so that
// `max_chunks_per_doc`, `overlap_tokens` and `instruction` mean the same on every engine.
import { badRequest } from '../../errors/index.ts';

/** Chunks scored per document when the request does not say (LlamaIndex sends 1024 explicitly). */
export const DEFAULT_MAX_CHUNKS_PER_DOC = 1024;
/** SiliconFlow's default and maximum overlap between consecutive chunks. */
export const DEFAULT_OVERLAP_TOKENS = 80;

/** The text that fills the query slot of an instruction-following reranker. */
export function queryWithInstruction(query: string, instruction: string | undefined, templateDefault: string | undefined): string {
  if (templateDefault !== undefined) return `<Instruct>: ${instruction ?? templateDefault}\n<Query>: ${query}`;
  // Rerankers without a template slot: the instruct/query layout Qwen3 and E5-instruct models are trained on.
  return instruction === undefined ? query : `Instruct: ${instruction}\nQuery: ${query}`;
}

/**
 * Split `tokens` into chunks of at most `room` tokens, consecutive chunks sharing `overlap` tokens
 * (capped at half a chunk so every chunk brings new text), keeping at most `maxChunks` chunks: the
 * part of a document beyond them is not scored.
 */
export function splitIntoChunks<T>(tokens: T[], room: number, overlap: number, maxChunks: number): T[][] {
  if (tokens.length <= room) return [tokens];
  const shared = Math.min(Math.max(0, overlap), Math.floor(room / 2));
  const stride = room - shared;
  const chunks: T[][] = [];
  for (let start = 0; chunks.length < maxChunks; start += stride) {
    chunks.push(tokens.slice(start, start + room));
    if (start + room >= tokens.length) break;
  }
  return chunks;
}

/** The request's chunking limits, SiliconFlow's defaults filled in. */
export function chunkLimits(call: { maxChunksPerDoc?: number; overlapTokens?: number }): { maxChunks: number; overlap: number } {
  return { maxChunks: call.maxChunksPerDoc ?? DEFAULT_MAX_CHUNKS_PER_DOC, overlap: call.overlapTokens ?? DEFAULT_OVERLAP_TOKENS };
}

/** `room` (document tokens that fit next to the query), or the 400 that says the query leaves none. */
export function documentRoom(room: number, model: string, tokensPerPair: number): number {
  if (room < 1)
    throw badRequest(
      `The query leaves no room for a document in model '${model}' (${tokensPerPair} tokens per query-document pair); shorten the query.`,
      'query',
      'context_length_exceeded',
    );
  return room;
}

/** The server's caps on what one rerank request may make the model evaluate (config `requests`). */
export interface RerankWorkLimits {
  /** Query–chunk pairs (documents × their chunks). */
  maxPairs: number;
  /** Tokens over every pair, query included. */
  maxTokens: number;
}

/**
 * Counts the pairs and tokens of a request while its chunks are planned, and refuses it with a 400 as
 * soon as it passes a cap: before any pair is scored, and before a templated reranker fills a prompt
 * per chunk. A long query multiplies: every chunk is scored together with it (102 KiB of documents
 * once became 7.97 M evaluated tokens).
 */
export class RerankWorkMeter {
  pairs = 0;
  tokens = 0;

  constructor(private readonly limits: RerankWorkLimits | undefined) {}

  add(pairTokens: number): void {
    this.pairs++;
    this.tokens += pairTokens;
    if (!this.limits) return;
    if (this.pairs > this.limits.maxPairs)
      throw badRequest(
        `documents: this request needs more than ${this.limits.maxPairs} query-document pairs (documents × their chunks); ` +
          `this server scores at most ${this.limits.maxPairs} per request. Send fewer or shorter documents, or a lower max_chunks_per_doc.`,
        'documents',
        'too_many_tokens',
      );
    if (this.tokens > this.limits.maxTokens)
      throw badRequest(
        `documents: scoring this request would evaluate more than ${this.limits.maxTokens} tokens (each chunk is scored together with the query); ` +
          `this server evaluates at most ${this.limits.maxTokens} per request. Shorten the query or the documents.`,
        'documents',
        'too_many_tokens',
      );
  }
}
