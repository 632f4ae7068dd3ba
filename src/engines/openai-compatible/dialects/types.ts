// What one kind of upstream server does differently from OpenAI's API. Each dialect is a small file in
// this folder; the engine (../chat.ts, ../encoders.ts, ../images.ts) speaks OpenAI's shapes and asks the
// dialect only where a server differs: its thinking switches, its embedding and rerank routes, what it
// cannot do (refused with a 400 naming the field rather than dropped).
import { badRequest } from '../../../errors/index.ts';
import type { ChatCallOptions, RerankCallOptions } from '../../../spec/index.ts';
import type { DialectName } from '../config.ts';
import type { Json, Upstream } from '../upstream.ts';

/** Where embeddings go and how the answer reads. */
export interface EmbeddingRoute {
  path(upstream: Upstream): string;
  /** `inputs` are all texts or all token arrays. */
  body(model: string, inputs: string[] | number[][], dimensions: number | undefined): Json;
  /** Vectors in input order, and the upstream's token count when it reports one. */
  parse(answer: unknown): { vectors: unknown[]; promptTokens?: number };
  /** Whether it takes token-id inputs. */
  tokenInputs: boolean;
}

export interface RerankRoute {
  path(upstream: Upstream): string;
  body(model: string, options: RerankCallOptions): Json;
  /** One score per document (by the answer's indices), and the upstream's token count when it reports one. */
  parse(answer: unknown): { results: { index: number; score: number }[]; promptTokens?: number };
}

export interface Dialect {
  readonly name: DialectName;
  /** OpenAI's /chat/completions (false: the server has no chat; Ollama's native mode replaces it). */
  readonly chat: boolean;
  /** Legacy /completions. */
  readonly completions: boolean;
  /** `suffix` (fill in the middle) on /completions. */
  readonly infill: boolean;
  /** /images/generations in SiliconFlow's shape. */
  readonly images: boolean;
  readonly embeddings?: EmbeddingRoute;
  readonly rerank?: RerankRoute;
  /**
   * Shapes the OpenAI chat body for this server (thinking switches, prefix completion) and refuses, with
   * a 400 naming the field, what it cannot honour. `body` already holds the OpenAI fields and the client's
   * unknown fields.
   */
  chatRequest(body: Json, options: Omit<ChatCallOptions, 'signal'>): void;
  /** Assistant messages in history keep their reasoning (servers whose templates read it back). */
  readonly sendsReasoning?: boolean;
  /** A native API used instead of the OpenAI routes when the entry says `native: true` (Ollama). */
  readonly native?: NativeApi;
  /**
   * The server runs one model and answers whatever `model` a request names (llama-server lists it under
   * its file path): its only listed model is this entry's, whatever the id.
   */
  readonly servesOneModel?: boolean;
}

/**
 * A server's own chat API, translated at its edges: the OpenAI body the engine built becomes the native
 * request, and each native answer (or stream line, NDJSON) becomes the OpenAI-shaped completion or chunk
 * the engine reads, so one reader serves both.
 */
export interface NativeApi {
  chatPath(upstream: Upstream): string;
  chatRequest(body: Json): Json;
  /** A native answer or stream line as an OpenAI chat completion (`stream`: a chunk, with `delta`). */
  chatAnswer(answer: Json, stream: boolean): Json;
  embeddings: EmbeddingRoute;
}

/** Thinking switches as Qwen3-style chat templates read them (vLLM, SGLang, llama-server). */
export function thinkingAsTemplateKwargs(body: Json, options: Omit<ChatCallOptions, 'signal'>): void {
  const kwargs: Json = {};
  if (options.thinking.enabled !== undefined) kwargs.enable_thinking = options.thinking.enabled;
  if (options.thinking.budgetTokens !== undefined) kwargs.thinking_budget = options.thinking.budgetTokens;
  if (Object.keys(kwargs).length === 0) return;
  const given = body.chat_template_kwargs;
  body.chat_template_kwargs = { ...(typeof given === 'object' && given !== null ? given : {}), ...kwargs };
}

/** SiliconFlow's own fields (SiliconFlow, Infera). */
export function thinkingAsSiliconFlow(body: Json, options: Omit<ChatCallOptions, 'signal'>): void {
  if (options.thinking.enabled !== undefined) body.enable_thinking = options.thinking.enabled;
  if (options.thinking.budgetTokens !== undefined) body.thinking_budget = options.thinking.budgetTokens;
}

