// Engine results → the non-stream chat.completion JSON (and the pieces the stream converter shares).
// Shape follows API-CONTRACT.md and OpenAI's CreateChatCompletionResponse, including the nullable
// fields OpenAI marks required (`logprobs`, `message.refusal`) that many servers forget.

import { randomFillSync } from 'node:crypto';
import { z } from 'zod';
import type { ChatResult, ChatUsage, FinishReason, TokenLogprob, ToolCall } from '../../spec/chat.ts';

/** Identity of one completion, shared by the JSON response and every stream chunk. */
export interface ChatCompletionMeta {
  /** `chatcmpl-…`, see newChatCompletionId. */
  id: string;
  /** Unix seconds. */
  created: number;
  /** The model id as the client asked for it (aliases are echoed, not resolved). */
  model: string;
  /** Defaults to DEFAULT_SYSTEM_FINGERPRINT. */
  systemFingerprint?: string;
  /** The request used legacy `functions`: also answer with `function_call` / finish_reason "function_call". */
  legacyFunctions?: boolean;
}

export const DEFAULT_SYSTEM_FINGERPRINT = 'fp_infera';

// 128 random bits, 32 hex digits, cut from a block of random bytes filled and turned into hex 256 ids
// at a time: randomBytes(16) asked OpenSSL on every call (2 % of a proxied request's CPU), and
// randomUUID() then taking out its dashes (replaceAll) cost a new string or two per request.
const ID_HEX = 32;
const idPool = Buffer.alloc((ID_HEX / 2) * 256);
let idHex = '';
let idAt = 0;
export const newChatCompletionId = (): string => {
  if (idAt === idHex.length) {
    randomFillSync(idPool);
    idHex = idPool.toString('hex');
    idAt = 0;
  }
  const id = `chatcmpl-${idHex.slice(idAt, idAt + ID_HEX)}`;
  idAt += ID_HEX;
  return id;
};

// The wire shapes are zod schemas so that /openapi.json describes exactly what the builders below
// return: their return types are these schemas' types, so a field added to one and not the other
// fails to compile, and test/openapi.test.ts checks real answers against the generated document.
const tokenCount = z.number().int().min(0);

export const wireUsageSchema = z.object({
  prompt_tokens: tokenCount,
  completion_tokens: tokenCount.describe('Generated tokens, reasoning tokens included.'),
  total_tokens: tokenCount,
  completion_tokens_details: z.object({ reasoning_tokens: tokenCount }),
  prompt_tokens_details: z.object({ cached_tokens: tokenCount }),
});
export type WireUsage = z.infer<typeof wireUsageSchema>;

export const wireToolCallSchema = z.object({
  id: z.string(),
  type: z.literal('function'),
  function: z.object({ name: z.string(), arguments: z.string().describe('The arguments as JSON text.') }),
});
export type WireToolCall = z.infer<typeof wireToolCallSchema>;

export const wireFinishReasonSchema = z.enum(['stop', 'length', 'tool_calls', 'function_call']);
export type WireFinishReason = z.infer<typeof wireFinishReasonSchema>;

const tokenBytes = z.array(z.number().int()).nullable();
export const wireLogprobsSchema = z.object({
  content: z.array(
    z.object({
      token: z.string(),
      logprob: z.number(),
      bytes: tokenBytes,
      top_logprobs: z.array(z.object({ token: z.string(), logprob: z.number(), bytes: tokenBytes })),
    }),
  ),
  refusal: z.null(),
});
export type WireLogprobs = z.infer<typeof wireLogprobsSchema>;

export const wireChatMessageSchema = z.object({
  role: z.literal('assistant'),
  /** Always present: a string, or null when the message is only tool calls. */
  content: z.string().nullable(),
  reasoning_content: z.string().optional().describe('The chain of thought, when the model thought (SiliconFlow, DeepSeek).'),
  tool_calls: z.array(wireToolCallSchema).optional(),
  function_call: z.object({ name: z.string(), arguments: z.string() }).optional().describe('Legacy: only when the request used `functions`.'),
  refusal: z.null(),
});
export type WireChatMessage = z.infer<typeof wireChatMessageSchema>;

