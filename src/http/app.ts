// The HTTP layer: the only folder that imports Fastify. Routing, request ids, auth, body limits,
// error rendering and SSE writing live here; everything else is plain functions in src/serving.
import Fastify, { type FastifyReply, type FastifyRequest, LogController } from 'fastify';
import { randomFillSync } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import { errorFields, InferaError, isAbortError } from '../errors/index.ts';
import { errorHeaders, errorJson, sseErrorFrame, toInferaError } from '../errors/render.ts';
import type { Logger } from '../observability/logger.ts';
import { startTracing } from '../observability/tracing.ts';
import type { Endpoint, Principal } from '../platform/gate.ts';
import type { RequestContext, ServeResult, Services } from '../serving/context.ts';
import type { StopSignal } from '../spec/chat.ts';
import { registerAdminRoutes } from './routes/admin.ts';
import { registerApiRoutes } from './routes/index.ts';
import { registerImageFileRoutes } from './routes/images.ts';
import { registerCors } from './cors.ts';
import { modelLabel, modelOf, namedModel, registerOperationRoutes, requestObserver } from './observe.ts';
import { describeOnlyCompilers, registerDocs, registerOpenApi } from './openapi.ts';
import { registerPlayground } from './playground.ts';
import { parsedBefore, type QuickPost, quickAnswers } from './quick.ts';
import { checkChatRequest, serveChatCompletion } from '../serving/chat.ts';
import { checkCompletionRequest, serveCompletion } from '../serving/completions.ts';
import { checkEmbeddingsRequest, serveEmbeddings } from '../serving/embeddings.ts';
import { checkImageGenerationRequest } from '../serving/images.ts';
import { checkRerankRequest, serveRerank } from '../serving/rerank.ts';
import {
  capConnections,
  clientErrorHandler,
  closeUnreadBody,
  edgeEvents,
  hostPolicy,
  inferenceRouteOptions,
  publicOrigin,
  routeTimedOut,
  bodyLimitFor,
  serverOptions,
  type TimedRoute,
  unsupportedContentType,
} from './edge.ts';

declare module 'fastify' {
  interface FastifyRequest {
    inferaId: string;
    principal?: Principal;
    /**
     * Aborted when the client leaves, at the route's time limit, or at the drain deadline (stopRequest).
     * Made on first read (an AbortController costs ~1 µs and most requests, errors included, never
     * need one): one read after the stop gets it already aborted with the stop's reason.
     */
    readonly abort: AbortController;
    /** The `abort` getter's controller once made (see abortSlot's note at the getter). */
    abortSlot?: AbortController;
    /**
     * Why the request's work was stopped, set with the abort (stopRequest): the server's reason, or
     * "client" when the client left. Read instead of `abort.signal`: Node creates a signal on first
     * access (~3 µs), and most requests, errors included, never need one.
     */
    stopped?: InferaError | 'client';
    /**
     * The matched route's pattern ("/v1/models/*"; undefined for no route), read once in onRequest:
     * fastify's `routeOptions` getter builds an object of eleven fields on every read, and the auth
     * hook, the access log and the metrics each want the pattern.
     */
    routeUrl?: string;
    /**
     * The route's time limit and when it runs out (performance.now()), set on arrival; its timer is
     * armed only when the work starts (requestContext): a request refused before any work (a bad body,
     * an unknown model, a wrong key) never pays for a timer it cannot need.
     */
    routeLimit?: { ms: number; setting: string };
    routeDeadline: number;
    routeTimer?: NodeJS.Timeout;
  }
  interface FastifyReply {
    /**
     * Answers a refusal known before any work (a bad body, an unknown model) as the error handler would,
     * without throwing it: a throw out of an async handler costs a rejected promise, Node's rejection
     * tracking and Fastify's error path (~10 µs of CPU per 400). With tracing on it throws, so that
     * @fastify/otel's onError hook records the error on the span as before.
     */
    refuse(error: InferaError): FastifyReply;
  }
  interface FastifyInstance {
    /** Requests whose response has not ended yet (shutdown waits for them). */
    inFlight(): number;
    /** Shutdown past its drain deadline: abort every request still running with `reason`. */
    abortInFlight(reason: InferaError): number;
    /** Base URL of the links this server hands out (server.publicUrl, else the listen address). */
    publicOrigin(): string;
  }
}

const TRACE_HEADERS = ['x-request-id', 'x-siliconcloud-trace-id'] as const;
const REPLY = Symbol('infera.reply');
type RawWithReply = ServerResponse & { [REPLY]?: FastifyReply };

/** src/http/app.ts and dist/http/app.js both sit two folders below the package root. */
const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

export type InferaApp = Awaited<ReturnType<typeof buildApp>>;

