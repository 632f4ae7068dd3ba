// The FFI chat engine's chat wrappers, resolved without a node-llama-cpp LlamaModel, and cached.
//
// resolveChatWrapper takes `{ bosString, filename, fileInfo, tokenizer }` as well as a LlamaModel: the
// tokenizer is the runner's own (ffi/vocab.ts), the metadata comes from node-llama-cpp's GGUF reader
// (pure JavaScript). Resolving renders the Jinja template against every option set of the candidate
// wrappers, twice (thinking on and off): ~1 s of CPU per start with stock node-llama-cpp 3.21.1, plus
// ~0.3 s to import resolveChatWrapper (it loaded LlamaModel.js and the bindings); our patch
// (patches/node-llama-cpp+3.21.1.patch, chat-wrapper-patch.test.ts) memoizes the repeated Jinja work
// and drops that import: ~0.33 s and ~0.03 s for the Qwen3 template; the Jinja engine's own patch
// (patches/@huggingface+jinja+0.5.11.patch, jinja-patch.test.ts) takes ~20 % more off. The outcome is a pure function
// of the GGUF (its template and vocabulary), the settings asked for and node-llama-cpp's version (the
// patch changes no outcome), so a specialized wrapper's
// class and settings are kept on disk under the cache folder (`infera serve`: <dataDir>/cache), and a
// later start of the same file constructs the wrapper directly from its one module (~45 ms). A
// template node-llama-cpp keeps as a Jinja wrapper is not cached (it is resolved each start).
// Differences from a LlamaModel resolution: none for the result; without a Llama, node-llama-cpp's
// native Jinja renderer (its fallback when the JavaScript one cannot parse a template) is not available.
// The GGUF metadata resolveChatWrapper reads (GGUF_KEYS) comes from llama.cpp's own copy in the
// vocabulary-only model when the caller has one (metadataFromModel): node-llama-cpp's GGUF reader parses
// the whole header, vocabulary arrays included, ~0.1 s of CPU for it and its import on a first start.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, realpathSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { ChatWrapper, Token, Tokenizer } from 'node-llama-cpp';
import { WRAPPER_SETTINGS, checkQwenToolResults, type Wrappers } from './chat-plan.ts';
import type { FfiVocab } from './ffi/vocab.ts';
import { NLC_DIST, NLC_PATHS, chatWrapperPath, nlcModule, type ReadGgufModule, type ResolveChatWrapperModule } from './nlc-parts.ts';

/** One resolved wrapper, as the cache keeps it. */
interface CachedWrapper {
  className: string;
  settings: Record<string, unknown>;
}
interface CacheEntry {
  standard: CachedWrapper;
  noThinking: CachedWrapper;
}

const CACHE_FORMAT = 1;
let nlcVersion: string | undefined;

function nodeLlamaCppVersion(): string {
  nlcVersion ??= (JSON.parse(readFileSync(new URL('../package.json', NLC_DIST), 'utf8')) as { version: string }).version;
  return nlcVersion;
}

/** The cache key: the GGUF's identity (real path, size, modification time), the settings and node-llama-cpp's version. */
export function wrapperCacheKey(path: string): string {
  const real = realpathSync(path);
  const stat = statSync(real);
  return createHash('sha256')
    .update(JSON.stringify({ format: CACHE_FORMAT, nlc: nodeLlamaCppVersion(), path: real, size: stat.size, mtime: stat.mtimeMs, settings: WRAPPER_SETTINGS }))
    .digest('hex')
    .slice(0, 32);
}

/** A wrapper's fields as plain data, to tell two wrappers apart. */
const fingerprint = (wrapper: unknown) => JSON.stringify(wrapper);

/**
 * The class and settings a resolved specialized wrapper was made with (resolveChatWrapper makes it with
 * `new Class({ ...one of its candidate option sets, ...customWrapperSettings[type] })`), or undefined
 * when it is not one of those (a Jinja wrapper, or settings this cannot recover): then nothing is cached.
 */
