// The chat engine contract. Everything inside Infera speaks these camelCase types; the wire's
// snake_case lives only in src/protocol. Engines (llama.cpp, remote upstreams) implement ChatModel.
import type { EngineStats } from './index.ts';

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
  | {
      role: 'assistant';
      content: string | null;
      reasoning?: string;
      toolCalls?: ToolCall[];
      /**
       * Prefix completion (SiliconFlow beta, DeepSeek): only ever on the last message. The engine continues
       * this message instead of starting a new turn, and answers with the continuation only.
       */
      prefix?: boolean;
    }
  | { role: 'tool'; content: string; toolCallId?: string; name?: string };

/**
 * What a tool (function) name may be: OpenAI's rule (^[a-zA-Z0-9_-]{1,64}$) plus dots, which MCP bridges
 * use ("server.tool"). The protocol refuses any other name with a 400 naming the field, so engines rely
 * on it and never check again. node-llama-cpp itself refuses only whitespace (colons render and parse
 * too), but Infera has always refused colons, and clients written against OpenAI never send them.
 */
export const TOOL_NAME_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;
export const TOOL_NAME_RULE = 'must be 1-64 characters of letters, digits, _, . or -';

export interface ToolDefinition {
  /** Matches TOOL_NAME_PATTERN and is unique among the request's tools. */
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

/** SiliconFlow's thinking_budget range; the protocol clamps requests into it. */
export const THINKING_BUDGET_MIN = 128;
export const THINKING_BUDGET_MAX = 32768;
/** SiliconFlow's default thinking budget: what `budgetTokens: undefined` means to every engine. */
export const DEFAULT_THINKING_BUDGET = 4096;

export interface ThinkingOptions {
  /** undefined: the model's default (thinking models think). false: suppress the think block. */
  enabled?: boolean;
  /** Upper bound on reasoning tokens, THINKING_BUDGET_MIN..MAX; undefined: DEFAULT_THINKING_BUDGET. */
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

/**
 * What an engine gets. src/protocol/chat/request.ts has already refused what no engine could honour
 * (the wire rules below are its, and engines do not check them again); engines refuse only what depends
 * on the model itself (context window, schemas their grammar cannot enforce, unsupported content).
 */
export interface ChatCallOptions {
  messages: ChatMessage[];
  tools?: ToolDefinition[];
  /** A named choice names one of `tools`; 'required' comes with at least one tool. */
  toolChoice?: ToolChoice;
  parallelToolCalls?: boolean;
  responseFormat?: ResponseFormat;
  /** Cap on answer tokens (an integer ≥ 1). SiliconFlow semantics: excludes the chain of thought. */
  maxTokens?: number;
  stop?: string[];
  sampling: SamplingOptions;
  thinking: ThinkingOptions;
  /**
   * Number of top alternatives per token (0..20) when logprobs were requested; undefined = no logprobs.
   * Never set on doStream calls: stream parts carry no token probabilities.
   */
  topLogprobs?: number;
  /**
   * Top-level request fields this server does not know (vendor extensions such as vLLM's
   * `chat_template_kwargs`), as the client sent them. An engine that forwards requests to another
   * server (openai-compatible) passes them on; engines that run the model themselves ignore them.
   */
  extra?: Record<string, unknown>;
  /**
   * requests.jsonSchema.maxCompileMs: an engine that turns `responseFormat` or `tools` schemas into a
   * grammar refuses the request (400 naming the field and the cap) when that took longer.
   */
  grammarCompileMs?: number;
  /** Aborted when the client leaves: the engine must stop generating and free its slot promptly. */
  signal: StopSignal;
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
  | {
      type: 'finish';
      finishReason: FinishReason;
      usage: ChatUsage;
      /** As ChatResult.warnings (e.g. usage counted by Infera because the upstream sent none). */
      warnings?: string[];
    };

/**
 * Legacy text completion (`/v1/completions`): raw text in, raw text out, no chat template. src/protocol
 * has refused what no engine could honour; engines refuse what depends on the model (context window,
 * token ids outside the vocabulary, a suffix for a model without fill-in-the-middle tokens).
 */
export interface CompletionCallOptions {
  /**
   * Text, or token ids. Text is tokenized with special-token text parsed as those tokens (what
   * llama.cpp's server and vLLM do), so a client may write a model's own FIM or chat markup itself.
   * The model's beginning-of-sequence token is added as its vocabulary asks; a token prompt that
   * already starts with it does not get a second one.
   */
  prompt: string | number[];
  /** Fill in the middle: the text that follows the completion. Only for models with `infill`. */
  suffix?: string;
  /** Tokens to generate, ≥ 0 (0: only the prompt is counted, nothing is generated). */
  maxTokens: number;
  /** Generation ends before the first of these (which is not returned). */
  stop?: string[];
  sampling: SamplingOptions;
  /** The answer starts with the prompt's text (for token prompts: its detokenized text). */
  echo?: boolean;
  /** Alternatives per generated token (0..5) when logprobs were requested; undefined: no logprobs. */
  topLogprobs?: number;
  /** As ChatCallOptions.extra: unknown top-level fields, for engines that forward requests. */
  extra?: Record<string, unknown>;
  signal: StopSignal;
}

export interface CompletionUsage {
  /** Every token of the rendered input (beginning-of-sequence and FIM tokens included). */
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens found in the KV cache from an earlier request (not evaluated again); absent: none known. */
  cachedPromptTokens?: number;
}

export interface CompletionResult {
  /** With `echo`, the prompt's text and then the generated text. */
  text: string;
  finishReason: 'stop' | 'length';
  usage: CompletionUsage;
  /** Generated tokens only (never the echoed prompt), in order; present when topLogprobs was set. */
  logprobs?: TokenLogprob[];
  warnings: string[];
}

/** Streamed parts: text deltas (the echoed prompt first, as its own delta), then one finish part. */
export type CompletionStreamPart =
  | { type: 'text-delta'; text: string; logprobs?: TokenLogprob[] }
  | { type: 'finish'; finishReason: 'stop' | 'length'; usage: CompletionUsage; warnings?: string[] };

export interface ChatModel {
  readonly kind: 'chat';
  /** The engine-side model name (for logs); the public id lives in the registry. */
  readonly name: string;
  /** Context window in tokens. */
  readonly contextSize: number;
  /**
   * Whether the model can write a chain of thought (which max_tokens does not count). Undefined: assume
   * it can. Serving uses it to bound what a request may cost before it runs.
   */
  readonly thinks?: boolean;
  /**
   * Check the request against this model and count the tokens its prompt takes (template applied).
   * Throws the same 400 doGenerate / doStream would (context_length_exceeded, a schema the engine cannot
   * enforce, ...): the engine is the one owner of the rules that depend on the model, and the serving
   * layer asks it here once, before it starts any choice or takes a place in the queue.
   */
  checkPrompt(options: ChatCallOptions): Promise<number>;
  doGenerate(options: ChatCallOptions): Promise<ChatResult>;
  /**
   * Iterating starts generation; calling return() on the iterator (client left) must stop it and
   * release the sequence, even before the first part was pulled.
   */
  doStream(options: ChatCallOptions): AsyncIterable<ChatStreamPart>;
  /** Its sequences in use and requests waiting for one. */
  stats?(): Promise<EngineStats>;

