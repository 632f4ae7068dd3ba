// The chat engine contract. Everything inside Infera speaks these camelCase types; the wire's
// snake_case lives only in src/protocol. Engines (llama.cpp, remote upstreams) implement ChatModel.

export type JsonSchema = Record<string, unknown>;

export interface TextPart {
  type: 'text';
  text: string;
}
export interface ImagePart {
  type: 'image';
  /** data: URI or http(s) URL, as the client sent it. */
  url: string;
  detail?: 'auto' | 'low' | 'high';
}
export interface VideoPart {
  type: 'video';
  url: string;
}
export type UserContentPart = TextPart | ImagePart | VideoPart;

export interface ToolCall {
  id: string;
  name: string;
  /** JSON text exactly as the model produced it (OpenAI sends arguments as a string). */
  arguments: string;
}

export type ChatMessage =
  | { role: 'system'; content: string }
  | { role: 'user'; content: string | UserContentPart[] }
  | { role: 'assistant'; content: string | null; reasoning?: string; toolCalls?: ToolCall[] }
  | { role: 'tool'; content: string; toolCallId?: string; name?: string };

export interface ToolDefinition {
  name: string;
  description?: string;
  /** JSON schema of the arguments; may carry "$schema" / "additionalProperties" from LangChain or the AI SDK. */
  parameters?: JsonSchema;
  strict?: boolean;
}

/** 'none': never call; 'auto': model decides; 'required': must call one; {name}: must call that one. */
export type ToolChoice = 'none' | 'auto' | 'required' | { name: string };

export type ResponseFormat =
  | { type: 'text' }
  | { type: 'json_object' }
  | { type: 'json_schema'; name?: string; schema: JsonSchema; strict?: boolean };

export interface ThinkingOptions {
  /** undefined: the model's default (thinking models think). false: suppress the think block. */
  enabled?: boolean;
  /** Upper bound on reasoning tokens (SiliconFlow thinking_budget, clamped to 128..32768). */
  budgetTokens?: number;
}

export interface SamplingOptions {
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  frequencyPenalty?: number;
  presencePenalty?: number;
  repetitionPenalty?: number;
  seed?: number;
}

export interface ChatCallOptions {
  messages: ChatMessage[];
  tools?: ToolDefinition[];
  toolChoice?: ToolChoice;
  parallelToolCalls?: boolean;
  responseFormat?: ResponseFormat;
  /** Cap on answer tokens. SiliconFlow semantics: excludes the chain of thought. */
  maxTokens?: number;
  stop?: string[];
  sampling: SamplingOptions;
  thinking: ThinkingOptions;
  /** Number of top alternatives per token when logprobs were requested; undefined = no logprobs. */
  topLogprobs?: number;
  /** Aborted when the client leaves: the engine must stop generating and free its slot promptly. */
  signal: AbortSignal;
}

export type FinishReason = 'stop' | 'length' | 'tool_calls';

export interface ChatUsage {
  promptTokens: number;
  completionTokens: number;
  reasoningTokens: number;
  cachedPromptTokens: number;
}

export interface TokenLogprob {
  token: string;
  logprob: number;
  bytes: number[] | null;
  topLogprobs: { token: string; logprob: number; bytes: number[] | null }[];
}

export interface ChatResult {
  text: string;
  reasoning: string;
  toolCalls: ToolCall[];
  finishReason: FinishReason;
  usage: ChatUsage;
  logprobs?: TokenLogprob[];
  /** Settings the engine accepted but could only approximate (logged, never silently dropped). */
  warnings: string[];
}

/** Streamed parts, in order. Tool calls: one tool-call-start per call, then argument fragments. */
export type ChatStreamPart =
  | { type: 'reasoning-delta'; text: string }
  | { type: 'text-delta'; text: string }
  | { type: 'tool-call-start'; index: number; id: string; name: string }
  | { type: 'tool-call-delta'; index: number; argumentsDelta: string }
  | { type: 'finish'; finishReason: FinishReason; usage: ChatUsage };

export interface ChatModel {
  readonly kind: 'chat';
  /** The engine-side model name (for logs); the public id lives in the registry. */
  readonly name: string;
  /** Context window in tokens, used for context_length_exceeded checks. */
  readonly contextSize: number;
  /** Count the tokens the prompt of these options would take (template applied). */
  countPromptTokens(options: ChatCallOptions): Promise<number>;
  doGenerate(options: ChatCallOptions): Promise<ChatResult>;
  /**
   * Iterating starts generation; calling return() on the iterator (client left) must stop it and
   * release the sequence, even before the first part was pulled.
   */
  doStream(options: ChatCallOptions): AsyncIterable<ChatStreamPart>;
}
