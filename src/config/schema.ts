// The one schema for infera's config file (YAML or JSON). docs/CONFIGURATION.md documents every key.
// Engine-specific options live in their own sub-schemas so that each engine owns its knobs.
import { z } from 'zod';

const positiveInt = z.number().int().positive();

export const llamaCppOptionsSchema = z
  .object({
    /** Tokens of context per sequence. */
    contextSize: positiveInt.default(4096),
    /** Parallel sequences in one context: concurrent requests llama.cpp batches together. */
    sequences: positiveInt.default(4),
    /** CPU threads for llama.cpp. Always explicit: node-llama-cpp's default is badly wrong on small boxes. */
    threads: positiveInt.default(1),
    /** Layers to offload to a GPU; 0 = CPU only. "auto" lets node-llama-cpp decide. */
    gpuLayers: z.union([z.number().int().min(0), z.literal('auto')]).default(0),
    /** Use a GPU backend when one is present ("auto") or never (false). */
    gpu: z.union([z.literal('auto'), z.literal(false), z.enum(['cuda', 'vulkan', 'metal'])]).default(false),
    batchSize: positiveInt.optional(),
    /** Embedding/rerank: contexts in the pool (each handles one input at a time). */
    contexts: positiveInt.default(2),
  })
  .strict();

export const onnxOptionsSchema = z
  .object({
    /** Intra-op threads. Pinned: more than 2 threads changes float rounding and breaks seed determinism. */
    threads: positiveInt.default(2),
    executionProviders: z.array(z.enum(['cpu', 'cuda'])).default(['cpu']),
    /** One generation at a time per model unless raised. */
    concurrency: positiveInt.default(1),
    minSize: positiveInt.default(64),
    maxSize: positiveInt.default(1024),
    defaultSize: z.string().regex(/^\d+x\d+$/).default('512x512'),
    /** Use a tiny VAE (TAESD) folder for decoding when set. */
    tinyVaePath: z.string().optional(),
    /** img2img strength when the request gives none. */
    defaultStrength: z.number().min(0).max(1).default(0.6),
    /** Encoders (engine onnx): model file inside the folder when it is not model.onnx or onnx/model.onnx. */
    file: z.string().min(1).optional(),
    /**
     * Embedding models (engine onnx): how token states become one vector. Default: what the export's
     * 1_Pooling/config.json says; required when the folder has none and no `sentence_embedding` output.
     */
    pooling: z.enum(['cls', 'mean', 'last']).optional(),
    /** Encoders (engine onnx): rows per forward pass. */
    maxBatchSize: positiveInt.default(32),
    /** Encoders (engine onnx): padded tokens (rows × longest row) per forward pass, bounding its memory. */
    maxBatchTokens: positiveInt.default(16384),
  })
  .strict();

export const modelTypeSchema = z.enum(['chat', 'embedding', 'reranker', 'text-to-image']);

