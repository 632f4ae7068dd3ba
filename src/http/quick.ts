// Answers in front of Fastify for the smallest, most frequent requests: GET /v1/models (and /models)
// without a query, the 401 of a key known to be wrong, and the 404 of a GET to a path no route serves.
// Through Fastify each cost ~20 µs of CPU more than bare node:http (bench/http-together.ts): its
// Request and Reply objects, the hook chain, a 'close' listener and the reply's send path, for an
// answer whose bytes are known at once. Here the same checks run (the key through the gate's
// in-memory answer, Host/Origin for keyless callers) and the same record is kept (the access line
// and the HTTP metrics, through observe.ts); the bytes are those Fastify sends (test/http-layer.test.ts
// compares them). Anything else, or anything these cannot settle at once (a key the store must be
// asked about, a refused Host, a body, a query, a '%' in the path, CORS or tracing configured, the
// server draining), goes on to Fastify untouched.
//
// The POST routes' refusals before any work (a body breaking the rules, naming the field; an unknown
// model) are answered here too: through Fastify they cost ~+26..+43 µs of CPU over a bare node:http
// POST that reads the same body (docs/BENCHMARKS.md), its Request/Reply, the content-type parser's
// AsyncResource, the hook chain and the reply's send path, where the same checks answered here cost about
// what the GET answers do. quickPost below reads the body (a JSON body of a known length within the
// route's limit, a key known in memory with no request-rate limit of its own), runs the route's own
// pre-work check (src/serving: checkChatRequest, ...) and answers its 4xx; a body it accepts, or one it
// cannot settle (not JSON, a check that fails otherwise), goes to Fastify with the bytes read
// (replayPreRead) and the check's result, so nothing is read, parsed or checked twice.
import { Readable } from 'node:stream';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyRequest, preParsingHookHandler } from 'fastify';
import { errorFields, type ErrorFields, InferaError } from '../errors/index.ts';
import { errorHeaders, errorJson } from '../errors/render.ts';
import type { HttpTally } from '../observability/metrics.ts';
import type { Endpoint, Principal } from '../platform/gate.ts';
import type { Services } from '../serving/context.ts';
import { listModelsJson } from '../serving/models.ts';
import type { hostPolicy } from './edge.ts';
import { modelLabel, namedModel, type PlainObservation } from './observe.ts';

/** A POST route quick.ts may answer: its pattern (the metrics label), body limit and pre-work check. */
export interface QuickPost {
  route: string;
  bodyLimit: number;
  /** The route's refusals before any work: returned or thrown as an InferaError; anything else goes to the handler. */
  check: (body: unknown) => unknown;
  /** The metered endpoint (the key's request-rate precheck), if the route is one. */
  endpoint?: Endpoint;
  /**
   * Serves a request the check accepted without Fastify (app.ts, servedOutside): true when it took it,
   * false to hand it to Fastify.
   */
  serve?: (req: IncomingMessage, res: ServerResponse, principal: Principal, body: unknown, checked: unknown, started: number) => boolean;
}

/** A POST body quick.ts read and handed to Fastify: the bytes (replayed), the parse and the check's result. */
interface PreRead {
  chunks: Buffer[];
  /** False: not JSON (or blank); Fastify's parser says so. */
  parsed: boolean;
  body: unknown;
  checked: unknown;
}
const PRE_READ = Symbol('infera.preRead');
type PreReadRequest = IncomingMessage & { [PRE_READ]?: PreRead };

/** The check's result quick.ts passed on for this request (undefined: the handler checks itself). */
export function checkedBefore<T>(request: FastifyRequest): T | undefined {
  return (request.raw as PreReadRequest)[PRE_READ]?.checked as T | undefined;
}

/** The body quick.ts parsed for this request, if it did (the content-type parser takes it as is). */
export function parsedBefore(request: FastifyRequest): { body: unknown } | undefined {
  const pre = (request.raw as PreReadRequest)[PRE_READ];
  return pre?.parsed ? pre : undefined;
}

/**
 * The POST routes' preParsing hook: a body quick.ts already read is given to Fastify's body reader
 * (limits, length check, parser) as a stream of the same bytes; otherwise the request's own stream.
 */
