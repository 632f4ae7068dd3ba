// The HTTP edge's defences that need no body: socket timeouts and connection caps (slow or greedy
// clients), protocol errors answered in OpenAI's error shape, and the request checks that run before a
// byte of body is read (content type, Host and Origin in keyless mode). docs/RELIABILITY.md ("HTTP
// edge") explains each limit; app.ts wires them in.
import { replayPreRead } from './quick.ts';
import { STATUS_CODES, type Server } from 'node:http';
import { isIP, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { hostname as machineName } from 'node:os';
import type { FastifyContextConfig, FastifyReply, FastifyRequest } from 'fastify';
import type { InferaConfig } from '../config/schema.ts';
import { InferaError } from '../errors/index.ts';
import { errorBody } from '../errors/render.ts';
import type { Logger } from '../observability/logger.ts';

type ServerConfig = InferaConfig['server'];
export type BodyRoute = 'chat' | 'embeddings' | 'rerank' | 'images' | 'admin';

/** img2img carries a base64 image (images.maxInputBytes, 10 MiB by default, is 13.4 MiB as base64). */
const IMAGES_BODY_FLOOR = 16 * 1024 * 1024;

export function bodyLimitFor(server: ServerConfig, route: BodyRoute): number {
  const set = server.bodyLimits[route];
  if (set !== undefined) return set;
  return route === 'images' ? Math.max(server.bodyLimit, IMAGES_BODY_FLOOR) : server.bodyLimit;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The route's time limit (server.routeTimeoutsSeconds), enforced by app.ts from the request's arrival. */
    routeTimeout?: { ms: number; setting: string };
  }
}

export type TimedRoute = keyof ServerConfig['routeTimeoutsSeconds'];

/** Route options for an inference route: its body limit and its time limit. */
export function inferenceRouteOptions(server: ServerConfig, route: TimedRoute): { bodyLimit: number; config: FastifyContextConfig; preParsing: typeof replayPreRead } {
  const seconds = server.routeTimeoutsSeconds[route];
  const config: FastifyContextConfig = {};
  if (seconds > 0) config.routeTimeout = { ms: Math.round(seconds * 1000), setting: `server.routeTimeoutsSeconds.${route}` };
  // A body quick.ts read before handing the request on is read again from its bytes (quick.ts).
  return { bodyLimit: bodyLimitFor(server, route), config, preParsing: replayPreRead };
}

/** What a request stopped at its route's time limit answers (JSON: this error; a stream: its frame). */
export const routeTimedOut = (limit: { ms: number; setting: string }) =>
  new InferaError({
    status: 504,
    code: 'request_timeout',
    message: `The request ran past this route's time limit of ${limit.ms / 1000} s (${limit.setting}) and was stopped. Ask for less (max_tokens, fewer inputs) or raise the limit.`,
  });

/** Fastify/Node server options for the timeouts and limits under `server.*`. */
export function serverOptions(server: ServerConfig) {
  const headersTimeout = Math.round(server.headersTimeoutSeconds * 1000);
  const requestTimeout = Math.round(server.requestTimeoutSeconds * 1000);
  const keepAliveTimeout = Math.round(server.keepAliveTimeoutSeconds * 1000);
  return {
    keepAliveTimeout,
    requestTimeout,
    // No idle timeout on a socket whose request is complete: a long answer is not a slow client.
    connectionTimeout: 0,
    maxRequestsPerSocket: server.maxRequestsPerSocket,
    http: {
      headersTimeout,
      requestTimeout,
      keepAliveTimeout,
      maxHeaderSize: server.maxHeaderBytes,
      // Node checks the two timeouts on this interval (30 s by default), so a slow client would outlive
      // its timeout by up to that much: check four times per shortest timeout instead.
      connectionsCheckingInterval: Math.min(5000, Math.max(100, Math.round(Math.min(headersTimeout, requestTimeout) / 4))),
    },
  };
}

/**
 * Counts of what the edge cut, logged at most once per interval: an attack of a thousand slow
 * connections is one warning line every ten seconds, not a thousand error lines.
 */
class EdgeEvents {
  private counts: Record<string, number> = {};
  private lastLog = 0;
  constructor(
    private readonly logger: Logger,
    private readonly onCut?: (event: string) => void,
    private readonly intervalMs = 10_000,
  ) {}
  count(event: string): void {
    this.onCut?.(event);
    this.counts[event] = (this.counts[event] ?? 0) + 1;
    const now = Date.now();
    if (now - this.lastLog < this.intervalMs) return;
    this.lastLog = now;
    this.logger.warn({ ...this.counts }, 'connections cut at the edge (timeouts, caps, malformed requests) since the last report');
    this.counts = {};
  }
}

