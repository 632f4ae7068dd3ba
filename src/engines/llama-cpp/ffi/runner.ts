// Infera's own llama.cpp generation loop: one model, one context, one persistent ggml thread pool.
// Every step is ONE llama_decode holding the next token of every running sequence plus bounded prompt
// chunks of newly admitted ones (continuous batching, as llama-server does it), and each sequence
// samples right after it on the same thread with llama.cpp's sampler chain. Between steps the loop
// yields to the event loop (setImmediate) so that cancellations and new requests get in; nothing ever
// blocks for a whole generation.
//
// llama.cpp aborts the process on a malformed batch (sequence id out of range, a position gap, no
// room in the KV cache) or on a grammar fed a token it does not allow: every batch is validated here
// before llama_decode, and tokens are only ever forced into a grammar that is still waiting for its
// trigger. The runner is meant to live in the model's own engine process for the remaining cases.
import { createArgmax } from './argmax.ts';
import { LLAMA_FLASH_ATTN_TYPE, LLAMA_POOLING_TYPE, type LlamaBindings, type LlamaLibrary, type Pointer } from './library.ts';

export interface RunnerOptions {
  /** Tokens of context per sequence. */
  contextSize: number;
  /** Parallel sequences (llama.cpp's n_seq_max). */
  sequences: number;
  /** Threads for single-token steps and for prompt batches. */
  threads: number;
  threadsBatch?: number;
  /**
   * llama.cpp's n_batch: the most tokens one decode may hold (default 2048, llama-server's). llama.cpp
   * splits a decode into micro-batches of n_ubatch tokens (512, llama-server's; the compute buffer is
   * sized by it), so a larger n_batch costs no memory.
   */
  batchSize?: number;
  /**
   * Prompt tokens per step across all prefilling sequences while some sequence is generating, so that
   * running streams keep their pace. A step with no sequence generating has no pace to keep and takes
   * prompt tokens up to `idlePrefill`.
   */
  prefillChunk?: number;
  /**
   * Prompt tokens one step takes while no sequence is generating (default: the whole batch, as
   * llama-server fills its n_batch): a burst of requests reaching an idle runner is prefilled in one
   * decode, so that all their first tokens come out of the same step. (The price, llama-server's too:
   * a cancellation or a request arriving meanwhile waits for that whole decode.)
   */
  idlePrefill?: number;
  /**
   * Where llama_decode runs. 'loop': on the calling thread (no hop at all; the step's JavaScript runs
   * between decodes). 'worker': on koffi's worker thread, one hop per step, pipelined: the tokens of a
   * decode are chosen on the loop's thread, the next decode starts at once, and only then do the owners'
   * onToken (the chat layer, the IPC message) run, on the loop's thread while the worker decodes. That
   * pays where a CPU is free besides the decode's threads (a server process that also answers HTTP; an
   * engine process whose pool leaves a core free), not where the pool takes every core. Sampling is on
   * the loop's thread either way. Default 'worker'.
   */
  decodeOn?: 'loop' | 'worker';
  /**
   * Prompt cache (llama-server's cache_prompt): a finished sequence keeps its KV, and a new request
   * evaluates only what follows the longest prefix it shares with any sequence (in place, or copied
   * from another sequence with llama_memory_seq_cp). Default true.
   */
  promptCache?: boolean;
  /**
   * Choose what llama.cpp's chain as written would, for less: the runner applies penalties and the
   * logit bias to the logits itself (PenaltyWindow) and hands a large top_k only the candidates it can
   * end on (see createSampler). Default true; false runs every chain through llama_sampler_sample as
   * written (tests compare the two).
   */
  fastSampling?: boolean;
  /** Weights repacked into the CPU's extra buffer types (llama.cpp's default); false: llama-server's --no-repack. */
  repack?: boolean;
  /**
   * Plain greedy sequences (no bias, penalties, grammar or logprobs) pick their token inside the decode
   * (llama.cpp's backend sampling, llama-server's --backend-sampling): an argmax node in the graph, so
   * neither the logits row is copied out nor a llama_token_data array filled over the vocabulary.
   * Default false: on the CPU backend ggml's argmax is one thread's scalar loop, slower than the copy
   * and llama_sampler_sample it saves (152k vocabulary, 2 threads: decode +1.1 ms a step at 1 stream,
   * +3.9 ms at 8, choosing −0.4 / −2.9 ms; bench/decode-step.ts, docs/BENCHMARKS.md). Where the logits
   * would have to come back from a GPU it is the cheaper way.
   */
  backendGreedy?: boolean;
  /**
   * ggml's polling level for the pool's workers between graphs (0: sleep on a condition variable at
   * once, 100: spin longest; ggml's and llama.cpp's default 50).
   */
  poll?: number;
  /** llama.cpp's flash_attn_type: 'auto' (its default) or forced on/off. */
  flashAttention?: 'auto' | 'on' | 'off';
}

/**
 * Fewer shared tokens than this are not worth a stream copy (llama_memory_seq_cp across per-sequence
 * streams copies the whole stream: every layer's K and V for the context) or waiting for another
 * sequence's prefill.
 */
export const COPY_MIN_GAIN = 16;

/** RunnerOptions.flashAttention as llama.cpp's flash_attn_type ('auto' is its default, -1). */
const FLASH_ATTENTION = { auto: LLAMA_FLASH_ATTN_TYPE.auto, on: LLAMA_FLASH_ATTN_TYPE.enabled, off: LLAMA_FLASH_ATTN_TYPE.disabled } as const;

/** A prompt sharing this much of the prompt a free sequence was last given continues that sequence's conversation. */
const CONTINUATION = 0.9;

export interface Penalties {
  lastN: number;
  repeat: number;
  frequency: number;
  presence: number;
}

export interface GrammarSpec {
  /** GBNF text. */
  text: string;
  root?: string;
  /** Lazy grammar: unconstrained until one of these tokens is sampled (or forced), which the grammar must start with. */
  triggerTokens?: number[];
}

export interface SamplingSpec {
  /** 0 = greedy. */
  temperature: number;
  topP?: number;
  topK?: number;
  minP?: number;
  seed?: number;
  penalties?: Penalties;
  /** Token → logit bias (-Infinity bans it). */
  logitBias?: [number, number][];
  grammar?: GrammarSpec;
}

export interface TokenLogprobs {
  logprob: number;
  /** Most likely tokens first. */
  top: { token: number; logprob: number }[];
}

/** What the owner of a sequence sees after each sampled token, on the loop's thread. */
export interface TokenEvent {
  token: number;
  /** The token's text bytes (special tokens rendered as text, control tokens empty). */
  piece: Uint8Array;
  isEog: boolean;
  logprobs?: TokenLogprobs;
}

/**
 * What the owner wants next: continue (undefined), stop now, or feed these tokens before sampling
 * again (a closing think tag when the thought budget runs out). Forced tokens must be legal for the
 * sequence's grammar: only force while a lazy grammar still waits for its trigger, or into its trigger.
 */
export type TokenDecision = undefined | 'stop' | { force: number[] };