export const replayPreRead: preParsingHookHandler = (request, _reply, payload, done) => {
  const pre = (request.raw as PreReadRequest)[PRE_READ];
  if (pre === undefined) return done(null, payload);
  const stream = new Readable({ read() {} });
  for (const chunk of pre.chunks) stream.push(chunk);
  stream.push(null);
  done(null, stream);
};

export interface QuickOptions {
  services: Services;
  hosts: ReturnType<typeof hostPolicy>;
  /** The request id Fastify's genReqId would give this request. */
  requestId: (req: IncomingMessage) => string;
  bearer: (headers: IncomingMessage['headers']) => string | undefined;
  /** Whether Fastify has a route for this method and URL (its own router). */
  routed: (method: string, url: string) => boolean;
  record: (observation: PlainObservation) => void;
  /** The record of an answer sent over and over, formatted once (observe.ts). */
  prepare: (observation: Omit<PlainObservation, 'id' | 'ms' | 'body'> & { row: HttpTally }) => (id: string, ms: number) => void;
  /** Called when a quick answer's response closed (the drain waits for idle sockets). */
  closed: () => void;
  /** The POST routes answered here when refused, by exact URL (no query). */
  posts: Map<string, QuickPost>;
  /** Fastify's request handler: a POST quick.ts read and did not refuse goes on there. */
  fastify: (req: IncomingMessage, res: ServerResponse) => void;
}

const JSON_UTF8 = 'application/json; charset=utf-8';
const STATE = Symbol('infera.quick');

/** What the access line and the metrics say of an answer, but for its id, time and URL. */
interface Sent {
  method: string;
  route: string | undefined;
  status: number;
  principal: Principal | undefined;
  model: string;
  code: string | undefined;
  row: HttpTally;
  /** Its record prepared once (a GET answer, whose URL is fixed); undefined: `record` writes it (a POST's body, model). */
  record?: (id: string, ms: number) => void;
}

interface QuickState {
  started: number;
  id: string;
  sent: Sent;
  /** The parsed body of a POST refused (logged with logging.bodies). */
  body: unknown;
}
type QuickResponse = ServerResponse & { [STATE]?: QuickState };

/**
 * The headers of an answer in the order Fastify sends them: the ids (onRequest; set per request at 1
 * and 3), the error's own, the type, the length. A flat list: Node's writeHead takes it as it is, where
 * an object is built, walked and checked key by key on every request.
 */
function headerList(extra: readonly [string, string][], bytes: number): string[] {
  return ['x-request-id', '', 'x-siliconcloud-trace-id', '', ...extra.flat(), 'content-type', JSON_UTF8, 'content-length', String(bytes)];
}

/** A POST being read: what its 'data', 'end' and 'error' listeners (one function each, no closures) need. */
interface PostState {
  res: QuickResponse;
  target: QuickPost;
  principal: Principal;
  started: number;
  chunks: Buffer[];
}
const POST = Symbol('infera.quickPost');
type PostRequest = PreReadRequest & { [POST]?: PostState };

/** A refusal as sent: its status, error code, headers (headerList), body, metrics row. */
interface Refusal {
  status: number;
  code: string | undefined;
  headers: string[];
  body: string;
  row: HttpTally;
  /** A GET refusal's record (its URL fixed: the list's route, or the 404's URL); a POST's are per request. */
  sent?: Sent;
}
const NOT_FOUND_MAX = 256;
/**
 * The largest POST body quick.ts reads. A request it hands on reaches Fastify once its body is in, so
 * Fastify's clock (the access line's ms, the duration metrics, the route's time limit) starts then; a
 * larger body (a base64 image, long documents), whose upload may take a while, goes to Fastify from the
 * start and is timed from its arrival as before. A refusal's body is small, and one this large costs its
 * reading and parsing far more than Fastify's path does.
 */
const QUICK_BODY_MAX = 64 * 1024;

/** The list as sent to one caller on one route: the text, its headers (headerList) and its record. */
interface ListAnswer {
  list: string;
  headers: string[];
  sent: Sent;
}
/** Keyless callers' principals are made per request (gate.ts, keyless): they share one list answer. */
const ANONYMOUS = {};

/**
 * The request listener's first look: true when it answered, false to hand the request to Fastify.
 * `enabled()` is read per request (false once the server starts closing: Fastify answers 503 then).
 */
