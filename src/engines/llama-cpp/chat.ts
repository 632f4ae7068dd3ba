// GGUF chat models through node-llama-cpp. One context with N sequences (llama.cpp batches the
// sequences of one context together, so concurrency is handing out sequences, never batching again);
// each request takes a sequence behind a bounded queue, runs ONE LlamaChat.generateResponse over its
// own history with the model's own chat wrapper, and gives the sequence back (state erased) when it
// ends, fails or is cancelled. LlamaChatSession is not used: it injects a default system prompt.
import { availableParallelism } from 'node:os';
import {
  LlamaChat,
  TokenBias,
  type ChatModelFunctions,
  type Llama,
  type LlamaChatResponse,
  type LlamaChatResponseChunk,
  type LlamaChatResponseFunctionCallParamsChunk,
  type LlamaContext,
  type LlamaContextSequence,
  type Token,
  type LlamaGrammar,
  type LlamaModel,
  type LLamaChatGenerateResponseOptions,
} from 'node-llama-cpp';
import type { LlamaCppModelConfig } from './config.ts';
import { ClientGoneError, badRequest } from '../../errors/index.ts';
import { Slots } from '../../scheduler/slots.ts';
import type {
  ChatCallOptions,
  ChatModel,
  ChatResult,
  ChatStreamPart,
  ChatUsage,
  CompletionCallOptions,
  CompletionResult,
  CompletionStreamPart,
  FinishReason,
  TokenLogprob,
  ToolCall,
} from '../../spec/chat.ts';
import type { EngineStats, LoadProgress, LoadedModel } from '../../spec/index.ts';
import { sequenceOrderedStrategy } from './chat-batching.ts';
import { ChatPlanner, newToolCallId, resolveWrappers, withinCompileBudget, type Plan, type Wrappers } from './chat-plan.ts';
import { streamFromProducer } from './chat-stream.ts';
import { emptyCompletion, infillTokens, planCompletion, runCompletion, type CompletionPlan } from './completions.ts';
import { type LlamaCppLoadOptions, llamaOf } from './embedding.ts';
import {
  DEFAULT_TEMPERATURE,
  countingSamples,
  internalChanged,
  penaltyOptions,
  prefill,
  recordingProbabilities,
  tokenLogprob,
  unloading,
  type SampledToken,
} from './generation.ts';
import { abortSignalOf } from '../../spec/chat.ts';

export { DEFAULT_TEMPERATURE, recordingProbabilities, type SampledToken } from './generation.ts';
export { forcingFunctionCall } from './chat-plan.ts';

type Emit = (part: ChatStreamPart) => void;

export class LlamaCppChatModel implements ChatModel {
  readonly kind = 'chat' as const;
  readonly name: string;
  readonly contextSize: number;
  /** Admission in front of the sequences (exposed for metrics and tests). */
  readonly slots: Slots;
  private jsonGrammar: Promise<LlamaGrammar> | undefined;
  /** Stoppers of the requests holding a sequence, so that unloading can end them first. */
  private readonly running = new Set<AbortController>();
  private drained: (() => void) | undefined;
  private closing = false;
  /** Stream consumers run during decodes when llama.cpp's threads leave a core free (see chat-stream.ts). */
  private readonly overlapDecode: boolean;
  private readonly planner: ChatPlanner;

  constructor(
    private readonly llama: Llama,
    private readonly model: LlamaModel,
    private readonly context: LlamaContext,
    /** The model's wrappers (internals.test.ts checks node-llama-cpp still honours them). */
    readonly wrappers: Wrappers,
    name: string,
    queue: { maxQueue: number; maxQueueWaitSeconds: number },
  ) {
    this.name = name;
    this.contextSize = context.contextSize;
    this.planner = new ChatPlanner(model, wrappers, this.contextSize);
    this.slots = new Slots(context.totalSequences, queue.maxQueue, `Model ${name}`, { maxWaitMs: queue.maxQueueWaitSeconds * 1000 });
    this.overlapDecode = context.idealThreads < availableParallelism();
  }

  async stats(): Promise<EngineStats> {
    return { active: this.slots.active, queued: this.slots.queued };
  }

  async checkPrompt(options: ChatCallOptions): Promise<number> {
    return this.plan(options).promptTokens;
  }

