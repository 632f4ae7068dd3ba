// POST /v1/chat/completions request: the wire body (snake_case, OpenAI + SiliconFlow fields) →
// ChatCallOptions. Every field of API-CONTRACT.md is honoured or refused with a 400 naming it;
// fields we do not know are not refused, because clients send vendor extensions freely: they ride along
// in `options.extra`, which an engine that forwards the request passes on and other engines ignore.
//
// Leniency decisions (each one matches what a real client sends):
// - `null` means "absent" for every optional field (`tools: null`, `stop: null`, ...).
// - `developer` messages are system messages (the openai SDK sends them for reasoning models).
// - Legacy `functions` / `function_call` become tools / tool_choice, and `role:"function"` messages
//   become tool results; `legacyFunctions` tells the response builders to answer in that dialect.
// - `thinking_budget` is clamped into 128..32768, never rejected (Cherry Studio sends ≥ 32768).
// - `tools: []` means no tools. Empty stop strings are dropped (they could only stop at once).
// - A tool message without `tool_call_id` is matched to its assistant's calls by position.
// Strict where the engine needs it: a tool result must answer a preceding assistant message with
// tool_calls (only other tool results in between) and name one of its ids, as OpenAI requires;
// otherwise the engine could not attach the result to a call.

import { z } from 'zod';
import { badRequest, InferaError } from '../../errors/index.ts';
import type {
  ChatCallOptions,
  ChatMessage,
  ResponseFormat,
  ThinkingOptions,
  ToolCall,
  ToolChoice,
  ToolDefinition,
  UserContentPart,
} from '../../spec/chat.ts';
import {
  DEFAULT_THINKING_BUDGET,
  THINKING_BUDGET_MAX,
  THINKING_BUDGET_MIN,
  TOOL_NAME_PATTERN,
  TOOL_NAME_RULE,
} from '../../spec/chat.ts';
import { FORWARDED_FIELDS, isJsonObject, numberBetween, parseBody, unknownFields } from '../common/validation.ts';
import { DEFAULT_REQUEST_LIMITS, type RequestLimits } from '../../config/requests.ts';
import { checkJsonSchema } from './json-schema-check.ts';
import { keepAliveField } from '../common/keep-alive.ts';

/** Most choices one request may ask for (`n`) by default (config `requests.maxChoices`): each choice is a full generation. */
export const MAX_CHOICES = DEFAULT_REQUEST_LIMITS.maxChoices;
export const MAX_STOP_SEQUENCES = 4;

/** reasoning_effort → thinking budget (only when thinking_budget itself is absent). */
const REASONING_EFFORT_BUDGET = {
  minimal: THINKING_BUDGET_MIN,
  low: 1024,
  medium: DEFAULT_THINKING_BUDGET,
  high: 16384,
  max: THINKING_BUDGET_MAX,
} as const;

const opt = <T extends z.ZodType>(schema: T) => schema.nullish();

const functionName = z.string().regex(TOOL_NAME_PATTERN, { error: TOOL_NAME_RULE });

const jsonSchemaObject = z.record(z.string(), z.unknown());

const textPart = z.object({ type: z.literal('text'), text: z.string() });
const urlObject = () =>
  z.union([
    z.string().min(1),
    z.object({
      url: z.string().min(1),
      detail: opt(z.enum(['auto', 'low', 'high'])),
    }),
  ], { error: 'must be a URL string or an object {"url": ...}' });

const unsupportedPart = <T extends string>(type: T, what: string) =>
  z.object({ type: z.literal(type) }).check((ctx) => {
    ctx.issues.push({
      code: 'custom',
      input: ctx.value,
      path: ['type'],
      message: `${what} content parts are not supported by this server`,
    });
  });

const userPart = z.discriminatedUnion(
  'type',
  [
    textPart,
    z.object({ type: z.literal('image_url'), image_url: urlObject() }),
    z.object({ type: z.literal('video_url'), video_url: urlObject() }),
    unsupportedPart('input_audio', 'input_audio'),
    unsupportedPart('file', 'file'),
  ],
  { error: 'must be one of "text", "image_url", "video_url"' },
);

