// What operators see of the HTTP layer: the access log line and the HTTP metrics of every request
// (written when its response is over, or when its client left), and the operations routes: /health
// (alive), /ready (can serve) and /metrics (Prometheus). docs/OBSERVABILITY.md describes each.
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify';
import type { RootApp } from './openapi.ts';
import { z } from 'zod';
import { InferaError } from '../errors/index.ts';
import { wireErrorBodySchema } from '../errors/render.ts';
import { flatLineWriter, redactUrl } from '../observability/logger.ts';
import type { HttpTally } from '../observability/metrics.ts';
import type { Tracing } from '../observability/tracing.ts';
import type { Principal } from '../platform/gate.ts';
import type { Services } from '../serving/context.ts';
import type { hostPolicy } from './edge.ts';
import { adminKeyDigest, bearerMatches } from './routes/admin.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** The error code the answer carried (`error.code`), for the access log and the error metrics. */
    errorCode?: string;
  }
}

/** A logged body (`logging.bodies`) is cut here: a base64 image must not become a 16 MB log line. */
const MAX_LOGGED_BODY = 64 * 1024;

/**
 * The configured model a request named (canonical id), or "". Only ids the registry knows become a
 * label or a log field, so a client sending random model names cannot grow the metrics without bound.
 */
export function modelOf(request: FastifyRequest, services: Services): string {
  const named = namedModel(request.body);
  if (named === undefined && request.routeUrl?.endsWith('/models/*')) return modelLabel((request.params as { '*'?: string })['*'], services);
  return modelLabel(named, services);
}

/** The body's `model` field, if it has one. */
export function namedModel(body: unknown): unknown {
  return typeof body === 'object' && body !== null ? (body as { model?: unknown }).model : undefined;
}

/** A named model's label: its canonical id when the registry knows it, else "". */
export function modelLabel(named: unknown, services: Services): string {
  return typeof named === 'string' ? (services.registry.find(named)?.config.id ?? '') : '';
}

interface AccessLine {
  id: string;
  method: string;
  url: string;
  status: number;
  ms: number;
  key?: string;
  account?: string;
  model?: string;
  code?: string;
  body?: string;
}

/** The access line's fields, in the order record() sets them (the line's format). */
const ACCESS_KEYS = ['id', 'method', 'url', 'status', 'ms', 'key', 'account', 'model', 'code', 'body'] as const;

function loggedBody(body: unknown): string | undefined {
  if (body === undefined) return undefined;
  const text = JSON.stringify(body);
  return text.length > MAX_LOGGED_BODY ? `${text.slice(0, MAX_LOGGED_BODY)}… (${text.length} characters)` : text;
}

/** What observe() records of a request answered outside Fastify (quick.ts): the same fields, read off the raw request. */
export interface PlainObservation {
  id: string;
  method: string;
  url: string;
  /** The route's pattern (the metrics' label); undefined: no route. */
  route: string | undefined;
  status: number;
  ms: number;
  principal: Principal | undefined;
  model: string;
  code: string | undefined;
  /** The metrics row of these labels (metrics.httpRow), when the caller keeps it. */
  row: HttpTally | undefined;
  /** The parsed body (a POST quick.ts refused), logged with logging.bodies as observe() logs it. */
  body?: unknown;
}

/**
 * Called once per request when its response closes: one access log line (request id, key id, model,
 * status, time; the body only with logging.bodies) and the HTTP metrics. A response that closed before
 * it finished is recorded as 499 (the client left), as the ledger records it. `plain` records a
 * request answered outside Fastify (quick.ts), with the body it read, if any.
 */