  async doGenerate(options: ChatCallOptions): Promise<ChatResult> {
    return this.run(this.plan(options), abortSignalOf(options.signal), () => {});
  }

  doStream(options: ChatCallOptions): AsyncIterable<ChatStreamPart> {
    // Validation happens now, so a bad request fails before the caller commits to a stream.
    const plan = this.plan(options);
    return streamFromProducer<ChatStreamPart>(
      async (emit, signal) => {
        await this.run(plan, signal, emit);
      },
      abortSignalOf(options.signal),
      { overlapDecode: this.overlapDecode },
    );
  }

  get infill(): boolean {
    return infillTokens(this.model) !== undefined;
  }

  async checkCompletion(options: CompletionCallOptions): Promise<number> {
    return this.planCompletion(options).input.length;
  }

  async doComplete(options: CompletionCallOptions): Promise<CompletionResult> {
    return this.complete(this.planCompletion(options), abortSignalOf(options.signal), () => {});
  }

  doCompleteStream(options: CompletionCallOptions): AsyncIterable<CompletionStreamPart> {
    const plan = this.planCompletion(options);
    return streamFromProducer<CompletionStreamPart>(
      async (emit, signal) => {
        await this.complete(plan, signal, emit);
      },
      abortSignalOf(options.signal),
      { overlapDecode: this.overlapDecode },
    );
  }

  // ---------------------------------------------------------------------------------------------

  private planCompletion(options: CompletionCallOptions): CompletionPlan {
    if (this.closing) throw unloading();
    return planCompletion(this.model, this.contextSize, options);
  }

  private async complete(plan: CompletionPlan, signal: AbortSignal, emit: (part: CompletionStreamPart) => void): Promise<CompletionResult> {
    if (plan.maxTokens === 0) return emptyCompletion(plan, emit);
    return this.withSequence(signal, (sequence, stopper) =>
      runCompletion(plan, { model: this.model, sequence, stopper, signal, closing: () => this.closing }, emit),
    );
  }

  get thinks(): boolean {
    return this.planner.thinks;
  }

  private plan(options: ChatCallOptions): Plan {
    if (this.closing) throw unloading();
    return this.planner.plan(options);
  }

  private async grammarFor(plan: Plan): Promise<LlamaGrammar | undefined> {
    if (!plan.grammar) return undefined;
    if (plan.grammar.kind === 'json') {
      this.jsonGrammar ??= this.llama.getGrammarFor('json');
      return this.jsonGrammar;
    }
    const schema = plan.grammar.schema;
    return withinCompileBudget(plan.grammarCompileMs, 'response_format.json_schema', async () => {
      try {
        // The schema was checked by toGbnfJsonSchema; its generic type cannot be inferred from data.
        return await this.llama.createGrammarForJsonSchema(schema as never);
      } catch (error) {
        throw badRequest(`response_format.json_schema could not be turned into a grammar: ${(error as Error).message}`, 'response_format.json_schema');
      }
    });
  }

  /**
   * Stop taking requests, end the running ones (they fail with 503, retryable elsewhere) and wait until
   * every sequence is back: disposing the context under a running generation would crash natively.
   */
  async close(): Promise<void> {
    this.closing = true;
    for (const stopper of this.running) stopper.abort(unloading());
    if (this.running.size > 0) await new Promise<void>((resolve) => (this.drained = resolve));
  }

  /**
   * Takes a slot and a sequence for `work`, and gives both back (state erased) when it ends, fails or is
   * cancelled. `stopper` is aborted when the client leaves or the model unloads; work may abort it too
   * (a limit reached). Resolves only after the sequence is disposed and the slot released.
   */
  private async withSequence<T>(
    signal: AbortSignal,
    work: (sequence: LlamaContextSequence, stopper: AbortController) => Promise<T>,
  ): Promise<T> {
    const lease = await this.slots.acquire(signal);
    const stopper = new AbortController();
    const stopForClient = () => stopper.abort(signal.reason);
    let sequence: LlamaContextSequence | undefined;
    this.running.add(stopper);
    try {
      if (signal.aborted) throw new ClientGoneError();
      if (this.closing) throw unloading();
      signal.addEventListener('abort', stopForClient, { once: true });
      sequence = this.context.getSequence();
      return await work(sequence, stopper);
    } finally {
      signal.removeEventListener('abort', stopForClient);
      try {
        await sequence?.dispose();
      } finally {
        lease.release();
        this.running.delete(stopper);
        if (this.running.size === 0) this.drained?.();
      }
    }
  }

