// CORS for browser clients on other origins (server.cors.origins; none by default). Preflights are
// answered before any key check (a browser sends no Authorization on a preflight); the request that
// follows is authenticated as any other. The admin API and /metrics never get CORS headers: they are
// for the operator's own tools, not for pages.
//
// Keyless mode stays protected (docs/RELIABILITY.md): a request without a key is still refused from
// any Origin that is not a local name or in server.allowedHosts, unless that exact origin is listed
// here; "*" grants CORS to keyed requests only (edge.ts, hostPolicy).
import cors from '@fastify/cors';
import type { FastifyBaseLogger, FastifyRequest } from 'fastify';
import type { RootApp } from './openapi.ts';
import type { InferaConfig } from '../config/schema.ts';

/** Response headers a page may read: the request id, retry hints and rate-limit state. */
const EXPOSED = [
  'x-request-id',
  'x-siliconcloud-trace-id',
  'retry-after',
  'retry-after-ms',
  'x-ratelimit-limit-requests',
  'x-ratelimit-remaining-requests',
  'x-ratelimit-reset-requests',
  'x-ratelimit-limit-tokens',
  'x-ratelimit-remaining-tokens',
  'x-ratelimit-reset-tokens',
];

const OPERATOR_ONLY = /^\/(admin|metrics)(\/|\?|$)/;

export async function registerCors<L extends FastifyBaseLogger>(app: RootApp<L>, settings: InferaConfig['server']['cors']): Promise<void> {
  if (settings.origins.length === 0) return;
  const api = {
    origin: settings.origins.includes('*') ? '*' : settings.origins,
    methods: ['GET', 'POST'],
    // null: the headers the preflight asks for are allowed (Authorization, Content-Type, and what SDKs
    // add, such as the openai SDK's x-stainless-*); the key check is the gate's job, not the browser's.
    allowedHeaders: null as unknown as string[],
    exposedHeaders: EXPOSED,
    maxAge: settings.maxAgeSeconds,
    strictPreflight: true,
  };
  await app.register(cors, {
    delegator: (request: FastifyRequest, callback: (error: Error | null, options: Record<string, unknown>) => void) =>
      callback(null, OPERATOR_ONLY.test(request.url) ? { origin: false } : api),
  });
}
