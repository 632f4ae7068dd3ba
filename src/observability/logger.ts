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
 */
const FLUSH_BYTES = 16 * 1024;
export const DEFAULT_FLUSH_MS = 50;

class BufferedStdout {
  // pino's own destination (sonic-boom), synchronous: it handles what a bare write(2) leaves to its
  // caller, partial writes and EAGAIN on a non-blocking pipe.
  private readonly out = pino.destination({ dest: 1, sync: true });
  private pending: string[] = [];
  private bytes = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly flushMs: number) {}

  write(line: string): boolean {
    this.pending.push(line);
    this.bytes += line.length;
    if (this.bytes >= FLUSH_BYTES) this.flushSync();
    else this.timer ??= setTimeout(() => this.flushSync(), this.flushMs).unref();
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

let isoMs = Number.NaN;
let isoText = '';
/**
 * pino's isoTime, formatted once per millisecond: `toISOString` was ~2 % of the server's CPU per
 * request on a trivial route (profile of bench/http-overhead.ts), and at thousands of lines a second
 * most lines share their millisecond with the one before.
 */
export function isoTime(): string {
  const now = Date.now();
  if (now !== isoMs) {
    isoMs = now;
    isoText = `,"time":"${new Date(now).toISOString()}"`;
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
