// One upstream as the engine's models see it: requests over a keep-alive pool shared by every model on
// the same origin, with the entry's timeouts, credentials and headers, and every way an upstream can fail
// turned into an InferaError that names it: 502 for a broken answer (refused connection, a body that is
// not what was asked for, a stream cut short), 504 for a timeout, the upstream's own 4xx as a 4xx naming
// the request field where its body says which.
import type { Logger } from 'pino';
import type { Dispatcher, Pool } from 'undici';
import { InferaError, isAbortError } from '../../errors/index.ts';
import type { EngineResources } from '../resources.ts';
import type { UpstreamOptions } from './config.ts';
import type { StopSignal } from '../../spec/chat.ts';

/** A streamed answer's body: read by iterating, closed (the request aborted) by destroy(). */
export interface UpstreamBody extends AsyncIterable<Buffer> {
  destroy(): void;
  readonly destroyed: boolean;
  /** Every byte has arrived and been read. */
  readonly readableEnded: boolean;
  /**
   * The reader has all it wants (the stream's [DONE]) but the body has not ended yet: the rest is
   * discarded as it comes, so the connection goes back to the pool, and the request is aborted if it has
   * not ended within `ms`.
   */
  drain(ms: number): void;
  /** drain() was called: the answer is over for the reader; its last bytes may still be on their way. */
  readonly draining: boolean;
}

/**
 * How long a stream's body may take to end after its [DONE] before its connection is closed. Servers end
 * the body right after [DONE], but in a later write: closing at [DONE] (as before) cost the keep-alive
 * connection of nearly every stream (42 of 50 with the end 5 ms after [DONE]) and a new TCP connection
 * for the next request.
 */
export const DRAIN_MS = 1000;

export interface UpstreamResponse {
  status: number;
  contentType: string;
  body: UpstreamBody;
}

/** Chunks a streamed body buffers before the upstream's socket is paused (backpressure). */
const STREAM_HIGH_WATER = 16;

/** A whole JSON exchange's answer (Upstream.exchange). */
interface ExchangeAnswer {
  status: number;
  contentType: string;
  text: string;
  retryAfter: unknown;
}

/**
 * One whole request and answer through undici's dispatch(), as its handler: it only collects the bytes.
 * request() wraps every answer in a Readable stream, an AsyncResource and a promise chain, and a JSON
 * answer read through it cost about twice the CPU (~50 µs more per proxied request). The client's abort
 * and the total timeout abort the request through the handler's abort callback (no AbortController per
 * request). Same timeouts, limits and errors as send(). A class: its callbacks are methods on one
 * prototype, where a handler object of arrow functions made some ten closures per request.
 */
class Exchange {
  private abort: ((error: Error) => void) | undefined = undefined;
  private pendingAbort: Error | undefined = undefined;
  private ended = false;
  private timedOut: InferaError | undefined = undefined;
  private status = 0;
  private contentType = '';
  private retryAfter: string | undefined = undefined;
  private limit = 256 * 1024 * 1024;
  private size = 0;
  private readonly chunks: Buffer[] = [];
  private readonly timer: NodeJS.Timeout;
  /** The client's abort, as a listener of its stop signal. */
  private readonly onClientAbort = (): void => {
    const signal = this.signal;
    this.stop(signal.reason instanceof Error ? signal.reason : new DOMException('This operation was aborted', 'AbortError'));
  };

  constructor(
    private readonly upstream: Upstream,
    private readonly signal: StopSignal,
    private readonly resolve: (answer: ExchangeAnswer) => void,
    private readonly reject: (error: unknown) => void,
  ) {
    this.timer = setTimeout(exchangeTimedOut, upstream.options.timeouts.totalSeconds * 1000, this);
    this.timer.unref();
  }

  /** The total timeout fired. */
  timedOutNow(): void {
    this.timedOut = this.upstream.timeout(`took longer than ${this.upstream.options.timeouts.totalSeconds}s in all`);
    this.stop(this.timedOut);
  }

  listen(): void {
    this.signal.addEventListener('abort', this.onClientAbort, { once: true });
  }

  end(): void {
    this.ended = true;
    clearTimeout(this.timer);
    this.signal.removeEventListener('abort', this.onClientAbort);
  }

