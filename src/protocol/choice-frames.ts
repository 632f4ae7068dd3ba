// The part chat and text-completion streams share: n engine sources (one per choice) pulled into one
// queue of SSE frames. Pull-based on purpose: nothing is generated ahead of the consumer, and return()
// (client gone) is forwarded to every engine source so generation stops and slots are released. A
// source that throws makes next() throw after the others were returned. Subclasses turn each part into
// frames (acceptPart) and say what the trailer carries (usageFrame) before `data: [DONE]`.
import { InferaError } from '../errors/index.ts';

export const SSE_DONE_FRAME = 'data: [DONE]\n\n';

export const sseFrame = (payload: unknown): string => `data: ${JSON.stringify(payload)}\n\n`;

export interface ChoiceSource<Part> {
  index: number;
  iterator: AsyncIterator<Part>;
  finished: boolean;
}

type Pulled<Part, Choice extends ChoiceSource<Part>> = { choice: Choice; result: IteratorResult<Part> };

export abstract class ChoiceFrames<Part, Choice extends ChoiceSource<Part>> implements AsyncIterableIterator<string, void> {
  protected readonly choices: Choice[];
  protected readonly queue: string[] = [];
  private readonly pending = new Map<Choice, Promise<Pulled<Part, Choice>>>();
  private closed = false;
  private trailerQueued = false;

  constructor(sources: readonly AsyncIterable<Part>[], choice: (index: number, iterator: AsyncIterator<Part>) => Choice) {
    if (sources.length === 0) throw new Error(`${new.target.name} needs at least one source`);
    this.choices = sources.map((source, index) => choice(index, source[Symbol.asyncIterator]()));
  }

  /** Turns one engine part of a choice into frames on `queue`; marks the choice finished at its finish part. */
  protected abstract acceptPart(choice: Choice, part: Part): Promise<void> | void;

  /** The `choices: []` usage chunk (include_usage), or undefined. */
  protected abstract usageFrame(): string | undefined;

  [Symbol.asyncIterator](): this {
    return this;
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
        const usage = this.usageFrame();
        if (usage) this.queue.push(usage);
        this.queue.push(SSE_DONE_FRAME);
        break;
      }
      try {
        const { choice, result } = await this.pull();
        if (this.closed) return { done: true, value: undefined }; // return() ran while we waited
        if (result.done) {
          choice.finished = true;
          throw new InferaError({ status: 500, message: `The engine stream of choice ${choice.index} ended without a finish part.`, code: 'engine_error' });
        }
        await this.acceptPart(choice, result.value);
      } catch (error) {
        // After return() the sources may reject with their abort error: nobody is listening.
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

  private pull(): Promise<Pulled<Part, Choice>> {
    for (const choice of this.choices) {
      if (choice.finished || this.pending.has(choice)) continue;
      this.pending.set(
        choice,
        choice.iterator.next().then((result) => ({ choice, result })),
      );
    }
    // With one choice this is just that choice's next(); with several, whichever part comes first.
    return Promise.race(this.pending.values()).then((pulled) => {
      this.pending.delete(pulled.choice);
      return pulled;
    });
  }

  private async closeSources(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.queue.length = 0;
    const open = this.choices.filter((c) => !c.finished);
    for (const c of open) c.finished = true;
    // A source may already be failing; its cleanup error must not mask the one being reported.
    await Promise.allSettled(open.map((c) => c.iterator.return?.()));
  }
}
