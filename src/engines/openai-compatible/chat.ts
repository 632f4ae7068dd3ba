// Chat and text completion against an upstream, in OpenAI's shapes with the dialect's differences.
// Answers are normalised to the engine contract: reasoning from `reasoning_content`, `reasoning` or raw
// `<think>` text; tool calls structured or raw `<tool_call>` text; usage always the upstream's (the
// stream asks for it with stream_options even when the client did not), counted by Infera only when the
// upstream sends none, and then said so in the warnings (and the ledger row).
import type { Logger } from 'pino';
import { badRequest, InferaError } from '../../errors/index.ts';
import { RawOutputParser, type RawOutputPart } from '../../protocol/parsers/raw-output.ts';
import { newToolCallId } from '../../protocol/parsers/tool-calls.ts';
import type {
  ChatCallOptions,
  ChatMessage,
  ChatModel,
  ChatResult,
  ChatStreamPart,
  ChatUsage,
  CompletionCallOptions,
  CompletionResult,
  CompletionStreamPart,
  FinishReason,
  StopSignal,
  TokenLogprob,
} from '../../spec/index.ts';
import type { TokenCounter } from './count.ts';
import type { Dialect } from './dialects/index.ts';
import { num, obj } from './dialects/types.ts';
import { EventBatches, NdjsonParser, SseParser, type StreamEvent } from './events.ts';
import { DRAIN_MS, type Json, quote, readText, type Upstream, type UpstreamResponse } from './upstream.ts';

type Options = Omit<ChatCallOptions, 'signal'>;

// ---------------------------------------------------------------------------------------------------
// Requests

function wireMessage(message: ChatMessage, dialect: Dialect): Json {
  switch (message.role) {
    case 'system':
      return { role: 'system', content: message.content };
    case 'user':
      return {
        role: 'user',
        content:
          typeof message.content === 'string'
            ? message.content
            : message.content.map((part) =>
                part.type === 'text'
                  ? { type: 'text', text: part.text }
                  : part.type === 'image'
                    ? { type: 'image_url', image_url: part.detail ? { url: part.url, detail: part.detail } : { url: part.url } }
                    : { type: 'video_url', video_url: { url: part.url } },
              ),
      };
    case 'assistant': {
      const out: Json = { role: 'assistant', content: message.content };
      if (message.toolCalls?.length)
        out.tool_calls = message.toolCalls.map((call) => ({ id: call.id, type: 'function', function: { name: call.name, arguments: call.arguments } }));
      if (dialect.sendsReasoning && message.reasoning) out.reasoning_content = message.reasoning;
      return out;
    }
    case 'tool':
      // OpenAI's tool message has no `name`; the servers built on chat templates use it (Ollama's tool_name).
      return {
        role: 'tool',
        content: message.content,
        ...(message.toolCallId ? { tool_call_id: message.toolCallId } : {}),
        ...(message.name && dialect.name !== 'openai' ? { name: message.name } : {}),
      };
  }
}

/**
 * Sampling fields by their wire names, set on `out` only when the client set them (in this order).
 * Written straight into the body: an object of its own and a setter closure per request, assigned over after.
 */
function putSamplingFields(out: Json, sampling: ChatCallOptions['sampling']): void {
  if (sampling.temperature !== undefined) out.temperature = sampling.temperature;
  if (sampling.topP !== undefined) out.top_p = sampling.topP;
  if (sampling.topK !== undefined) out.top_k = sampling.topK;
  if (sampling.minP !== undefined) out.min_p = sampling.minP;
  if (sampling.frequencyPenalty !== undefined) out.frequency_penalty = sampling.frequencyPenalty;
  if (sampling.presencePenalty !== undefined) out.presence_penalty = sampling.presencePenalty;
  if (sampling.repetitionPenalty !== undefined) out.repetition_penalty = sampling.repetitionPenalty;
  if (sampling.seed !== undefined) out.seed = sampling.seed;
}

