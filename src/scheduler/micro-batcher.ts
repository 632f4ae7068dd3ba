// Token-budget micro-batcher for embeddings and rerank (TEI's router → queue → batch → backend shape).
// Requests queue per model; a batch is cut from the head of the queue when it reaches the token
// budget or when its oldest entry has waited `maxWaitMs`. Entries whose caller left are dropped before
// they run, and a full queue answers 503 + Retry-After instead of growing without bound.
//
// The batcher does not know what a batch *is* for an engine: `execute` receives the entries and returns
// either one promise per entry (each caller is answered as soon as its own part is done: right for
// llama.cpp, whose contexts take one input at a time anyway) or one promise for all (right for an
// engine that runs the whole batch in one call).
import { ClientGoneError, overloaded } from '../errors/index.ts';
import { queueWaitExpired, ServiceTime } from './queue-wait.ts';
import type { StopSignal } from '../spec/chat.ts';

export interface BatchEntry<I> {
  input: I;
  /** Cost of this entry against the batch's token budget. */
  tokens: number;
  /** The caller's signal: aborted when the client left. */
  signal?: StopSignal;
}

export interface MicroBatcherOptions<I, O> {
  /** Names the model in the 503 message. */
  label: string;
  /** Entries allowed to wait while every batch slot is busy; one more gets 503. */
  maxQueue: number;
  /** A batch stops growing once it holds this many tokens; a single larger entry runs alone. */
  maxBatchTokens: number;
  /** How long the oldest entry may wait for the batch to fill before it is sent anyway. */
  maxWaitMs: number;
  /** Batches running at the same time. */
  concurrency: number;
  /** Longest an entry may wait in the queue before it is answered 503 (default: no deadline). */
  maxQueueWaitMs?: number;
  /**
   * Runs one batch. `signal` aborts once every entry of the batch has been abandoned by its caller.
   * Returns one promise per entry, or one promise of all results, in entry order.
   */
  execute(entries: BatchEntry<I>[], signal: AbortSignal): Promise<O[]> | Promise<O>[];
}

interface Pending<I, O> extends BatchEntry<I> {
  enqueuedAt: number;
  resolve(value: O): void;
  reject(error: unknown): void;
  onAbort?: () => void;
  deadline?: NodeJS.Timeout;
}

export interface MicroBatcherStats {
  queued: number;
  queuedTokens: number;
  running: number;
  batches: number;
  /** Entries dropped because their caller left while they waited. */
  dropped: number;
}

/** A batch as it starts: how many entries, their tokens, and how long each waited in the queue. */
export interface BatchStart {
  entries: number;
  tokens: number;
  waitsMs: number[];
}

export class MicroBatcher<I, O> {
  /** Told of every batch as it starts (the server's metrics: batch sizes, queue waits). */
  onBatch?: (batch: BatchStart) => void;
  private readonly queue: Pending<I, O>[] = [];
  private queuedTokens = 0;
  private running = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private batches = 0;
  private dropped = 0;
  /** How long a batch runs: with the queue ahead, what Retry-After says (queue-wait.ts). */
  private readonly runs = new ServiceTime();

  constructor(private readonly options: MicroBatcherOptions<I, O>) {
    if (!(options.concurrency >= 1)) throw new RangeError('MicroBatcher: concurrency must be ≥ 1');
    if (!(options.maxBatchTokens >= 1)) throw new RangeError('MicroBatcher: maxBatchTokens must be ≥ 1');
    if (!(options.maxWaitMs >= 0)) throw new RangeError('MicroBatcher: maxWaitMs must be ≥ 0');
    if (!(options.maxQueue >= 0)) throw new RangeError('MicroBatcher: maxQueue must be ≥ 0');
  }

  stats(): MicroBatcherStats {
    return {
      queued: this.queue.length,
      queuedTokens: this.queuedTokens,
      running: this.running,
      batches: this.batches,
      dropped: this.dropped,
    };
  }

  submit(input: I, tokens: number, signal?: StopSignal): Promise<O> {
    if (signal?.aborted) return Promise.reject(new ClientGoneError());
    if (this.closed) return Promise.reject(overloaded(this.options.label, this.retryAfter()));
    // Every entry passes through the queue (it may wait maxWaitMs for company), so the queue is only
    // "full" when no batch slot is free either: with a free slot the entry leaves within maxWaitMs.
    if (this.queue.length >= this.options.maxQueue && this.running >= this.options.concurrency)
      return Promise.reject(overloaded(this.options.label, this.retryAfter()));
    return new Promise<O>((resolve, reject) => {
      const entry: Pending<I, O> = { input, tokens: Math.max(0, tokens), signal, enqueuedAt: performance.now(), resolve, reject };
      if (signal) {
        // Waiting entries leave the queue the moment their caller leaves: no work is spent on them.
        entry.onAbort = () => this.leave(entry, new ClientGoneError());
        signal.addEventListener('abort', entry.onAbort, { once: true });
      }
      const { maxQueueWaitMs } = this.options;
      if (maxQueueWaitMs !== undefined && Number.isFinite(maxQueueWaitMs))
        entry.deadline = setTimeout(
          () => this.leave(entry, queueWaitExpired(this.options.label, performance.now() - entry.enqueuedAt, this.retryAfter())),
          maxQueueWaitMs,
        );
      this.queue.push(entry);
      this.queuedTokens += entry.tokens;
      this.schedule();
    });
  }

