// What an engine process sends the server, batched (child.ts). Everything produced in one turn of the
// event loop goes out as one message (see ChildMessage 'out') once that turn's microtasks are done, and
// a running stream's deltas may also wait for later turns: at most one message per `intervalMs` (the
// model's streamIntervalMs, vLLM's --stream-interval in time), because every message wakes the server,
// which writes an SSE frame that wakes the client. On a small model a decode step (chat-512x8 at 2
// threads: 1.6 ms) is shorter than those wakes, and with every core in llama.cpp's threads each wake
// preempts a decode thread mid-graph, so the whole step waits for it (docs/BENCHMARKS.md). What may not
// wait (see mayWait) goes out at once, with everything queued before it, in order.
import type { ChildItem } from './protocol.ts';

export class Outbox {
  private items: ChildItem[] = [];
  private scheduled = false;
  /** The queue holds an item that may not wait. */
  private urgent = false;
  private lastSent = -Infinity;
  private timer: NodeJS.Timeout | undefined;
  /** The type of the last part each running stream posted: a stream's first part, and a change of kind, go at once. */
  private readonly lastPartType = new Map<number, unknown>();

  constructor(
    private readonly send: (items: ChildItem[]) => void,
    /** Shortest time between two messages that carry only deltas; 0: one message per loop turn. */
    public intervalMs = 0,
    private readonly now: () => number = () => performance.now(),
  ) {}

  post(item: ChildItem): void {
    this.items.push(item);
    if (!this.mayWait(item)) this.urgent = true;
    if (!this.scheduled) {
      this.scheduled = true;
      // After the microtasks of this turn (every stream's part of a decode step: they are posted from
      // the promise chains the step's sampling resolves), before the next step. An immediate would run
      // after the next step's decode (queued first, by the runner), a step late.
      process.nextTick(() => this.flush());
    }
  }

  /** Sends what is queued unless only deltas are and the interval has not passed since the last message; `force` sends it anyway. */
  flush(force = false): void {
    this.scheduled = false;
    if (this.items.length === 0) return;
    if (!this.urgent && !force && this.intervalMs > 0) {
      const wait = this.lastSent + this.intervalMs - this.now();
      if (wait > 0) {
        // The next step's posts check again; the timer covers a stream whose steps stopped coming
        // (another sequence's long prompt chunk, a grammar compiling).
        this.timer ??= setTimeout(() => {
          this.timer = undefined;
          this.flush(true);
        }, Math.max(1, Math.ceil(wait)));
        return;
      }
    }
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.urgent = false;
    this.lastSent = this.now();
    const items = this.items;
    this.items = [];
    this.send(items);
  }

  /**
   * A delta continuing a stream whose previous part was of the same kind (text after text, reasoning
   * after reasoning, a tool call's arguments after its start). The first part (time to first token), a
   * finish, a tool call's start, the turn from reasoning to the answer, results, errors and callbacks
   * may not wait.
   */
  private mayWait(item: ChildItem): boolean {
    if (item.t !== 'part') {
      if (item.t === 'end' || item.t === 'error') this.lastPartType.delete(item.id);
      return false;
    }
    const type = (item.part as { type?: unknown } | null)?.type;
    const previous = this.lastPartType.get(item.id);
    this.lastPartType.set(item.id, type);
    if (typeof type !== 'string' || !type.endsWith('-delta')) return false;
    return previous === type || (type === 'tool-call-delta' && previous === 'tool-call-start');
  }
}