export const modelSchema = z
  .object({
    /** Public id clients send, e.g. "Qwen/QwQ-32B". Matched case-insensitively. */
    id: z.string().min(1),
    /** Other ids that resolve to this model (apps validate keys with fixed ids like deepseek-ai/DeepSeek-V3). */
    aliases: z.array(z.string().min(1)).default([]),
    type: modelTypeSchema,
    // Remote upstreams (vLLM, SGLang, TEI, Ollama, other Infera workers) are not implemented yet.
    engine: z.enum(['llama-cpp', 'onnx', 'onnx-diffusion']),
    /**
     * GGUF file (llama-cpp), encoder export folder (onnx: model.onnx + tokenizer.json) or Stable
     * Diffusion export folder (onnx-diffusion). Relative to the config file.
     */
    path: z.string().min(1),
    ownedBy: z.string().default('infera'),
    /** Load at startup instead of on first use. */
    eager: z.boolean().default(false),
    /** Requests allowed to wait for a slot; more get 503 + Retry-After. */
    maxQueue: z.number().int().min(0).default(64),
    /** Embedding models: supports Matryoshka truncation via `dimensions`. */
    matryoshka: z.boolean().default(false),
    /** Embedding models: pooling the model family expects, when the GGUF does not say. */
    normalize: z.boolean().default(true),
    /** Rerankers that take an `instruction` (Qwen3-Reranker style). */
    acceptsInstruction: z.boolean().default(false),
    /** Shown in /v1/models metadata; tiny test models say so here. */
    description: z.string().optional(),
    llamaCpp: llamaCppOptionsSchema.default(() => llamaCppOptionsSchema.parse({})),
    onnx: onnxOptionsSchema.default(() => onnxOptionsSchema.parse({})),
  })
  .strict()
  .superRefine((model, ctx) => {
    if (model.engine === 'onnx-diffusion' && model.type !== 'text-to-image')
      ctx.addIssue({ code: 'custom', path: ['type'], message: 'engine onnx-diffusion serves type text-to-image only' });
    if (model.engine === 'onnx' && model.type !== 'embedding' && model.type !== 'reranker')
      ctx.addIssue({ code: 'custom', path: ['type'], message: 'engine onnx serves type embedding or reranker (use onnx-diffusion for text-to-image)' });
    if (model.engine === 'llama-cpp' && model.type === 'text-to-image')
      ctx.addIssue({ code: 'custom', path: ['type'], message: 'engine llama-cpp does not serve text-to-image' });
  });

export const serverSchema = z
  .object({
    host: z.string().default('127.0.0.1'),
    port: z.number().int().min(0).max(65535).default(8000),
    /** Accepted bearer keys (in addition to INFERA_API_KEY and the key store). */
    apiKeys: z.array(z.string().min(8)).default([]),
    /** Guards /admin/*. */
    adminKey: z.string().min(8).optional(),
    /** Largest request body in bytes; larger bodies get 413. */
    bodyLimit: positiveInt.default(8 * 1024 * 1024),
    /** Public base URL for links this server hands out (image URLs); defaults to the listen address. */
    publicUrl: z.string().url().optional(),
    /** Reject parameters an engine cannot honour (true) or honour-or-warn (false). Default strict. */
    strictParameters: z.boolean().default(true),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    /** On SIGTERM/SIGINT, seconds requests and streams in flight may take to finish before they are stopped. */
    drainTimeoutSeconds: z.number().min(0).max(3600).default(30),
  })
  .strict();

export const storageSchema = z
  .object({
    /** Directory for the SQLite database, generated images and tiny models. */
    dataDir: z.string().default('.infera'),
    /** postgres://... to keep keys and the ledger in Postgres (several replicas). */
    databaseUrl: z.string().optional(),
    /** redis://... to share rate-limit counters across replicas. */
    redisUrl: z.string().optional(),
    /** If Redis is unreachable: refuse requests (closed) or let them through unlimited (open). */
    redisFailure: z.enum(['closed', 'open']).default('closed'),
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

export const configSchema = z
  .object({
    server: serverSchema.default(() => serverSchema.parse({})),
    storage: storageSchema.default(() => storageSchema.parse({})),
    images: imagesSchema.default(() => imagesSchema.parse({})),
    /** Served models. Empty: Infera generates and serves its tiny test models. */
    models: z.array(modelSchema).default([]),
    /** Platform settings (keys, limits, pricing); owned by src/platform. */
    platform: z.record(z.string(), z.unknown()).default({}),
  })
  .strict();

export type InferaConfig = z.infer<typeof configSchema>;
export type ModelConfig = z.infer<typeof modelSchema>;
export type LlamaCppOptions = z.infer<typeof llamaCppOptionsSchema>;
export type OnnxOptions = z.infer<typeof onnxOptionsSchema>;
export type ModelTypeName = z.infer<typeof modelTypeSchema>;
