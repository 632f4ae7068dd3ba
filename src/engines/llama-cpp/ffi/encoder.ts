// Infera's own llama.cpp embedding/ranking loop: one model, one or more contexts ("lanes") with
// embeddings on, each with its own persistent ggml thread pool. Concurrent inputs — of one request or of
// many — wait in one queue, and whenever a lane is free it takes what is queued, packed into ONE
// llama_decode over several sequences (up to n_seq_max inputs and n_batch tokens), as llama-server does,
// instead of node-llama-cpp's one input per context per decode. Each input's pooled vector (or, for RANK
// pooling, its class scores) is read back with llama_get_embeddings_seq.
//
// Several single-threaded lanes rather than one multi-threaded context: on a box whose cores are shared,
// a descheduled thread of a multi-threaded decode stalls its barrier (measured: 1.3 embeddings/s against
// node-llama-cpp's 7.8 on a 2-core box under load 20), while lanes do not wait on each other.
//
// The context is sized so that a whole batch is one micro-batch (n_ubatch = n_batch): non-causal
// encoders (BERT) must see a whole sequence at once and llama.cpp asserts it. Decoder embedders
// (Qwen3-Embedding) keep a KV: it is one unified stream of n_batch cells, cleared after every batch,
// so that S sequences cost no more memory than one. llama.cpp aborts the process on a malformed
// batch: every batch is checked here before llama_decode.
//
// Embedding models get two contexts per lane: llama.cpp's default attention (flash attention on CPU) for
// packed batches, and a small plain-attention context for batches of at most PLAIN_ATTENTION_TOKENS
// tokens — one client's single input. Measured on the 384x12 BERT (1 thread, CPU per decode): a 21-token
// input costs 22 ms plain against 34–36 ms flash, 40 tokens 46 against 74; at 78 tokens they meet, and
// beyond that flash attention wins by more and more (160 tokens: 123 against 172; 16 inputs of 21 tokens
// in one decode: 256 against 550), because plain attention also computes the masked-out blocks between
// packed sequences. Rerankers have plain attention throughout (F16 rounding moved their scores), so one
// context each.
//
// Only the first context a lone input needs is created at load (the plain-attention one, else the lane's
// default one); every other context — a lane's default context, the other lanes', a lone lane's helper —
// is created when a batch first needs it. Each costs ~2–3.5 MiB of resident memory on the 384x12 BERT
// (its graph and scheduler tables are written at creation, before any decode), and an idle or one-client
// server never uses them: 2 lanes × 2 contexts at load were ~7 MiB of the engine process's idle RSS.
import { ClientGoneError } from '../../../errors/index.ts';
import { FfiVocab } from './vocab.ts';
import { LLAMA_FLASH_ATTN_TYPE, LLAMA_MAX_SEQ, LLAMA_POOLING_TYPE, LLAMA_VOCAB_TYPE, type LlamaBindings, type LlamaLibrary, type Pointer } from './library.ts';

export interface EncoderOptions {
  /** The most tokens one input may have, special tokens included (capped by the model's training context). */
  contextSize: number;
  /** Inputs packed into one decode (llama.cpp's n_seq_max). */
  sequences: number;
  /** Threads per lane. */
  threads: number;
  /** Contexts decoding at the same time, each its own batch (default 1). */
  lanes?: number;
  /** 'rank' for rerankers (class scores), else the GGUF's pooling (llama.cpp's default when it declares none). */
  pooling: 'model' | 'rank';
  /**
   * Embedding models: decode batches of at most PLAIN_ATTENTION_TOKENS tokens on a second, plain-attention
   * context per lane (default true; rerankers always use plain attention and have one context).
   */
  plainAttentionForSmallBatches?: boolean;
  /**
   * As RunnerOptions.decodeOn: on the calling thread ('loop') or koffi's worker ('worker', the default,
   * and what model entries get: see forModel). Several lanes always decode on koffi's workers, so that
   * they run at the same time; a lone lane with a helper (splitLargeBatches) decodes on the loop what goes
   * out alone on all its threads, and its split halves, which run at the same time, on the workers.
   */
  decodeOn?: 'loop' | 'worker';
  /**
   * One lane of several threads: decode large batches as two halves on two contexts at once, each with
   * half the threads (see SPLIT_TOKENS). Default true.
   */
  splitLargeBatches?: boolean;
  /**
   * ggml's polling level (0-100, llama-server's --poll) of each lane's own pool: how long its workers spin
   * for the next decode before they sleep. Default ggml's (50), which spins through the whole gap between
   * one client's requests: a worker's CPU per request grows with the time the request spends outside the
   * decode (HTTP, IPC). 0: the workers sleep after every decode and the next one wakes them. (A lone
   * lane's half pool and its helper's always poll at 0.)
   */
  poll?: number;
  /**
   * A lone lane with a helper: once a small batch's decode on all the lane's threads took more than this
   * many times, per token, the fastest small batch on the lane's half of the threads, the next
   * LONE_FALLBACK_DECODES small batches decode on the half (see noteWhole). 0: never (and no half-thread
   * reference decode either). Default LONE_FALLBACK_FACTOR.
   */
  loneFallbackFactor?: number;
}

