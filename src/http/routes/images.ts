import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { wireErrorBodySchema } from '../../errors/render.ts';
import { imageGenerationRequestSchema, imagesResponseSchema } from '../../protocol/images.ts';
import type { Services } from '../../serving/context.ts';
import { type CheckedImageRequest, IMAGE_FILES_PATH, imageStoreFor, serveImageFile, serveImageGeneration } from '../../serving/images.ts';
import { requestContext, sendResult } from '../app.ts';
import { checkedBefore } from '../quick.ts';
import { inferenceRouteOptions } from '../edge.ts';
import { errorResponses, routeSchema } from '../openapi.ts';

/** POST image generation (plus the singular path older Dify releases call), inside the API scope. */
export function registerImageRoutes(scope: FastifyInstance, services: Services): void {
  for (const path of ['/images/generations', '/image/generations']) {
    const schema = routeSchema(
      {
        tags: ['images'],
        summary: 'Text-to-image (and image-to-image with `image`); URLs expire after images.ttlSeconds.',
        body: imageGenerationRequestSchema,
        response: { 200: imagesResponseSchema, ...errorResponses },
      },
      // The singular path is an alias some clients call; the document names the canonical one.
      scope.prefix === '' || path === '/image/generations',
    );
    scope.post(path, { ...inferenceRouteOptions(services.config.server, 'images'), schema }, async (request, reply) => {
      // Never the request's Host header: a client (or a rebinding page) would choose the links we hand out.
      const result = await serveImageGeneration(services, requestContext(request, services), request.body, { origin: request.server.publicOrigin() }, checkedBefore<CheckedImageRequest>(request));
      return sendResult(request, reply, result);
    });
  }
}

/**
 * GET for stored images, registered at the root, outside the authenticated scope: apps and browsers
 * fetch the links without an API key (the unguessable, expiring name is the credential).
 * Opens the store at startup so files that expired while the server was down are swept now.
 */
export function registerImageFileRoutes(app: FastifyInstance, services: Services): void {
  imageStoreFor(services).catch((error) => services.logger.error({ err: error }, 'image store could not be opened'));
  const schema = {
    tags: ['images'],
    summary: 'A generated image, by the unguessable name in its URL; no key needed. 404 once expired.',
    security: [],
    response: { 200: { description: 'The image (PNG, JPEG or WebP, as generated).', content: { 'image/*': { schema: z.string() } } }, '4xx': wireErrorBodySchema },
  };
  app.get(`${IMAGE_FILES_PATH}/:name`, { schema }, async (request, reply) => {
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