const assistantPart = z.discriminatedUnion(
  'type',
  [textPart, z.object({ type: z.literal('refusal'), refusal: z.string() })],
  { error: 'must be one of "text", "refusal"' },
);

const textOnlyContent = z.union([z.string(), z.array(textPart)]);

const wireToolCall = z.object({
  id: opt(z.string()),
  type: opt(z.literal('function')),
  function: z.object({
    name: z.string().min(1),
    // Some clients echo arguments back parsed; the engine wants the JSON text.
    arguments: opt(z.union([z.string(), z.record(z.string(), z.unknown())])),
  }),
});

/**
 * SiliconFlow's (and DeepSeek's) beta prefix completion. Declared on every role so that a `prefix: true`
 * where it cannot act is refused with a 400 instead of being stripped unseen.
 */
const prefix = opt(z.boolean());

const message = z.discriminatedUnion(
  'role',
  [
    z.object({ role: z.literal('system'), content: textOnlyContent, prefix }),
    z.object({ role: z.literal('developer'), content: textOnlyContent, prefix }),
    z.object({ role: z.literal('user'), content: z.union([z.string(), z.array(userPart)]), prefix }),
    z.object({
      role: z.literal('assistant'),
      content: opt(z.union([z.string(), z.array(assistantPart)])),
      reasoning_content: opt(z.string()),
      reasoning: opt(z.string()),
      tool_calls: opt(z.array(wireToolCall)),
      function_call: opt(z.object({ name: z.string().min(1), arguments: opt(z.string()) })),
      prefix,
    }),
    z.object({ role: z.literal('tool'), content: textOnlyContent, tool_call_id: opt(z.string()), name: opt(z.string()), prefix }),
    z.object({ role: z.literal('function'), content: opt(textOnlyContent), name: z.string().min(1), prefix }),
  ],
  { error: 'must be one of "system", "developer", "user", "assistant", "tool", "function"' },
);

const toolDefinition = z.object({
  type: z.literal('function', { error: 'only "function" tools are supported' }),
  function: z.object({
    name: functionName,
    description: opt(z.string()),
    parameters: opt(jsonSchemaObject),
    strict: opt(z.boolean()),
  }),
});

const legacyFunction = z.object({
  name: functionName,
  description: opt(z.string()),
  parameters: opt(jsonSchemaObject),
});

const toolChoice = z.union(
  [
    z.enum(['none', 'auto', 'required']),
    z.object({ type: opt(z.literal('function')), function: z.object({ name: z.string().min(1) }) }),
  ],
  { error: 'must be "none", "auto", "required" or {"type":"function","function":{"name":...}}' },
);

const responseFormat = z.discriminatedUnion(
  'type',
  [
    z.object({ type: z.literal('text') }),
    z.object({ type: z.literal('json_object') }),
    z.object({
      type: z.literal('json_schema'),
      json_schema: z.object({
        name: opt(z.string()),
        description: opt(z.string()),
        schema: opt(jsonSchemaObject),
        strict: opt(z.boolean()),
      }),
    }),
  ],
  { error: 'must be one of "text", "json_object", "json_schema"' },
);

const positiveInt = z.number().int().min(1, { error: 'must be >= 1' });
const NO_MESSAGES = 'must contain at least one message';