  private stop(reason: Error): void {
    if (this.abort) this.abort(reason);
    else this.pendingAbort = reason;
  }

  onConnect(abortRequest: (error?: Error) => void): void {
    this.abort = abortRequest as (error: Error) => void;
    if (this.pendingAbort) abortRequest(this.pendingAbort);
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[] | string[] | null): boolean {
    this.status = statusCode;
    for (let i = 0; rawHeaders && i + 1 < rawHeaders.length; i += 2) {
      const name = String(rawHeaders[i]).toLowerCase();
      if (name === 'content-type') this.contentType = String(rawHeaders[i + 1]).toLowerCase();
      else if (name === 'retry-after') this.retryAfter = String(rawHeaders[i + 1]);
    }
    // An error body is read for its message only, and never a large one.
    if (statusCode < 200 || statusCode >= 300) this.limit = 64 * 1024;
    return true;
  }

  onData(chunk: Buffer): boolean {
    this.size += chunk.length;
    if (this.size > this.limit) {
      this.stop(new Error(`answer larger than ${this.limit} bytes`));
      return false;
    }
    this.chunks.push(chunk);
    return true;
  }

  onComplete(): void {
    if (this.ended) return;
    this.end();
    const chunks = this.chunks;
    this.resolve({
      status: this.status,
      contentType: this.contentType,
      text: chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks).toString('utf8'),
      retryAfter: this.retryAfter,
    });
  }

  onError(error: Error): void {
    if (this.ended) return;
    this.end();
    this.reject(this.upstream.failure(error, this.signal, this.timedOut));
  }
}

function exchangeTimedOut(exchange: Exchange): void {
  exchange.timedOutNow();
}

/**
 * A streamed answer through undici's dispatch(): the handler pushes chunks, the reader pulls them.
 * Reading pauses the upstream's socket once STREAM_HIGH_WATER chunks wait unread and resumes it when the
 * reader has taken them all, so the upstream is read only as fast as the client takes the stream.
 * destroy() aborts the request at once, even while a read is pending (which then rejects with an
 * AbortError). Cheaper than request()'s Readable + AsyncResource per answer.
 */
class DispatchedBody implements UpstreamBody {
  destroyed = false;
  draining = false;
  private drainTimer?: NodeJS.Timeout;
  private complete = false;
  private error?: Error;
  private readonly chunks: Buffer[] = [];
  private reading?: { resolve: (result: IteratorResult<Buffer>) => void; reject: (error: unknown) => void };
  private abortRequest?: (error: Error) => void;
  private pendingAbort?: Error;
  private resumeRequest?: () => void;
  private paused = false;
  /** Settled once: the status line and headers, or the error before them. */
  head?: { resolve: (head: { status: number; contentType: string; retryAfter: string | undefined }) => void; reject: (error: unknown) => void };

  get readableEnded(): boolean {
    return this.complete && this.chunks.length === 0;
  }

  readonly handler = {
    onConnect: (abort: (error?: Error) => void) => {
      this.abortRequest = abort as (error: Error) => void;
      if (this.pendingAbort) abort(this.pendingAbort);
    },
    onHeaders: (statusCode: number, rawHeaders: Buffer[] | string[] | null, resume: () => void) => {
      this.resumeRequest = resume;
      let contentType = '';
      let retryAfter: string | undefined;
      for (let i = 0; rawHeaders && i + 1 < rawHeaders.length; i += 2) {
        const name = String(rawHeaders[i]).toLowerCase();
        if (name === 'content-type') contentType = String(rawHeaders[i + 1]).toLowerCase();
        else if (name === 'retry-after') retryAfter = String(rawHeaders[i + 1]);
      }
      const head = this.head;
      this.head = undefined;
      head?.resolve({ status: statusCode, contentType, retryAfter });
      return true;
    },
    onData: (chunk: Buffer) => {
      if (this.destroyed) return false;
      if (this.draining) return true;
      const reading = this.reading;
      if (reading) {
        this.reading = undefined;
        reading.resolve({ done: false, value: chunk });
        return true;
      }
      this.chunks.push(chunk);
      if (this.chunks.length < STREAM_HIGH_WATER) return true;
      this.paused = true;
      return false;
    },
    onComplete: () => {
      this.complete = true;
      clearTimeout(this.drainTimer);
      const reading = this.reading;
      this.reading = undefined;
      reading?.resolve({ done: true, value: undefined });
    },
    onError: (error: Error) => {
      this.error ??= error;
      clearTimeout(this.drainTimer);
      const head = this.head;
      this.head = undefined;
      head?.reject(error);
      const reading = this.reading;
      this.reading = undefined;
      reading?.reject(this.error);
    },
  };

