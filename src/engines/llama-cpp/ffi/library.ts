// llama.cpp's C API through koffi, on the shared libraries node-llama-cpp's prebuilt package ships.
// Everything here is declared by hand from the headers of the llama.cpp commit bundled with the pinned
// node-llama-cpp (node_modules/node-llama-cpp/llama/gitRelease.bundle): a struct declared with a field
// too few or too many corrupts memory silently, so layout.test.ts compares every size and offset
// declared here with that header (compiled by gcc), and openLlamaLibrary() refuses to run when the
// defaults the library returns do not read back as the header says they should.
import { createHash } from 'node:crypto';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// koffi's types are structural: only the parts used here are spelled out.
type Koffi = typeof import('koffi');
type TypeObject = ReturnType<Koffi['struct']>;
export type Pointer = unknown;
type Fn = ((...args: unknown[]) => unknown) & { async: (...args: unknown[]) => void };

/** The release this file was declared against: node-llama-cpp's version and its bundled llama.cpp commit. */
export const DECLARED_FOR = { nodeLlamaCpp: '3.21.1', llamaCppCommit: '80fb11a' } as const;

export const GGML_MAX_N_THREADS = 512;
export const LLAMA_POOLING_TYPE = { unspecified: -1, none: 0, mean: 1, cls: 2, last: 3, rank: 4 } as const;
/** llama.h's enum llama_flash_attn_type. */
export const LLAMA_FLASH_ATTN_TYPE = { auto: -1, disabled: 0, enabled: 1 } as const;
export const LLAMA_VOCAB_TYPE = { none: 0, spm: 1, bpe: 2, wpm: 3, ugm: 4, rwkv: 5, plamo2: 6 } as const;
/** llama.cpp's LLAMA_MAX_SEQ: sequence ids of one context are below it. */
export const LLAMA_MAX_SEQ = 256;
const GGML_BACKEND_DEVICE_TYPE_CPU = 0;

/** Why the FFI runner cannot be used here (koffi missing, another platform, a layout mismatch). */
export class LlamaLibraryUnavailable extends Error {}

function declareTypes(koffi: Koffi) {
  // Anonymous types: koffi's registry of named types is process-wide, and two copies of this module
  // (src and dist in one test process) would otherwise collide.
  const model = koffi.pointer(koffi.opaque());
  const context = koffi.pointer(koffi.opaque());
  const vocab = koffi.pointer(koffi.opaque());
  const sampler = koffi.pointer(koffi.opaque());
  const memory = koffi.pointer(koffi.opaque());
  const threadpool = koffi.pointer(koffi.opaque());

  const modelParams = koffi.struct({
    devices: 'void *',
    tensor_buft_overrides: 'void *',
    n_gpu_layers: 'int32_t',
    split_mode: 'int32_t',
    load_mode: 'int32_t',
    lazy_mode: 'int32_t',
    main_gpu: 'int32_t',
    tensor_split: 'void *',
    progress_callback: 'void *',
    progress_callback_user_data: 'void *',
    kv_overrides: 'void *',
    vocab_only: 'bool',
    check_tensors: 'bool',
    use_extra_bufts: 'bool',
    no_host: 'bool',
    no_alloc: 'bool',
    load_mtp: 'bool',
  });
  const contextParams = koffi.struct({
    n_ctx: 'uint32_t',
    n_batch: 'uint32_t',
    n_ubatch: 'uint32_t',
    n_seq_max: 'uint32_t',
    n_rs_seq: 'uint32_t',
    n_outputs_max: 'uint32_t',
    n_outputs_max_per_seq: 'uint32_t',
    n_threads: 'int32_t',
    n_threads_batch: 'int32_t',
    ctx_type: 'int32_t',
    rope_scaling_type: 'int32_t',
    pooling_type: 'int32_t',
    attention_type: 'int32_t',
    flash_attn_type: 'int32_t',
    rope_freq_base: 'float',
    rope_freq_scale: 'float',
    yarn_ext_factor: 'float',
    yarn_attn_factor: 'float',
    yarn_beta_fast: 'float',
    yarn_beta_slow: 'float',
    yarn_orig_ctx: 'uint32_t',
    defrag_thold: 'float',
    cb_eval: 'void *',
    cb_eval_user_data: 'void *',
    type_k: 'int32_t',
    type_v: 'int32_t',
    abort_callback: 'void *',
    abort_callback_data: 'void *',
    embeddings: 'bool',
    offload_kqv: 'bool',
    no_perf: 'bool',
    op_offload: 'bool',
    swa_full: 'bool',
    kv_unified: 'bool',
    samplers: 'void *',
    n_samplers: 'size_t',
    ctx_other: 'void *',
  });
  const batch = koffi.struct({
    n_tokens: 'int32_t',
    token: 'void *',
    embd: 'void *',
    pos: 'void *',
    n_seq_id: 'void *',
    seq_id: 'void *',
    logits: 'void *',
  });
  const threadpoolParams = koffi.struct({
    cpumask: koffi.array('bool', GGML_MAX_N_THREADS),
    n_threads: 'int',
    prio: 'int32_t',
    poll: 'uint32_t',
    strict_cpu: 'bool',
    paused: 'bool',
  });
  const samplerChainParams = koffi.struct({ no_perf: 'bool' });
  const logitBias = koffi.struct({ token: 'int32_t', bias: 'float' });
  // The runner writes both through views of memory it allocates (runner.ts: TOKEN_DATA_*); declared so
  // that layout.test.ts checks those offsets against the header.
  const tokenData = koffi.struct({ id: 'int32_t', logit: 'float', p: 'float' });
  const tokenDataArray = koffi.struct({ data: 'void *', size: 'size_t', selected: 'int64_t', sorted: 'bool' });
  return { model, context, vocab, sampler, memory, threadpool, modelParams, contextParams, batch, threadpoolParams, samplerChainParams, logitBias, tokenData, tokenDataArray };
}

