import { pino, type Logger } from 'pino';

export type { Logger };

/** Query parameters that carry credentials (some clients put the key in the URL). */
const SECRET_QUERY = /([?&](?:key|api_key|api-key|apikey|access_token|token)=)[^&#]*/gi;

/** The URL as it may be logged: credential parameters replaced. */
export function redactUrl(url: string): string {
  // Most URLs have no query: no global replace (a regular-expression scan and a copy) for them.
  return url.includes('?') ? url.replace(SECRET_QUERY, '$1[redacted]') : url;
}

/**
 * Stdout lines are buffered and written together: pino's default destination makes one blocking
 * write(2) per line, ~15 % of the server's CPU per request on a trivial route (bench/http-overhead.ts,
 * docs/BENCHMARKS.md "Serving core: HTTP layer cost"). sonic-boom's asynchronous mode was tried and
 * measured no cheaper: each line then became a thread-pool job of its own. Here lines wait until
 * 16 KiB have gathered or `logging.flushMs` has passed, whichever comes first, then go out in one
 * write. Nothing is lost on a graceful stop (flushLogger) nor on process exit (an `exit` listener
 * writes the rest synchronously); a killed process (SIGKILL) loses at most flushMs of lines.
 * While lines keep coming, the time-based write is made by a line's write once EARLY_FLUSH of flushMs
 * has passed, not by the timer: an access line is written once its answer has gone out, so the write
 * (~130–270 µs with the wake of the reader; 20 a second at ~1,400 requests a second) comes between two
 * requests, where the timer ran it in the middle of one — in ~1.4 % of a one-connection run's
 * requests, which made them part of its p99 (docs/BENCHMARKS.md, branch `gwtail`). The timer, at
 * flushMs, writes what is left when lines stop coming.
 */
const FLUSH_BYTES = 16 * 1024;
export const DEFAULT_FLUSH_MS = 50;
const EARLY_FLUSH = 0.8;

/** Where BufferedStdout's gathered text goes (pino's synchronous stdout destination; a test's sink). */
interface TextSink {
  write(text: string): unknown;
}

export class BufferedStdout {
  private pending: string[] = [];
  private bytes = 0;
  private timer: NodeJS.Timeout | undefined;
  /** performance.now() when the first pending line came. */
  private since = 0;

  constructor(
    private readonly flushMs: number,
    // pino's own destination (sonic-boom), synchronous: it handles what a bare write(2) leaves to its
    // caller, partial writes and EAGAIN on a non-blocking pipe.
    private readonly out: TextSink = pino.destination({ dest: 1, sync: true }),
  ) {}

  write(line: string): boolean {
    this.pending.push(line);
    this.bytes += line.length;
    if (this.bytes >= FLUSH_BYTES) this.flushSync();
    else if (this.pending.length === 1) {
      this.since = performance.now();
      this.timer ??= setTimeout(() => this.flushSync(), this.flushMs).unref();
    } else if (performance.now() - this.since >= this.flushMs * EARLY_FLUSH) this.flushSync();
    return true;
  }

  flushSync(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.length === 0) return;
    const text = this.pending.join('');
    this.pending = [];
    this.bytes = 0;
    this.out.write(text);
  }
}

/** Every buffered stdout destination of the process, written out by one `exit` listener. */
const buffered = new Set<BufferedStdout>();
function bufferedStdout(flushMs: number): BufferedStdout {
  if (buffered.size === 0) process.on('exit', flushLogger);
  const created = new BufferedStdout(flushMs);
  buffered.add(created);
  return created;
}

let isoSecond = Number.NaN;
let isoPrefix = '';
let isoMs = Number.NaN;
let isoText = '';
/**
 * pino's isoTime, with the date and time up to the second formatted once per second and the
 * milliseconds written per call: `toISOString` cost ~1.8 µs, and at a few thousand lines a second most
 * lines fall in a millisecond of their own but share their second.
 */