function describe(
  wrapper: ChatWrapper,
  chatWrappers: ResolveChatWrapperModule['chatWrappers'],
  custom: Record<string, unknown>,
): CachedWrapper | undefined {
  const entry = Object.entries(chatWrappers).find(([, Class]) => wrapper.constructor === Class);
  if (!entry) return undefined;
  const [type, Class] = entry as [string, (new (settings: Record<string, unknown>) => ChatWrapper) & { _getOptionConfigurationsToTestIfCanSupersedeJinjaTemplate?(): unknown[] }];
  if (type === 'jinjaTemplate' || type === 'template') return undefined;
  const own = (custom[type] ?? {}) as Record<string, unknown>;
  const candidates: Record<string, unknown>[] = [{}];
  for (const option of Class._getOptionConfigurationsToTestIfCanSupersedeJinjaTemplate?.() ?? [])
    candidates.push(((Array.isArray(option) ? option[1] : option) ?? {}) as Record<string, unknown>);
  const target = fingerprint(wrapper);
  for (const candidate of candidates) {
    const settings = { ...candidate, ...own };
    try {
      if (fingerprint(new Class(settings)) === target) return { className: Class.name, settings };
    } catch {
      // not constructible with these settings
    }
  }
  return undefined;
}

async function construct(cached: CachedWrapper): Promise<ChatWrapper> {
  const module = await nlcModule<Record<string, new (settings: Record<string, unknown>) => ChatWrapper>>(chatWrapperPath(cached.className));
  const Class = module[cached.className];
  if (typeof Class !== 'function') throw new Error(`node-llama-cpp has no ${cached.className}`);
  return new Class(cached.settings);
}

function readCache(file: string): CacheEntry | undefined {
  try {
    const entry = JSON.parse(readFileSync(file, 'utf8')) as CacheEntry;
    return entry?.standard?.className && entry.noThinking?.className ? entry : undefined;
  } catch {
    return undefined;
  }
}

/** The cached wrappers of this GGUF, when the cache has a usable entry (no tokenizer needed). */
export async function cachedFfiWrappers(path: string, cacheDir: string | undefined): Promise<Wrappers | undefined> {
  if (!cacheDir) return undefined;
  const hit = readCache(join(cacheDir, `chat-wrapper-${wrapperCacheKey(path)}.json`));
  if (!hit) return undefined;
  try {
    const wrappers = { standard: await construct(hit.standard), noThinking: await construct(hit.noThinking) };
    checkQwenToolResults(wrappers);
    return wrappers;
  } catch {
    // A stale or damaged entry: resolved again (and overwritten).
    return undefined;
  }
}

/**
 * The model's wrappers (thinking on and off) for a GGUF loaded by the FFI runner. `cacheDir`: where
 * resolutions are kept (none: resolve every time). `cached` says whether the cache answered.
 *
 * `deferNoThinking` (on a cache miss): the no-thinking wrapper is resolved on its first read of
 * `wrappers.noThinking` (synchronous: the resolution is) instead of now, and `check` vets it then, a
 * throw failing that read; the cache entry is written once both are known. Reading it early (when the
 * model is idle after load: FfiChatModel) fills the cache. On Qwen3's template that resolution is
 * ~150-220 ms of CPU (Jinja renders with enable_thinking:false) off the load, out of the first
 * answer's way on a first start ever (docs/BENCHMARKS.md, "First start: the no-thinking chat wrapper").
 */
