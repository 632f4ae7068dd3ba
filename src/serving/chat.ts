// POST /v1/chat/completions: parse (wire rules) → resolve model → admit (keys, limits, balance) → load →
// the engine checks what depends on the model (context window, schemas) once → generate (n choices) →
// meter. Streams are peeked before the HTTP status is sent, so queue-full,
// context and engine errors that happen before the first token are still normal HTTP errors.
import { InferaError, isAbortError } from '../errors/index.ts';
import type { UsageReport } from '../platform/gate.ts';
import { type ParsedChatRequest, parseChatRequestOrRefusal } from '../protocol/chat/request.ts';
import { buildChatCompletion, combineChoiceUsage, newChatCompletionId } from '../protocol/chat/response.ts';
import { chatCompletionFrames, chatStreamErrorFrames } from '../protocol/chat/stream.ts';
import { DEFAULT_THINKING_BUDGET, type ChatCallOptions, type ChatModel, type ChatStreamPart, type ChatUsage } from '../spec/index.ts';
import type { ModelEntry, ModelLease } from '../registry/registry.ts';
import type { RequestContext, ServeResult, Services } from './context.ts';
import { admitFor, failureNote, statusOf, streamEnd, usageReport, warningsNote } from './usage.ts';
import { MeteredStream } from './metered-stream.ts';

/** Completion tokens assumed for limit pre-checks when the request sets no max_tokens. */
const DEFAULT_ESTIMATE_COMPLETION = 512;
/** Context assumed for the balance reservation of an engine that declares none before loading (corrected once loaded). */
const FALLBACK_CONTEXT_SIZE = 4096;
/** Tokens an engine may add around a chain of thought beyond its budget (think tags, a forced close). */
const THINKING_SLACK = 16;

/** A chat request that passed the checks needing neither the model nor the platform: its body's rules and its model id. */
export interface CheckedChatRequest {
  request: ParsedChatRequest;
  entry: ModelEntry;
}

/**
 * The body parsed by the wire rules and the model resolved (throws their 400s): what a request is
 * refused for before any work or any promise, so the HTTP layer can answer those refusals without the
 * cost of a rejection (serveChatCompletion does it itself when not given its result). The refusal is
 * returned where it is the commonest kind (no messages, an unknown model), thrown otherwise.
 */
export function checkChatRequest(services: Services, body: unknown): CheckedChatRequest | InferaError {
  // The commonest refusals (no messages, an unknown model) come back as values; the rarer ones are thrown.
  // Given the registry: a plain body naming a model nothing serves is refused before it is parsed whole.
  const request = parseChatRequestOrRefusal(body, services.config.requests, services.registry);
  if (request instanceof InferaError) return request;
  const entry = services.registry.lookup(request.model, 'chat');
  return entry instanceof InferaError ? entry : { request, entry };
}