/** The OpenAI chat body for `options`, shaped by the dialect. The client's unknown fields go first, so a known field always wins. */
export function chatBody(upstream: Upstream, dialect: Dialect, options: Options, stream: boolean): Json {
  // A literal when the client sent no unknown fields (nearly always); else their copy, then the known
  // fields stored over it (the same keys in the same order as the literal after a spread, whose named
  // properties V8 defines one by one through its runtime).
  let body: Json;
  if (options.extra === undefined) body = { model: upstream.model, messages: options.messages.map((m) => wireMessage(m, dialect)), stream };
  else {
    body = { ...options.extra };
    body.model = upstream.model;
    body.messages = options.messages.map((m) => wireMessage(m, dialect));
    body.stream = stream;
  }
  // Usage for the ledger, whether or not the client asked for it.
  if (stream) body.stream_options = { ...obj(options.extra?.stream_options), include_usage: true };
  if (options.tools)
    body.tools = options.tools.map((tool) => ({
      type: 'function',
      function: {
        name: tool.name,
        ...(tool.description !== undefined ? { description: tool.description } : {}),
        ...(tool.parameters !== undefined ? { parameters: tool.parameters } : {}),
        ...(tool.strict !== undefined ? { strict: tool.strict } : {}),
      },
    }));
  if (options.toolChoice !== undefined)
    body.tool_choice = typeof options.toolChoice === 'string' ? options.toolChoice : { type: 'function', function: { name: options.toolChoice.name } };
  if (options.parallelToolCalls !== undefined) body.parallel_tool_calls = options.parallelToolCalls;
  const format = options.responseFormat;
  if (format)
    body.response_format =
      format.type === 'json_schema'
        ? { type: 'json_schema', json_schema: { name: format.name ?? 'response', schema: format.schema, ...(format.strict !== undefined ? { strict: format.strict } : {}) } }
        : { type: format.type };
  if (options.maxTokens !== undefined) body.max_tokens = options.maxTokens;
  if (options.stop) body.stop = options.stop;
  putSamplingFields(body, options.sampling);
  if (options.topLogprobs !== undefined) {
    body.logprobs = true;
    body.top_logprobs = options.topLogprobs;
  }
  dialect.chatRequest(body, options);
  return body;
}

// ---------------------------------------------------------------------------------------------------
// Answers

const FINISH: Record<string, FinishReason> = { stop: 'stop', length: 'length', tool_calls: 'tool_calls', function_call: 'tool_calls' };

function chatUsageOf(value: unknown): ChatUsage | undefined {
  const usage = obj(value);
  const prompt = num(usage?.prompt_tokens);
  const completion = num(usage?.completion_tokens);
  if (prompt === undefined || completion === undefined) return undefined;
  return {
    promptTokens: prompt,
    completionTokens: completion,
    reasoningTokens: num(obj(usage?.completion_tokens_details)?.reasoning_tokens) ?? 0,
    cachedPromptTokens: num(obj(usage?.prompt_tokens_details)?.cached_tokens) ?? 0,
  };
}

function logprobsOf(value: unknown): TokenLogprob[] | undefined {
  const content = obj(value)?.content;
  if (!Array.isArray(content)) return undefined;
  const bytesOf = (entry: Json) => (Array.isArray(entry.bytes) ? (entry.bytes as number[]) : null);
  return content.map((item) => {
    const entry = obj(item) ?? {};
    return {
      token: String(entry.token ?? ''),
      logprob: num(entry.logprob) ?? 0,
      bytes: bytesOf(entry),
      topLogprobs: (Array.isArray(entry.top_logprobs) ? entry.top_logprobs : []).map((top) => {
        const alt = obj(top) ?? {};
        return { token: String(alt.token ?? ''), logprob: num(alt.logprob) ?? 0, bytes: bytesOf(alt) };
      }),
    };
  });
}

/**
 * Turns one choice's pieces, in order, into contract parts: reasoning as given, answer text through the
 * raw-output parsers (a `<think>` block at its start, `<tool_call>` blocks when the request had tools
 * and the upstream sent no structured calls), structured tool calls renumbered into one index space.
 */
class ChoiceNormalizer {
  private raw?: RawOutputParser;
  private sawReasoning = false;
  private readonly indexOf = new Map<string, number>();
  private readonly argumentsOf: string[] = [];
  finishReason?: FinishReason;
  usage?: ChatUsage;
  text = '';
  reasoning = '';

