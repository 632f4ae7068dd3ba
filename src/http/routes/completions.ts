import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { wireErrorSchema } from '../../errors/render.ts';
import { completionRequestSchema, textCompletionSchema } from '../../protocol/completions.ts';
import type { Services } from '../../serving/context.ts';
import { type CheckedCompletionRequest, serveCompletion } from '../../serving/completions.ts';
import { requestContext, sendResult } from '../app.ts';
import { checkedBefore } from '../quick.ts';
import { inferenceRouteOptions } from '../edge.ts';
import { errorResponses, routeSchema } from '../openapi.ts';

export function registerCompletionRoutes(scope: FastifyInstance, services: Services): void {
  const schema = routeSchema(
    {
      tags: ['chat'],
      summary: 'Text completion (OpenAI legacy) on chat models: prompt, fill-in-the-middle with suffix, echo, logprobs; streamed with "stream": true.',
      body: completionRequestSchema,
      response: {
        200: {
          description: 'JSON, or with "stream": true server-sent events: each `data:` line one chunk (or a final error frame), then `data: [DONE]`.',
          content: {
            'application/json': { schema: textCompletionSchema },
            'text/event-stream': { schema: z.union([textCompletionSchema, z.object({ error: wireErrorSchema })]) },
          },
        },
        ...errorResponses,
      },
    },
    scope.prefix === '',
  );
  // Text generation on chat models: chat's body and time limits (server.bodyLimits.chat, routeTimeoutsSeconds.chat).
  scope.post('/completions', { ...inferenceRouteOptions(services.config.server, 'chat'), schema }, async (request, reply) => {
    const result = await serveCompletion(services, requestContext(request, services), request.body, checkedBefore<CheckedCompletionRequest>(request));
    return sendResult(request, reply, result);
  });
}