  // Text completion (/v1/completions), for engines that can run a model without its chat template. An
  // engine offers all three methods or none (serving answers 400 naming `model` for a model without them).

  /** Whether `suffix` can be honoured: the model names fill-in-the-middle prefix and suffix tokens. */
  readonly infill?: boolean;
  /** Same role as checkPrompt: the 400s doComplete would give, and the prompt's token count. */
  checkCompletion?(options: CompletionCallOptions): Promise<number>;
  doComplete?(options: CompletionCallOptions): Promise<CompletionResult>;
  /** Same cancellation rules as doStream. */
  doCompleteStream?(options: CompletionCallOptions): AsyncIterable<CompletionStreamPart>;
}

/**
 * A request's stop, as engines see it: aborted when the client leaves or the server stops the work.
 * An AbortSignal is one. The HTTP layer hands out a lighter one for the requests it serves outside
 * Fastify (src/http/app.ts, PlainRequestContext): Node 20 makes every AbortSignal through a prototype
 * swap that costs ~5 µs of CPU (createAbortSignal: ~1 % of a proxied request's CPU, docs/BENCHMARKS.md,
 * gw8), and a proxied request needs only a listener. Code that hands the stop to an API taking an
 * AbortSignal converts it with abortSignalOf().
 */
export interface StopSignal {
  readonly aborted: boolean;
  readonly reason: unknown;
  throwIfAborted(): void;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
  /** The same stop as an AbortSignal (made on first call where this is not one already). */
  asAbortSignal?(): AbortSignal;
}

/** The stop as an AbortSignal, for an API that takes one. */
export function abortSignalOf(stop: StopSignal): AbortSignal {
  return stop instanceof AbortSignal ? stop : stop.asAbortSignal!();
}

/** A stop that is not an AbortSignal itself (where a value of unknown type may hold one: the engine process's call arguments). */
export function isLighterStop(value: unknown): value is StopSignal & { asAbortSignal(): AbortSignal } {
  return typeof value === 'object' && value !== null && typeof (value as StopSignal).asAbortSignal === 'function' && !(value instanceof AbortSignal);
}
