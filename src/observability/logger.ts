import { pino, type Logger } from 'pino';

export type { Logger };

/** JSON lines on stdout (one per request at info); the human startup banner is printed separately. */
export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino({ level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime }, destination as never);
}