  /** Ends the request with `reason` (the client left, the total timeout): a pending or next read rejects with it. */
  abort(reason: Error): void {
    if (this.complete || this.error) return;
    if (this.abortRequest) this.abortRequest(reason);
    else this.pendingAbort ??= reason;
  }

  drain(ms: number): void {
    if (this.destroyed || this.draining || this.complete || this.error) return;
    this.draining = true;
    this.chunks.length = 0;
    if (this.paused) {
      this.paused = false;
      this.resumeRequest?.();
    }
    this.drainTimer = setTimeout(() => this.destroy(), ms);
    this.drainTimer.unref();
  }

  destroy(): void {
    if (this.destroyed) return;
    clearTimeout(this.drainTimer);
    this.destroyed = true;
    this.chunks.length = 0;
    // Every byte came (a stream closed at its [DONE]) or the request failed: nothing to abort and no read
    // pending, so no DOMException is built (its stack trace cost ~600 bytes and microseconds per stream).
    if (this.complete || this.error) return;
    const closed = new DOMException('The upstream answer was closed', 'AbortError');
    this.abort(closed);
    const reading = this.reading;
    this.reading = undefined;
    reading?.reject(closed);
  }

  private read(): Promise<IteratorResult<Buffer>> {
    const chunk = this.chunks.shift();
    if (chunk !== undefined) {
      if (this.paused && this.chunks.length === 0) {
        this.paused = false;
        this.resumeRequest?.();
      }
      return Promise.resolve({ done: false, value: chunk });
    }
    if (this.error) return Promise.reject(this.error);
    if (this.complete || this.destroyed) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve, reject) => {
      this.reading = { resolve, reject };
    });
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return {
      next: () => this.read(),
      // A reader that stops early (break, a throw) closes the answer, as a Readable's iterator does.
      return: async () => {
        this.destroy();
        return { done: true, value: undefined };
      },
    };
  }
}

/** A JSON body that is an object (what every API answer is). */
export type Json = Record<string, unknown>;

export class Upstream {
  /** How errors and the ledger name it. */
  readonly label: string;
  private readonly base: URL;

  constructor(
    readonly options: UpstreamOptions,
    private readonly pool: Pool,
    /** The public model id, for messages. */
    readonly modelId: string,
    private readonly logger: Logger,
  ) {
    this.base = new URL(options.baseUrl.endsWith('/') ? options.baseUrl : `${options.baseUrl}/`);
    this.label = `upstream ${options.name ?? this.base.host} (${options.dialect})`;
  }

  /** The upstream's own name for the model. */
  get model(): string {
    return this.options.model ?? this.modelId;
  }

  /** A path under the configured base URL ("chat/completions" → /v1/chat/completions). */
  path(relative: string): string {
    // Resolved once per route: a URL parse on every proxied request is cost for nothing.
    let path = this.paths.get(relative);
    if (path === undefined) {
      path = new URL(relative, this.base).pathname;
      this.paths.set(relative, path);
    }
    return path;
  }
  private readonly paths = new Map<string, string>();

  /** A path at the server's root, for native routes outside /v1 (TEI /embed, Ollama /api/chat). */
  rootPath(path: string): string {
    const prefix = this.base.pathname.replace(/\/v1\/?$/, '/').replace(/\/$/, '');
    return `${prefix}${path}`;
  }