export type LlamaTypes = ReturnType<typeof declareTypes>;

/** The structs whose layout must match the header, with their C names (layout.test.ts walks this). */
export function declaredStructs(types: LlamaTypes): { name: string; type: TypeObject }[] {
  return [
    { name: 'llama_model_params', type: types.modelParams },
    { name: 'llama_context_params', type: types.contextParams },
    { name: 'llama_batch', type: types.batch },
    { name: 'ggml_threadpool_params', type: types.threadpoolParams },
    { name: 'llama_sampler_chain_params', type: types.samplerChainParams },
    { name: 'llama_logit_bias', type: types.logitBias },
    { name: 'llama_token_data', type: types.tokenData },
    { name: 'llama_token_data_array', type: types.tokenDataArray },
  ];
}

function bindLlama(koffi: Koffi, llama: ReturnType<Koffi['load']>, ggml: ReturnType<Koffi['load']>, ggmlBase: ReturnType<Koffi['load']>, t: LlamaTypes) {
  const f = (lib: ReturnType<Koffi['load']>, name: string, result: unknown, args: unknown[]) =>
    lib.func(name, result as never, args as never[]) as unknown as Fn;
  const llamaFn = (name: string, result: unknown, args: unknown[]) => f(llama, name, result, args);
  const bindings = {
    // ggml
    ggml_backend_reg_count: f(ggml, 'ggml_backend_reg_count', 'size_t', []),
    ggml_backend_load_all_from_path: f(ggml, 'ggml_backend_load_all_from_path', 'void', ['const char *']),
    ggml_backend_load: f(ggml, 'ggml_backend_load', 'void *', ['const char *']),
    ggml_backend_unload: f(ggml, 'ggml_backend_unload', 'void', ['void *']),
    ggml_backend_dev_by_type: f(ggml, 'ggml_backend_dev_by_type', 'void *', ['int32_t']),
    ggml_backend_dev_backend_reg: f(ggml, 'ggml_backend_dev_backend_reg', 'void *', ['void *']),
    ggml_backend_reg_get_proc_address: f(ggml, 'ggml_backend_reg_get_proc_address', 'void *', ['void *', 'const char *']),
    ggml_threadpool_params_default: f(ggmlBase, 'ggml_threadpool_params_default', t.threadpoolParams, ['int']),
    ggml_threadpool_params_init: f(ggmlBase, 'ggml_threadpool_params_init', 'void', [koffi.pointer(t.threadpoolParams), 'int']),

    // llama: lifecycle
    llama_backend_init: llamaFn('llama_backend_init', 'void', []),
    llama_model_default_params: llamaFn('llama_model_default_params', t.modelParams, []),
    llama_context_default_params: llamaFn('llama_context_default_params', t.contextParams, []),
    llama_sampler_chain_default_params: llamaFn('llama_sampler_chain_default_params', t.samplerChainParams, []),
    llama_model_load_from_file: llamaFn('llama_model_load_from_file', t.model, ['const char *', t.modelParams]),
    llama_model_free: llamaFn('llama_model_free', 'void', [t.model]),
    llama_init_from_model: llamaFn('llama_init_from_model', t.context, [t.model, t.contextParams]),
    llama_free: llamaFn('llama_free', 'void', [t.context]),
    llama_attach_threadpool: llamaFn('llama_attach_threadpool', 'void', [t.context, t.threadpool, t.threadpool]),
    llama_detach_threadpool: llamaFn('llama_detach_threadpool', 'void', [t.context]),
    llama_set_n_threads: llamaFn('llama_set_n_threads', 'void', [t.context, 'int32_t', 'int32_t']),

    // llama: model and context facts
    llama_n_ctx: llamaFn('llama_n_ctx', 'uint32_t', [t.context]),
    llama_n_ctx_seq: llamaFn('llama_n_ctx_seq', 'uint32_t', [t.context]),
    llama_n_batch: llamaFn('llama_n_batch', 'uint32_t', [t.context]),
    llama_n_ubatch: llamaFn('llama_n_ubatch', 'uint32_t', [t.context]),
    llama_n_seq_max: llamaFn('llama_n_seq_max', 'uint32_t', [t.context]),
    llama_model_n_ctx_train: llamaFn('llama_model_n_ctx_train', 'int32_t', [t.model]),
    llama_model_n_embd_out: llamaFn('llama_model_n_embd_out', 'int32_t', [t.model]),
    llama_model_n_cls_out: llamaFn('llama_model_n_cls_out', 'uint32_t', [t.model]),
    llama_pooling_type: llamaFn('llama_pooling_type', 'int32_t', [t.context]),
    llama_model_get_vocab: llamaFn('llama_model_get_vocab', t.vocab, [t.model]),
    llama_model_chat_template: llamaFn('llama_model_chat_template', 'const char *', [t.model, 'const char *']),
    llama_model_meta_val_str: llamaFn('llama_model_meta_val_str', 'int32_t', [t.model, 'const char *', 'uint8_t *', 'size_t']),
    llama_get_memory: llamaFn('llama_get_memory', t.memory, [t.context]),

    // vocabulary
    llama_vocab_n_tokens: llamaFn('llama_vocab_n_tokens', 'int32_t', [t.vocab]),
    llama_vocab_is_eog: llamaFn('llama_vocab_is_eog', 'bool', [t.vocab, 'int32_t']),
    llama_vocab_is_control: llamaFn('llama_vocab_is_control', 'bool', [t.vocab, 'int32_t']),
    llama_vocab_get_attr: llamaFn('llama_vocab_get_attr', 'int32_t', [t.vocab, 'int32_t']),
    llama_vocab_bos: llamaFn('llama_vocab_bos', 'int32_t', [t.vocab]),
    llama_vocab_eos: llamaFn('llama_vocab_eos', 'int32_t', [t.vocab]),
    llama_vocab_sep: llamaFn('llama_vocab_sep', 'int32_t', [t.vocab]),
    llama_vocab_get_add_bos: llamaFn('llama_vocab_get_add_bos', 'bool', [t.vocab]),
    llama_vocab_get_add_eos: llamaFn('llama_vocab_get_add_eos', 'bool', [t.vocab]),
    llama_vocab_type: llamaFn('llama_vocab_type', 'int32_t', [t.vocab]),
    llama_vocab_eot: llamaFn('llama_vocab_eot', 'int32_t', [t.vocab]),
    llama_vocab_nl: llamaFn('llama_vocab_nl', 'int32_t', [t.vocab]),
    llama_vocab_fim_pre: llamaFn('llama_vocab_fim_pre', 'int32_t', [t.vocab]),
    llama_vocab_fim_suf: llamaFn('llama_vocab_fim_suf', 'int32_t', [t.vocab]),
    llama_vocab_fim_mid: llamaFn('llama_vocab_fim_mid', 'int32_t', [t.vocab]),
    llama_vocab_get_text: llamaFn('llama_vocab_get_text', 'const char *', [t.vocab, 'int32_t']),
    llama_detokenize: llamaFn('llama_detokenize', 'int32_t', [t.vocab, 'int32_t *', 'int32_t', 'uint8_t *', 'int32_t', 'bool', 'bool']),
    llama_tokenize: llamaFn('llama_tokenize', 'int32_t', [t.vocab, 'const char *', 'int32_t', 'int32_t *', 'int32_t', 'bool', 'bool']),
    llama_token_to_piece: llamaFn('llama_token_to_piece', 'int32_t', [t.vocab, 'int32_t', 'uint8_t *', 'int32_t', 'int32_t', 'bool']),

    // batches and decoding
    llama_batch_init: llamaFn('llama_batch_init', t.batch, ['int32_t', 'int32_t', 'int32_t']),
    llama_log_set: llamaFn('llama_log_set', 'void', ['void *', 'void *']),
    llama_batch_free: llamaFn('llama_batch_free', 'void', [t.batch]),
    llama_decode: llamaFn('llama_decode', 'int32_t', [t.context, t.batch]),
    llama_encode: llamaFn('llama_encode', 'int32_t', [t.context, t.batch]),
    llama_get_logits_ith: llamaFn('llama_get_logits_ith', 'void *', [t.context, 'int32_t']),
    llama_get_embeddings_seq: llamaFn('llama_get_embeddings_seq', 'void *', [t.context, 'int32_t']),
    llama_get_embeddings_ith: llamaFn('llama_get_embeddings_ith', 'void *', [t.context, 'int32_t']),

    // memory (KV cache)
    llama_memory_clear: llamaFn('llama_memory_clear', 'void', [t.memory, 'bool']),
    llama_memory_seq_rm: llamaFn('llama_memory_seq_rm', 'bool', [t.memory, 'int32_t', 'int32_t', 'int32_t']),
    llama_memory_seq_cp: llamaFn('llama_memory_seq_cp', 'void', [t.memory, 'int32_t', 'int32_t', 'int32_t', 'int32_t']),
    llama_memory_seq_pos_max: llamaFn('llama_memory_seq_pos_max', 'int32_t', [t.memory, 'int32_t']),

    // sampling
    llama_sampler_chain_init: llamaFn('llama_sampler_chain_init', t.sampler, [t.samplerChainParams]),
    llama_sampler_chain_add: llamaFn('llama_sampler_chain_add', 'void', [t.sampler, t.sampler]),
    llama_sampler_free: llamaFn('llama_sampler_free', 'void', [t.sampler]),
    llama_sampler_accept: llamaFn('llama_sampler_accept', 'void', [t.sampler, 'int32_t']),
    llama_sampler_sample: llamaFn('llama_sampler_sample', 'int32_t', [t.sampler, t.context, 'int32_t']),
    // Backend sampling (llama.cpp's [EXPERIMENTAL] API, llama-server's --backend-sampling): a chain set on a
    // sequence runs inside the decode's graph; NULL detaches it.
    llama_set_sampler: llamaFn('llama_set_sampler', 'bool', [t.context, 'int32_t', t.sampler]),
    llama_get_sampled_token_ith: llamaFn('llama_get_sampled_token_ith', 'int32_t', [t.context, 'int32_t']),
    // The llama_token_data_array as a raw pointer: the runner owns and fills it (no struct marshalling per call).
    llama_sampler_apply: llamaFn('llama_sampler_apply', 'void', [t.sampler, 'void *']),
    llama_sampler_init_greedy: llamaFn('llama_sampler_init_greedy', t.sampler, []),
    llama_sampler_init_dist: llamaFn('llama_sampler_init_dist', t.sampler, ['uint32_t']),
    llama_sampler_init_top_k: llamaFn('llama_sampler_init_top_k', t.sampler, ['int32_t']),
    llama_sampler_init_top_p: llamaFn('llama_sampler_init_top_p', t.sampler, ['float', 'size_t']),
    llama_sampler_init_min_p: llamaFn('llama_sampler_init_min_p', t.sampler, ['float', 'size_t']),
    llama_sampler_init_temp: llamaFn('llama_sampler_init_temp', t.sampler, ['float']),
    llama_sampler_init_penalties: llamaFn('llama_sampler_init_penalties', t.sampler, ['int32_t', 'int32_t', 'float', 'float', 'float']),
    llama_sampler_init_logit_bias: llamaFn('llama_sampler_init_logit_bias', t.sampler, ['int32_t', 'int32_t', koffi.pointer(t.logitBias)]),
    llama_sampler_init_grammar: llamaFn('llama_sampler_init_grammar', t.sampler, [t.vocab, 'const char *', 'const char *']),
    llama_sampler_init_grammar_lazy_patterns: llamaFn('llama_sampler_init_grammar_lazy_patterns', t.sampler, [
      t.vocab,
      'const char *',
      'const char *',
      'const char **',
      'size_t',
      'int32_t *',
      'size_t',
    ]),
  };
  return bindings;
}