export interface GenerationSpec {
  prompt: number[];
  sampling: SamplingSpec;
  /** Tokens this sequence may generate (sampled + forced); the owner enforces finer limits. */
  maxTokens: number;
  /** Top alternatives to report per token (0..20); undefined = no logprobs. */
  topLogprobs?: number;
  /** false: evaluate the whole prompt even if a sequence holds a prefix of it (a request's `cache_prompt: false`). */
  cachePrompt?: boolean;
  onToken(event: TokenEvent): TokenDecision;
}

export type EndReason = 'eog' | 'length' | 'stopped' | 'cancelled';

export interface GenerationEnd {
  reason: EndReason;
  promptTokens: number;
  /** Prompt tokens found in the sequence's KV from an earlier request (not evaluated again). */
  cachedPromptTokens: number;
  /** Sampled + forced tokens. */
  generatedTokens: number;
}

export interface Generation {
  readonly done: Promise<GenerationEnd>;
  /** Ends the sequence at the next step (the promise resolves with 'cancelled'), or rejects it with `error`. */
  cancel(error?: Error): void;
}

const MAX_TOP_LOGPROBS = 20;
/** llama.h's llama_token_data (id, logit, p) and llama_token_data_array (layout.test.ts checks both). */
const TOKEN_DATA_BYTES = 12;
const TOKEN_DATA_ARRAY_BYTES = 32;
const TOKEN_DATA_ARRAY = { data: 0, size: 8, selected: 16, sorted: 24 } as const;
/** The top_k prefilter before penalties runs only where it leaves out most of the vocabulary. */
const PREFILTER_RATIO = 8;
/** llama.cpp's top_k partially sorts up to this many (llama_token_data_array_partial_sort_inplace), bucket-sorts more. */
const LLAMA_PARTIAL_SORT_MAX = 128;

/** Repetition ≥ 1 and non-negative frequency and presence penalties never raise a logit. */
function penaltiesOnlyLower(penalties: Penalties): boolean {
  return penalties.lastN > 0 && penalties.repeat >= 1 && penalties.frequency >= 0 && penalties.presence >= 0;
}

/**
 * How a sequence's tokens are chosen. 'chain': llama_sampler_sample (llama.cpp fills a llama_token_data
 * for every token of the vocabulary, 1.8 MB for 152k tokens, and runs the chain over it: top_k then
 * passes over all of it). 'candidates': the `candidates` highest logits go to the chain in
 * the runner's own llama_token_data_array (llama_sampler_apply), where there are more than llama.cpp
 * sorts fast (LLAMA_PARTIAL_SORT_MAX). 'argmax': plain greedy (no bias, penalties or grammar) reads the
 * logits row with the WebAssembly SIMD argmax of ffi/argmax.ts: ~66 µs over 152k tokens where llama.cpp's
 * fill and greedy took 140-440 and a JavaScript loop 370 (docs/BENCHMARKS.md, "greedy argmax").
 */
interface Sampler {
  /** llama.cpp's chain; without the logit bias and the penalties where the runner applies them (`inPlace`). */
  chain: Pointer;
  mode: 'chain' | 'candidates' | 'argmax';
  candidates: number;
  /**
   * The runner writes the logit bias and then the penalties into llama.cpp's logits for the moment of
   * the choice (and puts them back after): always in 'candidates' mode, and in 'chain' mode where there
   * are penalties (see PenaltyWindow).
   */
  inPlace: boolean;
  /** The logit bias, in the order given (llama.cpp adds each entry in turn); empty unless `inPlace`. */
  biasTokens: Int32Array;
  biasValues: Float32Array;
  /** The penalties, kept by the runner where `inPlace`; else they are a sampler of the chain. */
  penalties: PenaltyWindow | undefined;
  /** Plain greedy: the token is chosen inside the decode (RunnerOptions.backendGreedy) where the slot allows it. */
  backend: boolean;
  /** Temperature 0: the chain ends in llama.cpp's greedy sampler. */
  greedy: boolean;
}

/**
 * llama.cpp's penalties sampler, done by the runner: the same window of the last N accepted tokens and
 * their counts, and the same arithmetic (float32, repeat then frequency and presence) applied to the
 * window's tokens only. llama.cpp's sampler instead looks every token of the array it is given up in a
 * hash map, 2-3 ms per token over a 152k vocabulary (bench/sampler-cost.ts), which is why chains had
 * to be prefiltered to top_k(k + lastN) before it; with the penalties written into the logits, top_k
 * runs as written, through llama.cpp's partial sort (bench/choose-cpu.ts, docs/BENCHMARKS.md).
 */
class PenaltyWindow {
  readonly counts = new Map<number, number>();
  private readonly ring: Int32Array;
  private size = 0;
  private head = 0;
  readonly repeat: number;
  readonly frequency: number;
  readonly presence: number;

  constructor(penalties: Penalties) {
    this.ring = new Int32Array(penalties.lastN);
    this.repeat = Math.fround(penalties.repeat);
    this.frequency = Math.fround(penalties.frequency);
    this.presence = Math.fround(penalties.presence);
  }

  /** llama_sampler_penalties_accept: count the token, then drop the oldest when the window is full. */
  accept(token: number): void {
    const { counts, ring } = this;
    counts.set(token, (counts.get(token) ?? 0) + 1);
    if (this.size >= ring.length) {
      const old = ring[this.head]!;
      const left = counts.get(old)! - 1;
      if (left === 0) counts.delete(old);
      else counts.set(old, left);
      ring[this.head] = token;
      this.head = (this.head + 1) % ring.length;
    } else {
      ring[(this.head + this.size) % ring.length] = token;
      this.size++;
    }
  }

  /** llama_sampler_penalties_apply's arithmetic for one token seen `count` times (float32 at every step, as in C). */
  penalise(logit: number, count: number): number {
    const scaled = logit <= 0 ? Math.fround(logit * this.repeat) : Math.fround(logit / this.repeat);
    return Math.fround(scaled - Math.fround(Math.fround(count * this.frequency) + this.presence));
  }
}

/** llama.cpp leaves the penalties out of a chain (llama_sampler_init_empty) for these settings. */
function penaltiesDisabled(penalties: Penalties): boolean {
  return penalties.lastN <= 0 || (Math.fround(penalties.repeat) === 1 && Math.fround(penalties.frequency) === 0 && Math.fround(penalties.presence) === 0);
}

interface Sequence {
  id: number;
  spec: GenerationSpec;
  sampler: Sampler;
  /** Tokens still to evaluate before the next sample (prompt, then forced tokens). */
  pending: number[];
  pendingAt: number;
  /** The token sampled last, to be fed at the next step. */
  next: number | undefined;
  /** Tokens that are in this sequence's KV cache, in order (positions 0..n-1). */
  kv: number[];
  /**
   * Whether its KV has been prepared for the prompt (cached prefix trimmed or copied in). That happens
   * at the first step after generate(), between decodes: a decode may be running on the worker when
   * generate() is called, and nothing may touch the KV then.
   */
  started: boolean;
  useCache: boolean;
  generated: number;
  cachedPromptTokens: number;
  ended: boolean;
  cancelError: Error | undefined;
  cancelled: boolean;
  resolve(end: GenerationEnd): void;
  reject(error: Error): void;
}

