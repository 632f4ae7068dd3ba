// The engine process reaches each engine's load() through loaders.ts instead of the engine table, so
// that it starts loading without importing the config schemas: both tables must name the same engines
// and the same functions, and an engine process must load a model with zod unloadable.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureTinyModels } from '../tiny-models/index.ts';
import { engines } from './index.ts';
import { engineLoaders } from './loaders.ts';
import { llamaCppModelSchema } from './llama-cpp/config.ts';
import type { ChildMessage } from './runner/protocol.ts';
import { forbidImportHook } from '../../test/helpers/forbid-import.ts';

let dir: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'infera-loaders-'));
});

after(() => rmSync(dir, { recursive: true, force: true }));

test("engineLoaders names the engine table's engines and gives each descriptor's own load()", async () => {
  assert.deepEqual(Object.keys(engineLoaders).sort(), engines.map((engine) => engine.name).sort());
  for (const engine of engines) assert.equal(await engineLoaders[engine.name]!(), engine.load, engine.name);
});

test('an engine process loads a llama-cpp chat model without importing zod', async () => {
  const chatPath = (await ensureTinyModels(dir)).chat;
  // A loader hook that makes zod unloadable: any import of it fails the engine process's start or load.
  const hook = forbidImportHook(dir, 'no-zod', "url.includes('/node_modules/zod/')", 'zod imported');
  const config = llamaCppModelSchema.parse({ id: 'tiny', type: 'chat', engine: 'llama-cpp', path: chatPath, llamaCpp: { contextSize: 256, sequences: 1, threads: 1 } });
  const child = fork(fileURLToPath(new URL('./runner/child.ts', import.meta.url)), [], {
    execArgv: ['--import', 'tsx', '--import', hook],
    serialization: 'advanced',
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    env: { ...process.env, INFERA_CACHE_DIR: '' },
  });
  let stderr = '';
  child.stderr!.on('data', (chunk) => (stderr += chunk));
  child.stdout!.resume();
  try {
    const answer = await new Promise<ChildMessage | { t: 'exit'; code: number | null }>((resolve) => {
      child.on('message', (message: ChildMessage) => (message.t === 'loaded' || message.t === 'load-failed') && resolve(message));
      child.once('exit', (code) => resolve({ t: 'exit', code }));
      child.send({ t: 'load', config, logLevel: 'warn' });
    });
    assert.equal(answer.t, 'loaded', `${JSON.stringify(answer)}\n${stderr}`);
  } finally {
    child.kill('SIGKILL');
  }
});
