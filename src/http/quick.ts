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
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyRequest } from 'fastify';
import { errorFields, type ErrorFields, InferaError } from '../errors/index.ts';
import { errorHeaders, errorJson } from '../errors/render.ts';
import type { HttpTally } from '../observability/metrics.ts';
import type { Principal } from '../platform/gate.ts';
import type { Services } from '../serving/context.ts';
import { listModelsJson } from '../serving/models.ts';
import type { hostPolicy } from './edge.ts';
import type { PlainObservation } from './observe.ts';

export interface QuickOptions {
  services: Services;
  hosts: ReturnType<typeof hostPolicy>;
  /** The request id Fastify's genReqId would give this request. */
  requestId: (req: IncomingMessage) => string;
  bearer: (headers: IncomingMessage['headers']) => string | undefined;
  /** Whether Fastify has a route for this method and URL (its own router). */
  routed: (method: string, url: string) => boolean;
  record: (observation: PlainObservation) => void;
  /** Called when a quick answer's response closed (the drain waits for idle sockets). */
  closed: () => void;
}

const JSON_UTF8 = 'application/json; charset=utf-8';
const STATE = Symbol('infera.quick');

interface QuickState {
  observation: PlainObservation;
  started: number;
}
type QuickResponse = ServerResponse & { [STATE]?: QuickState };

/** A refusal as sent: its status, error code, headers besides the ids and the type, body and length, metrics row. */
interface Refusal {
  status: number;
  code: string | undefined;
  extra: [string, string][];
  body: string;
  bytes: number;
  row: HttpTally;
}
const NOT_FOUND_MAX = 256;

/** The byte length of the last list sent, kept while the list's text stays the same string. */
let lastList = '';
let lastListBytes = 0;

/**
 * The request listener's first look: true when it answered, false to hand the request to Fastify.
 * `enabled()` is read per request (false once the server starts closing: Fastify answers 503 then).
 */
export function quickAnswers(options: QuickOptions, enabled: () => boolean): (req: IncomingMessage, res: ServerResponse) => boolean {
  const { services, hosts, record, closed } = options;

  const { metrics } = services;
  // The list's metrics row per route (metrics.httpRow, kept: no key to build and hash per request).
  const listRows = new Map<string, HttpTally>();
  const listRow = (route: string) => {
    let row = listRows.get(route);
    if (!row) {
      row = metrics.httpRow(route, 'GET', 200, '', '');
      listRows.set(route, row);
    }
    return row;
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
      refusal = refusalOf(error, route, errorHeaders(error));
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
    refusal = refusalOf(error, undefined, {});
    if (notFound.size >= NOT_FOUND_MAX) notFound.delete(notFound.keys().next().value!);
    notFound.set(url, refusal);
    return refusal;
  };
  function refusalOf(error: ErrorFields, route: string | undefined, extra: Record<string, string>): Refusal {
    const body = errorJson(error);
    const code = error.code ?? undefined;
    return {
      status: error.status,
      code,
      extra: Object.entries(extra),
      body,
      bytes: Buffer.byteLength(body),
      row: metrics.httpRow(route ?? 'unmatched', 'GET', error.status, '', code ?? ''),
    };
  }

  function onClose(this: QuickResponse): void {
    const state = this[STATE]!;
    const status = this.writableFinished ? this.statusCode : 499;
    // A client that left before the answer was out: counted under its own labels.
    if (status !== state.observation.status) state.observation.row = undefined;
    state.observation.status = status;
    state.observation.ms = performance.now() - state.started;
    record(state.observation);
    closed();
  }

  function send(
    req: IncomingMessage,
    res: QuickResponse,
    started: number,
    id: string,
    route: string | undefined,
    row: HttpTally,
    status: number,
    headers: Record<string, string>,
    body: string,
    bytes: number,
    principal: Principal | undefined,
    code: string | undefined,
  ): true {
    headers['content-length'] = String(bytes);
    res.writeHead(status, headers);
    res.end(body);
    res[STATE] = { started, observation: { id, method: 'GET', url: req.url!, route, status, ms: 0, principal, model: '', code, row } };
    res.on('close', onClose);
    return true;
  }

  return (req, res) => {
    if (req.method !== 'GET' || !enabled()) return false;
    const headers = req.headers;
    // A GET with a body is rare enough to leave to Fastify (its body handling is the reference).
    if (headers['transfer-encoding'] !== undefined || (headers['content-length'] !== undefined && headers['content-length'] !== '0')) return false;
    const url = req.url!;
    const route = url === '/v1/models' ? '/v1/models' : url === '/models' ? '/models' : undefined;
    if (route === undefined) {
      const started = performance.now();
      const refusal = notFoundFor(url);
      return refusal !== undefined && refuse(req, res, started, options.requestId(req), undefined, refusal);
    }
    const started = performance.now();
    const known = services.gate.authenticateSync?.(options.bearer(headers), req.socket.remoteAddress ?? '');
    if (known === undefined) return false;
    if (known instanceof InferaError) {
      if (known.status >= 500) return false;
      return refuse(req, res, started, options.requestId(req), route, refusalFor(known, route));
    }
    // Keyless callers (and every caller with server.allowedHosts) pass the Host/Origin policy; a refusal is Fastify's to answer.
    if (hosts.check({ headers } as FastifyRequest, known.keyId === 'anonymous')) return false;
    const id = options.requestId(req);
    const list = listModelsJson(services);
    if (list !== lastList) {
      lastList = list;
      lastListBytes = Buffer.byteLength(list);
    }
    return send(req, res, started, id, route, listRow(route), 200, { 'x-request-id': id, 'x-siliconcloud-trace-id': id, 'content-type': JSON_UTF8 }, list, lastListBytes, known, undefined);
  };

  function refuse(req: IncomingMessage, res: QuickResponse, started: number, id: string, route: string | undefined, refusal: Refusal): true {
    const headers: Record<string, string> = { 'x-request-id': id, 'x-siliconcloud-trace-id': id };
    for (const [name, value] of refusal.extra) headers[name] = value;
    headers['content-type'] = JSON_UTF8;
    return send(req, res, started, id, route, refusal.row, refusal.status, headers, refusal.body, refusal.bytes, undefined, refusal.code);
  }
}