interface BatchOutput {
  sequence: Sequence;
  index: number;
}

/** Runs generations on one llama.cpp context. */
export class LlamaRunner {
  readonly contextSize: number;
  readonly sequences: number;
  readonly vocabSize: number;
  private readonly api: LlamaBindings;
  /** The model's llama_vocab (ffi/vocab.ts reads the tokenizer through it). */
  readonly vocab: Pointer;
  private readonly memory: Pointer;
  private readonly batchSize: number;
  private readonly prefillChunk: number;
  private readonly idlePrefill: number;
  private readonly batch: {
    struct: Record<string, unknown>;
    token: Int32Array;
    pos: Int32Array;
    nSeqId: Int32Array;
    seqId: Int32Array[];
    logits: Int8Array;
  };
  /**
   * What each sequence id's KV holds after its last request (prompt cache), or empty; while busy, the
   * running Sequence's `kv` is the truth. `used`: when it was last taken or released (LRU eviction);
   * `prompt`: the length of the last prompt it was given.
   */
  private readonly slots: { busy: Sequence | undefined; kv: number[]; used: number; prompt: number; greedy: Pointer; attached: boolean }[];
  private clock = 0;
  private readonly promptCache: boolean;
  private readonly fastSampling: boolean;
  private readonly backendGreedy: boolean;
  /** Undefined without WebAssembly SIMD: greedy then stays on llama_sampler_sample. */
  private readonly argmax = createArgmax();
  /** 'candidates' mode: the runner's llama_token_data_array and its data, grown on demand. */
  private candidateArray: { struct: Pointer; view: DataView; data: Pointer; address: bigint; capacity: number; ids: Int32Array; logits: Float32Array } | undefined;
  private heapIds = new Int32Array(0);
  private heapValues = new Float64Array(0);
  /** What choose() wrote into the logits (bias, penalties), to put back after the choice. */
  private savedTokens = new Int32Array(0);
  private readonly logitsViews = new Map<bigint, Float32Array>();
  private savedLogits = new Float32Array(0);
  private readonly pieces: (Uint8Array | undefined)[];
  private readonly eog: Uint8Array;
  private threadpool: Pointer;
  private scheduled = false;
  /**
   * Set by the chat model: how long (ms) a first step from idle should wait for requests already on
   * their way (their prompt was checked, their generation not started yet), 0 for none. See step().
   */
  admissionHold: (() => number) | undefined;
  /** The longest one first step waits on admissionHold, however many checks keep coming. */
  admissionHoldMaxMs = 40;
  private holdTimer: NodeJS.Timeout | undefined;
  private holdSince = 0;
  private disposed = false;
  private readonly decodeOnWorker: boolean;
  readonly decodeOn: 'loop' | 'worker';
  /** A decode is running on the worker: nothing may touch the context, the batch or the KV until it returns. */
  private decoding = false;
  private idleWaiters: (() => void)[] = [];
  /** Counters for benchmarks and tests. */
  readonly stats = {
    steps: 0,
    decodeMs: 0,
    /** The sampling pass after each decode: choosing the tokens and the owners' onToken. */
    sampleMs: 0,
    /** The part of sampleMs spent choosing tokens (sampler chains, argmax, candidates). */
    chooseMs: 0,
    tokens: 0,
    promptTokens: 0,
    cachedPromptTokens: 0,
    copies: 0,
    prefilteredChains: 0,
    /** Tokens chosen in 'candidates' mode (createSampler). */
    candidateTokens: 0,
    /** Tokens chosen inside the decode (backendGreedy). */
    backendTokens: 0,
    /** Plain greedy tokens chosen by the runner's argmax ('argmax' mode). */
    argmaxTokens: 0,
    /** Tokens chosen by the whole chain with the penalties applied by the runner (PenaltyWindow). */
    penalisedTokens: 0,
  };

  private constructor(
    private readonly lib: LlamaLibrary,
    private readonly model: Pointer,
    private readonly context: Pointer,
    options: Required<RunnerOptions>,
  ) {
    const { api, koffi } = lib;
    this.api = api;
    this.vocab = api.llama_model_get_vocab(model);
    this.memory = api.llama_get_memory(context);
    this.vocabSize = api.llama_vocab_n_tokens(this.vocab) as number;
    this.contextSize = options.contextSize;
    this.sequences = options.sequences;
    this.batchSize = api.llama_n_batch(context) as number;
    this.prefillChunk = Math.max(1, Math.min(options.prefillChunk, this.batchSize - options.sequences));
    this.idlePrefill = Math.max(1, Math.min(options.idlePrefill, this.batchSize));
    this.decodeOn = options.decodeOn;
    this.decodeOnWorker = options.decodeOn === 'worker';
    this.promptCache = options.promptCache;
    this.fastSampling = options.fastSampling;
    this.backendGreedy = options.backendGreedy;
    this.threadpool = lib.newThreadpool(options.threads, options.poll);
    // One pool for both: llama-server attaches a batch pool only when its thread count differs.
    api.llama_attach_threadpool(context, this.threadpool, this.threadpool);

    const raw = api.llama_batch_init(this.batchSize, 0, 1) as Record<string, unknown>;
    const view = (pointer: unknown, bytes: number) => koffi.view(pointer, bytes);
    const seqIdPointers = koffi.decode(raw.seq_id, koffi.array('void *', this.batchSize)) as unknown[];
    this.batch = {
      struct: raw,
      token: new Int32Array(view(raw.token, this.batchSize * 4)),
      pos: new Int32Array(view(raw.pos, this.batchSize * 4)),
      nSeqId: new Int32Array(view(raw.n_seq_id, this.batchSize * 4)),
      seqId: seqIdPointers.map((pointer) => new Int32Array(view(pointer, 4))),
      logits: new Int8Array(view(raw.logits, this.batchSize)),
    };
    this.batch.nSeqId.fill(1);
    this.slots = Array.from({ length: this.sequences }, () => ({ busy: undefined, kv: [], used: 0, prompt: 0, greedy: undefined, attached: false }));
    this.pieces = new Array(this.vocabSize);
    this.eog = new Uint8Array(this.vocabSize);
    for (let token = 0; token < this.vocabSize; token++) if (api.llama_vocab_is_eog(this.vocab, token)) this.eog[token] = 1;
  }