export async function serveChatCompletion(services: Services, context: RequestContext, body: unknown, given?: CheckedChatRequest): Promise<ServeResult> {
  const limits = services.config.requests;
  const checked = given ?? checkChatRequest(services, body);
  if (checked instanceof InferaError) throw checked;
  const { request, entry } = checked;
  // Counted once: the estimate below and the unfittable-prompt check after the lease both need it.
  const characters = promptCharacters(request.options);
  const promptEstimate = estimatePromptTokens(request.options, characters);
  // Worst case before the model is loaded: max_tokens (or the whole context) for every choice. Once the
  // model has counted the prompt, resize() makes it exact, thinking budget included.
  const contextSize = services.registry.contextSize(entry) ?? FALLBACK_CONTEXT_SIZE;
  const admission = await admitFor(services, context, entry, request.model, 'chat', {
    estimatedTokens: promptEstimate + (request.options.maxTokens ?? DEFAULT_ESTIMATE_COMPLETION) * request.n,
    images: 0,
    worstCase: { promptTokens: promptEstimate, completionTokens: (request.options.maxTokens ?? contextSize) * request.n, images: 0, documents: 0 },
    // Loaded: the exact worst case is known before anything runs (resize below), so the balance is
    // taken once, there, instead of reserved here and resized there (one SQLite write fewer on the
    // critical path). Not loaded: reserved here, so a request refused for its balance never waits for
    // or causes a load.
    deferReservation: entry.state === 'ready',
  });
  // The parsed options themselves (made for this request and used by nothing else), their two fields
  // added: a spread copy's map was one V8 would not keep fast transitions or load handlers for, so each
  // field defined on it, and then many loads from it (the engine's prompt check, its request body), went
  // through V8's runtime on every request (DefineNamedOwnIC_Slow, LoadIC_Miss, KeyedStoreIC_Slow).
  const options = request.options as ChatCallOptions;
  options.grammarCompileMs = limits.jsonSchema.maxCompileMs;
  options.signal = context.signal;
  let promptTokens = 0;
  let lease: ModelLease<ChatModel> | undefined;

  // From here on the request is metered: settled exactly once, whatever happens.
  let settled = false;
  const settle = async (usage: ChatUsage, outcome: UsageReport['outcome'], status: number, note?: string) => {
    if (settled) return;
    settled = true;
    await admission.settle(usageReport(context, usage, outcome, status, note));
  };
  const meta = { id: newChatCompletionId(), created: Math.floor(Date.now() / 1000), model: request.model, legacyFunctions: request.legacyFunctions };
  const meters: MeteredChatStream[] = [];
  let streaming = false;
  try {
    const leaseOptions = { keepAliveMs: request.keepAliveMs };
    lease = services.registry.acquireNow(entry.config.id, 'chat', leaseOptions) ?? (await services.registry.acquire(entry.config.id, 'chat', leaseOptions));
    const model = lease.model;
    refuseUnfittablePrompt(model, characters, limits.maxCharsPerToken);
    const counted = await model.checkPrompt(options);
    // Refused here (the exact worst case is not covered), nothing ran: the row is free, prompt included.
    await admission.resize({ promptTokens: counted, completionTokens: maxCompletionTokens(model, options, counted) * request.n, images: 0, documents: 0 });
    promptTokens = counted;
    if (!request.stream) {
      const called = performance.now();
      // n = 1 (nearly every request) without Promise.all and its arrays: one promise fewer to wait through.
      const results =
        request.n === 1 ? [await model.doGenerate(options)] : await Promise.all(Array.from({ length: request.n }, (_, i) => model.doGenerate(choiceOptions(options, i))));
      for (const result of results)
        if (result.warnings.length) context.logger.warn({ warnings: result.warnings }, 'engine approximated settings');
      const usage = combineChoiceUsage(results.map((r) => r.usage));
      services.metrics.generationRate(entry.config.id, false, usage.completionTokens, (performance.now() - called) / 1000);
      await settle(usage, 'ok', 200, warningsNote(results.length === 1 ? results[0]!.warnings : results.flatMap((r) => r.warnings)));
      return { type: 'json', body: buildChatCompletion(meta, results), headers: admission.headers };
    }

    // Streaming: start every choice and wait for its first part before committing to a 200.
    for (let i = 0; i < request.n; i++) meters.push(new MeteredChatStream(model, choiceOptions(options, i), promptTokens));
    if (meters.length === 1) await meters[0]!.peek();
    else await Promise.all(meters.map((meter) => meter.peek()));
    const firstTokenAt = performance.now();
    services.metrics.firstToken(entry.config.id, (firstTokenAt - context.startedAt) / 1000);
    const frames = chatCompletionFrames(meta, meters, { includeUsage: request.includeUsage });
    streaming = true;
    return {
      type: 'sse',
      headers: admission.headers,
      frames: new SettlingFrames(frames, async (outcome, failure) => {
        await Promise.all(meters.map((meter) => meter.return()));
        lease?.release();
        const { status, note } = streamEnd(context, outcome, failure, meters.flatMap((meter) => meter.warnings));
        const usage = combineChoiceUsage(meters.map((meter) => meter.usage()));
        if (outcome === 'ok') services.metrics.generationRate(entry.config.id, true, usage.completionTokens, (performance.now() - firstTokenAt) / 1000);
        await settle(usage, outcome, status, note);
      }),
    };
  } catch (error) {
    await Promise.all(meters.map((meter) => meter.return()));
    const usage = meters.length ? combineChoiceUsage(meters.map((meter) => meter.usage())) : emptyUsage(promptTokens);
    await settle(usage, isAbortError(error) ? 'cancelled' : 'error', statusOf(error, context), failureNote(error));
    throw error;
  } finally {
    if (!streaming) lease?.release();
  }
}

/** With a seed and n > 1, each choice gets its own seed, or all n answers would be the same text. */
function choiceOptions(options: ChatCallOptions, index: number): ChatCallOptions {
  if (index === 0 || options.sampling.seed === undefined) return options;
  return { ...options, sampling: { ...options.sampling, seed: options.sampling.seed + index } };
}

/**
 * The most one choice can generate: never more than the context leaves after the prompt; with
 * max_tokens, that (SiliconFlow's max_tokens excludes the chain of thought) plus the thinking budget
 * when the model may think.
 */
function maxCompletionTokens(model: ChatModel, options: ChatCallOptions, promptTokens: number): number {
  const room = Math.max(0, model.contextSize - promptTokens);
  if (options.maxTokens === undefined) return room;
  const thinks = model.thinks !== false && options.thinking.enabled !== false;
  const thought = thinks ? (options.thinking.budgetTokens ?? DEFAULT_THINKING_BUDGET) + THINKING_SLACK : 0;
  return Math.min(room, options.maxTokens + thought);
}

/** Before the model is loaded there is no tokenizer: about 3 characters per token errs on the high side. */
function estimatePromptTokens(options: Omit<ChatCallOptions, 'signal'>, characters: number): number {
  return Math.ceil(characters / 3) + 8 * options.messages.length;
}

