// Rate-limit counters for a single process (the default without Redis). Consume is synchronous inside,
// so all-or-nothing holds without locks. Several processes on one SQLite file do NOT share these:
// configure storage.redisUrl for limits across replicas.
import type { ConsumeResult, CounterCheck, CounterStore } from './types.ts';

interface Entry {
  value: number;
  expiresAt: number;
}

export class MemoryCounterStore implements CounterStore {
  readonly kind = 'memory' as const;
  private readonly entries = new Map<string, Entry>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly now: () => number = Date.now) {
    // Window keys carry their start time, so old ones are garbage; sweep them once a minute.
    this.sweeper = setInterval(() => this.sweep(), 60_000);
    this.sweeper.unref();
  }

  private read(key: string, now: number): number {
    const entry = this.entries.get(key);
    if (!entry) return 0;
    if (entry.expiresAt <= now) {
      this.entries.delete(key);
      return 0;
    }
    return entry.value;
  }

  private add(key: string, delta: number, ttlMs: number, now: number): number {
    const value = this.read(key, now) + delta;
    const existing = this.entries.get(key);
    if (existing) existing.value = value;
    else this.entries.set(key, { value, expiresAt: now + ttlMs });
    return value;
  }

  async consume(checks: CounterCheck[]): Promise<ConsumeResult> {
    return this.consumeSync(checks);
  }

  consumeSync(checks: CounterCheck[]): ConsumeResult {
    const now = this.now();
    const current = checks.map((check) => this.read(check.key, now));
    for (let i = 0; i < checks.length; i++) {
      if (current[i]! + checks[i]!.amount > checks[i]!.limit) return { ok: false, failed: i, values: current };
    }
    return { ok: true, values: checks.map((check) => this.add(check.key, check.amount, check.ttlMs, now)) };
  }

  async adjust(adjustments: { key: string; delta: number; ttlMs: number }[]): Promise<void> {
    this.adjustSync(adjustments);
  }

  adjustSync(adjustments: { key: string; delta: number; ttlMs: number }[]): void {
    const now = this.now();
    for (const { key, delta, ttlMs } of adjustments) if (delta !== 0) this.add(key, delta, ttlMs, now);
  }

  private sweep(): void {
    const now = this.now();
    for (const [key, entry] of this.entries) if (entry.expiresAt <= now) this.entries.delete(key);
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
  }
}