export interface EncoderStats {
  /** llama_decode calls. */
  decodes: number;
  /** Of those, decodes on a plain-attention context for small batches. */
  smallDecodes: number;
  /** Of those, decodes with part of a lone lane's threads, beside another on its helper context (SPLIT_TOKENS). */
  splitDecodes: number;
  /** Of those, small batches decoded on half a lone lane's threads: the first one (the reference), and those after a collapsed whole decode (loneFallbackFactor). */
  fallbackDecodes: number;
  /** Of those, decodes run on the calling thread (decodeOn 'loop'), not on koffi's worker. */
  loopDecodes: number;
  /** Inputs evaluated (sequences over all decodes). */
  inputs: number;
  tokens: number;
  decodeMs: number;
  /** llama.cpp contexts created, at load and on demand, and the milliseconds creating them took (on the loop). */
  contexts: number;
  contextMs: number;
}

/** A llama.cpp context of a lane, once created. */
interface LaneContext {
  context: Pointer;
  memory: Pointer;
}

interface Lane {
  /** The default context (flash attention for embedding models), undefined until a batch needs it. */
  main: LaneContext | undefined;
  params: Record<string, unknown>;
  /**
   * Embedding models: the plain-attention context for small batches (see PLAIN_ATTENTION_TOKENS), created
   * when one first comes (`context` undefined until then); it shares the lane's pool and batch.
   */
  small: { context: LaneContext | undefined; params: Record<string, unknown>; tokens: number; sequences: number } | undefined;
  threadpool: Pointer;
  /**
   * A lone lane with a helper: a second pool of the lane's share of the threads (⌈T/2⌉), attached while
   * its batches are split, so that the full pool can keep ggml's default polling (see the constructor).
   */
  halfPool: Pointer | undefined;
  /** Threads of the lane's pool. */
  threads: number;
  /** Threads the lane's contexts are set to decode with now (llama_set_n_threads): fewer than `threads` while its batches are split. */
  current: number;
  /** A decode is running: nothing may touch the context or the batch until it returns. */
  decoding: boolean;
  batch: {
    struct: Record<string, unknown>;
    token: Int32Array;
    pos: Int32Array;
    seqId: Int32Array[];
    logits: Int8Array;
  };
}

interface Job {
  tokens: number[];
  signal: AbortSignal | undefined;
  resolve(vector: Float32Array): void;
  reject(error: Error): void;
}

const TOKEN_NULL = -1;

interface LaneSpec {
  params: Record<string, unknown>;
  small: { params: Record<string, unknown>; tokens: number; sequences: number } | undefined;
  /** Threads of the lane's pool. */
  threads: number;
  /** The second context of a lone lane, for the other half of a large batch (SPLIT_TOKENS). */
  helper: boolean;
}

/**
 * A lone lane of T ≥ 2 threads decodes a batch of more than this many tokens as two halves at once, on
 * two contexts with ⌈T/2⌉ and ⌊T/2⌋ threads, instead of one decode on T threads. The work per input is
 * the same either way (measured in process, 1 thread, 14-token inputs: 26–27 ms of CPU an input at 8,
 * 16 and 32 inputs a decode), but a T-thread decode waits at every one of its barriers for its slowest
 * thread: while the server's and the engine process's JavaScript (and the clients, on a small box) take a
 * core from one of its threads, the others spin. Two halves do not wait on each other. Small batches (one
 * client's input) keep all T threads on one decode, for their latency. Above PLAIN_ATTENTION_TOKENS × 2,
 * so that both halves still decode with flash attention, as the whole batch would.
 */
export const SPLIT_TOKENS = 128;

/**
 * Batches of at most this many tokens decode on a lane's plain-attention context (embedding models). Below
 * the ~78-token crossover measured above, and small enough that the second context costs little memory.
 */
export const PLAIN_ATTENTION_TOKENS = 64;

/**
 * loneFallbackFactor's default: off. 1.25 (a whole decode 1.25× slower per token than the half threads'
 * best one; a collapsed one is 5–100×) rescued a lone lane on a box at load 10–15 (p50 5,244 → 523 ms),
 * but on a quiet 2-core host without AVX-512 it sent one-client requests to the half threads and cost
 * wall time: embed-path base vs this at 1 client, load 0.4–1.4, p50 36.3 vs 50.5 ms (docs/BENCHMARKS.md,
 * end-of-session run of 2026-12-07 16:54–17:33). Until the trigger tells the two apart it is reachable only
 * through LlamaEncoder's own option (embedding-ffi.test.ts sets it), not from a model's config.
 */
