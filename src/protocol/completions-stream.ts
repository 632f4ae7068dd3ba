// Engine completion parts → SSE frames in OpenAI's text_completion shape, under the same strict SSE
// rules as chat (API-CONTRACT.md): each event one `data: {json}` line and a blank line, every chunk
// with a non-empty `choices` (`text` always a string), cumulative `usage` on each chunk that carries a
// `finish_reason`, the `choices: []` usage chunk only with include_usage, then `data: [DONE]`.
// Pull-based like the chat stream: return() (client gone) reaches every engine source, and a source
// that throws makes next() throw once the others were returned (render it with chatStreamErrorFrames).

import { InferaError } from '../errors/index.ts';
import type { CompletionStreamPart, CompletionUsage } from '../spec/chat.ts';
import { SSE_DONE_FRAME, sseFrame } from './chat/stream.ts';
import { DEFAULT_SYSTEM_FINGERPRINT } from './chat/response.ts';
import {
  toWireCompletionLogprobs,
  toWireCompletionUsage,
  type TextCompletionMeta,
  type WireCompletionChoice,
  type WireTextCompletion,
} from './completions.ts';

export interface CompletionStreamOptions {
  includeUsage: boolean;
  /** The request's `logprobs`; undefined: chunks carry `logprobs: null`. */
  topLogprobs?: number;
  /** Prompt tokens of the whole request (each prompt once), for the usage the chunks carry. */
  promptTokens: number;
}

interface ChoiceState {
  index: number;
  iterator: AsyncIterator<CompletionStreamPart>;
  finished: boolean;
  /** Characters sent so far: where the next token's text starts (text_offset). */
  offset: number;
  completionTokens: number;
}

type Pulled = { choice: ChoiceState; result: IteratorResult<CompletionStreamPart> };

export class TextCompletionFrames implements AsyncIterableIterator<string, void> {
  private readonly choices: ChoiceState[];
  private readonly queue: string[] = [];
  private readonly pending = new Map<ChoiceState, Promise<Pulled>>();
  private closed = false;
  private trailerQueued = false;

  constructor(
    private readonly meta: TextCompletionMeta,
    sources: readonly AsyncIterable<CompletionStreamPart>[],
    private readonly options: CompletionStreamOptions,
  ) {
    if (sources.length === 0) throw new Error('TextCompletionFrames needs at least one source');
    this.choices = sources.map((source, index) => ({
      index,
      iterator: source[Symbol.asyncIterator](),
      finished: false,
      offset: 0,
      completionTokens: 0,
    }));
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Usage of the choices that finished so far. */
  get usage(): CompletionUsage {
    return { promptTokens: this.options.promptTokens, completionTokens: this.choices.reduce((sum, c) => sum + c.completionTokens, 0) };
  }

  async next(): Promise<IteratorResult<string, void>> {
    while (this.queue.length === 0) {
      if (this.closed) return { done: true, value: undefined };
      if (this.choices.every((c) => c.finished)) {
        if (this.trailerQueued) {
          this.closed = true;
          return { done: true, value: undefined };
        }
        this.trailerQueued = true;
        if (this.options.includeUsage) this.queue.push(sseFrame({ ...this.envelope([]), usage: toWireCompletionUsage(this.usage) }));
        this.queue.push(SSE_DONE_FRAME);
        break;
      }
      try {
        const pulled = await this.pull();
        if (this.closed) return { done: true, value: undefined };
        await this.accept(pulled);
      } catch (error) {
        if (this.closed) return { done: true, value: undefined };
        await this.closeSources();
        throw error;
      }
    }
    return { done: false, value: this.queue.shift()! };
  }

  async return(): Promise<IteratorResult<string, void>> {
    await this.closeSources();
    return { done: true, value: undefined };
  }

  async throw(error?: unknown): Promise<IteratorResult<string, void>> {
    await this.closeSources();
    throw error;
  }

  private pull(): Promise<Pulled> {
    for (const choice of this.choices) {
      if (choice.finished || this.pending.has(choice)) continue;
      this.pending.set(
        choice,
        choice.iterator.next().then((result) => ({ choice, result })),
      );
    }
    return Promise.race(this.pending.values()).then((pulled) => {
      this.pending.delete(pulled.choice);
      return pulled;
    });
  }

  private async accept({ choice, result }: Pulled): Promise<void> {
    if (result.done) {
      choice.finished = true;
      throw new InferaError({ status: 500, message: `The engine stream of choice ${choice.index} ended without a finish part.`, code: 'engine_error' });
    }
    const part = result.value;
    if (part.type === 'text-delta') {
      const logprobs =
        part.logprobs && this.options.topLogprobs !== undefined
          ? toWireCompletionLogprobs(part.logprobs, choice.offset, this.options.topLogprobs)
          : null;
      choice.offset += part.text.length;
      if (part.text !== '' || logprobs) this.queue.push(sseFrame(this.envelope([{ index: choice.index, text: part.text, logprobs, finish_reason: null }])));
      return;
    }
    choice.finished = true;
    choice.completionTokens = part.usage.completionTokens;
    this.queue.push(
      sseFrame({
        ...this.envelope([{ index: choice.index, text: '', logprobs: null, finish_reason: part.finishReason }]),
        usage: toWireCompletionUsage(this.usage),
      }),
    );
    // The finish part is the last one by contract; let the source clean up now.
    await choice.iterator.return?.();
  }

  private envelope(choices: WireCompletionChoice[]): WireTextCompletion {
    return {
      id: this.meta.id,
      object: 'text_completion',
      created: this.meta.created,
      model: this.meta.model,
      system_fingerprint: DEFAULT_SYSTEM_FINGERPRINT,
      choices,
    };
  }

  private async closeSources(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.queue.length = 0;
    const open = this.choices.filter((c) => !c.finished);
    for (const c of open) c.finished = true;
    await Promise.allSettled(open.map((c) => c.iterator.return?.()));
  }
}
