import type { FastifyInstance } from 'fastify';
import type { Services } from '../../serving/context.ts';
import { serveChatCompletion } from '../../serving/chat.ts';
import { requestContext, sendResult } from '../app.ts';
import { inferenceRouteOptions } from '../edge.ts';

export function registerChatRoutes(scope: FastifyInstance, services: Services): void {
  scope.post('/chat/completions', inferenceRouteOptions(services.config.server, 'chat'), async (request, reply) => {
    const result = await serveChatCompletion(services, requestContext(request, services), request.body);
    return sendResult(request, reply, result);
  });
}