export const chatRequestSchema = z.object({
  model: z.string().min(1),
  messages: z.array(message).min(1, { error: NO_MESSAGES }),
  stream: opt(z.boolean()),
  stream_options: opt(z.object({ include_usage: opt(z.boolean()) })),
  max_tokens: opt(positiveInt),
  max_completion_tokens: opt(positiveInt),
  temperature: opt(numberBetween(0, 2)),
  top_p: opt(numberBetween(0, 1)),
  // -1 and 0 both mean "no top-k" in vLLM and llama.cpp.
  top_k: opt(z.number().int().min(-1, { error: 'must be -1 (disabled) or a non-negative integer' })),
  min_p: opt(numberBetween(0, 1)),
  frequency_penalty: opt(numberBetween(-2, 2)),
  presence_penalty: opt(numberBetween(-2, 2)),
  repetition_penalty: opt(z.number().gt(0, { error: 'must be > 0' }).max(10, { error: 'must be <= 10' })),
  stop: opt(
    z.union([z.string(), z.array(z.string()).max(MAX_STOP_SEQUENCES, { error: `must have at most ${MAX_STOP_SEQUENCES} items` })], {
      error: 'must be a string or an array of strings',
    }),
  ),
  // The upper bound is the server's cap (requests.maxChoices), checked after parsing.
  n: opt(z.number().int({ error: 'must be an integer' })),
  seed: opt(z.number().int()),
  user: opt(z.union([z.string(), z.number().transform(String)])),
  response_format: opt(responseFormat),
  tools: opt(z.array(toolDefinition)),
  tool_choice: opt(toolChoice),
  parallel_tool_calls: opt(z.boolean()),
  functions: opt(z.array(legacyFunction)),
  function_call: opt(
    z.union([z.enum(['none', 'auto']), z.object({ name: z.string().min(1) })], {
      error: 'must be "none", "auto" or {"name":...}',
    }),
  ),
  enable_thinking: opt(z.boolean()),
  thinking_budget: opt(z.number()),
  reasoning_effort: opt(z.enum(['none', 'minimal', 'low', 'medium', 'high', 'max'])),
  logprobs: opt(z.boolean()),
  top_logprobs: opt(numberBetween(0, 20, { int: true })),
  // OpenAI fields that would change the output and that no Infera engine can honour: refused
  // when set to something meaningful, never silently dropped.
  logit_bias: opt(z.record(z.string(), z.number())),
  modalities: opt(z.array(z.string())),
  audio: z.unknown().optional(),
  prediction: z.unknown().optional(),
  web_search_options: z.unknown().optional(),
  keep_alive: keepAliveField,
});

export type WireChatRequest = z.infer<typeof chatRequestSchema>;
type WireMessage = WireChatRequest['messages'][number];

export interface ParsedChatRequest {
  /** The model id exactly as the client sent it (echoed back in responses). */
  model: string;
  stream: boolean;
  /** stream_options.include_usage: send the extra `choices: []` usage chunk. */
  includeUsage: boolean;
  /** Number of choices, 1..requests.maxChoices. */
  n: number;
  user?: string;
  /** keep_alive in milliseconds (Infinity: never); absent: the model's own. */
  keepAliveMs?: number;
  /** The client used `functions`/`function_call`: answer with `function_call` as well. */
  legacyFunctions: boolean;
  options: Omit<ChatCallOptions, 'signal'>;
}

const joinText = (content: string | { text: string }[]): string =>
  typeof content === 'string' ? content : content.map((part) => part.text).join('\n');

const urlOf = (value: string | { url: string; detail?: 'auto' | 'low' | 'high' | null }) =>
  typeof value === 'string' ? { url: value } : { url: value.url, detail: value.detail ?? undefined };

function userContent(content: Extract<WireMessage, { role: 'user' }>['content']): string | UserContentPart[] {
  if (typeof content === 'string') return content;
  return content.map((part): UserContentPart => {
    switch (part.type) {
      case 'text':
        return { type: 'text', text: part.text };
      case 'image_url': {
        const { url, detail } = urlOf(part.image_url);
        return detail === undefined ? { type: 'image', url } : { type: 'image', url, detail };
      }
      case 'video_url':
        return { type: 'video', url: urlOf(part.video_url).url };
      default:
        // input_audio / file never pass the schema.
        throw badRequest(`Unsupported content part "${part.type}".`, 'messages');
    }
  });
}

