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
  // The metrics rows of the few label sets these answers have, kept (metrics.httpRow): the list per
  // route, the 404, and each refusal the gate gave per route (its errors are few, mostly constants).
  const listRows = new Map<string, HttpTally>();
  let notFoundRow: HttpTally | undefined;
  const refusalRows = new WeakMap<InferaError, Map<string, HttpTally>>();
  const listRow = (route: string) => {
    let row = listRows.get(route);
    if (!row) {
      row = metrics.httpRow(route, 'GET', 200, '', '');
      listRows.set(route, row);
    }
    return row;
  };
  const refusalRow = (error: InferaError, route: string) => {
    let rows = refusalRows.get(error);
    if (!rows) {
      rows = new Map();
      refusalRows.set(error, rows);
    }
    let row = rows.get(route);
    if (!row) {
      row = metrics.httpRow(route, 'GET', error.status, '', error.code ?? '');
      rows.set(route, row);
    }
    return row;
  };

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
      // A path with escapes may be a bad URL (Fastify's own 400), and one a route serves is Fastify's.
      if (url.includes('%') || options.routed('GET', url)) return false;
      const started = performance.now();
      const id = options.requestId(req);
      const error = errorFields({ status: 404, code: 'unknown_route', message: `No route GET ${url.split('?')[0]}. See README for the served endpoints.` });
      notFoundRow ??= metrics.httpRow('unmatched', 'GET', 404, '', 'unknown_route');
      return refuse(req, res, started, id, undefined, notFoundRow, error, undefined);
    }
    const started = performance.now();
    const known = services.gate.authenticateSync?.(options.bearer(headers), req.socket.remoteAddress ?? '');
    if (known === undefined) return false;
    if (known instanceof InferaError) {
      if (known.status >= 500) return false;
      return refuse(req, res, started, options.requestId(req), route, refusalRow(known, route), known, errorHeaders(known));
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

  function refuse(
    req: IncomingMessage,
    res: QuickResponse,
    started: number,
    id: string,
    route: string | undefined,
    row: HttpTally,
    error: ErrorFields,
    extra: Record<string, string> | undefined,
  ): true {
    const body = errorJson(error);
    const headers: Record<string, string> = { 'x-request-id': id, 'x-siliconcloud-trace-id': id };
    if (extra) for (const name in extra) headers[name] = extra[name]!;
    headers['content-type'] = JSON_UTF8;
    return send(req, res, started, id, route, row, error.status, headers, body, Buffer.byteLength(body), undefined, error.code ?? undefined);
  }
}