export async function buildApp(services: Services) {
  const { config, logger } = services;
  const events = edgeEvents(logger, (reason) => services.metrics.edgeCut(reason));
  // Set once the routes are in (below): the requests quick.ts answers never reach Fastify.
  let quick: ((req: IncomingMessage, res: ServerResponse) => boolean) | undefined;
  let fastifyHandler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined;
  const edge = serverOptions(config.server);
  const app = Fastify({
    loggerInstance: logger,
    // Infera writes its own access log (observe.ts); fastify 5.12 takes this through a LogController.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.server.bodyLimit,
    ...edge,
    clientErrorHandler: clientErrorHandler(config.server, events),
    genReqId: requestIdFor,
    // Fastify's own HTTP/1 server (lib/server.js, getServerInstance) with quick.ts's look first.
    serverFactory: (handler) => {
      fastifyHandler = handler;
      const server = createServer(edge.http, (req, res) => {
        if (quick === undefined || !quick(req, res)) handler(req, res);
      });
      server.keepAliveTimeout = edge.keepAliveTimeout;
      server.requestTimeout = edge.requestTimeout;
      server.setTimeout(edge.connectionTimeout);
      if (edge.maxRequestsPerSocket > 0) server.maxRequestsPerSocket = edge.maxRequestsPerSocket;
      return server;
    },
    childLoggerFactory: (logger, bindings, options) => new RequestLogger(logger as Logger, bindings, options) as unknown as typeof logger,
    routerOptions: { ignoreTrailingSlash: true, ignoreDuplicateSlashes: true },
    // On close, drop idle keep-alive sockets only: responses and streams in flight finish (the drain);
    // src/main.ts aborts what is left at the drain deadline.
    forceCloseConnections: 'idle',
    // Fastify types its compiler factories as Ajv's; these are the pass-throughs describeOnlySchemas sets.
    schemaController: describeOnlyCompilers as never,
  });

  capConnections(app.server, config.server, events);
  // Before any route: the traces and the document cover the routes as they are added.
  const tracing = await startTracing(config.tracing, logger);
  if (tracing) {
    await app.register(tracing.plugin);
    app.addHook('onClose', () => tracing.close());
    // Once the key and the body are known: who asked, for which model, under which request id.
    app.addHook('preHandler', async (request) => {
      const model = modelOf(request, services);
      tracing.annotate(request, {
        'infera.request_id': request.id,
        ...(request.principal ? { 'infera.key_id': request.principal.keyId } : {}),
        ...(model ? { 'infera.model': model } : {}),
      });
    });
  }
  await registerOpenApi(app, VERSION);
  await registerCors(app, config.server.cors);
  const { observe, plain, prepare } = requestObserver(services, tracing);
  app.decorate('publicOrigin', () => publicOrigin(config.server, app.server.address()));
  const hosts = hostPolicy(config.server);
  const admit = admitPrincipal(services, hosts, !tracing);

  // Per app, not per module: two servers in one process drain independently.
  const running = new Set<Stoppable>();
  app.decorate('inFlight', () => running.size);
  app.decorate('abortInFlight', (reason: InferaError) => {
    const count = running.size;
    for (const request of running) stopRequest(request, reason);
    return count;
  });

  // JSON only: unsupportedContentType (an onRequest hook) refuses every other type before the body is read.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    // A body quick.ts parsed already (its bytes were read again here, for the limits and the length).
    const before = parsedBefore(request);
    if (before) return done(null, before.body);
    const text = body as string;
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      // An empty (or all-blank) body is no body, not bad JSON; looked at only once parsing failed.
      if (text.trim() === '') return done(null, undefined);
      return done(new InferaError({ status: 400, code: 'invalid_json', message: `Request body is not valid JSON: ${(error as Error).message}` }), undefined);
    }
    done(null, parsed);
  });

  app.decorateRequest('inferaId', '');
  app.decorateRequest('principal', undefined);
  // The controller lives on the request itself, not in a WeakMap keyed by it: V8's scavenger keeps a
  // WeakMap's values alive while the entry is there, and an entry whose key died goes only at the next
  // GC, so every finished request's controller, its signal and the listeners' closures (the upstream
  // call's whole scope) survived a scavenge and ~2 KB a request was promoted at one connection.
  app.decorateRequest('abortSlot', undefined);
  app.decorateRequest('abort', {
    getter(this: FastifyRequest) {
      return abortControllerOf(this);
    },
  });
  app.decorateRequest('stopped', undefined);
  app.decorateRequest('routeUrl', undefined);
  app.decorateRequest('routeLimit', undefined);
  app.decorateRequest('routeDeadline', 0);
  app.decorateRequest('routeTimer', undefined);

  /**
   * A response closed before it finished means the client left: cancel the work. One function for
   * every response (the reply on the response, not in a closure): a closure and once()'s wrapper per
   * request cost ~1 µs and their garbage.
   */
  function responseClosed(this: RawWithReply): void {
    const reply = this[REPLY]!;
    const request = reply.request;
    if (request.routeTimer) clearTimeout(request.routeTimer);
    running.delete(request);
    if (!this.writableFinished) stopRequest(request, 'client');
    observe(request, reply);
    // Draining: once the last response is out, idle keep-alive sockets are all that keep close() waiting.
    if (running.size === 0 && !app.server.listening) app.server.closeIdleConnections();
  }

  // Callback style, not async: an async hook costs a promise and its resolution per request, and
  // nothing here waits.
  app.addHook('onRequest', (request, reply, done) => {
    request.inferaId = request.id;
    for (const header of TRACE_HEADERS) reply.header(header, request.id);
    running.add(request);
    // The route's time limit, counted from arrival: past it the work is stopped like a shutdown stops it
    // (504, or an error frame and [DONE]), and the ledger row settles with status 504 (armRouteTimer).
    const config = request.routeOptions.config as (typeof request.routeOptions.config & { url?: string }) | undefined;
    request.routeUrl = config?.url;
    const limit = config?.routeTimeout;
    if (limit) {
      request.routeLimit = limit;
      request.routeDeadline = performance.now() + limit.ms;
    }
    (reply.raw as RawWithReply)[REPLY] = reply;
    reply.raw.on('close', responseClosed);
    // A route that does not exist answers 404 naming it, whatever the body's type (a multipart upload to
    // an endpoint Infera lacks must say so, not complain about the encoding).
    const refused = request.is404 ? undefined : unsupportedContentType(request);
    // Answered here, the rest of the request's hooks and its body skipped, as done(error) would.
    if (refused && direct) return void reply.refuse(refused);
    done(refused);
  });

  /** The error answer: logged by kind, the unread body left unread, sent as its JSON text. */
  const sendError = (request: FastifyRequest, reply: FastifyReply, rendered: InferaError, error: unknown): FastifyReply => {
    // Expected events are not errors: a client that left, an overloaded model (503), a timeout (504).
    if (request.stopped === 'client') logger.info({ id: request.id }, 'client disconnected before the answer');
    else if (rendered.status === 503 || rendered.status === 504) logger.warn({ id: request.id, code: rendered.code }, rendered.message);
    else if (rendered.status >= 500) logger.error({ id: request.id, err: error }, 'request failed');
    closeUnreadBody(request, reply);
    request.errorCode = rendered.code ?? undefined;
    reply.status(rendered.status);
    if (rendered.retryAfter !== undefined || hasAny(rendered.headers)) reply.headers(errorHeaders(rendered));
    // Sent as the JSON text it is: Fastify's serializer would stringify the same body, message twice.
    return reply.type(JSON_UTF8).send(errorJson(rendered));
  };

  app.setErrorHandler((error, request, reply) => {
    // Work the server cut off (shutdown, the route's time limit) answers with that reason: the client is still here.
    const reason = request.stopped;
    const rendered = isAbortError(error) && reason instanceof InferaError ? reason : fromFastifyError(error, request);
    return sendError(request, reply, rendered, error);
  });
  // Traced: through the error path, whose onError hook records the error on the request's span.
  const direct = !tracing;
  app.decorateReply('refuse', function (this: FastifyReply, error: InferaError): FastifyReply {
    if (!direct) throw error;
    return sendError(this.request, this, error, error);
  });

  app.setNotFoundHandler((request, reply) => {
    const error = errorFields({
      status: 404,
      code: 'unknown_route',
      message: `No route ${request.method} ${request.url.split('?')[0]}. See README for the served endpoints.`,
    });
    closeUnreadBody(request, reply);
    request.errorCode = error.code ?? undefined;
    return reply.status(404).type(JSON_UTF8).send(errorJson(error));
  });

  registerOperationRoutes(app, services, hosts);
  await registerDocs(app);
  registerPlayground(app);
  await app.register(async (scope) => registerAdminRoutes(scope, services));
  await app.register(async (scope) => registerImageFileRoutes(scope, services));

  // Every API route is served under /v1 and bare (one LangChain package uses bare paths).
  for (const prefix of ['/v1', '']) {
    await app.register(
      async (scope) => {
        // onRequest, before the body is read: a request without a valid key costs no body bytes.
        // Callback style: a key known in memory (nearly every request) is checked without a promise.
        scope.addHook('onRequest', (request, reply, done) => {
          const secret = bearer(request.headers);
          const address = request.socket.remoteAddress ?? '';
          const known = services.gate.authenticateSync?.(secret, address);
          if (known instanceof InferaError) return direct ? void reply.refuse(known) : done(known);
          if (known) return admit(request, reply, known, done);
          services.gate.authenticate(secret, address).then((known) => admit(request, reply, known, done), done);
        });
        registerApiRoutes(scope, services);
      },
      { prefix },
    );
  }

  /**
   * A request quick.ts read and accepted, served here instead of through Fastify (chat, completions,
   * embeddings, rerank: each route's handler is one serving call and its result written): on a proxied
   * request Fastify's part (the body read again from quick.ts's bytes through its parser, Request and
   * Reply, the hook chain, the reply's send path) was ~10 % of the CPU (docs/BENCHMARKS.md, gw7). The same
   * steps as the route's: the route's time limit, the drain's in-flight set, the client's abort, the
   * answer's bytes and headers (test/gateway-outside-fastify.test.ts compares them with Fastify's), the
   * error rendering and logging of sendError, the access line and HTTP metrics when the response closes.
   */
  function servedOutside(route: Parameters<typeof inferenceRouteOptions>[1], serve: PlainServe): NonNullable<QuickPost['serve']> {
    const routeLimit = inferenceRouteOptions(config.server, route).config.routeTimeout as { ms: number; setting: string } | undefined;
    return (req, res, principal, body, checked, started) => {
      const id = requestIdFor(req);
      const context = new PlainRequestContext(id, principal, logger, req.url!, body, started);
      running.add(context);
      if (routeLimit) {
        const left = routeLimit.ms - (performance.now() - started);
        if (left <= 0) stopRequest(context, routeTimedOut(routeLimit));
        else {
          context.routeTimer = setTimeout(() => stopRequest(context, routeTimedOut(routeLimit)), left);
          context.routeTimer.unref();
        }
      }
      (res as PlainResponse)[PLAIN] = context;
      res.on('close', plainClosed);
      serve(services, context, body, checked as never)
        .then(
          (result) => writeResult(context, res, result),
          (error: unknown) => writeError(context, res, error),
        )
        .catch((error: unknown) => {
          // Writing the answer failed (the socket went away mid-write): the close listener records it.
          logger.error({ err: error, id }, 'could not write the answer');
          res.destroy();
        });
      return true;
    };
  }

  function plainClosed(this: PlainResponse): void {
    const context = this[PLAIN]!;
    if (context.routeTimer) clearTimeout(context.routeTimer);
    running.delete(context);
    if (!this.writableFinished) stopRequest(context, 'client');
    const status = this.writableFinished ? this.statusCode : 499;
    plain({
      id: context.requestId,
      method: 'POST',
      url: context.url,
      route: context.url,
      status,
      ms: performance.now() - context.arrived,
      principal: context.principal,
      model: modelLabel(namedModel(context.body), services),
      code: context.errorCode,
      row: undefined,
      body: context.body,
    });
    if (running.size === 0 && !app.server.listening) app.server.closeIdleConnections();
  }

  function writeResult(context: PlainRequestContext, res: ServerResponse, result: ServeResult): void {
    if (result.type === 'json') {
      if (res.destroyed) return;
      const text = JSON.stringify(result.body);
      // The headers in the order Fastify's reply sends them: the ids (onRequest), the result's, the type,
      // the length. A flat list, as quick.ts writes its answers: an object built key by key (the rate-limit
      // headers are six more) is walked again by writeHead with a for-in and a hasOwnProperty per key.
      const head: string[] = ['x-request-id', context.requestId, 'x-siliconcloud-trace-id', context.requestId];
      if (result.headers) for (const name in result.headers) head.push(name, result.headers[name]!);
      head.push('content-type', JSON_UTF8, 'content-length', String(Buffer.byteLength(text)));
      res.writeHead(result.status ?? 200, head);
      res.end(text);
      return;
    }
    // The headers in the order Fastify's reply sends them: the ids (onRequest), the result's, then writeFrames' own.
    const head: Record<string, string> = { 'x-request-id': context.requestId, 'x-siliconcloud-trace-id': context.requestId };
    if (result.headers) for (const name in result.headers) head[name] = result.headers[name]!;
    void writeFrames(res, head, result.frames, context.signal, (error) => context.logger.error({ err: error, id: context.requestId }, 'stream failed after headers'));
  }

  function writeError(context: PlainRequestContext, res: ServerResponse, error: unknown): void {
    // As the error handler and sendError: the server's reason when it stopped the work, logged by kind.
    const reason = context.stopped;
    const rendered = isAbortError(error) && reason instanceof InferaError ? reason : toInferaError(error);
    if (reason === 'client') logger.info({ id: context.requestId }, 'client disconnected before the answer');
    else if (rendered.status === 503 || rendered.status === 504) logger.warn({ id: context.requestId, code: rendered.code }, rendered.message);
    else if (rendered.status >= 500) logger.error({ id: context.requestId, err: error }, 'request failed');
    context.errorCode = rendered.code ?? undefined;
    if (res.destroyed) return;
    const head: Record<string, string> = { 'x-request-id': context.requestId, 'x-siliconcloud-trace-id': context.requestId };
    if (rendered.retryAfter !== undefined || hasAny(rendered.headers)) Object.assign(head, errorHeaders(rendered));
    const text = errorJson(rendered);
    head['content-type'] = JSON_UTF8;
    head['content-length'] = String(Buffer.byteLength(text));
    res.writeHead(rendered.status, head);
    res.end(text);
  }

  // Not with CORS (its headers are @fastify/cors's to write) nor tracing (every request is a span).
  if (config.server.cors.origins.length === 0 && !tracing) {
    let open = true;
    app.addHook('preClose', (done) => {
      open = false;
      done();
    });
    quick = quickAnswers(
      {
        services,
        hosts,
        requestId: requestIdFor,
        bearer,
        routed: (method, url) => app.findRoute({ method: method as 'GET', url }) !== null,
        record: plain,
        prepare,
        closed: () => {
          if (running.size === 0 && !app.server.listening) app.server.closeIdleConnections();
        },
        posts: quickPosts(services, (url) => app.findRoute({ method: 'POST', url }) !== null, servedOutside),
        fastify: (req, res) => fastifyHandler!(req, res),
      },
      () => open,
    );
  }
  return app;
}

