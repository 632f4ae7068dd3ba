// One choice's engine stream as the chat and text-completion routes consume it: a peek (the first part
// is fetched before the HTTP status is sent, so an engine error can still be a plain JSON error) and a
// meter that subclasses feed from each part (exact from the finish part; estimated from the deltas seen
// when the client leaves first).
export abstract class MeteredStream<Part extends { type: string }> implements AsyncIterableIterator<Part> {
  private readonly source: AsyncIterator<Part>;
  private peeked?: Promise<IteratorResult<Part>>;
  /** The finish part's warnings (usage counted by Infera…), for the ledger row. */
  warnings: string[] = [];
  private closed = false;

  constructor(stream: AsyncIterable<Part>) {
    this.source = stream[Symbol.asyncIterator]();
  }

  /** Sees every part the engine produced, in order. */
  protected abstract meter(part: Part): void;

  [Symbol.asyncIterator]() {
    return this;
  }

  peek(): Promise<IteratorResult<Part>> {
    this.peeked ??= this.pull();
    return this.peeked;
  }

  next(): Promise<IteratorResult<Part>> {
    if (this.peeked) {
      const first = this.peeked;
      this.peeked = undefined;
      return first;
    }
    return this.pull();
  }

  private async pull(): Promise<IteratorResult<Part>> {
    if (this.closed) return { done: true, value: undefined };
    const next = await this.source.next();
    if (!next.done) {
      const part = next.value as Part & { warnings?: string[] };
      if (part.type === 'finish' && part.warnings) this.warnings = part.warnings;
      this.meter(part);
    }
    return next;
  }

  async return(): Promise<IteratorResult<Part>> {
    if (!this.closed) {
      this.closed = true;
      await this.source.return?.();
    }
    return { done: true, value: undefined };
  }
}
