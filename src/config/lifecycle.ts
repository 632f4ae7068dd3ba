// Model lifecycle settings (src/registry/registry.ts applies them): how long an idle model stays
// loaded (keep-alive, Ollama's grammar so its users need nothing new), how many models and how many
// bytes may be resident at once, and which models load at startup. The request field `keep_alive`
// (src/protocol/common/keep-alive.ts) takes the same values.
import { z } from 'zod';

/** A keep-alive in milliseconds: Infinity never unloads, 0 unloads as soon as the last request is over. */
export type KeepAliveMs = number;

export const DEFAULT_KEEP_ALIVE_MS = 5 * 60_000;

export const KEEP_ALIVE_HELP =
  'must be a duration like "5m", "30s" or "1h30m", a number of seconds, 0 (unload right after the request) or -1 (never unload)';

const GO_UNITS: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const DURATION = /^(-)?((?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+$/;
const PART = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/g;

/**
 * Ollama's keep-alive values: a number of seconds or a Go duration string ("5m", "1h30m", "500ms"), a
 * bare number in a string ("300"); any negative value means never. Undefined when the value is none of these.
 */
export function keepAliveMs(value: unknown): KeepAliveMs | undefined {
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) return undefined;
    return value < 0 ? Number.POSITIVE_INFINITY : value * 1000;
  }
  if (typeof value !== 'string') return undefined;
  const text = value.trim();
  if (/^-?(?:\d+(?:\.\d*)?|\.\d+)$/.test(text)) return keepAliveMs(Number(text));
  const match = DURATION.exec(text);
  if (!match) return undefined;
  if (match[1]) return Number.POSITIVE_INFINITY;
  let ms = 0;
  for (const [, amount, unit] of text.matchAll(PART)) ms += Number(amount) * GO_UNITS[unit!]!;
  return ms;
}

/** A keep-alive value as config and request bodies take it; parses to milliseconds (Infinity: never). */
export const keepAliveSchema = z
  .union([z.number(), z.string()], { error: KEEP_ALIVE_HELP })
  .transform((value, ctx) => {
    const ms = keepAliveMs(value);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', input: value, message: `${KEEP_ALIVE_HELP}; got ${JSON.stringify(value)}` });
      return z.NEVER;
    }
    return ms;
  })
  .describe('How long the model stays loaded once idle: "5m", "30s", "1h", seconds as a number, 0 = unload at once, -1 = never.');

/** "1.5 GiB", "300 MiB", "12 KiB", "800 B". */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(value >= 100 ? 0 : value >= 10 ? 1 : 2)} ${units[unit]}`;
}

const BYTE_UNITS: Record<string, number> = {
  b: 1,
  k: 1024,
  kib: 1024,
  kb: 1000,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  mb: 1000 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  gb: 1000 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
  tb: 1000 ** 4,
};

/** "8GiB", "512 MiB", "8GB" (decimal), "8G" (binary), or a number of bytes. Undefined when unreadable. */
export function byteSize(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? Math.floor(value) : undefined;
  if (typeof value !== 'string') return undefined;
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(value.trim());
  if (!match) return undefined;
  const unit = BYTE_UNITS[(match[2] || 'b').toLowerCase()];
  return unit === undefined ? undefined : Math.floor(Number(match[1]) * unit);
}

export const byteSizeSchema = z.union([z.number(), z.string()]).transform((value, ctx) => {
  const bytes = byteSize(value);
  if (bytes === undefined) {
    ctx.addIssue({ code: 'custom', input: value, message: `must be a size like "8GiB", "512MiB", "16GB" or a number of bytes; got ${JSON.stringify(value)}` });
    return z.NEVER;
  }
  return bytes;
});

export const lifecycleSchema = z
  .object({
    /**
     * How long a model stays loaded after its last request, for models that set no keepAlive of their
     * own: "5m" (the default), "30s", seconds as a number, 0 (unload right after each request), -1 (never).
     */
    // zod 4: a default is the parsed (output) value, milliseconds here.
    keepAlive: keepAliveSchema.default(DEFAULT_KEEP_ALIVE_MS),
    /** Most models resident at once (loaded or loading); a load beyond it first unloads the least recently used idle one. 0: no cap. */
    maxLoaded: z.number().int().min(0).default(0),
    /**
     * Memory the resident models may take together, e.g. "8GiB" (each model's estimate: its files plus
     * its context's KV cache). A load that would pass it first unloads idle models, least recently used
     * first; if that is not enough, the request gets 503 + Retry-After. Unset: no budget.
     */
    memoryBudget: byteSizeSchema.optional(),
    /** Model ids (or aliases) loaded at startup instead of on first use; the same as `eager: true` on the entry. */
    preload: z.array(z.string().min(1)).default([]),
  })
  .strict();

export type LifecycleConfig = z.output<typeof lifecycleSchema>;