  constructor(
    private readonly upstream: Upstream,
    private readonly tools: boolean,
  ) {}

  get toolCallCount(): number {
    return this.indexOf.size;
  }

  /** The arguments of every call so far (for counting). */
  get toolText(): string {
    return this.argumentsOf.join('');
  }

  reasoningDelta(text: string, out: ChatStreamPart[]): void {
    if (!text) return;
    this.sawReasoning = true;
    this.reasoning += text;
    out.push({ type: 'reasoning-delta', text });
  }

  textDelta(text: string, out: ChatStreamPart[]): void {
    if (!text) return;
    const { thinkTags, rawToolCalls } = this.upstream.options;
    // Decided at the first text: an upstream that split the reasoning itself left no tags to parse.
    if (!this.raw) {
      const thinking = !this.sawReasoning && thinkTags !== 'off';
      const toolCalls = this.tools && rawToolCalls;
      this.raw = new RawOutputParser({ thinking: thinking ? { startInThinking: thinkTags === 'open' } : false, toolCalls });
    }
    this.route(this.raw.push(text), 'r', out);
  }

  toolCallDelta(call: Json, position: number, out: ChatStreamPart[]): void {
    const fn = obj(call.function) ?? {};
    const key = `s${num(call.index) ?? position}`;
    let index = this.indexOf.get(key);
    if (index === undefined) {
      index = this.indexOf.size;
      this.indexOf.set(key, index);
      this.argumentsOf[index] = '';
      out.push({ type: 'tool-call-start', index, id: typeof call.id === 'string' && call.id ? call.id : newToolCallId(), name: String(fn.name ?? '') });
    }
    const args = typeof fn.arguments === 'string' ? fn.arguments : fn.arguments === undefined ? '' : JSON.stringify(fn.arguments);
    if (args) {
      this.argumentsOf[index] += args;
      out.push({ type: 'tool-call-delta', index, argumentsDelta: args });
    }
  }

  finish(reason: unknown): void {
    if (typeof reason === 'string' && reason) this.finishReason = FINISH[reason] ?? 'stop';
  }

  end(out: ChatStreamPart[]): void {
    if (this.raw) this.route(this.raw.end(), 'r', out);
  }

  private route(parts: RawOutputPart[], space: string, out: ChatStreamPart[]): void {
    for (const part of parts) {
      if (part.type === 'text-delta') {
        this.text += part.text;
        out.push(part);
      } else if (part.type === 'reasoning-delta') {
        this.reasoning += part.text;
        out.push(part);
      } else if (part.type === 'tool-call-start') {
        const index = this.indexOf.size;
        this.indexOf.set(`${space}${part.index}`, index);
        this.argumentsOf[index] = '';
        out.push({ ...part, index });
      } else {
        const index = this.indexOf.get(`${space}${part.index}`)!;
        this.argumentsOf[index] += part.argumentsDelta;
        out.push({ ...part, index });
      }
    }
  }

  /** The finish reason the client sees: tool_calls when calls were made and the upstream said stop. */
  reason(): FinishReason {
    const reason = this.finishReason ?? 'stop';
    return reason === 'stop' && this.toolCallCount > 0 ? 'tool_calls' : reason;
  }
}

/** Usage for a finished choice: the upstream's, or counted here with a warning saying so. */
function settleUsage(
  reported: ChatUsage | undefined,
  /**
   * Called only when the upstream reported no usage: counting the prompt on every answer would cost a
   * JSON.stringify of the tools and, with `upstream.tokenizer`, a second tokenization of the whole prompt
   * per request — for a number that is thrown away whenever usage came (almost always).
   */
  promptTokens: () => number,
  choice: ChoiceNormalizer,
  counter: TokenCounter,
  warnings: string[],
): ChatUsage {
  if (reported) {
    // vLLM, llama-server and Ollama report no reasoning_tokens: the breakdown is counted from the
    // reasoning text (never more than the upstream's total, which stays exact and is what is billed).
    if (reported.reasoningTokens === 0 && choice.reasoning !== '')
      return { ...reported, reasoningTokens: Math.min(reported.completionTokens, counter.count(choice.reasoning)) };
    return reported;
  }
  warnings.push(counter.note);
  const reasoningTokens = counter.count(choice.reasoning);
  return {
    promptTokens: promptTokens(),
    completionTokens: reasoningTokens + counter.count(choice.text) + counter.count(choice.toolText),
    reasoningTokens,
    cachedPromptTokens: 0,
  };
}