export type LlamaBindings = ReturnType<typeof bindLlama>;

export interface LlamaLibrary {
  koffi: Koffi;
  types: LlamaTypes;
  api: LlamaBindings;
  binsDir: string;
  /** The ggml CPU backend this process computes on, and why, when it is not the one asked for. */
  cpuBackend: CpuBackendChoice;
  /**
   * Creates a ggml CPU thread pool (the CPU backend exports it; it is loaded at run time). `poll`: how long
   * its workers spin for the next graph before sleeping (ggml's polling level, default 50).
   */
  newThreadpool(threads: number, poll?: number): Pointer;
  freeThreadpool(pool: Pointer): void;
  /**
   * ggml_threadpool_pause: the pool's workers stop polling and sleep until its next graph (whose kickoff
   * resumes it). Not among the CPU backend's get_proc_address names, so it is looked up in the backend's
   * mapped library: undefined where that is not known (not Linux).
   */
  pauseThreadpool: ((pool: Pointer) => void) | undefined;
}

/** node-llama-cpp's prebuilt package for this platform (its public getBinsDir()), and the folder with the libraries. */
async function findBinsDir(): Promise<{ dir: string; packageVersion: string }> {
  const os = process.platform === 'darwin' ? 'mac' : process.platform === 'win32' ? 'win' : process.platform;
  const name = `${os}-${process.arch}`;
  let found: { binsDir: string; packageVersion: string };
  try {
    const pkg = (await import(`@node-llama-cpp/${name}`)) as { getBinsDir(): { binsDir: string; packageVersion: string } };
    found = pkg.getBinsDir();
  } catch (error) {
    throw new LlamaLibraryUnavailable(`node-llama-cpp's prebuilt package @node-llama-cpp/${name} is not installed (${(error as Error).message})`);
  }
  // The package's bins folder holds one folder per build (linux-x64, ...): the one with libllama.
  const candidates = [join(found.binsDir, name), ...readdirSync(found.binsDir).map((entry) => join(found.binsDir, entry))];
  const dir = candidates.find((candidate) => existsSync(candidate) && libraryFile(candidate, 'llama') !== undefined);
  if (!dir) throw new LlamaLibraryUnavailable(`no libllama in ${found.binsDir}`);
  return { dir, packageVersion: found.packageVersion };
}