/**
 * The POST routes whose refusals before any work quick.ts answers (a bad body, an unknown model), by
 * URL under /v1 and bare, each with its body limit and the pre-work check its handler would run.
 */
function quickPosts(services: Services, routed: (url: string) => boolean, outside: (route: TimedRoute, serve: PlainServe) => NonNullable<QuickPost['serve']>): Map<string, QuickPost> {
  const server = services.config.server;
  // The route's body and time limits' kind, its pre-work check, and its serving call when it may be served outside Fastify.
  const checks: [string, TimedRoute, (body: unknown) => unknown, PlainServe?][] = [
    ['/chat/completions', 'chat', (body) => checkChatRequest(services, body), serveChatCompletion as PlainServe],
    ['/completions', 'chat', (body) => checkCompletionRequest(services, body), serveCompletion as PlainServe],
    ['/embeddings', 'embeddings', (body) => checkEmbeddingsRequest(services, body), serveEmbeddings as PlainServe],
    ['/rerank', 'rerank', (body) => checkRerankRequest(services, body), serveRerank as PlainServe],
    ['/v2/rerank', 'rerank', (body) => checkRerankRequest(services, body), serveRerank as PlainServe],
    ['/images/generations', 'images', (body) => checkImageGenerationRequest(services, body)],
    ['/image/generations', 'images', (body) => checkImageGenerationRequest(services, body)],
  ];
  const posts = new Map<string, QuickPost>();
  for (const [path, limit, check, serve] of checks) {
    const plain = serve && outside(limit, serve);
    for (const url of [`/v1${path}`, path])
      if (routed(url)) posts.set(url, { route: url, bodyLimit: bodyLimitFor(server, limit), check, endpoint: METERED_ROUTES.get(url), serve: plain });
  }
  return posts;
}

