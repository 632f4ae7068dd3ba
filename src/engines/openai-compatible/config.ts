// The openai-compatible engine's model entry: the common keys plus an `upstream` block naming the server
// that runs the model (docs/CONFIGURATION.md, "models[].upstream"). zod only: imported by the config
// loader and the CLI.
import { z } from 'zod';
import { engineModelSchema } from '../../config/model.ts';
import { PARSE_ONCE } from '../../config/parse-once.ts';

/** The servers this engine knows how to talk to; each has a file in ./dialects/. */
export const DIALECTS = ['openai', 'vllm', 'sglang', 'ollama', 'llama-server', 'tei', 'infinity', 'siliconflow', 'infera'] as const;
export type DialectName = (typeof DIALECTS)[number];

/** Context window assumed for a chat model when neither the entry nor the upstream's model list says. */
export const DEFAULT_REMOTE_CONTEXT = 32_768;

const positiveInt = z.number().int().positive();
const seconds = z.number().positive().max(86_400);

export const upstreamTimeoutsSchema = z
  .object({
    /** TCP (and TLS) connect. A refused or unreachable upstream fails at once with 502; this bounds a silent one. */
    connectSeconds: seconds.default(5),
    /**
     * Until the response headers arrive. A JSON answer comes only when generation is done, so this bounds
     * a whole non-streamed generation too.
     */
    firstByteSeconds: seconds.default(300),
    /** Longest silence between two pieces of a response body (an upstream that hangs after its headers). */
    idleSeconds: seconds.default(120),
    /** The whole request, first byte to last. */
    totalSeconds: seconds.default(1800),
  })
  .strict();

export const upstreamSchema = z
  .object({
    /** The upstream's API root as its clients use it, e.g. http://gpu1:8000/v1 (vLLM) or http://tei:8080 (TEI). */
    baseUrl: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }),
    /** The model's name upstream; default: this entry's id. */
    model: z.string().min(1).optional(),
    /** Which server it is: what differs from OpenAI's API (./dialects/). */
    dialect: z.enum(DIALECTS).default('openai'),
    /**
     * The environment variable holding the upstream's API key (sent as a bearer token). The key itself
     * never goes in the config file.
     */
    apiKeyEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, { error: 'must be an environment variable name' }).optional(),
    /** Extra headers sent with every request (routing hints, an organisation id…). */
    headers: z.record(z.string(), z.string()).default({}),
    /** How this upstream is named in errors and the ledger; default: host:port of baseUrl. */
    name: z.string().min(1).optional(),
    timeouts: upstreamTimeoutsSchema.default(() => upstreamTimeoutsSchema.parse({}, PARSE_ONCE)),
    /** Keep-alive connections to the upstream's origin (shared by every model on it). */
    maxConnections: positiveInt.default(64),
    /**
     * Chat: the context window. Default: what the upstream's model list says (vLLM/SGLang max_model_len,
     * llama-server n_ctx), else 32768.
     */
    contextSize: positiveInt.optional(),
    /**
     * Chat: `<think>` blocks in the answer text of an upstream that runs without a reasoning parser.
     * auto: a block at the very start is reasoning; open: the chat template opens the block (DeepSeek-R1,
     * QwQ), so the answer starts as reasoning; off: the text is left as it is.
     */
    thinkTags: z.enum(['auto', 'open', 'off']).default('auto'),
    /** Chat: `<tool_call>` blocks in the answer text (no tool parser upstream) become tool calls when the request has tools. */
    rawToolCalls: z.boolean().default(true),
    /** Ollama: use its native API (/api/chat, /api/embed) instead of its OpenAI-compatible /v1. */
    native: z.boolean().default(false),
    /**
     * A tokenizer.json (Hugging Face) for the model: Infera counts tokens with it when the upstream
     * reports no usage (TEI, some Ollama answers). Without one such counts are estimates from the text.
     * The ledger row says which.
     */
    tokenizer: z.string().min(1).optional(),
    /** Embedding models: the vector size (needed to refuse a `dimensions` the model cannot give). */
    dimensions: positiveInt.optional(),
    /** Embedding and rerank models: longest input in tokens (the character pre-check uses it). */
    maxInputTokens: positiveInt.default(8192),
    /** Image models: the sizes requests may ask for (checked before the upstream is asked). */
    minSize: positiveInt.default(64),
    maxSize: positiveInt.default(2048),
    maxPixels: positiveInt.default(2048 * 2048),
    defaultSize: z.string().regex(/^\d+x\d+$/).default('1024x1024'),
    /** Image models: whether the upstream takes an input image (img2img). */
    imageToImage: z.boolean().default(false),
  })
  .strict();

/** The model types each kind of server can serve (the dialect files implement exactly these). */
export const DIALECT_KINDS: Record<DialectName, readonly string[]> = {
  openai: ['chat', 'embedding', 'reranker', 'text-to-image'],
  vllm: ['chat', 'embedding', 'reranker'],
  sglang: ['chat', 'embedding', 'reranker'],
  ollama: ['chat', 'embedding'],
  'llama-server': ['chat', 'embedding', 'reranker'],
  tei: ['embedding', 'reranker'],
  infinity: ['embedding', 'reranker'],
  siliconflow: ['chat', 'embedding', 'reranker', 'text-to-image'],
  infera: ['chat', 'embedding', 'reranker', 'text-to-image'],
};

export const openaiCompatibleModelSchema = engineModelSchema('openai-compatible', {
  upstream: upstreamSchema,
  // No native code runs here, only sockets: the model lives in the server process and shares the
  // server's connection pools (an engine process per remote model would buy nothing but a hop).
  isolation: z.enum(['process', 'none']).default('none'),
}).superRefine((entry, ctx) => {
  const kinds = DIALECT_KINDS[entry.upstream.dialect];
  if (!kinds.includes(entry.type))
    ctx.addIssue({
      code: 'custom',
      path: ['upstream', 'dialect'],
      input: entry.upstream.dialect,
      message: `a ${entry.upstream.dialect} upstream serves ${kinds.join(', ')} models, not ${entry.type}`,
    });
});

export type UpstreamOptions = z.infer<typeof upstreamSchema>;
export type OpenAICompatibleModelConfig = z.output<typeof openaiCompatibleModelSchema>;

/**
 * The quick form (`upstreams:`, `infera serve --upstream URL`): every model the upstream lists is served
 * under its own id through this engine, with the defaults above; `dialect: auto` asks the server what it is.
 */
export const quickUpstreamSchema = z
  .object({
    baseUrl: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }),
    dialect: z.enum([...DIALECTS, 'auto']).default('auto'),
    apiKeyEnv: upstreamSchema.shape.apiKeyEnv,
    headers: z.record(z.string(), z.string()).default({}),
  })
  .strict();
