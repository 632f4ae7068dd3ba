// Group commit for the usage ledger. Every settle() waits until its row is in a committed transaction;
// rows that arrive while a transaction is running wait for the next one, so N concurrent settles cost
// about one commit, not N. A row is acknowledged only after commit, so a kill -9 can lose only rows whose
// settle had not resolved yet — i.e. whose response had not been ended.
import type { LedgerRow, PlatformStore } from '../storage/types.ts';

interface Pending {
  row: LedgerRow;
  resolve: () => void;
  reject: (error: unknown) => void;
}

export interface LedgerLogger {
  error(obj: object, msg?: string): void;
}

export class LedgerWriter {
  private queue: Pending[] = [];
  private running: Promise<void> | undefined;
  private closed = false;
  /** Rows committed and transactions used: the bench and tests read them to see batching happen. */
  readonly stats = { rows: 0, transactions: 0 };

  constructor(
    private readonly store: PlatformStore,
    private readonly logger: LedgerLogger,
    private readonly maxBatch = 512,
    private readonly retries = 3,
  ) {}

  append(row: LedgerRow): Promise<void> {
    if (this.closed) return Promise.reject(new Error('ledger is closed'));
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ row, resolve, reject });
      // setImmediate, not a microtask: lets every settle of this event-loop turn join the batch.
      if (!this.running) this.running = new Promise<void>((done) => setImmediate(() => void this.drain().then(done)));
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch);
      const rows = batch.map((p) => p.row);
      let error: unknown;
      for (let attempt = 0; attempt <= this.retries; attempt++) {
        try {
          await this.store.appendLedger(rows);
          error = undefined;
          break;
        } catch (caught) {
          error = caught;
          this.logger.error({ err: caught, rows: rows.length, attempt }, 'usage ledger write failed');
          if (attempt < this.retries) await new Promise((r) => setTimeout(r, 50 * 2 ** attempt));
        }
      }
      if (error === undefined) {
        this.stats.rows += rows.length;
        this.stats.transactions += 1;
        for (const p of batch) p.resolve();
      } else for (const p of batch) p.reject(error);
    }
    this.running = undefined;
  }

  /** Waits for every queued row; later appends are refused. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.running) await this.running;
  }
}