/** The file of a shared library in a folder: libllama.v0.4.0.so, libggml-base.so, llama.dll, libllama.dylib. */
function libraryFile(dir: string, stem: string): string | undefined {
  const pattern = new RegExp(`^(lib)?${stem.replace(/[-.]/g, '\\$&')}(\\.v[0-9.]+)?\\.(so|dylib|dll)$`);
  const file = readdirSync(dir).find((entry) => pattern.test(entry));
  return file === undefined ? undefined : join(dir, file);
}

/**
 * What the library's default-parameter functions must return when read through the declarations
 * (the values written in the bundled commit's llama-model.cpp / llama-context.cpp / ggml-cpu.c). A field
 * declared at the wrong offset reads back another field's value, so a shifted layout fails here.
 */
export const EXPECTED_DEFAULTS = {
  llama_model_params: {
    devices: null,
    n_gpu_layers: -1,
    split_mode: 1,
    load_mode: -1,
    lazy_mode: 1,
    main_gpu: 0,
    tensor_split: null,
    progress_callback: null,
    kv_overrides: null,
    vocab_only: false,
    check_tensors: false,
    use_extra_bufts: true,
    no_host: false,
    no_alloc: false,
    load_mtp: false,
  },
  llama_context_params: {
    n_ctx: 512,
    n_batch: 2048,
    n_ubatch: 512,
    n_seq_max: 1,
    n_rs_seq: 0,
    n_outputs_max: 0,
    n_outputs_max_per_seq: 1,
    n_threads: 4,
    n_threads_batch: 4,
    ctx_type: 0,
    rope_scaling_type: -1,
    pooling_type: -1,
    attention_type: -1,
    flash_attn_type: -1,
    rope_freq_base: 0,
    rope_freq_scale: 0,
    yarn_ext_factor: -1,
    yarn_attn_factor: -1,
    yarn_beta_fast: -1,
    yarn_beta_slow: -1,
    yarn_orig_ctx: 0,
    defrag_thold: -1,
    cb_eval: null,
    type_k: 1,
    type_v: 1,
    abort_callback: null,
    embeddings: false,
    offload_kqv: true,
    no_perf: true,
    op_offload: true,
    swa_full: true,
    kv_unified: false,
    samplers: null,
    n_samplers: 0,
    ctx_other: null,
  },
} as const;

