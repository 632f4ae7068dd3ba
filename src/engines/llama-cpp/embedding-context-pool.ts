// A fixed pool of llama.cpp embedding/ranking contexts. node-llama-cpp evaluates one input at a time
// per context (its addon reads only sequence 0's pooled vector), so parallelism across inputs means
// several contexts, each with its own threads. Waiters are served first come, first served, so the
// inputs of an earlier request finish before a later request's.
import { ClientGoneError } from '../../errors/index.ts';

interface Waiter<C> {
  resolve(context: C): void;
  reject(error: unknown): void;
  signal?: AbortSignal;
}

export class ContextPool<C extends { dispose(): Promise<void> }> {
  private readonly idle: C[];
  private readonly waiters: Waiter<C>[] = [];
  private disposed = false;

  constructor(readonly contexts: readonly C[]) {
    if (contexts.length === 0) throw new RangeError('ContextPool needs at least one context');
    this.idle = [...contexts];
  }

  get size(): number {
    return this.contexts.length;
  }

  /** Run `work` on a free context. Skipped (ClientGoneError) when `signal` aborts before a context frees up. */
  async use<T>(work: (context: C) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const context = await this.acquire(signal);
    try {
      if (signal?.aborted) throw new ClientGoneError();
      return await work(context);
    } finally {
      this.release(context);
    }
  }

  async dispose(): Promise<void> {
    this.disposed = true;
    for (const waiter of this.waiters.splice(0)) waiter.reject(new Error('model unloaded'));
    await Promise.allSettled(this.contexts.map((context) => context.dispose()));
  }

  private acquire(signal?: AbortSignal): Promise<C> {
    if (this.disposed) return Promise.reject(new Error('model unloaded'));
    if (signal?.aborted) return Promise.reject(new ClientGoneError());
    const context = this.idle.pop();
    if (context) return Promise.resolve(context);
    // No abort listener per waiter: one request's inputs share a signal and can number in the
    // thousands. An abandoned waiter is skipped when a context frees up instead.
    return new Promise<C>((resolve, reject) => this.waiters.push({ resolve, reject, signal }));
  }

  private release(context: C): void {
    for (let next = this.waiters.shift(); next; next = this.waiters.shift()) {
      if (next.signal?.aborted) {
        next.reject(new ClientGoneError());
        continue;
      }
      next.resolve(context);
      return;
    }
    this.idle.push(context);
  }
}
