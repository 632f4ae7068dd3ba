import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { Services } from '../../serving/context.ts';
import { requestContext } from '../app.ts';
import { errorResponses, routeSchema } from '../openapi.ts';

const userInfoSchema = z.object({
  code: z.literal(20000),
  message: z.string(),
  status: z.boolean(),
  data: z.record(z.string(), z.unknown()).describe("The key's account: id, name, balances as decimal strings."),
});

export function registerUserRoutes(scope: FastifyInstance, services: Services): void {
  // SiliconFlow's shape: New API / One API require code 20000 and decimal-string balances.
  const schema = routeSchema(
    { tags: ['account'], summary: "The calling key's account and balance (SiliconFlow's shape).", response: { 200: userInfoSchema, ...errorResponses } },
    scope.prefix === '',
  );
  scope.get('/user/info', { schema }, async (request) => {
    const context = requestContext(request, services);
    const data = await services.gate.userInfo(context.principal);
    return { code: 20000 as const, message: 'OK', status: true, data };
  });
}