export const chatCompletionSchema = z.object({
  id: z.string(),
  object: z.literal('chat.completion'),
  created: z.number().int(),
  model: z.string(),
  system_fingerprint: z.string(),
  choices: z.array(
    z.object({ index: z.number().int().min(0), message: wireChatMessageSchema, logprobs: wireLogprobsSchema.nullable(), finish_reason: wireFinishReasonSchema }),
  ),
  usage: wireUsageSchema,
});
export type WireChatCompletion = z.infer<typeof chatCompletionSchema>;

/** completionTokens already includes reasoning tokens (OpenAI semantics, as in src/spec). */
export function toWireUsage(usage: ChatUsage): WireUsage {
  return {
    prompt_tokens: usage.promptTokens,
    completion_tokens: usage.completionTokens,
    total_tokens: usage.promptTokens + usage.completionTokens,
    completion_tokens_details: { reasoning_tokens: usage.reasoningTokens },
    prompt_tokens_details: { cached_tokens: usage.cachedPromptTokens },
  };
}

/**
 * Usage of n choices of one request: the prompt is the same for every choice, so it counts once (as
 * OpenAI reports n > 1); completion and reasoning tokens add up. Cached prompt tokens are the fewest
 * any choice found: the prompt cache lets the other choices copy the prompt one of them evaluated for
 * this request, and that is not a reuse of earlier work.
 */
export function combineChoiceUsage(usages: readonly ChatUsage[]): ChatUsage {
  if (usages.length === 0) return { promptTokens: 0, completionTokens: 0, reasoningTokens: 0, cachedPromptTokens: 0 };
  // A loop, not a reduce: no closure and no object per choice (one choice is nearly every request).
  let promptTokens = 0;
  let completionTokens = 0;
  let reasoningTokens = 0;
  let cachedPromptTokens = Number.POSITIVE_INFINITY;
  for (const usage of usages) {
    promptTokens = Math.max(promptTokens, usage.promptTokens);
    completionTokens += usage.completionTokens;
    reasoningTokens += usage.reasoningTokens;
    cachedPromptTokens = Math.min(cachedPromptTokens, usage.cachedPromptTokens);
  }
  return { promptTokens, completionTokens, reasoningTokens, cachedPromptTokens };
}

export function wireFinishReason(reason: FinishReason, hadToolCalls: boolean, legacyFunctions: boolean | undefined): WireFinishReason {
  return legacyFunctions && hadToolCalls && reason === 'tool_calls' ? 'function_call' : reason;
}

export const toWireToolCall = (call: ToolCall): WireToolCall => ({
  id: call.id,
  type: 'function',
  function: { name: call.name, arguments: call.arguments },
});

const toWireLogprobs = (logprobs: TokenLogprob[]): WireLogprobs => ({
  content: logprobs.map((t) => ({
    token: t.token,
    logprob: t.logprob,
    bytes: t.bytes,
    top_logprobs: t.topLogprobs.map((top) => ({ token: top.token, logprob: top.logprob, bytes: top.bytes })),
  })),
  refusal: null,
});

function toWireMessage(result: ChatResult, legacyFunctions: boolean | undefined): WireChatMessage {
  const hasCalls = result.toolCalls.length > 0;
  const message: WireChatMessage = {
    role: 'assistant',
    content: hasCalls && result.text === '' ? null : result.text,
    refusal: null,
  };
  if (result.reasoning !== '') message.reasoning_content = result.reasoning;
  if (hasCalls) {
    message.tool_calls = result.toolCalls.map(toWireToolCall);
    if (legacyFunctions) message.function_call = { name: result.toolCalls[0]!.name, arguments: result.toolCalls[0]!.arguments };
  }
  return message;
}

/** The non-stream response: one ChatResult per choice, in choice order. */
export function buildChatCompletion(meta: ChatCompletionMeta, results: readonly ChatResult[]): WireChatCompletion {
  return {
    id: meta.id,
    object: 'chat.completion',
    created: meta.created,
    model: meta.model,
    system_fingerprint: meta.systemFingerprint ?? DEFAULT_SYSTEM_FINGERPRINT,
    choices: results.map((result, index) => ({
      index,
      message: toWireMessage(result, meta.legacyFunctions),
      logprobs: result.logprobs ? toWireLogprobs(result.logprobs) : null,
      finish_reason: wireFinishReason(result.finishReason, result.toolCalls.length > 0, meta.legacyFunctions),
    })),
    usage: toWireUsage(combineChoiceUsage(results.map((r) => r.usage))),
  };
}
