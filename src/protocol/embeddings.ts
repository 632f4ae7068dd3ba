// POST /v1/embeddings: wire body (OpenAI + SiliconFlow fields) → engine call, engine result → wire JSON.
//
// Decisions:
// - `input` is a string, an array of strings, a token array, or an array of token arrays (token ids
//   are the served model's own vocabulary). No empty strings or empty token arrays.
// - At most MAX_EMBEDDING_INPUTS items per request: OpenAI's current cap, so that clients which batch
//   to OpenAI's limit (LangChain, LlamaIndex) work unchanged; apps send ≥ 50 (LobeChat sends 50).
// - `encoding_format: "base64"` is the raw little-endian float32 bytes, base64-encoded, exactly what the
//   openai SDK and LangChain decode (they ask for it by default).
// - `dimensions` is checked against the model in serving: Matryoshka models truncate, others accept
//   only their native size.
// - `null` means absent for every optional field; unknown fields are ignored (vendor extensions).
import { z } from 'zod';
import { badRequest } from '../errors/index.ts';
import { parseBody } from './common/validation.ts';
import { DEFAULT_REQUEST_LIMITS, type RequestLimits } from '../config/requests.ts';
import type { EmbeddingInput } from '../spec/index.ts';
import { keepAliveField } from './common/keep-alive.ts';

/** Most items one request may carry in `input` by default (config `requests.maxEmbeddingInputs`). */
export const MAX_EMBEDDING_INPUTS = DEFAULT_REQUEST_LIMITS.maxEmbeddingInputs;

const text = z.string().min(1, { error: 'must not be an empty string' });
const tokenId = z.number().int().min(0);
const tokenArray = z.array(tokenId).min(1, { error: 'must not be an empty token array' });

export const embeddingsRequestSchema = z.object({
  model: z.string().min(1),
  input: z.union([
    text,
    // The item cap is the server's (requests.maxEmbeddingInputs), checked after parsing.
    z.array(text).min(1),
    tokenArray.max(1_000_000),
    z.array(tokenArray).min(1),
  ]),
  encoding_format: z.enum(['float', 'base64']).nullish(),
  dimensions: z.number().int().min(1).nullish(),
  user: z.string().nullish(),
  keep_alive: keepAliveField,
});

export interface EmbeddingsRequest {
  model: string;
  inputs: EmbeddingInput[];
  /** `input` was one string or one token array (errors name `input`, not `input[0]`). */
  single: boolean;
  encodingFormat: 'float' | 'base64';
  dimensions?: number;
  user?: string;
  /** keep_alive in milliseconds (Infinity: never); absent: the model's own. */
  keepAliveMs?: number;
}

export function parseEmbeddingsRequest(body: unknown, limits: Pick<RequestLimits, 'maxEmbeddingInputs'> = DEFAULT_REQUEST_LIMITS): EmbeddingsRequest {
  const wire = parseBody(embeddingsRequestSchema, body);
  if (Array.isArray(wire.input) && typeof wire.input[0] !== 'number' && wire.input.length > limits.maxEmbeddingInputs)
    throw badRequest(`input: must have at most ${limits.maxEmbeddingInputs} items (this server's cap; got ${wire.input.length}).`, 'input');
  return {
    model: wire.model,
    inputs: toInputs(wire.input),
    single: typeof wire.input === 'string' || typeof wire.input[0] === 'number',
    encodingFormat: wire.encoding_format ?? 'float',
    dimensions: wire.dimensions ?? undefined,
    user: wire.user ?? undefined,
    ...(wire.keep_alive != null ? { keepAliveMs: wire.keep_alive } : {}),
  };
}

function toInputs(input: string | string[] | number[] | number[][]): EmbeddingInput[] {
  if (typeof input === 'string') return [{ text: input }];
  if (input.length > 0 && typeof input[0] === 'number') return [{ tokens: input as number[] }];
  return (input as (string | number[])[]).map((item) => (typeof item === 'string' ? { text: item } : { tokens: item }));
}

export const embeddingsResponseSchema = z.object({
  object: z.literal('list'),
  model: z.string(),
  data: z.array(
    z.object({
      object: z.literal('embedding'),
      embedding: z.union([z.array(z.number()), z.string().describe('encoding_format "base64": the float32 values, little-endian, base64-encoded.')]),
      index: z.number().int().min(0),
    }),
  ),
  /** completion_tokens is always 0: SiliconFlow's embeddings answers carry it (OpenAI's omit it). */
  usage: z.object({ prompt_tokens: z.number().int().min(0), completion_tokens: z.literal(0), total_tokens: z.number().int().min(0) }),
});
export type EmbeddingsResponse = z.infer<typeof embeddingsResponseSchema>;

export function buildEmbeddingsResponse(
  model: string,
  embeddings: Float32Array[],
  promptTokens: number,
  encodingFormat: 'float' | 'base64',
): EmbeddingsResponse {
  return {
    object: 'list',
    model,
    data: embeddings.map((vector, index) => ({
      object: 'embedding',
      embedding: encodingFormat === 'base64' ? float32ToBase64(vector) : Array.from(vector),
      index,
    })),
    usage: { prompt_tokens: promptTokens, completion_tokens: 0, total_tokens: promptTokens },
  };
}

const littleEndian = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Base64 of the vector's float32 bytes in little-endian order (what the openai SDK decodes). */
export function float32ToBase64(vector: Float32Array): string {
  if (littleEndian) return Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength).toString('base64');
  const bytes = Buffer.alloc(vector.length * 4);
  for (let i = 0; i < vector.length; i++) bytes.writeFloatLE(vector[i]!, i * 4);
  return bytes.toString('base64');
}

/** The inverse, for tests and for clients written against this server. */
export function base64ToFloat32(encoded: string): Float32Array {
  const bytes = Buffer.from(encoded, 'base64');
  const out = new Float32Array(bytes.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = bytes.readFloatLE(i * 4);
  return out;
}
