// Group commit for the usage ledger. Every settle() waits until its row is in a committed transaction;
// rows that arrive while a write is running wait for the next one, so N concurrent settles cost about
// one commit, not N. A row is acknowledged only after commit, so a kill -9 can lose only rows whose
// settle had not resolved yet — i.e. whose response had not been ended.
// Up to `concurrency` writes run at once: SQLite is one synchronous writer (1), while Postgres spends
// most of a commit waiting on its WAL fsync, which several connections overlap.
import type { LedgerRow, PlatformStore } from '../storage/types.ts';

interface Pending {
  row: LedgerRow;
  resolve: () => void;
  reject: (error: unknown) => void;
}

export interface LedgerLogger {
  error(obj: object, msg?: string): void;
}

/** Each write attempt: seconds, rows, and `retry` (failed, tried again) or `failed` (given up) or `ok`. */
export type LedgerWriteObserver = (seconds: number, rows: number, outcome: 'ok' | 'retry' | 'failed') => void;

export interface LedgerWriterOptions {
  maxBatch?: number;
  concurrency?: number;
  retries?: number;
  onWrite?: LedgerWriteObserver;
}

export class LedgerWriter {
  private queue: Pending[] = [];
  private active = 0;
  private scheduled = false;
  private closed = false;
  private idle: (() => void)[] = [];
  private readonly maxBatch: number;
  private readonly concurrency: number;
  private readonly retries: number;
  /** Rows committed and writes used: the bench and tests read them to see batching happen. */
  readonly stats = { rows: 0, transactions: 0 };
  /** Set after construction too: the server's metrics attach to a gate built before them. */
  onWrite?: LedgerWriteObserver;

  constructor(
    private readonly store: PlatformStore,
    private readonly logger: LedgerLogger,
    options: LedgerWriterOptions = {},
  ) {
    this.maxBatch = options.maxBatch ?? 512;
    this.concurrency = options.concurrency ?? 1;
    this.retries = options.retries ?? 3;
    this.onWrite = options.onWrite;
  }

  append(row: LedgerRow): Promise<void> {
    if (this.closed) return Promise.reject(new Error('ledger is closed'));
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ row, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.active >= this.concurrency || this.queue.length === 0) return;
    this.scheduled = true;
    // setImmediate, not a microtask: lets every settle of this event-loop turn join the batch.
    setImmediate(() => {
      this.scheduled = false;
      while (this.active < this.concurrency && this.queue.length > 0) {
        const batch = this.queue.splice(0, this.maxBatch);
        const rows = batch.map((p) => p.row);
        // A store that commits synchronously (SQLite) settles the batch here, in this turn: no async
        // write with its promises per batch (on one connection, one batch per request). Only a failed
        // commit goes on to the retrying write below, from its first retry.
        let from = 0;
        if (this.store.appendLedgerSync) {
          if (this.attempt(batch, rows, 0, true)) continue;
          from = 1;
        }
        this.active++;
        void this.write(batch, rows, from).finally(() => {
          this.active--;
          if (this.queue.length > 0) this.schedule();
          else if (this.active === 0) for (const done of this.idle.splice(0)) done();
        });
      }
      if (this.active === 0 && this.queue.length === 0) for (const done of this.idle.splice(0)) done();
    });
  }

  /** Attempts from `from` on (after the retry delay of the attempt before it), then rejects the batch. */
  private async write(batch: Pending[], rows: LedgerRow[], from: number): Promise<void> {
    for (let attempt = from; attempt <= this.retries; attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, 50 * 2 ** (attempt - 1)));
      if (await this.attempt(batch, rows, attempt, false)) return;
    }
  }

  /**
   * One commit of the batch: true once committed (every row's promise resolved); false when it failed
   * (observed and logged) and is to be tried again; the batch is rejected after its last attempt.
   */
  private attempt(batch: Pending[], rows: LedgerRow[], attempt: number, sync: true): boolean;
  private attempt(batch: Pending[], rows: LedgerRow[], attempt: number, sync: false): Promise<boolean>;
  private attempt(batch: Pending[], rows: LedgerRow[], attempt: number, sync: boolean): boolean | Promise<boolean> {
    const started = performance.now();
    try {
      if (!sync)
        return this.store.appendLedger(rows).then(
          () => this.committed(batch, rows, started),
          (caught: unknown) => this.failed(batch, rows, attempt, started, caught),
        );
      this.store.appendLedgerSync!(rows);
    } catch (caught) {
      return this.failed(batch, rows, attempt, started, caught);
    }
    return this.committed(batch, rows, started);
  }

  private committed(batch: Pending[], rows: LedgerRow[], started: number): true {
    this.stats.rows += rows.length;
    this.stats.transactions += 1;
    this.onWrite?.((performance.now() - started) / 1000, rows.length, 'ok');
    for (const p of batch) p.resolve();
    return true;
  }

  private failed(batch: Pending[], rows: LedgerRow[], attempt: number, started: number, caught: unknown): false {
    this.onWrite?.((performance.now() - started) / 1000, rows.length, attempt < this.retries ? 'retry' : 'failed');
    this.logger.error({ err: caught, rows: rows.length, attempt }, 'usage ledger write failed');
    if (attempt >= this.retries) for (const p of batch) p.reject(caught);
    return false;
  }

  /** Waits for every queued row; later appends are refused. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.active === 0 && this.queue.length === 0) return;
    await new Promise<void>((resolve) => this.idle.push(resolve));
  }
}
