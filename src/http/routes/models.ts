import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { modelListSchema, modelsQuerySchema, wireModelSchema } from '../../protocol/models.ts';
import type { Services } from '../../serving/context.ts';
import { listModels, listModelsJson, retrieveModel } from '../../serving/models.ts';
import { errorResponses, routeSchema } from '../openapi.ts';

export function registerModelRoutes(scope: FastifyInstance, services: Services): void {
  const hidden = scope.prefix === '';
  scope.get(
    '/models',
    {
      schema: routeSchema(
        { tags: ['models'], summary: 'The served models, with their aliases as models of their own.', querystring: modelsQuerySchema, response: { 200: modelListSchema, ...errorResponses } },
        hidden,
      ),
    },
    // Not async: the list is ready at once, and a promise per request (with the microtask that settles
    // it) is the handler's largest cost after the list itself.
    (request, reply) => {
      const query = request.query as Record<string, unknown> | undefined;
      if (query) for (const _ in query) return listModels(services, query);
      // Sent here; nothing returned (a sync handler returning the reply would have it sent twice).
      reply.type('application/json; charset=utf-8').send(listModelsJson(services));
    },
  );
  scope.get(
    '/models/*',
    {
      schema: routeSchema(
        {
          tags: ['models'],
          summary: 'One model by id (ids may contain slashes: Qwen/Qwen3-8B).',
          params: z.object({ '*': z.string().describe('The model id.') }),
          response: { 200: wireModelSchema, ...errorResponses },
        },
        hidden,
      ),
    },
    async (request) => retrieveModel(services, (request.params as { '*': string })['*']),
  );
}