export function requestObserver(services: Services, tracing?: Tracing) {
  const { logger, metrics } = services;
  const bodies = services.config.logging.bodies;
  const accessLine = flatLineWriter<AccessLine>(logger, 'request', ACCESS_KEYS);
  const observe = (request: FastifyRequest, reply: FastifyReply): void => {
    try {
      const status = reply.raw.writableFinished ? reply.raw.statusCode : 499;
      tracing?.finish(request, reply, status);
      write(request.id, request.method, request.url, request.routeUrl, status, reply.elapsedTime, request.principal, modelOf(request, services), request.errorCode, request.body);
    } catch (error) {
      // Runs in the response's close listener: a failure here must not stop what follows it there.
      logger.warn({ err: error, id: request.id }, 'could not record the request in the access log and metrics');
    }
  };
  const plain = (o: PlainObservation): void => {
    try {
      if (o.row) {
        metrics.countHttp(o.row, o.ms / 1000);
        line(o.id, o.method, o.url, o.status, o.ms, o.principal, o.model, o.code, o.body);
      } else write(o.id, o.method, o.url, o.route, o.status, o.ms, o.principal, o.model, o.code, o.body);
    } catch (error) {
      logger.warn({ err: error, id: o.id }, 'could not record the request in the access log and metrics');
    }
  };
  /**
   * The record of an answer quick.ts sends over and over (the list for one key, a 401, a 404): its
   * access line formatted but for the id and the time (flatLineWriter's prepare), its metrics row
   * kept. Called with the request's id and ms once its response finished; `plain` takes the rest
   * (a client that left, a POST's body).
   */
  const prepare = (o: Omit<PlainObservation, 'id' | 'ms' | 'body'> & { row: HttpTally }): ((id: string, ms: number) => void) => {
    const fixed: AccessLine = { id: '', method: o.method, url: redactUrl(o.url), status: o.status, ms: 0 };
    if (o.principal) {
      fixed.key = o.principal.keyId;
      fixed.account = o.principal.accountId;
    }
    if (o.model) fixed.model = o.model;
    if (o.code) fixed.code = o.code;
    const fast = accessLine.prepare(fixed, 'id', 'ms');
    const { row } = o;
    return (id, ms) => {
      try {
        metrics.countHttp(row, ms / 1000);
        if (fast) fast(id, Math.round(ms));
        else line(id, o.method, o.url, o.status, ms, o.principal, o.model, o.code, undefined);
      } catch (error) {
        logger.warn({ err: error, id }, 'could not record the request in the access log and metrics');
      }
    };
  };
  return { observe, plain, prepare };

  function write(
    id: string,
    method: string,
    url: string,
    route: string | undefined,
    status: number,
    ms: number,
    principal: Principal | undefined,
    model: string,
    code: string | undefined,
    body: unknown,
  ): void {
    metrics.http({ route: route ?? 'unmatched', method, status, model, seconds: ms / 1000, code });
    line(id, method, url, status, ms, principal, model, code, body);
  }

  function line(id: string, method: string, url: string, status: number, ms: number, principal: Principal | undefined, model: string, code: string | undefined, body: unknown): void {
    // Built field by field (the fields in this order are the line's format): spreads of optional
    // fields cost an object each on every request.
    const line: AccessLine = { id, method, url: redactUrl(url), status, ms: Math.round(ms) };
    if (principal) {
      line.key = principal.keyId;
      line.account = principal.accountId;
    }
    if (model) line.model = model;
    if (code) line.code = code;
    if (bodies) line.body = loggedBody(body);
    accessLine(line);
  }
}

export const healthSchema = z.object({ status: z.literal('ok') });

const check = z.enum(['ok', 'failing']);
export const readinessSchema = z.object({
  status: z.enum(['ready', 'not_ready']),
  checks: z.object({
    models: z.object({
      status: check,
      failed: z.number().int().describe('Configured models whose last load failed.'),
      loading: z.number().int().describe('Preloaded models (lifecycle.preload, eager) whose first load is not over yet.'),
    }),
    deployments: z
      .object({
        status: check,
        models: z.number().int().describe('Routed model ids: served by several deployments, or by one upstream alone (routing).'),
        unavailable: z.number().int().describe('Routed models with no healthy deployment (every one unhealthy or ejected).'),
      })
      .optional()
      .describe('Routed models: each has at least one healthy deployment. GET /admin/deployments has the details.'),
    store: z.object({ status: check, kind: z.string() }).optional().describe('The key, balance and ledger store, as of its last heartbeat.'),
    counters: z
      .object({ status: check, kind: z.string(), failure: z.enum(['open', 'closed']) })
      .optional()
      .describe('The rate-limit counter store, as of its last use; failing with failure "open" still serves (without limits).'),
  }),
});
type Readiness = z.infer<typeof readinessSchema>;

/**
 * Can this server serve? No configured model failed to load, every preloaded model has loaded once, every
 * routed model (several deployments, or an upstream alone) has a healthy one, the store
 * answered its last heartbeat, and the counter store answers (or fails open). Reads state only:
 * cheap enough for a probe every second.
 */
