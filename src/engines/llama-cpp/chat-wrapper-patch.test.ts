// node-llama-cpp 3.21.1 is patched (patches/node-llama-cpp+3.21.1.patch, applied by `npm ci`'s
// postinstall through patch-package) so that a cold start resolves its chat wrappers in a third of the
// CPU: resolveChatWrapper memoizes, within one call, the Jinja wrappers its equivalence checks build for
// identical options and their renders of the same test histories, and no longer imports LlamaModel.js
// (~0.25 s) just to recognize a LlamaModel, and ChatWrapper.js no longer imports config.js (~40-60 ms) for
// its default system prompt. These tests check that the patch is in place and that the
// memoized resolution picks what the unmemoized one picks: the same class, settings and prompts.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import type { ChatHistoryItem, ChatWrapper, ChatModelFunctions } from 'node-llama-cpp';
import { ensureTinyModels } from '../../tiny-models/index.ts';
import { QWEN3_CHAT_TEMPLATE } from '../../tiny-models/random-chat.ts';
import { WRAPPER_SETTINGS } from './chat-plan.ts';
import { openLlamaLibrary, type LlamaLibrary } from './ffi/library.ts';
import { FfiVocab } from './ffi/vocab.ts';
import { NLC_DIST, NLC_PATHS, nlcModule, type LlamaTextModule, type ReadGgufModule } from './nlc-parts.ts';
import { forbidImportHook } from '../../../test/helpers/forbid-import.ts';

const EQUIVALENCE = 'chatWrappers/utils/isJinjaTemplateEquivalentToSpecializedChatWrapper.js';

/** The patched internals, as the patch declares them. */
interface CheckCache {
  _wrappers: Map<string, unknown>;
}
type ResolveOptions = Record<string, unknown> & { _jinjaEquivalenceCheckCache?: CheckCache | null };
interface Patched {
  resolveChatWrapper(options: ResolveOptions): ChatWrapper | null;
}

let dir: string;
let chatPath: string;
let lib: LlamaLibrary;
let vocabModel: unknown;
let vocab: FfiVocab;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'infera-wrapper-patch-'));
  chatPath = (await ensureTinyModels(dir)).chat;
  lib = await openLlamaLibrary();
  const { api } = lib;
  vocabModel = api.llama_model_load_from_file(chatPath, { ...(api.llama_model_default_params() as Record<string, unknown>), n_gpu_layers: 0, vocab_only: true });
  assert.ok(vocabModel);
  vocab = new FfiVocab(api, api.llama_model_get_vocab(vocabModel));
});

after(() => {
  if (vocabModel) lib.api.llama_model_free(vocabModel);
  rmSync(dir, { recursive: true, force: true });
});

const notApplied = 'patches/node-llama-cpp+3.21.1.patch is not applied to node_modules/node-llama-cpp: run `npm ci` (its postinstall runs patch-package)';

test('the node-llama-cpp patch is applied: the check cache exists and resolveChatWrapper fills it', async () => {
  const equivalence = await nlcModule<{ JinjaEquivalenceCheckCache?: new () => CheckCache }>(EQUIVALENCE);
  assert.equal(typeof equivalence.JinjaEquivalenceCheckCache, 'function', notApplied);
  const { resolveChatWrapper } = await nlcModule<Patched>(NLC_PATHS.resolveChatWrapper);
  const { readGgufFileInfo } = await nlcModule<ReadGgufModule>(NLC_PATHS.readGguf);
  const fileInfo = await readGgufFileInfo(chatPath, { sourceType: 'filesystem' });
  const cache = new equivalence.JinjaEquivalenceCheckCache!();
  const wrapper = resolveChatWrapper({ bosString: vocab.tokens.bosString, filename: basename(chatPath), fileInfo, tokenizer: vocab.tokenizer, customWrapperSettings: WRAPPER_SETTINGS.standard, _jinjaEquivalenceCheckCache: cache });
  assert.equal(wrapper?.constructor.name, 'QwenChatWrapper');
  // Qwen's 16 candidate option sets ask for Jinja wrappers of two option sets, four variants each at most.
  assert.ok(cache._wrappers.size > 0 && cache._wrappers.size <= 8, `${cache._wrappers.size} Jinja wrappers built`);
});

