// The one schema for infera's config file (YAML or JSON). docs/CONFIGURATION.md documents every key.
// Model entries are composed from the engine table: each engine owns its keys (src/engines/*/config.ts),
// so this file names no engine.
import { z } from 'zod';
import { commonModelShape, type ModelConfig } from './model.ts';
import { requestsSchema } from './requests.ts';
import { lifecycleSchema } from './lifecycle.ts';
import { engines as defaultEngines } from '../engines/index.ts';
import type { EngineDescriptor, EngineTable } from '../engines/descriptor.ts';
import { quickUpstreamSchema } from '../engines/openai-compatible/config.ts';
import { routingSchema } from '../routing/config.ts';
import { PARSE_ONCE } from './parse-once.ts';

export { modelTypeSchema, type ModelConfig, type ModelTypeName } from './model.ts';
export { requestsSchema, type RequestLimits } from './requests.ts';
export { lifecycleSchema, type LifecycleConfig } from './lifecycle.ts';

const positiveInt = z.number().int().positive();

/**
 * A `models[]` entry, validated by the schema of the engine it names: the common keys
 * (src/config/model.ts) plus that engine's own. An unknown engine, a type the engine does not serve, or
 * another engine's options block is an error naming the key and what would be accepted.
 */
export function modelSchemaFor(table: EngineTable) {
  const byName = new Map(table.map((engine) => [engine.name, engine]));
  const known = table.map((engine) => engine.name).join(', ');
  return z.unknown().transform((input, ctx): ModelConfig => {
    const name = input && typeof input === 'object' ? (input as { engine?: unknown }).engine : undefined;
    const engine = typeof name === 'string' ? byName.get(name) : undefined;
    if (!engine) {
      // Still check the common keys, so that one run names every mistake in the entry.
      const common = commonModelEntry.safeParse(input, PARSE_ONCE);
      if (!common.success) for (const issue of common.error.issues) if (issue.path[0] !== 'engine') ctx.addIssue({ ...issue } as never);
      ctx.addIssue({
        code: 'custom',
        path: ['engine'],
        input: name,
        message: name === undefined ? `required; known engines: ${known}` : `unknown engine ${JSON.stringify(name)}; known engines: ${known}`,
      });
      return z.NEVER;
    }
    const result = engine.schema.safeParse(input, PARSE_ONCE);
    if (!result.success) {
      for (const issue of result.error.issues) ctx.addIssue(explainForeignKeys(issue, engine, table) as never);
      return z.NEVER;
    }
    const model = result.data as ModelConfig;
    if (!engine.kinds.includes(model.type)) {
      const others = table.filter((other) => other.kinds.includes(model.type)).map((other) => other.name);
      ctx.addIssue({
        code: 'custom',
        path: ['type'],
        input: model.type,
        message:
          `engine ${engine.name} serves ${engine.kinds.join(', ')}, not ${model.type}` +
          (others.length ? ` (${model.type} models: engine ${others.join(' or ')})` : ''),
      });
      return z.NEVER;
    }
    return model;
  });
}

const commonModelEntry = z.object(commonModelShape).loose();

/** "Unrecognized key: onnx" on a llama-cpp model becomes "onnx: options of engine onnx, …; this model's engine is llama-cpp". */
function explainForeignKeys(issue: z.core.$ZodIssue, engine: EngineDescriptor, table: EngineTable): z.core.$ZodIssue {
  if (issue.code !== 'unrecognized_keys' || issue.path.length) return issue;
  const owners = (key: string) => table.filter((other) => other !== engine && key in other.schema.shape).map((other) => other.name);
  const foreign = issue.keys.filter((key) => owners(key).length);
  if (!foreign.length) return issue;
  return {
    ...issue,
    message: issue.keys
      .map((key) =>
        owners(key).length
          ? `${key}: options of engine ${owners(key).join(', ')}; this model's engine is ${engine.name}`
          : `unrecognized key ${JSON.stringify(key)}`,
      )
      .join('; '),
  };
}

