// Engine results → the non-stream chat.completion JSON (and the pieces the stream converter shares).
// Shape follows API-CONTRACT.md and OpenAI's CreateChatCompletionResponse, including the nullable
// fields OpenAI marks required (`logprobs`, `message.refusal`) that many servers forget.

import { randomBytes } from 'node:crypto';
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

export const newChatCompletionId = (): string => `chatcmpl-${randomBytes(16).toString('hex')}`;

export interface WireUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  completion_tokens_details: { reasoning_tokens: number };
  prompt_tokens_details: { cached_tokens: number };
}

export interface WireToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

export type WireFinishReason = FinishReason | 'function_call';

export interface WireLogprobs {
  content: {
    token: string;
    logprob: number;
    bytes: number[] | null;
    top_logprobs: { token: string; logprob: number; bytes: number[] | null }[];
  }[];
  refusal: null;
}

export interface WireChatMessage {
  role: 'assistant';
  /** Always present: a string, or null when the message is only tool calls. */
  content: string | null;
  reasoning_content?: string;
  tool_calls?: WireToolCall[];
  function_call?: { name: string; arguments: string };
  refusal: null;
}

export interface WireChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  system_fingerprint: string;
  choices: { index: number; message: WireChatMessage; logprobs: WireLogprobs | null; finish_reason: WireFinishReason }[];
  usage: WireUsage;
}

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
 * OpenAI reports n > 1); completion and reasoning tokens add up.
 */
export function combineChoiceUsage(usages: readonly ChatUsage[]): ChatUsage {
  return usages.reduce<ChatUsage>(
    (sum, usage) => ({
      promptTokens: Math.max(sum.promptTokens, usage.promptTokens),
      completionTokens: sum.completionTokens + usage.completionTokens,
      reasoningTokens: sum.reasoningTokens + usage.reasoningTokens,
      cachedPromptTokens: Math.max(sum.cachedPromptTokens, usage.cachedPromptTokens),
    }),
    { promptTokens: 0, completionTokens: 0, reasoningTokens: 0, cachedPromptTokens: 0 },
  );
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
