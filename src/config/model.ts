// The keys every model entry has, whatever its engine. An engine adds its own keys (its options block,
// `path` when it reads local files) through engineModelSchema, in its own folder; src/config/schema.ts
// composes the entries of the engines in the table, so adding an engine never edits this file.
import { z } from 'zod';
import { byteSizeSchema, keepAliveSchema } from './lifecycle.ts';
import { deploymentSchema } from '../routing/config.ts';
import { PARSE_ONCE } from './parse-once.ts';

export const modelTypeSchema = z.enum(['chat', 'embedding', 'reranker', 'text-to-image']);

export const commonModelShape = {
  /** Public id clients send, e.g. "Qwen/QwQ-32B". Matched case-insensitively. */
  id: z.string().min(1),
  /** Other ids that resolve to this model (apps validate keys with fixed ids like deepseek-ai/DeepSeek-V3). */
  aliases: z.array(z.string().min(1)).default([]),
  type: modelTypeSchema,
  /** Which engine serves the model: a name from the engine table (src/engines/index.ts). */
  engine: z.string().min(1),
  /**
   * The model's file or folder, relative to the config file. Optional here because a remote engine
   * has none; an engine that reads local files makes it required in its own schema.
   */
  path: z.string().min(1).optional(),
  ownedBy: z.string().default('infera'),
  /** Load at startup instead of on first use (the same as naming it in lifecycle.preload). */
  eager: z.boolean().default(false),
  /**
   * How long the model stays loaded once idle (milliseconds after parsing; Infinity: never). Unset:
   * lifecycle.keepAlive. Accepts "5m", "30s", seconds as a number, 0 (unload after each request), -1 (never).
   */
  keepAlive: keepAliveSchema.optional(),
  /** Bytes the loaded model takes, instead of the estimate (files + KV cache) the memory budget uses. */
  memory: byteSizeSchema.optional(),
  /** Requests allowed to wait for a slot; more get 503 + Retry-After. */
  maxQueue: z.number().int().min(0).default(64),
  /** Longest a request waits in that queue before it gets 503 + Retry-After (the client may try elsewhere). */
  maxQueueWaitSeconds: z.number().positive().max(3600).default(60),
  /**
   * 'process' (the default): the model runs in an engine process of its own that the server supervises,
   * so a native abort, an out-of-memory kill or a hang costs this model a restart, never the server.
   * 'none': inside the server process (only for engines outside Infera's own table, e.g. test doubles).
   */
  isolation: z.enum(['process', 'none']).default('process'),
  /** An engine process that answers no heartbeat for this long is taken for hung, killed and restarted. */
  hangTimeoutSeconds: z.number().positive().max(3600).default(60),
  /** Embedding models: supports Matryoshka truncation via `dimensions`. */
  matryoshka: z.boolean().default(false),
  /** Embedding models: pooling the model family expects, when the GGUF does not say. */
  normalize: z.boolean().default(true),
  /** Rerankers that take an `instruction` (Qwen3-Reranker style). */
  acceptsInstruction: z.boolean().default(false),
  /** Shown in /v1/models metadata; tiny test models say so here. */
  description: z.string().optional(),
  /**
   * Routing: several entries with the same id are deployments of one model (src/routing/). Their
   * priority, weight, concurrency cap and health check path.
   */
  deployment: deploymentSchema.default(() => deploymentSchema.parse({}, PARSE_ONCE)),
};

const commonModelSchema = z.object(commonModelShape).strict();

/** What every part of Infera outside an engine may read from a model entry. */
export type ModelConfig = z.output<typeof commonModelSchema>;
export type ModelTypeName = z.infer<typeof modelTypeSchema>;

/** One engine's model entry: the common keys, `engine` fixed to its name, plus the engine's own keys. */
export function engineModelSchema<const Name extends string, Shape extends z.ZodRawShape>(name: Name, shape: Shape) {
  return commonModelSchema.extend({ engine: z.literal(name) }).extend(shape).strict();
}