  /** A waiting entry leaves the queue unrun (its caller left, or its wait outlived the deadline). */
  private leave(entry: Pending<I, O>, error: unknown): void {
    const at = this.queue.indexOf(entry);
    if (at < 0) return;
    this.queue.splice(at, 1);
    this.queuedTokens -= entry.tokens;
    this.detach(entry);
    this.dropped++;
    entry.reject(error);
    this.schedule();
  }

  /** Refuse new entries and answer those still waiting with 503; running batches finish. */
  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    for (const entry of this.queue.splice(0)) {
      this.detach(entry);
      entry.reject(overloaded(this.options.label, this.retryAfter()));
    }
    this.queuedTokens = 0;
  }

  private schedule(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    while (this.running < this.options.concurrency && this.queue.length > 0) {
      const waited = performance.now() - this.queue[0].enqueuedAt;
      const full = this.queuedTokens >= this.options.maxBatchTokens;
      if (!full && waited < this.options.maxWaitMs) {
        this.timer = setTimeout(() => {
          this.timer = undefined;
          this.schedule();
        }, Math.max(0, Math.ceil(this.options.maxWaitMs - waited)));
        // Not unref'd: a waiting batch is pending work that must keep the process alive.
        return;
      }
      this.dispatch(this.cut());
    }
  }

  /** Take entries from the head until the budget is reached; the first entry always goes. */
  private cut(): Pending<I, O>[] {
    const batch: Pending<I, O>[] = [];
    let tokens = 0;
    while (this.queue.length > 0) {
      const next = this.queue[0];
      if (batch.length > 0 && tokens + next.tokens > this.options.maxBatchTokens) break;
      this.queue.shift();
      this.queuedTokens -= next.tokens;
      this.detach(next);
      // An entry whose caller left between its abort event and now is never run.
      if (next.signal?.aborted) {
        this.dropped++;
        next.reject(new ClientGoneError());
        continue;
      }
      batch.push(next);
      tokens += next.tokens;
    }
    return batch;
  }

  private dispatch(batch: Pending<I, O>[]): void {
    if (batch.length === 0) return;
    this.running++;
    this.batches++;
    if (this.onBatch) {
      const now = performance.now();
      this.onBatch({ entries: batch.length, tokens: batch.reduce((sum, entry) => sum + entry.tokens, 0), waitsMs: batch.map((entry) => now - entry.enqueuedAt) });
    }
    const controller = new AbortController();
    const watchers = abortWhenAllAbort(batch.map((entry) => entry.signal), controller);
    let outcome: Promise<O[]> | Promise<O>[];
    try {
      outcome = this.options.execute(
        batch.map(({ input, tokens, signal }) => ({ input, tokens, signal })),
        controller.signal,
      );
    } catch (error) {
      outcome = Promise.reject(error);
    }
    const perEntry = Array.isArray(outcome)
      ? outcome
      : batch.map((_, index) =>
          (outcome as Promise<O[]>).then((results) => {
            if (results.length !== batch.length)
              throw new Error(`micro-batcher: execute returned ${results.length} results for ${batch.length} entries`);
            return results[index];
          }),
        );
    let unsettled = batch.length;
    const started = performance.now();
    // The slot is freed before the last caller hears back, so that a caller who submits again at once finds it free.
    const settled = () => {
      if (--unsettled > 0) return;
      this.runs.record(performance.now() - started);
      watchers();
      this.running--;
      this.schedule();
    };
    batch.forEach((entry, index) => {
      perEntry[index].then(
        (value) => {
          settled();
          entry.resolve(value);
        },
        (error: unknown) => {
          settled();
          entry.reject(error);
        },
      );
    });
  }

  private detach(entry: Pending<I, O>): void {
    if (entry.signal && entry.onAbort) entry.signal.removeEventListener('abort', entry.onAbort);
    entry.onAbort = undefined;
    clearTimeout(entry.deadline);
  }

  /** Seconds until a request arriving now could expect its batch: the batches queued and running, `concurrency` at a time. */
  retryAfter(): number {
    const queuedBatches = Math.ceil(this.queuedTokens / this.options.maxBatchTokens) || (this.queue.length > 0 ? 1 : 0);
    return this.runs.retryAfterSeconds(queuedBatches + this.running, this.options.concurrency);
  }
}

/** Abort `controller` once every given signal has aborted (a batch is only abandoned when all its callers left). */
function abortWhenAllAbort(signals: (StopSignal | undefined)[], controller: AbortController): () => void {
  // A caller without a signal never leaves, so the batch is never abandoned.
  if (signals.some((signal) => !signal)) return () => undefined;
  const live = signals as StopSignal[];
  let remaining = live.filter((signal) => !signal.aborted).length;
  if (remaining === 0) {
    controller.abort();
    return () => undefined;
  }
  const onAbort = () => {
    remaining--;
    if (remaining === 0) controller.abort();
  };
  const pending = live.filter((signal) => !signal.aborted);
  for (const signal of pending) signal.addEventListener('abort', onAbort, { once: true });
  return () => {
    for (const signal of pending) signal.removeEventListener('abort', onAbort);
  };
}
