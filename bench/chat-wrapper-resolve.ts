// CPU of the llama.cpp FFI chat engine's first-start chat-wrapper resolution, step by step, in fresh
// processes: importing chat-plan.ts (node-llama-cpp's LlamaText and QwenChatWrapper, on every start), then
// node-llama-cpp's resolveChatWrapper, resolving the `standard` wrapper (thinking
// on: what the first answer waits for on a first start ever), the `noThinking` one (deferred to idle),
// and `standard` again (the same work with warm code). The tokenizer is the runner's own (ffi/vocab.ts,
// a vocabulary-only model), the metadata llama.cpp's, as in chat-wrappers.ts. CPU time
// (process.cpuUsage) is the figure to read on a shared box.
//
//   node --import tsx bench/chat-wrapper-resolve.ts [--runs 9] [--model chat-512x8] [--root a,b]
//
// --collect N runs N full garbage collections (gc(), the child started with --expose-gc) between `standard`
// and `noThinking`, as the engine process's release of its load's leftovers did before it reported itself
// loaded: V8 then drops the bytecode the first resolution compiled, and `noThinking` compiles it again.
//
// --root DIR,DIR compares checkouts (each with its own node_modules, e.g. a base worktree without a
// patch under patches/): every run starts one process per root in turn (a, b, a, b, ...), each importing
// that root's sources and packages.
import { spawnSync } from 'node:child_process';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import type { BenchModelKind } from '../src/tiny-models/index.ts';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '9' },
    model: { type: 'string', default: 'chat-512x8' },
    root: { type: 'string', default: resolve(import.meta.dirname, '..') },
    child: { type: 'string' },
    collect: { type: 'string', default: '0' },
  },
});

const STEPS = ['import chat-plan', 'import', 'standard', 'noThinking', 'standard again'] as const;

if (values.child) {
  // One measured process: the root's own modules.
  const root = values.child;
  const from = (path: string) => import(pathToFileURL(join(root, path)).href);
  const cpu = () => {
    const { user, system } = process.cpuUsage();
    return (user + system) / 1000;
  };
  const { ensureBenchModel } = await from('src/tiny-models/index.ts');
  const path: string = await ensureBenchModel(values.model as BenchModelKind, join(tmpdir(), 'infera-bench-models'));
  const { openLlamaLibrary } = await from('src/engines/llama-cpp/ffi/library.ts');
  const { FfiVocab, metadataFromModel } = await from('src/engines/llama-cpp/ffi/vocab.ts');
  const { api } = await openLlamaLibrary({ cpuBackend: 'prebuilt' });
  const vocabModel = api.llama_model_load_from_file(path, { ...api.llama_model_default_params(), n_gpu_layers: 0, vocab_only: true });
  const vocab = new FfiVocab(api, api.llama_model_get_vocab(vocabModel));
  const times: Record<string, number> = {};
  let at = cpu();
  const lap = (step: (typeof STEPS)[number]) => {
    const now = cpu();
    times[step] = now - at;
    at = now;
  };
  // The FFI chat engine's planner: node-llama-cpp's LlamaText and QwenChatWrapper (every start, cached or not).
  const { WRAPPER_SETTINGS } = await from('src/engines/llama-cpp/chat-plan.ts');
  const { chatWrapperMetadata, resolutionTokenizer } = await from('src/engines/llama-cpp/chat-wrappers.ts');
  const { nlcModule, NLC_PATHS } = await from('src/engines/llama-cpp/nlc-parts.ts');
  lap('import chat-plan');
  const metadata = chatWrapperMetadata(metadataFromModel(api, vocabModel));
  const { resolveChatWrapper } = await nlcModule(NLC_PATHS.resolveChatWrapper);
  lap('import');
  // As chat-wrappers.ts resolves: through its memoizing tokenizer where the root has one (not before 2026-12-07).
  const tokenizer = resolutionTokenizer?.(vocab.tokenizer) ?? Object.assign((...args: unknown[]) => vocab.tokenizer(...args), vocab.tokenizer, { memoizedDuring: <T>(work: () => T) => work() });
  const resolveWith = (settings: unknown) =>
    tokenizer.memoizedDuring(() =>
      resolveChatWrapper({ bosString: vocab.tokens.bosString, filename: path.split('/').at(-1), fileInfo: { metadata }, tokenizer, customWrapperSettings: settings }),
    );
  const standard = resolveWith(WRAPPER_SETTINGS.standard);
  lap('standard');
  const collections = Number(values.collect);
  if (collections > 0) {
    for (let i = 0; i < collections; i++) (globalThis as { gc?: () => void }).gc!();
    at = cpu();
  }
  const noThinking = resolveWith(WRAPPER_SETTINGS.noThinking);
  lap('noThinking');
  resolveWith(WRAPPER_SETTINGS.standard);
  lap('standard again');
  api.llama_model_free(vocabModel);
  process.stdout.write(`${JSON.stringify({ times, wrappers: [standard.constructor.name, JSON.stringify(standard.settings).length, noThinking.constructor.name] })}\n`);
} else {
  const roots = values.root.split(',').map((root) => resolve(root));
  const results = new Map<string, Record<string, number[]>>(roots.map((root) => [root, {}]));
  const outcomes = new Set<string>();
  console.log(`${new Date().toISOString()} load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}, node ${process.version}, model ${values.model}, ${values.collect} collection(s) before noThinking`);
  for (let run = 0; run < Number(values.runs); run++)
    for (const root of roots) {
      const child = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', import.meta.filename, '--child', root, '--model', values.model, '--collect', values.collect!], { cwd: root, encoding: 'utf8' });
      if (child.status !== 0) throw new Error(`${root}: ${child.stderr}`);
      const { times, wrappers } = JSON.parse(child.stdout.trim().split('\n').at(-1)!) as { times: Record<string, number>; wrappers: unknown[] };
      outcomes.add(JSON.stringify(wrappers));
      const mine = results.get(root)!;
      for (const step of STEPS) {
        mine[step] ??= [];
        mine[step].push(times[step]!);
      }
    }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  console.log(`medians of ${values.runs} (CPU ms), load average at end ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  console.log(`| root | ${STEPS.join(' | ')} |`);
  console.log(`|---|${STEPS.map(() => '---').join('|')}|`);
  for (const [root, times] of results) console.log(`| ${root} | ${STEPS.map((step) => median(times[step]!).toFixed(0)).join(' | ')} |`);
  // The same wrappers (class, settings size) from every root, or the comparison is void.
  console.log(`resolved: ${[...outcomes].join(' / ')}`);
}
