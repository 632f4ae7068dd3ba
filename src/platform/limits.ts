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

export type Measure = 'requests' | 'tokens' | 'images';

/** One configured limit in one scope; resolved once per (account, model) or key and cached. */
export interface LimitRule {
  dimension: LimitDimension;
  measure: Measure;
  limit: number;
  windowMs: number;
  /** Counter key without the window start, e.g. "a:acme:m:qwen/qwq-32b:rpm". */
  keyBase: string;
  /** Human label of the scope for messages, e.g. `model "qwen" for account "acme"`. */
  scope: string;
  /** The counter key of the window planned last (planChecks): one string per window, not one per request. */
  windowKey?: { start: number; key: string };
  /** `limit` as its header value (x-ratelimit-limit-*), made once: a limit above 2^31 is a heap number, slow to print. */
  limitText?: string;
}

export interface PlannedCheck extends CounterCheck {
  rule: LimitRule;
  dimension: LimitDimension;
  scope: string;
  /** Epoch ms when this window ends. */
  resetAt: number;
}

export function limitRules(limits: Limits, keyBase: string, scope: string): LimitRule[] {
  const rules: LimitRule[] = [];
  for (const [dimension, limit] of Object.entries(limits) as [LimitDimension, number | undefined][]) {
    if (limit === undefined) continue;
    rules.push({ dimension, measure: measure(dimension), limit, windowMs: windowMs[dimension], keyBase: `${keyBase}:${dimension}`, scope, windowKey: undefined, limitText: String(limit) });
  }
  return rules;
}

/** Lower-cased lookups so config keys match model ids case-insensitively, as the router does. */
const lowerKeys = <T>(record: Record<string, T>): Map<string, T> =>
  new Map(Object.entries(record).map(([k, v]) => [k.toLowerCase(), v]));

export class LimitPolicy {
  private readonly modelLimits: Map<string, Limits>;
  private readonly accounts: Map<string, { defaults: Partial<Record<ModelKind, Limits>>; models: Map<string, Limits> }>;
  private readonly cache = new Map<string, LimitRule[]>();

  constructor(private readonly config: PlatformConfig) {
    this.modelLimits = lowerKeys(config.limits.models);
    this.accounts = new Map(
      Object.entries(config.accounts).map(([id, account]) => [
        id,
        { defaults: account.defaults, models: lowerKeys(account.models) },
      ]),
    );
  }

  /**
   * Type default ← model ← account type default ← account model: later wins per dimension. A model's
   * entries may be written under any of its names: its aliases' are merged first, its canonical id's last.
   */
  resolve(accountId: string, model: string, kind: ModelKind, aliases: readonly string[] = []): Limits {
    const names = [...aliases, model].map((name) => name.toLowerCase());
    const account = this.accounts.get(accountId);
    const merged: Limits = { ...this.config.limits.defaults[kind] };
    for (const name of names) Object.assign(merged, this.modelLimits.get(name));
    Object.assign(merged, account?.defaults[kind]);
    for (const name of names) Object.assign(merged, account?.models.get(name));
    return merged;
  }

  /** The account×model rules, cached: the config cannot change while the server runs. */
  rules(accountId: string, model: string, kind: ModelKind, aliases: readonly string[] = []): LimitRule[] {
    const cacheKey = `${kind}\u0000${accountId}\u0000${model}`;
    let rules = this.cache.get(cacheKey);
    if (!rules) {
      // Counters are keyed by the canonical id, so a limit holds whichever name the client calls.
      rules = limitRules(
        this.resolve(accountId, model, kind, aliases),
        `a:${accountId}:m:${model.toLowerCase()}`,
        `model "${model}" for account "${accountId}"`,
      );
      if (this.cache.size > 10_000) this.cache.clear();
      this.cache.set(cacheKey, rules);
    }
    return rules;
  }
}

export function planChecks(rules: LimitRule[], estimatedTokens: number, images: number, now: number, more?: LimitRule[]): PlannedCheck[] {
  const checks: PlannedCheck[] = [];
  planInto(checks, rules, estimatedTokens, images, now);
  if (more) planInto(checks, more, estimatedTokens, images, now);
  return checks;
}

function planInto(checks: PlannedCheck[], rules: LimitRule[], estimatedTokens: number, images: number, now: number): void {
  for (const rule of rules) {
    const amount = rule.measure === 'requests' ? 1 : rule.measure === 'tokens' ? Math.max(0, estimatedTokens) : images;
    // An image window says nothing about a chat request; token windows always apply because the
    // settle can push a window past its limit, which must then block the next request.
    if (rule.measure === 'images' && amount === 0) continue;
    const start = Math.floor(now / rule.windowMs);
    const resetAt = (start + 1) * rule.windowMs;
    let window = rule.windowKey;
    if (window?.start !== start) {
      window = { start, key: `${rule.keyBase}:${start}` };
      rule.windowKey = window;
    }
    checks.push({
      key: window.key,
      amount,
      limit: rule.limit,
      ttlMs: resetAt - now + 1000,
      rule,
      dimension: rule.dimension,
      scope: rule.scope,
      resetAt,
    });
  }
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

const limitText = (check: PlannedCheck): string => (check.rule.limit === check.limit && check.rule.limitText) || String(check.limit);

/** x-ratelimit-{limit,remaining,reset}-{requests,tokens}: for each measure, the window closest to its limit. */
export function rateLimitHeaders(checks: PlannedCheck[], values: number[], now: number): Record<string, string> {
  let requests = -1;
  let tokens = -1;
  let requestsLeft = Infinity;
  let tokensLeft = Infinity;
  for (let i = 0; i < checks.length; i++) {
    const check = checks[i]!;
    const left = Math.max(0, check.limit - (values[i] ?? 0));
    if (check.rule.measure === 'requests' && left < requestsLeft) {
      requests = i;
      requestsLeft = left;
    } else if (check.rule.measure === 'tokens' && left < tokensLeft) {
      tokens = i;
      tokensLeft = left;
    }
  }
  // Object literals, one per combination (in the same key order): keys added one by one walked V8's map
  // transitions for each of the six on every metered request.
  if (requests >= 0 && tokens >= 0)
    return {
      'x-ratelimit-limit-requests': limitText(checks[requests]!),
      'x-ratelimit-remaining-requests': String(requestsLeft),
      'x-ratelimit-reset-requests': formatReset(checks[requests]!.resetAt - now),
      'x-ratelimit-limit-tokens': limitText(checks[tokens]!),
      'x-ratelimit-remaining-tokens': String(tokensLeft),
      'x-ratelimit-reset-tokens': formatReset(checks[tokens]!.resetAt - now),
    };
  if (requests >= 0)
    return {
      'x-ratelimit-limit-requests': limitText(checks[requests]!),
      'x-ratelimit-remaining-requests': String(requestsLeft),
      'x-ratelimit-reset-requests': formatReset(checks[requests]!.resetAt - now),
    };
  if (tokens >= 0)
    return {
      'x-ratelimit-limit-tokens': limitText(checks[tokens]!),
      'x-ratelimit-remaining-tokens': String(tokensLeft),
      'x-ratelimit-reset-tokens': formatReset(checks[tokens]!.resetAt - now),
    };
  return {};
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
