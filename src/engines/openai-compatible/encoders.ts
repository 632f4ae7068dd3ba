// Embeddings and rerank against an upstream, through the dialect's routes. The upstream tokenizes
// (the models take text as text: `takesText`), and its token counts are billed; an upstream that reports
// none (TEI) is counted here, and the result's warnings say so for the ledger row.
import { badRequest, InferaError } from '../../errors/index.ts';
import type { EmbedCallOptions, EmbeddingModel, EmbedResult, PreferredBatching, RerankCallOptions, RerankModel, RerankResult } from '../../spec/index.ts';
import type { TokenCounter } from './count.ts';
import type { EmbeddingRoute, RerankRoute } from './dialects/types.ts';
import { quote, type Upstream } from './upstream.ts';

export interface RemoteEncoderOptions {
  upstream: Upstream;
  counter: TokenCounter;
  matryoshka: boolean;
  acceptsInstruction: boolean;
}

/** Requests go out as they come (no wait for company): the upstream batches across its own clients. */
const batchingFor = (upstream: Upstream): PreferredBatching => ({ maxWaitMs: 0, concurrency: upstream.options.maxConnections });

export class RemoteEmbeddingModel implements EmbeddingModel {
  readonly kind = 'embedding' as const;
  readonly name: string;
  readonly dimensions: number;
  readonly maxInputTokens: number;
  readonly matryoshka: boolean;
  readonly takesText = true;
  readonly preferredBatching: PreferredBatching;

  constructor(
    private readonly route: EmbeddingRoute,
    private readonly options: RemoteEncoderOptions,
  ) {
    const { upstream } = options;
    this.name = upstream.model;
    this.dimensions = upstream.options.dimensions ?? 0;
    this.maxInputTokens = upstream.options.maxInputTokens;
    this.matryoshka = options.matryoshka;
    this.preferredBatching = batchingFor(upstream);
  }

  tokenize(): Promise<number[]> {
    // takesText: serving never asks; token-id inputs arrive as ids.
    return Promise.reject(new InferaError({ status: 500, message: `${this.options.upstream.label} tokenizes for itself` }));
  }

  async doEmbed({ inputs, dimensions, signal }: EmbedCallOptions): Promise<EmbedResult> {
    const { upstream, counter } = this.options;
    const texts = inputs.flatMap((input) => ('text' in input ? [input.text] : []));
    const tokens = inputs.flatMap((input) => ('tokens' in input ? [input.tokens] : []));
    if (tokens.length && (!this.route.tokenInputs || texts.length))
      throw badRequest(
        this.route.tokenInputs ? 'input: send either texts or token arrays in one request, not both.' : `input: ${upstream.label} takes text only, not token ids.`,
        'input',
      );
    const answer = await upstream.json(this.route.path(upstream), this.route.body(upstream.model, tokens.length ? tokens : texts, dimensions), signal);
    const { vectors, promptTokens } = this.route.parse(answer);
    const embeddings: Float32Array[] = [];
    for (let i = 0; i < inputs.length; i++) {
      const vector = vectors[i];
      if (!Array.isArray(vector) || vector.length === 0 || !vector.every((x) => typeof x === 'number'))
        throw upstream.broken(`answered without a vector for input ${i} of ${inputs.length}: ${quote(JSON.stringify(answer))}`);
      embeddings.push(Float32Array.from(vector as number[]));
    }
    if (promptTokens !== undefined) return { embeddings, promptTokens };
    const counts = inputs.map((input) => ('text' in input ? counter.count(input.text) : input.tokens.length));
    return { embeddings, promptTokens: counts.reduce((a, b) => a + b, 0), tokensPerInput: counts, warnings: [counter.note] };
  }
}

export class RemoteRerankModel implements RerankModel {
  readonly kind = 'reranker' as const;
  readonly name: string;
  readonly maxInputTokens: number;
  readonly acceptsInstruction: boolean;
  readonly preferredBatching: PreferredBatching;

  constructor(
    private readonly route: RerankRoute,
    private readonly options: RemoteEncoderOptions,
  ) {
    this.name = options.upstream.model;
    this.maxInputTokens = options.upstream.options.maxInputTokens;
    this.acceptsInstruction = options.acceptsInstruction;
    this.preferredBatching = batchingFor(options.upstream);
  }

  async doRerank(call: RerankCallOptions): Promise<RerankResult> {
    const { upstream, counter } = this.options;
    const body = this.route.body(upstream.model, call);
    const answer = await upstream.json(this.route.path(upstream), body, call.signal);
    const { results, promptTokens } = this.route.parse(answer);
    const scores = new Array<number>(call.documents.length).fill(Number.NaN);
    for (const { index, score } of results) if (index >= 0 && index < scores.length) scores[index] = score;
    const missing = scores.findIndex((score) => !Number.isFinite(score));
    if (missing !== -1) throw upstream.broken(`answered without a score for document ${missing} of ${call.documents.length}: ${quote(JSON.stringify(answer))}`);
    if (promptTokens !== undefined) return { scores, inputTokens: promptTokens };
    const query = counter.count(call.query);
    const inputTokens = call.documents.reduce((sum, document) => sum + query + counter.count(document), 0);
    return { scores, inputTokens, warnings: [counter.note] };
  }
}
