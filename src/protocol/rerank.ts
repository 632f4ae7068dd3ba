// POST /v1/rerank (SiliconFlow, Cohere v1) and /v2/rerank (Cohere v2): wire body → engine call,
// engine scores → wire JSON.
//
// Decisions:
// - `documents` are strings; `{text}` objects (Cohere v1 clients) are read for their `text`.
//   `rank_fields` other than ["text"] cannot be honoured and answer 400.
// - `top_n` may be absent, null, or larger than the number of documents (all are returned).
// - `return_documents` defaults to false; when true every result carries `document.text` (Dify needs it).
// - `max_chunks_per_doc` / `overlap_tokens` (0–80, default 80) control how long documents are split;
//   a document scores its best chunk. Cohere v2's `max_tokens_per_doc` truncates each document first.
// - `instruction` only for rerankers that take one (checked in serving against the model).
// - Results are sorted by relevance_score, highest first, ties by index; `top_n` cuts after sorting.
// - Usage is reported twice: SiliconFlow's `tokens` and Cohere's `meta{tokens, billed_units}`.
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { badRequest } from '../errors/index.ts';
import { parseBody } from './common/validation.ts';
import { DEFAULT_REQUEST_LIMITS, type RequestLimits } from '../config/requests.ts';
import { keepAliveField } from './common/keep-alive.ts';

/** Most documents one request may rank by default (config `requests.maxRerankDocuments`). */
export const MAX_RERANK_DOCUMENTS = DEFAULT_REQUEST_LIMITS.maxRerankDocuments;
/** Highest `max_chunks_per_doc` accepted (LlamaIndex sends 1024). */
export const MAX_CHUNKS_PER_DOC_LIMIT = 4096;
export const MAX_OVERLAP_TOKENS = 80;
/** Cohere bills one search unit per query over up to this many documents (chunks of long ones count separately). */
export const DOCUMENTS_PER_SEARCH_UNIT = 100;

const document = z.union([z.string(), z.object({ text: z.string() }).loose()]);

export const rerankRequestSchema = z.object({
  model: z.string().min(1),
  query: z.string().min(1, { error: 'must not be empty' }),
  // The item cap is the server's (requests.maxRerankDocuments), checked after parsing.
  documents: z.array(document).min(1),
  top_n: z.number().int().min(1).nullish(),
  return_documents: z.boolean().nullish(),
  max_chunks_per_doc: z.number().int().min(1).max(MAX_CHUNKS_PER_DOC_LIMIT).nullish(),
  overlap_tokens: z.number().int().min(0).max(MAX_OVERLAP_TOKENS).nullish(),
  instruction: z.string().nullish(),
  // Cohere v1 and v2 fields.
  rank_fields: z.array(z.string()).nullish(),
  max_tokens_per_doc: z.number().int().min(1).nullish(),
  priority: z.unknown().optional(),
  keep_alive: keepAliveField,
});

export interface RerankRequest {
  model: string;
  query: string;
  documents: string[];
  topN?: number;
  returnDocuments: boolean;
  maxChunksPerDoc?: number;
  overlapTokens?: number;
  maxTokensPerDoc?: number;
  instruction?: string;
  /** keep_alive in milliseconds (Infinity: never); absent: the model's own. */
  keepAliveMs?: number;
}

export function parseRerankRequest(body: unknown, limits: Pick<RequestLimits, 'maxRerankDocuments'> = DEFAULT_REQUEST_LIMITS): RerankRequest {
  const wire = parseBody(rerankRequestSchema, body);
  if (wire.documents.length > limits.maxRerankDocuments)
    throw badRequest(`documents: must have at most ${limits.maxRerankDocuments} items (this server's cap; got ${wire.documents.length}).`, 'documents');
  if (wire.rank_fields && !(wire.rank_fields.length === 1 && wire.rank_fields[0] === 'text'))
    throw badRequest('rank_fields: only ["text"] is supported; send each document as a string or {"text": ...}.', 'rank_fields');
  if (wire.priority !== undefined && wire.priority !== null)
    throw badRequest('priority: request priorities are not supported by this server; omit the field.', 'priority');
  return {
    model: wire.model,
    query: wire.query,
    documents: wire.documents.map((item) => (typeof item === 'string' ? item : item.text)),
    topN: wire.top_n ?? undefined,
    returnDocuments: wire.return_documents ?? false,
    maxChunksPerDoc: wire.max_chunks_per_doc ?? undefined,
    overlapTokens: wire.overlap_tokens ?? undefined,
    maxTokensPerDoc: wire.max_tokens_per_doc ?? undefined,
    instruction: wire.instruction ?? undefined,
    ...(wire.keep_alive != null ? { keepAliveMs: wire.keep_alive } : {}),
  };
}

const rerankTokens = z.object({ input_tokens: z.number().int().min(0), output_tokens: z.number().int().min(0) });
export const rerankResponseSchema = z.object({
  id: z.string(),
  results: z.array(
    z.object({
      index: z.number().int().min(0),
      relevance_score: z.number(),
      document: z.object({ text: z.string() }).optional().describe('With return_documents: true.'),
    }),
  ),
  tokens: rerankTokens,
  meta: z.object({
    api_version: z.object({ version: z.string() }),
    tokens: rerankTokens,
    billed_units: z.object({ search_units: z.number().int().min(0) }),
  }),
});
export type RerankResponse = z.infer<typeof rerankResponseSchema>;

export function buildRerankResponse(
  request: Pick<RerankRequest, 'documents' | 'topN' | 'returnDocuments'>,
  scores: number[],
  usage: { inputTokens: number; chunks: number },
): RerankResponse {
  const order = scores
    .map((score, index) => ({ index, score }))
    .sort((a, b) => b.score - a.score || a.index - b.index)
    .slice(0, request.topN ?? scores.length);
  const tokens = { input_tokens: usage.inputTokens, output_tokens: 0 };
  return {
    id: randomUUID(),
    results: order.map(({ index, score }) => ({
      index,
      relevance_score: score,
      ...(request.returnDocuments ? { document: { text: request.documents[index] } } : {}),
    })),
    tokens,
    meta: {
      api_version: { version: '2' },
      tokens,
      billed_units: { search_units: Math.max(1, Math.ceil(usage.chunks / DOCUMENTS_PER_SEARCH_UNIT)) },
    },
  };
}
