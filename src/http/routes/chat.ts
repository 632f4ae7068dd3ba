import type { FastifyInstance } from 'fastify';
import { chatRequestSchema } from '../../protocol/chat/request.ts';
import { chatCompletionSchema } from '../../protocol/chat/response.ts';
import { chatStreamEventSchema } from '../../protocol/chat/stream.ts';
import type { Services } from '../../serving/context.ts';
import { serveChatCompletion } from '../../serving/chat.ts';
import { requestContext, sendResult } from '../app.ts';
import { inferenceRouteOptions } from '../edge.ts';
import { errorResponses, routeSchema } from '../openapi.ts';

export function registerChatRoutes(scope: FastifyInstance, services: Services): void {
  const schema = routeSchema(
    {
      tags: ['chat'],
      summary: 'Chat completion (OpenAI / SiliconFlow), streamed with "stream": true.',
      body: chatRequestSchema,
      response: {
        200: {
          description: 'JSON, or with "stream": true server-sent events: each `data:` line one chunk (or a final error frame), then `data: [DONE]`.',
          content: { 'application/json': { schema: chatCompletionSchema }, 'text/event-stream': { schema: chatStreamEventSchema } },
        },
        ...errorResponses,
      },
    },
    scope.prefix === '',
  );
  scope.post('/chat/completions', { ...inferenceRouteOptions(services.config.server, 'chat'), schema }, async (request, reply) => {
    const result = await serveChatCompletion(services, requestContext(request, services), request.body);
    return sendResult(request, reply, result);
  });
}