export const LONE_FALLBACK_FACTOR = 0;

/** Small batches decoded on half a lone lane's threads after a collapsed whole decode, before it tries all of them again. */
export const LONE_FALLBACK_DECODES = 32;

export class LlamaEncoder {
  /** Tokens one decode (and so one input) may hold. */
  readonly contextSize: number;
  readonly sequences: number;
  readonly vocabSize: number;
  /** Floats per result: n_embd_out, or n_cls_out under RANK pooling. */
  readonly outputSize: number;
  /** The pooling the context applies (LLAMA_POOLING_TYPE). */
  readonly pooling: number;
  readonly decodeOn: 'loop' | 'worker';
  /** Contexts decoding at the same time. */
  readonly lanesCount: number;
  /** The tokens node-llama-cpp's embedding and ranking contexts put around an input (resolveBeginning/EndTokenToPrepend). */
  readonly frame: { begin: number | undefined; end: number | undefined };
  readonly special: { bos: number | undefined; eos: number | undefined; sep: number | undefined };
  /** Counters for benchmarks and tests: decodes, inputs and tokens they held. */
  readonly stats: EncoderStats = { decodes: 0, smallDecodes: 0, splitDecodes: 0, fallbackDecodes: 0, loopDecodes: 0, inputs: 0, tokens: 0, decodeMs: 0, contexts: 0, contextMs: 0 };
  /** A lone lane with a helper context (lanes[1]) for the second half of a large batch. */
  private readonly split: boolean;
  private readonly api: LlamaBindings;
  private readonly vocab: Pointer;
  private tokenizer: FfiVocab | undefined;
  private readonly lanes: Lane[];
  private readonly queue: Job[] = [];
  private scheduled = false;
  private disposed = false;
  private idle: (() => void)[] = [];
  private readonly loneFallbackFactor: number;
  /** The fastest small batch on half a lone lane's threads so far, ms per token (noteWhole). */
  private halfBestMsPerToken = Infinity;
  /** Small batches left to decode on half the lane's threads (loneFallbackFactor). */
  private fallbackLeft = 0;

  private constructor(
    private readonly lib: LlamaLibrary,
    private readonly model: Pointer,
    lanes: LaneSpec[],
    /** The context load() created (lane 0's first choice for a lone input) and the lane part it is. */
    first: { context: Pointer; small: boolean; ms: number },
    contextSize: number,
    options: EncoderOptions,
  ) {
    const { api, koffi } = lib;
    this.api = api;
    this.vocab = api.llama_model_get_vocab(model);
    this.vocabSize = api.llama_vocab_n_tokens(this.vocab) as number;
    this.contextSize = contextSize;
    this.sequences = options.sequences;
    this.loneFallbackFactor = options.loneFallbackFactor ?? LONE_FALLBACK_FACTOR;
    this.split = lanes.some((lane) => lane.helper);
    this.lanesCount = lanes.filter((lane) => !lane.helper).length;
    this.decodeOn = this.lanesCount > 1 ? 'worker' : (options.decodeOn ?? 'worker');
    this.pooling = api.llama_pooling_type(first.context) as number;
    this.outputSize = this.pooling === LLAMA_POOLING_TYPE.rank ? Number(api.llama_model_n_cls_out(model)) : (api.llama_model_n_embd_out(model) as number);
    const id = (token: number) => (token === TOKEN_NULL ? undefined : token);
    this.special = { bos: id(api.llama_vocab_bos(this.vocab) as number), eos: id(api.llama_vocab_eos(this.vocab) as number), sep: id(api.llama_vocab_sep(this.vocab) as number) };
    this.frame = frameOf(api.llama_vocab_type(this.vocab) as number, this.special, api.llama_vocab_get_add_bos(this.vocab) as boolean, api.llama_vocab_get_add_eos(this.vocab) as boolean);
    const view = (pointer: unknown, bytes: number) => koffi.view(pointer, bytes);
    const helperThreads = lanes.find((lane) => lane.helper)?.threads ?? 0;
    this.lanes = lanes.map(({ params, small, threads, helper }) => {
      // A pool's workers poll for the next graph after each one (ggml's level 50, llama-server's too: 6.5M
      // rounds; on this EPYC the second worker used CPU for ~0.5 s after a one-input decode at load 11) and
      // only then sleep, also through graphs that use fewer threads than the pool.
      // A lone lane with a helper runs its half-thread decodes beside the helper's: there its other
      // workers must not spin. They used to get polling level 0 for good, which made every one-input
      // decode wake its second thread with a futex first (llama-server's keeps spinning between requests).
      // Now the lane keeps the default on its full pool and decodes the halves on a second pool of its
      // share of the threads, pausing the full pool (its workers sleep at once) when it switches; the
      // next full decode's kickoff resumes it. (ggml pauses a context's previous pool itself when handed
      // another, but the lane's two contexts last ran on different pools after a small full decode.)
      // Without ggml_threadpool_pause (not Linux): level 0, as before. The helper's pool only ever runs
      // split decodes: level 0.
      const halves = this.split && !helper && lib.pauseThreadpool !== undefined;
      const threadpool = lib.newThreadpool(threads, this.split && !halves ? 0 : options.poll);
      const halfPool = halves ? lib.newThreadpool(threads - helperThreads, 0) : undefined;
      const raw = api.llama_batch_init(contextSize, 0, 1) as Record<string, unknown>;
      const seqIdPointers = koffi.decode(raw.seq_id, koffi.array('void *', contextSize)) as unknown[];
      new Int32Array(view(raw.n_seq_id, contextSize * 4)).fill(1);
      return {
        main: undefined,
        params,
        small: small && { ...small, context: undefined },
        threadpool,
        halfPool,
        threads,
        current: threads,
        decoding: false,
        batch: {
          struct: raw,
          token: new Int32Array(view(raw.token, contextSize * 4)),
          pos: new Int32Array(view(raw.pos, contextSize * 4)),
          seqId: seqIdPointers.map((pointer) => new Int32Array(view(pointer, 4))),
          logits: new Int8Array(view(raw.logits, contextSize)),
        },
      };
    });
    const lane0 = this.lanes[0]!;
    const created = this.adopt(lane0, first.context);
    if (first.small) lane0.small!.context = created;
    else lane0.main = created;
    this.stats.contexts++;
    this.stats.contextMs += first.ms;
  }

