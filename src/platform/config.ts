// The `platform` section of the config file: rate limits, prices, storage names. Validated once at startup
// (parsePlatformConfig) so that a typo in a limit name fails the boot instead of silently not limiting.
import { z } from 'zod';
import { PARSE_ONCE } from '../config/parse-once.ts';

export const limitDimensions = ['rpm', 'rph', 'rpd', 'tpm', 'tpd', 'ipm', 'ipd'] as const;
export type LimitDimension = (typeof limitDimensions)[number];

const limitValue = z.number().int().positive();

/** Any subset of SiliconFlow's dimensions; an absent dimension is unlimited. */
export const limitsSchema = z
  .object({
    rpm: limitValue.optional(),
    rph: limitValue.optional(),
    rpd: limitValue.optional(),
    tpm: limitValue.optional(),
    tpd: limitValue.optional(),
    ipm: limitValue.optional(),
    ipd: limitValue.optional(),
  })
  .strict();
export type Limits = z.infer<typeof limitsSchema>;

const modelTypeLimits = z
  .object({
    chat: limitsSchema.optional(),
    embedding: limitsSchema.optional(),
    reranker: limitsSchema.optional(),
    'text-to-image': limitsSchema.optional(),
  })
  .strict();

const accountSchema = z
  .object({
    /** Overrides per model type for this account (merged over platform.limits.defaults). */
    defaults: modelTypeLimits.default({}),
    /** Overrides per model id for this account (merged last, wins). */
    models: z.record(z.string(), limitsSchema).default({}),
  })
  .strict();

/** Prices in currency units (SiliconFlow: ¥). Stored and charged internally as integer micro-units. */
export const priceSchema = z
  .object({
    inputPerMillion: z.number().min(0).default(0),
    outputPerMillion: z.number().min(0).default(0),
    perImage: z.number().min(0).default(0),
    /** Rerank: one search = one query over up to 100 documents (Cohere's billing unit). */
    perSearch: z.number().min(0).default(0),
  })
  .strict();
export type Price = z.infer<typeof priceSchema>;

export const platformConfigSchema = z
  .object({
    limits: z
      .object({
        /**
         * Limits per account and model, by model type. Built-in: none (a self-hosted server should not
         * surprise its owner with 429s); SiliconFlow's tiers are e.g. chat {rpm: 1000, tpm: 50000}.
         */
        defaults: modelTypeLimits.default({}),
        /** Limits for one model id (all accounts), merged over the type defaults. */
        models: z.record(z.string(), limitsSchema).default({}),
      })
      .strict()
      .default({ defaults: {}, models: {} }),
    /** Per-account overrides, keyed by account id ("default" = config/env keys, "anonymous" = open server). */
    accounts: z.record(z.string(), accountSchema).default({}),
    /** Prices per model id. A model without a price is free and served even at zero balance. */
    pricing: z.record(z.string(), priceSchema).default({}),
    /** Seconds an authenticated key stays cached; bounds how long a revoke takes to reach other processes. */
    keyCacheSeconds: z.number().min(0).default(5),
    ledger: z
      .object({
        /**
         * SQLite `synchronous`: "normal" (WAL) survives kill -9 of the server — what the ledger promises;
         * "full" also survives power loss at the cost of an fsync per group commit.
         */
        synchronous: z.enum(['normal', 'full']).default('normal'),
        /** Most rows in one group-commit transaction. */
        maxBatch: z.number().int().positive().default(512),
        /** Postgres: ledger writes in flight at once (each waits on a commit fsync; they overlap). */
        postgresWriters: z.number().int().min(1).max(32).default(4),
      })
      .strict()
      .default({ synchronous: 'normal', maxBatch: 512, postgresWriters: 4 }),
    /**
     * Balance reservations (docs/PLATFORM.md, "Prices and balance"). Each server records a heartbeat;
     * reservations held by a server silent for `staleAfterSeconds` (killed mid-request) are given back
     * by whichever server sweeps next (every `heartbeatSeconds`, and at startup).
     */
    reservations: z
      .object({
        heartbeatSeconds: z.number().positive().max(3600).default(10),
        staleAfterSeconds: z.number().positive().max(86_400).default(60),
        /**
         * SQLite: while this server is the only live one on its file, hold reservations in memory
         * instead of committing each (docs/PLATFORM.md, "Prices and balance"); false: a row per reservation.
         */
        memoryHolds: z.boolean().default(true),
      })
      .strict()
      .refine((r) => r.staleAfterSeconds >= 2 * r.heartbeatSeconds, {
        message: 'staleAfterSeconds must be at least twice heartbeatSeconds, or a live server could lose its reservations',
        path: ['staleAfterSeconds'],
      })
      .default({ heartbeatSeconds: 10, staleAfterSeconds: 60, memoryHolds: true }),
    /** Postgres schema for Infera's tables (created if missing); lets replicas of one deployment share it. */
    postgresSchema: z.string().regex(/^[a-z_][a-z0-9_]*$/).default('public'),
    /** Prefix for Redis counter keys. */
    redisKeyPrefix: z.string().min(1).default('infera:rl'),
  })
  .strict();

export type PlatformConfig = z.infer<typeof platformConfigSchema>;

/** Validates config.platform; errors name the offending path, e.g. "platform.limits.defaults.chat.rpmm". */
export function parsePlatformConfig(raw: unknown): PlatformConfig {
  const result = platformConfigSchema.safeParse(raw ?? {}, PARSE_ONCE);
  if (result.success) return result.data;
  const details = result.error.issues
    .map((issue) => `platform.${issue.path.join('.')}: ${issue.message}`)
    .join('; ');
  throw new Error(`Invalid platform config: ${details}`);
}

export type ModelKind = 'chat' | 'embedding' | 'reranker' | 'text-to-image';

/** Parses "rpm=10,tpm=1000" (CLI --limits). */
export function parseLimitsFlag(text: string): Limits {
  const limits: Record<string, number> = {};
  for (const part of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const [name, value] = part.split('=');
    const key = name?.trim().toLowerCase();
    if (!key || !(limitDimensions as readonly string[]).includes(key))
      throw new Error(`unknown limit "${name}" (use ${limitDimensions.join(', ')})`);
    const number = Number(value);
    if (!Number.isInteger(number) || number <= 0) throw new Error(`limit ${key} must be a positive integer`);
    limits[key] = number;
  }
  return limitsSchema.parse(limits);
}
