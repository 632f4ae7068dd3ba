// POST /v1/completions: parse (wire rules) → resolve a chat model → admit (keys, limits, balance) →
// load → the engine checks each prompt against the model (FIM support, context, vocabulary) once →
// generate (prompts × n choices) → meter. The same platform path as chat: streams are peeked before
// the status is sent, settled exactly once, and stopped when the client leaves or the route times out.
import { InferaError, badRequest, isAbortError } from '../errors/index.ts';
import type { UsageReport } from '../platform/gate.ts';
import { buildTextCompletion, newTextCompletionId, parseCompletionRequest, requestCachedTokens } from '../protocol/completions.ts';
import { TextCompletionFrames } from '../protocol/completions-stream.ts';
import type { ChatModel, CompletionCallOptions, CompletionStreamPart, CompletionUsage } from '../spec/index.ts';
import type { ModelEntry, ModelLease } from '../registry/registry.ts';
import { SettlingFrames } from './chat.ts';
import type { RequestContext, ServeResult, Services } from './context.ts';
import { admitFor, failureNote, statusOf, streamEnd, usageReport, warningsNote } from './usage.ts';
import { MeteredStream } from './metered-stream.ts';

/** Context assumed for the balance reservation of an engine that declares none before loading (corrected once loaded). */
const FALLBACK_CONTEXT_SIZE = 4096;

type CompletingModel = ChatModel & Required<Pick<ChatModel, 'checkCompletion' | 'doComplete' | 'doCompleteStream'>>;

const completes = (model: ChatModel): model is CompletingModel =>
  typeof model.checkCompletion === 'function' && typeof model.doComplete === 'function' && typeof model.doCompleteStream === 'function';

/** A text completion request that passed the checks needing neither the model nor the platform. */
export interface CheckedCompletionRequest {
  request: ReturnType<typeof parseCompletionRequest>;
  entry: ModelEntry;
}

/**
 * What a text completion request is refused for before any work (throws those 400s): the body's rules
 * and the model id. The HTTP layer runs it on its own (src/http/quick.ts) and passes the result in.
 */
export function checkCompletionRequest(services: Services, body: unknown): CheckedCompletionRequest {
  const request = parseCompletionRequest(body, services.config.requests);
  return { request, entry: services.registry.resolve(request.model, 'chat') };
}

export async function serveCompletion(services: Services, context: RequestContext, body: unknown, given?: CheckedCompletionRequest): Promise<ServeResult> {
  const limits = services.config.requests;
  const { request, entry } = given ?? checkCompletionRequest(services, body);
  const choices = request.prompts.length * request.n;
  const promptEstimate = request.prompts.reduce<number>((sum, prompt) => sum + estimateTokens(prompt, request.options.suffix), 0);
  const { maxTokens } = request.options;
  const contextSize = services.registry.contextSize(entry) ?? FALLBACK_CONTEXT_SIZE;
  const admission = await admitFor(services, context, entry, request.model, 'completions', {
    estimatedTokens: promptEstimate + maxTokens * choices,
    images: 0,
    worstCase: { promptTokens: promptEstimate, completionTokens: Math.min(maxTokens, contextSize) * choices, images: 0, documents: 0 },
    // As for chat: on a loaded model the balance is taken once, by the resize below, once the prompts
    // are counted (one SQLite write fewer per request); not loaded, it is reserved here, so a request
    // refused for its balance never waits for or causes a load.
    deferReservation: entry.state === 'ready',
  });
  let promptTokens = 0;
  let lease: ModelLease<ChatModel> | undefined;

  let settled = false;
  const settle = async (usage: CompletionUsage, outcome: UsageReport['outcome'], status: number, note?: string) => {
    if (settled) return;
    settled = true;
    await admission.settle(usageReport(context, usage, outcome, status, note));
  };
  const meta = { id: newTextCompletionId(), created: Math.floor(Date.now() / 1000), model: request.model };
  const meters: MeteredCompletion[] = [];
  let streaming = false;
  try {
    lease = await services.registry.acquire(entry.config.id, 'chat', { keepAliveMs: request.keepAliveMs });
    const model = lease.model;
    if (!completes(model))
      throw badRequest(`model: "${request.model}" serves chat only; its engine cannot run text completions.`, 'model', 'unsupported_model');
    // One options object per choice: prompt p's choice i is choice p * n + i.
    const perChoice: CompletionCallOptions[] = [];
    let counted = 0;
    for (const [p, prompt] of request.prompts.entries()) {
      refuseUnfittablePrompt(model, prompt, request.options.suffix, limits.maxCharsPerToken, request.prompts.length > 1 ? `prompt[${p}]` : 'prompt');
      const options: CompletionCallOptions = { ...request.options, prompt, signal: context.signal };
      counted += await model.checkCompletion(options).catch((error: unknown) => {
        throw request.prompts.length > 1 ? ofPrompt(error, p) : error;
      });
      for (let i = 0; i < request.n; i++) perChoice.push(choiceOptions(options, i));
    }
    // Nothing ran yet: a refusal here leaves a free row, prompt included (counted is not yet promptTokens).
    await admission.resize({ promptTokens: counted, completionTokens: maxTokens * choices, images: 0, documents: 0 });
    promptTokens = counted;
    if (!request.stream) {
      const called = performance.now();
      const results = await Promise.all(perChoice.map((options) => model.doComplete(options)));
      for (const result of results)
        if (result.warnings.length) context.logger.warn({ warnings: result.warnings }, 'engine approximated settings');
      // The engine's own count of each prompt (a remote upstream's, which checkCompletion only estimated).
      promptTokens = request.prompts.reduce((sum, _, p) => sum + results[p * request.n]!.usage.promptTokens, 0);
      const completion = buildTextCompletion(meta, results, promptTokens, request.options.topLogprobs, request.n);
      const completionTokens = completion.usage!.completion_tokens;
      services.metrics.generationRate(entry.config.id, false, completionTokens, (performance.now() - called) / 1000);
      const cachedPromptTokens = completion.usage!.prompt_tokens_details.cached_tokens;
      await settle({ promptTokens, completionTokens, cachedPromptTokens }, 'ok', 200, warningsNote(results.flatMap((r) => r.warnings)));
      return { type: 'json', body: completion, headers: admission.headers };
    }

    for (const options of perChoice) meters.push(new MeteredCompletion(model.doCompleteStream(options), options.echo === true));
    await Promise.all(meters.map((meter) => meter.peek()));
    const firstTokenAt = performance.now();
    services.metrics.firstToken(entry.config.id, (firstTokenAt - context.startedAt) / 1000);
    const frames = new TextCompletionFrames(meta, meters, {
      includeUsage: request.includeUsage,
      topLogprobs: request.options.topLogprobs,
      promptTokens,
      choicesPerPrompt: request.n,
    });
    streaming = true;
    return {
      type: 'sse',
      headers: admission.headers,
      frames: new SettlingFrames(frames, async (outcome, failure) => {
        await Promise.all(meters.map((meter) => meter.return()));
        lease?.release();
        const { status, note } = streamEnd(context, outcome, failure, meters.flatMap((meter) => meter.warnings));
        const completionTokens = meters.reduce((sum, meter) => sum + meter.completionTokens(), 0);
        if (outcome === 'ok') services.metrics.generationRate(entry.config.id, true, completionTokens, (performance.now() - firstTokenAt) / 1000);
        const cachedPromptTokens = requestCachedTokens(
          meters.map((meter) => meter.cachedPromptTokens),
          request.n,
        );
        await settle({ promptTokens, completionTokens, cachedPromptTokens }, outcome, status, note);
      }),
    };
  } catch (error) {
    await Promise.all(meters.map((meter) => meter.return()));
    const completionTokens = meters.reduce((sum, meter) => sum + meter.completionTokens(), 0);
    await settle({ promptTokens, completionTokens }, isAbortError(error) ? 'cancelled' : 'error', statusOf(error, context), failureNote(error));
    throw error;
  } finally {
    if (!streaming) lease?.release();
  }
}