/** Compares the library's defaults, read through the declarations, with EXPECTED_DEFAULTS; returns the mismatches. */
export function layoutMismatches(api: LlamaBindings): string[] {
  const problems: string[] = [];
  const compare = (struct: string, actual: Record<string, unknown>, expected: Record<string, unknown>) => {
    for (const [field, want] of Object.entries(expected)) {
      const got = actual[field];
      const same = want === null ? got === null || got === undefined : typeof want === 'number' ? Number(got) === want : got === want;
      if (!same) problems.push(`${struct}.${field} reads ${String(got)}, expected ${String(want)}`);
    }
  };
  compare('llama_model_params', api.llama_model_default_params() as Record<string, unknown>, EXPECTED_DEFAULTS.llama_model_params);
  compare('llama_context_params', api.llama_context_default_params() as Record<string, unknown>, EXPECTED_DEFAULTS.llama_context_params);
  const pool = api.ggml_threadpool_params_default(3) as Record<string, unknown>;
  compare('ggml_threadpool_params', pool, { n_threads: 3, prio: 0, poll: 50, strict_cpu: false, paused: false });
  const chain = api.llama_sampler_chain_default_params() as Record<string, unknown>;
  compare('llama_sampler_chain_params', chain, { no_perf: true });
  return problems;
}

/**
 * Which ggml CPU backend the runner loads (llamaCpp.cpuBackend): `prebuilt` is node-llama-cpp's best
 * variant for this CPU; `native` the module scripts/build-llama-server.sh --cpu-backend compiled on this
 * machine from the same llama.cpp commit; `auto` the native one when that build is there and fits.
 */
export type CpuBackendSetting = 'auto' | 'prebuilt' | 'native';

export interface OpenLlamaOptions {
  cpuBackend?: CpuBackendSetting;
  /** The folder of a native build (its build.json and libggml-cpu.so); default: the build script's cache. */
  cpuBackendDir?: string;
}

export interface CpuBackendChoice {
  kind: 'native' | 'prebuilt';
  /** The module's file, as mapped into this process (undefined when it cannot be told). */
  file: string | undefined;
  /** What the first opener of the library in this process asked for. */
  requested: CpuBackendSetting;
  /** Why the native build is not the one loaded (only when it is not). */
  notNative?: string;
  /** The native build's build.json, when it is the one loaded. */
  build?: NativeCpuBuild;
}

