// GGUF chat on Infera's own llama.cpp runner (ffi/runner.ts): the same requests, limits and answers as
// chat.ts (node-llama-cpp's LlamaChat), with generation driven by one decode per step over all
// sequences and sampling on the loop's thread. What stays with node-llama-cpp's JavaScript: the chat
// template (its chat wrappers, resolved once per GGUF and cached: chat-wrappers.ts) and JSON schema →
// GBNF, both imported by file path (nlc-parts.ts); the tokenizer is the runner's own llama_vocab
// (ffi/vocab.ts). No node-llama-cpp Llama, addon or package root is loaded in this engine's process. The model's text is split into reasoning, answer and tool calls by the parsers
// in src/protocol/parsers, stop strings and token limits are applied here, and tool calls are
// constrained by a lazy grammar that wakes on the tool-call opening token, as llama-server does.
// Text completion (/v1/completions) runs on the same sequences, its input planned by completions.ts.
import { readFile } from 'node:fs/promises';
import type { ChatWrapper, Token } from 'node-llama-cpp';
import { ClientGoneError, InferaError, badRequest } from '../../errors/index.ts';
import { RawOutputParser } from '../../protocol/parsers/raw-output.ts';
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
  SamplingOptions,
  TokenLogprob,
  ToolCall,
} from '../../spec/chat.ts';
import type { EngineStats, LoadProgress, LoadedModel } from '../../spec/index.ts';
import type { LlamaCppModelConfig } from './config.ts';
import { cachedFfiWrappers, deferredNoThinking, resolveFfiWrappers } from './chat-wrappers.ts';
import type { LlamaCppLoadOptions } from './embedding.ts';
import { FfiVocab, metadataFromModel } from './ffi/vocab.ts';
import { NLC_DIST, NLC_PATHS, nlcModule, type GbnfJsonModule } from './nlc-parts.ts';
import { LlamaLibraryUnavailable, openLlamaLibrary, type LlamaLibrary } from './ffi/library.ts';
import {
  LlamaRunner,
  type Generation,
  type GenerationEnd,
  type GrammarSpec,
  type SamplingSpec,
  type TokenDecision,
  type TokenEvent,
} from './ffi/runner.ts';
import { ChatPlanner, DEFAULT_TEMPERATURE, PENALTY_WINDOW, newToolCallId, withinCompileBudget, type Plan, type Wrappers } from './chat-plan.ts';
import { streamFromProducer } from './chat-stream.ts';
import { emptyCompletion, infillTokens, planCompletion, type CompletionPlan } from './completions.ts';
import { unloading } from './generation.ts';
import { abortSignalOf } from '../../spec/chat.ts';

const TOOL_OPEN = '<tool_call>';

/** llama-server's per-request `cache_prompt` (a top-level extension field): false evaluates the whole prompt. */
function cachePrompt(extra: Record<string, unknown> | undefined): boolean {
  return extra?.cache_prompt !== false;
}
const TOOL_CLOSE = '</tool_call>';

type Emit = (part: ChatStreamPart) => void;

/** What the FFI chat model needs from the model's template, checked once at load. */
export interface FfiTemplate {
  /** The thought segment's tags, when the template has one. */
  thought?: { open: string; close: string };
  /** The tool-call opening as one token (Hermes / Qwen `<tool_call>` format). */
  toolOpenToken: Token;
}

/**
 * Whether the FFI runner can serve this template: tool calls must use the Hermes `<tool_call>{json}</tool_call>`
 * form (the lazy grammar and the parser know that one), with the opening as a single token. Returns
 * why not otherwise (the model then runs on node-llama-cpp's LlamaChat, which knows every format).
 */
export function ffiTemplate(model: FfiVocab, wrappers: Wrappers): FfiTemplate | string {
  const problem = ffiWrapperProblem(wrappers);
  if (problem) return problem;
  const tokens = model.tokenize(TOOL_OPEN, true);
  if (tokens.length !== 1) return `${TOOL_OPEN} is not one token in its vocabulary`;
  const thought = wrappers.standard.settings.segments?.thought;
  return {
    toolOpenToken: tokens[0]!,
    thought: thought ? { open: String(thought.prefix).trim(), close: String(thought.suffix).trim() } : undefined,
  };
}

/**
 * The part of ffiTemplate's check that needs no tokenizer: the wrappers' tool-call format. A deferred
 * no-thinking wrapper (chat-wrappers.ts) is checked when it resolves (wrapperProblem), not here.
 */
