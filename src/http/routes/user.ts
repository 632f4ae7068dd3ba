import type { FastifyInstance } from 'fastify';
import type { Services } from '../../serving/context.ts';
import { requestContext } from '../app.ts';

export function registerUserRoutes(scope: FastifyInstance, services: Services): void {
  // SiliconFlow's shape: New API / One API require code 20000 and decimal-string balances.
  scope.get('/user/info', async (request) => {
    const context = requestContext(request, services);
    const data = await services.gate.userInfo(context.principal);
    return { code: 20000, message: 'OK', status: true, data };
  });
}