/** The error an upstream put in its answer or stream (vLLM: {"object":"error"}; others: {"error": …}). */
function answerError(upstream: Upstream, answer: Json): InferaError | undefined {
  const error = answer.error ?? (answer.object === 'error' ? answer : undefined);
  if (error === undefined) return undefined;
  const message = typeof error === 'string' ? error : String(obj(error)?.message ?? JSON.stringify(error));
  return upstream.broken(`reported an error: ${message}`);
}

// ---------------------------------------------------------------------------------------------------
// The model

export interface RemoteChatOptions {
  upstream: Upstream;
  dialect: Dialect;
  counter: TokenCounter;
  contextSize: number;
  logger: Logger;
}

const PREPARED = Symbol('infera.preparedRequest');
type PreparedOptions = ChatCallOptions & { [PREPARED]?: { model: RemoteChatModel; options: ChatCallOptions; path: string; body: Json } | undefined };

export class RemoteChatModel implements ChatModel {
  readonly kind = 'chat' as const;
  readonly name: string;
  readonly contextSize: number;
  readonly infill: boolean;
  private readonly upstream: Upstream;
  private readonly dialect: Dialect;
  private readonly counter: TokenCounter;
  private readonly native: boolean;

  constructor(options: RemoteChatOptions) {
    this.upstream = options.upstream;
    this.dialect = options.dialect;
    this.counter = options.counter;
    this.contextSize = options.contextSize;
    this.name = this.upstream.model;
    this.infill = this.dialect.infill;
    this.native = this.upstream.options.native && this.dialect.native !== undefined;
    // An engine without the completion methods answers /v1/completions with a 400 naming `model`.
    if (!this.dialect.completions) {
      const self = this as Partial<ChatModel>;
      self.checkCompletion = undefined;
      self.doComplete = undefined;
      self.doCompleteStream = undefined;
    }
  }

  /**
   * The JSON request checkPrompt built, for the doGenerate (or doStream) that follows with the same
   * options object (serving checks the prompt, then generates): the body is built once per request, not
   * twice. Kept on the options object itself (PREPARED), naming this model (a routed request may
   * generate on another deployment) and that object (a copy made for another choice, with its own seed,
   * copies the property too), and taken off it by the call that uses it; a WeakMap cost a trip into V8's
   * runtime per set and per delete on every request.
   */
  private takePrepared(options: ChatCallOptions): { path: string; body: Json } | undefined {
    const prepared = (options as PreparedOptions)[PREPARED];
    if (prepared === undefined) return undefined;
    (options as PreparedOptions)[PREPARED] = undefined;
    return prepared.model === this && prepared.options === options ? prepared : undefined;
  }

  /** The request the upstream will get (refusing what it cannot honour), and an estimate of the prompt's tokens for admission. */
  async checkPrompt(options: ChatCallOptions): Promise<number> {
    const { path, body } = this.request(options, false);
    (options as PreparedOptions)[PREPARED] = { model: this, options, path, body };
    const texts: string[] = [JSON.stringify(options.tools ?? [])];
    for (const message of options.messages) {
      if (typeof message.content === 'string') texts.push(message.content);
      else if (message.content) for (const part of message.content) if (part.type === 'text') texts.push(part.text);
      if (message.role === 'assistant') texts.push(message.reasoning ?? '', JSON.stringify(message.toolCalls ?? []));
    }
    // The template adds a few tokens per message.
    return this.counter.count(texts.join('\n')) + 8 * options.messages.length;
  }