  /** A context just created for `lane`: on the lane's pool (one lane decodes one batch at a time, so its contexts share it) and thread count. */
  private adopt(lane: Lane, context: Pointer): LaneContext {
    const pool = lane.halfPool && lane.current !== lane.threads ? lane.halfPool : lane.threadpool;
    this.api.llama_attach_threadpool(context, pool, pool);
    this.api.llama_set_n_threads(context, lane.current, lane.current);
    return { context, memory: this.api.llama_get_memory(context) };
  }

  /** The lane's context for these params, created now if this is the first batch that needs it (undefined: llama.cpp could not). */
  private contextOf(lane: Lane, small: boolean): LaneContext | undefined {
    const existing = small ? lane.small!.context : lane.main;
    if (existing) return existing;
    const t0 = performance.now();
    const context = this.api.llama_init_from_model(this.model, small ? lane.small!.params : lane.params);
    if (!context) return undefined;
    const created = this.adopt(lane, context);
    if (small) lane.small!.context = created;
    else lane.main = created;
    this.stats.contexts++;
    this.stats.contextMs += performance.now() - t0;
    return created;
  }

  /**
   * The encoder of an embedding or reranker model entry: its `llamaCpp` options mapped onto the encoder's.
   * `decodeOn`: where the caller lets lone decodes run. Embedding entries in an engine process of their own
   * pass llamaCpp.decodeOn (default 'loop'): at 2 threads, 1 client, a lone input decoded on the engine's
   * loop thread served 1.03-1.08x llama-server's embeddings/s where koffi's worker served 0.85x (quiet box,
   * docs/BENCHMARKS.md, emb8): one thread hand-off fewer each way, and one thread fewer wanting a core
   * while the decode's two threads run. (At 1 thread on a busy box, embed1 had seen the loop slower.)
   * Rerankers and the server process keep the worker.
   */
  static forModel(
    lib: LlamaLibrary,
    path: string,
    options: { contextSize: number; batchSequences: number; threads: number; contexts: number; poll?: number },
    pooling: EncoderOptions['pooling'],
    decodeOn: 'loop' | 'worker' = 'worker',
  ): LlamaEncoder {
    return LlamaEncoder.load(lib, path, {
      contextSize: options.contextSize,
      sequences: options.batchSequences,
      threads: options.threads,
      lanes: options.contexts,
      pooling,
      decodeOn,
      poll: options.poll,
    });
  }