  /** Loads the model and creates the context (synchronously: run it in the engine process). */
  static load(lib: LlamaLibrary, path: string, options: RunnerOptions): LlamaRunner {
    const { api } = lib;
    const modelParams = { ...(api.llama_model_default_params() as Record<string, unknown>), n_gpu_layers: 0, use_extra_bufts: options.repack ?? true };
    const model = api.llama_model_load_from_file(path, modelParams);
    if (!model) throw new Error(`llama.cpp could not load ${path}`);
    const threadsBatch = options.threadsBatch ?? options.threads;
    // No more context per sequence than the model was trained for (node-llama-cpp's rule too).
    const trained = api.llama_model_n_ctx_train(model) as number;
    const contextSize = trained > 0 ? Math.min(options.contextSize, trained) : options.contextSize;
    const batchSize = Math.max(options.batchSize ?? 2048, options.sequences);
    // Micro-batches as llama-server's (-ub 512): prompt batches above it are split inside llama_decode.
    const microBatch = Math.min(batchSize, Math.max(512, options.sequences));
    const contextParams = {
      ...(api.llama_context_default_params() as Record<string, unknown>),
      // Per-sequence KV streams (kv_unified off, as llama-server with -np N): attention in each
      // sequence only reads its own cells.
      n_ctx: contextSize * options.sequences,
      n_seq_max: options.sequences,
      n_batch: batchSize,
      n_ubatch: microBatch,
      // One output per sequence per decode at most (a sequence's next token, or its prompt's last):
      // llama.cpp sizes the worst-case graph (the logits of n_outputs_max rows) by it, 300 MiB of compute
      // buffer for a 152k vocabulary at the default n_batch, twice that with backend sampling.
      n_outputs_max: options.sequences,
      n_threads: options.threads,
      n_threads_batch: threadsBatch,
      pooling_type: LLAMA_POOLING_TYPE.none,
      kv_unified: false,
      no_perf: true,
      flash_attn_type: FLASH_ATTENTION[options.flashAttention ?? 'auto'],
    };
    const context = api.llama_init_from_model(model, contextParams);
    if (!context) {
      api.llama_model_free(model);
      throw new Error(`llama.cpp could not create a context of ${contextSize}×${options.sequences} tokens for ${path}`);
    }
    return new LlamaRunner(lib, model, context, {
      contextSize: api.llama_n_ctx_seq(context) as number,
      sequences: options.sequences,
      threads: options.threads,
      threadsBatch,
      batchSize,
      prefillChunk: options.prefillChunk ?? 256,
      idlePrefill: options.idlePrefill ?? batchSize,
      decodeOn: options.decodeOn ?? 'worker',
      promptCache: options.promptCache ?? true,
      fastSampling: options.fastSampling ?? true,
      repack: options.repack ?? true,
      backendGreedy: options.backendGreedy ?? false,
      poll: options.poll ?? 50,
      flashAttention: options.flashAttention ?? 'auto',
    });
  }

  get active(): number {
    return this.slots.filter((slot) => slot.busy).length;
  }

  /** The bytes of a token's text; control tokens (end of turn, ...) render empty. */
  piece(token: number): Uint8Array {
    let piece = this.pieces[token];
    if (piece === undefined) {
      const buffer = new Uint8Array(64);
      let length = this.api.llama_token_to_piece(this.vocab, token, buffer, 64, 0, false) as number;
      if (length < 0) {
        const larger = new Uint8Array(-length);
        length = this.api.llama_token_to_piece(this.vocab, token, larger, -length, 0, false) as number;
        piece = larger.slice(0, length);
      } else piece = buffer.slice(0, length);
      this.pieces[token] = piece;
    }
    return piece;
  }

  /** llama.cpp's own tokenizer (special tokens parsed), for benchmarks and tests; chat prompts come from the chat wrapper. */
  tokenize(text: string, addSpecial = false): number[] {
    const bytes = Buffer.from(text, 'utf8');
    let out = new Int32Array(bytes.length + 8);
    let count = this.api.llama_tokenize(this.vocab, bytes, bytes.length, out, out.length, addSpecial, true) as number;
    if (count < 0) {
      out = new Int32Array(-count);
      count = this.api.llama_tokenize(this.vocab, bytes, bytes.length, out, out.length, addSpecial, true) as number;
    }
    return Array.from(out.subarray(0, count));
  }

  isEog(token: number): boolean {
    return this.eog[token] === 1;
  }

  /**
   * Starts a generation on a free sequence. The caller admits at most `sequences` at once (the chat
   * model's Slots); a call with none free throws.
   */
  generate(spec: GenerationSpec): Generation {
    if (this.disposed) throw new Error('the llama.cpp runner is closed');
    if (spec.prompt.length === 0) throw new Error('empty prompt');
    if (spec.prompt.length + spec.maxTokens > this.contextSize)
      throw new Error(`prompt (${spec.prompt.length}) + max tokens (${spec.maxTokens}) exceed the context (${this.contextSize})`);
    for (const token of spec.prompt) this.checkToken(token);
    const useCache = this.promptCache && spec.cachePrompt !== false;
    const id = this.pickSlot(spec.prompt, useCache);
    if (id < 0) throw new Error('no free sequence');
    const slot = this.slots[id]!;
    const sampler = this.createSampler(spec.sampling, spec.topLogprobs !== undefined);
    let resolve!: (end: GenerationEnd) => void;
    let reject!: (error: Error) => void;
    const done = new Promise<GenerationEnd>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const sequence: Sequence = {
      id,
      spec,
      sampler,
      pending: spec.prompt,
      pendingAt: 0,
      next: undefined,
      kv: slot.kv,
      started: false,
      useCache,
      generated: 0,
      cachedPromptTokens: 0,
      ended: false,
      cancelError: undefined,
      cancelled: false,
      resolve,
      reject,
    };
    slot.busy = sequence;
    slot.used = ++this.clock;
    this.schedule();
    return {
      done,
      cancel: (error?: Error) => {
        if (sequence.ended) return;
        sequence.cancelled = true;
        sequence.cancelError = error;
        this.schedule();
      },
    };
  }

  /**
   * A free sequence id for a prompt. In place: the free sequence sharing the longest prefix with it,
   * if that keeps at least half of what the sequence holds, or nearly all of the prompt it was last
   * given (a conversation's next turn: templates re-render the last answer, and a reasoning model's
   * history drops its thoughts, so the KV of a long answer is often not reusable). Otherwise the least
   * recently used free sequence (an empty one first) is evicted; a prefix shared with another sequence
   * (a common system prompt) is then copied into it at its first step.
   */
  private pickSlot(prompt: number[], useCache: boolean): number {
    let best = -1;
    let bestShared = 0;
    if (useCache)
      for (const [id, slot] of this.slots.entries()) {
        if (slot.busy) continue;
        const shared = commonPrefix(slot.kv, prompt);
        if (shared > bestShared && (shared * 2 >= slot.kv.length || shared >= slot.prompt * CONTINUATION)) {
          best = id;
          bestShared = shared;
        }
      }
    if (best >= 0) return best;
    let oldest = Infinity;
    for (const [id, slot] of this.slots.entries()) {
      if (slot.busy) continue;
      const age = slot.kv.length === 0 ? -1 : slot.used;
      if (age < oldest) {
        best = id;
        oldest = age;
      }
    }
    return best;
  }

