import type { FastifyInstance } from 'fastify';
import { embeddingsRequestSchema, embeddingsResponseSchema } from '../../protocol/embeddings.ts';
import type { Services } from '../../serving/context.ts';
import { type CheckedEmbeddingsRequest, serveEmbeddings } from '../../serving/embeddings.ts';
import { requestContext, sendResult } from '../app.ts';
import { checkedBefore } from '../quick.ts';
import { inferenceRouteOptions } from '../edge.ts';
import { errorResponses, routeSchema } from '../openapi.ts';

export function registerEmbeddingRoutes(scope: FastifyInstance, services: Services): void {
  const schema = routeSchema(
    {
      tags: ['embeddings'],
      summary: 'Embeddings of one or more texts (or token arrays); at most requests.maxEmbeddingInputs inputs.',
      body: embeddingsRequestSchema,
      response: { 200: embeddingsResponseSchema, ...errorResponses },
    },
    scope.prefix === '',
  );
  scope.post('/embeddings', { ...inferenceRouteOptions(services.config.server, 'embeddings'), schema }, async (request, reply) => {
    const result = await serveEmbeddings(services, requestContext(request, services), request.body, checkedBefore<CheckedEmbeddingsRequest>(request));
    return sendResult(request, reply, result);
  });
}