function ffiWrapperProblem(wrappers: Wrappers): string | undefined {
  const deferred = deferredNoThinking(wrappers);
  for (const wrapper of deferred ? [wrappers.standard] : [wrappers.standard, wrappers.noThinking]) {
    const problem = wrapperProblem(wrapper);
    if (problem) return problem;
  }
  return undefined;
}

function wrapperProblem(wrapper: ChatWrapper): string | undefined {
  const prefix = String(wrapper.settings.functions.call.prefix);
  if (!prefix.includes(TOOL_OPEN)) return `its chat template (${wrapper.wrapperName}) writes tool calls as ${JSON.stringify(prefix)}, not ${TOOL_OPEN}`;
  return undefined;
}

/**
 * How long after load (and between checks while requests run) deferred start-up work waits: a client
 * starting the server typically sends its first request as soon as the model is ready.
 */
const IDLE_WORK_DELAY_MS = 1000;

export class FfiChatModel implements ChatModel {
  readonly kind = 'chat' as const;
  readonly name: string;
  readonly contextSize: number;
  readonly slots: Slots;
  /**
   * Where the runner calls llama_decode: 'loop' in an engine process of its own (ownProcess), else on
   * koffi's worker. Plain data, so the server's proxy of a model in its engine process shows it too.
   */
  readonly decodeOn: 'loop' | 'worker';
  private readonly planner: ChatPlanner;
  private jsonGrammar: Promise<string> | undefined;
  private readonly running = new Set<(error: Error) => void>();
  private drained: (() => void) | undefined;
  private closing = false;
  private idleTimer: NodeJS.Timeout | undefined;
  /**
   * How long an answered prompt check keeps an idle runner's first step waiting for its generation
   * (the server checks every prompt, then starts it: runner.admissionHold). A check whose request
   * never starts (refused after it) delays the others' first step this much, once. The server turns a
   * check into a start in ~1 ms on a quiet box and took ~9 ms under load (docs/BENCHMARKS.md, dec9).
   */
  admissionHoldMs = 20;
  /** Deadlines of answered prompt checks whose generation has not started yet, oldest first. */
  private readonly checked: number[] = [];

  constructor(
    /** The runner's vocabulary: tokenizer and special tokens. */
    private readonly vocab: FfiVocab,
    readonly runner: LlamaRunner,
    wrappers: Wrappers,
    readonly template: FfiTemplate,
    name: string,
    queue: { maxQueue: number; maxQueueWaitSeconds: number },
  ) {
    this.name = name;
    this.contextSize = runner.contextSize;
    this.decodeOn = runner.decodeOn;
    this.planner = new ChatPlanner(vocab, wrappers, this.contextSize);
    runner.admissionHold = () => {
      const now = performance.now();
      while (this.checked.length > 0 && this.checked[0]! <= now) this.checked.shift();
      return this.checked.length > 0 ? this.checked[0]! - now : 0;
    };
    this.slots = new Slots(runner.sequences, queue.maxQueue, `Model ${name}`, { maxWaitMs: queue.maxQueueWaitSeconds * 1000 });
  }

  get thinks(): boolean {
    return this.planner.thinks;
  }

  async stats(): Promise<EngineStats> {
    return { active: this.slots.active, queued: this.slots.queued };
  }

  async checkPrompt(options: ChatCallOptions): Promise<number> {
    const tokens = this.plan(options).promptTokens;
    this.checked.push(performance.now() + this.admissionHoldMs);
    return tokens;
  }

  async doGenerate(options: ChatCallOptions): Promise<ChatResult> {
    return this.run(this.plan(options), abortSignalOf(options.signal), () => {}, cachePrompt(options.extra));
  }

  doStream(options: ChatCallOptions): AsyncIterable<ChatStreamPart> {
    const plan = this.plan(options);
    return streamFromProducer<ChatStreamPart>(async (emit, signal) => {
      await this.run(plan, signal, emit, cachePrompt(options.extra));
    }, abortSignalOf(options.signal));
  }

  private plan(options: ChatCallOptions): Plan {
    if (this.closing) throw unloading();
    return this.planner.plan(options);
  }

  get infill(): boolean {
    return infillTokens(this.vocab) !== undefined;
  }

  async checkCompletion(options: CompletionCallOptions): Promise<number> {
    const tokens = this.planCompletion(options).input.length;
    this.checked.push(performance.now() + this.admissionHoldMs);
    return tokens;
  }

