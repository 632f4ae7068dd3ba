// Admission and the usage report every serving function settles with: what was produced, how the request ended
// (499 for a client that left, the rendered status for a failure), and how long it took.
import { InferaError, isAbortError } from '../errors/index.ts';
import { toInferaError } from '../errors/render.ts';
import type { Admission, AdmissionRequest, UsageReport, WorstCase } from '../platform/gate.ts';
import type { ModelEntry } from '../registry/registry.ts';
import type { RequestContext, Services } from './context.ts';

export type UsageCounts = Partial<Pick<UsageReport, 'promptTokens' | 'completionTokens' | 'reasoningTokens' | 'cachedPromptTokens' | 'images' | 'documents'>>;

/**
 * The status a cancelled request is recorded with: 499 (nginx's "client closed request") when the client
 * left, or the reason's own status when the server cut it off (shutdown past its drain deadline: 503).
 */
export const cancelledStatus = (context: Pick<RequestContext, 'signal'>): number => {
  const reason: unknown = context.signal.reason;
  return reason instanceof InferaError ? reason.status : 499;
};

export const statusOf = (error: unknown, context?: Pick<RequestContext, 'signal'>): number =>
  isAbortError(error) ? (context ? cancelledStatus(context) : 499) : toInferaError(error).status;

export function usageReport(context: RequestContext, counts: UsageCounts, outcome: UsageReport['outcome'], status: number, note?: string): UsageReport {
  // A literal, then the optional fields: properties after a spread in a literal are each defined
  // through V8's runtime (DefineKeyedOwnPropertyInLiteral), on every settled request.
  const report: UsageReport = {
    promptTokens: counts.promptTokens ?? 0,
    completionTokens: counts.completionTokens ?? 0,
    reasoningTokens: counts.reasoningTokens ?? 0,
    images: counts.images ?? 0,
    documents: counts.documents ?? 0,
    status,
    outcome,
    latencyMs: performance.now() - context.startedAt,
  };
  if (counts.cachedPromptTokens) report.cachedPromptTokens = counts.cachedPromptTokens;
  if (note) report.note = note;
  return report;
}

/** A request that ended in `error`: cancelled when the client left, otherwise an error with its status. */
export function failedReport(context: RequestContext, error: unknown, counts: UsageCounts = {}): UsageReport {
  return usageReport(context, counts, isAbortError(error) ? 'cancelled' : 'error', statusOf(error, context), failureNote(error));
}

/**
 * What the ledger row says about a failure: the message the client got for an InferaError (an upstream
 * that timed out, answered garbage or refused a field), nothing for a client that left or an internal
 * fault (whose details stay in the log, as they stay out of the answer).
 */
export function failureNote(error: unknown): string | undefined {
  return error instanceof InferaError && !isAbortError(error) ? error.message : undefined;
}

/** Engine warnings (settings approximated, usage counted by Infera) as one ledger note. */
export function warningsNote(warnings: readonly string[] | undefined): string | undefined {
  return warnings?.length ? [...new Set(warnings)].join('; ') : undefined;
}

/**
 * How a stream that had begun ended, for its ledger row: the status (200, the client's 499 or the
 * server's cut, or the failure's) and the note (the failure, else the engines' warnings). A server fault
 * is logged here: the client saw only a generic error frame.
 */
export function streamEnd(
  context: RequestContext,
  outcome: UsageReport['outcome'],
  failure: unknown,
  warnings: readonly string[],
): { status: number; note: string | undefined } {
  const status = outcome === 'error' ? statusOf(failure, context) : outcome === 'cancelled' ? cancelledStatus(context) : 200;
  if (status >= 500 && outcome === 'error') context.logger.error({ err: failure }, 'stream failed after its first token');
  return { status, note: outcome === 'error' ? failureNote(failure) : warningsNote(warnings) };
}

/**
 * Admission (keys, limits, balance) for a resolved model, before it is loaded: a refused request never
 * waits for, or causes, a model load. The model is the registry entry the edge resolved the client's id
 * to: the gate sees its canonical id and aliases (prices, limits, allow-lists written under any name)
 * and records `requested` too. `demand` is what the limits pre-check counts and the worst case the
 * balance reservation holds.
 */
export async function admitFor(
  services: Services,
  context: RequestContext,
  entry: ModelEntry,
  requested: string,
  endpoint: AdmissionRequest['endpoint'],
  demand: Pick<AdmissionRequest, 'estimatedTokens' | 'images' | 'worstCase' | 'deferReservation'>,
): Promise<Admission> {
  const model = entry.config.id;
  const admission = await services.gate.admit({
    principal: context.principal,
    model,
    aliases: entry.config.aliases,
    requestedModel: requested,
    endpoint,
    requestId: context.requestId,
    ...demand,
  });
  // The metrics see each admitted request settle exactly as the ledger does (same report, same once).
  services.metrics.admitted(endpoint, model);
  return new MeteredAdmission(admission, services.metrics, model, endpoint);
}

/**
 * The admission as serving sees it: the gate's, with the metrics told of the settle. A class, not an
 * object literal with `get headers()`: with that literal (its getter a new closure per request) V8
 * kept each request's whole graph alive across every scavenge until the next full GC: the getter's
 * closure held the admission, the gate's closures, admit's checks, serveChatCompletion's frame and the
 * body, ~3 of the ~6 KB per request that one connection promoted (docs/BENCHMARKS.md, "Gateway overhead:
 * the promoted request"; bench/accessor-literal-gc.ts shows the V8 behaviour alone). A class's getter
 * sits on its prototype.
 */
class MeteredAdmission implements Admission {
  constructor(
    private readonly admission: Admission,
    private readonly metrics: Services['metrics'],
    private readonly model: string,
    private readonly endpoint: AdmissionRequest['endpoint'],
  ) {}
  get headers(): Record<string, string> {
    return this.admission.headers;
  }
  resize(worstCase: WorstCase): Promise<void> {
    return this.admission.resize(worstCase);
  }
  settle(usage: UsageReport): Promise<void> {
    this.metrics.settled({ model: this.model, endpoint: this.endpoint, ...usage });
    return this.admission.settle(usage);
  }
}