export function isoTime(): string {
  const now = Date.now();
  if (now !== isoMs) {
    isoMs = now;
    const second = Math.floor(now / 1000);
    if (second !== isoSecond) {
      isoSecond = second;
      // "2026-12-07T03:30:23." (toISOString's first 20 characters).
      isoPrefix = `,"time":"${new Date(second * 1000).toISOString().slice(0, 20)}`;
    }
    const ms = now - second * 1000;
    isoText = `${isoPrefix}${ms < 10 ? '00' : ms < 100 ? '0' : ''}${ms}Z"`;
  }
  return isoText;
}

/**
 * JSON lines on stdout (one per request at info); the human startup banner is printed separately.
 * `flushMs` (`logging.flushMs`): how long stdout lines may wait to be written together; 0 writes each
 * line at once (a blocking write per line).
 */
export function createLogger(level: string, destination?: NodeJS.WritableStream, flushMs = DEFAULT_FLUSH_MS): Logger {
  return pino(
    {
      level,
      base: undefined,
      timestamp: isoTime,
      // Secrets never reach the log, whatever logs a request or its headers.
      redact: {
        paths: ['authorization', 'headers.authorization', 'req.headers.authorization', 'headers["x-api-key"]', 'req.headers["x-api-key"]', 'apiKey', 'secret'],
        censor: '[redacted]',
      },
      serializers: {
        req: (req: { method?: string; url?: string; id?: string }) => ({ id: req.id, method: req.method, url: req.url && redactUrl(req.url) }),
      },
    },
    (destination ?? (flushMs > 0 ? bufferedStdout(flushMs) : pino.destination({ dest: 1, sync: true }))) as never,
  );
}

/** Writes every stdout line logged so far (a graceful stop calls it last, and the process's `exit`). */
export function flushLogger(): void {
  for (const destination of buffered) destination.flushSync();
}

