// Incremental Hermes / Qwen tool-call extraction: `<tool_call>{"name": …, "arguments": {…}}</tool_call>`
// blocks inside raw model text become tool-call-start + tool-call-delta parts; the text around
// them stays text. Markers may be split across deltas anywhere.
//
// Design decisions:
// - A block is buffered until its closing tag, then parsed as a whole: the arguments arrive as one
//   fragment. Streaming the JSON piecewise would forward arguments we might later have to take
//   back when the block turns out to be malformed.
// - Malformed JSON (or no "name") is not lost: the whole block, tags included, is emitted as text,
//   so the client sees what the model wrote.
// - An unclosed block at the end (generation stopped on </tool_call> as a stop word, or was cut)
//   is still a tool call when its JSON is complete; otherwise it is text.
// - Whitespace between blocks and at the edges of blocks is layout, not content: dropped.
// - "arguments" may be an object (serialised) or already a JSON string; "parameters" is accepted
//   as its synonym (Llama-3-style emitters). Missing arguments become "{}".

import { randomBytes } from 'node:crypto';
import { partialTagSuffix } from './think-tags.ts';

export type ToolCallParserPart =
  | { type: 'text-delta'; text: string }
  | { type: 'tool-call-start'; index: number; id: string; name: string }
  | { type: 'tool-call-delta'; index: number; argumentsDelta: string };

export interface ToolCallParserOptions {
  openTag?: string;
  closeTag?: string;
  /** Tool-call ids; default `call_` + 24 hex characters. */
  createId?: () => string;
  /**
   * Stream each call as it is written: tool-call-start once `{"name": "…", "arguments": ` is complete,
   * then the arguments in fragments (the object's own closing brace held back until the block ends).
   * For engines whose grammar guarantees the block's shape; a call cut off by a token limit keeps the
   * arguments written so far. Blocks that do not open that way are buffered and parsed as usual.
   */
  streamArguments?: boolean;
}

/** The opening of a Hermes call object up to where its arguments begin. */
const CALL_HEADER = /^\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*/;

export const newToolCallId = (): string => `call_${randomBytes(12).toString('hex')}`;

const isSpace = (ch: string | undefined) => ch !== undefined && /\s/.test(ch);

