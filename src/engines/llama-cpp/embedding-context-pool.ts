// A fixed pool of llama.cpp embedding/ranking contexts. node-llama-cpp evaluates one input at a time
// per context (its addon reads only sequence 0's pooled vector), so parallelism across inputs means
// several contexts, each with its own threads. Waiters are served first come, first served, so the
// inputs of an earlier request finish before a later request's.
import { ClientGoneError } from '../../errors/index.ts';

interface Waiter<C> {
  resolve(context: C): void;
  reject(error: unknown): void;
  signal?: AbortSignal;
  onAbort?: () => void;
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
    return new Promise<C>((resolve, reject) => {
      const waiter: Waiter<C> = { resolve, reject, signal };
      if (signal) {
        waiter.onAbort = () => {
          const at = this.waiters.indexOf(waiter);
          if (at >= 0) this.waiters.splice(at, 1);
          reject(new ClientGoneError());
        };
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.waiters.push(waiter);
    });
  }

  private release(context: C): void {
    const next = this.waiters.shift();
    if (!next) {
      this.idle.push(context);
      return;
    }
    if (next.signal && next.onAbort) next.signal.removeEventListener('abort', next.onAbort);
    next.resolve(context);
  }
}

/** L2-normalise in place; a zero vector stays zero rather than becoming NaN. */
export function normalizeInPlace(vector: Float32Array): Float32Array {
  let sum = 0;
  for (let i = 0; i < vector.length; i++) sum += vector[i] * vector[i];
  const norm = Math.sqrt(sum);
  if (norm > 0) for (let i = 0; i < vector.length; i++) vector[i] /= norm;
  return vector;
}