/** "https://app.example.com" or "http://localhost:5173": a scheme, a host and an optional port, no path. */
const originPattern = /^https?:\/\/[^/?#\s]+$/i;

export const corsSchema = z
  .object({
    /**
     * Origins allowed to call /v1 (and the bare API paths) from a browser: exact origins, or "*" for any
     * page. "*" reaches keyed requests only: without an API key a page must be named here exactly.
     */
    origins: z
      .array(
        z.string().refine((origin) => origin === '*' || originPattern.test(origin), {
          message: 'must be "*" or an origin like "https://app.example.com" (scheme, host, optional port; no path)',
        }),
      )
      .default([]),
    /** Seconds a browser may cache a preflight answer (Access-Control-Max-Age). */
    maxAgeSeconds: z.number().int().min(0).max(86_400).default(600),
  })
  .strict();

export const metricsSchema = z
  .object({
    /** Serve GET /metrics at all. */
    enabled: z.boolean().default(true),
    /**
     * Anyone who reaches the port may read /metrics (put it behind your network policy). Off (the
     * default): the admin key (server.adminKey) is required; a server without one answers /metrics only
     * in keyless mode, to callers on this machine, as it does the API.
     */
    public: z.boolean().default(false),
  })
  .strict();

export const loggingSchema = z
  .object({
    /**
     * Put each request's JSON body (prompts, inputs; cut at 64 KiB) in its access log line. Off by
     * default: the access log carries the request id, the key id and the model, never what was asked.
     */
    bodies: z.boolean().default(false),
    /**
     * How long a stdout log line may wait to be written together with the next ones (one write for
     * many lines under load; src/observability/logger.ts). 0: each line is written at once.
     */
    flushMs: z.number().int().min(0).max(10_000).default(50),
  })
  .strict();

export const tracingSchema = z
  .object({
    /** Send OpenTelemetry traces of every request (@fastify/otel) over OTLP/HTTP. Off: nothing is loaded. */
    enabled: z.boolean().default(false),
    /** The collector's OTLP/HTTP traces URL (JSON encoding). */
    endpoint: z.string().url().default('http://127.0.0.1:4318/v1/traces'),
    /** `service.name` of the spans. */
    serviceName: z.string().min(1).default('infera'),
    /** Extra headers for the collector (an auth token). */
    headers: z.record(z.string(), z.string()).default({}),
  })
  .strict();

export const serverSchema = z
  .object({
    host: z.string().default('127.0.0.1'),
    port: z.number().int().min(0).max(65535).default(8000),
    /** Accepted bearer keys (in addition to INFERA_API_KEY and the key store). */
    apiKeys: z.array(z.string().min(8)).default([]),
    /** Guards /admin/*. */
    adminKey: z.string().min(8).optional(),
    /** Largest request body in bytes; larger bodies get 413. The default for every route bodyLimits does not name. */
    bodyLimit: positiveInt.default(8 * 1024 * 1024),
    /** Per-route body limits in bytes. images defaults to the larger of bodyLimit and 16 MiB (img2img carries a base64 image). */
    bodyLimits: z
      .object({ chat: positiveInt, embeddings: positiveInt, rerank: positiveInt, images: positiveInt, admin: positiveInt })
      .partial()
      .strict()
      .default({}),
    /**
     * Seconds a request may run on its route, from arrival to the last byte of the answer (streams
     * included); then the work is stopped and the client gets a 504 (a stream: an error frame and
     * [DONE]). 0 turns a route's limit off.
     */
    routeTimeoutsSeconds: z
      .object({
        chat: z.number().min(0).max(86_400).default(600),
        embeddings: z.number().min(0).max(86_400).default(120),
        rerank: z.number().min(0).max(86_400).default(120),
        images: z.number().min(0).max(86_400).default(600),
      })
      .strict()
      .default({ chat: 600, embeddings: 120, rerank: 120, images: 600 }),
    /** Seconds a client may take to send the request line and headers (slow-loris); also cuts connections that send nothing. */
    headersTimeoutSeconds: z.number().positive().max(3600).default(10),
    /** Seconds a client may take to send the whole request, body included; the answer may then take as long as it needs. */
    requestTimeoutSeconds: z.number().positive().max(3600).default(60),
    /** Seconds an idle keep-alive connection stays open (above the 60 s proxies commonly use, so the proxy closes first). */
    keepAliveTimeoutSeconds: z.number().positive().max(3600).default(72),
    /** Requests served on one connection before it is closed; 0: no limit. */
    maxRequestsPerSocket: z.number().int().min(0).default(1000),
    /** Open connections in all; more are closed at once. */
    maxConnections: positiveInt.default(1024),
    /** Open connections from one client address; more are closed at once. 0: no per-address cap (behind a proxy every client has its address). */
    maxConnectionsPerIp: z.number().int().min(0).default(256),
    /** Largest request line + headers in bytes; larger get 431. */
    maxHeaderBytes: z.number().int().min(1024).max(1024 * 1024).default(16 * 1024),
    /**
     * Host names this server answers to (the Host header's name, without port; "*": any). Unset: only
     * requests without an API key (keyless mode) are checked, against localhost, 127.0.0.1, ::1, the bind
     * address and publicUrl's host. Set: every request is checked.
     */
    allowedHosts: z.array(z.string().min(1)).optional(),
    /** Public base URL for links this server hands out (image URLs); defaults to the listen address. */
    publicUrl: z.string().url().optional(),
    /** Reject parameters an engine cannot honour (true) or honour-or-warn (false). Default strict. */
    strictParameters: z.boolean().default(true),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    /** On SIGTERM/SIGINT, seconds requests and streams in flight may take to finish before they are stopped. */
    drainTimeoutSeconds: z.number().min(0).max(3600).default(30),
    /**
     * Browser pages on other origins that may call the API (CORS). Empty (the default): none, and a
     * keyless server grants none whatever is listed unless the origin is named exactly (never "*").
     */
    cors: corsSchema.default(() => corsSchema.parse({}, PARSE_ONCE)),
    /** GET /metrics (Prometheus text format). */
    metrics: metricsSchema.default(() => metricsSchema.parse({}, PARSE_ONCE)),
  })
  .strict()
  .refine((server) => server.headersTimeoutSeconds <= server.requestTimeoutSeconds, {
    path: ['headersTimeoutSeconds'],
    message: 'must not exceed server.requestTimeoutSeconds (the headers are part of the request)',
  });

export const storageSchema = z
  .object({
    /** Directory for the SQLite database, generated images and tiny models. */
    dataDir: z.string().default('.infera'),
    /** Where `infera pull` puts models, with its manifest.json (docs/MODELS.md). Default: <dataDir>/models. */
    modelsDir: z.string().optional(),
    /** postgres://... to keep keys and the ledger in Postgres (several replicas). */
    databaseUrl: z.string().optional(),
    /** redis://... to share rate-limit counters across replicas. */
    redisUrl: z.string().optional(),
    /** If Redis is unreachable: refuse requests (closed) or let them through unlimited (open). */
    redisFailure: z.enum(['closed', 'open']).default('closed'),
  })
  .strict();

export const presetsSchema = z
  .object({
    /** A preset catalogue of your own (YAML, the layout of src/models/presets.yaml); default: the built-in one. */
    file: z.string().optional(),
    /** With no models configured and none pulled, pull the `starter` set before serving (env INFERA_AUTO_PULL=1). */
    autoPull: z.boolean().default(false),
    /** Where presets are pulled from: Hugging Face (HF_ENDPOINT) or the ModelScope mirror a preset names (env INFERA_PULL_HUB). */
    hub: z.enum(['hf', 'ms']).default('hf'),
  })
  .strict();

export const imagesSchema = z
  .object({
    /** Where generated images are stored until they expire. Default: <dataDir>/images. */
    dir: z.string().optional(),
    /** Seconds an image URL stays valid (SiliconFlow: one hour). */
    ttlSeconds: positiveInt.default(3600),
    /** img2img URL fetches: allow loopback/private addresses (off: SSRF guard). */
    allowPrivateUrls: z.boolean().default(false),
    maxInputBytes: positiveInt.default(10 * 1024 * 1024),
    fetchTimeoutMs: positiveInt.default(10_000),
  })
  .strict();

/** The config schema for a server with these engines. */
export function configSchemaFor(table: EngineTable) {
  return z
    .object({
      server: serverSchema.default(() => serverSchema.parse({}, PARSE_ONCE)),
      storage: storageSchema.default(() => storageSchema.parse({}, PARSE_ONCE)),
      images: imagesSchema.default(() => imagesSchema.parse({}, PARSE_ONCE)),
      logging: loggingSchema.default(() => loggingSchema.parse({}, PARSE_ONCE)),
      /** OpenTelemetry traces (off by default). */
      tracing: tracingSchema.default(() => tracingSchema.parse({}, PARSE_ONCE)),
      /** Caps on the work one request may ask for (src/config/requests.ts). */
      requests: requestsSchema.default(() => requestsSchema.parse({}, PARSE_ONCE)),
      /** `infera pull --preset` and the presets served with no models configured (docs/MODELS.md). */
      presets: presetsSchema.default(() => presetsSchema.parse({}, PARSE_ONCE)),
      /** Keep-alive, the resident-model cap, the memory budget and the preload list (src/config/lifecycle.ts). */
      lifecycle: lifecycleSchema.default(() => lifecycleSchema.parse({}, PARSE_ONCE)),
      /** Served models. Empty (and no upstreams): the pulled presets, else Infera's tiny test models. */
      models: z.array(modelSchemaFor(table)).default([]),
      /** How requests are spread over the deployments of a model id that several entries share (src/routing/). */
      routing: routingSchema.default(() => routingSchema.parse({}, PARSE_ONCE)),
      /** Servers whose every listed model is served under its own id (engine openai-compatible's quick form). */
      upstreams: z.array(quickUpstreamSchema).default([]),
      /** Platform settings (keys, limits, pricing); owned by src/platform. */
      platform: z.record(z.string(), z.unknown()).default({}),
    })
    .strict();
}

/** The schemas for the built-in engine table (src/engines/index.ts). */
export const modelSchema = modelSchemaFor(defaultEngines);
export const configSchema = configSchemaFor(defaultEngines);

export type InferaConfig = z.infer<typeof configSchema>;
