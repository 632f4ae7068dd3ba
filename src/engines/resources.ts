// Engine state that several models of one server share (a llama.cpp runtime per GPU setting, a
// connection pool for a remote upstream…). One EngineResources per server, never per process, so two
// servers in one process (tests) share nothing and closing one disposes only what it created.
import type { Logger } from 'pino';

interface Entry {
  value: Promise<unknown>;
  dispose(value: unknown): Promise<void> | void;
}

export class EngineResources {
  private readonly entries = new Map<string, Entry>();
  private closed = false;

  /** @param logger the server's logger, for resources that log outside any one model's load. */
  constructor(readonly logger: Logger) {}

  /** The value under `key`, created on first use; disposed (in reverse order of creation) by close(). */
  get<T>(key: string, create: () => Promise<T> | T, dispose: (value: T) => Promise<void> | void): Promise<T> {
    if (this.closed) return Promise.reject(new Error('engine resources are closed (server shutting down)'));
    let entry = this.entries.get(key);
    if (!entry) {
      const value = Promise.resolve().then(create);
      entry = { value, dispose: dispose as Entry['dispose'] };
      this.entries.set(key, entry);
      // A failed creation is retried by the next load instead of failing every later one.
      value.catch(() => {
        if (this.entries.get(key)?.value === value) this.entries.delete(key);
      });
    }
    return entry.value as Promise<T>;
  }

  /** How many resources are live (tests). */
  get size(): number {
    return this.entries.size;
  }

  async close(): Promise<void> {
    this.closed = true;
    const entries = [...this.entries.values()].reverse();
    this.entries.clear();
    for (const entry of entries) {
      const value = await entry.value.catch(() => undefined);
      if (value !== undefined)
        await Promise.resolve(entry.dispose(value)).catch((error: unknown) => this.logger.warn({ err: error }, 'engine resource failed to dispose'));
    }
  }
}
