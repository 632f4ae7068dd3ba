import type { FastifyInstance } from 'fastify';
import type { Services } from '../../serving/context.ts';
import { serveCompletion } from '../../serving/completions.ts';
import { requestContext, sendResult } from '../app.ts';
import { inferenceRouteOptions } from '../edge.ts';

export function registerCompletionRoutes(scope: FastifyInstance, services: Services): void {
  // Text generation on chat models: chat's body and time limits (server.bodyLimits.chat, routeTimeoutsSeconds.chat).
  scope.post('/completions', inferenceRouteOptions(services.config.server, 'chat'), async (request, reply) => {
    const result = await serveCompletion(services, requestContext(request, services), request.body);
    return sendResult(request, reply, result);
  });
}