export async function resolveFfiWrappers(
  path: string,
  vocab: FfiVocab,
  cacheDir: string | undefined,
  /** The GGUF's metadata as llama.cpp read it (metadataFromModel); without it node-llama-cpp's reader reads the file. */
  metadata?: GgufMetadataSource,
  deferred?: { deferNoThinking: true; check: (wrapper: ChatWrapper) => void },
): Promise<{ wrappers: Wrappers; cached: boolean }> {
  const file = cacheDir ? join(cacheDir, `chat-wrapper-${wrapperCacheKey(path)}.json`) : undefined;
  const hit = await cachedFfiWrappers(path, cacheDir);
  if (hit) return { wrappers: hit, cached: true };
  const { resolveChatWrapper, chatWrappers } = await nlcModule<ResolveChatWrapperModule>(NLC_PATHS.resolveChatWrapper);
  // Only `metadata` of a GgufFileInfo is read (GGUF_KEYS).
  const fileInfo = metadata
    ? ({ metadata: chatWrapperMetadata(metadata) } as unknown as Awaited<ReturnType<ReadGgufModule['readGgufFileInfo']>>)
    : await (await nlcModule<ReadGgufModule>(NLC_PATHS.readGguf)).readGgufFileInfo(path, { sourceType: 'filesystem' });
  // resolveChatWrapper's fallback, imported before a deferred resolution needs it synchronously.
  const { GeneralChatWrapper } = await nlcModule<{ GeneralChatWrapper: new () => ChatWrapper }>(chatWrapperPath('GeneralChatWrapper'));
  const tokenizer = resolutionTokenizer(vocab.tokenizer);
  // What resolveChatWrapper(model) passes for a LlamaModel, and its fallback.
  const resolve = (customWrapperSettings: Record<string, unknown>): ChatWrapper =>
    tokenizer.memoizedDuring(
      () =>
        resolveChatWrapper({
          bosString: vocab.tokens.bosString,
          filename: basename(path),
          fileInfo,
          tokenizer,
          customWrapperSettings: customWrapperSettings as never,
        }) ?? new GeneralChatWrapper(),
    );
  const store = (wrappers: Wrappers) => {
    if (!file) return;
    const standard = describe(wrappers.standard, chatWrappers, WRAPPER_SETTINGS.standard);
    const noThinking = describe(wrappers.noThinking, chatWrappers, WRAPPER_SETTINGS.noThinking);
    if (standard && noThinking)
      try {
        mkdirSync(cacheDir!, { recursive: true });
        // Written whole, then renamed: a concurrent reader sees the old file or the new one.
        const temporary = `${file}.${process.pid}.tmp`;
        writeFileSync(temporary, JSON.stringify({ standard, noThinking } satisfies CacheEntry));
        renameSync(temporary, file);
      } catch {
        // A read-only data folder: the next start resolves again.
      }
  };
  const standard = resolve(WRAPPER_SETTINGS.standard);
  if (deferred) {
    checkQwenToolResults({ standard, noThinking: standard });
    let noThinking: ChatWrapper | undefined;
    let failure: unknown;
    const wrappers = { standard } as Wrappers;
    Object.defineProperty(wrappers, 'noThinking', {
      enumerable: true,
      get(): ChatWrapper {
        if (noThinking) return noThinking;
        if (failure !== undefined) throw failure;
        try {
          const resolved = resolve(WRAPPER_SETTINGS.noThinking);
          checkQwenToolResults({ standard, noThinking: resolved });
          deferred.check(resolved);
          noThinking = resolved;
        } catch (error) {
          failure = error;
          throw error;
        }
        store(wrappers);
        return noThinking;
      },
    });
    pending.add(wrappers);
    return { wrappers, cached: false };
  }
  const wrappers: Wrappers = { standard, noThinking: resolve(WRAPPER_SETTINGS.noThinking) };
  checkQwenToolResults(wrappers);
  store(wrappers);
  return { wrappers, cached: false };
}