  async doComplete(options: CompletionCallOptions): Promise<CompletionResult> {
    return this.complete(this.planCompletion(options), abortSignalOf(options.signal), () => {}, cachePrompt(options.extra));
  }

  doCompleteStream(options: CompletionCallOptions): AsyncIterable<CompletionStreamPart> {
    const plan = this.planCompletion(options);
    return streamFromProducer<CompletionStreamPart>(async (emit, signal) => {
      await this.complete(plan, signal, emit, cachePrompt(options.extra));
    }, abortSignalOf(options.signal));
  }

  private planCompletion(options: CompletionCallOptions): CompletionPlan {
    if (this.closing) throw unloading();
    // The runner's vocabulary answers everything the plan asks (tokens, BOS rule, FIM tokens).
    return planCompletion(this.vocab, this.contextSize, options);
  }

  private async complete(
    plan: CompletionPlan,
    signal: AbortSignal,
    emit: (part: CompletionStreamPart) => void,
    cache: boolean,
  ): Promise<CompletionResult> {
    if (plan.maxTokens === 0) return emptyCompletion(plan, emit);
    let output!: CompletionOutput;
    const end = await this.generateOnSlot(signal, () => {
      output = new CompletionOutput(this, plan, emit);
      // The plan's input is what the model sees, beginning-of-sequence and FIM tokens included.
      return this.runner.generate({
        prompt: plan.input,
        sampling: this.sampling(plan.sampling, [], undefined),
        maxTokens: plan.maxTokens,
        topLogprobs: plan.topLogprobs,
        cachePrompt: cache,
        onToken: (event) => output.onToken(event),
      });
    });
    return output.finish(end);
  }

  /**
   * Runs `work` (synchronous, a few hundred ms of CPU) at the first check, every IDLE_WORK_DELAY_MS
   * from now, that finds no request running or queued, so it neither delays a first answer nor stalls
   * a stream mid-answer; never after close. The timer does not keep the process alive.
   */
  whenIdle(work: () => void): void {
    const attempt = () => {
      this.idleTimer = undefined;
      if (this.closing) return;
      if (this.slots.active > 0 || this.slots.queued > 0) return arm();
      work();
    };
    const arm = () => {
      this.idleTimer = setTimeout(attempt, IDLE_WORK_DELAY_MS);
      this.idleTimer.unref();
    };
    arm();
  }

  /** Stop taking requests, end the running ones with a retryable 503 and wait until every sequence is back. */
  async close(): Promise<void> {
    this.closing = true;
    clearTimeout(this.idleTimer);
    for (const stop of this.running) stop(unloading());
    if (this.running.size > 0) await new Promise<void>((resolve) => (this.drained = resolve));
  }

  // ---------------------------------------------------------------------------------------------

  private async grammarFor(plan: Plan): Promise<GrammarSpec | undefined> {
    if (plan.grammar?.kind === 'json') {
      // The file node-llama-cpp's getGrammarFor('json') reads.
      this.jsonGrammar ??= readFile(new URL(NLC_PATHS.jsonGrammar, NLC_DIST), 'utf8');
      return { text: await this.jsonGrammar };
    }
    if (plan.grammar?.kind === 'schema') {
      const schema = plan.grammar.schema;
      const text = await withinCompileBudget(plan.grammarCompileMs, 'response_format.json_schema', async () => {
        try {
          return await this.schemaRules(schema, 'root');
        } catch (error) {
          throw badRequest(`response_format.json_schema could not be turned into a grammar: ${(error as Error).message}`, 'response_format.json_schema');
        }
      });
      return { text };
    }
    if (!plan.functions) return undefined;
    // One call object per offered function: {"name": <that name>, "arguments": <its parameters>}.
    const calls = Object.entries(plan.functions).map(([name, fn]) => ({
      type: 'object',
      properties: { name: { const: name }, arguments: fn.params ?? { type: 'object', properties: {} } },
    }));
    const rules = await withinCompileBudget(plan.grammarCompileMs, 'tools', () => this.schemaRules(calls.length === 1 ? calls[0] : { oneOf: calls }, 'infera-call'));
    const item = `infera-item ::= "${TOOL_OPEN}" "\\n"? infera-call "\\n"? "${TOOL_CLOSE}"`;
    // A forced call has its opening in the prompt already; a lazy grammar starts with the trigger token.
    const first = plan.forceCall ? `infera-first ::= "\\n"? infera-call "\\n"? "${TOOL_CLOSE}"` : 'infera-first ::= infera-item';
    const more = plan.maxParallelFunctionCalls === 1 ? '' : ' ([ \\t\\n]* infera-item)*';
    return {
      text: `${rules}\n${item}\n${first}\nroot ::= infera-first${more}\n`,
      triggerTokens: plan.forceCall ? undefined : [this.template.toolOpenToken],
    };
  }

