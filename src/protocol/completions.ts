// POST /v1/completions (OpenAI's legacy text completion, SiliconFlow's FIM completion): the wire body →
// CompletionCallOptions per prompt, and engine results → the `text_completion` JSON and SSE chunks.
// Shapes follow OpenAI's CreateCompletionRequest / CreateCompletionResponse (the stream sends the same
// object, `choices[].text` holding the delta). What no engine here can honour is a 400 naming the
// field, never dropped:
// - `echo` with `logprobs` (the prompt's own token logprobs are not computed) and `echo` with `suffix`
//   (OpenAI refuses that pair too);
// - `best_of` above `n` (no server-side selection), a non-empty `logit_bias`.
// Leniencies: `null` is "absent" for every optional field; `suffix: ""` is no suffix, so that FIM
// clients that always send one still work on models without FIM tokens; empty stop strings are dropped.

import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { badRequest } from '../errors/index.ts';
import type { CompletionCallOptions, CompletionResult, CompletionUsage, TokenLogprob } from '../spec/chat.ts';
import { DEFAULT_REQUEST_LIMITS, type RequestLimits } from '../config/requests.ts';
import { FORWARDED_FIELDS, numberBetween, parseBody, unknownFields } from './common/validation.ts';
import { DEFAULT_SYSTEM_FINGERPRINT } from './chat/response.ts';
import { MAX_STOP_SEQUENCES } from './chat/request.ts';
import { keepAliveField } from './common/keep-alive.ts';

/** OpenAI's default for this endpoint (its document: `max_tokens` default 16). */
export const DEFAULT_COMPLETION_MAX_TOKENS = 16;
/** OpenAI's ceiling for the legacy integer `logprobs`. */
export const MAX_COMPLETION_LOGPROBS = 5;

const opt = <T extends z.ZodType>(schema: T) => schema.nullish();
const tokenId = z.number().int({ error: 'must be an integer token id' }).min(0, { error: 'must be a token id (>= 0)' });

export const completionRequestSchema = z.object({
  model: z.string().min(1),
  prompt: opt(
    z.union(
      [z.string(), z.array(z.string()), z.array(tokenId).min(1), z.array(z.array(tokenId).min(1, { error: 'must not be empty' }))],
      { error: 'must be a string, an array of strings, an array of token ids, or an array of token-id arrays' },
    ),
  ),
  suffix: opt(z.string()),
  max_tokens: opt(z.number().int({ error: 'must be an integer' }).min(0, { error: 'must be >= 0' })),
  temperature: opt(numberBetween(0, 2)),
  top_p: opt(numberBetween(0, 1)),
  top_k: opt(z.number().int().min(-1, { error: 'must be -1 (disabled) or a non-negative integer' })),
  min_p: opt(numberBetween(0, 1)),
  frequency_penalty: opt(numberBetween(-2, 2)),
  presence_penalty: opt(numberBetween(-2, 2)),
  repetition_penalty: opt(z.number().gt(0, { error: 'must be > 0' }).max(10, { error: 'must be <= 10' })),
  seed: opt(z.number().int()),
  stop: opt(
    z.union([z.string(), z.array(z.string()).max(MAX_STOP_SEQUENCES, { error: `must have at most ${MAX_STOP_SEQUENCES} items` })], {
      error: 'must be a string or an array of strings',
    }),
  ),
  // The upper bound is the server's cap (requests.maxChoices), checked after parsing.
  n: opt(z.number().int({ error: 'must be an integer' })),
  best_of: opt(z.number().int({ error: 'must be an integer' })),
  echo: opt(z.boolean()),
  logprobs: opt(numberBetween(0, MAX_COMPLETION_LOGPROBS, { int: true })),
  stream: opt(z.boolean()),
  stream_options: opt(z.object({ include_usage: opt(z.boolean()) })),
  user: opt(z.union([z.string(), z.number().transform(String)])),
  logit_bias: opt(z.record(z.string(), z.number())),
  keep_alive: keepAliveField,
});

type WireCompletionRequest = z.infer<typeof completionRequestSchema>;

export interface ParsedCompletionRequest {
  /** The model id exactly as the client sent it (echoed back). */
  model: string;
  /** One generation per prompt and choice; choice `p * n + i` is prompt p's i-th. */
  prompts: (string | number[])[];
  n: number;
  stream: boolean;
  includeUsage: boolean;
  user?: string;
  /** keep_alive in milliseconds (Infinity: never); absent: the model's own. */
  keepAliveMs?: number;
  /** Everything but the prompt and the signal, the same for every prompt. */
  options: Omit<CompletionCallOptions, 'prompt' | 'signal'>;
}

