// The FFI runner's choice of ggml CPU backend (llamaCpp.cpuBackend): node-llama-cpp's prebuilt variant
// or the module scripts/build-llama-server.sh --cpu-backend compiled here. The checks run on stand-in
// folders; the loads run in child processes (a process has one CPU backend), through the engine's
// descriptor so that the log line a model's load writes is what is checked. The native build takes
// minutes to compile and is not made here: without it the tests that load it are skipped, saying so.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { pathToFileURL } from 'node:url';
import { encodeBert, randomBertWeights } from '../../../tiny-models/bert.ts';
import { GgmlType } from '../../../tiny-models/gguf-writer.ts';
import { bundledLlamaCppCommit, defaultNativeCpuBackendDir, describeCpuBackend, nativeCpuBackend } from './library.ts';

const dir = mkdtempSync(join(tmpdir(), 'infera-cpu-backend-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const commit = bundledLlamaCppCommit();
const nativeDir = commit ? defaultNativeCpuBackendDir(commit) : undefined;
const NATIVE_SKIP =
  nativeDir && existsSync(join(nativeDir, 'build.json'))
    ? false
    : `no native CPU backend built in ${nativeDir ?? '(bundle unreadable)'}: run scripts/build-llama-server.sh --cpu-backend (~5-25 min on 2 cores) to run this test`;
if (NATIVE_SKIP) console.log(`cpu-backend.test.ts: SKIPPING the native-load tests: ${NATIVE_SKIP}`);

/** A stand-in build folder: a module file (not a real one unless `module` is given) and its build.json. */
function standIn(name: string, stamp: Record<string, unknown>, module: Buffer = Buffer.from('not a shared library')): string {
  const folder = join(dir, name);
  mkdirSync(folder, { recursive: true });
  writeFileSync(join(folder, 'libggml-cpu.so'), module);
  const sha256 = createHash('sha256').update(module).digest('hex');
  writeFileSync(join(folder, 'build.json'), JSON.stringify({ commit, module: 'libggml-cpu.so', sha256, cpuFlags: 'fpu', ...stamp }));
  return folder;
}

test('cpu backend: a missing build, another commit, a changed module or a CPU lacking its flags is refused with the reason', () => {
  assert.ok(commit && /^[0-9a-f]{40}$/.test(commit), `bundle commit ${commit}`);
  const empty = join(dir, 'empty');
  mkdirSync(empty, { recursive: true });
  assert.match(nativeCpuBackend(empty) as string, /^no native build in .*empty \(scripts\/build-llama-server\.sh --cpu-backend/);
  const other = standIn('other-commit', { commit: 'deadbeef'.repeat(5) });
  assert.match(nativeCpuBackend(other) as string, new RegExp(`built from llama\\.cpp deadbee, and node-llama-cpp's libraries are ${commit!.slice(0, 7)}`));
  const changed = standIn('changed', { sha256: '0'.repeat(64) });
  assert.match(nativeCpuBackend(changed) as string, /is not the file .*build\.json describes \(sha256 differs\)/);
  const foreign = standIn('foreign', { cpuFlags: 'fpu sse2 infera_imaginary_flag' });
  assert.match(nativeCpuBackend(foreign) as string, /compiled for a CPU with infera_imaginary_flag, which this one lacks/);
  const fits = nativeCpuBackend(standIn('fits', {}));
  assert.equal(typeof fits, 'object');
  assert.equal((fits as { file: string }).file, join(dir, 'fits', 'libggml-cpu.so'));
});

test('cpu backend: the log line says which backend and why the native one is not used, a warning when it was asked for', () => {
  const prebuilt = describeCpuBackend({ kind: 'prebuilt', file: '/x/libggml-cpu-zen4.so', requested: 'native', notNative: 'no native build in /y' });
  assert.deepEqual(prebuilt, { level: 'warn', text: "llama.cpp CPU backend: node-llama-cpp 3.21.1's prebuilt /x/libggml-cpu-zen4.so; native build not used: no native build in /y" });
  assert.equal(describeCpuBackend({ kind: 'prebuilt', file: '/x/a.so', requested: 'auto', notNative: 'no native build in /y' }).level, 'info');
  const native = describeCpuBackend({ kind: 'native', file: '/b/libggml-cpu.so', requested: 'auto', build: { commit: '80fb11ac73', module: 'libggml-cpu.so', sha256: '', cpuFlags: '', compiler: 'c++ 12' } });
  assert.deepEqual(native, { level: 'info', text: 'llama.cpp CPU backend: native build /b/libggml-cpu.so (llama.cpp 80fb11a, c++ 12)' });
});

// The children: a tiny BERT with F16 matrices (the F16 kernel the native build is for) loaded through the
// engine descriptor with `llamaCpp` options, its vectors for TEXTS, the model's log lines, and the
// libggml-base / libggml-cpu files mapped into the process.
const TEXTS = ['the quick brown fox', 'hello world', 'paris london tokyo river mountain ocean city', 'a'];
const modelPath = join(dir, 'tiny-bert-f16.gguf');
writeFileSync(
  modelPath,
  encodeBert({
    config: { name: 'infera-tiny-bert-f16', hidden: 128, layers: 2, heads: 4, feedForward: 256, contextLength: 512, reranker: false },
    weights: randomBertWeights(202),
    matrixType: GgmlType.F16,
  }),
);
const script = join(dir, 'child.mts');
const here = (path: string) => JSON.stringify(pathToFileURL(join(import.meta.dirname, path)).href);
writeFileSync(
  script,
  `import { Writable } from 'node:stream';
import { readFileSync } from 'node:fs';
import pino from ${JSON.stringify(import.meta.resolve('pino'))};
import { llamaCpp } from ${here('../descriptor.ts')};
import { EngineResources } from ${here('../../resources.ts')};
const lines = [];
const logger = pino({ level: 'info' }, new Writable({ write(chunk, _encoding, done) { lines.push(JSON.parse(String(chunk))); done(); } }));
const resources = new EngineResources(logger);
const config = llamaCpp.schema.parse({ id: 'tiny-f16', type: 'embedding', engine: 'llama-cpp', path: ${JSON.stringify(modelPath)}, normalize: false, llamaCpp: { threads: 1, contexts: 1, ...JSON.parse(process.argv[2]) } });
const loaded = await llamaCpp.load({ config, onProgress: () => {}, signal: new AbortController().signal, logger, resources, ownProcess: true });
const result = await loaded.model.doEmbed({ inputs: ${JSON.stringify(TEXTS.map((text) => ({ text })))}, signal: new AbortController().signal });
const mapped = (stem) => [...new Set(readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes('/') && l.slice(l.lastIndexOf('/')).includes(stem)).map((l) => l.slice(l.indexOf('/'))))];
console.log(JSON.stringify({ runner: loaded.model.runner, lines: lines.filter((l) => String(l.msg).includes('CPU backend')).map((l) => ({ level: l.level, msg: l.msg })), vectors: result.embeddings.map((v) => [...v]), bases: mapped('libggml-base'), cpus: mapped('libggml-cpu') }));
await loaded.dispose();
await resources.close();
`,
);

interface ChildResult {
  runner: string;
  lines: { level: number; msg: string }[];
  vectors: number[][];
  bases: string[];
  cpus: string[];
}
const PINO_INFO = 30;
const PINO_WARN = 40;

function child(llamaCpp: Record<string, unknown>): ChildResult {
  const run = spawnSync(process.execPath, ['--import', 'tsx', script, JSON.stringify(llamaCpp)], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(run.status, 0, run.stderr);
  const result = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as ChildResult;
  assert.equal(result.runner, 'ffi');
  assert.equal(result.lines.length, 1, JSON.stringify(result.lines));
  assert.equal(result.bases.length, 1, `one libggml-base mapped: ${result.bases.join(', ')}`);
  assert.equal(result.cpus.length, 1, `one CPU backend mapped: ${result.cpus.join(', ')}`);
  return result;
}

const maxDifference = (a: number[][], b: number[][]) => Math.max(...a.flatMap((vector, i) => vector.map((value, j) => Math.abs(value - b[i]![j]!))));
let prebuiltVectors: number[][] | undefined;

test('cpu backend: prebuilt loads node-llama-cpp\'s variant and says so', () => {
  const result = child({ cpuBackend: 'prebuilt' });
  assert.match(result.cpus[0]!, /@node-llama-cpp\/linux-x64\/bins\/.*\/libggml-cpu-[a-z0-9_]+\.so$/);
  assert.equal(result.lines[0]!.level, PINO_INFO);
  assert.match(result.lines[0]!.msg, /^tiny-f16: llama\.cpp CPU backend: node-llama-cpp 3\.21\.1's prebuilt .*libggml-cpu-[a-z0-9_]+\.so$/);
  prebuiltVectors = result.vectors;
});

test('cpu backend: a native build of another commit is refused and the prebuilt loads, with a warning saying why', () => {
  // The real module when there is one (it would load: only the stamp's commit is wrong), else a stand-in.
  const module = NATIVE_SKIP ? undefined : readFileSync(join(nativeDir!, 'libggml-cpu.so'));
  const folder = standIn('wrong-commit-child', { commit: 'deadbeef'.repeat(5), cpuFlags: '' }, module);
  const result = child({ cpuBackend: 'native', cpuBackendDir: folder });
  assert.match(result.cpus[0]!, /@node-llama-cpp\/.*\/libggml-cpu-[a-z0-9_]+\.so$/);
  assert.equal(result.lines[0]!.level, PINO_WARN);
  assert.match(result.lines[0]!.msg, /prebuilt .*; native build not used: .*wrong-commit-child was built from llama\.cpp deadbee/);
  const missing = child({ cpuBackend: 'native', cpuBackendDir: join(dir, 'nowhere') });
  assert.match(missing.lines[0]!.msg, /native build not used: no native build in .*nowhere/);
  if (prebuiltVectors) assert.ok(maxDifference(result.vectors, prebuiltVectors) === 0, 'the same backend gives the same vectors');
});

test('cpu backend: native (and auto) load the build of this commit, bound to node-llama-cpp\'s libggml-base, with the prebuilt\'s vectors', { skip: NATIVE_SKIP }, () => {
  for (const cpuBackend of ['native', 'auto']) {
    const result = child({ cpuBackend });
    assert.equal(result.cpus[0], join(nativeDir!, 'libggml-cpu.so'));
    assert.match(result.bases[0]!, /@node-llama-cpp\/linux-x64\/bins\/.*\/libggml-base\.so$/);
    assert.equal(result.lines[0]!.level, PINO_INFO);
    assert.match(result.lines[0]!.msg, new RegExp(`^tiny-f16: llama\\.cpp CPU backend: native build .*libggml-cpu\\.so \\(llama\\.cpp ${commit!.slice(0, 7)}, `));
    assert.ok(prebuiltVectors, 'the prebuilt test ran first');
    const difference = maxDifference(result.vectors, prebuiltVectors!);
    console.log(`cpu-backend.test.ts: ${cpuBackend}: largest difference from the prebuilt backend's vectors: ${difference.toExponential(2)}`);
    assert.ok(difference < 1e-4, `native vs prebuilt: ${difference}`);
  }
});

// Chat models: `auto` and `native` load the build (chat-ffi.ts says why), `prebuilt` keeps node-llama-cpp's variant.
const chatScript = join(dir, 'chat-child.mts');
writeFileSync(
  chatScript,
  `import { readFileSync } from 'node:fs';
import { ensureTinyModels } from ${here('../../../tiny-models/index.ts')};
import { loadFfiChatModel } from ${here('../chat-ffi.ts')};
import { llamaCppModelSchema } from ${here('../config.ts')};
const path = (await ensureTinyModels(${JSON.stringify(join(dir, 'tiny'))})).chat;
const config = llamaCppModelSchema.parse({ id: 'tiny-chat', type: 'chat', engine: 'llama-cpp', path, llamaCpp: { threads: 1, contextSize: 256, sequences: 1, ...JSON.parse(process.argv[2]) } });
const loaded = await loadFfiChatModel(config, undefined, { signal: new AbortController().signal, decodeOn: 'loop' });
if (typeof loaded === 'string') throw new Error(loaded);
const cpus = [...new Set(readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes('/') && l.slice(l.lastIndexOf('/')).includes('libggml-cpu')).map((l) => l.slice(l.indexOf('/'))))];
console.log(JSON.stringify({ cpus }));
await loaded.dispose();
`,
);

test('cpu backend: chat models load the native build under auto and native, the prebuilt when asked', { skip: NATIVE_SKIP }, () => {
  const cpus = (setting: string) => {
    const run = spawnSync(process.execPath, ['--import', 'tsx', chatScript, JSON.stringify({ cpuBackend: setting })], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(run.status, 0, run.stderr);
    return (JSON.parse(run.stdout.trim().split('\n').at(-1)!) as { cpus: string[] }).cpus;
  };
  const prebuilt = cpus('prebuilt');
  assert.equal(prebuilt.length, 1, prebuilt.join(', '));
  assert.match(prebuilt[0]!, /@node-llama-cpp\/.*\/libggml-cpu-[a-z0-9_]+\.so$/);
  assert.deepEqual(cpus('auto'), [join(nativeDir!, 'libggml-cpu.so')]);
  assert.deepEqual(cpus('native'), [join(nativeDir!, 'libggml-cpu.so')]);
});