/** The client's id (sanitised), so traces join up across services, else a new one. */
function requestIdFor(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : newRequestId();
}

/** The rest of the API auth hook, once the key is known: Host/Origin policy, then the request-rate precheck. */
function admitPrincipal(services: Services, hosts: ReturnType<typeof hostPolicy>, direct: boolean) {
  return (request: FastifyRequest, reply: FastifyReply, principal: Principal, done: (error?: Error) => void): void => {
    request.principal = principal;
    const refused = hosts.check(request, principal.keyId === 'anonymous');
    if (refused) {
      if (direct) reply.refuse(refused);
      else done(refused);
      return;
    }
    // A key over its own request-rate limit (rpm, rph, rpd: they need no body) is refused here too.
    const endpoint = request.routeUrl === undefined ? undefined : METERED_ROUTES.get(request.routeUrl);
    const pending = endpoint ? services.gate.precheck?.(principal, endpoint, request.inferaId) : undefined;
    if (pending) pending.then(() => done(), done);
    else done();
  };
}

const JSON_UTF8 = 'application/json; charset=utf-8';

function hasAny(record: Record<string, string>): boolean {
  for (const _ in record) return true;
  return false;
}
const REQUEST_ID = /^[\w.:-]{1,128}$/;

/**
 * "req_" and 32 hex digits: the time in milliseconds (12 digits), then 80 random bits (20 digits), cut
 * from a block of random bytes filled and turned into hex 256 ids at a time (randomUUID() and taking
 * out its dashes cost ~1 µs per request, a hex conversion per id ~0.5 µs). Time first, as in UUIDv7:
 * the ledger's request_id index then takes each new row on its last page instead of a random one, so
 * a commit of N rows writes one index page to the WAL instead of ~N (bench/sqlite-commit-pages.ts: a
 * ledger of 100,000 rows, batches of 16: 42–46 → 26–29 µs of CPU per request; docs/BENCHMARKS.md, gw4). 80 random
 * bits keep ids made in the same millisecond apart (ids are not secrets: they are echoed in headers).
 */
