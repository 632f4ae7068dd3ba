// What a queue tells a client it refuses: how long until it is worth asking again. Computed from the
// queue (the work ahead of a new arrival and how long a unit of that work has been taking), not a
// constant, so clients back off by what the server actually needs.
import { InferaError } from '../errors/index.ts';

const MIN_RETRY_SECONDS = 1;
const MAX_RETRY_SECONDS = 120;
/** Weight of the newest sample in the running mean: recent load matters, one outlier does not rule. */
const SMOOTHING = 0.2;

export class ServiceTime {
  private meanMs = 0;
  private samples = 0;

  /** How long one unit of work (a lease held, a batch run) took. */
  record(ms: number): void {
    this.meanMs = this.samples === 0 ? ms : this.meanMs + SMOOTHING * (ms - this.meanMs);
    this.samples++;
  }

  /** Seconds until `ahead` units of work, `parallel` at a time, should be done (1 s before any sample). */
  retryAfterSeconds(ahead: number, parallel: number): number {
    if (this.samples === 0) return MIN_RETRY_SECONDS;
    const seconds = (Math.max(1, ahead) / Math.max(1, parallel)) * (this.meanMs / 1000);
    return Math.min(MAX_RETRY_SECONDS, Math.max(MIN_RETRY_SECONDS, Math.ceil(seconds)));
  }
}

/** A waiter that outlived the queue's deadline (models[].maxQueueWaitSeconds). */
export const queueWaitExpired = (label: string, waitedMs: number, retryAfter: number) =>
  new InferaError({
    status: 503,
    code: 'queue_timeout',
    message: `${label} is busy: this request waited ${(waitedMs / 1000).toFixed(1)} s in its queue (models[].maxQueueWaitSeconds) without a free slot. Retry after ${retryAfter}s.`,
    retryAfter,
  });
