// Ollama. Through /v1 it is OpenAI's API (reasoning in `reasoning`, thinking off through
// reasoning_effort "none"); with `native: true` the engine uses its own /api/chat (NDJSON stream,
// `think`, `options.num_predict`, `format`, arguments as objects, images as bare base64) and /api/embed.
// No rerank; no thinking budget (refused, naming thinking_budget).
import { badRequest } from '../../../errors/index.ts';
import type { Json } from '../upstream.ts';
import { type Dialect, num, obj, openaiEmbeddings, type NativeApi } from './types.ts';

/** OpenAI sampling fields and the `options` key Ollama reads each from. */
const OPTIONS: Record<string, string> = {
  temperature: 'temperature',
  top_p: 'top_p',
  top_k: 'top_k',
  min_p: 'min_p',
  seed: 'seed',
  stop: 'stop',
  max_tokens: 'num_predict',
  repetition_penalty: 'repeat_penalty',
  presence_penalty: 'presence_penalty',
  frequency_penalty: 'frequency_penalty',
};

/** Fields of the OpenAI body /api/chat has no place for: refused, never dropped. */
const NOT_NATIVE = ['logprobs', 'top_logprobs', 'parallel_tool_calls', 'continue_final_message'];

function nativeMessage(message: Json, index: number): Json {
  const out: Json = { role: message.role };
  const content = message.content;
  if (Array.isArray(content)) {
    const texts: string[] = [];
    const images: string[] = [];
    content.forEach((part: Json, j) => {
      if (part.type === 'text') texts.push(String(part.text));
      else if (part.type === 'image_url') {
        const url = String(obj(part.image_url)?.url ?? '');
        const match = /^data:[^;,]+;base64,(.*)$/s.exec(url);
        if (!match)
          throw badRequest(`messages[${index}].content[${j}]: Ollama's native API takes images as data: URIs only, not links.`, `messages[${index}].content[${j}]`);
        images.push(match[1]!);
      } else throw badRequest(`messages[${index}].content[${j}]: ${String(part.type)} parts are not supported by Ollama.`, `messages[${index}].content[${j}]`);
    });
    out.content = texts.join('\n');
    if (images.length) out.images = images;
  } else out.content = content ?? '';
  if (Array.isArray(message.tool_calls))
    out.tool_calls = message.tool_calls.map((call: Json) => {
      const fn = obj(call.function) ?? {};
      let args: unknown = fn.arguments;
      try {
        args = typeof args === 'string' ? JSON.parse(args) : args;
      } catch {
        // Ollama wants an object; text that is not JSON stays text.
      }
      return { function: { name: fn.name, arguments: args ?? {} } };
    });
  if (message.role === 'tool' && typeof message.name === 'string') out.tool_name = message.name;
  return out;
}

const native: NativeApi = {
  chatPath: (upstream) => upstream.rootPath('/api/chat'),
  chatRequest(body) {
    for (const field of NOT_NATIVE)
      if (body[field] !== undefined && body[field] !== false) throw badRequest(`${field}: is not supported by Ollama's native API.`, field);
    const choice = body.tool_choice;
    if (choice !== undefined && choice !== 'auto')
      throw badRequest('tool_choice: Ollama decides itself whether to call a tool; only "auto" is supported.', 'tool_choice');
    const { model, messages, stream, tools, response_format: format, think, stream_options: _, tool_choice: __, ...rest } = body;
    const out: Json = { model, stream, messages: (messages as Json[]).map(nativeMessage) };
    const options: Json = {};
    for (const [key, value] of Object.entries(rest)) {
      const option = OPTIONS[key];
      if (option) options[option] = value;
      else out[key] = value; // the client's own fields (keep_alive, options…) pass through
    }
    if (Object.keys(options).length) out.options = { ...obj(out.options), ...options };
    if (tools) out.tools = tools;
    if (think !== undefined) out.think = think;
    const responseFormat = obj(format);
    if (responseFormat?.type === 'json_object') out.format = 'json';
    else if (responseFormat?.type === 'json_schema') out.format = obj(responseFormat.json_schema)?.schema;
    return out;
  },
  chatAnswer(answer, stream) {
    const message = obj(answer.message) ?? {};
    const calls = Array.isArray(message.tool_calls) ? message.tool_calls : undefined;
    const part: Json = {};
    if (typeof message.content === 'string' && message.content !== '') part.content = message.content;
    if (typeof message.thinking === 'string' && message.thinking !== '') part.reasoning_content = message.thinking;
    if (calls)
      part.tool_calls = calls.map((call: Json, index) => {
        const fn = obj(call.function) ?? {};
        return { index, type: 'function', function: { name: fn.name, arguments: typeof fn.arguments === 'string' ? fn.arguments : JSON.stringify(fn.arguments ?? {}) } };
      });
    const done = answer.done === true;
    const reason = calls ? 'tool_calls' : answer.done_reason === 'length' ? 'length' : 'stop';
    const out: Json = {
      object: stream ? 'chat.completion.chunk' : 'chat.completion',
      choices: [stream ? { index: 0, delta: part, finish_reason: done ? reason : null } : { index: 0, message: { role: 'assistant', content: part.content ?? '', ...part }, finish_reason: reason }],
    };
    const prompt = num(answer.prompt_eval_count);
    const completion = num(answer.eval_count);
    if (done && prompt !== undefined && completion !== undefined) out.usage = { prompt_tokens: prompt, completion_tokens: completion };
    if (typeof answer.error === 'string') out.error = { message: answer.error };
    return out;
  },
  embeddings: {
    tokenInputs: false,
    path: (upstream) => upstream.rootPath('/api/embed'),
    body: (model, inputs, dimensions) => ({ model, input: inputs, ...(dimensions ? { dimensions } : {}) }),
    parse(answer) {
      const body = obj(answer);
      return { vectors: Array.isArray(body?.embeddings) ? body.embeddings : [], promptTokens: num(body?.prompt_eval_count) };
    },
  },
};

export const ollama: Dialect = {
  name: 'ollama',
  chat: true,
  completions: true,
  infill: false,
  images: false,
  embeddings: openaiEmbeddings('embeddings', false, false),
  native,
  chatRequest(body, options) {
    if (options.thinking.budgetTokens !== undefined)
      throw badRequest('thinking_budget: Ollama has no thinking budget; send enable_thinking alone.', 'thinking_budget');
    // Native: `think`; /v1: reasoning_effort (its OpenAI layer maps it onto `think`).
    if (options.thinking.enabled !== undefined) {
      body.think = options.thinking.enabled;
      if (options.thinking.enabled === false) body.reasoning_effort = 'none';
    }
    // Ollama continues a final assistant message by itself.
  },
};
