// Reading a streamed upstream answer: Server-Sent Events (OpenAI-style `data:` frames ending in
// `[DONE]`) or NDJSON (Ollama's native API), pulled chunk by chunk, so the upstream is read only as fast
// as the client takes the stream (backpressure reaches the upstream's socket).
//
// The parsers are synchronous and hand back every event of a network chunk at once: the reader awaits
// once per chunk, not once per event. As async generators (one per framing, under the generator that
// reads them) every event cost two awaits and their promises; an upstream that writes a whole short
// answer in one chunk (five events) then cost ~16 KB more of allocation per streamed request.

export type StreamEvent = { type: 'data'; data: string; event?: string } | { type: 'done' };

/** Events of a body, one batch per chunk read (a batch may be empty). */
export interface EventParser {
  /** The events this chunk completes. */
  push(chunk: Buffer): StreamEvent[];
  /** The events the end of the body completes (a last event without its blank line). */
  end(): StreamEvent[];
}

/** `stream: true` so a character split across two chunks is decoded whole; one options object for every call. */
const STREAMING = { stream: true } as const;

/**
 * A body read line by line: the bytes of each chunk decoded (a character split across two chunks
 * whole), every complete line handed to `line`, the unfinished one kept for the next chunk.
 */
abstract class LineParser implements EventParser {
  protected readonly decoder = new TextDecoder();
  /** The start of a line whose end has not arrived yet. */
  protected rest = '';

  push(chunk: Buffer): StreamEvent[] {
    const out: StreamEvent[] = [];
    const decoded = this.decoder.decode(chunk, STREAMING);
    const text = this.rest === '' ? decoded : this.rest + decoded;
    let start = 0;
    for (let newline = text.indexOf('\n'); newline !== -1; newline = text.indexOf('\n', start)) {
      this.line(text, start, newline, out);
      start = newline + 1;
    }
    this.rest = start === 0 ? text : text.slice(start);
    return out;
  }

  /** One line, text[start, newline), '\r' included where the body has one. */
  protected abstract line(text: string, start: number, newline: number, out: StreamEvent[]): void;

  abstract end(): StreamEvent[];
}

/** SSE events of a body. `done` when `[DONE]` arrives. */
export class SseParser extends LineParser {
  /** The event's data lines so far, joined with '\n' (undefined: none yet). */
  private data?: string;
  private event?: string;

  end(): StreamEvent[] {
    const out: StreamEvent[] = [];
    const rest = this.rest + this.decoder.decode();
    this.rest = '';
    // A last event without its blank line still counts (some servers end the body right after it).
    if (rest.startsWith('data:')) this.addData(rest.slice(rest.charCodeAt(5) === 32 ? 6 : 5));
    this.dispatch(out);
    return out;
  }

  protected line(text: string, start: number, newline: number, out: StreamEvent[]): void {
    const end = newline > start && text.charCodeAt(newline - 1) === 13 ? newline - 1 : newline;
    if (end === start) {
      this.dispatch(out);
      return;
    }
    // ':' starts a comment.
    if (text.charCodeAt(start) === 58) return;
    if (text.startsWith('data:', start)) {
      this.addData(text.slice(text.charCodeAt(start + 5) === 32 ? start + 6 : start + 5, end));
      return;
    }
    const colon = text.indexOf(':', start);
    const field = colon === -1 || colon > end ? text.slice(start, end) : text.slice(start, colon);
    if (field === 'data') this.addData('');
    else if (field === 'event') this.event = colon === -1 || colon > end ? '' : text.slice(text.charCodeAt(colon + 1) === 32 ? colon + 2 : colon + 1, end);
  }

  private addData(value: string): void {
    this.data = this.data === undefined ? value : `${this.data}\n${value}`;
  }

  private dispatch(out: StreamEvent[]): void {
    const text = this.data;
    if (text === undefined) return;
    this.data = undefined;
    const name = this.event;
    this.event = undefined;
    out.push(text === '[DONE]' || text.trim() === '[DONE]' ? { type: 'done' } : name ? { type: 'data', data: text, event: name } : { type: 'data', data: text });
  }
}

/** One JSON text per line (Ollama); blank lines skipped. */
export class NdjsonParser extends LineParser {
  protected line(text: string, start: number, newline: number, out: StreamEvent[]): void {
    const line = text.slice(start, newline).trim();
    if (line) out.push({ type: 'data', data: line });
  }

  end(): StreamEvent[] {
    const rest = (this.rest + this.decoder.decode()).trim();
    this.rest = '';
    return rest ? [{ type: 'data', data: rest }] : [];
  }
}

/**
 * The events of a body, one batch per chunk that completes any, read as the consumer pulls. Not an async
 * generator: that cost one more generator, its promises and result objects per chunk under the reader's
 * own. Ending early (return()) closes the body, unless a `done` event was handed out: then the answer is
 * complete and `finished` is called instead (the upstream's body lets its last bytes come, keeping the
 * connection).
 */
export class EventBatches implements AsyncIterableIterator<StreamEvent[]> {
  private readonly chunks: AsyncIterator<Buffer>;
  private ended = false;
  private sawDone = false;

  constructor(
    body: AsyncIterable<Buffer>,
    private readonly parser: EventParser,
    private readonly finished?: () => void,
  ) {
    this.chunks = body[Symbol.asyncIterator]();
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  async next(): Promise<IteratorResult<StreamEvent[]>> {
    while (!this.ended) {
      const read = await this.chunks.next();
      if (read.done) {
        this.ended = true;
        const last = this.parser.end();
        if (last.length > 0) return { done: false, value: last };
        break;
      }
      const batch = this.parser.push(read.value);
      if (batch.length > 0) {
        if (batch.some((event) => event.type === 'done')) this.sawDone = true;
        return { done: false, value: batch };
      }
    }
    return { done: true, value: undefined };
  }

  async return(): Promise<IteratorResult<StreamEvent[]>> {
    if (this.ended) return { done: true, value: undefined };
    this.ended = true;
    if (this.sawDone && this.finished) this.finished();
    else await this.chunks.return?.();
    return { done: true, value: undefined };
  }
}