const ID_RANDOM_HEX = 20;
const ID_POOL_BYTES = (ID_RANDOM_HEX / 2) * 256;
const idBytes = Buffer.alloc(ID_POOL_BYTES);
let idHex = '';
let idOffset = 0;
let idMs = -1;
let idTime = '';
function newRequestId(): string {
  if (idOffset === idHex.length) {
    randomFillSync(idBytes);
    idHex = idBytes.toString('hex');
    idOffset = 0;
  }
  const now = Date.now();
  if (now !== idMs) {
    idMs = now;
    idTime = now.toString(16).padStart(12, '0');
  }
  const id = `req_${idTime}${idHex.slice(idOffset, idOffset + ID_RANDOM_HEX)}`;
  idOffset += ID_RANDOM_HEX;
  return id;
}

type LogArgs = [obj: unknown, msg?: string, ...args: unknown[]];
/**
 * The request's logger (request.log): pino's child with the request id, made on the first line logged.
 * Fastify makes one per request, and making it (formatting its bindings) cost ~1 µs on every request,
 * while most requests log nothing through it (the access log is the server logger's).
 */
class RequestLogger {
  private made: Logger | undefined;
  constructor(
    private readonly parent: Logger,
    private readonly ownBindings: Record<string, unknown>,
    private readonly options: object,
  ) {}
  private get real(): Logger {
    this.made ??= this.parent.child(this.ownBindings, this.options);
    return this.made;
  }
  get level(): string {
    return this.made ? this.made.level : ((this.options as { level?: string }).level ?? this.parent.level);
  }
  set level(level: string) {
    this.real.level = level;
  }
  isLevelEnabled(level: string): boolean {
    return this.real.isLevelEnabled(level);
  }
  fatal(...args: LogArgs): void {
    (this.real.fatal as (...a: LogArgs) => void)(...args);
  }
  error(...args: LogArgs): void {
    (this.real.error as (...a: LogArgs) => void)(...args);
  }
  warn(...args: LogArgs): void {
    (this.real.warn as (...a: LogArgs) => void)(...args);
  }
  info(...args: LogArgs): void {
    (this.real.info as (...a: LogArgs) => void)(...args);
  }
  debug(...args: LogArgs): void {
    (this.real.debug as (...a: LogArgs) => void)(...args);
  }
  trace(...args: LogArgs): void {
    (this.real.trace as (...a: LogArgs) => void)(...args);
  }
  silent(): void {}
  child(bindings: Record<string, unknown>, options?: object): Logger {
    return this.real.child(bindings, options);
  }
  bindings(): Record<string, unknown> {
    return this.real.bindings();
  }
  flush(): void {
    this.real.flush();
  }
}