/** A string pino writes as `"` + itself + `"`: no quote, backslash, control character or lone surrogate half. */
const NEEDS_ESCAPE = /[^ !#-[\]-\ud7ff\ue000-\uffff]/;

/**
 * `logger.info(fields, msg)` for one flat object of strings and numbers whose fields come in the order
 * of `keys` (and are no others), writing the very line pino would write (logger.test.ts compares them)
 * but built as one string: pino's general path (rest arguments, message formatting, a per-character
 * escape loop over every key and string value) cost ~2 µs of CPU per access line, a tenth of what the
 * HTTP layer spends on a request. Anything the short path does not cover takes pino's own: a logger
 * with hooks, mixins, formatters, a message prefix, a nested key, a destination that wants metadata, a
 * serializer or redaction on one of the keys, and any value needing escapes (a URL with a quote) or not
 * a finite number.
 */
export interface FlatLineWriter<Fields extends object> {
  (fields: Fields): void;
  /**
   * The line of `fixed` with two fields left open, `text` (a string) and `number`, `text` coming first
   * in the keys' order: what the fixed fields write is formatted once here, so each line costs one
   * concatenation instead of a test and a concatenation per field (quick.ts's answers repeat the same
   * method, URL, status, key and code on every request; only the id and the time change). Writes the
   * line `writer({ ...fixed, [text], [number] })` would write, taking the writer's path for a value the
   * short one cannot write. Undefined where the writer itself is pino's path for these fields.
   */
  prepare(fixed: Fields, text: keyof Fields & string, number: keyof Fields & string): ((text: string, number: number) => void) | undefined;
}

export function flatLineWriter<Fields extends object>(logger: Logger, msg: string, keys: readonly (keyof Fields & string)[]): FlatLineWriter<Fields> {
  const { symbols } = pino;
  const own = logger as unknown as Record<symbol, unknown>;
  const serializers = own[symbols.serializersSym] as Record<string, unknown>;
  const stringifiers = own[symbols.stringifiersSym] as Record<string | symbol, unknown>;
  const errorKey = own[symbols.errorKeySym] as string;
  const plain =
    !own[symbols.mixinSym] &&
    !(own[symbols.formattersSym] as { log?: unknown }).log &&
    !(own[symbols.hooksSym] as { streamWrite?: unknown }).streamWrite &&
    !(own[symbols.hooksSym] as { logMethod?: unknown }).logMethod &&
    typeof own[(symbols as unknown as Record<string, symbol>).msgPrefixSym!] !== 'string' &&
    !own[symbols.nestedKeySym] &&
    !(own[symbols.streamSym] as Record<symbol, unknown>)[symbols.needsMetadataGsym] &&
    !stringifiers[symbols.wildcardFirstSym] &&
    !NEEDS_ESCAPE.test(msg) &&
    keys.every((key) => !serializers[key] && !stringifiers[key] && !(key === errorKey && serializers.err) && !NEEDS_ESCAPE.test(key));
  const fallback = (fields: Fields) => logger.info(fields as object, msg);
  if (!plain) return Object.assign(fallback, { prepare: () => undefined });
  const INFO = 30;
  // What pino writes before each field's value: its name, quoted, and the colon.
  const prefixes = keys.map((key) => `,"${key}":`);
  const tail = `,"${own[symbols.messageKeySym] as string}":"${msg}"`;
  /** Writes the line whose fields (each `,"key":value`, in the keys' order) are `fields`, as pino would. */
  const emit = (fields: string): void => {
    const time = (own[symbols.timeSym] as () => string)();
    const line = `${(own[symbols.lsCacheSym] as Record<number, string>)[INFO]}${time}${own[symbols.chindingsSym] as string}${fields}${tail}${own[symbols.endSym] as string}`;
    (own[symbols.streamSym] as { write(line: string): unknown }).write(line);
  };
  /** What a field writes after its prefix, or undefined where only pino's path may write it. */
  const valueText = (value: unknown): string | undefined => {
    if (typeof value === 'string') return NEEDS_ESCAPE.test(value) ? undefined : `"${value}"`;
    return typeof value === 'number' && Number.isFinite(value) ? `${value}` : undefined;
  };
  const prepare = (fixed: Fields, textKey: keyof Fields & string, numberKey: keyof Fields & string) => {
    const at = [keys.indexOf(textKey), keys.indexOf(numberKey)] as const;
    if (at[0] < 0 || at[1] <= at[0]) throw new Error(`prepare: "${textKey}" must come before "${numberKey}" among the keys`);
    // The fixed fields' text before the open text field, between the two open fields, after the number.
    const parts = ['', '', ''];
    for (let i = 0; i < keys.length; i++) {
      if (i === at[0] || i === at[1]) continue;
      const value = (fixed as Record<string, unknown>)[keys[i]!];
      if (value === undefined) continue;
      const text = valueText(value);
      if (text === undefined) return undefined;
      parts[i < at[0] ? 0 : i < at[1] ? 1 : 2] += `${prefixes[i]}${text}`;
    }
    const before = `${parts[0]}${prefixes[at[0]]}"`;
    const between = `"${parts[1]}${prefixes[at[1]]}`;
    const after = parts[2];
    return (text: string, number: number): void => {
      if (logger.levelVal > INFO) return;
      if (NEEDS_ESCAPE.test(text) || !Number.isFinite(number)) {
        write(inOrder(fixed, textKey, text, numberKey, number));
        return;
      }
      emit(`${before}${text}${between}${number}${after}`);
    };
  };
  /** `fixed` with the two open fields set, its fields in the keys' order (pino writes them in the object's). */
  const inOrder = (fixed: Fields, textKey: string, text: string, numberKey: string, number: number): Fields => {
    const fields: Record<string, unknown> = {};
    for (const key of keys) fields[key] = key === textKey ? text : key === numberKey ? number : (fixed as Record<string, unknown>)[key];
    return fields as Fields;
  };
  const write = (fields: Fields) => {
    if (logger.levelVal > INFO) return;
    let text = '';
    for (let i = 0; i < keys.length; i++) {
      const value = (fields as Record<string, unknown>)[keys[i]!];
      if (value === undefined) continue;
      const written = valueText(value);
      if (written === undefined) return fallback(fields);
      text += `${prefixes[i]}${written}`;
    }
    emit(text);
  };
  return Object.assign(write, { prepare });
}