  /** One chat request on one sequence. */
  private async run(plan: Plan, signal: AbortSignal, emit: Emit): Promise<ChatResult> {
    const grammar = await this.grammarFor(plan);
    return this.withSequence(signal, (sequence, stopper) => this.generate(plan, grammar, sequence, stopper, signal, emit));
  }

  private async generate(
    plan: Plan,
    grammar: LlamaGrammar | undefined,
    sequence: LlamaContextSequence,
    stopper: AbortController,
    signal: AbortSignal,
    emit: Emit,
  ): Promise<ChatResult> {
    let answerCapped = false;
    let chat: LlamaChat | undefined;
    try {
      const sampled: SampledToken[] = [];
      const answerLimit = plan.answerLimit;
      // With a chain of thought, node-llama-cpp's maxTokens must leave room for it, so it cannot bound
      // what follows; the text path counts its own tokens, but a tool call streams no token counts and
      // its prefix and name none at all. Every sampled token is counted here instead, from the end of
      // the thought (and the blank line after it): the first one past max_tokens stops the generation,
      // and its text never reaches the call's arguments.
      let sampledCount = 0;
      let answerFrom: number | undefined;
      let callCapped = false;
      const boundCalls = plan.functions !== undefined && plan.thinking && answerLimit !== undefined;
      const source = plan.topLogprobs === undefined ? sequence : recordingProbabilities(sequence, sampled);
      chat = new LlamaChat({
        contextSequence: !boundCalls
          ? source
          : countingSamples(source, () => {
              sampledCount++;
              if (answerFrom === undefined || sampledCount - answerFrom <= answerLimit) return;
              callCapped = true;
              stopper.abort(new Error('answer token limit reached'));
            }),
        chatWrapper: plan.wrapper,
      });
      const logprobs: TokenLogprob[] | undefined = plan.topLogprobs === undefined ? undefined : [];
      let sampledAt = 0;
      let thoughtFloor = 0;
      /** Match emitted answer tokens to the sampled ones (thought, tool-call and injected tokens are skipped). */
      const matchSampled = (tokens: readonly Token[]) => {
        if (!logprobs) return;
        for (const token of tokens) {
          let at = Math.max(sampledAt, thoughtFloor);
          while (at < sampled.length && sampled[at]!.token !== token) at++;
          if (at >= sampled.length) continue;
          sampledAt = at + 1;
          logprobs.push(tokenLogprob(this.model, sampled[at]!, plan.topLogprobs!));
        }
      };

      let text = '';
      let reasoning = '';
      let answerTokens = 0;
      let reasoningTokens = 0;
      // After a prefix, newlines are part of the continued text, not the gap after a think block.
      let leadingNewlines = !plan.prefix;
      const calls: { id: string; name: string; raw: string; sent: number }[] = [];

      const meter = sequence.tokenMeter;
      const outputBefore = meter.usedOutputTokens;
      const onResponseChunk = (chunk: LlamaChatResponseChunk) => {
        if (answerCapped) return;
        if (chunk.type === 'segment' && chunk.segmentType === 'thought') {
          // Thought chunks carry re-tokenized text (the tag newlines are cut off), not the sampled
          // tokens; the sequence's meter counts what was really sampled up to the end of the thought.
          reasoningTokens = meter.usedOutputTokens - outputBefore;
          thoughtFloor = sampled.length;
          if (chunk.segmentEndTime !== undefined) answerFrom = sampledCount;
          // A think block the model opens after a prefix anyway is followed by the template's gap too.
          if (text === '') leadingNewlines = true;
          // With thinking off, wrappers that cannot suppress the think block rely on a zero thought
          // budget, which still lets a token or two through: counted, but not shown.
          if (chunk.text && plan.thinking) {
            reasoning += chunk.text;
            emit({ type: 'reasoning-delta', text: chunk.text });
          }
          return;
        }
        // Answer text (and any non-thought segment, which is user-visible text).
        let piece = chunk.text;
        let tokens = chunk.tokens;
        // The template separates the think block from the answer with blank lines: not content, and
        // not counted against max_tokens.
        if (leadingNewlines) {
          piece = piece.replace(/^\n+/, '');
          if (piece.length === 0) {
            if (answerFrom !== undefined) answerFrom = sampledCount;
            return;
          }
          leadingNewlines = false;
        }
        if (plan.answerLimit !== undefined && answerTokens + tokens.length >= plan.answerLimit) {
          const allowed = plan.answerLimit - answerTokens;
          if (allowed < tokens.length) {
            tokens = tokens.slice(0, allowed);
            piece = this.model.detokenize(tokens).replace(/^\n+/, '');
          }
          answerCapped = true;
          stopper.abort(new Error('answer token limit reached'));
        }
        answerTokens += tokens.length;
        if (piece) {
          matchSampled(tokens);
          text += piece;
          emit({ type: 'text-delta', text: piece });
        }
      };

      const onFunctionCallParamsChunk = (chunk: LlamaChatResponseFunctionCallParamsChunk) => {
        if (callCapped) return;
        let call = calls[chunk.callIndex];
        if (!call) {
          call = { id: newToolCallId(), name: chunk.functionName, raw: '', sent: 0 };
          calls[chunk.callIndex] = call;
          emit({ type: 'tool-call-start', index: chunk.callIndex, id: call.id, name: call.name });
        }
        call.raw += chunk.paramsChunk;
        // The params grammar ends with four newlines (node-llama-cpp's end marker); hold trailing
        // newlines back until something else follows, so the deltas add up to the exact arguments.
        const safe = call.raw.replace(/\n+$/, '').length;
        if (safe > call.sent) {
          emit({ type: 'tool-call-delta', index: chunk.callIndex, argumentsDelta: call.raw.slice(call.sent, safe) });
          call.sent = safe;
        }
      };

      const generateOptions: LLamaChatGenerateResponseOptions<ChatModelFunctions> = {
        signal: stopper.signal,
        stopOnAbortSignal: true,
        maxTokens: plan.totalLimit,
        temperature: plan.sampling.temperature ?? DEFAULT_TEMPERATURE,
        topP: plan.sampling.topP,
        topK: plan.sampling.topK,
        minP: plan.sampling.minP,
        seed: plan.sampling.seed,
        repeatPenalty: penaltyOptions(plan.sampling),
        tokenBias: plan.bannedTokens.length > 0 ? bannedBias(this.model, plan.bannedTokens) : undefined,
        customStopTriggers: plan.stop.length > 0 ? plan.stop : undefined,
        budgets: { thoughtTokens: plan.thoughtBudget },
        onResponseChunk,
        ...(grammar
          ? { grammar }
          : plan.functions
            ? {
                functions: plan.functions,
                documentFunctionParams: true,
                maxParallelFunctionCalls: plan.maxParallelFunctionCalls,
                onFunctionCallParamsChunk,
              }
            : {}),
      } as LLamaChatGenerateResponseOptions<ChatModelFunctions>;

      let response: LlamaChatResponse<ChatModelFunctions>;
      try {
        await prefill(sequence, plan.promptTokenIds, stopper.signal);
        response = await chat.generateResponse(plan.history, generateOptions);
      } catch (error) {
        if (signal.aborted) throw new ClientGoneError();
        if (this.closing) throw unloading();
        throw error;
      }
      if (signal.aborted && !answerCapped) throw new ClientGoneError();
      if (this.closing && response.metadata.stopReason === 'abort') throw unloading();
      // Both would otherwise pass silently as a valid-looking answer (see internals.test.ts).
      if (logprobs && answerTokens > 0 && sampled.length === 0)
        throw internalChanged('LlamaContextSequence.evaluate (sampled through by LlamaChat)', 'no token went through the logprobs proxy');
      if (plan.forceCall && (response.functionCalls ?? []).length === 0 && response.metadata.stopReason === 'eogToken')
        throw internalChanged('ChatWrapper.generateContextState (overridden by forcingFunctionCall)', 'a forced tool call was not made');

      const toolCalls: ToolCall[] = (response.functionCalls ?? []).map((functionCall, index) => {
        let call = calls[index];
        if (!call) {
          // Functions without parameters stream no argument chunks.
          call = { id: newToolCallId(), name: functionCall.functionName, raw: '', sent: 0 };
          calls[index] = call;
          emit({ type: 'tool-call-start', index, id: call.id, name: call.name });
        }
        const end = call.raw.lastIndexOf('\n\n\n\n');
        const args = call.raw.trim() === '' ? JSON.stringify(functionCall.params ?? {}) : end >= 0 ? call.raw.slice(0, end) : call.raw;
        if (args.length > call.sent && args.startsWith(call.raw.slice(0, call.sent)))
          emit({ type: 'tool-call-delta', index, argumentsDelta: args.slice(call.sent) });
        return { id: call.id, name: call.name, arguments: args };
      });
      // A call cut off by the token limit is not in response.functionCalls, but its start and
      // arguments so far were already streamed: the JSON answer carries the same partial call.
      for (let index = toolCalls.length; index < calls.length; index++) {
        const call = calls[index];
        if (call) toolCalls.push({ id: call.id, name: call.name, arguments: call.raw.slice(0, call.sent) });
      }

      const stopReason = response.metadata.stopReason;
      const finishReason: FinishReason =
        answerCapped || (callCapped && stopReason === 'abort') || stopReason === 'maxTokens'
          ? 'length'
          : toolCalls.length > 0
            ? 'tool_calls'
            : 'stop';
      const usage: ChatUsage = {
        promptTokens: plan.promptTokens,
        completionTokens: Math.max(meter.usedOutputTokens - outputBefore, reasoningTokens + answerTokens),
        reasoningTokens,
        cachedPromptTokens: 0,
      };
      emit({ type: 'finish', finishReason, usage });
      return { text, reasoning, toolCalls, finishReason, usage, logprobs, warnings: plan.warnings };
    } finally {
      // generateResponse has settled here (or never started), so nothing touches the sequence any more.
      chat?.dispose({ disposeSequence: false });
    }
  }
}


