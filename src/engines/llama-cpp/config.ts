// The llama-cpp engine's model entry: a GGUF `path` and the `llamaCpp` options block
// (docs/CONFIGURATION.md, "models[].llamaCpp"). zod only: imported by the config loader.
import { z } from 'zod';
import { engineModelSchema } from '../../config/model.ts';
import { PARSE_ONCE } from '../../config/parse-once.ts';

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
    /**
     * What drives llama.cpp. "ffi" is Infera's own loop over llama.cpp's C API (chat: one decode per
     * step over all sequences; embedding/rerank: concurrent inputs packed into one decode; a persistent
     * thread pool); when it cannot serve a model (koffi or the library layout unavailable, GPU offload,
     * a chat tool-call format other than <tool_call>) the model runs on "node-llama-cpp" instead, with
     * one log line saying why.
     */
    runner: z.enum(['ffi', 'node-llama-cpp']).default('ffi'),
    /**
     * FFI runner: the ggml CPU backend. "prebuilt" is node-llama-cpp's variant for this CPU; "native"
     * the module `scripts/build-llama-server.sh --cpu-backend` compiled on this machine from the same
     * llama.cpp commit (faster F16 kernels, docs/BENCHMARKS.md); "auto" the native one for embedding
     * and reranker models when that build is there, the prebuilt for chat. A native build that is missing or does not fit falls back to the prebuilt, with one log
     * line saying why (a warning when "native" was asked for). One per process: the first model wins.
     */
    cpuBackend: z.enum(['auto', 'prebuilt', 'native']).default('auto'),
    /** The native build's folder, when not the build script's cache (.infera/llama-server/<commit>/cpu-backend). */
    cpuBackendDir: z.string().min(1).optional(),
    /**
     * Embedding/rerank: contexts decoding at the same time, `threads` each. On node-llama-cpp a pool
     * (each context one input at a time); on the FFI runner each takes whatever is queued, packed into one decode.
     */
    contexts: positiveInt.default(2),
    /**
     * Embedding/rerank on the FFI runner: the most inputs packed into one llama_decode (llama.cpp's
     * n_seq_max, at most 256); the tokens of one decode are bounded by `contextSize`.
     */
    batchSequences: positiveInt.max(256).default(32),
    /**
     * Chat on the FFI runner: keep each finished sequence's KV and evaluate only what follows the longest
     * prefix a new request shares with a sequence (llama-server's cache_prompt; reported as
     * usage.prompt_tokens_details.cached_tokens). false evaluates every prompt in full. A request can
     * turn it off for itself with the top-level field `cache_prompt: false`.
     */
    promptCache: z.boolean().default(true),
    /**
     * Chat on the FFI runner: let llama.cpp repack weights into the CPU's extra buffer types (AMX,
     * interleaved layouts), as llama-server does by default; false is llama-server's --no-repack.
     */
    repack: z.boolean().default(true),
    /**
     * The FFI runner (chat) and encoders (embedding, reranker): how long the thread pool's workers spin
     * waiting for the next decode before they sleep (ggml's polling level, 0-100: llama-server's --poll,
     * default 50).
     */
    poll: z.number().int().min(0).max(100).default(50),
    /**
     * Chat (and embeddings, below) on the FFI runner in its engine process: where llama_decode runs. "loop" on the process's
     * loop thread (the step's JavaScript runs between decodes); "worker" on koffi's worker thread,
     * pipelined (the chat layer and the IPC message of one token run while the next decodes; two thread
     * hand-offs per step and one IPC message per token). On a loaded 2-core box at 1 thread "worker"
     * read +10 % t/s at +20 % engine CPU per token, but on a quiet one it lost every chat-512x8 cell to
     * "loop" by 12-26 % (docs/BENCHMARKS.md, dec7 and the end-of-session run of 2026-12-07 20:14-20:54),
     * so "loop" stays the default. A model in the server process (isolation: none) always decodes on the
     * worker, pipelined. An embedding model in its engine process follows this too for the inputs its
     * lone lane decodes whole (on the loop: 1 client 0.85-0.91x -> 1.03-1.08x llama-server, emb8); its
     * split half-thread decodes and rerankers stay on koffi's workers.
     */
    decodeOn: z.enum(['loop', 'worker']).default('loop'),
    /**
     * Chat on the FFI runner: llama.cpp's flash attention. "auto" is llama.cpp's own choice (on, on the
     * CPU backend, as llama-server's default); "on" / "off" force it (llama-server's --flash-attn on|off).
     * Left to llama.cpp because neither wins everywhere on the CPU (docs/BENCHMARKS.md): "off" decodes ~2x
     * faster with ~2,000 tokens of history, but prefills up to 17 % slower, decodes short multi-stream
     * batches ~10 % slower and reserves a larger compute buffer (the attention scores of a prompt batch).
     */
    flashAttention: z.enum(['auto', 'on', 'off']).default('auto'),
    /**
     * Validate the GGUF header (tensor count, sizes, types) before llama.cpp reads the file. false hands
     * it over unchecked, for a file the check wrongly refuses (a tensor type newer than its table): a bad
     * file then aborts inside llama.cpp, which costs only this model's engine process (isolation: process).
     */
    checkHeader: z.boolean().default(true),
  })
  .strict();

export const llamaCppModelSchema = engineModelSchema('llama-cpp', {
  /** The GGUF file. */
  path: z.string().min(1),
  llamaCpp: llamaCppOptionsSchema.default(() => llamaCppOptionsSchema.parse({}, PARSE_ONCE)),
});

export type LlamaCppOptions = z.infer<typeof llamaCppOptionsSchema>;
export type LlamaCppModelConfig = z.output<typeof llamaCppModelSchema>;
