// What a chat request becomes before it takes a sequence, shared by both llama.cpp runners (node-llama-cpp's
// LlamaChat and Infera's own FFI loop): the history in node-llama-cpp's shape, the chat wrapper (the
// model's template, thinking on or off, a forced tool call), the tools and grammars the output must
// follow, the rendered prompt and its token count, and the limits. Everything here can fail with a 400
// before the request queues.
import { randomBytes } from 'node:crypto';
import type {
  ChatHistoryItem,
  ChatModelFunctions,
  ChatWrapper,
  GbnfJsonSchema,
  LlamaModel,
  QwenChatWrapper as QwenChatWrapperClass,
  Token,
  Tokenizer,
} from 'node-llama-cpp';
import { InferaError, badRequest } from '../../errors/index.ts';
import { DEFAULT_THINKING_BUDGET, type ChatCallOptions, type SamplingOptions } from '../../spec/chat.ts';
import { toLlamaChatHistory } from './chat-history.ts';
import { toGbnfJsonSchema } from './chat-json-schema.ts';
import { NLC_PATHS, nlcModule, type LlamaTextModule, type ResolveChatWrapperModule } from './nlc-parts.ts';

// By file path, not the package root: the FFI engine process must not load all of node-llama-cpp (nlc-parts.ts).
const { LlamaText, SpecialTokensText } = await nlcModule<LlamaTextModule>(NLC_PATHS.llamaText);
const { QwenChatWrapper } = await nlcModule<{ QwenChatWrapper: typeof QwenChatWrapperClass }>(NLC_PATHS.qwen);

/** What the planner needs of a vocabulary: node-llama-cpp's LlamaModel or the FFI runner's FfiVocab. */
export interface PlannerVocab {
  readonly tokenizer: Tokenizer;
  isEogToken(token: Token): boolean;
}

export { DEFAULT_TEMPERATURE, PENALTY_WINDOW } from './generation.ts';

/**
 * Tokens kept free at the end of the context: node-llama-cpp injects a few tokens of its own (a closing
 * think tag when the thought budget runs out, a function-call prefix) that its maxTokens does not count,
 * and running into the end of the context would make it shift (silently drop) the conversation.
 */
export const CONTEXT_MARGIN = 16;
/**
 * node-llama-cpp's maxTokens counts every generated token, the think tags and the blank line after
 * them included, while the thought budget counts only the thought's text and max_tokens only the
 * answer. The answer limit itself is enforced exactly by counting answer tokens; this is slack.
 */
export const THINK_OVERHEAD = 8;

export interface Wrappers {
  /** The wrapper resolved from the GGUF's chat template. */
  standard: ChatWrapper;
  /** Same template with thinking switched off (QwenChatWrapper thoughts:"discourage", Jinja enable_thinking:false). */
  noThinking: ChatWrapper;
}