  /**
   * GBNF for a JSON schema from node-llama-cpp's converter (what createGrammarForJsonSchema runs, without
   * a Llama), its root renamed, without the end marker node-llama-cpp appends for its own stop detection
   * (four newlines): here the grammar completing is the end, and llama.cpp then allows only the
   * end-of-generation token. llama.cpp parses the grammar when the request's sampler is made (a grammar
   * it refuses fails that request).
   */
  private async schemaRules(schema: unknown, root: string): Promise<string> {
    const { getGbnfGrammarForGbnfJsonSchema } = await nlcModule<GbnfJsonModule>(NLC_PATHS.gbnfJson);
    const grammar = getGbnfGrammarForGbnfJsonSchema(schema as never);
    const endMarker = / "\\n\\n\\n\\n" \[\\n\]\*$/;
    const lines = grammar.split('\n');
    const at = lines.findIndex((line) => line.startsWith('root ::= '));
    if (at < 0 || !endMarker.test(lines[at]!))
      throw new InferaError({ status: 500, code: 'internal_error', message: 'node-llama-cpp JSON-schema grammars changed shape (root rule with its end marker)' });
    lines[at] = `${root} ::= ${lines[at]!.slice('root ::= '.length).replace(endMarker, '')}`;
    return lines.join('\n');
  }

  private sampling(options: SamplingOptions, bannedTokens: Token[], grammar: GrammarSpec | undefined): SamplingSpec {
    const { temperature, topP, topK, minP, seed, frequencyPenalty, presencePenalty, repetitionPenalty } = options;
    const penalized = !!frequencyPenalty || !!presencePenalty || (repetitionPenalty !== undefined && repetitionPenalty !== 1);
    return {
      temperature: temperature ?? DEFAULT_TEMPERATURE,
      topP,
      topK,
      minP,
      seed,
      penalties: penalized
        ? { lastN: PENALTY_WINDOW, repeat: repetitionPenalty ?? 1, frequency: frequencyPenalty ?? 0, presence: presencePenalty ?? 0 }
        : undefined,
      logitBias: bannedTokens.map((token) => [token, -Infinity] as [number, number]),
      grammar,
    };
  }

  /** One chat request on one sequence. */
  private async run(plan: Plan, signal: AbortSignal, emit: Emit, cache: boolean): Promise<ChatResult> {
    const grammar = await this.grammarFor(plan);
    let output!: OutputState;
    let prompt!: number[];
    const end = await this.generateOnSlot(signal, () => {
      output = new OutputState(this, plan, emit);
      prompt = [...plan.promptTokenIds];
      if (plan.forceCall) {
        prompt.push(this.template.toolOpenToken);
        output.pushText(TOOL_OPEN, 0);
      }
      return this.runner.generate({
        prompt,
        sampling: this.sampling(plan.sampling, plan.bannedTokens, grammar),
        maxTokens: Math.max(1, Math.min(plan.totalLimit + 4, this.contextSize - prompt.length)),
        topLogprobs: plan.topLogprobs,
        cachePrompt: cache,
        onToken: (event) => output.onToken(event),
      });
    });
    return output.finish(end.reason === 'length', end.promptTokens - (plan.forceCall ? 1 : 0), end.cachedPromptTokens, end.generatedTokens);
  }

  /**
   * Takes a slot, starts a generation on the runner with `start` and waits for its end; the client
   * leaving or an unload cancels it (the promise then rejects with ClientGoneError or a 503).
   * Resolves only after the runner's sequence is back and the slot released.
   */
  private async generateOnSlot(signal: AbortSignal, start: () => Generation): Promise<GenerationEnd> {
    const lease = await this.slots.acquire(signal);
    let stopRun: ((error: Error) => void) | undefined;
    try {
      if (signal.aborted) throw new ClientGoneError();
      if (this.closing) throw unloading();
      this.checked.shift();
      const generation = start();
      stopRun = (error: Error) => generation.cancel(error);
      this.running.add(stopRun);
      const onAbort = () => generation.cancel(new ClientGoneError());
      signal.addEventListener('abort', onAbort, { once: true });
      try {
        return await generation.done;
      } finally {
        signal.removeEventListener('abort', onAbort);
      }
    } finally {
      lease.release();
      if (stopRun) this.running.delete(stopRun);
      if (this.running.size === 0) this.drained?.();
    }
  }

