import type { FastifyInstance } from 'fastify';
import type { Services } from '../../serving/context.ts';
import { IMAGE_FILES_PATH, imageStoreFor, serveImageFile, serveImageGeneration } from '../../serving/images.ts';
import { requestContext, sendResult } from '../app.ts';
import { inferenceRouteOptions } from '../edge.ts';

/** POST image generation (plus the singular path older Dify releases call), inside the API scope. */
export function registerImageRoutes(scope: FastifyInstance, services: Services): void {
  for (const path of ['/images/generations', '/image/generations'])
    scope.post(path, inferenceRouteOptions(services.config.server, 'images'), async (request, reply) => {
      // Never the request's Host header: a client (or a rebinding page) would choose the links we hand out.
      const result = await serveImageGeneration(services, requestContext(request, services), request.body, { origin: request.server.publicOrigin() });
      return sendResult(request, reply, result);
    });
}

/**
 * GET for stored images, registered at the root, outside the authenticated scope: apps and browsers
 * fetch the links without an API key (the unguessable, expiring name is the credential).
 * Opens the store at startup so files that expired while the server was down are swept now.
 */
export function registerImageFileRoutes(app: FastifyInstance, services: Services): void {
  imageStoreFor(services).catch((error) => services.logger.error({ err: error }, 'image store could not be opened'));
  app.get(`${IMAGE_FILES_PATH}/:name`, async (request, reply) => {
    const { name } = request.params as { name: string };
    const file = await serveImageFile(services, name);
    const maxAge = Math.max(0, file.expiresAt - Math.floor(Date.now() / 1000));
    return reply
      .header('content-type', file.mediaType)
      .header('cache-control', `private, max-age=${maxAge}`)
      .header('x-content-type-options', 'nosniff')
      .send(file.data);
  });
}