function assistantMessage(wire: Extract<WireMessage, { role: 'assistant' }>, index: number): ChatMessage {
  let content: string | null = null;
  if (typeof wire.content === 'string') content = wire.content;
  else if (Array.isArray(wire.content)) {
    content = wire.content.map((part) => (part.type === 'text' ? part.text : part.refusal)).join('\n');
  }
  const toolCalls: ToolCall[] = (wire.tool_calls ?? []).map((call, j) => ({
    id: call.id ?? `call_${index}_${j}`,
    name: call.function.name,
    arguments:
      call.function.arguments == null
        ? '{}'
        : typeof call.function.arguments === 'string'
          ? call.function.arguments
          : JSON.stringify(call.function.arguments),
  }));
  if (wire.function_call && toolCalls.length === 0) {
    toolCalls.push({ id: `call_${index}_0`, name: wire.function_call.name, arguments: wire.function_call.arguments ?? '{}' });
  }
  const reasoning = wire.reasoning_content ?? wire.reasoning ?? undefined;
  const out: ChatMessage = { role: 'assistant', content };
  if (reasoning) out.reasoning = reasoning;
  if (toolCalls.length > 0) out.toolCalls = toolCalls;
  return out;
}

/** `prefix: true` continues the conversation's last message, which the model itself must have written. */
function checkPrefix(m: WireMessage, i: number, count: number): void {
  const param = `messages[${i}].prefix`;
  if (m.role !== 'assistant')
    throw badRequest(`${param}: prefix completion continues an assistant message; this is a "${m.role}" message.`, param);
  if (i !== count - 1) throw badRequest(`${param}: only the last message may be a prefix to continue.`, param);
  if ((m.tool_calls?.length ?? 0) > 0 || m.function_call)
    throw badRequest(`${param}: a prefix message carries text to continue, not tool_calls.`, param);
}

/** Convert wire messages and check that every tool result answers a call the engine can see. */
function toChatMessages(wire: WireMessage[]): ChatMessage[] {
  const out: ChatMessage[] = [];
  let openCalls: ToolCall[] | null = null; // calls of the assistant message the current tool run answers
  let answered = 0;
  wire.forEach((m, i) => {
    if (m.prefix === true) checkPrefix(m, i, wire.length);
    if (m.role !== 'tool' && m.role !== 'function') openCalls = null;
    switch (m.role) {
      case 'system':
      case 'developer':
        out.push({ role: 'system', content: joinText(m.content) });
        return;
      case 'user':
        out.push({ role: 'user', content: userContent(m.content) });
        return;
      case 'assistant': {
        const converted = assistantMessage(m, i);
        if (m.prefix === true && converted.role === 'assistant') converted.prefix = true;
        out.push(converted);
        if (converted.role === 'assistant' && converted.toolCalls) {
          openCalls = converted.toolCalls;
          answered = 0;
        }
        return;
      }
      case 'tool':
      case 'function': {
        const calls = openCalls as ToolCall[] | null;
        if (!calls) {
          throw badRequest(
            `messages[${i}]: a "${m.role}" message must answer a preceding assistant message with tool_calls ` +
              '(only other tool messages may come between them).',
            `messages[${i}]`,
          );
        }
        let call: ToolCall | undefined;
        if (m.role === 'tool' && m.tool_call_id != null) {
          call = calls.find((c) => c.id === m.tool_call_id);
          if (!call) {
            throw badRequest(
              `messages[${i}].tool_call_id: "${m.tool_call_id}" is not among the ids of the preceding assistant tool_calls ` +
                `(${calls.map((c) => c.id).join(', ')}).`,
              `messages[${i}].tool_call_id`,
            );
          }
        } else if (m.role === 'function') {
          call = calls.find((c) => c.name === m.name) ?? calls[Math.min(answered, calls.length - 1)];
        } else {
          call = calls[Math.min(answered, calls.length - 1)];
        }
        answered += 1;
        const name = m.name ?? call!.name;
        out.push({ role: 'tool', content: m.content == null ? '' : joinText(m.content), toolCallId: call!.id, name });
        return;
      }
    }
  });
  return out;
}

