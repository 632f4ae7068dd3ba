import type { FastifyInstance } from 'fastify';
import { chatRequestSchema } from '../../protocol/chat/request.ts';
import { chatCompletionSchema } from '../../protocol/chat/response.ts';
import { chatStreamEventSchema } from '../../protocol/chat/stream.ts';
import type { Services } from '../../serving/context.ts';
import { type CheckedChatRequest, checkChatRequest, serveChatCompletion } from '../../serving/chat.ts';
import { InferaError } from '../../errors/index.ts';
import { requestContext, sendResult } from '../app.ts';
import { checkedBefore } from '../quick.ts';
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
  scope.post('/chat/completions', { ...inferenceRouteOptions(services.config.server, 'chat'), schema }, (request, reply) => {
    let checked: CheckedChatRequest | InferaError;
    try {
      checked = checkedBefore<CheckedChatRequest>(request) ?? checkChatRequest(services, request.body);
    } catch (error) {
      if (!(error instanceof InferaError)) throw error;
      checked = error;
    }
    if (checked instanceof InferaError) {
      // Sent here; nothing returned (a sync handler returning the reply would have it sent twice).
      reply.refuse(checked);
      return;
    }
    return serveChatCompletion(services, requestContext(request, services), request.body, checked).then((result) => sendResult(request, reply, result));
  });
}