  private request(options: Options, stream: boolean): { path: string; body: Json } {
    const body = chatBody(this.upstream, this.dialect, options, stream);
    if (this.native) return { path: this.dialect.native!.chatPath(this.upstream), body: this.dialect.native!.chatRequest(body) };
    return { path: this.upstream.path('chat/completions'), body };
  }

  async doGenerate(options: ChatCallOptions): Promise<ChatResult> {
    const { signal } = options;
    const { path, body } = this.takePrepared(options) ?? this.request(options, false);
    let answer = await this.upstream.json(path, body, signal);
    if (this.native) answer = this.dialect.native!.chatAnswer(answer, false);
    return this.result(answer, options);
  }

  private result(answer: Json, options: ChatCallOptions): ChatResult {
    const failure = answerError(this.upstream, answer);
    if (failure) throw failure;
    const choice = obj(Array.isArray(answer.choices) ? answer.choices[0] : undefined);
    const message = obj(choice?.message);
    if (!message) throw this.upstream.broken(`answered without choices[0].message: ${quote(JSON.stringify(answer))}`);
    const normalizer = new ChoiceNormalizer(this.upstream, (options.tools?.length ?? 0) > 0);
    const parts: ChatStreamPart[] = [];
    const reasoning = message.reasoning_content ?? message.reasoning;
    if (typeof reasoning === 'string') normalizer.reasoningDelta(reasoning, parts);
    if (Array.isArray(message.tool_calls)) for (const [i, call] of message.tool_calls.entries()) normalizer.toolCallDelta(obj(call) ?? {}, i, parts);
    if (typeof message.content === 'string') normalizer.textDelta(message.content, parts);
    normalizer.end(parts);
    normalizer.finish(choice?.finish_reason);
    const toolCalls: ChatResult['toolCalls'] = [];
    for (const part of parts) {
      if (part.type === 'tool-call-start') toolCalls[part.index] = { id: part.id, name: part.name, arguments: '' };
      else if (part.type === 'tool-call-delta') toolCalls[part.index]!.arguments += part.argumentsDelta;
    }
    const warnings: string[] = [];
    const usage = settleUsage(chatUsageOf(answer.usage), () => this.promptEstimate(options), normalizer, this.counter, warnings);
    const result: ChatResult = { text: normalizer.text, reasoning: normalizer.reasoning, toolCalls, finishReason: normalizer.reason(), usage, warnings };
    const logprobs = logprobsOf(choice?.logprobs);
    if (options.topLogprobs !== undefined) result.logprobs = logprobs ?? [];
    return result;
  }

  private promptEstimate(options: Options): number {
    // Synchronous twin of checkPrompt's count, for the rare answer without usage.
    let text = JSON.stringify(options.tools ?? []);
    for (const message of options.messages) text += typeof message.content === 'string' ? message.content : JSON.stringify(message.content);
    return this.counter.count(text) + 8 * options.messages.length;
  }

  doStream(options: ChatCallOptions): AsyncIterable<ChatStreamPart> {
    // checkPrompt prepared the JSON request for these options. Taken off them here too: left there, it
    // lived as long as the options object, and (as with the WeakMap entry it was before) each stream's
    // prepared body was promoted to old space. Its body is the stream's
    // body but for `stream` and `stream_options` (chatBody), which no dialect without a native API reads.
    const prepared = this.takePrepared(options);
    const build = async (): Promise<{ path: string; body: Json }> => {
      if (!prepared || this.native) return this.request(options, true);
      prepared.body.stream = true;
      prepared.body.stream_options = { ...obj(options.extra?.stream_options), include_usage: true };
      return prepared;
    };
    return new UpstreamStream<ChatStreamPart>(this.upstream, options.signal, this.native ? 'ndjson' : 'sse', build, (events, response) => this.chatParts(events, response, options));
  }

