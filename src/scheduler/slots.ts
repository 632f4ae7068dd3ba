// A counting semaphore with a bounded, abort-aware wait queue: the admission control in front of
// every engine. Full queue → 503 + Retry-After (never unbounded memory growth); a waiter whose
// client left is dropped from the queue instead of being served later.
import { overloaded, ClientGoneError } from '../errors/index.ts';

export interface SlotLease {
  release(): void;
}

interface Waiter {
  resolve: (lease: SlotLease) => void;
  reject: (error: unknown) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

export class Slots {
  private free: number;
  private readonly waiters: Waiter[] = [];

  constructor(
    readonly capacity: number,
    readonly maxQueue: number,
    private readonly label: string,
    /** Seconds suggested in Retry-After when the queue is full. */
    private readonly retryAfter = 1,
  ) {
    this.free = capacity;
  }

  get active(): number {
    return this.capacity - this.free;
  }
  get queued(): number {
    return this.waiters.length;
  }

  acquire(signal?: AbortSignal): Promise<SlotLease> {
    if (signal?.aborted) return Promise.reject(new ClientGoneError());
    if (this.free > 0) {
      this.free--;
      return Promise.resolve(this.lease());
    }
    if (this.waiters.length >= this.maxQueue) return Promise.reject(overloaded(this.label, this.retryAfter));
    return new Promise<SlotLease>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, signal };
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

  private lease(): SlotLease {
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        const next = this.waiters.shift();
        if (next) {
          if (next.signal && next.onAbort) next.signal.removeEventListener('abort', next.onAbort);
          next.resolve(this.lease());
        } else this.free++;
      },
    };
  }
}