/** The engine names `prompt` or `prompt[i]` of the one prompt it saw; with several, say which one (`prompt[p][i]`). */
function ofPrompt(error: unknown, p: number): unknown {
  if (!(error instanceof InferaError) || !error.param?.startsWith('prompt')) return error;
  const param = `prompt[${p}]${error.param.slice('prompt'.length)}`;
  return new InferaError({
    status: error.status,
    type: error.type,
    code: error.code,
    param,
    message: error.message.startsWith(`${error.param}:`) ? `${param}:${error.message.slice(error.param.length + 1)}` : `${param}: ${error.message}`,
    siliconflowCode: error.siliconflowCode,
  });
}

/** With a seed and n > 1, each choice gets its own seed, or all n answers would be the same text. */
function choiceOptions(options: CompletionCallOptions, index: number): CompletionCallOptions {
  if (index === 0 || options.sampling.seed === undefined) return options;
  return { ...options, sampling: { ...options.sampling, seed: options.sampling.seed + index } };
}

/** Before the model is loaded there is no tokenizer: about 3 characters per token errs on the high side. */
function estimateTokens(prompt: string | number[], suffix: string | undefined): number {
  const characters = (typeof prompt === 'string' ? prompt.length : 0) + (suffix?.length ?? 0);
  return Math.ceil(characters / 3) + (typeof prompt === 'string' ? 0 : prompt.length) + 4;
}

/** As for chat: text that could not fit even at `maxCharsPerToken` characters a token is refused before tokenizing. */
function refuseUnfittablePrompt(model: ChatModel, prompt: string | number[], suffix: string | undefined, maxCharsPerToken: number, param: string): void {
  const characters = (typeof prompt === 'string' ? prompt.length : 0) + (suffix?.length ?? 0);
  const tokens = typeof prompt === 'string' ? 0 : prompt.length;
  if (characters <= model.contextSize * maxCharsPerToken && tokens <= model.contextSize) return;
  throw new InferaError({
    status: 400,
    code: 'context_length_exceeded',
    param,
    message:
      tokens > model.contextSize
        ? `This model's maximum context length is ${model.contextSize} tokens. However, your prompt has ${tokens} tokens. Please reduce the length of the prompt.`
        : `This model's maximum context length is ${model.contextSize} tokens. However, your prompt${suffix ? ' and suffix have' : ' has'} ${characters} characters, ` +
          `more than ${model.contextSize} tokens can hold (at most ${maxCharsPerToken} characters a token). Please reduce the length of the prompt.`,
  });
}

/**
 * A text-completion choice's stream, metered by its finish part's count or, when the client left first,
 * one token per generated delta seen (the echoed prompt, the first delta with `echo`, is not generated).
 */
class MeteredCompletion extends MeteredStream<CompletionStreamPart> {
  private finalTokens?: number;
  private deltas: number;
  /** From the finish part: prompt tokens the engine found cached. */
  cachedPromptTokens?: number;

  constructor(stream: AsyncIterable<CompletionStreamPart>, echo: boolean) {
    super(stream);
    this.deltas = echo ? -1 : 0;
  }

  protected meter(part: CompletionStreamPart): void {
    if (part.type === 'finish') {
      this.finalTokens = part.usage.completionTokens;
      this.cachedPromptTokens = part.usage.cachedPromptTokens ?? 0;
    }
    else this.deltas++;
  }

  completionTokens(): number {
    return this.finalTokens ?? Math.max(0, this.deltas);
  }
}