  /**
   * Prepares a new sequence's KV for its prompt, between decodes: keeps the longest prefix it can get
   * (its own cached tokens, or a copy of another sequence's) and drops the rest. Returns false to wait
   * a step: another sequence is evaluating a longer shared prefix right now (n > 1, or requests with
   * one system prompt arriving together), to be copied once it is in the KV.
   */
  private start(sequence: Sequence): boolean {
    const { api, memory } = this;
    const prompt = sequence.spec.prompt;
    // At least the last prompt token is evaluated: its logits are the first sample's.
    const limit = prompt.length - 1;
    let keep = sequence.useCache ? Math.min(commonPrefix(sequence.kv, prompt), limit) : 0;
    if (sequence.useCache) {
      let source = -1;
      let sourceShared = keep;
      let awaited = 0;
      for (const [id, slot] of this.slots.entries()) {
        if (id === sequence.id) continue;
        const other = slot.busy;
        const shared = Math.min(commonPrefix(other ? other.kv : slot.kv, prompt), limit);
        if (shared > sourceShared) {
          source = id;
          sourceShared = shared;
        }
        if (other?.started && other.pending === other.spec.prompt && other.pendingAt < other.pending.length)
          awaited = Math.max(awaited, Math.min(commonPrefix(other.spec.prompt, prompt), limit));
      }
      if (awaited >= Math.max(keep, sourceShared) + COPY_MIN_GAIN) return false;
      if (source >= 0 && sourceShared >= keep + COPY_MIN_GAIN) {
        // Per-sequence streams: the copy is of the whole stream, queued by llama.cpp and done at the
        // start of the next llama_decode (before that decode writes anything); the cells past the
        // shared prefix are then dropped from this sequence.
        api.llama_memory_seq_cp(memory, source, sequence.id, -1, -1);
        const other = this.slots[source]!;
        sequence.kv = (other.busy ? other.busy.kv : other.kv).slice(0, sourceShared);
        keep = sourceShared;
        this.stats.copies++;
        if (!api.llama_memory_seq_rm(memory, sequence.id, keep, -1)) keep = this.clearSequence(sequence);
      }
    }
    if (keep < sequence.kv.length) {
      if (api.llama_memory_seq_rm(memory, sequence.id, keep, -1)) sequence.kv.length = keep;
      // A partial removal can fail (llama.cpp's rule for some memory types): start the sequence over.
      else keep = this.clearSequence(sequence);
    }
    this.setBackendSampler(sequence);
    sequence.pendingAt = keep;
    sequence.cachedPromptTokens = keep;
    sequence.started = true;
    // (Here, not at admission: a request cancelled before its first step leaves the KV as it was.)
    this.slots[sequence.id]!.prompt = prompt.length;
    this.stats.promptTokens += prompt.length;
    this.stats.cachedPromptTokens += keep;
    return true;
  }

  /**
   * Attaches the slot's greedy chain to llama.cpp's context for a backend-greedy sequence, or detaches it
   * for any other. The chain stays attached between requests (llama.cpp re-reserves its graph on every
   * change: a few ms), is the runner's (greedy keeps no state) and is freed when detached or with the context.
   */
  private setBackendSampler(sequence: Sequence): void {
    const { api } = this;
    const slot = this.slots[sequence.id]!;
    if (sequence.sampler.backend) {
      if (slot.attached) return;
      if (!slot.greedy) {
        slot.greedy = api.llama_sampler_chain_init(api.llama_sampler_chain_default_params());
        api.llama_sampler_chain_add(slot.greedy, api.llama_sampler_init_greedy());
      }
      slot.attached = api.llama_set_sampler(this.context, sequence.id, slot.greedy) as boolean;
      if (!slot.attached) {
        // llama.cpp declined (a backend that cannot run the chain): choose on the host as before.
        api.llama_sampler_free(slot.greedy);
        slot.greedy = undefined;
        sequence.sampler.backend = false;
      }
    } else if (slot.attached) {
      // A chain is initialised for the backend once (a second llama_set_sampler of it aborts): a new one next time.
      api.llama_set_sampler(this.context, sequence.id, null);
      api.llama_sampler_free(slot.greedy);
      slot.greedy = undefined;
      slot.attached = false;
    }
  }

  private clearSequence(sequence: Sequence): 0 {
    this.api.llama_memory_seq_rm(this.memory, sequence.id, -1, -1);
    sequence.kv = [];
    return 0;
  }

  private checkToken(token: number): void {
    if (!Number.isInteger(token) || token < 0 || token >= this.vocabSize) throw new Error(`token ${token} is outside the vocabulary`);
  }

  /** `logprobs`: the sequence reports logprobs, so its logits must reach the host (no backend sampling). */
  private createSampler(sampling: SamplingSpec, logprobs = false): Sampler {
    const { api } = this;
    const bias = sampling.logitBias ?? [];
    for (const [token] of bias) this.checkToken(token);
    const penalties = sampling.penalties;
    const topK = sampling.temperature > 0 && sampling.topK !== undefined && sampling.topK > 0 ? sampling.topK : 0;
    // Outside grammar chains the runner applies the bias and the penalties to the logits itself (see
    // PenaltyWindow), so what is left of the chain is top_k and the rest over the vocabulary as written.
    // With a top_k above what llama.cpp sorts fast, only the top k of those logits go to the chain: any
    // other token has k tokens above it and can never be kept.
    let mode: Sampler['mode'] = 'chain';
    let candidates = 0;
    const fast = this.fastSampling && !sampling.grammar;
    const penaltiesInPlace = fast && penalties !== undefined && !penaltiesDisabled(penalties);
    if (fast && topK > LLAMA_PARTIAL_SORT_MAX && topK * PREFILTER_RATIO <= this.vocabSize) {
      // (bench/choose-cpu.ts: a top_k of 296 over 152k tokens 734 µs of CPU in llama.cpp's bucket sort,
      // 576 in the selection here; top_k 40: llama.cpp 144 µs, the selection 360.)
      mode = 'candidates';
      candidates = topK;
    }
    const inPlace = mode === 'candidates' || penaltiesInPlace;
    // Greedy with nothing to apply first (no bias, penalties or grammar; then nothing is in place either).
    const plainGreedy = sampling.temperature <= 0 && !sampling.grammar && bias.length === 0 && (penalties === undefined || penaltiesDisabled(penalties));
    if (fast && this.argmax && plainGreedy) mode = 'argmax';
    const chain = api.llama_sampler_chain_init(api.llama_sampler_chain_default_params());
    const add = (sampler: Pointer) => {
      if (!sampler) {
        api.llama_sampler_free(chain);
        throw new Error('llama.cpp refused a sampler setting');
      }
      api.llama_sampler_chain_add(chain, sampler);
    };
    try {
      if (!inPlace && bias.length > 0) {
        const entries = bias.map(([token, value]) => ({ token, bias: value }));
        add(api.llama_sampler_init_logit_bias(this.vocabSize, entries.length, entries));
      }
      if (sampling.grammar) {
        const { text, root = 'root', triggerTokens } = sampling.grammar;
        const grammar = triggerTokens
          ? api.llama_sampler_init_grammar_lazy_patterns(
              this.vocab,
              text,
              root,
              [],
              0,
              Int32Array.from(triggerTokens),
              triggerTokens.length,
            )
          : api.llama_sampler_init_grammar(this.vocab, text, root);
        add(grammar);
      }
      if (this.fastSampling && sampling.grammar && penalties && topK > 0 && penaltiesOnlyLower(penalties) && (topK + penalties.lastN) * PREFILTER_RATIO <= this.vocabSize) {
        // A grammar chain (the vocabulary must pass the grammar first) keeps llama.cpp's penalties
        // sampler, which looks every token it is given up in a hash map (2-3 ms per token over 152k):
        // give it only the top k + lastN. Penalties that can only lower logits leave at most lastN
        // tokens lower, so a token below those has k unpenalised ones above it and never reaches the top k.
        add(api.llama_sampler_init_top_k(topK + penalties.lastN));
        this.stats.prefilteredChains++;
      }
      if (penalties && !penaltiesInPlace) add(api.llama_sampler_init_penalties(this.vocabSize, penalties.lastN, penalties.repeat, penalties.frequency, penalties.presence));
      if (sampling.temperature <= 0) {
        add(api.llama_sampler_init_greedy());
      } else {
        if (sampling.topK !== undefined && sampling.topK > 0) add(api.llama_sampler_init_top_k(sampling.topK));
        if (sampling.topP !== undefined && sampling.topP < 1) add(api.llama_sampler_init_top_p(sampling.topP, 1));
        if (sampling.minP !== undefined && sampling.minP > 0) add(api.llama_sampler_init_min_p(sampling.minP, 1));
        add(api.llama_sampler_init_temp(sampling.temperature));
        // LLAMA_DEFAULT_SEED (0xFFFFFFFF) draws a random seed.
        add(api.llama_sampler_init_dist((sampling.seed === undefined ? 0xffffffff : sampling.seed >>> 0)));
      }
    } catch (error) {
      if (!(error instanceof Error && error.message.startsWith('llama.cpp refused'))) api.llama_sampler_free(chain);
      throw error;
    }
    return {
      chain,
      mode,
      candidates,
      inPlace,
      biasTokens: inPlace ? Int32Array.from(bias, ([token]) => token) : new Int32Array(0),
      biasValues: inPlace ? Float32Array.from(bias, ([, value]) => value) : new Float32Array(0),
      penalties: penaltiesInPlace ? new PenaltyWindow(penalties!) : undefined,
      backend: this.backendGreedy && plainGreedy && !logprobs,
      greedy: sampling.temperature <= 0,
    };
  }

