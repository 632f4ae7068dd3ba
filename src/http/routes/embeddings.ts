import type { FastifyInstance } from 'fastify';
import type { Services } from '../../serving/context.ts';
import { serveEmbeddings } from '../../serving/embeddings.ts';
import { requestContext, sendResult } from '../app.ts';
import { inferenceRouteOptions } from '../edge.ts';

export function registerEmbeddingRoutes(scope: FastifyInstance, services: Services): void {
  scope.post('/embeddings', inferenceRouteOptions(services.config.server, 'embeddings'), async (request, reply) => {
    const result = await serveEmbeddings(services, requestContext(request, services), request.body);
    return sendResult(request, reply, result);
  });
}