/** Index of the message asking for prefix completion, if any. */
export function prefixIndex(options: Omit<ChatCallOptions, 'signal'>): number {
  const last = options.messages.length - 1;
  const message = options.messages[last];
  return message?.role === 'assistant' && message.prefix === true ? last : -1;
}

export function refusePrefix(options: Omit<ChatCallOptions, 'signal'>, server: string): void {
  const index = prefixIndex(options);
  if (index !== -1) throw badRequest(`messages[${index}].prefix: prefix completion is not supported by ${server}.`, `messages[${index}].prefix`);
}

/** vLLM and SGLang continue a final assistant message with these two switches. */
export function prefixAsContinue(body: Json, options: Omit<ChatCallOptions, 'signal'>): void {
  if (prefixIndex(options) === -1) return;
  body.continue_final_message = true;
  body.add_generation_prompt = false;
}

/** Keeps the answer's `prefix: true` flag on the message (SiliconFlow's and DeepSeek's beta field). */
export function prefixAsFlag(body: Json, options: Omit<ChatCallOptions, 'signal'>): void {
  const index = prefixIndex(options);
  if (index === -1) return;
  const messages = body.messages as Json[];
  messages[index] = { ...messages[index], prefix: true };
}

export const num = (value: unknown): number | undefined => (typeof value === 'number' && Number.isFinite(value) ? value : undefined);
export const obj = (value: unknown): Json | undefined => (typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Json) : undefined);

/** The OpenAI embeddings route (vLLM, SGLang, llama-server, Ollama /v1, SiliconFlow, Infera, Infinity without /v1). */
export function openaiEmbeddings(path = 'embeddings', root = false, tokenInputs = true): EmbeddingRoute {
  return {
    tokenInputs,
    path: (upstream) => (root ? upstream.rootPath(`/${path}`) : upstream.path(path)),
    body: (model, inputs, dimensions) => ({ model, input: inputs, encoding_format: 'float', ...(dimensions ? { dimensions } : {}) }),
    parse(answer) {
      const data = obj(answer)?.data;
      if (!Array.isArray(data)) return { vectors: [] };
      const vectors: unknown[] = [];
      data.forEach((item, position) => {
        const entry = obj(item);
        vectors[num(entry?.index) ?? position] = entry?.embedding;
      });
      return { vectors, promptTokens: num(obj(obj(answer)?.usage)?.prompt_tokens) ?? num(obj(obj(answer)?.usage)?.total_tokens) };
    },
  };
}

/**
 * The Jina / Cohere rerank route most servers copied: {query, documents} → {results: [{index,
 * relevance_score}]}, tokens in `usage` (vLLM, llama-server, Infinity) or SiliconFlow's `tokens`.
 */
export function cohereRerank(path: (upstream: Upstream) => string, extra: (options: RerankCallOptions) => Json = () => ({})): RerankRoute {
  return {
    path,
    body: (model, options) => ({ model, query: options.query, documents: options.documents, return_documents: false, ...extra(options) }),
    parse(answer) {
      const body = obj(answer);
      const list = Array.isArray(answer) ? answer : body?.results;
      if (!Array.isArray(list)) return { results: [] };
      const results = list.map((item) => {
        const entry = obj(item);
        return { index: num(entry?.index) ?? -1, score: num(entry?.relevance_score) ?? num(entry?.score) ?? Number.NaN };
      });
      const usage = obj(body?.usage);
      const tokens = obj(body?.tokens);
      const meta = obj(obj(body?.meta)?.tokens);
      return {
        results,
        promptTokens: num(usage?.prompt_tokens) ?? num(usage?.total_tokens) ?? num(tokens?.input_tokens) ?? num(meta?.input_tokens),
      };
    },
  };
}

/** Rerank fields only SiliconFlow-shaped servers take: refused by the others, naming the field. */
export function refuseRerankExtras(options: RerankCallOptions, server: string, allowed: { chunks?: boolean; instruction?: boolean; maxTokensPerDoc?: boolean } = {}): void {
  if (!allowed.instruction && options.instruction !== undefined) throw badRequest(`instruction: is not supported by ${server}.`, 'instruction');
  if (!allowed.chunks && options.maxChunksPerDoc !== undefined) throw badRequest(`max_chunks_per_doc: is not supported by ${server}.`, 'max_chunks_per_doc');
  if (!allowed.chunks && options.overlapTokens !== undefined) throw badRequest(`overlap_tokens: is not supported by ${server}.`, 'overlap_tokens');
  if (!allowed.maxTokensPerDoc && options.maxTokensPerDoc !== undefined)
    throw badRequest(`max_tokens_per_doc: is not supported by ${server}.`, 'max_tokens_per_doc');
}
