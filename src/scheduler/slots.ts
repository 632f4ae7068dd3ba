// A counting semaphore with a bounded, abort-aware wait queue: the admission control in front of
// every engine. Full queue → 503 + Retry-After (never unbounded memory growth); a waiter whose
// client left is dropped from the queue instead of being served later; a waiter past the queue's
// deadline gets a 503 too. Retry-After comes from the queue (queue-wait.ts).
import { overloaded, ClientGoneError } from '../errors/index.ts';
import { queueWaitExpired, ServiceTime } from './queue-wait.ts';

export interface SlotsOptions {
  /** Longest a request may wait for a slot before it is answered 503 (default: no deadline). */
  maxWaitMs?: number;
}

export interface SlotLease {
  release(): void;
}

interface Waiter {
  resolve: (lease: SlotLease) => void;
  reject: (error: unknown) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
  deadline?: NodeJS.Timeout;
}

export class Slots {
  private free: number;
  private readonly waiters: Waiter[] = [];
  /** How long a lease is held: what a place in the queue costs in time. */
  private readonly holds = new ServiceTime();

  constructor(
    readonly capacity: number,
    readonly maxQueue: number,
    private readonly label: string,
    private readonly options: SlotsOptions = {},
  ) {
    this.free = capacity;
  }

  /** Seconds until a request arriving now could expect a slot. */
  retryAfter(): number {
    return this.holds.retryAfterSeconds(this.waiters.length + 1, this.capacity);
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
    if (this.waiters.length >= this.maxQueue) return Promise.reject(overloaded(this.label, this.retryAfter()));
    return new Promise<SlotLease>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, signal };
      const leave = () => {
        const at = this.waiters.indexOf(waiter);
        if (at >= 0) this.waiters.splice(at, 1);
        this.detach(waiter);
      };
      if (signal) {
        waiter.onAbort = () => {
          leave();
          reject(new ClientGoneError());
        };
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      const { maxWaitMs } = this.options;
      if (maxWaitMs !== undefined && Number.isFinite(maxWaitMs)) {
        const since = performance.now();
        waiter.deadline = setTimeout(() => {
          leave();
          reject(queueWaitExpired(this.label, performance.now() - since, this.retryAfter()));
        }, maxWaitMs);
      }
      this.waiters.push(waiter);
    });
  }

  private detach(waiter: Waiter): void {
    if (waiter.signal && waiter.onAbort) waiter.signal.removeEventListener('abort', waiter.onAbort);
    clearTimeout(waiter.deadline);
  }

  private lease(): SlotLease {
    let released = false;
    const since = performance.now();
    return {
      release: () => {
        if (released) return;
        released = true;
        this.holds.record(performance.now() - since);
        const next = this.waiters.shift();
        if (next) {
          this.detach(next);
          next.resolve(this.lease());
        } else this.free++;
      },
    };
  }
}
