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
