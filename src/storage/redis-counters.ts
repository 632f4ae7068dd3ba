// Rate-limit counters shared by every replica: one Lua script checks all windows and increments them
// only if all fit, so two replicas can never both take the last request of a window.
import { Redis } from 'ioredis';
import type { ConsumeResult, CounterCheck, CounterStore } from './types.ts';

// KEYS: counters. ARGV: n, then per key amount, limit, ttl ms. Returns {ok(1|0), failedIndex(1-based), values...}.
const consumeScript = `
local n = tonumber(ARGV[1])
local values = {}
for i = 1, n do
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  local amount = tonumber(ARGV[1 + (i - 1) * 3 + 1])
  local limit = tonumber(ARGV[1 + (i - 1) * 3 + 2])
  if current + amount > limit then
    values[i] = current
    local out = {0, i}
    for j = 1, i do out[#out + 1] = values[j] end
    return out
  end
  values[i] = current
end
local out = {1, 0}
for i = 1, n do
  local amount = tonumber(ARGV[1 + (i - 1) * 3 + 1])
  local ttl = tonumber(ARGV[1 + (i - 1) * 3 + 3])
  local v = redis.call('INCRBY', KEYS[i], amount)
  if v == amount then redis.call('PEXPIRE', KEYS[i], ttl) end
  out[#out + 1] = v
end
return out
`;

// KEYS: counters. ARGV: per key delta, ttl ms. A negative settle may meet an already-expired window: then
// the key would be recreated negative; skip it instead.
const adjustScript = `
for i = 1, #KEYS do
  local delta = tonumber(ARGV[(i - 1) * 2 + 1])
  local ttl = tonumber(ARGV[(i - 1) * 2 + 2])
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('INCRBY', KEYS[i], delta)
  elseif delta > 0 then
    redis.call('SET', KEYS[i], delta, 'PX', ttl)
  end
end
return 1
`;

type ScriptedRedis = Redis & {
  inferaConsume(numberOfKeys: number, ...args: (string | number)[]): Promise<number[]>;
  inferaAdjust(numberOfKeys: number, ...args: (string | number)[]): Promise<number>;
};

export interface RedisCounterOptions {
  url: string;
  /** Prepended to every key, e.g. "infera:rl". */
  prefix: string;
  /** Milliseconds a command may take before it counts as Redis being down. */
  commandTimeoutMs?: number;
}

export class RedisCounterStore implements CounterStore {
  readonly kind = 'redis' as const;
  readonly redis: ScriptedRedis;
  private readonly prefix: string;

  constructor(options: RedisCounterOptions) {
    this.prefix = options.prefix.endsWith(':') ? options.prefix : `${options.prefix}:`;
    // Fail fast instead of queueing while Redis is away: the gate decides (fail open/closed) per request.
    this.redis = new Redis(options.url, {
      lazyConnect: false,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: options.commandTimeoutMs ?? 500,
      retryStrategy: (times) => Math.min(times * 200, 2000),
    }) as ScriptedRedis;
    // Connection errors surface on the commands; without a listener ioredis would print each retry.
    this.redis.on('error', () => {});
    this.redis.defineCommand('inferaConsume', { lua: consumeScript });
    this.redis.defineCommand('inferaAdjust', { lua: adjustScript });
  }

  /** Resolves once connected (or rejects after timeoutMs); the store works without it, failing per call. */
  async ready(timeoutMs = 2000): Promise<void> {
    if (this.redis.status === 'ready') return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`Redis not ready after ${timeoutMs} ms`));
      }, timeoutMs);
      const onReady = () => {
        cleanup();
        resolve();
      };
      // The first failed connect is answer enough at startup; ioredis keeps retrying in the background.
      const onError = (error: Error) => {
        cleanup();
        reject(error);
      };
      const cleanup = () => {
        clearTimeout(timer);
        this.redis.off('ready', onReady);
        this.redis.off('error', onError);
      };
      this.redis.on('ready', onReady);
      this.redis.on('error', onError);
    });
  }

  async consume(checks: CounterCheck[]): Promise<ConsumeResult> {
    if (checks.length === 0) return { ok: true, values: [] };
    const args: (string | number)[] = checks.map((c) => this.prefix + c.key);
    args.push(checks.length);
    for (const c of checks) args.push(c.amount, c.limit, Math.max(1, Math.ceil(c.ttlMs)));
    const out = await this.redis.inferaConsume(checks.length, ...args);
    const ok = out[0] === 1;
    const values = out.slice(2).map(Number);
    return ok ? { ok, values } : { ok, failed: Number(out[1]) - 1, values };
  }

  async adjust(adjustments: { key: string; delta: number; ttlMs: number }[]): Promise<void> {
    const nonZero = adjustments.filter((a) => a.delta !== 0);
    if (nonZero.length === 0) return;
    const args: (string | number)[] = nonZero.map((a) => this.prefix + a.key);
    for (const a of nonZero) args.push(a.delta, Math.max(1, Math.ceil(a.ttlMs)));
    await this.redis.inferaAdjust(nonZero.length, ...args);
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}