/** scripts/build-llama-server.sh --cpu-backend's build.json. */
export interface NativeCpuBuild {
  commit: string;
  module: string;
  sha256: string;
  cpuFlags: string;
  compiler?: string;
  cmake?: string;
}

/** The one line a model's load logs about the CPU backend, and at which level. */
export function describeCpuBackend(choice: CpuBackendChoice, requested: CpuBackendSetting = choice.requested): { level: 'info' | 'warn'; text: string } {
  const file = choice.file ?? 'an unknown file';
  if (choice.kind === 'native') {
    const text = `llama.cpp CPU backend: native build ${file} (llama.cpp ${choice.build?.commit.slice(0, 7)}, ${choice.build?.compiler ?? 'compiler unknown'})`;
    return { level: requested === 'prebuilt' ? 'warn' : 'info', text: requested === 'prebuilt' ? `${text}; \`prebuilt\` was asked for, but another model loaded the native one in this process first` : text };
  }
  const why = choice.notNative ? `; native build not used: ${choice.notNative}` : '';
  return { level: requested === 'native' ? 'warn' : 'info', text: `llama.cpp CPU backend: node-llama-cpp ${DECLARED_FOR.nodeLlamaCpp}'s prebuilt ${file}${why}` };
}

/** The commit of the llama.cpp source node-llama-cpp ships (its git bundle's HEAD): what its binaries were built from. */
export function bundledLlamaCppCommit(): string | undefined {
  try {
    const bundle = fileURLToPath(new URL('../llama/gitRelease.bundle', import.meta.resolve('node-llama-cpp')));
    const fd = openSync(bundle, 'r');
    const head = Buffer.alloc(4096);
    const read = readSync(fd, head, 0, head.length, 0);
    closeSync(fd);
    // "# v2 git bundle", then "<sha> <ref>" lines up to a blank line.
    const refs = head.toString('latin1', 0, read).split('\n').slice(1);
    const line = refs.find((entry) => /^[0-9a-f]{40} HEAD$/.test(entry)) ?? refs.find((entry) => /^[0-9a-f]{40} /.test(entry));
    return line?.slice(0, 40);
  } catch {
    return undefined;
  }
}

/** Where scripts/build-llama-server.sh --cpu-backend puts its build for a commit (INFERA_LLAMA_BUILD_ROOT as there). */
export function defaultNativeCpuBackendDir(commit: string): string {
  let root = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(root, 'package.json')) && dirname(root) !== root) root = dirname(root);
  return join(process.env.INFERA_LLAMA_BUILD_ROOT || join(root, '.infera', 'llama-server'), commit, 'cpu-backend');
}

