// Route table for the API scope (mounted under /v1 and bare). Each file is thin: parse nothing,
// call one serving function, write its result.
import type { FastifyInstance } from 'fastify';
import type { Services } from '../../serving/context.ts';
import { registerChatRoutes } from './chat.ts';
import { registerCompletionRoutes } from './completions.ts';
import { registerEmbeddingRoutes } from './embeddings.ts';
import { registerImageRoutes } from './images.ts';
import { registerModelRoutes } from './models.ts';
import { registerRerankRoutes } from './rerank.ts';
import { registerUserRoutes } from './user.ts';

export function registerApiRoutes(scope: FastifyInstance, services: Services): void {
  registerChatRoutes(scope, services);
  registerCompletionRoutes(scope, services);
  registerEmbeddingRoutes(scope, services);
  registerRerankRoutes(scope, services);
  registerImageRoutes(scope, services);
  registerModelRoutes(scope, services);
  registerUserRoutes(scope, services);
}
