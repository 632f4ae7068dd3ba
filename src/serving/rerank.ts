// POST /v1/rerank and /v2/rerank: resolve model → refuse what the model cannot honour → admit (before
// any model load) → micro-batch → sort, cut to top_n, meter.
import { badRequest } from '../errors/index.ts';
import type { ModelConfig } from '../config/schema.ts';
import { buildRerankResponse, parseRerankRequest, type RerankRequest } from '../protocol/rerank.ts';
import type { BatchEntry, MicroBatcher } from '../scheduler/micro-batcher.ts';
import type { RerankCallOptions, RerankModel, RerankResult } from '../spec/index.ts';
import type { ModelEntry, ModelLease } from '../registry/registry.ts';
import type { RequestContext, ServeResult, Services } from './context.ts';
import { admitFor, failedReport, usageReport, warningsNote } from './usage.ts';
import { createBatcher, DEFAULT_BATCHING, type BatchingSettings } from './embeddings-batching.ts';
import { RerankWorkMeter } from '../engines/shared/rerank-text.ts';

export type RerankJob = Pick<RerankRequest, 'query' | 'documents' | 'instruction' | 'maxChunksPerDoc' | 'overlapTokens' | 'maxTokensPerDoc'> &
  Pick<RerankCallOptions, 'limits'>;
export type RerankBatcher = MicroBatcher<RerankJob, RerankResult>;

/** As createEmbeddingBatcher: defaults, then the engine's preference, then `overrides`. */
export function createRerankBatcher(model: RerankModel, config: ModelConfig, overrides: Partial<BatchingSettings> = {}): RerankBatcher {
  return createBatcher<RerankJob, RerankResult>(config, (entries, signal) => runRerankBatch(model, entries, signal), {
    ...DEFAULT_BATCHING,
    ...model.preferredBatching,
    ...overrides,
  });
}

/**
 * Engines with true batching score the pairs of every request of the batch in shared forward passes;
 * others run the requests side by side on their context pool. Either way each request is stopped by its
 * own caller's signal, and a failure of one request (e.g. a query too long for the model) is that
 * request's answer only.
 */
export function runRerankBatch(model: RerankModel, entries: BatchEntry<RerankJob>[], batchSignal: AbortSignal): Promise<RerankResult>[] {
  const calls = entries.map((entry) => ({ ...entry.input, signal: entry.signal ?? batchSignal }));
  return model.doRerankBatch ? model.doRerankBatch(calls) : calls.map((call) => model.doRerank(call));
}

/** Rough token cost for the batch budget and rate-limit pre-checks: ~4 characters a token. */
export function estimateRerankTokens(job: Pick<RerankJob, 'query' | 'documents'>): number {
  const query = Math.ceil(job.query.length / 4) + 3;
  return job.documents.reduce((sum, document) => sum + query + Math.ceil(document.length / 4), 0);
}

/**
 * Before anything loads: every document is at least one pair, and every pair at least one token per
 * `maxCharsPerToken` characters of the query and of its document. The engine counts exactly (and
 * refuses the same way) once it has planned the chunks.
 */
function refuseOverRerankCap(request: RerankRequest, limits: { maxPairs: number; maxTokens: number }, maxCharsPerToken: number): void {
  const meter = new RerankWorkMeter(limits);
  const query = Math.ceil(request.query.length / maxCharsPerToken);
  for (const document of request.documents) meter.add(query + Math.ceil(document.length / maxCharsPerToken));
}

/** A rerank request that passed the checks needing neither the model nor the platform. */
export interface CheckedRerankRequest {
  request: RerankRequest;
  entry: ModelEntry;
}

/**
 * What a rerank request is refused for before any work (throws those 400s): the body's rules, the work
 * cap, the model id, an instruction the model cannot take. The HTTP layer runs it on its own
 * (src/http/quick.ts) and passes the result in.
 */
export function checkRerankRequest(services: Services, body: unknown): CheckedRerankRequest {
  const limits = services.config.requests;
  const request = parseRerankRequest(body, limits);
  const workLimits = { maxPairs: limits.maxRerankPairs, maxTokens: limits.maxRerankTokens };
  refuseOverRerankCap(request, workLimits, limits.maxCharsPerToken);
  const entry = services.registry.resolve(request.model, 'reranker');
  if (request.instruction !== undefined && !entry.config.acceptsInstruction)
    throw badRequest(
      `instruction: model '${request.model}' is not an instruction-following reranker; omit \`instruction\`.`,
      'instruction',
    );
  return { request, entry };
}

export async function serveRerank(services: Services, context: RequestContext, body: unknown, given?: CheckedRerankRequest): Promise<ServeResult> {
  const limits = services.config.requests;
  const { request, entry } = given ?? checkRerankRequest(services, body);
  const workLimits = { maxPairs: limits.maxRerankPairs, maxTokens: limits.maxRerankTokens };
  const estimate = estimateRerankTokens(request);
  // Chunking and the query repeated per chunk are only counted inside the batch run, so the reservation
  // takes twice the character estimate; a request that still uses more is charged what was reserved.
  const admission = await admitFor(services, context, entry, request.model, 'rerank', {
    estimatedTokens: estimate,
    images: 0,
    worstCase: { promptTokens: 2 * estimate, completionTokens: 0, images: 0, documents: request.documents.length },
  });
  let lease: ModelLease<RerankModel> | undefined;
  try {
    let result: RerankResult;
    try {
      lease = await services.registry.acquire(entry.config.id, 'reranker', { keepAliveMs: request.keepAliveMs });
      result = await services.batchers.rerank(lease.model, lease.config).submit(
        {
          query: request.query,
          documents: request.documents,
          instruction: request.instruction,
          maxChunksPerDoc: request.maxChunksPerDoc,
          overlapTokens: request.overlapTokens,
          maxTokensPerDoc: request.maxTokensPerDoc,
          limits: workLimits,
        },
        estimate,
        context.signal,
      );
    } catch (error) {
      await admission.settle(failedReport(context, error));
      throw error;
    }
    await admission.settle(usageReport(context, { promptTokens: result.inputTokens, documents: request.documents.length }, 'ok', 200, warningsNote(result.warnings)));
    return {
      type: 'json',
      body: buildRerankResponse(request, result.scores, { inputTokens: result.inputTokens, chunks: result.chunks ?? request.documents.length }),
      headers: admission.headers,
    };
  } finally {
    lease?.release();
  }
}