  private headers(accept: string): Record<string, string> {
    const key = this.options.apiKeyEnv ? process.env[this.options.apiKeyEnv] : undefined;
    if (this.options.apiKeyEnv && !key)
      throw new InferaError({
        status: 502,
        code: 'upstream_misconfigured',
        message: `Model '${this.modelId}': ${this.label} needs the API key in environment variable ${this.options.apiKeyEnv}, which is not set on this server.`,
      });
    // Built once per accept value and key (undici only reads them): not an object spread per request.
    const cached = this.headerCache.get(accept);
    if (cached && cached.key === key) return cached.headers;
    const headers: Record<string, string> = { ...this.options.headers, 'content-type': 'application/json', accept };
    if (key) headers.authorization = `Bearer ${key}`;
    this.headerCache.set(accept, { key, headers });
    return headers;
  }
  private readonly headerCache = new Map<string, { key: string | undefined; headers: Record<string, string> }>();

  /**
   * Sends one request. Resolves once the headers arrived with a 2xx; any other status is read and thrown
   * as an InferaError. The returned body must be consumed or destroyed; `done()` clears the timers.
   */
  async send(
    method: 'GET' | 'POST',
    path: string,
    body: unknown,
    signal: StopSignal,
    accept = 'application/json',
  ): Promise<UpstreamResponse & { done(): void; failure(error: unknown): unknown }> {
    const { timeouts } = this.options;
    const stream = new DispatchedBody();
    // The client's abort and the total timeout end the request through the handler (no AbortController
    // and no AbortSignal.any per request: on Node 20 each of those registers in a FinalizationRegistry).
    let timedOut: InferaError | undefined;
    const onClientAbort = () => stream.abort(signal.reason instanceof Error ? signal.reason : new DOMException('This operation was aborted', 'AbortError'));
    const timer = setTimeout(() => {
      timedOut = this.timeout(`took longer than ${timeouts.totalSeconds}s in all`);
      stream.abort(timedOut);
    }, timeouts.totalSeconds * 1000);
    timer.unref();
    signal.addEventListener('abort', onClientAbort, { once: true });
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onClientAbort);
    };
    // failure() looks at the client's signal first, so a client abort is never taken for the timeout.
    const failure = (error: unknown) => this.failure(error, signal, timedOut);
    let head: { status: number; contentType: string; retryAfter: string | undefined };
    try {
      signal.throwIfAborted();
      const headers = this.headers(accept);
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const headPromise = new Promise<typeof head>((resolve, reject) => {
        stream.head = { resolve, reject };
      });
      this.pool.dispatch(
        { method, path, headers, body: payload, headersTimeout: timeouts.firstByteSeconds * 1000, bodyTimeout: timeouts.idleSeconds * 1000 },
        stream.handler as unknown as Dispatcher.DispatchHandler,
      );
      head = await headPromise;
    } catch (error) {
      done();
      stream.destroy();
      throw failure(error);
    }
    const { status, contentType } = head;
    if (status < 200 || status >= 300) {
      try {
        const text = await readText(stream, 64 * 1024);
        throw this.statusError(status, contentType, text, head.retryAfter, body);
      } catch (error) {
        throw error instanceof InferaError ? error : failure(error);
      } finally {
        done();
      }
    }
    return { status, contentType, body: stream, done, failure };
  }

  /** POST (or GET) and parse a JSON object answer; anything else is a 502 naming the upstream. */
  async json(path: string, body: unknown, signal: StopSignal, method: 'GET' | 'POST' = 'POST'): Promise<Json> {
    const answer = await this.exchange(method, path, body, signal);
    if (answer.status < 200 || answer.status >= 300) throw this.statusError(answer.status, answer.contentType, answer.text, answer.retryAfter, body);
    return this.parseJson(answer.text, answer.contentType);
  }

  /**
   * One whole request and answer through undici's dispatch() with a handler that only collects the
   * bytes: request() wraps every answer in a Readable stream, an AsyncResource and a promise chain, and
   * a JSON answer read through it cost about twice the CPU (~50 µs more per proxied request). The
   * client's abort and the total timeout abort the request through the handler's abort callback (no
   * AbortController per request). Same timeouts, limits and errors as send().
   */
  private exchange(method: 'GET' | 'POST', path: string, body: unknown, signal: StopSignal): Promise<ExchangeAnswer> {
    const { timeouts } = this.options;
    return new Promise((resolve, reject) => {
      const exchange = new Exchange(this, signal, resolve, reject);
      let payload: string | undefined;
      let headers: Record<string, string>;
      try {
        signal.throwIfAborted();
        headers = this.headers('application/json');
        payload = body === undefined ? undefined : JSON.stringify(body);
      } catch (error) {
        exchange.end();
        reject(error instanceof InferaError ? error : this.failure(error, signal, undefined));
        return;
      }
      exchange.listen();
      this.pool.dispatch(
        { method, path, headers, body: payload, headersTimeout: timeouts.firstByteSeconds * 1000, bodyTimeout: timeouts.idleSeconds * 1000 },
        exchange as unknown as Dispatcher.DispatchHandler,
      );
    });
  }

  /** Parses an answer body that must be JSON (an object or array); a 502 naming what came instead. */
  parseJson(text: string, contentType: string): Json {
    // The common type first, without the regular expression (which still decides any other).
    if (contentType !== 'application/json' && !/\bjson\b/.test(contentType))
      throw this.broken(`answered with content-type ${contentType || '(none)'} where JSON was expected: ${quote(text)}`);
    try {
      const value: unknown = JSON.parse(text);
      if (typeof value === 'object' && value !== null) return value as Json;
    } catch {
      // reported below
    }
    throw this.broken(`answered with a body that is not JSON: ${quote(text)}`);
  }

  broken(what: string, cause?: unknown): InferaError {
    return new InferaError({ status: 502, code: 'upstream_error', message: `Model '${this.modelId}': ${this.label} ${what}`, cause });
  }

  timeout(what: string): InferaError {
    return new InferaError({ status: 504, code: 'upstream_timeout', message: `Model '${this.modelId}': ${this.label} ${what}.` });
  }

  /** An error from the pool or a body read, as the client should see it (`timedOut`: the total timeout's error, once it fired). */
  failure(error: unknown, client: StopSignal, timedOut: unknown): unknown {
    if (error instanceof InferaError) return error;
    // The client left: not the upstream's fault, and nobody reads the answer.
    if (client.aborted) return client.reason ?? error;
    if (timedOut !== undefined) return timedOut;
    const code = (error as { code?: string }).code ?? '';
    const { timeouts } = this.options;
    if (code === 'UND_ERR_CONNECT_TIMEOUT') return this.timeout(`did not accept a connection within ${timeouts.connectSeconds}s`);
    if (code === 'UND_ERR_HEADERS_TIMEOUT') return this.timeout(`sent no answer within ${timeouts.firstByteSeconds}s`);
    if (code === 'UND_ERR_BODY_TIMEOUT') return this.timeout(`stopped sending its answer for ${timeouts.idleSeconds}s`);
    if (isAbortError(error)) return this.broken('aborted the request', error);
    const message = (error as Error)?.message ?? String(error);
    if (code === 'ECONNREFUSED') return this.broken('refused the connection (is it running?)', error);
    if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return this.broken(`cannot be resolved (${code})`, error);
    if (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET' || code === 'EPIPE') return this.broken(`closed the connection mid-answer (${message})`, error);
    this.logger.warn({ err: error }, 'upstream request failed');
    return this.broken(`could not be reached: ${message}`, error);
  }

  /**
   * A non-2xx answer. 4xx: the request was refused for something the client sent: a 4xx naming the field
   * when the body says which. Credentials, a missing route or model, and 5xx are the deployment's
   * problem: 502 (503 / 429 keep their status and Retry-After, so clients back off).
   */
  statusError(status: number, contentType: string, text: string, retryAfterHeader: unknown, requestBody: unknown): InferaError {
    const parsed = parseErrorBody(text, contentType);
    const said = parsed.message ? `: ${parsed.message}` : text ? `: ${quote(text)}` : '';
    const retryAfter = Number.parseInt(String(retryAfterHeader ?? ''), 10);
    const base = `Model '${this.modelId}': ${this.label} answered ${status}${said}`;
    if (status === 401 || status === 403)
      return new InferaError({
        status: 502,
        code: 'upstream_error',
        message: `${base} (check the key in ${this.options.apiKeyEnv ?? 'upstream.apiKeyEnv, which is not set'})`,
      });
    if (status === 429 || status === 503)
      return new InferaError({
        status,
        code: status === 429 ? 'upstream_rate_limited' : 'upstream_unavailable',
        message: base,
        retryAfter: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : 1,
      });
    if (status === 404 || status === 405 || status >= 500) return new InferaError({ status: 502, code: 'upstream_error', message: base });
    const named = parsed.param ?? guessParam(parsed.message ?? text, requestBody);
    const param = named === undefined ? undefined : (CLIENT_NAME[named] ?? named);
    return new InferaError({
      status: status === 413 || status === 422 ? 400 : status,
      code: parsed.code ?? 'upstream_rejected',
      param: param ?? null,
      message: param && !base.includes(param) ? `${param}: ${base}` : base,
    });
  }
}

