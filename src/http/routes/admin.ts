// /admin/*: keys, accounts and usage over HTTP, guarded by server.adminKey (a separate secret from the
// API keys). Mounted at the root, outside /v1, so API keys never reach it. Thin over PlatformAdmin.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { badRequest, InferaError } from '../../errors/index.ts';
import { wireErrorBodySchema } from '../../errors/render.ts';
import type { PlatformAdmin } from '../../platform/admin.ts';
import { parseSince } from '../../platform/admin.ts';
import { limitsSchema } from '../../platform/config.ts';
import type { Gate } from '../../platform/gate.ts';
import { parseAmount } from '../../platform/pricing.ts';
import type { ModelEntry } from '../../registry/registry.ts';
import type { Services } from '../../serving/context.ts';
import { bodyLimitFor } from '../edge.ts';
import { pullBody, registerPullRoute } from './admin-pull.ts';

const digest = (secret: string) => createHash('sha256').update(secret).digest();

/** The request carries `Authorization: Bearer <adminKey>` (compared in constant time, as digests). */
export function bearerMatches(expected: Buffer, request: FastifyRequest): boolean {
  const match = /^Bearer\s+(.+)$/i.exec(request.headers.authorization?.trim() ?? '');
  return match !== null && timingSafeEqual(digest(match[1]!.trim()), expected);
}

export const adminKeyDigest = (adminKey: string | undefined): Buffer | undefined => (adminKey ? digest(adminKey) : undefined);

const hasAdmin = (gate: Gate): gate is Gate & { admin: PlatformAdmin } =>
  typeof (gate as { admin?: unknown }).admin === 'object' && (gate as { admin?: unknown }).admin !== null;

/** zod → 400 naming the field, like every other request error. */
function parse<T>(schema: z.ZodType<T>, value: unknown): T {
  const result = schema.safeParse(value ?? {});
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const param = issue.path.join('.') || null;
  throw badRequest(`${param ?? 'body'}: ${issue.message}`, param);
}

const reloadBody = z.object({ model: z.string().min(1) }).strict();

const createKeyBody = z
  .object({
    name: z.string().min(1).max(100),
    account: z.string().optional(),
    models: z.array(z.string().min(1)).optional(),
    limits: limitsSchema.optional(),
    /** ISO date, epoch ms, or a duration from now ("30d"). */
    expires_at: z.union([z.string(), z.number()]).optional(),
  })
  .strict();

const createAccountBody = z.object({ id: z.string().min(1), name: z.string().optional() }).strict();
const topUpBody = z.object({ amount: z.union([z.string(), z.number()]) }).strict();
const usageQuery = z
  .object({
    by: z.enum(['model', 'key', 'account', 'endpoint', 'day']).default('model'),
    since: z.string().default('24h'),
    until: z.string().optional(),
    account: z.string().optional(),
  })
  .strict();

function expiresAt(value: string | number | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'number') return value;
  const relative = /^(\d+)\s*(m|h|d|w)$/.exec(value.trim());
  if (relative)
    return Date.now() + Number(relative[1]) * { m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[relative[2] as 'm'];
  const date = Date.parse(value);
  if (Number.isNaN(date)) throw badRequest(`expires_at "${value}" is neither a date nor a duration like 30d.`, 'expires_at');
  return date;
}

function sinceParam(value: string, param: string): number {
  try {
    return parseSince(value);
  } catch (error) {
    throw badRequest((error as Error).message, param);
  }
}

/** OpenAPI metadata: the bodies and queries are the schemas the handlers parse with (parse() above). */
const doc = (summary: string, schemas: Record<string, z.ZodType> = {}) => ({
  tags: ['admin'],
  summary,
  security: [{ adminKey: [] }],
  ...schemas,
  response: { '4xx': wireErrorBodySchema },
});

