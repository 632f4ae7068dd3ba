// A hand-written async iterator over parts pushed by a producer (node-llama-cpp's callbacks).
// Why not an `async function*`: a generator whose consumer leaves before its first next() never runs
// its finally block, so a sequence taken at start would leak. Here the producer starts when the
// iterator is created, and return()/throw() abort it and resolve only after the producer has finished
// its own cleanup (sequence disposed, slot released), whenever the consumer leaves.

export type Producer<T> = (emit: (part: T) => void, signal: AbortSignal) => Promise<void>;

export interface ProducerStreamOptions {
  /**
   * Wake the consumer one event-loop turn after a part is emitted instead of at once. node-llama-cpp
   * (3.21.1) emits a token from the same microtask drain in which it asks for the next decode, and
   * dispatches that decode with setImmediate; a consumer woken at once (SSE serialisation, the socket
   * write) runs before the dispatch, so its time adds to every token. Woken a turn later it runs while
   * the decode computes on llama.cpp's threads. Only worth it when a core is free for it: with every
   * core in llama.cpp's threads the consumer would preempt one of them mid-graph instead. If a
   * node-llama-cpp upgrade changes that timing only speed changes (internals.test.ts catches it).
   */
  overlapDecode?: boolean;
}

export function streamFromProducer<T>(produce: Producer<T>, signal: AbortSignal, options: ProducerStreamOptions = {}): AsyncIterable<T> {
  return {
    [Symbol.asyncIterator]: () => new ProducerIterator(produce, signal, options.overlapDecode ?? false),
  };
}

class ProducerIterator<T> implements AsyncIterator<T> {
  private readonly buffer: T[] = [];
  private readonly controller = new AbortController();
  private readonly finished: Promise<void>;
  /** Pending next() calls (normally one; several only if a consumer does not await each next()). */
  private waiting: (() => void)[] = [];
  private done = false;
  private failure: { error: unknown } | undefined;
  private closed = false;
  private wakeQueued = false;

  constructor(produce: Producer<T>, outer: AbortSignal, overlapDecode: boolean) {
    const abortFromOuter = () => this.controller.abort(outer.reason);
    if (outer.aborted) abortFromOuter();
    else outer.addEventListener('abort', abortFromOuter, { once: true });
    const emit = (part: T) => {
      if (this.closed) return;
      this.buffer.push(part);
      if (overlapDecode) this.wakeNextTurn();
      else this.wake();
    };
    this.finished = (async () => {
      try {
        await produce(emit, this.controller.signal);
      } catch (error) {
        this.failure = { error };
      } finally {
        outer.removeEventListener('abort', abortFromOuter);
        this.done = true;
        this.wake();
      }
    })();
  }

  /**
   * An immediate queued here runs just before node-llama-cpp's dispatch (queued after it in the same
   * check phase); the one it queues runs on the next loop turn, once the decode is on its worker thread.
   */
  private wakeNextTurn(): void {
    if (this.wakeQueued) return;
    this.wakeQueued = true;
    setImmediate(() =>
      setImmediate(() => {
        this.wakeQueued = false;
        this.wake();
      }),
    );
  }

  private wake(): void {
    const waiting = this.waiting;
    this.waiting = [];
    for (const resolve of waiting) resolve();
  }

  async next(): Promise<IteratorResult<T>> {
    for (;;) {
      if (this.closed) return { done: true, value: undefined };
      // Parts whose wake is still queued wait for it too, or a consumer that comes back on its own
      // would take them before the decode is dispatched.
      if (!this.wakeQueued) {
        if (this.buffer.length > 0) return { done: false, value: this.buffer.shift()! };
        if (this.done) {
          this.closed = true;
          if (this.failure) throw this.failure.error;
          return { done: true, value: undefined };
        }
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
  }

  async return(): Promise<IteratorResult<T>> {
    await this.close();
    return { done: true, value: undefined };
  }

  async throw(error?: unknown): Promise<IteratorResult<T>> {
    await this.close();
    throw error;
  }

  private async close(): Promise<void> {
    this.closed = true;
    this.buffer.length = 0;
    if (!this.done) this.controller.abort(new Error('stream closed by its consumer'));
    await this.finished;
    this.wake();
  }
}