/** Everything about a request that can be checked before it takes a sequence. */
export interface Plan {
  history: ChatHistoryItem[];
  wrapper: ChatWrapper;
  functions?: ChatModelFunctions;
  maxParallelFunctionCalls?: number;
  grammar?: { kind: 'json' } | { kind: 'schema'; schema: GbnfJsonSchema };
  /** requests.jsonSchema.maxCompileMs, from the call options. */
  grammarCompileMs?: number;
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
  /** Tokens the answer may not contain (the tool-call opening when no tools are offered). */
  bannedTokens: Token[];
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
export function grammarSchema(schema: unknown, param: string, unsupported: 'refuse' | string[]): GbnfJsonSchema {
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

/** Plans requests for one model: its tokenizer, its wrappers and its context size. */
export class ChatPlanner {
  constructor(
    readonly model: PlannerVocab,
    readonly wrappers: Wrappers,
    readonly contextSize: number,
  ) {}

  /** Whether the model's template has a thought segment. */
  get thinks(): boolean {
    return this.wrappers.standard.settings.segments?.thought != null;
  }

  plan(options: ChatCallOptions): Plan {
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
      grammarCompileMs: options.grammarCompileMs,
      thinking,
      prefix,
      forceCall,
      thoughtBudget,
      answerLimit,
      totalLimit,
      promptTokens,
      promptTokenIds,
      stop: (options.stop ?? []).filter((text) => text.length > 0),
      bannedTokens: functions ? [] : this.noToolCallTokens(wrapper),
      sampling: options.sampling,
      topLogprobs: options.topLogprobs,
      warnings,
    };
  }

  renderedTokens(wrapper: ChatWrapper, history: ChatHistoryItem[], functions?: ChatModelFunctions): Token[] {
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
  private noToolCallTokens(wrapper: ChatWrapper): Token[] {
    const prefix = LlamaText(wrapper.settings.functions.call.prefix);
    for (const value of prefix.values) {
      if (!(value instanceof SpecialTokensText)) continue;
      const tokens = LlamaText(value).tokenize(this.model.tokenizer);
      if (tokens.length === 1 && !this.model.isEogToken(tokens[0]!)) return [tokens[0]!];
      return [];
    }
    return [];
  }
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
export const qwenToolResults = { _flatFunctionResultString: true } as Record<string, unknown>;

/** An option node-llama-cpp no longer reads would quote every tool result silently: refuse to load instead. */
export function checkQwenToolResults(wrappers: Wrappers): void {
  for (const wrapper of [wrappers.standard, wrappers.noThinking])
    if (wrapper instanceof QwenChatWrapper && (wrapper as unknown as Record<string, unknown>)._flatFunctionResultString !== true)
      throw new Error(
        'node-llama-cpp internal QwenChatWrapper._flatFunctionResultString is gone: tool results would be rendered JSON-quoted. ' +
          'This node-llama-cpp version is not supported by this build (see src/engines/llama-cpp/internals.test.ts).',
      );
}

/** The customWrapperSettings of the two resolutions: thinking on (standard) and off (noThinking). */
export const WRAPPER_SETTINGS = {
  standard: { qwen: qwenToolResults },
  noThinking: {
    qwen: { ...qwenToolResults, thoughts: 'discourage' },
    jinjaTemplate: { additionalRenderParameters: { enable_thinking: false } },
  },
} as const;

/** The model's wrappers, with thinking on and off, resolved from its chat template. */
export async function resolveWrappers(model: LlamaModel): Promise<Wrappers> {
  const { resolveChatWrapper } = await nlcModule<ResolveChatWrapperModule>(NLC_PATHS.resolveChatWrapper);
  const wrappers: Wrappers = {
    standard: resolveChatWrapper(model, { customWrapperSettings: WRAPPER_SETTINGS.standard }),
    noThinking: resolveChatWrapper(model, { customWrapperSettings: WRAPPER_SETTINGS.noThinking as never }),
  };
  checkQwenToolResults(wrappers);
  return wrappers;
}

/** OpenAI-style tool-call ids: call_ and 16 letters or digits. */
export function newToolCallId(): string {
  return `call_${randomBytes(12).toString('base64url').replace(/[-_]/g, 'x')}`;
}

/**
 * Runs `build` (a schema turned into a grammar: node-llama-cpp's converter and llama.cpp's parser, both
 * synchronous in the engine process) and refuses the request when it took longer than `budgetMs`
 * (requests.jsonSchema.maxCompileMs). The schema caps keep compilation near 0.1 s; this is the cap on
 * what they let through.
 */
export async function withinCompileBudget<T>(budgetMs: number | undefined, param: string, build: () => Promise<T>): Promise<T> {
  const started = performance.now();
  const built = await build();
  const ms = performance.now() - started;
  if (budgetMs !== undefined && ms > budgetMs)
    throw badRequest(
      `${param}: turning this schema into a grammar took ${Math.round(ms)} ms, more than requests.jsonSchema.maxCompileMs (${budgetMs} ms). Use a smaller schema (fewer properties, enum values or alternatives).`,
      param,
    );
  return built;
}
