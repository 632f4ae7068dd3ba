// Caps on the work one request may ask for (the `requests:` section of the config). Each is checked as
// early as its knowledge allows (wire caps while parsing, model-dependent ones before anything queues)
// and refused with a 400 (413 where it is about size) that names the field and the cap, so one client
// cannot turn a small body into minutes of compute or a stalled event loop. docs/CONFIGURATION.md
// documents each key. Zod only: the protocol layer imports this file.
import { z } from 'zod';
import { PARSE_ONCE } from './parse-once.ts';

const positiveInt = z.number().int().positive();

export const jsonSchemaLimitsSchema = z
  .object({
    /** Largest schema (response_format.json_schema.schema, one tool's parameters), as JSON text. */
    maxBytes: positiveInt.default(64 * 1024),
    /** Deepest nesting of objects and arrays inside one schema. */
    maxDepth: positiveInt.default(32),
    /** Most JSON values (objects, arrays, scalars) inside one schema; enum values count one each. */
    maxNodes: positiveInt.default(5000),
    /** Most values in one `enum`. */
    maxEnumValues: positiveInt.default(1000),
    /**
     * Longest a request's schemas (response_format, tools) may take to become a grammar, in ms. The caps
     * above keep it near 0.1 s; this one refuses what they let through anyway (a 400 after compiling).
     */
    maxCompileMs: positiveInt.default(1000),
  })
  .strict();

export const requestsSchema = z
  .object({
    /** Chat `n`: each choice is a full generation. */
    maxChoices: positiveInt.default(8),
    /** Chat `tools` (plus legacy `functions`): each offered tool's schema becomes grammar. */
    maxTools: positiveInt.default(128),
    jsonSchema: jsonSchemaLimitsSchema.default(() => jsonSchemaLimitsSchema.parse({}, PARSE_ONCE)),
    /**
     * Upper bound on characters per token, used to refuse text that cannot fit before it is tokenized
     * (tokenizing megabytes on the main thread stalls every other request). No real tokenizer packs
     * this many characters into every token of a text.
     */
    maxCharsPerToken: positiveInt.default(32),
    /** Embeddings: items in `input`. */
    maxEmbeddingInputs: positiveInt.default(2048),
    /** Embeddings: tokens summed over every input of one request (OpenAI's cap). */
    maxEmbeddingTokens: positiveInt.default(300_000),
    /** Rerank: documents in one request. */
    maxRerankDocuments: positiveInt.default(1024),
    /** Rerank: query–chunk pairs the model scores for one request (documents × their chunks). */
    maxRerankPairs: positiveInt.default(4096),
    /** Rerank: tokens the model evaluates for one request (every pair's query and chunk). */
    maxRerankTokens: positiveInt.default(500_000),
    /** Images: characters in `prompt` plus `negative_prompt` (the text encoder reads 77 tokens). */
    maxImagePromptChars: positiveInt.default(8192),
    /** Images: batch × width × height × steps of one request. */
    maxImagePixelSteps: positiveInt.default(4 * 1024 * 1024 * 50),
  })
  .strict();

export type RequestLimits = z.output<typeof requestsSchema>;
export type JsonSchemaLimits = z.output<typeof jsonSchemaLimitsSchema>;

export const DEFAULT_REQUEST_LIMITS: RequestLimits = requestsSchema.parse({}, PARSE_ONCE);
