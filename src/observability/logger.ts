import { pino, type Logger } from 'pino';

export type { Logger };

/** Query parameters that carry credentials (some clients put the key in the URL). */
const SECRET_QUERY = /([?&](?:key|api_key|api-key|apikey|access_token|token)=)[^&#]*/gi;

/** The URL as it may be logged: credential parameters replaced. */
export function redactUrl(url: string): string {
  return url.replace(SECRET_QUERY, '$1[redacted]');
}

/** JSON lines on stdout (one per request at info); the human startup banner is printed separately. */
export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: undefined,
      timestamp: pino.stdTimeFunctions.isoTime,
      // Secrets never reach the log, whatever logs a request or its headers.
      redact: {
        paths: ['authorization', 'headers.authorization', 'req.headers.authorization', 'headers["x-api-key"]', 'req.headers["x-api-key"]', 'apiKey', 'secret'],
        censor: '[redacted]',
      },
      serializers: {
        req: (req: { method?: string; url?: string; id?: string }) => ({ id: req.id, method: req.method, url: req.url && redactUrl(req.url) }),
      },
    },
    destination as never,
  );
}
