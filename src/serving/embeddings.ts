// POST /v1/embeddings: resolve model → admit (keys, limits, balance) on an estimate → load → check every
// input against the model (token limit, vocabulary, dimensions) before anything queues → micro-batch →
// meter the real token count.
import { badRequest } from '../errors/index.ts';
import type { ModelConfig } from '../config/schema.ts';
import { DEFAULT_REQUEST_LIMITS, type RequestLimits } from '../config/requests.ts';
import { buildEmbeddingsResponse, parseEmbeddingsRequest, type EmbeddingsRequest } from '../protocol/embeddings.ts';
import type { BatchEntry, MicroBatcher } from '../scheduler/micro-batcher.ts';
import type { EmbeddingInput, EmbeddingModel, EmbedResult } from '../spec/index.ts';
import type { ModelEntry, ModelLease } from '../registry/registry.ts';
import type { RequestContext, ServeResult, Services } from './context.ts';
import { admitFor, failedReport, usageReport, warningsNote } from './usage.ts';
import { createBatcher, DEFAULT_BATCHING, type BatchingSettings } from './embeddings-batching.ts';
import { checkedInputTokens, inputParam, overTokenCap } from '../engines/shared/embedding-input.ts';

export interface EmbedJob {
  inputs: EmbeddingInput[];
  dimensions?: number;
  /** For an engine that counts tokens itself (EmbedCallOptions.request). */
  request?: { maxTokens: number; single: boolean };
}

export type EmbeddingBatcher = MicroBatcher<EmbedJob, EmbedResult>;

/**
 * A batcher for the model. Settings: the defaults, then what the engine prefers, then `overrides`
 * (benchmarks). The server keeps one per loaded model in its ModelBatchers (services.batchers).
 */
export function createEmbeddingBatcher(model: EmbeddingModel, config: ModelConfig, overrides: Partial<BatchingSettings> = {}): EmbeddingBatcher {
  return createBatcher<EmbedJob, EmbedResult>(config, (entries, signal) => runEmbedBatch(model, entries, signal), {
    ...DEFAULT_BATCHING,
    ...model.preferredBatching,
    ...overrides,
  });
}

/**
 * Engines with true batching (ONNX Runtime) get the whole batch in one call and put every input of every
 * request into shared forward passes. Others (llama.cpp contexts take one input at a time) get one call
 * per request, all started together, so no caller waits for the slowest input of the whole batch. Each
 * call carries its caller's signal, so a caller that leaves mid-batch stops its own remaining inputs.
 */
export function runEmbedBatch(model: EmbeddingModel, entries: BatchEntry<EmbedJob>[], batchSignal: AbortSignal): Promise<EmbedResult>[] {
  const calls = entries.map((entry) => ({
    inputs: entry.input.inputs,
    dimensions: entry.input.dimensions,
    signal: entry.signal ?? batchSignal,
    ...(entry.input.request ? { request: entry.input.request } : {}),
  }));
  return model.doEmbedBatch ? model.doEmbedBatch(calls) : calls.map((call) => model.doEmbed(call));
}

/** An embeddings request that passed the checks needing neither the model nor the platform. */
export interface CheckedEmbeddingsRequest {
  request: EmbeddingsRequest;
  entry: ModelEntry;
}

/**
 * What an embeddings request is refused for before any work (throws those 400s): the body's rules, the
 * token cap, the model id. The HTTP layer runs it on its own (src/http/quick.ts) and passes the result in.
 */
export function checkEmbeddingsRequest(services: Services, body: unknown): CheckedEmbeddingsRequest {
  const limits = services.config.requests;
  const request = parseEmbeddingsRequest(body, limits);
  refuseOverTokenCap(request.inputs, limits);
  return { request, entry: services.registry.resolve(request.model, 'embedding') };
}

export async function serveEmbeddings(services: Services, context: RequestContext, body: unknown, given?: CheckedEmbeddingsRequest): Promise<ServeResult> {
  const limits = services.config.requests;
  const { request, entry } = given ?? checkEmbeddingsRequest(services, body);
  const estimate = estimateInputTokens(request.inputs);
  const admission = await admitFor(services, context, entry, request.model, 'embeddings', {
    estimatedTokens: estimate,
    images: 0,
    worstCase: { promptTokens: estimate, completionTokens: 0, images: 0, documents: 0 },
  });
  let lease: ModelLease<EmbeddingModel> | undefined;
  try {
    let result: EmbedResult;
    try {
      lease = await services.registry.acquire(entry.config.id, 'embedding', { keepAliveMs: request.keepAliveMs });
      const model = lease.model;
      checkDimensions(model, request.dimensions);
      const { inputs, tokens } = await tokenizeInputs(model, request, limits);
      // The exact count is known before anything runs (the reservation becomes exactly the cost), unless
      // the engine counts: then the estimate stays reserved and the engine checks the request's cap.
      await admission.resize({ promptTokens: tokens, completionTokens: 0, images: 0, documents: 0 });
      const job: EmbedJob = { inputs, dimensions: request.dimensions };
      if (model.takesText) job.request = { maxTokens: limits.maxEmbeddingTokens, single: request.single };
      result = await services.batchers.embedding(model, lease.config).submit(job, tokens, context.signal);
    } catch (error) {
      await admission.settle(failedReport(context, error));
      throw error;
    }
    await admission.settle(usageReport(context, { promptTokens: result.promptTokens }, 'ok', 200, warningsNote(result.warnings)));
    return {
      type: 'json',
      body: buildEmbeddingsResponse(request.model, result.embeddings, result.promptTokens, request.encodingFormat),
      headers: admission.headers,
    };
  } finally {
    lease?.release();
  }
}