/**
 * A prompt with more characters than the context could hold even at `maxCharsPerToken` characters a
 * token is refused before it is tokenized: tokenizing runs on the main thread (a 7 MB message stalled
 * every request for 4 s only to be refused for its length afterwards).
 */
function refuseUnfittablePrompt(model: ChatModel, characters: number, maxCharsPerToken: number): void {
  if (characters <= model.contextSize * maxCharsPerToken) return;
  throw new InferaError({
    status: 400,
    code: 'context_length_exceeded',
    param: 'messages',
    message:
      `This model's maximum context length is ${model.contextSize} tokens. However, your messages have ${characters} characters, ` +
      `more than ${model.contextSize} tokens can hold (at most ${maxCharsPerToken} characters a token). Please reduce the length of the messages.`,
  });
}

function promptCharacters(options: Omit<ChatCallOptions, 'signal'>): number {
  let characters = 0;
  for (const message of options.messages) {
    if (typeof message.content === 'string') characters += message.content.length;
    else if (message.content) for (const part of message.content) if (part.type === 'text') characters += part.text.length;
    if (message.role === 'assistant') characters += (message.reasoning?.length ?? 0) + JSON.stringify(message.toolCalls ?? []).length;
  }
  characters += JSON.stringify(options.tools ?? []).length;
  return characters;
}

const emptyUsage = (promptTokens: number): ChatUsage => ({ promptTokens, completionTokens: 0, reasoningTokens: 0, cachedPromptTokens: 0 });


/** A chat choice's stream, metered by its finish part's usage or, when the client left first, its deltas. */
class MeteredChatStream extends MeteredStream<ChatStreamPart> {
  private finalUsage?: ChatUsage;
  private reasoningParts = 0;
  private otherParts = 0;

  constructor(model: ChatModel, options: ChatCallOptions, private readonly promptTokens: number) {
    super(model.doStream(options));
  }

  protected meter(part: ChatStreamPart): void {
    if (part.type === 'finish') this.finalUsage = part.usage;
    else if (part.type === 'reasoning-delta') this.reasoningParts++;
    else this.otherParts++;
  }

  /** Exact when the stream finished; otherwise one token per delta seen (engines emit about one per token). */
  usage(): ChatUsage {
    return (
      this.finalUsage ?? {
        promptTokens: this.promptTokens,
        completionTokens: this.reasoningParts + this.otherParts,
        reasoningTokens: this.reasoningParts,
        cachedPromptTokens: 0,
      }
    );
  }
}

/**
 * Wraps the SSE frames so that usage is settled exactly once — after the last frame, after a
 * mid-stream error (rendered as an error frame), or when the HTTP layer calls return() because the
 * client left — and before the HTTP layer ends the response.
 */
export class SettlingFrames implements AsyncIterator<string, void> {
  private finished = false;
  /** return() was called: whatever the frames do from now on, the outcome is 'cancelled'. */
  private cancelled = false;
  /** Frames still to send after a mid-stream error (the error frame, then [DONE]). */
  private trailer: string[] = [];

  constructor(
    private readonly frames: AsyncIterator<string, void>,
    private readonly finish: (outcome: UsageReport['outcome'], failure?: unknown) => Promise<void>,
  ) {}

  async next(): Promise<IteratorResult<string, void>> {
    const queued = this.trailer.shift();
    if (queued !== undefined) return { done: false, value: queued };
    if (this.finished || this.cancelled) return { done: true, value: undefined };
    try {
      const next = await this.frames.next();
      // return() may run while this next() is pending (the client left, or shutdown stopped the
      // stream): an engine that ends its answer early on abort must not be recorded as finished.
      if (this.cancelled) {
        await this.close('cancelled');
        return { done: true, value: undefined };
      }
      if (next.done) await this.close('ok');
      return next;
    } catch (error) {
      if (isAbortError(error) || this.cancelled) {
        await this.close('cancelled');
        return { done: true, value: undefined };
      }
      await this.close('error', error);
      this.trailer = chatStreamErrorFrames(error);
      return this.next();
    }
  }

  async return(): Promise<IteratorResult<string, void>> {
    this.trailer = [];
    this.cancelled = true;
    if (!this.finished) {
      await this.frames.return?.();
      await this.close('cancelled');
    }
    // A settlement already under way (a pending next() saw the cancellation first) is waited for too:
    // the HTTP layer ends the response only after this returns, and the row must be written by then.
    await this.settled;
    return { done: true, value: undefined };
  }

  private settled: Promise<void> | undefined;

  private close(outcome: UsageReport['outcome'], failure?: unknown): Promise<void> {
    if (!this.finished) {
      this.finished = true;
      this.settled = this.finish(outcome, failure);
    }
    return this.settled ?? Promise.resolve();
  }
}