  /** The token a sequence's sampler picks from output `index` of the last decode; the chain has accepted it. */
  private choose(sampler: Sampler, index: number): number {
    const { api } = this;
    if (sampler.mode === 'argmax' && !sampler.backend) {
      this.stats.argmaxTokens++;
      // (Greedy keeps no state: nothing for the chain to accept.)
      return this.argmax!(this.logitsRow(index));
    }
    if (sampler.backend) {
      const token = api.llama_get_sampled_token_ith(this.context, index) as number;
      if (token < 0) throw new Error(`llama.cpp sampled no token for output ${index}`);
      this.stats.backendTokens++;
      return token;
    }
    if (!sampler.inPlace) return api.llama_sampler_sample(sampler.chain, this.context, index) as number;
    const logits = this.logitsRow(index);
    // The bias and then the penalties go into llama.cpp's logits for the moment of the choice
    // (logprobs report the raw ones): entry by entry in float as llama_sampler_logit_bias and
    // llama_sampler_penalties would change them, and undone in reverse.
    const { biasTokens, biasValues, penalties } = sampler;
    const touched = biasTokens.length + (penalties ? penalties.counts.size : 0);
    if (this.savedTokens.length < touched) {
      this.savedTokens = new Int32Array(touched);
      this.savedLogits = new Float32Array(touched);
    }
    const savedTokens = this.savedTokens;
    const savedLogits = this.savedLogits;
    let saved = 0;
    for (let i = 0; i < biasTokens.length; i++) {
      const token = biasTokens[i]!;
      savedTokens[saved] = token;
      savedLogits[saved++] = logits[token]!;
      logits[token] = logits[token]! + biasValues[i]!;
    }
    if (penalties) {
      for (const [token, count] of penalties.counts) {
        savedTokens[saved] = token;
        savedLogits[saved++] = logits[token]!;
        logits[token] = penalties.penalise(logits[token]!, count);
      }
    }
    let token: number;
    try {
      if (sampler.mode === 'candidates') {
        this.stats.candidateTokens++;
        token = this.applyToCandidates(sampler, logits);
      } else {
        this.stats.penalisedTokens++;
        // Greedy with the bias and penalties written in: what is left of its chain is the argmax.
        token = sampler.greedy && this.argmax ? this.argmax(logits) : (api.llama_sampler_sample(sampler.chain, this.context, index) as number);
      }
    } finally {
      for (let i = saved - 1; i >= 0; i--) logits[savedTokens[i]!] = savedLogits[i]!;
    }
    penalties?.accept(token);
    return token;
  }

  /**
   * Output `index`'s logits of the last decode, as a view of llama.cpp's buffer. A koffi.view of a
   * 152k-token row cost 100-145 µs of CPU per call (it grows with the size: V8 accounts the external
   * memory, which drives its GC), more than the choice itself: views are kept by address. A view is only
   * used right after llama_get_logits_ith has returned its address, so a row llama.cpp has since
   * reallocated is never read through a stale one.
   */
  private logitsRow(index: number): Float32Array {
    const pointer = this.api.llama_get_logits_ith(this.context, index);
    const address = this.lib.koffi.address(pointer) as bigint;
    let row = this.logitsViews.get(address);
    if (!row) {
      if (this.logitsViews.size >= 2 * this.batchSize) this.logitsViews.clear();
      row = new Float32Array(this.lib.koffi.view(pointer, this.vocabSize * 4));
      this.logitsViews.set(address, row);
    }
    return row;
  }

  /** The sampler's chain over the `candidates` highest logits, in token order as llama.cpp lists the vocabulary. */
  private applyToCandidates(sampler: Sampler, logits: Float32Array): number {
    const { api } = this;
    const count = Math.min(sampler.candidates, logits.length);
    if (this.heapIds.length < count) {
      this.heapIds = new Int32Array(count);
      this.heapValues = new Float64Array(count);
    }
    const ids = this.heapIds;
    selectTop(logits, count, ids, this.heapValues);
    const chosen = ids.subarray(0, count).sort();
    let array = this.candidateArray;
    if (!array || array.capacity < count) {
      if (array) {
        this.lib.koffi.free(array.data);
        this.lib.koffi.free(array.struct);
      }
      const capacity = Math.max(count, 512);
      const data = this.lib.koffi.alloc('uint8_t', capacity * TOKEN_DATA_BYTES);
      const struct = this.lib.koffi.alloc('uint8_t', TOKEN_DATA_ARRAY_BYTES);
      const buffer = this.lib.koffi.view(data, capacity * TOKEN_DATA_BYTES);
      array = { struct, view: new DataView(this.lib.koffi.view(struct, TOKEN_DATA_ARRAY_BYTES)), data, address: BigInt(this.lib.koffi.address(data)), capacity, ids: new Int32Array(buffer), logits: new Float32Array(buffer) };
      this.candidateArray = array;
    }
    for (let i = 0; i < count; i++) {
      const token = chosen[i]!;
      array.ids[i * 3] = token;
      array.logits[i * 3 + 1] = logits[token]!;
      array.logits[i * 3 + 2] = 0;
    }
    const view = array.view;
    view.setBigUint64(TOKEN_DATA_ARRAY.data, array.address, true);
    view.setBigUint64(TOKEN_DATA_ARRAY.size, BigInt(count), true);
    view.setBigInt64(TOKEN_DATA_ARRAY.selected, -1n, true);
    view.setUint8(TOKEN_DATA_ARRAY.sorted, 0);
    api.llama_sampler_apply(sampler.chain, array.struct);
    const selected = Number(view.getBigInt64(TOKEN_DATA_ARRAY.selected, true));
    const size = Number(view.getBigUint64(TOKEN_DATA_ARRAY.size, true));
    // llama_sampler_sample's own check; and no sampler of this chain moves the data (llama.h allows it).
    if (view.getBigUint64(TOKEN_DATA_ARRAY.data, true) !== array.address || selected < 0 || selected >= size)
      throw new Error(`llama.cpp's sampler chain selected ${selected} of ${size} candidates`);
    const token = array.ids[selected * 3]!;
    api.llama_sampler_accept(sampler.chain, token);
    return token;
  }