  /** Loads the model and creates the context (synchronously). */
  static load(lib: LlamaLibrary, path: string, options: EncoderOptions): LlamaEncoder {
    const { api } = lib;
    if (!Number.isInteger(options.sequences) || options.sequences < 1 || options.sequences > LLAMA_MAX_SEQ)
      throw new RangeError(`sequences must be 1..${LLAMA_MAX_SEQ}, got ${options.sequences}`);
    const model = api.llama_model_load_from_file(path, { ...(api.llama_model_default_params() as Record<string, unknown>), n_gpu_layers: 0 });
    if (!model) throw new Error(`llama.cpp could not load ${path}`);
    const trained = api.llama_model_n_ctx_train(model) as number;
    const contextSize = trained > 0 ? Math.min(options.contextSize, trained) : options.contextSize;
    const params = {
      ...(api.llama_context_default_params() as Record<string, unknown>),
      // One unified KV of one batch's worth of cells (decoder embedders), emptied after every batch.
      n_ctx: contextSize,
      n_batch: contextSize,
      n_ubatch: contextSize,
      n_seq_max: seqMaxOf(options.sequences),
      n_threads: options.threads,
      n_threads_batch: options.threads,
      embeddings: true,
      pooling_type: options.pooling === 'rank' ? LLAMA_POOLING_TYPE.rank : LLAMA_POOLING_TYPE.unspecified,
      kv_unified: true,
      // Rerankers: plain F32 attention, not llama.cpp's default (flash attention, whose CPU path rounds Q·K
      // to F16): it moved the tiny reranker's scores by up to 2 % against a float64 forward pass (plain:
      // exact to 3e-6, packed or not; rerank-ffi.test.ts). Embedding models keep flash attention: their
      // vectors differ by 2e-8 in cosine, and packed batches need it — on the 384x12 BERT over HTTP
      // (docs/BENCHMARKS.md) plain attention served 42–48 inputs/s at 1 client against 34–39 but 32–38/s
      // at 32 clients against 53–56 (it computes the masked-out blocks between packed sequences).
      flash_attn_type: options.pooling === 'rank' ? LLAMA_FLASH_ATTN_TYPE.disabled : LLAMA_FLASH_ATTN_TYPE.auto,
      no_perf: true,
    };
    // Embedding models: a plain-attention context for small batches beside each default one (see the top of the file).
    const smallTokens = Math.min(PLAIN_ATTENTION_TOKENS, contextSize);
    const smallSequences = Math.min(options.sequences, smallTokens);
    const smallParams =
      options.pooling === 'rank' || options.plainAttentionForSmallBatches === false || smallTokens >= contextSize
        ? undefined
        : { ...params, n_ctx: smallTokens, n_batch: smallTokens, n_ubatch: smallTokens, n_seq_max: seqMaxOf(smallSequences), flash_attn_type: LLAMA_FLASH_ATTN_TYPE.disabled };
    const lanes: LaneSpec[] = [];
    const small = smallParams && { params: smallParams, tokens: smallTokens, sequences: smallSequences };
    for (let i = 0; i < (options.lanes ?? 1); i++) lanes.push({ params, small, threads: options.threads, helper: false });
    if ((options.lanes ?? 1) === 1 && options.threads >= 2 && options.splitLargeBatches !== false) {
      const threads = Math.floor(options.threads / 2);
      lanes.push({ params: { ...params, n_threads: threads, n_threads_batch: threads }, small: undefined, threads, helper: true });
    }
    // The context a lone input decodes on, now: a model llama.cpp cannot make a context for fails its load,
    // not its first request. The others are made on demand (see the top of the file).
    const t0 = performance.now();
    const context = api.llama_init_from_model(model, small ? small.params : params);
    if (!context) {
      api.llama_model_free(model);
      throw new Error(
        small
          ? `llama.cpp could not create a plain-attention context of ${smallTokens} tokens for ${path}`
          : `llama.cpp could not create an embedding context of ${contextSize} tokens × ${options.sequences} sequences for ${path}`,
      );
    }
    return new LlamaEncoder(lib, model, lanes, { context, small: small !== undefined, ms: performance.now() - t0 }, contextSize, options);
  }

  /** The model's tokenizer, node-llama-cpp's rules over this encoder's llama_vocab (valid until dispose). */
  vocabulary(): FfiVocab {
    this.tokenizer ??= new FfiVocab(this.api, this.vocab);
    return this.tokenizer;
  }

  /** Text tokens, no special tokens added or parsed (node-llama-cpp's `model.tokenize(text, false)`). */
  tokenize(text: string): number[] {
    return this.vocabulary().tokenize(text, false);
  }

  /** The input as evaluated: the begin/end tokens the vocabulary asks for, unless already there. */
  framed(tokens: readonly number[]): number[] {
    const out = [...tokens];
    const { begin, end } = this.frame;
    if (begin !== undefined && out[0] !== begin) out.unshift(begin);
    if (end !== undefined && out.at(-1) !== end) out.push(end);
    return out;
  }

  /**
   * Queues one input (already framed) and resolves with its pooled vector or class scores. Inputs
   * queued in the same turn of the event loop, or while a decode runs, share the next decode. An input
   * whose signal has aborted by then is dropped (rejected with ClientGoneError) without being evaluated.
   */
  encode(tokens: readonly number[], signal?: AbortSignal): Promise<Float32Array> {
    if (this.disposed) return Promise.reject(new Error('the llama.cpp encoder is closed'));
    if (signal?.aborted) return Promise.reject(new ClientGoneError());
    if (tokens.length === 0) return Promise.reject(new Error('empty input'));
    if (tokens.length > this.contextSize) return Promise.reject(new Error(`input of ${tokens.length} tokens exceeds the context (${this.contextSize})`));
    for (const token of tokens)
      if (!Number.isInteger(token) || token < 0 || token >= this.vocabSize) return Promise.reject(new Error(`token ${token} is outside the vocabulary`));
    return new Promise<Float32Array>((resolve, reject) => {
      this.queue.push({ tokens: [...tokens], signal, resolve, reject });
      this.schedule();
    });
  }