/**
 * The tokenizer a resolution is given: `tokenizer` itself, except that while `memoizedDuring(work)` runs
 * it answers a text it has tokenized before (same special-token and option arguments) from memory.
 * Resolving Qwen3's `standard` wrapper tokenized 24 distinct texts 624 times (one FFI call to llama.cpp's
 * tokenizer, or up to four with `trimLeadingSpace`, each), 45-77 ms of its ~330-390 ms of CPU. Tokenizing
 * is a pure function of the vocabulary, so the answers are the same; each caller gets its own copy of the
 * tokens. Outside a resolution nothing is kept: a Jinja wrapper keeps this tokenizer for its requests.
 */
export function resolutionTokenizer(tokenizer: Tokenizer): Tokenizer & { memoizedDuring<T>(work: () => T): T } {
  let memo: Map<string, Token[]> | undefined;
  const tokenize = (text: string, specialTokens?: boolean | 'builtin', options?: 'trimLeadingSpace'): Token[] => {
    if (!memo) return tokenizer(text, specialTokens as never, options);
    const key = `${String(specialTokens)}\u0000${String(options)}\u0000${text}`;
    let tokens = memo.get(key);
    if (!tokens) {
      tokens = tokenizer(text, specialTokens as never, options);
      memo.set(key, tokens);
    }
    return tokens.slice();
  };
  return Object.assign(tokenize as Tokenizer, {
    detokenize: tokenizer.detokenize,
    isSpecialToken: tokenizer.isSpecialToken,
    isEogToken: tokenizer.isEogToken,
    memoizedDuring<T>(work: () => T): T {
      memo = new Map();
      try {
        return work();
      } finally {
        memo = undefined;
      }
    },
  });
}

/** Wrappers whose no-thinking wrapper resolveFfiWrappers deferred (it may have been read since). */
const pending = new WeakSet<Wrappers>();
/** Whether resolveFfiWrappers deferred this one's no-thinking wrapper (its load-time checks ran on `standard` only). */
export const deferredNoThinking = (wrappers: Wrappers): boolean => pending.has(wrappers);

/** A GGUF metadata value by key, as llama.cpp keeps it (a string; undefined when absent). */
export type GgufMetadataSource = (key: string) => string | undefined;

/**
 * The GGUF keys node-llama-cpp 3.21.1's resolveChatWrapper reads (resolveChatWrapper.js,
 * getModelLinageNames.js, isLlama3_2LightweightModel.js; the wrappers' _checkModelCompatibility reads
 * the architecture it is given). chat-ffi-vocab.test.ts records every key a resolution reads from the
 * full metadata and fails on one missing here.
 */
export const GGUF_KEYS = ['general.architecture', 'general.name', 'general.basename', 'general.size_label', 'tokenizer.chat_template'] as const;
/** Read as numbers (node-llama-cpp's reader gives a number for a GGUF integer). */
const BASE_MODEL_COUNT = 'general.base_model.count';
/** At most this many base models are named (a count beyond it in a damaged file reads nothing more). */
const MAX_BASE_MODELS = 64;

/** The metadata tree resolveChatWrapper reads (node-llama-cpp's fileInfo.metadata shape), from GGUF_KEYS. */
export function chatWrapperMetadata(read: GgufMetadataSource): Record<string, unknown> {
  const tree: Record<string, unknown> = {};
  const set = (key: string, value: unknown) => {
    const parts = key.split('.');
    let node = tree;
    for (const part of parts.slice(0, -1)) {
      node[part] ??= {};
      node = node[part] as Record<string, unknown>;
    }
    node[parts.at(-1)!] = value;
  };
  for (const key of GGUF_KEYS) {
    const value = read(key);
    if (value !== undefined) set(key, value);
  }
  const count = Number(read(BASE_MODEL_COUNT));
  if (Number.isInteger(count) && count >= 0) {
    set(BASE_MODEL_COUNT, count);
    for (let i = 0; i < Math.min(count, MAX_BASE_MODELS); i++) {
      const name = read(`general.base_model.${i}.name`);
      if (name !== undefined) set(`general.base_model.${i}.name`, name);
    }
  }
  return tree;
}