  /** Text of a token for logprobs (lossy for a lone part of a multi-byte character). */
  tokenText(token: number): string {
    return textDecoder.decode(this.runner.piece(token));
  }

  tokenize(text: string): Token[] {
    return this.vocab.tokenize(text, true);
  }
}

const textDecoder = new TextDecoder();

/** Holds back text that may still become a stop string; reports the first complete one. */
class StopMatcher {
  private held = '';
  constructor(private readonly stops: string[]) {}

  push(text: string): { emit: string; stopped: boolean } {
    if (this.stops.length === 0) return { emit: text, stopped: false };
    const buffer = this.held + text;
    let first = -1;
    for (const stop of this.stops) {
      const at = buffer.indexOf(stop);
      if (at >= 0 && (first < 0 || at < first)) first = at;
    }
    if (first >= 0) {
      this.held = '';
      return { emit: buffer.slice(0, first), stopped: true };
    }
    let keep = 0;
    for (const stop of this.stops)
      for (let k = Math.min(stop.length - 1, buffer.length); k > keep; k--)
        if (buffer.endsWith(stop.slice(0, k))) {
          keep = k;
          break;
        }
    this.held = buffer.slice(buffer.length - keep);
    return { emit: buffer.slice(0, buffer.length - keep), stopped: false };
  }

  flush(): string {
    const rest = this.held;
    this.held = '';
    return rest;
  }
}

/** One request's output: raw token text → reasoning / answer / tool calls, limits, usage and logprobs. */
export class OutputState {
  private readonly decoder = new TextDecoder('utf-8', { fatal: false });
  private readonly parser: RawOutputParser;
  private readonly stops: StopMatcher;
  private text = '';
  private reasoning = '';
  private readonly calls: ToolCall[] = [];
  private answerTokens = 0;
  private reasoningTokens = 0;
  private forcedTokens = 0;
  private capped = false;
  private stopped = false;
  private readonly logprobs: TokenLogprob[] | undefined;
  private closingThought = false;
  private grammarAwake = false;

  constructor(
    private readonly model: FfiChatModel,
    private readonly plan: Plan,
    private readonly emit: Emit,
  ) {
    const thought = model.template.thought;
    this.parser = new RawOutputParser({
      // Newlines after the thought are layout; a space there already belongs to the answer.
      thinking: thought ? { openTag: thought.open, closeTag: thought.close, trimAfterThought: 'newlines' } : false,
      toolCalls: plan.functions ? { openTag: TOOL_OPEN, closeTag: TOOL_CLOSE, createId: newToolCallId, streamArguments: true } : false,
    });
    this.stops = new StopMatcher(plan.stop);
    this.logprobs = plan.topLogprobs === undefined ? undefined : [];
  }

  /** Text that is in the output but was not sampled (a forced opening); `tokens` count as generated. */
  pushText(text: string, tokens: number): void {
    this.forcedTokens += tokens;
    this.route(this.parser.push(text), undefined);
  }

  onToken(event: TokenEvent): TokenDecision {
    if (this.stopped) return 'stop';
    // A grammar is constraining the output (from the start, or the lazy tool-call one woke up): a forced
    // token it does not allow would abort the process inside llama.cpp, so nothing is forced then.
    if ((this.plan.functions && event.token === this.model.template.toolOpenToken) || this.plan.grammar || this.plan.forceCall) this.grammarAwake = true;
    const before = this.parser.phase;
    const chunk = this.decoder.decode(event.piece, { stream: !event.isEog });
    const inCall = this.parser.inToolCall;
    const answered = this.route(this.parser.push(chunk), event);
    // Tool-call tokens are answer tokens too (max_tokens can cut a call), though no text comes out;
    // so is a token holding the first bytes of a character that a later token completes.
    const partialCharacter = chunk === '' && event.piece.length > 0 && this.parser.phase === 'content';
    const thought = before === 'reasoning' || this.parser.phase === 'reasoning';
    // With thinking off, a token that shows no text (a leading newline the parser trims as layout, an
    // empty control piece) is still a completion token, and max_tokens caps completion tokens: a sampled
    // answer that began with one counted max_tokens + 1.
    if (answered || inCall || this.parser.inToolCall || partialCharacter || (!thought && !this.plan.thinking)) this.answerTokens++;
    else if (thought) this.reasoningTokens++;
    if (this.stopped) return 'stop';
    if (this.plan.answerLimit !== undefined && this.answerTokens >= this.plan.answerLimit) {
      this.capped = true;
      this.stopped = true;
      return 'stop';
    }
    // The thought budget (zero with thinking off): close the thought the way the template does.
    if (this.parser.phase === 'reasoning' && !this.closingThought && !this.grammarAwake && this.reasoningTokens >= this.plan.thoughtBudget && !event.isEog) {
      const thought = this.model.template.thought;
      if (thought) {
        this.closingThought = true;
        const close = `\n${thought.close}`;
        const tokens = this.model.tokenize(close);
        this.reasoningTokens += tokens.length;
        this.pushText(close, 0);
        return { force: tokens };
      }
    }
    return undefined;
  }