  /** Inputs waiting for a decode. */
  get queued(): number {
    return this.queue.length;
  }

  private schedule(): void {
    if (this.scheduled || this.disposed) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.step();
    });
  }

  private step(): void {
    if (this.disposed) return;
    // Inputs of requests that went away are dropped before they cost a decode.
    let kept = 0;
    for (const job of this.queue) {
      if (job.signal?.aborted) job.reject(new ClientGoneError());
      else this.queue[kept++] = job;
    }
    this.queue.length = kept;
    if (this.split) this.stepSplit();
    else
      for (const lane of this.lanes) {
        if (this.queue.length === 0) break;
        if (!lane.decoding) this.dispatch(lane, lane.threads);
      }
    if (this.lanes.every((lane) => !lane.decoding)) this.notifyIdle();
  }

  /**
   * A lone lane and its helper (SPLIT_TOKENS): the threads in use never exceed the lane's. Both idle: a
   * batch over SPLIT_TOKENS goes out as two halves (or two full batches when more is queued), anything
   * smaller to the lane on all its threads. One of them busy with half the threads: the other takes what
   * is queued with the other half.
   */
  private stepSplit(): void {
    if (this.queue.length === 0) return;
    const [main, helper] = this.lanes as [Lane, Lane];
    const half = main.threads - helper.threads;
    if (!main.decoding && !helper.decoding) {
      const { inputs, tokens } = this.fitting();
      if (tokens <= SPLIT_TOKENS || inputs < 2) {
        // The first small batch is the half threads' reference (loneFallbackFactor): one decode at ~1.7× a
        // whole one's time, once in the process's life.
        const reference = this.loneFallbackFactor > 0 && this.halfBestMsPerToken === Infinity;
        if (this.fallbackLeft > 0 || reference) {
          this.fallbackLeft = Math.max(0, this.fallbackLeft - 1);
          this.dispatch(main, half, Infinity, 'fallback');
        } else this.dispatch(main, main.threads, Infinity, 'whole');
        return;
      }
      this.dispatch(main, half, inputs < this.queue.length ? Infinity : Math.ceil(inputs / 2));
      this.dispatch(helper, helper.threads);
    } else if (!main.decoding) this.dispatch(main, half);
    else if (!helper.decoding && main.current === half) this.dispatch(helper, helper.threads);
  }

  /** The queued inputs that one batch holds, from the front (as dispatch packs them). */
  private fitting(): { inputs: number; tokens: number } {
    let inputs = 0;
    let tokens = 0;
    for (const job of this.queue) {
      if (!this.fits(inputs, tokens, job)) break;
      inputs++;
      tokens += job.tokens.length;
    }
    return { inputs, tokens };
  }

  /** Whether `job` joins a batch that already holds `inputs` inputs of `tokens` tokens. */
  private fits(inputs: number, tokens: number, job: Job): boolean {
    return inputs < this.sequences && tokens + job.tokens.length <= this.contextSize;
  }

  /** Packs what is queued (at most `limit` inputs) into the lane's batch, first come first served, and decodes it on `threads` threads. */
  private dispatch(lane: Lane, threads: number, limit = Infinity, kind?: 'whole' | 'fallback'): void {
    if (this.queue.length === 0) return;
    if (lane.current !== threads) {
      const contexts = [lane.main, lane.small?.context].filter((context) => context !== undefined);
      if (lane.halfPool) {
        const pool = threads === lane.threads ? lane.threadpool : lane.halfPool;
        if (pool === lane.halfPool) this.lib.pauseThreadpool!(lane.threadpool);
        for (const { context } of contexts) this.api.llama_attach_threadpool(context, pool, pool);
      }
      for (const { context } of contexts) this.api.llama_set_n_threads(context, threads, threads);
      lane.current = threads;
    }
    const jobs: Job[] = [];
    const lastIndex: number[] = [];
    const batch = lane.batch;
    const pooled = this.pooling !== LLAMA_POOLING_TYPE.none;
    let n = 0;
    while (this.queue.length > 0 && jobs.length < limit && this.fits(jobs.length, n, this.queue[0]!)) {
      const job = this.queue.shift()!;
      const seq = jobs.length;
      const length = job.tokens.length;
      for (let i = 0; i < length; i++) {
        batch.token[n] = job.tokens[i]!;
        batch.pos[n] = i;
        batch.seqId[n]![0] = seq;
        // Pooling reads every token's state (llama.cpp would override the flags, with a warning per decode);
        // without pooling, the last token's state is the vector.
        batch.logits[n] = pooled || i === length - 1 ? 1 : 0;
        n++;
      }
      jobs.push(job);
      lastIndex.push(n - 1);
    }
    const small = lane.small && n <= lane.small.tokens && jobs.length <= lane.small.sequences ? lane.small : undefined;
    const target = this.contextOf(lane, small !== undefined);
    if (!target) {
      const error = new Error(`llama.cpp could not create ${small ? 'a plain-attention context' : 'an embedding context'} for this batch`);
      for (const job of jobs) job.reject(error);
      this.schedule();
      return;
    }
    this.checkBatch(lane, n, jobs.length, small ? small.tokens : this.contextSize, small ? small.sequences : this.sequences);
    const struct = batch.struct;
    struct.n_tokens = n;
    const t0 = performance.now();
    lane.decoding = true;
    if (small) this.stats.smallDecodes++;
    if (kind === 'fallback') this.stats.fallbackDecodes++;
    else if (this.split && threads < this.lanes[0]!.threads) this.stats.splitDecodes++;
    // A context without memory (a BERT-style encoder) would have llama_decode log a debug line and call
    // llama_encode: every decode's line went through the log hook, which koffi relays from its worker to
    // the main thread while the decode thread waits (a thread round trip before every decode).
    const run = target.memory ? this.api.llama_decode : this.api.llama_encode;
    // A lone lane with a helper decodes on the loop only what goes out alone on the lane ('whole' or
    // 'fallback'): its split halves run at the same time, so they go to koffi's workers.
    const onLoop = this.decodeOn === 'loop' && (!this.split || kind !== undefined);
    if (!onLoop) {
      run.async(target.context, struct, (error: unknown, status: number) => {
        lane.decoding = false;
        if (kind && !error && status === 0) this.noteSmall(kind, performance.now() - t0, n);
        this.afterDecode(target, error ? -100 : status, jobs, lastIndex, n, t0, false);
      });
      return;
    }
    this.stats.loopDecodes++;
    const status = run(target.context, struct) as number;
    lane.decoding = false;
    if (kind && status === 0) this.noteSmall(kind, performance.now() - t0, n);
    this.afterDecode(target, status, jobs, lastIndex, n, t0, true);
  }

  /**
   * A lone lane's small batch took `ms` for `tokens` tokens, on all its threads ('whole') or half of them.
   * A whole decode slower per token than the half threads' best: its threads were not running together —
   * the box's other work took a core from one of them, and the others spun at ggml's barriers until it
   * came back (a one-input request of ~14 ms on a quiet box took 1.7 s and 785 ms of CPU at load 10) —
   * so the next small batches go to half the threads, which have no partner to wait for; then a whole
   * decode tries again. On a quiet box a whole decode takes ~0.6 of a half one's time.
   */
  private noteSmall(kind: 'whole' | 'fallback', ms: number, tokens: number): void {
    // A decode's fixed part (graph, scheduling) weighs like ~16 tokens: a 3-token input is not 10 times dearer per token than a 30-token one.
    const perToken = ms / (tokens + 16);
    if (kind === 'fallback') this.halfBestMsPerToken = Math.min(this.halfBestMsPerToken, perToken);
    else if (this.loneFallbackFactor > 0 && perToken > this.loneFallbackFactor * this.halfBestMsPerToken) this.fallbackLeft = LONE_FALLBACK_DECODES;
  }

  /** What llama.cpp would abort on: a sequence id out of range, a position beyond the context, a batch over n_batch / n_ubatch. */
  private checkBatch(lane: Lane, n: number, sequences: number, maxTokens: number, maxSequences: number): void {
    const batch = lane.batch;
    if (n < 1 || n > maxTokens) throw new Error(`batch check: ${n} tokens for a batch of ${maxTokens}`);
    if (sequences > maxSequences) throw new Error(`batch check: ${sequences} sequences for ${maxSequences}`);
    let previousSeq = 0;
    let expectedPos = 0;
    for (let i = 0; i < n; i++) {
      const seq = batch.seqId[i]![0]!;
      const pos = batch.pos[i]!;
      const token = batch.token[i]!;
      if (seq < 0 || seq >= sequences) throw new Error(`batch check: sequence id ${seq} out of range`);
      if (seq !== previousSeq) {
        if (seq !== previousSeq + 1) throw new Error(`batch check: sequence ${seq} follows ${previousSeq}`);
        previousSeq = seq;
        expectedPos = 0;
      }
      if (pos !== expectedPos++ || pos >= maxTokens) throw new Error(`batch check: position ${pos} in sequence ${seq}`);
      if (token < 0 || token >= this.vocabSize) throw new Error(`batch check: token ${token} outside the vocabulary`);
    }
  }

  /** `decoded`: the context that ran the batch (the lane's own or its plain-attention one), whose outputs are read. */
  private afterDecode(decoded: { context: Pointer; memory: Pointer }, status: number, jobs: Job[], lastIndex: number[], n: number, t0: number, onLoop: boolean): void {
    this.stats.decodeMs += performance.now() - t0;
    this.stats.decodes++;
    this.stats.inputs += jobs.length;
    this.stats.tokens += n;
    if (this.disposed) {
      for (const job of jobs) job.reject(new Error('the llama.cpp encoder is closed'));
      if (this.lanes.every((other) => !other.decoding)) this.notifyIdle();
      return;
    }
    if (status !== 0) {
      for (const job of jobs) job.reject(new Error(`llama_decode returned ${status}`));
    } else {
      const { api, lib } = this;
      const bytes = this.outputSize * 4;
      jobs.forEach((job, seq) => {
        const pointer =
          this.pooling === LLAMA_POOLING_TYPE.none ? api.llama_get_embeddings_ith(decoded.context, lastIndex[seq]!) : api.llama_get_embeddings_seq(decoded.context, seq);
        if (!pointer) {
          job.reject(new Error(`llama.cpp returned no embedding for sequence ${seq}`));
          return;
        }
        // A copy: the buffer is overwritten by the next decode.
        job.resolve(new Float32Array(lib.koffi.view(pointer, bytes).slice(0)));
      });
    }
    // Decoder embedders keep what they evaluated: the next batch starts from empty sequences.
    if (decoded.memory) this.api.llama_memory_clear(decoded.memory, true);
    // On the loop, the next decode waits one turn: the answers just resolved reach their callers in this
    // turn's microtasks, and what they send (an engine process's outgoing message goes at the end of a
    // turn, by setImmediate) must leave before the loop blocks in the next decode, not after it.
    if (onLoop) setImmediate(() => this.schedule());
    else this.schedule();
  }

  private notifyIdle(): void {
    const waiters = this.idle;
    this.idle = [];
    for (const resolve of waiters) resolve();
  }

  /** Rejects what is queued, waits for a decode in flight, frees the context, the pool and the model. */
  async dispose(error: Error = new Error('the llama.cpp encoder is closed')): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    for (const job of this.queue.splice(0)) job.reject(error);
    if (this.lanes.some((lane) => lane.decoding)) await new Promise<void>((resolve) => this.idle.push(resolve));
    const { api } = this;
    for (const lane of this.lanes) {
      api.llama_batch_free(lane.batch.struct);
      for (const created of [lane.main, lane.small?.context]) {
        if (!created) continue;
        api.llama_detach_threadpool(created.context);
        api.llama_free(created.context);
      }
      this.lib.freeThreadpool(lane.threadpool);
      if (lane.halfPool) this.lib.freeThreadpool(lane.halfPool);
    }
    api.llama_model_free(this.model);
  }
}