test('the patched resolveChatWrapper does not load LlamaModel.js', () => {
  // A loader hook that fails any load of LlamaModel.js: importing resolveChatWrapper.js must not need it.
  const hook = forbidImportHook(dir, 'no-llama-model', "url.endsWith('/evaluator/LlamaModel/LlamaModel.js')", 'LlamaModel.js loaded');
  const module = new URL(NLC_PATHS.resolveChatWrapper, NLC_DIST).href;
  const run = spawnSync(process.execPath, ['--import', hook, '--input-type=module', '-e', `const m = await import(${JSON.stringify(module)}); console.log(typeof m.resolveChatWrapper);`], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(run.status, 0, `${notApplied}\n${run.stderr}`);
  assert.equal(run.stdout.trim(), 'function');
});

test('the patched chat wrappers do not load config.js, and keep its default system prompt', async () => {
  // ChatWrapper.js imported config.js (env-var, nanoid, the bindings' types: ~40-60 ms of CPU on every
  // FFI chat engine start) for one string; the patch copies the string. A loader hook fails any load of config.js.
  const hook = forbidImportHook(dir, 'no-config', "url.endsWith('/node-llama-cpp/dist/config.js')", 'config.js loaded');
  const modules = [NLC_PATHS.qwen, NLC_PATHS.resolveChatWrapper].map((path) => new URL(path, NLC_DIST).href);
  const run = spawnSync(process.execPath, ['--import', hook, '--input-type=module', '-e', `for (const m of ${JSON.stringify(modules)}) await import(m); console.log('ok');`], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(run.status, 0, `${notApplied}\n${run.stderr}`);
  assert.equal(run.stdout.trim(), 'ok');
  // The copy is the same string config.js exports: what a wrapper's initial chat history starts with.
  const { defaultChatSystemPrompt } = await nlcModule<{ defaultChatSystemPrompt: string }>('config.js');
  const { QwenChatWrapper } = await nlcModule<{ QwenChatWrapper: new () => ChatWrapper }>(NLC_PATHS.qwen);
  const { LlamaText } = await nlcModule<LlamaTextModule>(NLC_PATHS.llamaText);
  assert.deepEqual(new QwenChatWrapper().generateInitialChatHistory(), [{ type: 'system', text: LlamaText(defaultChatSystemPrompt).toJSON() }]);
});

// A template of this test's own in the ChatML layout, and one that no specialized wrapper matches (kept as a Jinja wrapper).
const CHATML_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
const ODD_TEMPLATE =
  "{% for message in messages %}{{ '[[' + message['role'] | upper + ']] ' + message['content'] + ' ;;\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '[[ASSISTANT]] ' }}{% endif %}";

const functions: ChatModelFunctions = { get_weather: { description: 'Current weather', params: { type: 'object', properties: { city: { type: 'string' } } } } };
const histories: ChatHistoryItem[][] = [
  [
    { type: 'system', text: 'Be brief.' },
    { type: 'user', text: 'Weather in Paris?' },
    { type: 'model', response: [] },
  ],
  [
    { type: 'user', text: 'Weather in Paris?' },
    { type: 'model', response: ['Let me check.', { type: 'functionCall', name: 'get_weather', params: { city: 'Paris' }, result: { sky: 'clear' } }, 'Clear.'] },
    { type: 'user', text: 'Thanks' },
    { type: 'model', response: [] },
  ],
];

/** What a wrapper is and what it renders: its class, its fields, and its context state for the histories above. */
function outcome(wrapper: ChatWrapper | null) {
  if (!wrapper) return null;
  const { _jinjaTemplate: _, ...fields } = wrapper as unknown as Record<string, unknown>;
  return {
    name: wrapper.constructor.name,
    fields: JSON.stringify(fields),
    renders: histories.map((chatHistory) => {
      const state = wrapper.generateContextState({ chatHistory, availableFunctions: functions });
      return JSON.stringify({ text: state.contextText, stops: state.stopGenerationTriggers, ignore: state.ignoreStartText, call: state.functionCall });
    }),
  };
}

test('memoized and unmemoized resolution pick the same wrapper, settings and prompts', async () => {
  const { resolveChatWrapper } = await nlcModule<Patched>(NLC_PATHS.resolveChatWrapper);
  const { readGgufFileInfo } = await nlcModule<ReadGgufModule>(NLC_PATHS.readGguf);
  const fileInfo = await readGgufFileInfo(chatPath, { sourceType: 'filesystem' });
  assert.equal(fileInfo.metadata.tokenizer.chat_template, QWEN3_CHAT_TEMPLATE);
  const cases = [
    { name: 'qwen3 (tiny chat GGUF)', fileInfo, expect: 'QwenChatWrapper' },
    { name: 'chatml', fileInfo: { ...fileInfo, metadata: { ...fileInfo.metadata, general: { architecture: 'llama' }, tokenizer: { ...fileInfo.metadata.tokenizer, chat_template: CHATML_TEMPLATE } } }, expect: 'ChatMLChatWrapper' },
    { name: 'unmatched', fileInfo: { ...fileInfo, metadata: { ...fileInfo.metadata, general: { architecture: 'llama' }, tokenizer: { ...fileInfo.metadata.tokenizer, chat_template: ODD_TEMPLATE } } }, expect: 'JinjaTemplateChatWrapper' },
  ];
  for (const { name, fileInfo: info, expect } of cases)
    for (const [key, customWrapperSettings] of Object.entries(WRAPPER_SETTINGS)) {
      const options = { bosString: vocab.tokens.bosString, filename: basename(chatPath), fileInfo: info, tokenizer: vocab.tokenizer, customWrapperSettings };
      const memoized = outcome(resolveChatWrapper(options));
      const plain = outcome(resolveChatWrapper({ ...options, _jinjaEquivalenceCheckCache: null }));
      assert.equal(memoized?.name, expect, `${name} ${key}`);
      assert.deepEqual(memoized, plain, `${name} ${key}`);
    }
});