const METERED_PATHS: [string, Endpoint][] = [
  ['/chat/completions', 'chat'],
  ['/completions', 'completions'],
  ['/embeddings', 'embeddings'],
  ['/rerank', 'rerank'],
  ['/v2/rerank', 'rerank'],
  ['/images/generations', 'images'],
  ['/image/generations', 'images'],
];
/** The metered endpoint each route pattern serves (under /v1 and bare); absent: not metered. */
const METERED_ROUTES = new Map<string, Endpoint>(METERED_PATHS.flatMap(([path, endpoint]) => [[path, endpoint], [`/v1${path}`, endpoint]]));

/** Stops a request's work: the client left ("client", a plain abort) or the server's reason (504, 503). */
function stopRequest(request: Stoppable, reason: InferaError | 'client'): void {
  if (request.stopped) return;
  request.stopped = reason;
  request.stop?.abort(reason);
  // No controller yet: nobody listens, and the getter makes it aborted with this reason if one is asked for.
  const controller = request.abortSlot;
  if (!controller) return;
  if (reason === 'client') controller.abort();
  else controller.abort(reason);
}

const BEARER = /^Bearer\s+(.+)$/i;
/** Neither ASCII nor Unicode whitespace (which `\s` and trim() would take away). */
const visibleAscii = (code: number) => code > 32 && code < 127;

function bearer(headers: IncomingMessage['headers']): string | undefined {
  const header = headers.authorization;
  if (!header) return undefined;
  // The usual "Bearer <key>" with single spaces needs no regular expression (nor two trims).
  if (header.startsWith('Bearer ') && visibleAscii(header.charCodeAt(7)) && visibleAscii(header.charCodeAt(header.length - 1))) return header.slice(7);
  const match = BEARER.exec(header.trim());
  return match ? match[1].trim() : header.trim();
}

