// The usage report every serving function settles with: what was produced, how the request ended
// (499 for a client that left, the rendered status for a failure), and how long it took.
import { isAbortError } from '../errors/index.ts';
import { toInferaError } from '../errors/render.ts';
import type { UsageReport } from '../platform/gate.ts';
import type { RequestContext } from './context.ts';

export type UsageCounts = Partial<Pick<UsageReport, 'promptTokens' | 'completionTokens' | 'reasoningTokens' | 'images' | 'documents'>>;

export const statusOf = (error: unknown): number => (isAbortError(error) ? 499 : toInferaError(error).status);

export function usageReport(context: RequestContext, counts: UsageCounts, outcome: UsageReport['outcome'], status: number): UsageReport {
  return {
    promptTokens: counts.promptTokens ?? 0,
    completionTokens: counts.completionTokens ?? 0,
    reasoningTokens: counts.reasoningTokens ?? 0,
    images: counts.images ?? 0,
    documents: counts.documents ?? 0,
    status,
    outcome,
    latencyMs: performance.now() - context.startedAt,
  };
}

/** A request that ended in `error`: cancelled when the client left, otherwise an error with its status. */
export function failedReport(context: RequestContext, error: unknown, counts: UsageCounts = {}): UsageReport {
  return usageReport(context, counts, isAbortError(error) ? 'cancelled' : 'error', statusOf(error));
}