  private schedule(): void {
    if (this.scheduled || this.disposed) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.step();
    });
  }

  /** One decode and the sampling after it. */
  private step(): void {
    if (this.decoding) return; // the decode's return schedules the next step
    const running: Sequence[] = [];
    for (const slot of this.slots) {
      const sequence = slot.busy;
      if (!sequence) continue;
      if (sequence.cancelled) this.finish(sequence, 'cancelled');
      else running.push(sequence);
    }
    if (running.length === 0 || this.disposed) {
      this.notifyIdle();
      return;
    }
    // A burst of requests (N clients at once) reaches an idle runner one by one: the server checks
    // each prompt with the engine, then starts it. A first step taken at the first start would decode
    // that prompt alone, and the engine's loop would answer the others' checks only after it: their
    // prompts then take a second prefill step, and their first tokens (and every token of the earlier
    // ones meanwhile) wait for it. Requests already checked are waited for instead, briefly and only
    // while nothing is decoding, so that the whole burst shares one prefill.
    if (this.admissionHold && running.every((sequence) => !sequence.started)) {
      const now = performance.now();
      if (this.holdSince === 0) this.holdSince = now;
      const wait = Math.min(this.admissionHold(), this.holdSince + this.admissionHoldMaxMs - now);
      if (wait > 0) {
        this.holdTimer ??= setTimeout(() => {
          this.holdTimer = undefined;
          this.schedule();
        }, wait);
        return;
      }
    }
    this.holdSince = 0;
    if (this.holdTimer) {
      clearTimeout(this.holdTimer);
      this.holdTimer = undefined;
    }
    // New sequences: their KV is set up in admission order, each seeing what the ones before did.
    for (const sequence of running) if (!sequence.started) this.start(sequence);

    const batch = this.batch;
    let n = 0;
    const outputs: BatchOutput[] = [];
    const add = (sequence: Sequence, token: number, output: boolean) => {
      batch.token[n] = token;
      batch.pos[n] = sequence.kv.length;
      batch.seqId[n]![0] = sequence.id;
      batch.logits[n] = output ? 1 : 0;
      if (output) outputs.push({ sequence, index: n });
      sequence.kv.push(token);
      n++;
    };
    // Running streams first, one token each, in sequence-id order (llama.cpp puts consecutive ids
    // into one micro-batch); then prompt chunks for what budget remains.
    for (const sequence of running) {
      if (sequence.started && sequence.next !== undefined) {
        add(sequence, sequence.next, true);
        sequence.next = undefined;
      }
    }
    // (n === 0: no sequence is generating, so nothing's pace is at stake: the prompts of a burst that
    // reached an idle runner together fill the batch, up to n_batch, instead of arriving at their first
    // tokens prefillChunk by prefillChunk, the later ones steps behind the first.)
    let budget = Math.min(this.batchSize - n, n === 0 ? this.idlePrefill : this.prefillChunk);
    for (const sequence of running) {
      if (budget <= 0) break;
      if (!sequence.started) continue;
      const left = sequence.pending.length - sequence.pendingAt;
      if (left <= 0) continue;
      const take = Math.min(left, budget);
      for (let i = 0; i < take; i++) {
        const at = sequence.pendingAt++;
        add(sequence, sequence.pending[at]!, at === sequence.pending.length - 1);
      }
      budget -= take;
    }
    if (n === 0) {
      this.notifyIdle();
      return;
    }

    // A malformed batch aborts the process inside llama.cpp: check what was built.
    if (outputs.length > this.sequences) throw new Error(`batch check: ${outputs.length} outputs for ${this.sequences} sequences`);
    for (let i = 0; i < n; i++) {
      const id = batch.seqId[i]![0]!;
      if (id < 0 || id >= this.sequences) throw new Error(`batch check: sequence id ${id} out of range`);
      if (batch.pos[i]! >= this.contextSize) throw new Error(`batch check: position ${batch.pos[i]} beyond the context (${this.contextSize})`);
    }
    const struct = batch.struct;
    struct.n_tokens = n;
    const t0 = performance.now();
    if (this.decodeOnWorker) {
      this.decoding = true;
      this.api.llama_decode.async(this.context, struct, (error: unknown, status: number) => {
        this.decoding = false;
        if (error) this.afterDecode(-100, n, outputs, t0);
        else this.afterDecode(status, n, outputs, t0);
      });
      return;
    }
    this.afterDecode(this.api.llama_decode(this.context, struct) as number, n, outputs, t0);
  }

  private afterDecode(status: number, n: number, outputs: BatchOutput[], t0: number): void {
    const batch = this.batch;
    const t1 = performance.now();
    this.stats.steps++;
    this.stats.decodeMs += t1 - t0;
    if (this.disposed) {
      this.notifyIdle();
      return;
    }
    if (status !== 0) {
      // The KV of this batch is not trustworthy: drop the sequences in it, keep the others going.
      // (Pipelined, a sequence of the batch may have ended while it decoded and a new request taken
      // its id: that one has not started, and starts on an empty sequence.)
      const ids = new Set<number>();
      for (let i = 0; i < n; i++) ids.add(batch.seqId[i]![0]!);
      for (const id of ids) {
        this.api.llama_memory_seq_rm(this.memory, id, -1, -1);
        const slot = this.slots[id]!;
        slot.kv = [];
        const sequence = slot.busy;
        if (!sequence) continue;
        if (!sequence.started) {
          sequence.kv = slot.kv;
          continue;
        }
        sequence.kv.length = 0;
        this.fail(sequence, new Error(`llama_decode returned ${status}${status === 1 ? ' (no room in the KV cache)' : ''}`));
      }
      this.schedule();
      return;
    }

    // Worker mode pipelines (RunnerOptions.decodeOn): every token is chosen (and its logprobs read:
    // the next decode overwrites the logits) and the next decode starts before any owner sees its token.
    // A sequence that an owner then stops or feeds forced tokens had one token decoded in vain; one
    // that ends by what is known now (end of generation, length, cancellation) is not in that decode.
    const pipelined = this.decodeOnWorker;
    const chosen: { sequence: Sequence; event: TokenEvent; ends: EndReason | undefined }[] = [];
    for (const { sequence, index } of outputs) {
      if (sequence.ended || sequence.pendingAt < sequence.pending.length) continue;
      const c0 = performance.now();
      let token: number;
      try {
        token = this.choose(sequence.sampler, index);
      } catch (error) {
        this.fail(sequence, error as Error);
        continue;
      }
      this.stats.chooseMs += performance.now() - c0;
      sequence.generated++;
      this.stats.tokens++;
      const isEog = this.isEog(token);
      const event: TokenEvent = { token, piece: this.piece(token), isEog };
      if (sequence.spec.topLogprobs !== undefined) event.logprobs = this.logprobs(index, token, sequence.spec.topLogprobs);
      let ends: EndReason | undefined;
      if (isEog) ends = 'eog';
      else if (sequence.cancelled) ends = 'cancelled';
      else if (sequence.spec.maxTokens - sequence.generated <= 0 || sequence.kv.length + 1 >= this.contextSize) ends = 'length';
      else if (pipelined) sequence.next = token;
      chosen.push({ sequence, event, ends });
    }
    if (pipelined) this.step();
    for (const { sequence, event, ends } of chosen) {
      if (sequence.ended) continue;
      let decision: TokenDecision;
      try {
        decision = sequence.spec.onToken(event);
      } catch (error) {
        this.fail(sequence, error as Error);
        continue;
      }
      if (ends === 'eog') this.finish(sequence, 'eog');
      else if (decision === 'stop') this.finish(sequence, 'stopped');
      else if (sequence.cancelled) this.finish(sequence, 'cancelled');
      else if (ends) this.finish(sequence, ends);
      else {
        const token = event.token;
        // Pipelined, the step above took the token into its decode unless it could not run one.
        const inFlight = pipelined && sequence.next === undefined;
        if (!inFlight) sequence.next = token;
        let room = sequence.spec.maxTokens - sequence.generated;
        if (decision && typeof decision === 'object' && decision.force.length > 0) {
          // Forced tokens go through the sampler chain's accept (penalty history, the grammar's
          // trigger) and are evaluated after the sampled one: in the next step with it, or, when it is
          // already in the decode running now, in the step after (whose output for it is not sampled).
          const forced = decision.force.slice(0, Math.max(0, room));
          for (const forcedToken of forced) {
            this.checkToken(forcedToken);
            this.api.llama_sampler_accept(sequence.sampler.chain, forcedToken);
            sequence.sampler.penalties?.accept(forcedToken);
          }
          sequence.pending = inFlight ? forced : [token, ...forced];
          sequence.pendingAt = 0;
          sequence.next = undefined;
          sequence.generated += forced.length;
          room -= forced.length;
        }
        if (room <= 0 || sequence.kv.length + (inFlight ? 0 : 1) + (sequence.pending.length - sequence.pendingAt) >= this.contextSize) this.finish(sequence, 'length');
      }
    }
    this.stats.sampleMs += performance.now() - t1;
    // (A decode started above schedules the next step when it returns.)
    if (!this.decoding) this.schedule();
  }

  /** log-softmax of the raw logits: the chosen token's logprob and the top alternatives. */
  private logprobs(index: number, token: number, top: number): TokenLogprobs {
    const logits = this.logitsRow(index);
    let max = -Infinity;
    for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
    let sum = 0;
    for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
    const logZ = max + Math.log(sum);
    const count = Math.min(Math.max(top, 1), MAX_TOP_LOGPROBS);
    // Partial selection: the vocabulary is large, the list is short.
    const best: { token: number; logit: number }[] = [];
    for (let i = 0; i < logits.length; i++) {
      const logit = logits[i]!;
      if (best.length < count) {
        best.push({ token: i, logit });
        best.sort((a, b) => b.logit - a.logit);
      } else if (logit > best[count - 1]!.logit) {
        best[count - 1] = { token: i, logit };
        best.sort((a, b) => b.logit - a.logit);
      }
    }
    return {
      logprob: logits[token]! - logZ,
      top: best.slice(0, top).map((entry) => ({ token: entry.token, logprob: entry.logit - logZ })),
    };
  }

  private release(sequence: Sequence): void {
    sequence.ended = true;
    this.api.llama_sampler_free(sequence.sampler.chain);
    const slot = this.slots[sequence.id]!;
    slot.busy = undefined;
    slot.used = ++this.clock;
    // Tokens queued but never evaluated are not in the KV.
    slot.kv = sequence.kv;
  }

  private finish(sequence: Sequence, reason: EndReason): void {
    if (sequence.ended) return;
    this.release(sequence);
    if (sequence.cancelled && sequence.cancelError) {
      sequence.reject(sequence.cancelError);
      return;
    }
    sequence.resolve({
      reason: sequence.cancelled ? 'cancelled' : reason,
      promptTokens: sequence.spec.prompt.length,
      cachedPromptTokens: sequence.cachedPromptTokens,
      generatedTokens: sequence.generated,
    });
  }

  private fail(sequence: Sequence, error: Error): void {
    if (sequence.ended) return;
    this.release(sequence);
    sequence.reject(error);
  }

  private notifyIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }

  /** Ends every running sequence with `error`, waits for a decode in flight, then frees the context, the pool and the model. */
  async dispose(error: Error = new Error('the llama.cpp runner is closed')): Promise<void> {
    if (this.disposed) return;
    for (const slot of this.slots) if (slot.busy) this.fail(slot.busy, error);
    this.disposed = true;
    clearTimeout(this.holdTimer);
    if (this.decoding) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    const { api } = this;
    api.llama_batch_free(this.batch.struct);
    api.llama_detach_threadpool(this.context);
    api.llama_free(this.context);
    for (const slot of this.slots) if (slot.greedy) api.llama_sampler_free(slot.greedy);
    this.lib.freeThreadpool(this.threadpool);
    this.threadpool = undefined;
    if (this.candidateArray) {
      this.lib.koffi.free(this.candidateArray.data);
      this.lib.koffi.free(this.candidateArray.struct);
      this.candidateArray = undefined;
    }
    api.llama_model_free(this.model);
  }
}

