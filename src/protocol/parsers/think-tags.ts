// Incremental `<think>…</think>` splitter for raw model text (remote upstreams, and templates
// node-llama-cpp does not segment). Token deltas cut tags anywhere ("</th" + "ink>"), so any text
// that could still become a tag is held back until it is decided; everything else is emitted at once.
//
// Rules (those of the Qwen3 / DeepSeek-R1 reasoning parsers in vLLM):
// - A think block is recognised only at the very start of the response (after whitespace). A
//   "<think>" later in the answer is answer text (the model may be writing about tags).
// - `startInThinking`: the chat template already opened the block (DeepSeek-R1, Qwen3 thinking
//   templates ending in "<think>\n"), so the response begins as reasoning; a repeated "<think>" at
//   the start is swallowed.
// - One block only: after "</think>" everything is content. An unclosed block (cut by max_tokens or
//   the end of generation) is all reasoning.
// - Whitespace around the block ("<think>\n…\n</think>\n\n") is not part of either side.

export type ThinkPart = { type: 'reasoning-delta'; text: string } | { type: 'text-delta'; text: string };

export interface ThinkTagParserOptions {
  startInThinking?: boolean;
  openTag?: string;
  closeTag?: string;
  /**
   * What to drop between the close tag and the answer: all whitespace (default) or only line breaks,
   * for engines whose answers may begin with a space that belongs to the first word.
   */
  trimAfterThought?: 'whitespace' | 'newlines';
}

type State = 'start' | 'reasoning' | 'after-reasoning' | 'content';

const isSpace = (ch: string | undefined) => ch !== undefined && /\s/.test(ch);

/** Length of the longest proper prefix of `tag` that `text` ends with (text that may become the tag). */
export function partialTagSuffix(text: string, tag: string): number {
  for (let k = Math.min(tag.length - 1, text.length); k > 0; k--) {
    if (text.endsWith(tag.slice(0, k))) return k;
  }
  return 0;
}

/** Append a part, merging it into the previous one of the same type (fewer SSE frames). */
export function pushPart<P extends { type: string; text: string }>(parts: P[], part: P): void {
  if (part.text === '') return;
  const last = parts[parts.length - 1];
  if (last && last.type === part.type) last.text += part.text;
  else parts.push({ ...part });
}

export class ThinkTagParser {
  private readonly open: string;
  private readonly close: string;
  private readonly startInThinking: boolean;
  private readonly trimAfter: (text: string) => string;
  private buffer = '';
  private state: State = 'start';
  private reasoningStarted = false;

  constructor(options: ThinkTagParserOptions = {}) {
    this.open = options.openTag ?? '<think>';
    this.close = options.closeTag ?? '</think>';
    this.startInThinking = options.startInThinking ?? false;
    this.trimAfter = options.trimAfterThought === 'newlines' ? (text) => text.replace(/^[\r\n]+/, '') : (text) => text.trimStart();
  }

  /** Where the parser is: useful to tell whether the response ended inside the think block. */
  get phase(): 'start' | 'reasoning' | 'content' {
    return this.state === 'after-reasoning' ? 'content' : this.state;
  }

  push(delta: string): ThinkPart[] {
    this.buffer += delta;
    const parts: ThinkPart[] = [];
    this.drain(parts);
    return parts;
  }

  end(): ThinkPart[] {
    const parts: ThinkPart[] = [];
    this.drain(parts);
    const rest = this.buffer;
    this.buffer = '';
    if (this.state === 'reasoning' || (this.state === 'start' && this.startInThinking)) {
      this.emitReasoning(parts, rest, true);
    } else if (this.state === 'start' || this.state === 'content') {
      pushPart(parts, { type: 'text-delta', text: rest });
    }
    return parts;
  }

  private drain(parts: ThinkPart[]): void {
    for (;;) {
      switch (this.state) {
        case 'start': {
          const trimmed = this.buffer.trimStart();
          if (trimmed.startsWith(this.open)) {
            this.buffer = trimmed.slice(this.open.length);
            this.state = 'reasoning';
            continue;
          }
          // Still only whitespace, or the beginning of the open tag: undecided.
          if (this.open.startsWith(trimmed)) return;
          this.state = this.startInThinking ? 'reasoning' : 'content';
          continue;
        }
        case 'reasoning': {
          const at = this.buffer.indexOf(this.close);
          if (at >= 0) {
            this.emitReasoning(parts, this.buffer.slice(0, at), true);
            this.buffer = this.buffer.slice(at + this.close.length);
            this.state = 'after-reasoning';
            continue;
          }
          // Hold back a possible partial close tag, and trailing whitespace that may precede it.
          let end = this.buffer.length - partialTagSuffix(this.buffer, this.close);
          while (end > 0 && isSpace(this.buffer[end - 1])) end--;
          this.emitReasoning(parts, this.buffer.slice(0, end), false);
          this.buffer = this.buffer.slice(end);
          return;
        }
        case 'after-reasoning': {
          this.buffer = this.trimAfter(this.buffer);
          if (this.buffer === '') return;
          this.state = 'content';
          continue;
        }
        case 'content': {
          pushPart(parts, { type: 'text-delta', text: this.buffer });
          this.buffer = '';
          return;
        }
      }
    }
  }

  private emitReasoning(parts: ThinkPart[], text: string, final: boolean): void {
    let out = this.reasoningStarted ? text : text.trimStart();
    if (final) out = out.trimEnd();
    if (out === '') return;
    this.reasoningStarted = true;
    pushPart(parts, { type: 'reasoning-delta', text: out });
  }
}
