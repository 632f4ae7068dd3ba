// GGUF chat models through node-llama-cpp. One context with N sequences (llama.cpp batches the
// sequences of one context together, so concurrency is handing out sequences, never batching again);
// each request takes a sequence behind a bounded queue, runs ONE LlamaChat.generateResponse over its
// own history with the model's own chat wrapper, and gives the sequence back (state erased) when it
// ends, fails or is cancelled. LlamaChatSession is not used: it injects a default system prompt.
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import {
  LlamaChat,
  LlamaText,
  QwenChatWrapper,
  SpecialTokensText,
  TokenBias,
  resolveChatWrapper,
  type ChatHistoryItem,
  type ChatModelFunctions,
  type ChatWrapper,
  type GbnfJsonSchema,
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
import { ClientGoneError, InferaError, badRequest } from '../../errors/index.ts';
import { Slots } from '../../scheduler/slots.ts';
import {
  DEFAULT_THINKING_BUDGET,
  type ChatCallOptions,
  type ChatModel,
  type ChatResult,
  type ChatStreamPart,
  type ChatUsage,
  type CompletionCallOptions,
  type CompletionResult,
  type CompletionStreamPart,
  type FinishReason,
  type SamplingOptions,
  type TokenLogprob,
  type ToolCall,
} from '../../spec/chat.ts';
import type { EngineStats, LoadProgress, LoadedModel } from '../../spec/index.ts';
import { toLlamaChatHistory } from './chat-history.ts';
import { sequenceOrderedStrategy } from './chat-batching.ts';
import { toGbnfJsonSchema } from './chat-json-schema.ts';
import { streamFromProducer } from './chat-stream.ts';
import { emptyCompletion, infillTokens, planCompletion, runCompletion, type CompletionPlan } from './completions.ts';
import type { LlamaCppLoadOptions } from './embedding.ts';
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

export { DEFAULT_TEMPERATURE, recordingProbabilities, type SampledToken } from './generation.ts';

/**
 * Tokens kept free at the end of the context: node-llama-cpp injects a few tokens of its own (a closing
 * think tag when the thought budget runs out, a function-call prefix) that its maxTokens does not count,
 * and running into the end of the context would make it shift (silently drop) the conversation.
 */
const CONTEXT_MARGIN = 16;
/**
 * node-llama-cpp's maxTokens counts every generated token, the think tags and the blank line after
 * them included, while the thought budget counts only the thought's text and max_tokens only the
 * answer. The answer limit itself is enforced exactly by counting answer tokens; this is slack.
 */
const THINK_OVERHEAD = 8;

interface Wrappers {
  /** The wrapper resolved from the GGUF's chat template. */
  standard: ChatWrapper;
  /** Same template with thinking switched off (QwenChatWrapper thoughts:"discourage", Jinja enable_thinking:false). */
  noThinking: ChatWrapper;
}

type Emit = (part: ChatStreamPart) => void;

/** Everything about a request that can be checked before it takes a sequence. */
interface Plan {
  history: ChatHistoryItem[];
  wrapper: ChatWrapper;
  functions?: ChatModelFunctions;
  maxParallelFunctionCalls?: number;
  grammar?: { kind: 'json' } | { kind: 'schema'; schema: GbnfJsonSchema };
  thinking: boolean;
  /** The last message is an assistant prefix to continue (its text is in the prompt, not in the answer). */
  prefix: boolean;
  /** tool_choice "required" or a named function: the wrapper is forcingFunctionCall's. */
  forceCall: boolean;
  thoughtBudget: number;
  /** Answer tokens (reasoning excluded), SiliconFlow's max_tokens. */
  answerLimit?: number;
  /** Everything the model may generate in this request (reasoning + answer + tool calls). */
  totalLimit: number;
  promptTokens: number;
  /** The rendered prompt, prefilled in chunks so that an abort is noticed during long prefills. */
  promptTokenIds: Token[];
  stop: string[];
  tokenBias?: TokenBias;
  sampling: SamplingOptions;
  topLogprobs?: number;
  warnings: string[];
}

/**
 * The one gate every client schema (tool parameters, response_format) passes before it reaches
 * node-llama-cpp: a recursive schema is always a 400 (no grammar can be built for it, and for tools
 * the failure would otherwise surface mid-generation as a 500); keywords the grammar cannot enforce are
 * a 400 (`'refuse'`) or a warning pushed to the given list.
 */
function grammarSchema(schema: unknown, param: string, unsupported: 'refuse' | string[]): GbnfJsonSchema {
  const converted = toGbnfJsonSchema(schema);
  if (converted.recursiveAt !== undefined)
    throw badRequest(
      `${param}: the schema is recursive ($ref at ${converted.recursiveAt} leads back into itself); this engine cannot enforce recursive schemas.`,
      param,
      'invalid_schema',
    );
  if (converted.unsupported.length > 0) {
    if (unsupported === 'refuse')
      throw badRequest(`${param}: uses schema keywords this engine cannot enforce: ${converted.unsupported.join(', ')}`, param);
    unsupported.push(`${param}: not enforced: ${converted.unsupported.join(', ')}`);
  }
  return converted.schema;
}

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

  constructor(
    private readonly llama: Llama,
    private readonly model: LlamaModel,
    private readonly context: LlamaContext,
    private readonly wrappers: Wrappers,
    name: string,
    queue: { maxQueue: number; maxQueueWaitSeconds: number },
  ) {
    this.name = name;
    this.contextSize = context.contextSize;
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
    return this.run(this.plan(options), options.signal, () => {});
  }

  doStream(options: ChatCallOptions): AsyncIterable<ChatStreamPart> {
    // Validation happens now, so a bad request fails before the caller commits to a stream.
    const plan = this.plan(options);
    return streamFromProducer<ChatStreamPart>(
      async (emit, signal) => {
        await this.run(plan, signal, emit);
      },
      options.signal,
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
    return this.complete(this.planCompletion(options), options.signal, () => {});
  }

  doCompleteStream(options: CompletionCallOptions): AsyncIterable<CompletionStreamPart> {
    const plan = this.planCompletion(options);
    return streamFromProducer<CompletionStreamPart>(
      async (emit, signal) => {
        await this.complete(plan, signal, emit);
      },
      options.signal,
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
    return this.wrappers.standard.settings.segments?.thought != null;
  }

  private plan(options: ChatCallOptions): Plan {
    if (this.closing) throw unloading();
    const warnings: string[] = [];

    const history = toLlamaChatHistory(options.messages);
    const choice = options.toolChoice ?? 'auto';
    const tools = options.tools ?? [];
    const format = options.responseFormat ?? { type: 'text' };
    const offerTools = tools.length > 0 && choice !== 'none';

    if (offerTools && format.type !== 'text')
      throw badRequest(
        'response_format json_object/json_schema cannot be combined with tools on this engine (both constrain the output); send tool_choice "none" or drop response_format',
        'response_format',
      );

    let functions: ChatModelFunctions | undefined;
    if (offerTools) {
      const offered = typeof choice === 'object' ? tools.filter((tool) => tool.name === choice.name) : tools;
      const offeredFunctions: Record<string, ChatModelFunctions[string]> = {};
      for (const tool of offered) {
        const at = `tools[${tools.indexOf(tool)}].function`;
        let params: GbnfJsonSchema | undefined;
        if (tool.parameters !== undefined && Object.keys(tool.parameters).length > 0)
          // Non-strict tools follow OpenAI: the schema guides the model, it is not a guarantee.
          params = grammarSchema(tool.parameters, `${at}.parameters`, tool.strict ? 'refuse' : warnings);
        offeredFunctions[tool.name] = { description: tool.description, params };
      }
      functions = offeredFunctions;
    }

    let grammar: Plan['grammar'];
    if (format.type === 'json_object') grammar = { kind: 'json' };
    else if (format.type === 'json_schema') {
      grammar = { kind: 'schema', schema: grammarSchema(format.schema, 'response_format.json_schema', 'refuse') };
    }

    const forceCall = offerTools && (choice === 'required' || typeof choice === 'object');
    const last = options.messages.at(-1);
    const prefix = last?.role === 'assistant' && last.prefix === true;
    const modelThinks = this.thinks;
    // A grammar or a forced call constrains the first answer token, so the model cannot open a think
    // block; the no-thinking rendering (empty think block) keeps the prompt in the model's distribution.
    // A prefix continues the answer itself, which comes after the thought: the thought is rendered
    // closed (empty unless the message carries reasoning) and the model goes on with the answer.
    const thinking = modelThinks && options.thinking.enabled !== false && !grammar && !forceCall && !prefix;
    if (options.thinking.enabled === true && !thinking)
      warnings.push(
        !modelThinks
          ? 'enable_thinking: this model has no thinking mode'
          : prefix
            ? 'enable_thinking: skipped because the last message is a prefix to continue (the answer has begun)'
            : 'enable_thinking: skipped because the output is constrained (response_format or a forced tool call)',
      );
    let wrapper = thinking ? this.wrappers.standard : this.wrappers.noThinking;
    if (forceCall) wrapper = forcingFunctionCall(wrapper);

    const promptTokenIds = this.renderedTokens(wrapper, history, functions);
    const promptTokens = promptTokenIds.length;
    const room = this.contextSize - promptTokens - CONTEXT_MARGIN;
    if (room < 1 || (options.maxTokens !== undefined && options.maxTokens > room))
      throw new InferaError({
        status: 400,
        code: 'context_length_exceeded',
        param: 'messages',
        message:
          `This model's maximum context length is ${this.contextSize} tokens. However, you requested ` +
          `${promptTokens + (options.maxTokens ?? 0) + CONTEXT_MARGIN} tokens (${promptTokens} in the messages, ` +
          `${options.maxTokens ?? 0} in the completion, ${CONTEXT_MARGIN} reserved). Please reduce the length of the messages or completion.`,
      });

    const thoughtBudget = thinking ? (options.thinking.budgetTokens ?? DEFAULT_THINKING_BUDGET) : 0;
    const answerLimit = options.maxTokens;
    const totalLimit = Math.max(
      1,
      Math.min(room, answerLimit === undefined ? room : answerLimit + (thinking ? thoughtBudget + THINK_OVERHEAD : 0)),
    );

    return {
      history,
      wrapper,
      functions,
      maxParallelFunctionCalls: options.parallelToolCalls === false ? 1 : undefined,
      grammar,
      thinking,
      prefix,
      forceCall,
      thoughtBudget,
      answerLimit,
      totalLimit,
      promptTokens,
      promptTokenIds,
      stop: (options.stop ?? []).filter((text) => text.length > 0),
      tokenBias: functions ? undefined : this.noToolCallBias(wrapper),
      sampling: options.sampling,
      topLogprobs: options.topLogprobs,
      warnings,
    };
  }

  private renderedTokens(wrapper: ChatWrapper, history: ChatHistoryItem[], functions?: ChatModelFunctions): Token[] {
    const withTurn: ChatHistoryItem[] =
      history.at(-1)?.type === 'model' ? history : [...history, { type: 'model', response: [] }];
    const { contextText } = wrapper.generateContextState({
      chatHistory: withTurn,
      availableFunctions: functions,
      documentFunctionParams: true,
    });
    return contextText.tokenize(this.model.tokenizer);
  }

  /**
   * With no functions offered node-llama-cpp does not parse tool calls, so a `<tool_call>` the model
   * writes anyway would land in the content as text. When the call prefix is a single token, forbid it.
   */
  private noToolCallBias(wrapper: ChatWrapper): TokenBias | undefined {
    const prefix = LlamaText(wrapper.settings.functions.call.prefix);
    for (const value of prefix.values) {
      if (!(value instanceof SpecialTokensText)) continue;
      const tokens = LlamaText(value).tokenize(this.model.tokenizer);
      if (tokens.length === 1 && !this.model.isEogToken(tokens[0]!)) return new TokenBias(this.model.tokenizer).set(tokens[0]!, 'never');
      return undefined;
    }
    return undefined;
  }

  private async grammarFor(plan: Plan): Promise<LlamaGrammar | undefined> {
    if (!plan.grammar) return undefined;
    if (plan.grammar.kind === 'json') {
      this.jsonGrammar ??= this.llama.getGrammarFor('json');
      return this.jsonGrammar;
    }
    try {
      // The schema was checked by toGbnfJsonSchema; its generic type cannot be inferred from data.
      return await this.llama.createGrammarForJsonSchema(plan.grammar.schema as never);
    } catch (error) {
      throw badRequest(
        `response_format.json_schema could not be turned into a grammar: ${(error as Error).message}`,
        'response_format.json_schema',
      );
    }
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
        tokenBias: plan.tokenBias,
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


function newToolCallId(): string {
  return `call_${randomBytes(12).toString('base64url').replace(/[-_]/g, 'x')}`;
}

/**
 * Derive a wrapper that starts the answer in function-calling mode: node-llama-cpp then injects the
 * call prefix and lets the model pick only among the offered functions (grammar-constrained name and
 * arguments). Used for tool_choice "required" and a named tool_choice (only that function offered).
 */
export function forcingFunctionCall(base: ChatWrapper): ChatWrapper {
  const forced = Object.create(base) as ChatWrapper;
  forced.generateContextState = function (options) {
    const state = base.generateContextState.call(this, options);
    if (state.functionCall !== undefined || state.ignoreStartText !== undefined)
      return { ...state, functionCall: { initiallyEngaged: true, disengageInitiallyEngaged: [] } };
    return {
      contextText: state.contextText,
      stopGenerationTriggers: state.stopGenerationTriggers,
      noPrefixTrigger: { type: 'functionCall', inject: LlamaText([]) },
    };
  };
  return forced;
}

/**
 * Tool messages carry text. node-llama-cpp JSON-encodes results (a string gets quotes), while Qwen's
 * own template inserts the content as is; this (internal, hence the cast) QwenChatWrapper option
 * renders it the template's way.
 */
const qwenToolResults = { _flatFunctionResultString: true } as Record<string, unknown>;

/** An option node-llama-cpp no longer reads would quote every tool result silently: refuse to load instead. */
function checkQwenToolResults(wrappers: Wrappers): void {
  for (const wrapper of [wrappers.standard, wrappers.noThinking])
    if (wrapper instanceof QwenChatWrapper && (wrapper as unknown as Record<string, unknown>)._flatFunctionResultString !== true)
      throw new Error(
        'node-llama-cpp internal QwenChatWrapper._flatFunctionResultString is gone: tool results would be rendered JSON-quoted. ' +
          'This node-llama-cpp version is not supported by this build (see src/engines/llama-cpp/internals.test.ts).',
      );
}

export async function loadLlamaCppChatModel(
  config: LlamaCppModelConfig,
  onProgress: LoadProgress | undefined,
  { llama, signal }: LlamaCppLoadOptions,
): Promise<LoadedModel<LlamaCppChatModel>> {
  if (!config.path) throw new Error(`model ${config.id}: llama-cpp needs \`path\``);
  const options = config.llamaCpp;
  const model = await llama.loadModel({
    modelPath: config.path,
    gpuLayers: options.gpuLayers,
    onLoadProgress: onProgress,
    loadSignal: signal,
  });
  const wrappers: Wrappers = {
    standard: resolveChatWrapper(model, { customWrapperSettings: { qwen: qwenToolResults } }),
    noThinking: resolveChatWrapper(model, {
      customWrapperSettings: {
        qwen: { ...qwenToolResults, thoughts: 'discourage' },
        jinjaTemplate: { additionalRenderParameters: { enable_thinking: false } },
      },
    }),
  };
  let context: LlamaContext | undefined;
  try {
    checkQwenToolResults(wrappers);
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