  private async *chatParts(events: AsyncIterable<StreamEvent[]>, response: UpstreamResponse, options: ChatCallOptions): AsyncGenerator<ChatStreamPart> {
    const normalizer = new ChoiceNormalizer(this.upstream, (options.tools?.length ?? 0) > 0);
    let usage: ChatUsage | undefined;
    let done = false;
    read: for await (const batch of events) {
      for (const event of batch) {
        if (event.type === 'done') {
          done = true;
          break read;
        }
        let chunk = this.parseEvent(event);
        if (this.native) chunk = this.dialect.native!.chatAnswer(chunk, true);
        const failure = answerError(this.upstream, chunk);
        if (failure) throw failure;
        usage = chatUsageOf(chunk.usage) ?? usage;
        const parts: ChatStreamPart[] = [];
        for (const item of Array.isArray(chunk.choices) ? chunk.choices : []) {
          const choice = obj(item);
          // n is always 1 upstream (serving runs one call per choice).
          if (!choice || (num(choice.index) ?? 0) !== 0) continue;
          const delta = obj(choice.delta) ?? obj(choice.message) ?? {};
          const reasoning = delta.reasoning_content ?? delta.reasoning;
          if (typeof reasoning === 'string') normalizer.reasoningDelta(reasoning, parts);
          if (Array.isArray(delta.tool_calls)) for (const [i, call] of delta.tool_calls.entries()) normalizer.toolCallDelta(obj(call) ?? {}, i, parts);
          if (typeof delta.content === 'string') normalizer.textDelta(delta.content, parts);
          normalizer.finish(choice.finish_reason);
        }
        // One by one: an async generator's yield* over an array awaits each element through an async-from-sync iterator.
        for (const part of parts) yield part;
      }
    }
    if (!done && normalizer.finishReason === undefined)
      throw this.upstream.broken(`ended its stream before finishing the answer (no finish_reason and no [DONE]; content-type ${response.contentType})`);
    const tail: ChatStreamPart[] = [];
    normalizer.end(tail);
    for (const part of tail) yield part;
    const warnings: string[] = [];
    const settled = settleUsage(usage, () => this.promptEstimate(options), normalizer, this.counter, warnings);
    yield { type: 'finish', finishReason: normalizer.reason(), usage: settled, ...(warnings.length ? { warnings } : {}) };
  }

  private parseEvent(event: StreamEvent & { type: 'data' }): Json {
    try {
      const value: unknown = JSON.parse(event.data);
      if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Json;
    } catch {
      // reported below
    }
    if (event.event === 'error') throw this.upstream.broken(`reported an error in its stream: ${quote(event.data)}`);
    throw this.upstream.broken(`sent a stream event that is not a JSON object: ${quote(event.data)}`);
  }

  // -------------------------------------------------------------------------------------------------
  // Text completion (/v1/completions)

  private completionBody(options: Omit<CompletionCallOptions, 'signal'>, stream: boolean): Json {
    const body: Json = { ...options.extra, model: this.upstream.model, prompt: options.prompt, max_tokens: options.maxTokens, stream };
    if (stream) body.stream_options = { ...obj(options.extra?.stream_options), include_usage: true };
    if (options.suffix !== undefined) body.suffix = options.suffix;
    if (options.stop) body.stop = options.stop;
    if (options.echo) body.echo = true;
    if (options.topLogprobs !== undefined) body.logprobs = options.topLogprobs;
    putSamplingFields(body, options.sampling);
    return body;
  }

  async checkCompletion(options: CompletionCallOptions): Promise<number> {
    if (options.suffix !== undefined && !this.infill)
      throw badRequest(`suffix: fill in the middle is not supported by ${this.upstream.label}.`, 'suffix');
    return typeof options.prompt === 'string' ? this.counter.count(options.prompt) + 1 : options.prompt.length;
  }

  async doComplete(options: CompletionCallOptions): Promise<CompletionResult> {
    const { signal, ...rest } = options;
    const answer = await this.upstream.json(this.upstream.path('completions'), this.completionBody(rest, false), signal);
    const failure = answerError(this.upstream, answer);
    if (failure) throw failure;
    const choice = obj(Array.isArray(answer.choices) ? answer.choices[0] : undefined);
    if (!choice || typeof choice.text !== 'string') throw this.upstream.broken(`answered without choices[0].text: ${quote(JSON.stringify(answer))}`);
    const warnings: string[] = [];
    const usage = completionUsageOf(answer.usage) ?? this.countCompletion(options, choice.text, warnings);
    const result: CompletionResult = { text: choice.text, finishReason: choice.finish_reason === 'length' ? 'length' : 'stop', usage, warnings };
    if (options.topLogprobs !== undefined) result.logprobs = legacyLogprobs(choice.logprobs);
    return result;
  }

