// /openapi.json (OpenAPI 3.1) and /docs (Swagger UI, served from the package: no CDN, works offline).
//
// The document is generated from the zod schemas the routes carry (fastify-type-provider-zod's
// transform feeds @fastify/swagger), and those are the very schema objects src/protocol validates
// with: a route's `schema.body` is the protocol's exported request schema, not a copy. Validation
// itself stays in src/protocol (parseBody), which names the offending field in OpenAI's error shape
// and keeps the serving functions callable without HTTP; so Fastify's own validation step is a
// pass-through here, and its serializer is plain JSON.stringify (the response schemas describe
// what the builders return, whose TypeScript types are inferred from them).
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyBaseLogger, FastifyInstance, RawReplyDefaultExpression, RawRequestDefaultExpression, RawServerDefault } from 'fastify';
import { jsonSchemaTransform } from 'fastify-type-provider-zod';
import { wireErrorBodySchema } from '../errors/render.ts';

/** The root Fastify instance, whatever its logger type (app.ts builds it with pino's). */
export type RootApp<L extends FastifyBaseLogger> = FastifyInstance<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, L>;

/** Every error status an API route may answer, each with the one error body. */
export const errorResponses = { '4xx': wireErrorBodySchema, '5xx': wireErrorBodySchema } as const;

/** Route schema for the OpenAPI document; `hidden` for the bare-path twins of the /v1 routes. */
export function routeSchema<T extends Record<string, unknown>>(schema: T, hidden = false): T & { hide?: boolean } {
  return hidden ? { ...schema, hide: true } : schema;
}

/**
 * Route schemas describe; src/protocol validates with the same objects (see the header). Any app that
 * registers Infera's routes needs this (app.ts through registerOpenApi; tests that mount routes alone).
 */
export function describeOnlySchemas<L extends FastifyBaseLogger>(app: RootApp<L>): void {
  app.setValidatorCompiler(passThrough);
  app.setSerializerCompiler(plainJson);
}

const passThrough = () => (data: unknown) => ({ value: data });
const plainJson = () => (data: unknown) => JSON.stringify(data);

/**
 * The same compilers as Fastify's factories (its `schemaController` option): given these, Fastify never
 * loads its defaults (@fastify/ajv-compiler with Ajv, and fast-json-stringify's compiler), ~30-60 ms of
 * CPU at start-up for code that describeOnlySchemas replaces anyway.
 */
export const describeOnlyCompilers = { compilersFactory: { buildValidator: () => passThrough, buildSerializer: () => plainJson } };

export async function registerOpenApi<L extends FastifyBaseLogger>(app: RootApp<L>, version: string): Promise<void> {
  describeOnlySchemas(app);
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Infera',
        version,
        description:
          'Self-hosted inference server speaking the SiliconFlow / OpenAI API. Every API route is also served without the /v1 prefix. Errors carry OpenAI\'s `error` object and SiliconFlow\'s `code`/`message`/`data`.',
      },
      components: {
        securitySchemes: {
          apiKey: { type: 'http', scheme: 'bearer', description: 'An API key (infera keys create), or none in keyless mode from this machine.' },
          adminKey: { type: 'http', scheme: 'bearer', description: 'server.adminKey (INFERA_ADMIN_KEY).' },
        },
      },
      security: [{ apiKey: [] }],
      tags: [
        { name: 'chat', description: 'Chat completions, streamed or not.' },
        { name: 'embeddings' },
        { name: 'rerank' },
        { name: 'images' },
        { name: 'models' },
        { name: 'account' },
        { name: 'operations', description: 'Probes and metrics, outside /v1.' },
        { name: 'admin', description: 'Keys, accounts and usage (server.adminKey).' },
      ],
    },
    transform: jsonSchemaTransform,
  });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
}

/** Swagger UI at /docs; its assets come from @fastify/swagger-ui's own folder. */
export async function registerDocs<L extends FastifyBaseLogger>(app: RootApp<L>): Promise<void> {
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    uiConfig: { deepLinking: true },
    theme: { title: 'Infera API' },
  });
}
