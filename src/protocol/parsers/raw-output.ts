// The two raw-text parsers chained the way models write: an optional think block first, then
// answer text that may hold tool-call blocks. Tool-call markers inside the think block stay
// reasoning (the model is only planning), which is why the think parser runs first.

import type { ChatStreamPart, ToolCall } from '../../spec/chat.ts';
import { ThinkTagParser, type ThinkTagParserOptions } from './think-tags.ts';
import { ToolCallParser, type ToolCallParserOptions } from './tool-calls.ts';

export type RawOutputPart = Exclude<ChatStreamPart, { type: 'finish' }>;

export interface RawOutputParserOptions {
  /** Split `<think>` blocks (default true). An object configures the think parser. */
  thinking?: boolean | ThinkTagParserOptions;
  /** Extract `<tool_call>` blocks (default true; turn off when the request has no tools). */
  toolCalls?: boolean | ToolCallParserOptions;
}

export class RawOutputParser {
  private readonly think?: ThinkTagParser;
  private readonly tools?: ToolCallParser;

  constructor(options: RawOutputParserOptions = {}) {
    const thinking = options.thinking ?? true;
    if (thinking !== false) this.think = new ThinkTagParser(thinking === true ? {} : thinking);
    const toolCalls = options.toolCalls ?? true;
    if (toolCalls !== false) this.tools = new ToolCallParser(toolCalls === true ? {} : toolCalls);
  }

  /** Where the think parser is ('content' when thinking is not parsed). */
  get phase(): 'start' | 'reasoning' | 'content' {
    return this.think?.phase ?? 'content';
  }

  /** Inside a tool-call block. */
  get inToolCall(): boolean {
    return this.tools?.inToolCall ?? false;
  }

  get toolCallCount(): number {
    return this.tools?.toolCallCount ?? 0;
  }

  push(delta: string): RawOutputPart[] {
    return this.route(this.think ? this.think.push(delta) : [{ type: 'text-delta', text: delta }], false);
  }

  end(): RawOutputPart[] {
    return this.route(this.think ? this.think.end() : [], true);
  }

  private route(parts: RawOutputPart[], ending: boolean): RawOutputPart[] {
    if (!this.tools) return parts.filter((p) => p.type !== 'text-delta' || p.text !== '');
    const out: RawOutputPart[] = [];
    for (const part of parts) {
      if (part.type === 'text-delta') out.push(...this.tools.push(part.text));
      else out.push(part);
    }
    if (ending) out.push(...this.tools.end());
    return out;
  }
}

/** Whole-text form, for non-stream upstream responses. */
export function parseRawOutput(
  text: string,
  options: RawOutputParserOptions = {},
): { text: string; reasoning: string; toolCalls: ToolCall[] } {
  const parser = new RawOutputParser(options);
  const parts = [...parser.push(text), ...parser.end()];
  const result = { text: '', reasoning: '', toolCalls: [] as ToolCall[] };
  for (const part of parts) {
    if (part.type === 'text-delta') result.text += part.text;
    else if (part.type === 'reasoning-delta') result.reasoning += part.text;
    else if (part.type === 'tool-call-start') result.toolCalls[part.index] = { id: part.id, name: part.name, arguments: '' };
    else result.toolCalls[part.index]!.arguments += part.argumentsDelta;
  }
  return result;
}