  /** Sends parser parts on; true when answer text came out of them. */
  private route(parts: ReturnType<RawOutputParser['push']>, event: TokenEvent | undefined): boolean {
    let answered = false;
    for (const part of parts) {
      if (this.stopped) break;
      switch (part.type) {
        case 'reasoning-delta':
          // With thinking off, a think block the model opens anyway is cut at once: not shown.
          if (!this.plan.thinking) break;
          this.reasoning += part.text;
          this.emit(part);
          break;
        case 'text-delta': {
          answered = true;
          if (this.logprobs && event?.logprobs) this.recordLogprob(event, part.text);
          const { emit, stopped } = this.stops.push(part.text);
          if (emit) {
            this.text += emit;
            this.emit({ type: 'text-delta', text: emit });
          }
          if (stopped) this.stopped = true;
          break;
        }
        case 'tool-call-start':
          this.calls[part.index] = { id: part.id, name: part.name, arguments: '' };
          this.emit(part);
          break;
        case 'tool-call-delta':
          this.calls[part.index]!.arguments += part.argumentsDelta;
          this.emit(part);
          break;
      }
    }
    return answered;
  }

  private recordLogprob(event: TokenEvent, text: string): void {
    const top = this.plan.topLogprobs ?? 0;
    const describe = (token: number, logprob: number, shown?: string) => {
      const tokenText = shown ?? this.model.tokenText(token);
      return { token: tokenText, logprob, bytes: [...Buffer.from(tokenText, 'utf8')] };
    };
    const chosen = describe(event.token, event.logprobs!.logprob, text);
    const alternatives = event.logprobs!.top.slice(0, top).map((entry) =>
      entry.token === event.token ? { ...chosen, logprob: entry.logprob } : describe(entry.token, entry.logprob),
    );
    this.logprobs!.push({ ...chosen, topLogprobs: alternatives });
  }

  finish(hitLength: boolean, promptTokens: number, cachedPromptTokens: number, generatedTokens: number): ChatResult {
    if (!this.stopped) {
      this.route([...this.parser.push(this.decoder.decode()), ...this.parser.end()], undefined);
      if (!this.stopped) {
        const rest = this.stops.flush();
        if (rest) {
          this.text += rest;
          this.emit({ type: 'text-delta', text: rest });
        }
      }
    }
    // Logprob entries follow the text the parser released; a stop string may have cut the end.
    if (this.logprobs) trimLogprobs(this.logprobs, this.text);
    const toolCalls = this.calls.filter(Boolean);
    const finishReason: FinishReason = this.capped || (hitLength && !this.stopped) ? 'length' : toolCalls.length > 0 ? 'tool_calls' : 'stop';
    const usage: ChatUsage = {
      promptTokens,
      completionTokens: Math.max(generatedTokens + this.forcedTokens, this.reasoningTokens + this.answerTokens),
      reasoningTokens: this.reasoningTokens,
      cachedPromptTokens,
    };
    this.emit({ type: 'finish', finishReason, usage });
    return {
      text: this.text,
      reasoning: this.reasoning,
      toolCalls,
      finishReason,
      usage,
      logprobs: this.logprobs,
      warnings: this.plan.warnings,
    };
  }
}

/**
 * One text completion's output: generated bytes → text, stop strings, and legacy logprobs that follow
 * the released text exactly (one entry per generated token, its `token` the text that token added, so
 * the entries always spell the text; none for the end token or for what a stop string cut).
 */
class CompletionOutput {
  private readonly decoder = new TextDecoder('utf-8', { fatal: false });
  private readonly stops: StopMatcher;
  private text: string;
  /** Generated characters decoded so far / released to the client (echo excluded). */
  private produced = 0;
  private released = 0;
  private stopped = false;
  private readonly logprobs: TokenLogprob[] | undefined;
  /** Entries whose text is decoded but not released yet (held back by a possible stop string). */
  private readonly pending: { entry: TokenLogprob; start: number; end: number }[] = [];