function promptsOf(wire: WireCompletionRequest): (string | number[])[] {
  const prompt = wire.prompt ?? '';
  if (typeof prompt === 'string') return [prompt];
  if (prompt.length === 0) throw badRequest('prompt: must not be an empty array.', 'prompt');
  // A flat array of numbers is one prompt of token ids; otherwise each element is a prompt.
  if (typeof prompt[0] === 'number') return [prompt as number[]];
  return prompt as (string | number[])[];
}

export function parseCompletionRequest(body: unknown, limits: RequestLimits = DEFAULT_REQUEST_LIMITS): ParsedCompletionRequest {
  const wire = parseBody(completionRequestSchema, body);
  if (wire.logit_bias && Object.keys(wire.logit_bias).length > 0) throw badRequest('logit_bias: is not supported by this server.', 'logit_bias');
  const prompts = promptsOf(wire);
  const n = wire.n ?? 1;
  if (n < 1 || n > limits.maxChoices)
    throw badRequest(`n: must be between 1 and ${limits.maxChoices} (this server's cap on choices per request).`, 'n');
  if (prompts.length * n > limits.maxChoices) {
    const param = prompts.length > limits.maxChoices ? 'prompt' : 'n';
    throw badRequest(
      `${param}: ${prompts.length} prompt(s) × n=${n} is ${prompts.length * n} generations, more than this server takes (at most ${limits.maxChoices} per request).`,
      param,
    );
  }
  // best_of ≤ n selects nothing (clients send best_of: 1 by default); more candidates than n would need a selection.
  if (wire.best_of != null && wire.best_of > n)
    throw badRequest(`best_of: choosing the best ${n} of ${wire.best_of} candidates is not supported on this server; send n only.`, 'best_of', 'unsupported_parameter');
  const suffix = wire.suffix ? wire.suffix : undefined;
  const echo = wire.echo === true;
  if (echo && suffix !== undefined) throw badRequest('echo: cannot be combined with suffix.', 'echo');
  if (echo && wire.logprobs != null)
    throw badRequest('echo: cannot be combined with logprobs on this server (the prompt tokens\' logprobs are not computed).', 'echo', 'unsupported_parameter');

  const sampling: CompletionCallOptions['sampling'] = {};
  if (wire.temperature != null) sampling.temperature = wire.temperature;
  if (wire.top_p != null) sampling.topP = wire.top_p;
  if (wire.top_k != null && wire.top_k > 0) sampling.topK = wire.top_k;
  if (wire.min_p != null) sampling.minP = wire.min_p;
  if (wire.frequency_penalty != null) sampling.frequencyPenalty = wire.frequency_penalty;
  if (wire.presence_penalty != null) sampling.presencePenalty = wire.presence_penalty;
  if (wire.repetition_penalty != null) sampling.repetitionPenalty = wire.repetition_penalty;
  if (wire.seed != null) sampling.seed = wire.seed;

  const options: ParsedCompletionRequest['options'] = { maxTokens: wire.max_tokens ?? DEFAULT_COMPLETION_MAX_TOKENS, sampling };
  if (suffix !== undefined) options.suffix = suffix;
  const stop = (typeof wire.stop === 'string' ? [wire.stop] : (wire.stop ?? [])).filter((s) => s !== '');
  if (stop.length > 0) options.stop = stop;
  if (echo) options.echo = true;
  if (wire.logprobs != null) options.topLogprobs = wire.logprobs;
  const extra = unknownFields(body, completionRequestSchema.shape, FORWARDED_FIELDS);
  if (extra) options.extra = extra;

  const stream = wire.stream ?? false;
  const parsed: ParsedCompletionRequest = {
    model: wire.model,
    prompts,
    n,
    stream,
    includeUsage: stream && wire.stream_options?.include_usage === true,
    options,
  };
  if (wire.user != null) parsed.user = wire.user;
  if (wire.keep_alive != null) parsed.keepAliveMs = wire.keep_alive;
  return parsed;
}

// ---------------------------------------------------------------------------------------------------
// Responses

export interface TextCompletionMeta {
  /** `cmpl-…`. */
  id: string;
  created: number;
  /** As the client sent it. */
  model: string;
}

// randomUUID draws from a cached entropy pool (see newChatCompletionId).
export const newTextCompletionId = (): string => `cmpl-${randomUUID().replaceAll('-', '')}`;

// Zod schemas, as for chat (response.ts): /openapi.json describes exactly what the builders return.
export const wireCompletionLogprobsSchema = z.object({
  tokens: z.array(z.string()),
  token_logprobs: z.array(z.number()),
  top_logprobs: z.array(z.record(z.string(), z.number())),
  text_offset: z.array(z.number().int().min(0)),
});
export type WireCompletionLogprobs = z.infer<typeof wireCompletionLogprobsSchema>;