/** The message and field of an error body in any of the shapes upstreams use. */
export function parseErrorBody(text: string, contentType: string): { message?: string; param?: string; code?: string } {
  if (!/\bjson\b/.test(contentType) && !text.trimStart().startsWith('{')) return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return {};
  }
  if (typeof value !== 'object' || value === null) return {};
  const body = value as Record<string, unknown>;
  const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
  // OpenAI, llama-server, Infinity: {"error": {"message", "param", "code"}}; Infera/SiliconFlow add a top-level message.
  if (typeof body.error === 'object' && body.error !== null) {
    const error = body.error as Record<string, unknown>;
    return { message: str(error.message), param: str(error.param), code: str(error.code) };
  }
  // FastAPI validation (Infinity, SGLang): {"detail": [{"loc": ["body", "input"], "msg": …}]}.
  if (Array.isArray(body.detail)) {
    const first = body.detail[0] as { loc?: unknown[]; msg?: string } | undefined;
    const loc = Array.isArray(first?.loc) ? first.loc.filter((part) => part !== 'body') : [];
    const param = loc.length ? loc.map((part, i) => (typeof part === 'number' ? `[${part}]` : i ? `.${part}` : String(part))).join('') : undefined;
    return { message: str(first?.msg), param };
  }
  // Ollama, TEI: {"error": "text"}; vLLM: {"object": "error", "message", "param"}; SiliconFlow: {"code", "message"}.
  return { message: str(body.error) ?? str(body.message) ?? str(body.detail), param: str(body.param) };
}

