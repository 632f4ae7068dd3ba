import type { FastifyInstance } from 'fastify';
import type { Services } from '../../serving/context.ts';
import { listModels, retrieveModel } from '../../serving/models.ts';

export function registerModelRoutes(scope: FastifyInstance, services: Services): void {
  scope.get('/models', async (request) => listModels(services, request.query as Record<string, unknown>));
  scope.get('/models/*', async (request) => retrieveModel(services, (request.params as { '*': string })['*']));
}