function toolsOf(body: WireChatRequest): { tools?: ToolDefinition[]; legacy: boolean } {
  const definitions: { def: ToolDefinition; param: string }[] = [];
  for (const [i, tool] of (body.tools ?? []).entries()) {
    const f = tool.function;
    const def: ToolDefinition = { name: f.name };
    if (f.description != null) def.description = f.description;
    if (f.parameters != null) def.parameters = f.parameters;
    if (f.strict != null) def.strict = f.strict;
    definitions.push({ def, param: `tools[${i}].function.name` });
  }
  for (const [i, f] of (body.functions ?? []).entries()) {
    const def: ToolDefinition = { name: f.name };
    if (f.description != null) def.description = f.description;
    if (f.parameters != null) def.parameters = f.parameters;
    definitions.push({ def, param: `functions[${i}].name` });
  }
  const seen = new Set<string>();
  for (const { def, param } of definitions) {
    if (seen.has(def.name)) throw badRequest(`${param}: the function name "${def.name}" is defined twice.`, param);
    seen.add(def.name);
  }
  const legacy = (body.functions?.length ?? 0) > 0 || body.function_call != null;
  return { tools: definitions.length > 0 ? definitions.map((d) => d.def) : undefined, legacy };
}

function toolChoiceOf(body: WireChatRequest, tools: ToolDefinition[] | undefined): ToolChoice | undefined {
  if (body.tool_choice != null && body.function_call != null) {
    throw badRequest('function_call: send either tool_choice or the legacy function_call, not both.', 'function_call');
  }
  const param = body.tool_choice != null ? 'tool_choice' : 'function_call';
  const wire = body.tool_choice ?? body.function_call;
  if (wire == null) return undefined;
  const choice: ToolChoice = typeof wire === 'string' ? wire : { name: 'function' in wire ? wire.function.name : wire.name };
  if (choice === 'none' || choice === 'auto') return choice;
  if (!tools) {
    throw badRequest(`${param}: requires tools, but the request defines none.`, param);
  }
  if (typeof choice === 'object' && !tools.some((t) => t.name === choice.name)) {
    throw badRequest(
      `${param}: the function "${choice.name}" is not among the tools (${tools.map((t) => t.name).join(', ')}).`,
      param,
    );
  }
  return choice;
}

function responseFormatOf(body: WireChatRequest): ResponseFormat | undefined {
  const wire = body.response_format;
  if (wire == null) return undefined;
  if (wire.type !== 'json_schema') return { type: wire.type };
  const { name, schema, strict } = wire.json_schema;
  // Without a schema, json_schema asks for nothing more than any JSON object.
  if (schema == null) return { type: 'json_object' };
  const out: ResponseFormat = { type: 'json_schema', schema };
  if (name != null) out.name = name;
  if (strict != null) out.strict = strict;
  return out;
}

function thinkingOf(body: WireChatRequest): ThinkingOptions {
  const thinking: ThinkingOptions = {};
  if (body.reasoning_effort === 'none') thinking.enabled = false;
  if (body.enable_thinking != null) thinking.enabled = body.enable_thinking;
  if (body.thinking_budget != null) {
    if (!Number.isFinite(body.thinking_budget)) {
      throw badRequest('thinking_budget: must be a finite number.', 'thinking_budget');
    }
    thinking.budgetTokens = Math.min(THINKING_BUDGET_MAX, Math.max(THINKING_BUDGET_MIN, Math.round(body.thinking_budget)));
  } else if (body.reasoning_effort != null && body.reasoning_effort !== 'none') {
    thinking.budgetTokens = REASONING_EFFORT_BUDGET[body.reasoning_effort];
  }
  return thinking;
}