  constructor(
    private readonly model: FfiChatModel,
    private readonly plan: CompletionPlan,
    private readonly emit: (part: CompletionStreamPart) => void,
  ) {
    this.stops = new StopMatcher(plan.stop);
    this.logprobs = plan.topLogprobs === undefined ? undefined : [];
    this.text = plan.echo ?? '';
    if (this.text) emit({ type: 'text-delta', text: this.text });
  }

  onToken(event: TokenEvent): TokenDecision {
    if (this.stopped) return 'stop';
    const chunk = this.decoder.decode(event.piece, { stream: !event.isEog });
    const start = this.produced;
    this.produced += chunk.length;
    if (this.logprobs && event.logprobs && !event.isEog) this.pending.push({ entry: this.describe(event, chunk), start, end: this.produced });
    const { emit, stopped } = this.stops.push(chunk);
    this.out(emit);
    if (stopped) this.stopped = true;
    return stopped ? 'stop' : undefined;
  }

  private describe(event: TokenEvent, text: string): TokenLogprob {
    const top = this.plan.topLogprobs ?? 0;
    const chosen = { token: text, logprob: event.logprobs!.logprob, bytes: [...event.piece] };
    const alternatives = event.logprobs!.top.slice(0, top).map((entry) => {
      if (entry.token === event.token) return { ...chosen, logprob: entry.logprob };
      const tokenText = this.model.tokenText(entry.token);
      return { token: tokenText, logprob: entry.logprob, bytes: [...Buffer.from(tokenText, 'utf8')] };
    });
    return { ...chosen, topLogprobs: alternatives };
  }

  /** Releases text, with the logprob entries it now covers whole. */
  private out(text: string): void {
    this.released += text.length;
    this.text += text;
    let entries: TokenLogprob[] | undefined;
    if (this.logprobs) {
      entries = [];
      while (this.pending.length > 0 && this.pending[0]!.end <= this.released) entries.push(this.pending.shift()!.entry);
      this.logprobs.push(...entries);
    }
    if (text || entries?.length) this.emit(entries ? { type: 'text-delta', text, logprobs: entries } : { type: 'text-delta', text });
  }

  finish(end: GenerationEnd): CompletionResult {
    if (!this.stopped) {
      const { emit, stopped } = this.stops.push(this.decoder.decode());
      this.out(emit);
      if (stopped) this.stopped = true;
      else this.out(this.stops.flush());
    }
    // A stop string that begins inside a token: that token's entry keeps the part before it.
    const straddling = this.pending.find((item) => item.start < this.released);
    if (straddling && this.logprobs) {
      const kept = straddling.entry.token.slice(0, this.released - straddling.start);
      const entry = { ...straddling.entry, token: kept, bytes: [...Buffer.from(kept, 'utf8')] };
      this.logprobs.push(entry);
      this.emit({ type: 'text-delta', text: '', logprobs: [entry] });
    }
    const finishReason = end.reason === 'length' && !this.stopped ? 'length' : 'stop';
    const usage = { promptTokens: this.plan.input.length, completionTokens: end.generatedTokens, cachedPromptTokens: end.cachedPromptTokens };
    this.emit({ type: 'finish', finishReason, usage });
    return { text: this.text, finishReason, usage, logprobs: this.logprobs, warnings: this.plan.warnings };
  }
}

function trimLogprobs(entries: TokenLogprob[], text: string): void {
  let at = 0;
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i]!;
    if (at + entry.token.length <= text.length) {
      at += entry.token.length;
      continue;
    }
    const kept = text.slice(at);
    if (kept) {
      entries[i] = { ...entry, token: kept, bytes: [...Buffer.from(kept, 'utf8')] };
      entries.length = i + 1;
    } else entries.length = i;
    return;
  }
}

/**
 * Where the runner decodes (RunnerOptions.decodeOn, llamaCpp.decodeOn): in the server process always on
 * the worker (its loop answers HTTP); in an engine process as configured.
 */
export function decodeOnFor(placement: 'loop' | 'worker' | undefined, options: Pick<LlamaCppModelConfig['llamaCpp'], 'decodeOn'>): 'loop' | 'worker' {
  return placement === 'loop' ? options.decodeOn : 'worker';
}