function fromFastifyError(error: unknown, request: FastifyRequest): InferaError {
  if (error instanceof InferaError) return error;
  const code = (error as { code?: string }).code;
  const statusCode = (error as { statusCode?: number }).statusCode;
  if (code === 'FST_ERR_CTP_BODY_TOO_LARGE')
    return new InferaError({
      status: 413,
      code: 'request_too_large',
      message: `Request body is larger than this route's limit of ${request.routeOptions.bodyLimit} bytes (server.bodyLimit, server.bodyLimits).`,
    });
  if (code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE')
    return new InferaError({ status: 415, code: 'unsupported_media_type', message: 'Send the body as JSON with "Content-Type: application/json".' });
  if (code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || code === 'FST_ERR_CTP_INVALID_JSON_BODY')
    return new InferaError({ status: 400, code: 'invalid_json', message: 'Request body is not valid JSON.' });
  if (statusCode && statusCode >= 400 && statusCode < 500)
    return new InferaError({ status: statusCode, message: (error as Error).message });
  return toInferaError(error);
}

/** Per-request context for serving functions. Only valid inside an authenticated route. */
export function requestContext(request: FastifyRequest, services: Services): RequestContext {
  if (!request.principal) throw new InferaError({ status: 401, message: 'Not authenticated.' });
  armRouteTimer(request);
  return new HttpRequestContext(request, request.principal, services.logger);
}

/**
 * The route's timer, armed when its work starts for what is left of the limit since arrival (already
 * past: stopped now, as the timer would have stopped it). Not once the request is stopped (a client
 * that left: its close listener, which clears the timer, has run).
 */
function armRouteTimer(request: FastifyRequest): void {
  const limit = request.routeLimit;
  if (!limit || request.routeTimer || request.stopped) return;
  const left = request.routeDeadline - performance.now();
  if (left <= 0) {
    stopRequest(request, routeTimedOut(limit));
    return;
  }
  request.routeTimer = setTimeout(() => stopRequest(request, routeTimedOut(limit)), left);
  request.routeTimer.unref();
}

/**
 * A class, not an object literal with getters: V8 builds such a literal through a slow path (~1 µs
 * per request); a class's getters sit on its prototype.
 */
class HttpRequestContext implements RequestContext {
  readonly requestId: string;
  readonly startedAt = performance.now();
  private childLogger: Logger | undefined;
  constructor(
    private readonly request: FastifyRequest,
    readonly principal: Principal,
    private readonly serverLogger: Logger,
  ) {
    this.requestId = request.inferaId;
  }
  /** On first use: a request refused before its work starts (a bad body) never pays for a signal. */
  get signal(): AbortSignal {
    return this.request.abort.signal;
  }
  /** On first use too: most requests log nothing of their own (a pino child costs ~0.4 µs and garbage). */
  get logger(): Logger {
    this.childLogger ??= this.serverLogger.child({ id: this.requestId });
    return this.childLogger;
  }
}

/** What stopRequest and the drain need of a request: a FastifyRequest, or one served outside Fastify. */
interface Stoppable {
  stopped?: InferaError | 'client';
  abortSlot?: AbortController;
  /** A request served outside Fastify: the stop its work listens to (RequestStop). */
  stop?: RequestStop;
}

/**
 * The stop of a request served outside Fastify (spec/chat.ts StopSignal): the listeners in an array,
 * the reason set once. Node 20 makes each AbortSignal through a prototype swap (~5 µs of CPU, ~1 % of a
 * proxied request's, docs/BENCHMARKS.md gw8) and a proxied request only needs one listener (the upstream
 * call's). An engine that needs a real AbortSignal asks asAbortSignal(): the request's controller, made
 * then, already aborted if the request was stopped before.
 */
class RequestStop implements StopSignal {
  aborted = false;
  reason: unknown = undefined;
  private listeners: (() => void)[] | undefined = undefined;
  constructor(private readonly request: Stoppable) {}
  throwIfAborted(): void {
    if (this.aborted) throw this.reason;
  }
  /** As on an AbortSignal: a listener added after the abort is not called. */
  addEventListener(_type: 'abort', listener: () => void): void {
    if (this.aborted) return;
    if (this.listeners) this.listeners.push(listener);
    else this.listeners = [listener];
  }
  removeEventListener(_type: 'abort', listener: () => void): void {
    const listeners = this.listeners;
    const at = listeners ? listeners.indexOf(listener) : -1;
    if (at >= 0) listeners!.splice(at, 1);
  }
  asAbortSignal(): AbortSignal {
    return abortControllerOf(this.request).signal;
  }
  /** stopRequest's: the reason as AbortController.abort() gives it (an AbortError for a client that left), then each listener once. */
  abort(reason: InferaError | 'client'): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason === 'client' ? new DOMException('This operation was aborted', 'AbortError') : reason;
    const listeners = this.listeners;
    this.listeners = undefined;
    if (!listeners) return;
    for (const listener of listeners) {
      try {
        listener();
      } catch (error) {
        // As an EventTarget does: the other listeners and the caller (a response's close) go on, the error is uncaught.
        process.nextTick(() => {
          throw error;
        });
      }
    }
  }
}