/** The server's caps on the work one request may ask for (config `requests`), before anything else reads the schemas. */
function checkCaps(wire: WireChatRequest, limits: RequestLimits): void {
  if (wire.n != null && (wire.n < 1 || wire.n > limits.maxChoices))
    throw badRequest(`n: must be between 1 and ${limits.maxChoices} (this server's cap on choices per request).`, 'n');
  const toolCount = (wire.tools?.length ?? 0) + (wire.functions?.length ?? 0);
  if (toolCount > limits.maxTools) {
    const param = wire.tools?.length ? 'tools' : 'functions';
    throw badRequest(`${param}: ${toolCount} tools is more than this server takes (at most ${limits.maxTools} per request).`, param);
  }
  for (const [i, tool] of (wire.tools ?? []).entries())
    if (tool.function.parameters != null) checkJsonSchema(tool.function.parameters, `tools[${i}].function.parameters`, limits.jsonSchema);
  for (const [i, f] of (wire.functions ?? []).entries())
    if (f.parameters != null) checkJsonSchema(f.parameters, `functions[${i}].parameters`, limits.jsonSchema);
  const format = wire.response_format;
  if (format?.type === 'json_schema' && format.json_schema.schema != null)
    checkJsonSchema(format.json_schema.schema, 'response_format.json_schema.schema', limits.jsonSchema);
}

function refuseUnsupported(body: WireChatRequest): void {
  if (body.logit_bias && Object.keys(body.logit_bias).length > 0) {
    throw badRequest('logit_bias: is not supported by this server.', 'logit_bias');
  }
  if (body.modalities?.some((m) => m !== 'text')) {
    throw badRequest('modalities: only "text" output is supported by this server.', 'modalities');
  }
  for (const field of ['audio', 'prediction', 'web_search_options'] as const) {
    if (body[field] != null) throw badRequest(`${field}: is not supported by this server.`, field);
  }
}

const isNullish = (value: unknown): value is null | undefined => value === null || value === undefined;
const between = (min: number, max: number) => (value: unknown) => isNullish(value) || (typeof value === 'number' && value >= min && value <= max);
const safeInt = (min: number) => (value: unknown) => isNullish(value) || (Number.isSafeInteger(value) && (value as number) >= min);
const PLAIN_ROLES: ReadonlySet<unknown> = new Set(['system', 'developer', 'user', 'assistant']);

/** The fields plainChatBody checks itself, each with the schema's own rule for a plain value. */
const PLAIN_FIELDS: Readonly<Record<string, (value: unknown) => boolean>> = {
  model: (value) => typeof value === 'string' && value.length > 0,
  messages: (value) => {
    if (!Array.isArray(value) || value.length === 0) return false;
    for (const message of value) {
      if (typeof message !== 'object' || message === null || Array.isArray(message)) return false;
      let keys = 0;
      for (const key in message) {
        if (key !== 'role' && key !== 'content') return false;
        keys += 1;
      }
      if (keys !== 2 || !PLAIN_ROLES.has(message.role) || typeof message.content !== 'string') return false;
    }
    return true;
  },
  stream: (value) => isNullish(value) || typeof value === 'boolean',
  stream_options: (value) => {
    if (isNullish(value)) return true;
    if (typeof value !== 'object' || Array.isArray(value)) return false;
    for (const key in value) if (key !== 'include_usage') return false;
    const include = (value as { include_usage?: unknown }).include_usage;
    return isNullish(include) || typeof include === 'boolean';
  },
  max_tokens: safeInt(1),
  max_completion_tokens: safeInt(1),
  temperature: between(0, 2),
  top_p: between(0, 1),
  n: safeInt(Number.MIN_SAFE_INTEGER),
  seed: safeInt(Number.MIN_SAFE_INTEGER),
  user: (value) => isNullish(value) || typeof value === 'string',
};

/**
 * The common body (text messages of the four plain roles, the usual sampling fields, any vendor
 * extension) checked by hand; undefined for anything else, which the schema then parses and, when
 * wrong, names the field of. Why: zod's parse of the whole schema cost 10–19 µs of CPU for a
 * one-message body, a third of what the server spent on such a request besides the model. What this
 * accepts the schema accepts unchanged (no defaults or transforms apply to these fields, unknown fields
 * are never read from the parsed body), so both paths give parseChatRequest the same values
 * (request.test.ts compares them).
 */
