// The FFI chat engine starts without node-llama-cpp's Llama (ffi/vocab.ts, chat-wrappers.ts,
// nlc-parts.ts): its tokenizer must be the one node-llama-cpp's LlamaModel gives for the same GGUF,
// its chat wrappers the ones resolveChatWrapper picks for a LlamaModel (from the cache as well), and
// its engine process must really not load node-llama-cpp's package root.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { QwenChatWrapper, type Llama, type LlamaModel, type Token } from 'node-llama-cpp';
import { ensureTinyModels } from '../../tiny-models/index.ts';
import { ChatPlanner, WRAPPER_SETTINGS, resolveWrappers, type Wrappers } from './chat-plan.ts';
import { NLC_PATHS, nlcModule, type ResolveChatWrapperModule } from './nlc-parts.ts';
import { GGUF_KEYS, chatWrapperMetadata, resolutionTokenizer, resolveFfiWrappers } from './chat-wrappers.ts';
import { openLlamaLibrary, type LlamaLibrary } from './ffi/library.ts';
import { LlamaRunner } from './ffi/runner.ts';
import { FfiVocab, metadataFromModel } from './ffi/vocab.ts';
import { createLlama } from './runtime.ts';
import { forbidImportHook } from '../../../test/helpers/forbid-import.ts';

let dir: string;
let chatPath: string;
let llama: Llama;
let model: LlamaModel;
let runner: LlamaRunner;
let vocab: FfiVocab;
let lib: LlamaLibrary;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'infera-ffi-vocab-'));
  chatPath = (await ensureTinyModels(dir)).chat;
  llama = await createLlama(false);
  model = await llama.loadModel({ modelPath: chatPath, vocabOnly: true });
  lib = await openLlamaLibrary();
  runner = LlamaRunner.load(lib, chatPath, { contextSize: 256, sequences: 1, threads: 1 });
  vocab = new FfiVocab(lib.api, runner.vocab);
});

