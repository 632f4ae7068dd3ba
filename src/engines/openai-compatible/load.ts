// Builds the model object for one entry: the shared pool for its origin, its dialect's routes, and what
// the upstream says about the model when the entry does not (context size). Nothing here fails because
// the upstream is down: a remote model is "loaded" without a request, and an upstream that is down fails
// each request with a 502 (503 + Retry-After once the router's health check or breaker takes it out)
// instead of parking the model in load-failure backoff.
import type { Logger } from 'pino';
import { imageLimitsOf } from '../../spec/image.ts';
import type { LoadedModel } from '../../spec/index.ts';
import type { EngineResources } from '../resources.ts';
import { RemoteChatModel } from './chat.ts';
import { DEFAULT_REMOTE_CONTEXT, type OpenAICompatibleModelConfig } from './config.ts';
import { createCounter } from './count.ts';
import { DIALECT_TABLE } from './dialects/index.ts';
import { listModels } from './discover.ts';
import { RemoteEmbeddingModel, RemoteRerankModel } from './encoders.ts';
import { RemoteImageModel } from './images.ts';
import { poolFor, Upstream } from './upstream.ts';

/** How long loading waits for the model list (context size) before it assumes the default. */
const LISTING_WAIT_MS = 3_000;

export async function loadRemoteModel(
  config: OpenAICompatibleModelConfig,
  { logger, resources, signal }: { logger: Logger; resources: EngineResources; signal: AbortSignal },
): Promise<LoadedModel> {
  const options = config.upstream;
  const dialect = DIALECT_TABLE[options.dialect];
  const upstream = new Upstream(options, await poolFor(resources, options), config.id, logger);
  const counter = await createCounter(upstream.label, options.tokenizer);
  const encoder = { upstream, counter, matryoshka: config.matryoshka, acceptsInstruction: config.acceptsInstruction };
  const loaded = (model: LoadedModel['model']): LoadedModel => ({ model, dispose: async () => {} });
  switch (config.type) {
    case 'chat': {
      let contextSize = options.contextSize;
      if (contextSize === undefined) {
        const listing = await listModels(upstream, AbortSignal.any([signal, AbortSignal.timeout(LISTING_WAIT_MS)])).catch((error: unknown) => {
          logger.warn({ err: error }, `could not read the upstream's model list; assuming a context of ${DEFAULT_REMOTE_CONTEXT} tokens (set upstream.contextSize)`);
          return [];
        });
        const listed = listing.find((model) => model.id === upstream.model) ?? (dialect.servesOneModel && listing.length === 1 ? listing[0] : undefined);
        contextSize = listed?.contextSize ?? DEFAULT_REMOTE_CONTEXT;
      }
      return loaded(new RemoteChatModel({ upstream, dialect, counter, contextSize, logger }));
    }
    case 'embedding':
      return loaded(new RemoteEmbeddingModel((options.native && dialect.native?.embeddings) || dialect.embeddings!, encoder));
    case 'reranker':
      return loaded(new RemoteRerankModel(dialect.rerank!, encoder));
    case 'text-to-image':
      return loaded(new RemoteImageModel(upstream, imageLimitsOf(config.id, options, 'upstream.defaultSize')));
  }
}