/** A request's abort controller, made on first use: already aborted when the request was stopped before. */
function abortControllerOf(request: Stoppable): AbortController {
  let controller = request.abortSlot;
  if (!controller) {
    controller = new AbortController();
    if (request.stopped === 'client') controller.abort();
    else if (request.stopped) controller.abort(request.stopped);
    request.abortSlot = controller;
  }
  return controller;
}

const PLAIN = Symbol('infera.plain');
/** A route's serving call (src/serving), as its Fastify handler makes it: the checked request is the route's own check's result. */
type PlainServe = (services: Services, context: RequestContext, body: unknown, checked: never) => Promise<ServeResult>;
type PlainResponse = ServerResponse & { [PLAIN]?: PlainRequestContext };

/** A request served outside Fastify (servedOutside): its context, and what its close listener records. */
class PlainRequestContext implements RequestContext, Stoppable {
  readonly startedAt = performance.now();
  stopped: InferaError | 'client' | undefined = undefined;
  abortSlot: AbortController | undefined = undefined;
  readonly stop: RequestStop = new RequestStop(this);
  routeTimer: NodeJS.Timeout | undefined = undefined;
  errorCode: string | undefined = undefined;
  private childLogger: Logger | undefined = undefined;
  constructor(
    readonly requestId: string,
    readonly principal: Principal,
    private readonly serverLogger: Logger,
    readonly url: string,
    readonly body: unknown,
    /** When quick.ts took the request (performance.now()): the access line's time and the route's limit count from here. */
    readonly arrived: number,
  ) {}
  /** No AbortSignal (RequestStop): an engine that needs one makes it from this. */
  get signal(): StopSignal {
    return this.stop;
  }
  get logger(): Logger {
    this.childLogger ??= this.serverLogger.child({ id: this.requestId });
    return this.childLogger;
  }
}

/** Write a serving result: JSON as is, SSE frame by frame with back-pressure, stopping when the client leaves. */
export async function sendResult(request: FastifyRequest, reply: FastifyReply, result: ServeResult): Promise<void> {
  if (result.type === 'json') {
    reply.status(result.status ?? 200);
    if (result.headers) reply.headers(result.headers);
    return reply.send(result.body);
  }
  const raw = reply.raw;
  reply.hijack();
  // One object filled in place: the spreads of Object.fromEntries(Object.entries(...).map(...)) cost
  // four arrays and three objects per stream.
  const head: Record<string, string> = {};
  const set = reply.getHeaders();
  for (const name in set) head[name] = String(set[name]);
  if (result.headers) for (const name in result.headers) head[name] = result.headers[name]!;
  return writeFrames(raw, head, result.frames, request.abort.signal, (error) => request.log.error({ err: error, id: request.inferaId }, 'stream failed after headers'));
}

/** An SSE answer: the head, then frame by frame with back-pressure, stopping when the signal aborts. */
async function writeFrames(raw: ServerResponse, head: Record<string, string>, frames: AsyncIterator<string, void>, signal: StopSignal, failed: (error: unknown) => void): Promise<void> {
  head['content-type'] = 'text/event-stream; charset=utf-8';
  head['cache-control'] = 'no-cache';
  head.connection = 'keep-alive';
  head['x-accel-buffering'] = 'no';
  raw.writeHead(200, head);
  const onAbort = () => void frames.return?.();
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    for (;;) {
      if (signal.aborted) break;
      const next = await frames.next();
      if (next.done) break;
      if (signal.aborted) break;
      if (!raw.write(next.value)) await waitDrain(raw, signal);
    }
  } catch (error) {
    if (!isAbortError(error)) failed(error);
  } finally {
    signal.removeEventListener('abort', onAbort);
    if (signal.aborted) await frames.return?.();
    // Aborted by shutdown with the client still listening: an error frame and [DONE], as for any
    // mid-stream failure, so SDKs see why the answer stopped.
    if (signal.reason instanceof InferaError && !raw.destroyed) raw.write(`${sseErrorFrame(signal.reason)}data: [DONE]\n\n`);
    raw.end();
  }
}

function waitDrain(raw: NodeJS.WritableStream, signal: StopSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      raw.removeListener('drain', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    raw.once('drain', done);
    signal.addEventListener('abort', done, { once: true });
  });
}