after(async () => {
  await runner?.dispose();
  await model?.dispose();
  await llama?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

const TEXTS = [
  'Hello there',
  ' leading space',
  '   three spaces',
  '\nnew line first',
  '<|im_start|>user\nHi<|im_end|>\n',
  '<tool_call>\n{"name": "f"}\n</tool_call>',
  '<think>\n\n</think>\n\n',
  'ünïcödé — 日本語 🙂',
  '',
];

test('special tokens, vocabulary type and size match node-llama-cpp LlamaModel', () => {
  const t = model.tokens;
  assert.deepEqual(vocab.tokens, {
    bos: t.bos,
    eos: t.eos,
    eot: t.eot,
    nl: t.nl,
    sep: t.sep,
    bosString: t.bosString,
    eosString: t.eosString,
    eotString: t.eotString,
    nlString: t.nlString,
    shouldPrependBosToken: t.shouldPrependBosToken,
    infill: { prefix: t.infill.prefix, suffix: t.infill.suffix, middle: t.infill.middle },
  });
  assert.equal(vocab.vocabularyType, model.vocabularyType);
  assert.equal(vocab.vocabularySize, model.fileInfo.metadata.tokenizer.ggml.tokens.length);
});

test('tokenize, detokenize and the token predicates match node-llama-cpp LlamaModel', () => {
  for (const text of TEXTS)
    for (const special of [false, true])
      for (const option of [undefined, 'trimLeadingSpace'] as const)
        assert.deepEqual(vocab.tokenize(text, special, option), model.tokenize(text, special, option), `${JSON.stringify(text)} special=${special} ${option}`);
  for (const builtin of ['BOS', 'EOS', 'NL', 'EOT', 'SEP'] as const) assert.deepEqual(vocab.tokenizer(builtin, 'builtin'), model.tokenizer(builtin, 'builtin'));
  for (const text of TEXTS) {
    const tokens = model.tokenize(text, true);
    for (const special of [false, true]) {
      assert.equal(vocab.detokenize(tokens, special), model.detokenize(tokens, special), `${JSON.stringify(text)} special=${special}`);
      assert.equal(vocab.detokenize(tokens.slice(2), special, tokens.slice(0, 2)), model.detokenize(tokens.slice(2), special, tokens.slice(0, 2)));
    }
  }
  for (let token = 0 as Token; token < vocab.vocabularySize; token++) {
    assert.equal(vocab.tokenizer.isEogToken(token), model.isEogToken(token), `isEogToken(${token})`);
    assert.equal(vocab.tokenizer.isSpecialToken(token), model.isSpecialToken(token), `isSpecialToken(${token})`);
  }
});

/** What distinguishes two wrappers: their class and every field (settings included). */
const describeWrappers = (wrappers: Wrappers) =>
  [wrappers.standard, wrappers.noThinking].map((wrapper) => ({ name: wrapper.constructor.name, fields: JSON.stringify(wrapper) }));

test("a resolution's tokenizer: the vocabulary's tokens, from memory only while a resolution runs, a fresh array each time", () => {
  let calls = 0;
  const counting = Object.assign((...args: Parameters<typeof vocab.tokenizer>) => {
    calls++;
    return vocab.tokenizer(...args);
  }, vocab.tokenizer) as typeof vocab.tokenizer;
  const tokenizer = resolutionTokenizer(counting);
  const text = '<|im_start|>user\nHi<|im_end|>\n';
  tokenizer(text, true);
  tokenizer(text, true);
  assert.equal(calls, 2, 'outside a resolution every call tokenizes');
  const inside = tokenizer.memoizedDuring(() => {
    const first = tokenizer(text, true);
    first.push(-1 as Token);
    const again = tokenizer(text, true);
    const plain = tokenizer(text, false);
    const trimmed = tokenizer(' leading space', false, 'trimLeadingSpace');
    const trimmedAgain = tokenizer(' leading space', false, 'trimLeadingSpace');
    return { again, plain, trimmed, trimmedAgain };
  });
  assert.equal(calls, 5, 'inside: each distinct text, special-token and option set once');
  assert.deepEqual(inside.again, vocab.tokenizer(text, true), "a caller's change to its array is not what the next one gets");
  assert.deepEqual(inside.plain, vocab.tokenizer(text, false));
  assert.notDeepEqual(inside.plain, inside.again);
  assert.deepEqual(inside.trimmed, vocab.tokenizer(' leading space', false, 'trimLeadingSpace'));
  assert.deepEqual(inside.trimmedAgain, inside.trimmed);
  tokenizer(text, true);
  assert.equal(calls, 6, 'nothing is kept once the resolution is over');
  assert.equal(tokenizer.detokenize, vocab.tokenizer.detokenize);
});

test('chat wrappers: the ones resolveChatWrapper picks for a LlamaModel, resolved once and then taken from the cache', async () => {
  const expected = await resolveWrappers(model);
  const cacheDir = join(dir, 'cache');
  const first = await resolveFfiWrappers(chatPath, vocab, cacheDir);
  assert.equal(first.cached, false);
  assert.deepEqual(describeWrappers(first.wrappers), describeWrappers(expected));
  assert.equal(readdirSync(cacheDir).filter((name) => name.endsWith('.json')).length, 1);

  const second = await resolveFfiWrappers(chatPath, vocab, cacheDir);
  assert.equal(second.cached, true);
  assert.deepEqual(describeWrappers(second.wrappers), describeWrappers(expected));
  // The same module instances as the package root's: instanceof holds (checkQwenToolResults relies on it).
  assert.ok(second.wrappers.standard instanceof QwenChatWrapper);

  // Prompts rendered through the cached wrappers and the runner's tokenizer are node-llama-cpp's.
  const functions = { get_weather: { description: 'Weather', params: { type: 'object', properties: { city: { type: 'string' } } } } } as const;
  const history = [{ type: 'system', text: 'Be brief.' }, { type: 'user', text: 'Weather in Paris?' }] as const;
  const ours = new ChatPlanner(vocab, second.wrappers, 256);
  const theirs = new ChatPlanner(model, expected, 256);
  for (const key of ['standard', 'noThinking'] as const)
    assert.deepEqual(ours.renderedTokens(second.wrappers[key], [...history], functions), theirs.renderedTokens(expected[key], [...history], functions));

  // A damaged entry is resolved again and rewritten.
  const [file] = readdirSync(cacheDir);
  writeFileSync(join(cacheDir, file!), '{"standard": {"className": "NoSuchChatWrapper", "settings": {}}, "noThinking": {"className": "NoSuchChatWrapper", "settings": {}}}');
  const third = await resolveFfiWrappers(chatPath, vocab, cacheDir);
  assert.equal(third.cached, false);
  assert.equal((await resolveFfiWrappers(chatPath, vocab, cacheDir)).cached, true);
});

test('chat wrappers, deferred: the no-thinking one resolves on its first read, checked, and only then is the cache written', async () => {
  const expected = await resolveWrappers(model);
  const cacheDir = join(dir, 'cache-deferred');
  const checked: string[] = [];
  const resolved = await resolveFfiWrappers(chatPath, vocab, cacheDir, undefined, {
    deferNoThinking: true,
    check: (wrapper) => void checked.push(JSON.stringify(wrapper)),
  });
  assert.equal(resolved.cached, false);
  // Nothing resolved for it yet: no check ran and no entry was written (it needs both wrappers).
  assert.deepEqual(checked, []);
  assert.equal(existsSync(cacheDir), false);
  assert.deepEqual(describeWrappers(resolved.wrappers), describeWrappers(expected));
  assert.deepEqual(checked, [JSON.stringify(expected.noThinking)]);
  assert.equal(resolved.wrappers.noThinking, resolved.wrappers.noThinking);
  assert.equal(checked.length, 1);
  const cached = await resolveFfiWrappers(chatPath, vocab, cacheDir);
  assert.equal(cached.cached, true);
  assert.deepEqual(describeWrappers(cached.wrappers), describeWrappers(expected));

  // A check that refuses it fails every read of it, and nothing is cached.
  const refusedDir = join(dir, 'cache-refused');
  const refused = await resolveFfiWrappers(chatPath, vocab, refusedDir, undefined, {
    deferNoThinking: true,
    check: () => {
      throw new Error('refused');
    },
  });
  assert.deepEqual(describeWrappers({ standard: refused.wrappers.standard, noThinking: refused.wrappers.standard }).at(0), describeWrappers(expected).at(0));
  for (let i = 0; i < 2; i++) assert.throws(() => refused.wrappers.noThinking, /refused/);
  assert.equal((await resolveFfiWrappers(chatPath, vocab, refusedDir)).cached, false);
});

/**
 * The metadata paths `read` touches, recorded through proxies over `tree` (a listing of keys counts as
 * reading `path.*`).
 */
function recordReads(tree: Record<string, unknown>): { proxy: Record<string, unknown>; paths: Set<string> } {
  const paths = new Set<string>();
  const wrap = (node: Record<string, unknown>, at: string): Record<string, unknown> =>
    new Proxy(node, {
      get(target, key, receiver) {
        const value = Reflect.get(target, key, receiver);
        if (typeof key !== 'string') return value;
        const path = at ? `${at}.${key}` : key;
        paths.add(path);
        return value !== null && typeof value === 'object' && !Array.isArray(value) ? wrap(value as Record<string, unknown>, path) : value;
      },
      ownKeys(target) {
        paths.add(`${at}.*`);
        return Reflect.ownKeys(target);
      },
    });
  return { proxy: wrap(tree, ''), paths };
}

test("chat wrappers from llama.cpp's copy of the metadata: every key resolveChatWrapper reads, the same values, the same wrappers", async () => {
  const { api } = lib;
  const vocabModel = api.llama_model_load_from_file(chatPath, { ...(api.llama_model_default_params() as Record<string, unknown>), n_gpu_layers: 0, vocab_only: true });
  assert.ok(vocabModel);
  try {
    const metadata = metadataFromModel(api, vocabModel);
    const full = model.fileInfo.metadata as unknown as Record<string, unknown>;
    // What a resolution reads of the full metadata (node-llama-cpp's reader): all of it among GGUF_KEYS.
    const { resolveChatWrapper } = await nlcModule<ResolveChatWrapperModule>(NLC_PATHS.resolveChatWrapper);
    const { proxy, paths } = recordReads(full);
    for (const settings of [WRAPPER_SETTINGS.standard, WRAPPER_SETTINGS.noThinking])
      resolveChatWrapper({ bosString: vocab.tokens.bosString, filename: 'model.gguf', fileInfo: { metadata: proxy } as never, tokenizer: vocab.tokenizer, customWrapperSettings: settings as never });
    assert.ok(paths.has('tokenizer.chat_template'), [...paths].join(', '));
    const known = (path: string) =>
      [...GGUF_KEYS, 'general.base_model.count'].some((key) => key === path || key.startsWith(`${path}.`)) || /^general\.base_model\.\d+(\.name)?$/.test(path);
    for (const path of paths) assert.ok(known(path), `resolveChatWrapper read ${path}, which chatWrapperMetadata does not provide`);
    // Those keys hold what node-llama-cpp's reader gives.
    const ours = chatWrapperMetadata(metadata);
    const get = (tree: Record<string, unknown>, key: string) => key.split('.').reduce<unknown>((node, part) => (node as Record<string, unknown> | undefined)?.[part], tree);
    for (const key of [...GGUF_KEYS, 'general.base_model.count']) assert.deepEqual(get(ours, key), get(full, key), key);
    assert.equal(metadata('no.such.key'), undefined);
    // A value longer than the first buffer (the template) comes back whole.
    assert.equal(metadata('tokenizer.chat_template'), get(full, 'tokenizer.chat_template'));
    // And the wrappers are the LlamaModel's.
    const resolved = await resolveFfiWrappers(chatPath, vocab, undefined, metadata);
    assert.deepEqual(describeWrappers(resolved.wrappers), describeWrappers(await resolveWrappers(model)));
  } finally {
    api.llama_model_free(vocabModel);
  }
});

test("an FFI chat model loads and answers in a process that never imports node-llama-cpp's package root", async () => {
  // A loader hook that makes the root index unloadable: any import of it fails the load below.
  const hook = forbidImportHook(dir, 'no-root', "url.endsWith('/node-llama-cpp/dist/index.js')", 'node-llama-cpp package root imported');
  const script = join(dir, 'load.mts');
  const descriptor = pathToFileURL(join(import.meta.dirname, 'descriptor.ts')).href;
  const resources = pathToFileURL(join(import.meta.dirname, '..', 'resources.ts')).href;
  writeFileSync(
    script,
    `import pino from ${JSON.stringify(import.meta.resolve('pino'))};
import { llamaCpp } from ${JSON.stringify(descriptor)};
import { EngineResources } from ${JSON.stringify(resources)};
const logger = pino({ level: 'warn' });
const resources = new EngineResources(logger);
const config = llamaCpp.schema.parse({ id: 'tiny', type: 'chat', engine: 'llama-cpp', path: ${JSON.stringify(chatPath)}, llamaCpp: { contextSize: 256, sequences: 1, threads: 1 } });
const loaded = await llamaCpp.load({ config, onProgress: () => {}, signal: new AbortController().signal, logger, resources, ownProcess: true });
const result = await loaded.model.doGenerate({ messages: [{ role: 'user', content: 'Hello' }], sampling: { temperature: 0 }, thinking: { enabled: false }, maxTokens: 4, signal: new AbortController().signal });
const schema = await loaded.model.doGenerate({ messages: [{ role: 'user', content: 'Hello' }], sampling: { temperature: 0 }, thinking: { enabled: false }, maxTokens: 8, responseFormat: { type: 'json_schema', schema: { type: 'object', properties: { a: { type: 'string' } } } }, signal: new AbortController().signal });
console.log(JSON.stringify({ runner: loaded.model.constructor.name, finish: result.finishReason, schema: schema.text }));
await loaded.dispose();
await resources.close();
`,
  );
  // No cache; then a cache's first start (wrappers resolved on a vocabulary-only model) and a later one (from the cache).
  const cacheDir = join(dir, 'engine-cache');
  for (const cache of ['', cacheDir, cacheDir]) {
    const run = spawnSync(process.execPath, ['--import', 'tsx', '--import', hook, script], { encoding: 'utf8', env: { ...process.env, INFERA_CACHE_DIR: cache }, timeout: 120_000 });
    assert.equal(run.status, 0, run.stderr);
    const out = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as { runner: string; finish: string; schema: string };
    assert.equal(out.runner, 'FfiChatModel');
    assert.ok(out.schema.startsWith('{'), out.schema);
  }
  assert.equal(readdirSync(cacheDir).length, 1);
});