const plainAddress = (address: string | undefined) => (address?.startsWith('::ffff:') ? address.slice(7) : (address ?? ''));

/**
 * Total (server.maxConnections) and per-address (server.maxConnectionsPerIp) caps: a connection over
 * either is closed at once, before it costs a parser or a byte of reading.
 */
export function capConnections(httpServer: Server, server: ServerConfig, events: EdgeEvents): void {
  httpServer.maxConnections = server.maxConnections;
  httpServer.on('drop', () => events.count('overMaxConnections'));
  const cap = server.maxConnectionsPerIp;
  if (!cap) return;
  const open = new Map<string, number>();
  httpServer.on('connection', (socket: Socket) => {
    const address = plainAddress(socket.remoteAddress);
    const count = open.get(address) ?? 0;
    if (count >= cap) {
      events.count('overMaxConnectionsPerIp');
      socket.destroy();
      return;
    }
    open.set(address, count + 1);
    socket.once('close', () => {
      const left = (open.get(address) ?? 1) - 1;
      if (left > 0) open.set(address, left);
      else open.delete(address);
    });
  });
}

/** Errors Node raises below Fastify (no request object yet), rendered like every other error. */
function clientErrorFor(error: NodeJS.ErrnoException, server: ServerConfig): InferaError {
  switch (error.code) {
    case 'HPE_HEADER_OVERFLOW':
      return new InferaError({
        status: 431,
        code: 'request_header_fields_too_large',
        message: `The request line and headers are larger than the server's limit of ${server.maxHeaderBytes} bytes (server.maxHeaderBytes).`,
      });
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new InferaError({
        status: 408,
        code: 'request_timeout',
        message: `The request was not received within the server's limits (headers: ${server.headersTimeoutSeconds} s, server.headersTimeoutSeconds; whole request: ${server.requestTimeoutSeconds} s, server.requestTimeoutSeconds).`,
      });
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return new InferaError({ status: 413, code: 'request_too_large', message: 'Chunk extensions are too large.' });
    default:
      return new InferaError({ status: 400, code: 'malformed_http', message: 'The request is not valid HTTP/1.1.' });
  }
}