/**
 * Loads a chat model on the FFI runner, or says why it cannot serve it (the caller then loads it on
 * node-llama-cpp). The decision comes before the weights load: from the cached wrappers
 * (chat-wrappers.ts, per GGUF in `cacheDir`) or, on a miss, from wrappers resolved with a
 * vocabulary-only llama.cpp model of the file, freed once the runner's own model gives the tokenizer.
 */
export async function loadFfiChatModel(
  config: LlamaCppModelConfig,
  onProgress: LoadProgress | undefined,
  { signal, decodeOn, cacheDir, serving }: Omit<LlamaCppLoadOptions, 'llama'> & { cacheDir?: string },
): Promise<LoadedModel<FfiChatModel> | string> {
  const options = config.llamaCpp;
  if (options.gpu !== false || options.gpuLayers !== 0) return 'GPU offload is configured (gpu / gpuLayers), and the FFI runner drives the CPU backend only';
  let lib: LlamaLibrary;
  try {
    // `auto` takes the native build when there is one, as embeddings do: on an AMD EPYC with AVX-512
    // (2026-12-07) node-llama-cpp's prebuilt zen4 variant decoded chat-512x8 at 0.65x llama-server and
    // the native build at 1.09x (docs/BENCHMARKS.md); on the earlier host without that gap the native
    // build cost +3-6 % CPU per token, a smaller loss than this gain. Without a build, `auto` is `prebuilt`.
    lib = await openLlamaLibrary({ cpuBackend: options.cpuBackend, cpuBackendDir: options.cpuBackendDir });
  } catch (error) {
    if (error instanceof LlamaLibraryUnavailable) return error.message;
    throw error;
  }
  const { api } = lib;
  let vocabModel: unknown;
  let runner: LlamaRunner | undefined;
  try {
    let wrappers = await cachedFfiWrappers(config.path, cacheDir);
    let vocab: FfiVocab | undefined;
    if (!wrappers) {
      const params = { ...(api.llama_model_default_params() as Record<string, unknown>), n_gpu_layers: 0, vocab_only: true };
      vocabModel = api.llama_model_load_from_file(config.path, params);
      if (!vocabModel) throw new Error(`llama.cpp could not load ${config.path}`);
      vocab = new FfiVocab(api, api.llama_model_get_vocab(vocabModel));
      // The no-thinking wrapper waits for its first use or an idle moment after load (whenIdle below).
      // Its tool-call check can then no longer send the model to node-llama-cpp: it fails the request
      // that needs it (no template tested here resolves the two wrappers to different tool-call formats).
      const check = (wrapper: ChatWrapper) => {
        const problem = wrapperProblem(wrapper);
        if (problem) throw new Error(`The FFI runner cannot serve requests without thinking: ${problem}`);
      };
      wrappers = (await resolveFfiWrappers(config.path, vocab, cacheDir, metadataFromModel(api, vocabModel), { deferNoThinking: true, check })).wrappers;
    }
    const problem = ffiWrapperProblem(wrappers);
    if (problem) return problem;
    signal?.throwIfAborted();
    runner = LlamaRunner.load(lib, config.path, {
      contextSize: options.contextSize,
      sequences: options.sequences,
      threads: options.threads,
      batchSize: options.batchSize,
      decodeOn: decodeOnFor(decodeOn, options),
      promptCache: options.promptCache,
      repack: options.repack,
      poll: options.poll,
      flashAttention: options.flashAttention,
    });
    if (vocab) vocab.rebind(runner.vocab);
    else vocab = new FfiVocab(api, runner.vocab);
    const template = ffiTemplate(vocab, wrappers);
    if (typeof template === 'string') {
      await runner.dispose();
      return template;
    }
    signal?.throwIfAborted();
    onProgress?.(1);
    const model = new FfiChatModel(vocab, runner, wrappers, template, config.id, config);
    if (deferredNoThinking(wrappers)) {
      const resolved = wrappers;
      // From when requests may come: a model loaded by a spare engine process before the server listened
      // would otherwise reach its first idle check just as the first request arrives.
      void (serving ?? Promise.resolve()).then(() =>
        model.whenIdle(() => {
          try {
            void resolved.noThinking;
          } catch {
            // Failed and kept: the request that needs it reports it.
          }
        }),
      );
    }
    const loadedRunner = runner;
    return {
      model,
      async dispose() {
        await model.close();
        await loadedRunner.dispose();
      },
    };
  } catch (error) {
    await runner?.dispose();
    throw error;
  } finally {
    if (vocabModel) api.llama_model_free(vocabModel);
  }
}