export function plainChatBody(body: unknown): WireChatRequest | undefined {
  const checked = checkPlainChatBody(body);
  return checked === true ? (body as WireChatRequest) : undefined;
}

/**
 * true: a plain body. A field name: a body the hand check reads whole, wrong in that one field only
 * (so the schema's first issue is that field's). undefined: anything else.
 */
function checkPlainChatBody(body: unknown): true | string | undefined {
  if (!isJsonObject(body)) return undefined;
  const shape = chatRequestSchema.shape;
  let failed: string | undefined;
  for (const key in body) {
    const check = Object.hasOwn(PLAIN_FIELDS, key) ? PLAIN_FIELDS[key] : undefined;
    if (check === undefined) {
      if (Object.hasOwn(shape, key)) return undefined;
    } else if (!check(body[key])) {
      if (failed !== undefined) return undefined;
      failed = key;
    }
  }
  // Both required fields present (the loop only saw what is there).
  if (body.model === undefined || body.messages === undefined) return undefined;
  return failed ?? true;
}

const fieldSchemas = new Map<string, z.ZodType>();

/**
 * The schema's parse, or for a body wrong in one plain field only that field's own schema: the same
 * first issue (the one the 400 names) at half the cost (`messages: []`: 15.7 → 7.8 µs of CPU), so a
 * refused body costs little more than an accepted one.
 */
function parseChatBody(body: unknown, checked = checkPlainChatBody(body)): WireChatRequest {
  if (checked === true) return body as WireChatRequest;
  const refusal = noMessages(body, checked);
  if (refusal) throw refusal;
  if (checked !== undefined) {
    let schema = fieldSchemas.get(checked);
    if (!schema) {
      schema = z.object({ [checked]: chatRequestSchema.shape[checked as keyof typeof chatRequestSchema.shape] });
      fieldSchemas.set(checked, schema);
    }
    // Throws the field's 400; should the field's schema accept what the hand check did not, the whole schema decides.
    parseBody(schema, { [checked]: (body as Record<string, unknown>)[checked] });
  }
  return parseBody(chatRequestSchema, body);
}

/**
 * Validate a chat-completions body and turn it into engine call options (all but the signal).
 * Throws InferaError 400 with `param` naming the first offending field. The model id is not
 * resolved here (the serving layer answers unknown models).
 */
/**
 * The commonest refusal of a plain body (no messages), answered as the schema words it without a parse
 * (zod's failing parse of the field alone still cost 7.8 µs against 0.9 for a whole accepted body).
 */
function noMessages(body: unknown, checked: true | string | undefined): InferaError | undefined {
  if (checked === 'messages' && Array.isArray((body as { messages: unknown }).messages) && (body as { messages: unknown[] }).messages.length === 0)
    return NO_MESSAGES_REFUSAL;
  return undefined;
}
/** One refusal for every body without messages: nothing in it is the request's own, and an InferaError is never changed once made. */
const NO_MESSAGES_REFUSAL = badRequest(`messages: ${NO_MESSAGES}`, 'messages');

/** Where the served models are looked up (the registry): an entry, or the refusal for an id it cannot serve as chat. */
export interface ChatModelLookup {
  lookup(id: string, type: 'chat'): unknown;
}

/**
 * parseChatRequest with its commonest refusals returned, not thrown: the HTTP layer answers them without
 * the cost of a throw. A plain body without messages; and, given `models`, a plain body naming a model
 * that `models` refuses, answered before the request is built: parseChatRequest refuses a plain body
 * for nothing but an `n` past the cap (every other field it could refuse is one the hand check does not
 * pass), so with `n` within it the model's refusal is the one the request gets either way (request.test.ts
 * holds this), and the parse's objects are not made for a request that goes no further. Every other
 * refusal is still thrown.
 */