export function readiness(services: Services): Readiness {
  const routed = services.registry.routing();
  // A routed model is as ready as its deployments (below), not as its first entry.
  const routedIds = new Set(routed.map((model) => model.id));
  const entries = services.registry.entries().filter((entry) => !routedIds.has(entry.config.id));
  const failed = entries.filter((entry) => entry.state === 'failed').length;
  // A preloaded model counts until its first load is over: unloading later by its keep-alive is not a fault.
  const loading = entries.filter((entry) => entry.preload && entry.loadedAt === undefined && entry.state !== 'failed').length;
  const checks: Readiness['checks'] = { models: { status: failed || loading ? 'failing' : 'ok', failed, loading } };
  if (routed.length) {
    // Counts only: /ready is open, and model ids are for keyed callers (GET /admin/deployments).
    const unavailable = routed.filter((model) => !model.healthy).length;
    checks.deployments = { status: unavailable ? 'failing' : 'ok', models: routed.length, unavailable };
  }
  const health = services.gate.health?.();
  if (health) {
    checks.store = { status: health.store.up ? 'ok' : 'failing', kind: health.store.kind };
    checks.counters = { status: health.counters.up ? 'ok' : 'failing', kind: health.counters.kind, failure: health.counters.failure };
  }
  const ready =
    checks.models.status === 'ok' &&
    checks.deployments?.status !== 'failing' &&
    checks.store?.status !== 'failing' && !(checks.counters?.status === 'failing' && checks.counters.failure === 'closed');
  return { status: ready ? 'ready' : 'not_ready', checks };
}

const operations = { tags: ['operations'], security: [] };

/** /health, /ready and /metrics, at the root (outside /v1: probes and scrapers carry no API key). */
export function registerOperationRoutes<L extends FastifyBaseLogger>(app: RootApp<L>, services: Services, hosts: ReturnType<typeof hostPolicy>): void {
  app.get(
    '/health',
    { schema: { ...operations, summary: 'Alive: the process answers HTTP.', response: { 200: healthSchema } } },
    async () => ({ status: 'ok' as const }),
  );
  app.get(
    '/ready',
    {
      schema: {
        ...operations,
        summary: 'Ready to serve: models loadable, stores reachable. 503 with the same body when not.',
        response: { 200: readinessSchema, 503: readinessSchema },
      },
    },
    async (_request, reply) => {
      const state = readiness(services);
      return reply.status(state.status === 'ready' ? 200 : 503).send(state);
    },
  );

  const { metrics: settings, adminKey } = services.config.server;
  if (!settings.enabled) return;
  const expected = adminKeyDigest(adminKey);
  app.get(
    '/metrics',
    {
      schema: {
        tags: ['operations'],
        summary: 'Prometheus metrics (text exposition format). Needs the admin key unless server.metrics.public.',
        security: [{ adminKey: [] }],
        response: { 200: { content: { 'text/plain': { schema: z.string() } } }, '4xx': wireErrorBodySchema },
      },
    },
    async (request, reply) => {
      await authorizeMetrics(request);
      const { contentType, body } = await services.metrics.text();
      return reply.type(contentType).send(body);
    },
  );

  /**
   * Metrics show every tenant's traffic, so an API key is not enough: the admin key, or an open
   * (`public`) endpoint, or — with neither — keyless mode from this machine, as the API itself.
   */
  async function authorizeMetrics(request: FastifyRequest): Promise<void> {
    if (settings.public) return;
    if (expected) {
      if (bearerMatches(expected, request)) return;
      throw new InferaError({
        status: 401,
        code: 'invalid_admin_key',
        message: 'GET /metrics needs "Authorization: Bearer <server.adminKey>" (or server.metrics.public: true).',
        headers: { 'www-authenticate': 'Bearer' },
      });
    }
    const principal = await services.gate.authenticate(undefined, request.socket.remoteAddress ?? '').catch(() => undefined);
    const refused =
      principal?.keyId === 'anonymous'
        ? hosts.check(request, true)
        : new InferaError({
            status: 403,
            code: 'metrics_forbidden',
            message: 'GET /metrics is open only to this machine while the server has no API keys: set server.adminKey and scrape with it, or set server.metrics.public: true.',
          });
    if (refused) throw refused;
  }
}