  private countCompletion(options: Omit<CompletionCallOptions, 'signal'>, text: string, warnings: string[]) {
    warnings.push(this.counter.note);
    const prompt = typeof options.prompt === 'string' ? this.counter.count(options.prompt) : options.prompt.length;
    const generated = options.echo && typeof options.prompt === 'string' && text.startsWith(options.prompt) ? text.slice(options.prompt.length) : text;
    return { promptTokens: prompt, completionTokens: this.counter.count(generated) };
  }

  doCompleteStream(options: CompletionCallOptions): AsyncIterable<CompletionStreamPart> {
    const { signal, ...rest } = options;
    return new UpstreamStream<CompletionStreamPart>(
      this.upstream,
      signal,
      'sse',
      async () => ({ path: this.upstream.path('completions'), body: this.completionBody(rest, true) }),
      (events, response) => this.completionParts(events, response, rest),
    );
  }

  private async *completionParts(events: AsyncIterable<StreamEvent[]>, response: UpstreamResponse, options: Omit<CompletionCallOptions, 'signal'>): AsyncGenerator<CompletionStreamPart> {
    let usage: CompletionResult['usage'] | undefined;
    let finish: 'stop' | 'length' | undefined;
    let text = '';
    let done = false;
    read: for await (const batch of events) {
      for (const event of batch) {
        if (event.type === 'done') {
          done = true;
          break read;
        }
        const chunk = this.parseEvent(event);
        const failure = answerError(this.upstream, chunk);
        if (failure) throw failure;
        usage = completionUsageOf(chunk.usage) ?? usage;
        const choice = obj(Array.isArray(chunk.choices) ? chunk.choices[0] : undefined);
        if (!choice) continue;
        if (typeof choice.text === 'string' && choice.text !== '') {
          text += choice.text;
          const logprobs = options.topLogprobs !== undefined ? legacyLogprobs(choice.logprobs) : undefined;
          yield logprobs ? { type: 'text-delta', text: choice.text, logprobs } : { type: 'text-delta', text: choice.text };
        }
        if (typeof choice.finish_reason === 'string' && choice.finish_reason) finish = choice.finish_reason === 'length' ? 'length' : 'stop';
      }
    }
    if (!done && finish === undefined) throw this.upstream.broken(`ended its stream before finishing the answer (content-type ${response.contentType})`);
    const warnings: string[] = [];
    const settled = usage ?? this.countCompletion(options, text, warnings);
    yield { type: 'finish', finishReason: finish ?? 'stop', usage: settled, ...(warnings.length ? { warnings } : {}) };
  }
}

function completionUsageOf(value: unknown): CompletionResult['usage'] | undefined {
  const usage = obj(value);
  const prompt = num(usage?.prompt_tokens);
  const completion = num(usage?.completion_tokens);
  if (prompt === undefined || completion === undefined) return undefined;
  const cached = num(obj(usage?.prompt_tokens_details)?.cached_tokens);
  return cached === undefined ? { promptTokens: prompt, completionTokens: completion } : { promptTokens: prompt, completionTokens: completion, cachedPromptTokens: cached };
}

/** Legacy completion logprobs ({tokens, token_logprobs, top_logprobs: [{token: logprob}]}) in the contract's shape. */
function legacyLogprobs(value: unknown): TokenLogprob[] {
  const logprobs = obj(value);
  const tokens = Array.isArray(logprobs?.tokens) ? logprobs.tokens : [];
  const values = Array.isArray(logprobs?.token_logprobs) ? logprobs.token_logprobs : [];
  const tops = Array.isArray(logprobs?.top_logprobs) ? logprobs.top_logprobs : [];
  return tokens.map((token, i) => ({
    token: String(token),
    logprob: num(values[i]) ?? 0,
    bytes: null,
    topLogprobs: Object.entries(obj(tops[i]) ?? {}).map(([alt, logprob]) => ({ token: alt, logprob: num(logprob) ?? 0, bytes: null })),
  }));
}