export function parseChatRequestOrRefusal(body: unknown, limits: RequestLimits = DEFAULT_REQUEST_LIMITS, models?: ChatModelLookup): ParsedChatRequest | InferaError {
  const checked = checkPlainChatBody(body);
  const refusal = noMessages(body, checked) ?? (checked === true && models ? modelRefusal(body as WireChatRequest, limits, models) : undefined);
  return refusal ?? parseChatRequest(body, limits, checked);
}

function modelRefusal(plain: WireChatRequest, limits: RequestLimits, models: ChatModelLookup): InferaError | undefined {
  if (plain.n != null && (plain.n < 1 || plain.n > limits.maxChoices)) return undefined;
  const found = models.lookup(plain.model, 'chat');
  return found instanceof InferaError ? found : undefined;
}

export function parseChatRequest(
  body: unknown,
  limits: RequestLimits = DEFAULT_REQUEST_LIMITS,
  checked: true | string | undefined = checkPlainChatBody(body),
): ParsedChatRequest {
  const wire = parseChatBody(body, checked);
  refuseUnsupported(wire);
  checkCaps(wire, limits);

  const stream = wire.stream ?? false;
  if (wire.top_logprobs != null && wire.top_logprobs > 0 && wire.logprobs !== true) {
    throw badRequest('top_logprobs: requires "logprobs": true.', 'top_logprobs');
  }
  if (wire.logprobs === true && stream) {
    // The engine stream contract carries no per-token logprobs; refusing beats dropping them.
    throw badRequest('logprobs: is not supported together with "stream": true on this server.', 'logprobs');
  }

  const { tools, legacy } = toolsOf(wire);
  const toolChoice = toolChoiceOf(wire, tools);

  const stop = (typeof wire.stop === 'string' ? [wire.stop] : (wire.stop ?? [])).filter((s) => s !== '');

  const sampling: ChatCallOptions['sampling'] = {};
  if (wire.temperature != null) sampling.temperature = wire.temperature;
  if (wire.top_p != null) sampling.topP = wire.top_p;
  if (wire.top_k != null && wire.top_k > 0) sampling.topK = wire.top_k;
  if (wire.min_p != null) sampling.minP = wire.min_p;
  if (wire.frequency_penalty != null) sampling.frequencyPenalty = wire.frequency_penalty;
  if (wire.presence_penalty != null) sampling.presencePenalty = wire.presence_penalty;
  if (wire.repetition_penalty != null) sampling.repetitionPenalty = wire.repetition_penalty;
  if (wire.seed != null) sampling.seed = wire.seed;

  const options: Omit<ChatCallOptions, 'signal'> = {
    messages: toChatMessages(wire.messages),
    sampling,
    thinking: thinkingOf(wire),
  };
  if (tools) options.tools = tools;
  if (toolChoice) options.toolChoice = toolChoice;
  // The legacy dialect has room for one call per message only.
  if (legacy && tools) options.parallelToolCalls = false;
  else if (wire.parallel_tool_calls != null) options.parallelToolCalls = wire.parallel_tool_calls;
  const format = responseFormatOf(wire);
  if (format) options.responseFormat = format;
  // max_completion_tokens is OpenAI's newer name; when both are sent the tighter cap wins.
  const caps = [wire.max_tokens, wire.max_completion_tokens].filter((v): v is number => v != null);
  if (caps.length > 0) options.maxTokens = Math.min(...caps);
  if (stop.length > 0) options.stop = stop;
  if (wire.logprobs === true) options.topLogprobs = wire.top_logprobs ?? 0;
  const extra = unknownFields(body, chatRequestSchema.shape, FORWARDED_FIELDS);
  if (extra) options.extra = extra;

  const parsed: ParsedChatRequest = {
    model: wire.model,
    stream,
    includeUsage: stream && wire.stream_options?.include_usage === true,
    n: wire.n ?? 1,
    legacyFunctions: legacy,
    options,
  };
  if (wire.user != null) parsed.user = wire.user;
  if (wire.keep_alive != null) parsed.keepAliveMs = wire.keep_alive;
  return parsed;
}
