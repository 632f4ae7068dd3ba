import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { rerankRequestSchema, rerankResponseSchema } from '../../protocol/rerank.ts';
import type { Services } from '../../serving/context.ts';
import { type CheckedRerankRequest, serveRerank } from '../../serving/rerank.ts';
import { requestContext, sendResult } from '../app.ts';
import { checkedBefore } from '../quick.ts';
import { inferenceRouteOptions } from '../edge.ts';
import { errorResponses, routeSchema } from '../openapi.ts';

/**
 * POST /rerank in the API scope (/v1/rerank, and bare /rerank which the AI SDK's cohere provider
 * calls with its base URL), plus /v2/rerank for Cohere's V2 client, whose base URL is the server
 * root: registered in the bare scope only, so that it shares the auth hook without a /v1/v2 twin.
 */
export function registerRerankRoutes(scope: FastifyInstance, services: Services): void {
  const handler = async (request: FastifyRequest, reply: FastifyReply) => {
    const result = await serveRerank(services, requestContext(request, services), request.body, checkedBefore<CheckedRerankRequest>(request));
    return sendResult(request, reply, result);
  };
  const options = inferenceRouteOptions(services.config.server, 'rerank');
  const schema = {
    tags: ['rerank'],
    body: rerankRequestSchema,
    response: { 200: rerankResponseSchema, ...errorResponses },
  };
  const summary = 'Scores documents against a query, highest first (SiliconFlow, Cohere v1).';
  scope.post('/rerank', { ...options, schema: routeSchema({ ...schema, summary }, scope.prefix === '') }, handler);
  if (scope.prefix === '') scope.post('/v2/rerank', { ...options, schema: { ...schema, summary: 'The same, for Cohere\'s v2 client (base URL: the server root).' } }, handler);
}