/**
 * A streamed upstream answer as the contract wants it: nothing is sent before the first next(); return()
 * — the client left — destroys the upstream response at once, even while a read is pending, so the
 * upstream sees its connection close and stops generating. Stream events are read only when the client
 * pulls (backpressure). A JSON answer to a stream request (a server that ignores `stream`) is read whole
 * and replayed as events; any other content type is a 502.
 */
class UpstreamStream<P> implements AsyncIterableIterator<P> {
  private response?: UpstreamResponse & { done(): void; failure(error: unknown): unknown };
  private parts?: AsyncGenerator<P>;
  private closed = false;

  constructor(
    private readonly upstream: Upstream,
    private readonly signal: StopSignal,
    private readonly framing: 'sse' | 'ndjson',
    private readonly request: () => Promise<{ path: string; body: Json }>,
    private readonly toParts: (events: AsyncIterable<StreamEvent[]>, response: UpstreamResponse) => AsyncGenerator<P>,
  ) {}

  [Symbol.asyncIterator]() {
    return this;
  }

  async next(): Promise<IteratorResult<P>> {
    if (this.closed) return { done: true, value: undefined };
    try {
      if (!this.parts) {
        const { path, body } = await this.request();
        const response = await this.upstream.send('POST', path, body, this.signal, this.framing === 'sse' ? 'text/event-stream' : 'application/x-ndjson');
        this.response = response;
        if (this.closed) {
          this.release();
          return { done: true, value: undefined };
        }
        this.parts = this.toParts(this.events(response), response);
      }
      const next = await this.parts.next();
      if (next.done) this.release();
      return next;
    } catch (error) {
      const response = this.response;
      this.release();
      throw response && !(error instanceof InferaError) ? response.failure(error) : error;
    }
  }

  /** The answer's events, one batch per chunk read. */
  private events(response: UpstreamResponse): AsyncIterable<StreamEvent[]> {
    const type = response.contentType;
    if (/\bjson\b/.test(type) && !type.includes('ndjson')) return this.replayed(response, type);
    if (this.framing === 'sse' && !type.includes('text/event-stream'))
      throw this.upstream.broken(`answered a stream request with content-type ${type || '(none)'} instead of text/event-stream`);
    if (this.framing === 'ndjson' && !type.includes('ndjson') && !type.includes('text/'))
      throw this.upstream.broken(`answered a stream request with content-type ${type || '(none)'} instead of application/x-ndjson`);
    return new EventBatches(response.body, this.framing === 'sse' ? new SseParser() : new NdjsonParser(), () => response.body.drain(DRAIN_MS));
  }

  /** One whole answer instead of a stream: replayed as one event (completion objects carry `message`, which the readers accept). */
  private async *replayed(response: UpstreamResponse, type: string): AsyncGenerator<StreamEvent[]> {
    const text = await readText(response.body, 256 * 1024 * 1024);
    const answer = this.upstream.parseJson(text, type);
    yield [{ type: 'data', data: JSON.stringify(this.framing === 'ndjson' ? answer : asChunk(answer)) }, { type: 'done' }];
  }

  async return(): Promise<IteratorResult<P>> {
    if (!this.closed) {
      this.closed = true;
      this.release();
    }
    return { done: true, value: undefined };
  }

  private release(): void {
    this.closed = true;
    const response = this.response;
    if (!response) return;
    this.response = undefined;
    response.done();
    // Destroying (not draining) closes the connection: the upstream notices and stops generating. A
    // body already draining after its [DONE] (EventBatches) is left to end and keep its connection.
    if (!response.body.destroyed && !response.body.readableEnded && !response.body.draining) response.body.destroy();
  }
}

/** A whole chat completion as one stream chunk: `message` read as `delta`, the usage kept. */
function asChunk(answer: Json): Json {
  if (!Array.isArray(answer.choices)) return answer;
  return { ...answer, choices: answer.choices.map((choice) => ({ ...obj(choice), delta: obj(choice)?.message ?? obj(choice)?.delta })) };
}