/** The first flags line of /proc/cpuinfo, as a set. */
function cpuFlags(): Set<string> | undefined {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((entry) => entry.startsWith('flags'));
    return line ? new Set(line.slice(line.indexOf(':') + 1).trim().split(/\s+/)) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The native CPU backend module to load, or why not. Only the CPU backend is swapped: node-llama-cpp's
 * libggml-base, libggml and libllama stay, and the module uses their structs and functions, so it must
 * come from the very commit they were built from; it is checked here against the bundle they come with.
 */
export function nativeCpuBackend(dir: string | undefined): { file: string; build: NativeCpuBuild } | string {
  const commit = bundledLlamaCppCommit();
  if (!commit) return "node-llama-cpp's llama.cpp bundle cannot be read, so the commit a native build must match is unknown";
  if (!commit.startsWith(DECLARED_FOR.llamaCppCommit)) return `node-llama-cpp bundles llama.cpp ${commit.slice(0, 7)}; the FFI declarations are for ${DECLARED_FOR.llamaCppCommit}`;
  const folder = resolve(dir ?? defaultNativeCpuBackendDir(commit));
  const stampPath = join(folder, 'build.json');
  if (!existsSync(stampPath)) return `no native build in ${folder} (scripts/build-llama-server.sh --cpu-backend makes one)`;
  let build: NativeCpuBuild;
  try {
    build = JSON.parse(readFileSync(stampPath, 'utf8')) as NativeCpuBuild;
  } catch (error) {
    return `${stampPath} cannot be read (${(error as Error).message})`;
  }
  if (typeof build.commit !== 'string' || typeof build.module !== 'string' || typeof build.sha256 !== 'string') return `${stampPath} lacks commit, module or sha256`;
  if (build.commit !== commit)
    return `${folder} was built from llama.cpp ${build.commit.slice(0, 7)}, and node-llama-cpp's libraries are ${commit.slice(0, 7)} (rebuild it: scripts/build-llama-server.sh --cpu-backend)`;
  const file = join(folder, basename(build.module));
  if (!existsSync(file)) return `${file} is missing`;
  // A module rebuilt or copied over after the stamp was written is not the one checked.
  const sha256 = createHash('sha256').update(readFileSync(file)).digest('hex');
  if (sha256 !== build.sha256) return `${file} is not the file ${stampPath} describes (sha256 differs)`;
  // Compiled with -march=native: an instruction of a flag this CPU lacks would fault mid-decode.
  const here = cpuFlags();
  const missing = here ? (build.cpuFlags ?? '').split(/\s+/).filter((flag) => flag && !here.has(flag)) : [];
  if (missing.length > 0) return `${file} was compiled for a CPU with ${missing.slice(0, 6).join(' ')}, which this one lacks`;
  return { file, build };
}

/** ggml_threadpool_pause from the CPU backend's library, already loaded (dlopen hands back the same module). */
function threadpoolPause(koffi: Koffi, types: LlamaTypes, file: string | undefined): ((pool: Pointer) => void) | undefined {
  if (!file) return undefined;
  try {
    return koffi.load(file).func('ggml_threadpool_pause', 'void', [types.threadpool as never]) as unknown as (pool: Pointer) => void;
  } catch {
    return undefined;
  }
}

/** The files of shared libraries whose name contains `stem` mapped into this process (Linux; [] elsewhere). */
function mappedLibraries(stem: string): string[] {
  try {
    const files = new Set<string>();
    for (const line of readFileSync('/proc/self/maps', 'utf8').split('\n')) {
      const path = line.slice(line.indexOf('/'));
      if (line.includes('/') && basename(path).includes(stem)) files.add(path);
    }
    return [...files];
  } catch {
    return [];
  }
}

let opened: Promise<LlamaLibrary> | undefined;

/** ggml_log_level. */
const GGML_LOG_LEVEL = { debug: 1, info: 2, warn: 3, error: 4, cont: 5 } as const;
let logHook: unknown;

export type FfiLogLevel = 'error' | 'warn' | 'info' | 'debug';
/** Where llama.cpp's lines go when the addon has not set its hook: a server's LlamaRuntime. */
export type FfiLogSink = (level: FfiLogLevel, text: string) => void;
let logSink: FfiLogSink | undefined;

/**
 * Routes llama.cpp's lines (FFI runner and encoders, no node-llama-cpp addon) to `sink`, as the addon
 * routes them to node-llama-cpp's logger; undefined: warnings and errors to stderr (an engine process's
 * host logs those for its model). Returns a function that removes this sink if it is still the one set.
 */
export function setFfiLogSink(sink: FfiLogSink): () => void {
  logSink = sink;
  return () => {
    if (logSink === sink) logSink = undefined;
  };
}

/**
 * llama.cpp's log hook. llama.cpp logs from the thread that calls it (the loop's, or koffi's worker,
 * whose call koffi relays to the free main thread); the ggml compute threads log nothing on the paths
 * used here, so no call waits on a blocked main thread.
 */
function routeLlamaLog(koffi: Koffi, api: LlamaBindings): void {
  let level: FfiLogLevel = 'debug';
  logHook ??= koffi.register(
    (ggmlLevel: number, text: string) => {
      // A continuation (progress dots) keeps the level of the line it continues.
      if (ggmlLevel !== GGML_LOG_LEVEL.cont)
        level = ggmlLevel === GGML_LOG_LEVEL.error ? 'error' : ggmlLevel === GGML_LOG_LEVEL.warn ? 'warn' : ggmlLevel === GGML_LOG_LEVEL.info ? 'info' : 'debug';
      if (!text) return;
      if (logSink) logSink(level, text);
      else if (level === 'error' || level === 'warn') process.stderr.write(text);
    },
    koffi.pointer(koffi.proto('void', ['int', 'const char *', 'void *'])),
  );
  api.llama_log_set(logHook, null);
}

/**
 * Loads koffi and the libraries once per process. Rejects with LlamaLibraryUnavailable (a message fit
 * for the one log line that explains the fallback) when anything does not line up. The CPU backend is
 * chosen by the first call's options (a process has one); later callers read `cpuBackend` for what it is.
 */
export function openLlamaLibrary(options: OpenLlamaOptions = {}): Promise<LlamaLibrary> {
  opened ??= open(options);
  return opened;
}

/** The CPU backend of this process's library, once it is open (for the log line of each model's load). */
export async function openedCpuBackend(): Promise<CpuBackendChoice | undefined> {
  try {
    return opened && (await opened).cpuBackend;
  } catch {
    return undefined;
  }
}

/**
 * Loads koffi (its JavaScript and native addon: ~20-40 ms of CPU), nothing of llama.cpp. A spare engine
 * process (runner/host.ts) calls it before it knows its model; the libraries wait for the model's options
 * (a GPU model falls back to node-llama-cpp's addon, which must load its own build of them first).
 * Throws what openLlamaLibrary reports when koffi is missing.
 */
export function loadKoffi(): Koffi {
  // koffi's native part arrives as an optional dependency (@koromix/koffi-<platform>); require caches it.
  return createRequire(import.meta.url)('koffi') as Koffi;
}

async function open(options: OpenLlamaOptions): Promise<LlamaLibrary> {
  let koffi: Koffi;
  try {
    koffi = loadKoffi();
  } catch (error) {
    throw new LlamaLibraryUnavailable(`koffi cannot be loaded (${(error as Error).message.split('\n')[0]})`);
  }
  const { dir, packageVersion } = await findBinsDir();
  if (packageVersion !== DECLARED_FOR.nodeLlamaCpp)
    throw new LlamaLibraryUnavailable(
      `the installed llama.cpp binaries are node-llama-cpp ${packageVersion}; the FFI declarations are for ${DECLARED_FOR.nodeLlamaCpp}`,
    );
  const paths = { base: libraryFile(dir, 'ggml-base'), ggml: libraryFile(dir, 'ggml'), llama: libraryFile(dir, 'llama') };
  if (!paths.base || !paths.ggml || !paths.llama) throw new LlamaLibraryUnavailable(`libggml-base, libggml or libllama missing in ${dir}`);
  let api: LlamaBindings;
  const types = declareTypes(koffi);
  try {
    const ggmlBase = koffi.load(paths.base);
    const ggml = koffi.load(paths.ggml);
    const llama = koffi.load(paths.llama);
    api = bindLlama(koffi, llama, ggml, ggmlBase, types);
  } catch (error) {
    throw new LlamaLibraryUnavailable(`the llama.cpp libraries in ${dir} cannot be bound: ${(error as Error).message}`);
  }
  const problems = layoutMismatches(api);
  if (problems.length > 0)
    throw new LlamaLibraryUnavailable(
      `the llama.cpp structs declared for commit ${DECLARED_FOR.llamaCppCommit} do not match the installed library: ${problems.slice(0, 5).join('; ')}`,
    );
  const requested = options.cpuBackend ?? 'auto';
  const native = requested === 'prebuilt' ? undefined : nativeCpuBackend(options.cpuBackendDir);
  let notNative = typeof native === 'string' ? native : undefined;
  let build: NativeCpuBuild | undefined;
  // The libraries are built with dynamically loaded backends (GGML_BACKEND_DL): load the best CPU
  // variant for this machine the way node-llama-cpp's addon does, unless the addon already did.
  if (Number(api.ggml_backend_reg_count()) === 0) {
    // Nor has the addon set llama.cpp's log hook (it routes lines to the server's logger), so llama.cpp
    // would print every line of a load (~550 for a small BERT) to stderr: route them (setFfiLogSink).
    routeLlamaLog(koffi, api);
    if (native && typeof native !== 'string') {
      const reg = api.ggml_backend_load(native.file);
      const bases = mappedLibraries('libggml-base');
      if (!reg) notNative = `ggml_backend_load refused ${native.file} (llama.cpp's log says why)`;
      else if (bases.length !== 1) {
        // The module found a libggml-base of its own: two copies of ggml's state in one process.
        api.ggml_backend_unload(reg);
        notNative = `${native.file} brought in a second libggml-base (${bases.join(', ')}); it must bind to node-llama-cpp's`;
      } else build = native.build;
    }
    if (!build) api.ggml_backend_load_all_from_path(dir);
  } else if (native && typeof native !== 'string') {
    notNative = "node-llama-cpp's addon loaded its backends in this process first";
  }
  api.llama_backend_init();
  const cpu = api.ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
  if (!cpu) throw new LlamaLibraryUnavailable(`no CPU backend could be loaded from ${dir}`);
  const reg = api.ggml_backend_dev_backend_reg(cpu);
  const newAddress = api.ggml_backend_reg_get_proc_address(reg, 'ggml_threadpool_new');
  const freeAddress = api.ggml_backend_reg_get_proc_address(reg, 'ggml_threadpool_free');
  if (!newAddress || !freeAddress) throw new LlamaLibraryUnavailable('the CPU backend exports no ggml_threadpool_new');
  const newProto = koffi.proto(types.threadpool, [koffi.pointer(types.threadpoolParams)]);
  const freeProto = koffi.proto('void', [types.threadpool]);
  const threadpoolNew = koffi.decode(newAddress, newProto) as unknown as (params: unknown) => Pointer;
  const threadpoolFree = koffi.decode(freeAddress, freeProto) as unknown as (pool: Pointer) => void;
  const cpuFile = mappedLibraries('libggml-cpu')[0];
  return {
    koffi,
    types,
    api,
    binsDir: dir,
    cpuBackend: { kind: build ? 'native' : 'prebuilt', file: cpuFile, requested, notNative, build },
    newThreadpool(threads: number, poll?: number) {
      const params = api.ggml_threadpool_params_default(threads) as Record<string, unknown>;
      if (poll !== undefined) params.poll = poll;
      const pool = threadpoolNew(params);
      if (!pool) throw new Error(`ggml_threadpool_new(${threads}) failed`);
      return pool;
    },
    freeThreadpool(pool: Pointer) {
      threadpoolFree(pool);
    },
    pauseThreadpool: threadpoolPause(koffi, types, cpuFile),
  };
}