export const wireCompletionUsageSchema = z.object({
  prompt_tokens: z.number().int().min(0),
  completion_tokens: z.number().int().min(0),
  total_tokens: z.number().int().min(0),
  prompt_tokens_details: z.object({ cached_tokens: z.number().int().min(0) }),
});
export type WireCompletionUsage = z.infer<typeof wireCompletionUsageSchema>;

export const wireCompletionChoiceSchema = z.object({
  index: z.number().int().min(0),
  text: z.string(),
  logprobs: wireCompletionLogprobsSchema.nullable(),
  finish_reason: z.enum(['stop', 'length']).nullable(),
});
export type WireCompletionChoice = z.infer<typeof wireCompletionChoiceSchema>;

/** The JSON answer, and each stream chunk (usage on the last chunk only, or its own with include_usage). */
export const textCompletionSchema = z.object({
  id: z.string(),
  object: z.literal('text_completion'),
  created: z.number().int(),
  model: z.string(),
  system_fingerprint: z.string(),
  choices: z.array(wireCompletionChoiceSchema),
  usage: wireCompletionUsageSchema.optional(),
});
export type WireTextCompletion = z.infer<typeof textCompletionSchema>;

export const toWireCompletionUsage = (usage: CompletionUsage): WireCompletionUsage => ({
  prompt_tokens: usage.promptTokens,
  completion_tokens: usage.completionTokens,
  total_tokens: usage.promptTokens + usage.completionTokens,
  prompt_tokens_details: { cached_tokens: usage.cachedPromptTokens ?? 0 },
});

/**
 * Cached prompt tokens of a whole request: each prompt's n choices share one evaluation of it, so a
 * prompt counts the fewest its choices found cached (as chat's combineChoiceUsage does); prompts add up.
 * `cached[k]` is choice k's count (prompt k / n), undefined while that choice has not finished.
 */
export function requestCachedTokens(cached: readonly (number | undefined)[], choicesPerPrompt: number): number {
  let total = 0;
  for (let start = 0; start < cached.length; start += choicesPerPrompt) {
    let fewest: number | undefined;
    for (const count of cached.slice(start, start + choicesPerPrompt)) if (count !== undefined) fewest = Math.min(fewest ?? count, count);
    total += fewest ?? 0;
  }
  return total;
}

/**
 * OpenAI's legacy logprobs for tokens whose text starts at `offset` in the choice's text: each token's
 * own logprob, a map of the most likely alternatives (with the chosen token: up to logprobs + 1
 * entries, as OpenAI documents) and where each token's text starts.
 */
export function toWireCompletionLogprobs(logprobs: readonly TokenLogprob[], offset: number, top: number): WireCompletionLogprobs {
  const out: WireCompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  for (const entry of logprobs) {
    out.tokens.push(entry.token);
    out.token_logprobs.push(entry.logprob);
    const alternatives: Record<string, number> = {};
    for (const alternative of entry.topLogprobs.slice(0, top)) alternatives[alternative.token] ??= alternative.logprob;
    alternatives[entry.token] ??= entry.logprob;
    out.top_logprobs.push(alternatives);
    out.text_offset.push(offset);
    offset += entry.token.length;
  }
  return out;
}

/**
 * The JSON answer. `results[k]` is choice k; usage counts each prompt once however many choices it
 * has (`promptTokens`, summed by the caller), and every choice's generated tokens. `top` is the
 * request's `logprobs` (offsets start at 0: logprobs never come with an echoed prompt).
 */
export function buildTextCompletion(
  meta: TextCompletionMeta,
  results: readonly CompletionResult[],
  promptTokens: number,
  top: number | undefined,
  choicesPerPrompt = 1,
): WireTextCompletion {
  return {
    id: meta.id,
    object: 'text_completion',
    created: meta.created,
    model: meta.model,
    system_fingerprint: DEFAULT_SYSTEM_FINGERPRINT,
    choices: results.map((result, index) => ({
      index,
      text: result.text,
      logprobs: result.logprobs && top !== undefined ? toWireCompletionLogprobs(result.logprobs, 0, top) : null,
      finish_reason: result.finishReason,
    })),
    usage: toWireCompletionUsage({
      promptTokens,
      completionTokens: results.reduce((sum, r) => sum + r.usage.completionTokens, 0),
      cachedPromptTokens: requestCachedTokens(
        results.map((r) => r.usage.cachedPromptTokens ?? 0),
        choicesPerPrompt,
      ),
    }),
  };
}