function bannedBias(model: LlamaModel, tokens: Token[]): TokenBias {
  const bias = new TokenBias(model.tokenizer);
  for (const token of tokens) bias.set(token, 'never');
  return bias;
}

export async function loadLlamaCppChatModel(
  config: LlamaCppModelConfig,
  onProgress: LoadProgress | undefined,
  loadOptions: LlamaCppLoadOptions,
): Promise<LoadedModel<LlamaCppChatModel>> {
  if (!config.path) throw new Error(`model ${config.id}: llama-cpp needs \`path\``);
  const { signal } = loadOptions;
  const llama = await llamaOf(loadOptions);
  const options = config.llamaCpp;
  const model = await llama.loadModel({
    modelPath: config.path,
    gpuLayers: options.gpuLayers,
    onLoadProgress: onProgress,
    loadSignal: signal,
  });
  let context: LlamaContext | undefined;
  let wrappers: Wrappers;
  try {
    wrappers = await resolveWrappers(model);
    context = await model.createContext({
      contextSize: Math.min(options.contextSize, model.trainContextSize),
      sequences: options.sequences,
      threads: options.threads,
      batchSize: options.batchSize,
      batching: { itemPrioritizationStrategy: sequenceOrderedStrategy(() => context) },
    });
  } catch (error) {
    await model.dispose();
    throw error;
  }
  const chatModel = new LlamaCppChatModel(llama, model, context, wrappers, config.id, config);
  return {
    model: chatModel,
    async dispose() {
      await chatModel.close();
      await context.dispose();
      await model.dispose();
    },
  };
}

/**
 * The llama-cpp chat engine's loader: the FFI runner when the config asks for it and it can serve the
 * model, else node-llama-cpp's LlamaChat, with `onFallback` told why (one log line).
 */
export async function loadChatModel(
  config: LlamaCppModelConfig,
  onProgress: LoadProgress | undefined,
  options: LlamaCppLoadOptions & { cacheDir?: string },
  onFallback: (reason: string) => void = () => {},
): Promise<LoadedModel<ChatModel & { readonly slots: Slots }>> {
  if (config.llamaCpp.runner === 'ffi') {
    const loaded = await (await import('./chat-ffi.ts')).loadFfiChatModel(config, onProgress, options);
    if (typeof loaded !== 'string') return loaded;
    onFallback(`llama.cpp FFI runner not used for ${config.id}: ${loaded}; running it on node-llama-cpp`);
  }
  return loadLlamaCppChatModel(config, onProgress, options);
}