/** Registers /admin/* on the root app (not inside the /v1 scope). */
export async function registerAdminRoutes(app: FastifyInstance, services: Services): Promise<void> {
  const adminKey = services.config.server.adminKey;
  const expected = adminKeyDigest(adminKey);

  const authorize = async (request: FastifyRequest) => {
    if (!expected)
      throw new InferaError({ status: 403, code: 'admin_disabled', message: 'The admin API is disabled: set server.adminKey (or INFERA_ADMIN_KEY).' });
    if (!bearerMatches(expected, request))
      throw new InferaError({
        status: 401,
        code: 'invalid_admin_key',
        message: 'The admin API needs "Authorization: Bearer <server.adminKey>".',
        headers: { 'www-authenticate': 'Bearer' },
      });
    if (!hasAdmin(services.gate))
      throw new InferaError({ status: 501, code: 'no_key_store', message: 'This server runs without the platform key store.' });
    return services.gate.admin;
  };

  const bodyLimit = bodyLimitFor(services.config.server, 'admin');
  await app.register(
    async (scope) => {
      scope.addHook('onRoute', (route) => {
        route.bodyLimit ??= bodyLimit;
      });
      // Before the body is read, like the API routes; the handlers' own authorize() calls stay as the typed way to the admin.
      scope.addHook('onRequest', async (request) => {
        await authorize(request);
      });
      scope.get('/keys', { schema: doc('List API keys (never their secrets).', { querystring: z.object({ account: z.string().optional() }) }) }, async (request) => {
        const admin = await authorize(request);
        const { account } = request.query as { account?: string };
        return { object: 'list', data: await admin.listKeys(account) };
      });

      scope.post('/keys', { schema: doc('Create an API key; the answer holds its secret, shown this once.', { body: createKeyBody }) }, async (request, reply) => {
        const admin = await authorize(request);
        const body = parse(createKeyBody, request.body);
        const { key, secret } = await admin.createKey({
          name: body.name,
          accountId: body.account,
          models: body.models,
          limits: body.limits,
          expiresAt: expiresAt(body.expires_at),
        });
        return reply.status(201).send({ ...key, secret });
      });

      const revoke = async (request: FastifyRequest) => {
        const admin = await authorize(request);
        const { id } = request.params as { id: string };
        await admin.revokeKey(id);
        return { id, revoked: true };
      };
      scope.delete('/keys/:id', { schema: doc('Revoke a key.') }, revoke);
      scope.post('/keys/:id/revoke', { schema: doc('Revoke a key (for clients that cannot send DELETE).') }, revoke);

      scope.get('/accounts', { schema: doc('List accounts and their balances.') }, async (request) => {
        const admin = await authorize(request);
        return { object: 'list', data: await admin.listAccounts() };
      });

      scope.post('/accounts', { schema: doc('Create an account.', { body: createAccountBody }) }, async (request, reply) => {
        const admin = await authorize(request);
        const body = parse(createAccountBody, request.body);
        return reply.status(201).send(await admin.createAccount(body.id, body.name));
      });

      scope.post('/accounts/:id/topup', { schema: doc('Add balance (a decimal string, or a number).', { body: topUpBody }) }, async (request) => {
        const admin = await authorize(request);
        const { id } = request.params as { id: string };
        const { amount } = parse(topUpBody, request.body);
        let micro: number;
        try {
          micro = parseAmount(String(amount));
        } catch (error) {
          throw badRequest((error as Error).message, 'amount');
        }
        return admin.topUp(id, micro);
      });

      const modelState = (entry: ModelEntry, load: Awaited<ReturnType<typeof services.metrics.load>>) => ({
        id: entry.config.id,
        aliases: entry.config.aliases,
        type: entry.config.type,
        engine: entry.config.engine,
        eager: entry.config.eager,
        preload: entry.preload,
        state: entry.state,
        progress: entry.progress,
        ...(entry.unloading ? { unloading: true } : {}),
        ...(entry.error ? { error: entry.error } : {}),
        ...(entry.state === 'failed' && entry.retryAt !== undefined ? { retryAt: new Date(entry.retryAt).toISOString() } : {}),
        ...(entry.loadedAt !== undefined ? { loadedAt: new Date(entry.loadedAt).toISOString() } : {}),
        // The supervised engine process serving it, and how often one died under it (docs/RELIABILITY.md).
        ...(entry.pid !== undefined ? { pid: entry.pid } : {}),
        crashes: entry.crashes ?? 0,
        // The lifecycle (docs/MODELS.md): keep-alive in seconds (-1: never), bytes as the memory budget counts them.
        keepAlive: entry.keepAliveMs === Number.POSITIVE_INFINITY ? -1 : entry.keepAliveMs / 1000,
        ...(entry.lastUsed !== undefined ? { lastUsed: new Date(entry.lastUsed).toISOString() } : {}),
        ...(entry.expiresAt !== undefined ? { expiresAt: new Date(entry.expiresAt).toISOString() } : {}),
        ...(entry.memory !== undefined ? { memory: entry.memory } : {}),
        leases: entry.leases,
        inFlight: load.get(entry.config.id)?.inFlight ?? 0,
        queued: load.get(entry.config.id)?.queued ?? 0,
        // Routed models: the state of each deployment (the fields above are the first entry's).
        ...(routed(entry.config.id) ? { deployments: routed(entry.config.id)!.deployments } : {}),
      });
      const routed = (id: string) => services.registry.routing().find((model) => model.id === id);
      scope.get('/models', { schema: doc('Every configured model: load state and progress, the last load error, its engine process and crashes, keep-alive, last use, expiry and memory, requests in flight and queued; and the lifecycle limits.') }, async (request) => {
        await authorize(request);
        const load = await services.metrics.load();
        return { object: 'list', data: services.registry.entries().map((entry) => modelState(entry, load)), lifecycle: services.registry.residency() };
      });
      scope.post('/models/unload', { schema: doc('Unload an idle model now (its engine process ends); 409 while requests use it.', { body: reloadBody }) }, async (request) => {
        await authorize(request);
        const { model } = parse(reloadBody, request.body);
        const entry = await services.registry.unloadModel(model);
        return modelState(entry, await services.metrics.load());
      });
      scope.get(
        '/deployments',
        { schema: doc('Models served by several deployments (routing): each deployment\'s health, circuit breaker (ejected until), requests in flight, consecutive failures and totals.') },
        async (request) => {
          await authorize(request);
          return { object: 'list', data: services.registry.routing() };
        },
      );
      // Model ids hold slashes ("Qwen/QwQ-32B"), so the id travels in the body, not the path.
      scope.post('/models/reload', { schema: doc('Load a model now: a failed one forgets its backoff and tries again (answers when the attempt is over).', { body: reloadBody }) }, async (request) => {
        await authorize(request);
        const { model } = parse(reloadBody, request.body);
        const entry = await services.registry.reload(model);
        return modelState(entry, await services.metrics.load());
      });

      registerPullRoute(scope, services, parse, doc('Pull a model (or a preset set) into storage.modelsDir; progress as server-sent events: resolved, progress, done, then end (or error with the CLI\'s code and message).', { body: pullBody }));

      scope.get('/usage', { schema: doc('Usage from the ledger, grouped.', { querystring: usageQuery }) }, async (request) => {
        const admin = await authorize(request);
        const query = parse(usageQuery, request.query);
        const data = await admin.usage({
          by: query.by,
          since: sinceParam(query.since, 'since'),
          until: query.until === undefined ? undefined : sinceParam(query.until, 'until'),
          accountId: query.account,
        });
        return { object: 'list', by: query.by, data };
      });
    },
    { prefix: '/admin' },
  );
}
