// Which limits apply to a request, as fixed-window counter checks, and how a result becomes a 429 or
// x-ratelimit-* headers. Fixed windows (aligned to the minute/hour/UTC day) keep the Redis side to one
// atomic INCRBY per counter; the price is that a client may burst up to 2× a limit across a boundary.
import { InferaError } from '../errors/index.ts';
import type { CounterCheck } from '../storage/types.ts';
import type { LimitDimension, Limits, ModelKind, PlatformConfig } from './config.ts';

export const windowMs: Record<LimitDimension, number> = {
  rpm: 60_000,
  rph: 3_600_000,
  rpd: 86_400_000,
  tpm: 60_000,
  tpd: 86_400_000,
  ipm: 60_000,
  ipd: 86_400_000,
};

const measure = (dimension: LimitDimension): 'requests' | 'tokens' | 'images' =>
  dimension[0] === 'r' ? 'requests' : dimension[0] === 't' ? 'tokens' : 'images';

const periodName = (dimension: LimitDimension): string =>
  dimension.endsWith('m') ? 'minute' : dimension.endsWith('h') ? 'hour' : 'day';

export interface PlannedCheck extends CounterCheck {
  dimension: LimitDimension;
  /** Human label of the scope for messages, e.g. `model "qwen" for account "acme"`. */
  scope: string;
  /** Epoch ms when this window ends. */
  resetAt: number;
}

/** Lower-cased lookups so config keys match model ids case-insensitively, as the router does. */
const lowerKeys = <T>(record: Record<string, T>): Map<string, T> =>
  new Map(Object.entries(record).map(([k, v]) => [k.toLowerCase(), v]));

export class LimitPolicy {
  private readonly modelLimits: Map<string, Limits>;
  private readonly accounts: Map<string, { defaults: Partial<Record<ModelKind, Limits>>; models: Map<string, Limits> }>;

  constructor(private readonly config: PlatformConfig) {
    this.modelLimits = lowerKeys(config.limits.models);
    this.accounts = new Map(
      Object.entries(config.accounts).map(([id, account]) => [
        id,
        { defaults: account.defaults, models: lowerKeys(account.models) },
      ]),
    );
  }

  /** Type default ← model ← account type default ← account model: later wins per dimension. */
  resolve(accountId: string, model: string, kind: ModelKind): Limits {
    const id = model.toLowerCase();
    const account = this.accounts.get(accountId);
    return {
      ...this.config.limits.defaults[kind],
      ...this.modelLimits.get(id),
      ...account?.defaults[kind],
      ...account?.models.get(id),
    };
  }
}

export function planChecks(input: {
  accountLimits: Limits;
  keyLimits: Limits | null;
  accountId: string;
  keyId: string;
  keyName: string;
  model: string;
  estimatedTokens: number;
  images: number;
  now: number;
}): PlannedCheck[] {
  const checks: PlannedCheck[] = [];
  const add = (limits: Limits, keyBase: string, scope: string) => {
    for (const [dimension, limit] of Object.entries(limits) as [LimitDimension, number | undefined][]) {
      if (limit === undefined) continue;
      const kind = measure(dimension);
      const amount = kind === 'requests' ? 1 : kind === 'tokens' ? Math.max(0, input.estimatedTokens) : input.images;
      // An image window says nothing about a chat request; token windows always apply because the
      // settle can push a window past its limit, which must then block the next request.
      if (kind === 'images' && amount === 0) continue;
      const length = windowMs[dimension];
      const start = Math.floor(input.now / length);
      checks.push({
        key: `${keyBase}:${dimension}:${start}`,
        amount,
        limit,
        ttlMs: (start + 1) * length - input.now + 1000,
        dimension,
        scope,
        resetAt: (start + 1) * length,
      });
    }
  };
  add(input.accountLimits, `a:${input.accountId}:m:${input.model.toLowerCase()}`, `model "${input.model}" for account "${input.accountId}"`);
  if (input.keyLimits) add(input.keyLimits, `k:${input.keyId}`, `API key "${input.keyName}"`);
  return checks;
}

/** OpenAI's reset format: "1s", "6m0s", "2h3m4s". */
export function formatReset(ms: number): string {
  let seconds = Math.max(0, Math.ceil(ms / 1000));
  const hours = Math.floor(seconds / 3600);
  seconds -= hours * 3600;
  const minutes = Math.floor(seconds / 60);
  seconds -= minutes * 60;
  if (hours) return `${hours}h${minutes}m${seconds}s`;
  if (minutes) return `${minutes}m${seconds}s`;
  return `${seconds}s`;
}

/** x-ratelimit-{limit,remaining,reset}-{requests,tokens}: for each measure, the window closest to its limit. */
export function rateLimitHeaders(checks: PlannedCheck[], values: number[], now: number): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const kind of ['requests', 'tokens'] as const) {
    let best: { limit: number; remaining: number; resetAt: number } | undefined;
    checks.forEach((check, i) => {
      if (measure(check.dimension) !== kind) return;
      const remaining = Math.max(0, check.limit - (values[i] ?? 0));
      if (!best || remaining < best.remaining) best = { limit: check.limit, remaining, resetAt: check.resetAt };
    });
    if (!best) continue;
    headers[`x-ratelimit-limit-${kind}`] = String(best.limit);
    headers[`x-ratelimit-remaining-${kind}`] = String(best.remaining);
    headers[`x-ratelimit-reset-${kind}`] = formatReset(best.resetAt - now);
  }
  return headers;
}

export function rateLimitError(check: PlannedCheck, current: number, headers: Record<string, string>, now: number): InferaError {
  const retryAfter = Math.max(1, Math.ceil((check.resetAt - now) / 1000));
  const unit = measure(check.dimension);
  const never = check.amount > check.limit;
  const message = never
    ? `${check.dimension.toUpperCase()} limit reached: this request needs ${check.amount} ${unit} but ${check.scope} may use ${check.limit} ${unit} per ${periodName(check.dimension)}. Lower max_tokens or ask for a higher limit.`
    : `${check.dimension.toUpperCase()} limit reached: ${check.scope} has used ${current} of ${check.limit} ${unit} per ${periodName(check.dimension)}. Retry after ${retryAfter}s.`;
  return new InferaError({
    status: 429,
    message,
    code: 'rate_limit_exceeded',
    siliconflowCode: 42900,
    retryAfter,
    headers,
  });
}