export function quickAnswers(options: QuickOptions, enabled: () => boolean): (req: IncomingMessage, res: ServerResponse) => boolean {
  const { services, hosts, record, prepare, closed } = options;

  const { metrics } = services;
  // The list's answer per caller and route (metrics.httpRow, the access line and the headers kept: no
  // key to build and hash, no line to format field by field per request), again when the list changes.
  const listAnswers = new WeakMap<object, Map<string, ListAnswer>>();
  const listAnswerFor = (principal: Principal, route: string, list: string): ListAnswer => {
    const key = principal.keyId === 'anonymous' ? ANONYMOUS : principal;
    let byRoute = listAnswers.get(key);
    if (!byRoute) {
      byRoute = new Map();
      listAnswers.set(key, byRoute);
    }
    let answer = byRoute.get(route);
    if (answer?.list === list) return answer;
    const row = answer?.sent.row ?? metrics.httpRow(route, 'GET', 200, '', '');
    const sent: Sent = { method: 'GET', route, status: 200, principal, model: '', code: undefined, row };
    sent.record = prepare({ ...sent, url: route });
    answer = { list, headers: headerList([], Buffer.byteLength(list)), sent };
    byRoute.set(route, answer);
    return answer;
  };
  // Refusals built once and remembered: the gate's (mostly constants) per error and route, and the
  // 404 per URL (bounded; the route table is fixed once the server listens, so a path unrouted once stays so).
  const refusals = new WeakMap<InferaError, Map<string, Refusal>>();
  const notFound = new Map<string, Refusal>();
  const refusalFor = (error: InferaError, route: string): Refusal => {
    let byRoute = refusals.get(error);
    if (!byRoute) {
      byRoute = new Map();
      refusals.set(error, byRoute);
    }
    let refusal = byRoute.get(route);
    if (!refusal) {
      refusal = getRefusal(refusalOf(error, route, errorHeaders(error)), route, route);
      byRoute.set(route, refusal);
    }
    return refusal;
  };
  const notFoundFor = (url: string): Refusal | undefined => {
    let refusal = notFound.get(url);
    if (refusal) return refusal;
    // A path with escapes may be a bad URL (Fastify's own 400), and one a route serves is Fastify's.
    if (url.includes('%') || options.routed('GET', url)) return undefined;
    const error = errorFields({ status: 404, code: 'unknown_route', message: `No route GET ${url.split('?')[0]}. See README for the served endpoints.` });
    refusal = getRefusal(refusalOf(error, undefined, {}), undefined, url);
    if (notFound.size >= NOT_FOUND_MAX) notFound.delete(notFound.keys().next().value!);
    notFound.set(url, refusal);
    return refusal;
  };
  function refusalOf(error: ErrorFields, route: string | undefined, extra: Record<string, string>, method = 'GET', model = ''): Refusal {
    const body = errorJson(error);
    const code = error.code ?? undefined;
    return {
      status: error.status,
      code,
      headers: headerList(Object.entries(extra), Buffer.byteLength(body)),
      body,
      row: metrics.httpRow(route ?? 'unmatched', method, error.status, model, code ?? ''),
    };
  }
  /** A GET refusal with its record (the access line formatted once for `url`, the only URL it answers). */
  function getRefusal(refusal: Refusal, route: string | undefined, url: string): Refusal {
    const { status, code, row } = refusal;
    const sent: Sent = { method: 'GET', route, status, principal: undefined, model: '', code, row };
    sent.record = prepare({ ...sent, url });
    refusal.sent = sent;
    return refusal;
  }
  // A POST's refusal text per error (unknown-model and no-messages refusals are one object each); the
  // metrics row depends on the model named too, so it is looked up per request (metrics.httpRow).
  const postRefusals = new WeakMap<InferaError, Refusal>();
  const postRefusalFor = (error: InferaError, route: string, model: string): Refusal => {
    const known = postRefusals.get(error);
    if (known) return known.row.requestLabels.model === model && known.row.requestLabels.route === route ? known : { ...known, row: metrics.httpRow(route, 'POST', known.status, model, known.code ?? '') };
    const refusal = refusalOf(error, route, errorHeaders(error), 'POST', model);
    postRefusals.set(error, refusal);
    return refusal;
  };

  function onClose(this: QuickResponse): void {
    const { started, id, sent, body } = this[STATE]!;
    const ms = performance.now() - started;
    if (this.writableFinished && sent.record !== undefined) sent.record(id, ms);
    else {
      // A client that left before the answer was out: counted under its own labels.
      const status = this.writableFinished ? this.statusCode : 499;
      const { method, route, principal, model, code } = sent;
      record({ id, method, url: this.req.url!, route, status, ms, principal, model, code, row: status === sent.status ? sent.row : undefined, body });
    }
    closed();
  }

  /** Sends `body` with `template`'s headers (headerList) and this request's id, and records it when the response closes. */
  function send(res: QuickResponse, started: number, id: string, sent: Sent, template: readonly string[], body: string, requestBody: unknown = undefined): true {
    const headers = template.slice();
    headers[1] = id;
    headers[3] = id;
    res.writeHead(sent.status, headers);
    res.end(body);
    res[STATE] = { started, id, sent, body: requestBody };
    res.on('close', onClose);
    return true;
  }

  return (req, res) => {
    if (req.method === 'POST') return enabled() && quickPost(req, res);
    if (req.method !== 'GET' || !enabled()) return false;
    const headers = req.headers;
    // A GET with a body is rare enough to leave to Fastify (its body handling is the reference).
    if (headers['transfer-encoding'] !== undefined || (headers['content-length'] !== undefined && headers['content-length'] !== '0')) return false;
    const url = req.url!;
    const route = url === '/v1/models' ? '/v1/models' : url === '/models' ? '/models' : undefined;
    if (route === undefined) {
      const started = performance.now();
      const refusal = notFoundFor(url);
      return refusal !== undefined && refuse(res, started, options.requestId(req), undefined, refusal);
    }
    const started = performance.now();
    const known = services.gate.authenticateSync?.(options.bearer(headers), req.socket.remoteAddress ?? '');
    if (known === undefined) return false;
    if (known instanceof InferaError) {
      if (known.status >= 500) return false;
      return refuse(res, started, options.requestId(req), route, refusalFor(known, route));
    }
    // Keyless callers (and every caller with server.allowedHosts) pass the Host/Origin policy; a refusal is Fastify's to answer.
    if (hosts.check({ headers } as FastifyRequest, known.keyId === 'anonymous')) return false;
    const id = options.requestId(req);
    const list = listModelsJson(services);
    const answer = listAnswerFor(known, route, list);
    return send(res, started, id, answer.sent, answer.headers, list);
  };

  function refuse(
    res: QuickResponse,
    started: number,
    id: string,
    route: string | undefined,
    refusal: Refusal,
    post?: { principal: Principal; model: string; body: unknown },
  ): true {
    if (post === undefined) return send(res, started, id, refusal.sent!, refusal.headers, refusal.body);
    const { status, code, row } = refusal;
    return send(res, started, id, { method: 'POST', route, status, principal: post.principal, model: post.model, code, row }, refusal.headers, refusal.body, post.body);
  }

  /**
   * A POST to a route in `posts`: true when it is this function's (it reads the body, then answers a
   * refusal or hands the request to Fastify), false to leave it to Fastify unread: a body other than
   * `application/json` as SDKs spell it with a length within the route's limit and QUICK_BODY_MAX
   * (Fastify's 413 and 415 and its reading of chunked bodies stay the reference), a key the gate does not know in memory or
   * refuses (its 401 closes the unread body), a key with request-rate limits of its own (its precheck
   * may wait on the counter store, before the body), a refused Host/Origin.
   */
  function quickPost(req: PostRequest, res: QuickResponse): boolean {
    const target = options.posts.get(req.url!);
    if (target === undefined) return false;
    const headers = req.headers;
    if (headers['content-type'] !== 'application/json' || headers['transfer-encoding'] !== undefined) return false;
    const length = Number(headers['content-length']);
    if (!(length > 0 && length <= target.bodyLimit && length <= QUICK_BODY_MAX)) return false;
    const started = performance.now();
    const gate = services.gate;
    const principal = gate.authenticateSync?.(options.bearer(headers), req.socket.remoteAddress ?? '');
    if (principal instanceof InferaError) return false;
    if (principal === undefined) {
      if (gate.authenticateSync === undefined) return false;
      // The store must be asked (a key's first request, or its first after keyCacheSeconds unused): asked
      // here, the body left unread meanwhile, and the request goes on outside Fastify as any other.
      // Handed to Fastify instead, it was served by the route with an AbortSignal and Fastify's objects,
      // and those other shapes in the shared serving and upstream code made V8 throw away the proxied
      // path's optimised code, every keyCacheSeconds (docs/BENCHMARKS.md, gw9). A refusal, or a store
      // that did not answer, is Fastify's as before (its auth hook then answers from what this read left).
      gate
        .authenticate(options.bearer(headers), req.socket.remoteAddress ?? '')
        .then(
          (known) => {
            if (!(enabled() && !req.destroyed && acceptPost(req, res, target, known, started))) options.fastify(req, res);
          },
          () => options.fastify(req, res),
        )
        .catch((error: unknown) => {
          // Nothing above should throw; if it does, this request ends here rather than the process.
          services.logger.error({ err: error }, 'could not serve a request after reading its key');
          res.destroy();
        });
      return true;
    }
    return acceptPost(req, res, target, principal, started);
  }

  /** quickPost's request, its key known: true when this module reads its body, false to leave it to Fastify unread. */
  function acceptPost(req: PostRequest, res: QuickResponse, target: QuickPost, principal: Principal, started: number): boolean {
    // A key with request-rate limits of its own is taken when memory says it is within them (the
    // precheck Fastify's auth hook runs, which counts nothing); a refusal, or a counter store to ask, is Fastify's.
    if (principal.limits && !(target.endpoint !== undefined && services.gate.precheckPassesSync?.(principal, target.endpoint))) return false;
    if (hosts.check({ headers: req.headers } as FastifyRequest, principal.keyId === 'anonymous')) return false;
    req[POST] = { res, target, principal, started, chunks: [] };
    req.on('data', onPostData);
    req.on('end', onPostEnd);
    req.on('error', onPostError);
    return true;
  }

  function onPostData(this: PostRequest, chunk: Buffer): void {
    this[POST]!.chunks.push(chunk);
  }

  /** The client left before its body was in: logged and recorded as Fastify's path does (499, nothing sent). */
  function onPostError(this: PostRequest): void {
    const state = this[POST];
    if (state === undefined) return;
    this[POST] = undefined;
    this.removeListener('data', onPostData);
    this.removeListener('end', onPostEnd);
    const id = options.requestId(this);
    services.logger.info({ id }, 'client disconnected before the answer');
    const ms = performance.now() - state.started;
    record({ id, method: 'POST', url: this.url!, route: state.target.route, status: 499, ms, principal: state.principal, model: '', code: undefined, row: undefined });
    closed();
  }

  function onPostEnd(this: PostRequest): void {
    const state = this[POST]!;
    this[POST] = undefined;
    this.removeListener('data', onPostData);
    this.removeListener('error', onPostError);
    const { res, target, chunks } = state;
    // Decoded once, whole, as Fastify's body reader does (a character split across chunks stays whole).
    const text = chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks).toString('utf8');
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      // Not JSON, or blank: the content-type parser's answer (invalid_json, or no body).
      handOff(this, res, { chunks, parsed: false, body: undefined, checked: undefined });
      return;
    }
    let checked: unknown;
    try {
      checked = target.check(body);
    } catch (error) {
      checked = error;
    }
    if (checked instanceof InferaError && checked.status < 500) {
      const model = modelLabel(namedModel(body), services);
      refuse(res, state.started, options.requestId(this), target.route, postRefusalFor(checked, target.route, model), { principal: state.principal, model, body });
      return;
    }
    // Not once the server started closing while the body came in: Fastify answers that request's 503.
    if (target.serve !== undefined && !(checked instanceof Error) && enabled() && target.serve(this, res, state.principal, body, checked, state.started)) return;
    // Accepted, or failed otherwise (the handler runs the check again and fails the same way, through Fastify's error path).
    handOff(this, res, { chunks, parsed: true, body, checked: checked instanceof Error ? undefined : checked });
  }

  function handOff(req: PostRequest, res: ServerResponse, pre: PreRead): void {
    req[PRE_READ] = pre;
    options.fastify(req, res);
  }
}