/**
 * The n_seq_max a context is created with for batches of at most `sequences` inputs: the next power of
 * two. On the bundled llama.cpp a flash-attention context whose n_seq_max is not a power of two aborts
 * the process (GGML_ASSERT(ggml_can_mul_mat(a, b)) in ggml.c) at its first decode of two or more
 * sequences: 3, 5, 6, 7, 12, 24 and 48 did on the bench BERT and the tiny one, 2, 4, 8, 16, 32, 64 and 128
 * did not (a plain-attention reranker context took 3). So `batchSequences: 12` killed the engine process
 * at the first packed batch. The encoder still packs at most `sequences` inputs per decode (dispatch);
 * n_seq_max only bounds the sequence ids a batch may use. (Cause inside llama.cpp not traced.)
 */
export function seqMaxOf(sequences: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(1, sequences)));
}

/**
 * The begin/end tokens an input gets, by node-llama-cpp's rule (its resolveBeginningTokenToPrepend /
 * resolveEndTokenToAppend, after llama.cpp's tokenizer): WordPiece [CLS] … [SEP], Unigram … </s>,
 * RWKV nothing, others BOS / EOS as the GGUF's add_bos / add_eos say.
 */
export function frameOf(
  vocabType: number,
  special: { bos: number | undefined; eos: number | undefined; sep: number | undefined },
  addBos: boolean,
  addEos: boolean,
): { begin: number | undefined; end: number | undefined } {
  switch (vocabType) {
    case LLAMA_VOCAB_TYPE.rwkv:
      return { begin: undefined, end: undefined };
    case LLAMA_VOCAB_TYPE.wpm:
      return { begin: special.bos, end: special.sep };
    case LLAMA_VOCAB_TYPE.ugm:
      return { begin: undefined, end: special.eos };
    default:
      // node-llama-cpp asks for a BOS id before honouring either flag.
      return {
        begin: special.bos !== undefined && addBos ? special.bos : undefined,
        end: special.bos !== undefined && addEos ? special.eos : undefined,
      };
  }
}