/**
 * Before anything loads: token arrays count exactly, and a text has at least one token per
 * `maxCharsPerToken` characters, so a request whose lower bound already passes the cap is refused
 * without tokenizing megabytes on the main thread (4.8 MB of input was 987k tokens and 15.9 s of work).
 */
function refuseOverTokenCap(inputs: readonly EmbeddingInput[], limits: EmbeddingCaps): void {
  let atLeast = 0;
  for (const input of inputs) atLeast += 'text' in input ? Math.ceil(input.text.length / limits.maxCharsPerToken) : input.tokens.length;
  if (atLeast > limits.maxEmbeddingTokens) throw overTokenCap(`at least ${atLeast}`, limits.maxEmbeddingTokens);
}

type EmbeddingCaps = Pick<RequestLimits, 'maxEmbeddingTokens' | 'maxCharsPerToken'>;

/** Token estimate before the model (and its tokenizer) is loaded: exact for token arrays, ~4 characters a token for text. */
export function estimateInputTokens(inputs: readonly EmbeddingInput[]): number {
  return inputs.reduce((sum, input) => sum + ('text' in input ? Math.ceil(input.text.length / 4) + 2 : input.tokens.length), 0);
}

/** Matryoshka models truncate to any size up to their own; others accept only their native size. */
export function checkDimensions(model: EmbeddingModel, dimensions: number | undefined): void {
  // 0: a remote model whose size is not configured; its upstream judges the request's `dimensions`.
  if (dimensions === undefined || dimensions === model.dimensions || model.dimensions === 0) return;
  if (!model.matryoshka)
    throw badRequest(
      `dimensions: model '${model.name}' produces ${model.dimensions}-dimensional vectors and cannot shorten them; omit \`dimensions\` or send ${model.dimensions}.`,
      'dimensions',
    );
  if (dimensions > model.dimensions)
    throw badRequest(`dimensions: must be at most ${model.dimensions} for model '${model.name}'.`, 'dimensions');
}

/**
 * The request's inputs as token arrays plus their total (batch budget and rate limits), refusing any
 * input over the model's limit with a 400 that names it (`input[3]`, or `input` for a single input).
 * The engine gets the tokens, so no text is tokenized twice; an engine that `takesText` gets the text
 * (tokenizing it here would cost a round trip to its engine process).
 */
export async function tokenizeInputs(
  model: EmbeddingModel,
  request: Pick<EmbeddingsRequest, 'inputs' | 'single'>,
  limits: EmbeddingCaps = DEFAULT_REQUEST_LIMITS,
): Promise<{ inputs: EmbeddingInput[]; tokens: number }> {
  let total = 0;
  const single = request.single;
  const inputs: EmbeddingInput[] = [];
  for (const [index, input] of request.inputs.entries()) {
    const param = inputParam(index, single);
    // A text that cannot fit even at maxCharsPerToken characters a token is refused untokenized.
    if ('text' in input && input.text.length > model.maxInputTokens * limits.maxCharsPerToken)
      throw badRequest(
        `${param}: ${input.text.length} characters is more than model '${model.name}' takes (${model.maxInputTokens} tokens per input). Shorten or split it.`,
        param,
        'context_length_exceeded',
      );
    if ('text' in input && model.takesText) {
      // The engine's upstream tokenizes: the batch budget and the reservation go by the estimate.
      inputs.push(input);
      total += estimateInputTokens([input]);
      continue;
    }
    // The engines' own checks (an engine called directly refuses the same inputs with the same 400s).
    const tokenized = 'text' in input ? await model.tokenize(input.text) : undefined;
    const tokens = checkedInputTokens(input, index, () => tokenized!, model, single);
    inputs.push({ tokens });
    total += tokens.length;
    if (total > limits.maxEmbeddingTokens) throw overTokenCap(String(total), limits.maxEmbeddingTokens);
  }
  return { inputs, tokens: total };
}

