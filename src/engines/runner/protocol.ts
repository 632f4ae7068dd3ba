// The messages between the server and an engine process (host.ts ↔ child.ts), over Node's IPC channel
// with the 'advanced' serialization (structured clone: typed arrays and nested objects pass as they are).
//
// The engine contract (src/spec) crosses the boundary unchanged, by one convention on method names:
// a method ending in `Stream` returns an AsyncIterable, one ending in `Batch` returns one promise per
// element of its first argument, any other returns a Promise. Inside arguments, AbortSignals and
// callbacks cannot be cloned: they travel as markers (SignalMarker, CallbackMarker) and the child
// rebuilds them.
import { ClientGoneError, InferaError, type ErrorType } from '../../errors/index.ts';
import type { ModelConfig } from '../../config/model.ts';
import { isLighterStop } from '../../spec/chat.ts';

export interface SignalMarker {
  readonly __signal: number;
}
export interface CallbackMarker {
  readonly __callback: number;
}

export type MethodShape = 'promise' | 'stream' | 'batch';

export function methodShape(name: string): MethodShape {
  if (name.endsWith('Stream')) return 'stream';
  if (name.endsWith('Batch')) return 'batch';
  return 'promise';
}

/** Server → engine process. */
export type HostMessage =
  /**
   * `cacheDir`: the server's INFERA_CACHE_DIR when it sends this. A spare process (host.ts) was forked
   * before the config said where the cache is, so its inherited environment may lack it.
   */
  | { t: 'load'; config: ModelConfig; logLevel: string; cacheDir?: string }
  | { t: 'call'; id: number; method: string; args: unknown[] }
  /** A marker's AbortSignal fired on the server side (client left, route time limit, shutdown). */
  | { t: 'abort'; signal: number; reason: WireError }
  /** The consumer of a stream left: the child calls return() on the engine's iterator. */
  | { t: 'return'; id: number }
  | { t: 'ping'; n: number }
  /** The server's registry has the model: requests may come from now on (EngineLoadContext `serving`). */
  | { t: 'serving' }
  | { t: 'dispose' };

/** One unit of a child's outgoing batch (see ChildMessage 'out'). */
export type ChildItem =
  | { t: 'result'; id: number; value: unknown; index?: number }
  | { t: 'error'; id: number; error: WireError; index?: number }
  | { t: 'part'; id: number; part: unknown }
  | { t: 'end'; id: number }
  | { t: 'callback'; callback: number; args: unknown[] };

/** Engine process → server. */
export type ChildMessage =
  | { t: 'loaded'; properties: Record<string, unknown>; methods: string[] }
  | { t: 'load-failed'; error: WireError }
  | { t: 'progress'; fraction: number }
  | { t: 'log'; level: string; fields: Record<string, unknown>; msg: string }
  | { t: 'pong'; n: number }
  /**
   * Everything the child produced in one turn of its event loop, in order: a decode step of eight
   * streams is one message, not eight. Node's IPC costs tens of µs per message, so per-token messages
   * would cost more than the 2 % of decode time the boundary may take (docs/RELIABILITY.md).
   */
  | { t: 'out'; items: ChildItem[] };

export interface WireError {
  name: string;
  message: string;
  stack?: string;
  /** Present for InferaError: the status and fields it renders with. */
  status?: number;
  type?: ErrorType;
  param?: string | null;
  code?: string | null;
  siliconflowCode?: number;
  retryAfter?: number;
  headers?: Record<string, string>;
}

export function toWireError(error: unknown): WireError {
  if (error instanceof InferaError)
    return {
      name: error.name,
      message: error.message,
      stack: error.stack,
      status: error.status,
      type: error.type,
      param: error.param,
      code: error.code,
      siliconflowCode: error.siliconflowCode,
      retryAfter: error.retryAfter,
      headers: error.headers,
    };
  if (error instanceof Error) return { name: error.name, message: error.message, stack: error.stack };
  return { name: 'Error', message: String(error) };
}

/**
 * The error as the server's code expects to see it: an InferaError renders with its own status, an
 * abort stays an abort (isAbortError), anything else is an unanticipated fault (a 500 whose message
 * stays in the log). The child's stack is kept for the log.
 */
export function fromWireError(wire: WireError): Error {
  let error: Error;
  if (wire.status !== undefined)
    error = new InferaError({
      status: wire.status,
      message: wire.message,
      type: wire.type,
      param: wire.param,
      code: wire.code,
      siliconflowCode: wire.siliconflowCode,
      retryAfter: wire.retryAfter,
      headers: wire.headers,
    });
  else if (wire.name === 'ClientGoneError') error = new ClientGoneError();
  else {
    error = new Error(wire.message);
    error.name = wire.name;
  }
  if (wire.stack) error.stack = wire.stack;
  return error;
}

const isPlain = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && (Object.getPrototypeOf(value) === Object.prototype || Object.getPrototypeOf(value) === null);

/**
 * Replaces what structured clone cannot carry. Walks plain objects and arrays only (options objects,
 * batch call lists), so vectors, pixel buffers and token arrays are never copied element by element.
 */
export function encodeArguments(
  value: unknown,
  onSignal: (signal: AbortSignal) => SignalMarker,
  onCallback: (callback: (...args: unknown[]) => unknown) => CallbackMarker,
  depth = 0,
): unknown {
  if (value instanceof AbortSignal) return onSignal(value);
  // The HTTP layer's lighter stop (spec/chat.ts StopSignal) goes as the AbortSignal it converts to.
  if (isLighterStop(value)) return onSignal(value.asAbortSignal());
  if (typeof value === 'function') return onCallback(value as (...args: unknown[]) => unknown);
  if (depth >= 4) return value;
  if (Array.isArray(value)) {
    // An array of numbers or strings (tokens, texts) holds nothing to replace.
    if (value.length === 0 || typeof value[0] !== 'object') return value;
    return value.map((item) => encodeArguments(item, onSignal, onCallback, depth + 1));
  }
  if (isPlain(value)) {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) out[key] = encodeArguments(item, onSignal, onCallback, depth + 1);
    return out;
  }
  return value;
}

/** The child's side of encodeArguments. */
export function decodeArguments(
  value: unknown,
  signal: (marker: SignalMarker) => AbortSignal,
  callback: (marker: CallbackMarker) => (...args: unknown[]) => void,
  depth = 0,
): unknown {
  if (depth >= 5) return value;
  if (Array.isArray(value)) {
    if (value.length === 0 || typeof value[0] !== 'object') return value;
    return value.map((item) => decodeArguments(item, signal, callback, depth + 1));
  }
  if (isPlain(value)) {
    if (typeof value.__signal === 'number') return signal(value as unknown as SignalMarker);
    if (typeof value.__callback === 'number') return callback(value as unknown as CallbackMarker);
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) out[key] = decodeArguments(item, signal, callback, depth + 1);
    return out;
  }
  return value;
}

/**
 * Structured clone turns a Buffer into a plain Uint8Array; the contract promises Buffers (image files),
 * so results get them back. Same walk bounds as the arguments.
 */
export function reviveBuffers(value: unknown, depth = 0): unknown {
  if (value instanceof Uint8Array && !Buffer.isBuffer(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (depth >= 4) return value;
  if (Array.isArray(value)) {
    if (value.length === 0 || typeof value[0] !== 'object') return value;
    for (let i = 0; i < value.length; i++) value[i] = reviveBuffers(value[i], depth + 1);
    return value;
  }
  if (isPlain(value)) {
    for (const key of Object.keys(value)) value[key] = reviveBuffers(value[key], depth + 1);
    return value;
  }
  return value;
}
