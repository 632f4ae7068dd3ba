// Batch order for a chat context with several sequences. llama.cpp as node-llama-cpp 3.21.1 builds it
// keeps one KV stream per sequence (kv_unified off, not settable from node-llama-cpp) and then puts
// into one micro-batch only a run of CONSECUTIVE, INCREASING sequence ids as they appear in the batch;
// every break in that run starts another full pass over the weights. node-llama-cpp fills the batch in
// the order the sequences asked for their next token, which drifts (sampling finishes in any order,
// sequence ids are reused as requests come and go), so 8 streams decoded as 3-5 micro-batches instead
// of one. Ordering the items by sequence id restores one pass per step: measured on the 512x8 bench
// model, 1 thread, bare node-llama-cpp, 8 streams went from 1.1x to 1.3-1.5x the single-stream rate.
import type { BatchItem, LlamaContext, PrioritizedBatchItem } from 'node-llama-cpp';

type Strategy = (options: { items: readonly BatchItem[]; size: number }) => PrioritizedBatchItem[];

/**
 * node-llama-cpp's "maximumParallelism" token split (every item gets an equal share of the batch, the
 * rest goes to the items that want more), with the items in sequence-id order. The ids come from the
 * context's queue, whose order is the order of `items` (BatchItem carries no id; the field is internal,
 * hence the version pin). If that queue does not line up, the library's own order is kept: only
 * speed is lost, never a result, so this falls back rather than fails (internals.test.ts catches the change).
 */
export function sequenceOrderedStrategy(context: () => LlamaContext | undefined): Strategy {
  return ({ items, size }) => {
    const queued = (context() as unknown as { _queuedDecodes?: { sequenceId?: unknown; tokens?: unknown }[] } | undefined)?._queuedDecodes;
    let ordered: readonly BatchItem[] = items;
    if (Array.isArray(queued) && queued.length === items.length && queued.every((q, i) => typeof q.sequenceId === 'number' && q.tokens === items[i]!.tokens)) {
      const ids = queued.map((q) => q.sequenceId as number);
      ordered = items.map((item, i) => ({ item, id: ids[i]! })).sort((a, b) => a.id - b.id).map(({ item }) => item);
    }
    return shareBatch(ordered, size);
  };
}

function shareBatch(items: readonly BatchItem[], size: number): PrioritizedBatchItem[] {
  let left = size;
  const share = Math.max(1, Math.floor(size / Math.max(1, items.length)));
  const result: PrioritizedBatchItem[] = [];
  for (const item of items) {
    if (left <= 0) break;
    const amount = Math.min(item.tokens.length, share, left);
    result.push({ item, processAmount: amount });
    left -= amount;
  }
  // What the equal shares left over goes to the items that want more, highest priority first.
  const wanting = result.filter((entry) => entry.processAmount < entry.item.tokens.length);
  wanting.sort((a, b) => b.item.evaluationPriority - a.item.evaluationPriority);
  for (const entry of wanting) {
    if (left <= 0) break;
    const more = Math.min(entry.item.tokens.length - entry.processAmount, left);
    entry.processAmount += more;
    left -= more;
  }
  return result;
}