/** Native field names (TEI, Ollama) as the client sent them to Infera. */
const CLIENT_NAME: Record<string, string> = { inputs: 'input', texts: 'documents', num_predict: 'max_tokens', repeat_penalty: 'repetition_penalty' };

/** A request field the message names, quoted or as a word ("'top_k' must be…"), among the fields sent. */
function guessParam(message: string, requestBody: unknown): string | undefined {
  if (typeof requestBody !== 'object' || requestBody === null) return undefined;
  const keys = Object.keys(requestBody).filter((key) => key.length > 2 && key !== 'model');
  // The longest first, so "max_tokens" wins over "tokens".
  for (const key of keys.sort((a, b) => b.length - a.length)) if (new RegExp(`\\b${key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\b`).test(message)) return key;
  return undefined;
}

/** At most `limit` characters of a body, for messages. */
export function quote(text: string, limit = 200): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat === '' ? '(empty)' : JSON.stringify(flat.length > limit ? `${flat.slice(0, limit)}…` : flat);
}

/** The body as text, refusing more than `limit` bytes (an upstream must not exhaust the server's memory). */
export async function readText(body: AsyncIterable<Buffer>, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > limit) throw new Error(`answer larger than ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * The keep-alive pool for an origin, one per server (registry resources): every model on the same
 * upstream shares its connections, and closing the server closes them.
 */
export async function poolFor(resources: EngineResources, options: UpstreamOptions): Promise<Pool> {
  const origin = new URL(options.baseUrl).origin;
  const connectMs = options.timeouts.connectSeconds * 1000;
  const { Pool } = await import('undici');
  return resources.get(
    `openai-compatible:${origin}:${connectMs}:${options.maxConnections}`,
    () =>
      new Pool(origin, {
        connections: options.maxConnections,
        connect: { timeout: connectMs },
        // Idle connections stay open for the next request; the upstream's own keep-alive hint wins when shorter.
        keepAliveTimeout: 30_000,
        keepAliveMaxTimeout: 120_000,
      }),
    (pool) => pool.close().catch(() => pool.destroy()),
  );
}