/**
 * The indices of the `count` highest values into ids[0..count) (in no order), by a min-heap over one
 * pass: most values lose to the heap's least at the first comparison.
 */
function selectTop(values: Float32Array, count: number, ids: Int32Array, heap: Float64Array): void {
  const siftDown = (at: number) => {
    const id = ids[at]!;
    const value = heap[at]!;
    for (;;) {
      let child = 2 * at + 1;
      if (child >= count) break;
      if (child + 1 < count && heap[child + 1]! < heap[child]!) child++;
      if (!(heap[child]! < value)) break;
      heap[at] = heap[child]!;
      ids[at] = ids[child]!;
      at = child;
    }
    heap[at] = value;
    ids[at] = id;
  };
  for (let i = 0; i < count; i++) {
    ids[i] = i;
    heap[i] = values[i]!;
  }
  for (let i = (count >> 1) - 1; i >= 0; i--) siftDown(i);
  let least = heap[0]!;
  for (let i = count; i < values.length; i++) {
    const value = values[i]!;
    if (value > least) {
      heap[0] = value;
      ids[0] = i;
      siftDown(0);
      least = heap[0]!;
    }
  }
}

function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const length = Math.min(a.length, b.length);
  let i = 0;
  while (i < length && a[i] === b[i]) i++;
  return i;
}