/** Node's `clientError` (malformed HTTP, header overflow, slow clients): a JSON error, then the socket is closed. */
export function clientErrorHandler(server: ServerConfig, events: EdgeEvents) {
  return (error: NodeJS.ErrnoException, socket: Socket): void => {
    // A reset or an already closed socket has nobody left to answer.
    if (error.code === 'ECONNRESET' || socket.destroyed) return;
    const rendered = clientErrorFor(error, server);
    events.count(rendered.status === 408 ? 'timedOut' : `status${rendered.status}`);
    const response = (socket as Socket & { _httpMessage?: { headersSent: boolean } })._httpMessage;
    // Only when no byte of an answer went out on this socket, else the client would read garbage.
    if (socket.writable && !response?.headersSent) {
      const body = JSON.stringify(errorBody(rendered));
      socket.write(
        `HTTP/1.1 ${rendered.status} ${STATUS_CODES[rendered.status]}\r\ncontent-type: application/json; charset=utf-8\r\n` +
          `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    }
    // Closed once the answer is written (destroySoon), not read further.
    socket.destroySoon();
  };
}

/** `onCut` hears every cut at once (the metrics count each; the log stays at one line per interval). */
export function edgeEvents(logger: Logger, onCut?: (event: string) => void): EdgeEvents {
  return new EdgeEvents(logger, onCut);
}

/**
 * An answer sent before the body was read (401, 403, 415, 413, ...) closes the connection instead of
 * draining the body: Node would otherwise read and discard the rest of it (megabytes) to keep the
 * connection alive. The socket stops reading at once; Connection: close ends it once the answer is out.
 */
export function closeUnreadBody(request: FastifyRequest, reply: FastifyReply): void {
  const raw = request.raw;
  // A request without a body has nothing unread, even before Node marks it complete (a handler that
  // answers synchronously from the 'request' event runs before the parser reaches the message's end).
  if (raw.complete || raw.destroyed || !hasBody(request)) return;
  reply.header('connection', 'close');
  const socket = raw.socket;
  // Stop reading now, not once the answer is out: every turn of the event loop until then is one more
  // 64 KiB read of a body nobody wants (pausing stops reads only; the answer is still written).
  socket.pause();
  // Node resumes the socket to drain the request it thinks is unread; keep it paused until it closes.
  socket.on('resume', () => socket.pause());
}

const JSON_TYPE = /^application\/json$/;

/**
 * Every request body must be JSON with a JSON content type. A web page can send text/plain,
 * form-encoded or type-less bodies to any server without a CORS preflight; a JSON content type needs
 * one, which this server never grants. Checked on the headers, before reading the body.
 */
export function unsupportedContentType(request: FastifyRequest): InferaError | undefined {
  if (!hasBody(request)) return undefined;
  const header = request.headers['content-type'];
  // What SDKs send, accepted without splitting and lower-casing a copy.
  if (header === 'application/json') return undefined;
  const type = header?.split(';')[0]?.trim().toLowerCase() ?? '';
  if (JSON_TYPE.test(type)) return undefined;
  return new InferaError({
    status: 415,
    code: 'unsupported_media_type',
    message: `Content-Type ${type ? JSON.stringify(type) : '(none)'} is not accepted: send the body as JSON with "Content-Type: application/json".`,
  });
}

function hasBody(request: FastifyRequest): boolean {
  const length = request.headers['content-length'];
  return request.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** "Example.COM.:8000" → "example.com"; "[::1]:8000" → "::1". */
export function hostName(header: string): string {
  const value = header.trim().toLowerCase();
  const name = value.startsWith('[') ? value.slice(1, value.indexOf(']') > 0 ? value.indexOf(']') : undefined) : value.replace(/:\d*$/, '');
  return name.replace(/\.$/, '');
}

const WILDCARD_HOSTS = new Set(['0.0.0.0', '::', '']);
const isLoopbackName = (name: string) =>
  name === 'localhost' || name.endsWith('.localhost') || name === '::1' || /^127\.\d+\.\d+\.\d+$/.test(name);

/**
 * Host (and Origin) allow-list. Without an API key the only credential is being on this machine, which
 * a web page borrows through DNS rebinding (its own name resolving to 127.0.0.1) unless the Host header
 * is checked; a foreign Origin is a page driving the server from the user's browser.
 */
export function hostPolicy(server: ServerConfig) {
  const configured = server.allowedHosts?.map(hostName);
  const anyHost = configured?.includes('*') ?? false;
  const names = new Set(configured ?? []);
  if (!configured) {
    if (!WILDCARD_HOSTS.has(server.host)) names.add(hostName(server.host.includes(':') ? `[${server.host}]` : server.host));
    if (server.publicUrl) names.add(new URL(server.publicUrl).hostname.replace(/^\[|\]$/g, ''));
  }
  const allowed = (name: string) => anyHost || names.has(name) || (!configured && isLoopbackName(name));
  // Pages the operator named exactly in server.cors.origins may call without a key too ("*" may not).
  const corsOrigins = new Set(server.cors.origins.filter((origin) => origin !== '*').map(originOf));
  return {
    /** Checked for every request when server.allowedHosts is set, else only for keyless (anonymous) ones. */
    check(request: FastifyRequest, anonymous: boolean): InferaError | undefined {
      if (!configured && !anonymous) return undefined;
      const host = request.headers.host;
      if (host !== undefined && !allowed(hostName(host)))
        return new InferaError({
          status: 403,
          code: 'host_not_allowed',
          message: `Host "${hostName(host)}" is not a name this server answers to${configured ? '' : ' without an API key'}: add it to server.allowedHosts${configured ? '' : ', or use an API key'}.`,
        });
      const origin = request.headers.origin;
      if (anonymous && origin !== undefined && !corsOrigins.has(originOf(origin)) && !originAllowed(origin, allowed))
        return new InferaError({
          status: 403,
          code: 'origin_not_allowed',
          message: `Requests from the web page at ${JSON.stringify(origin)} are refused without an API key: add the origin to server.cors.origins (or its host to server.allowedHosts), or use an API key.`,
        });
      return undefined;
    },
  };
}

/** "HTTPS://App.example.com:443" → "https://app.example.com" (what a browser sends); unparsable: as is. */
function originOf(origin: string): string {
  try {
    return new URL(origin).origin;
  } catch {
    return origin;
  }
}

function originAllowed(origin: string, allowed: (name: string) => boolean): boolean {
  if (origin === 'null') return false;
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return false;
  }
  // Pages are http(s); other schemes (desktop app shells) are this machine's own programs.
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return true;
  return allowed(url.hostname.replace(/^\[|\]$/g, ''));
}

/**
 * The base of the links this server hands out: server.publicUrl, else the listen address (a wildcard
 * bind uses the machine's name). Never the request's Host header, which the client chooses.
 */
export function publicOrigin(server: ServerConfig, address: AddressInfo | string | null): string {
  if (server.publicUrl) return server.publicUrl.replace(/\/+$/, '');
  if (!address || typeof address === 'string') return `http://${server.host}:${server.port}`;
  const host = WILDCARD_HOSTS.has(address.address) ? machineName() : address.address;
  return `http://${isIP(host) === 6 ? `[${host}]` : host}:${address.port}`;
}