/** Parse the inside of one block; undefined when it is not a well-formed call. */
export function parseHermesToolCall(body: string): { name: string; arguments: string } | undefined {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const record = value as Record<string, unknown>;
  if (typeof record.name !== 'string' || record.name === '') return undefined;
  const args = record.arguments ?? record.parameters;
  if (args === undefined || args === null) return { name: record.name, arguments: '{}' };
  return { name: record.name, arguments: typeof args === 'string' ? args : JSON.stringify(args) };
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

export class ToolCallParser {
  private readonly open: string;
  private readonly close: string;
  private readonly createId: () => string;
  /** Text not yet emitted while outside a block (at most a partial open tag plus whitespace). */
  private buffer = '';
  private inCall = false;
  /** Inside a block: its text so far, in pieces, joined once when the block closes. */
  private body: string[] = [];
  /**
   * The block's last (close tag length - 1) characters, where a close tag split across deltas
   * would begin. Searching only tail + delta keeps long blocks linear (searching a growing string
   * flattens it on every delta: minutes for a 400 KB argument block).
   */
  private tail = '';
  private afterCall = false;
  private count = 0;
  private readonly streamArguments: boolean;
  /** Streaming mode: the call being written (its index, its arguments so far and how much was sent). */
  private streaming: { index: number; args: string; sent: number } | undefined;

  constructor(options: ToolCallParserOptions = {}) {
    this.open = options.openTag ?? '<tool_call>';
    this.close = options.closeTag ?? '</tool_call>';
    this.createId = options.createId ?? newToolCallId;
    this.streamArguments = options.streamArguments ?? false;
  }

  /** Inside a tool-call block (its tokens are the answer's, though no text comes out of them). */
  get inToolCall(): boolean {
    return this.inCall;
  }

  /** Tool calls emitted so far (a finish reason of "tool_calls" is right when this is > 0). */
  get toolCallCount(): number {
    return this.count;
  }

  push(delta: string): ToolCallParserPart[] {
    const parts: ToolCallParserPart[] = [];
    this.feed(delta, parts);
    return parts;
  }

  end(): ToolCallParserPart[] {
    const parts: ToolCallParserPart[] = [];
    if (this.streaming) {
      // Cut off: what was held back is released, unless it is the call object's own closing brace
      // (the arguments parse without it and not with it).
      const call = this.streaming;
      this.streaming = undefined;
      let args = call.args;
      const closed = args.replace(/\s*\}\s*$/, '');
      if (closed !== args && isJson(closed) && !isJson(args)) args = closed;
      if (args.length > call.sent) parts.push({ type: 'tool-call-delta', index: call.index, argumentsDelta: args.slice(call.sent) });
    } else if (this.inCall) {
      this.finishBlock(parts, this.body.join(''), false);
    } else {
      this.emitText(parts, this.afterCall ? this.buffer.trimStart() : this.buffer);
    }
    this.buffer = '';
    this.body = [];
    this.tail = '';
    this.inCall = false;
    return parts;
  }

  private feed(delta: string, parts: ToolCallParserPart[]): void {
    let input = delta;
    for (;;) {
      if (this.inCall) {
        const window = this.tail + input;
        const at = window.indexOf(this.close);
        if (at < 0) {
          if (input !== '') this.body.push(input);
          const keep = this.close.length - 1;
          this.tail = keep > 0 ? window.slice(-keep) : '';
          if (this.streamArguments) this.streamCall(parts, input, false);
          return; // the block is still arriving
        }
        const before = this.body.join('');
        const block = (before + input).slice(0, before.length - this.tail.length + at);
        input = window.slice(at + this.close.length);
        this.body = [];
        this.tail = '';
        this.inCall = false;
        if (this.streamArguments) this.streamCall(parts, block, true);
        else this.finishBlock(parts, block, true);
        continue;
      }
      this.buffer += input;
      input = '';
      if (this.afterCall) {
        this.buffer = this.buffer.trimStart();
        if (this.buffer === '') return;
      }
      const at = this.buffer.indexOf(this.open);
      if (at >= 0) {
        // Layout whitespace right before a block is dropped.
        this.emitText(parts, this.buffer.slice(0, at).trimEnd());
        input = this.buffer.slice(at + this.open.length);
        this.buffer = '';
        this.inCall = true;
        continue;
      }
      // Hold back what may become the open tag, and trailing whitespace that may precede it.
      let end = this.buffer.length - partialTagSuffix(this.buffer, this.open);
      while (end > 0 && isSpace(this.buffer[end - 1])) end--;
      this.emitText(parts, this.buffer.slice(0, end));
      this.buffer = this.buffer.slice(end);
      return;
    }
  }

  /**
   * Streaming mode. `text` is the new part of the block (or, when `closed`, the whole block). Before
   * the header is complete nothing is emitted; a closed block whose header never matched is parsed whole.
   */
  private streamCall(parts: ToolCallParserPart[], text: string, closed: boolean): void {
    let call = this.streaming;
    if (!call) {
      const body = closed ? text : this.body.join('');
      const header = CALL_HEADER.exec(body);
      if (!header) {
        if (closed) this.finishBlock(parts, text, true);
        return;
      }
      let name: unknown;
      try {
        name = JSON.parse(header[1]!);
      } catch {
        name = undefined;
      }
      if (typeof name !== 'string' || name === '') {
        if (closed) this.finishBlock(parts, text, true);
        return;
      }
      call = { index: this.count++, args: body.slice(header[0].length), sent: 0 };
      this.streaming = call;
      parts.push({ type: 'tool-call-start', index: call.index, id: this.createId(), name });
      this.afterCall = true;
    } else if (closed) {
      // `text` is the whole block: its arguments are everything after the header.
      const header = CALL_HEADER.exec(text);
      if (header) call.args = text.slice(header[0].length);
    } else call.args += text;
    // The call object's own closing brace (and layout around it) is not part of the arguments.
    let releasable: number;
    let args = call.args;
    if (closed) {
      args = args.replace(/\s*\}\s*$/, '');
      releasable = args.length;
    } else {
      // Hold back what may be the start of the close tag, then the brace and layout before it.
      const open = args.slice(0, args.length - partialTagSuffix(args, this.close));
      releasable = open.length - (/\s*(\}\s*)?$/.exec(open)?.[0].length ?? 0);
    }
    if (releasable > call.sent) {
      parts.push({ type: 'tool-call-delta', index: call.index, argumentsDelta: args.slice(call.sent, releasable) });
      call.sent = releasable;
    }
    if (closed) {
      if (call.sent === 0) parts.push({ type: 'tool-call-delta', index: call.index, argumentsDelta: '{}' });
      this.streaming = undefined;
    }
  }

  private finishBlock(parts: ToolCallParserPart[], body: string, closed: boolean): void {
    const call = parseHermesToolCall(body.trim());
    if (!call) {
      // Malformed: hand the model's text through rather than drop it.
      this.emitText(parts, this.open + body + (closed ? this.close : ''));
      return;
    }
    const index = this.count++;
    parts.push({ type: 'tool-call-start', index, id: this.createId(), name: call.name });
    parts.push({ type: 'tool-call-delta', index, argumentsDelta: call.arguments });
    this.afterCall = true;
  }

  private emitText(parts: ToolCallParserPart[], text: string): void {
    if (text === '') return;
    this.afterCall = false;
    const last = parts[parts.length - 1];
    if (last?.type === 'text-delta') last.text += text;
    else parts.push({ type: 'text-delta', text });
  }
}
