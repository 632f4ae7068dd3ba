// The CLI loads what a command runs and nothing else: `--help` and the key/usage commands never load
// the HTTP server, the inference engines or the image library (bench/cli-startup.ts has the timings).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const HEAVY = ['fastify', 'node-llama-cpp', 'onnxruntime-node', 'sharp', '@huggingface/tokenizers', 'pg', 'ioredis', 'undici'];

function loaded(args: string[]): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'infera-imports-'));
  try {
    const record = join(dir, 'imports.txt');
    const result = spawnSync(process.execPath, ['--import', './test/fixtures/record-imports.mjs', 'bin/infera.js', ...args], {
      env: { ...process.env, INFERA_RECORD_IMPORTS: record, INFERA_DATA_DIR: join(dir, 'data'), INFERA_CONFIG: '', INFERA_DATABASE_URL: '' },
      encoding: 'utf8',
    });
    assert.equal(result.status, 0, result.stderr);
    return readFileSync(record, 'utf8').split('\n').filter(Boolean);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// The build bundles most packages into dist/ (scripts/build.js), so a package's code may come from a
// bundle file rather than its own: the build lists what each file holds, and a loaded file counts as
// every package in it.
const bundled = JSON.parse(readFileSync(new URL('../dist/bundle-inputs.json', import.meta.url), 'utf8')) as Record<string, string[]>;
const packagesIn = (urls: string[]) =>
  new Set(
    urls.flatMap((url) => {
      const inDist = /\/dist\/(.+\.js)$/.exec(url)?.[1];
      if (inDist) return (bundled[inDist] ?? []).filter((name) => name !== 'infera');
      return /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)?.[1] ?? [];
    }),
  );

test('infera --help loads the compiled CLI and commander only', () => {
  const urls = loaded(['--help']);
  assert.ok(urls.some((url) => url.includes('/dist/cli/main.js')), 'runs the compiled build');
  assert.ok(!urls.some((url) => url.endsWith('.ts')), 'no TypeScript source is loaded');
  assert.deepEqual([...packagesIn(urls)], ['commander']);
});

test('infera keys list loads the SQLite store, never the server, engines or image code', () => {
  const packages = packagesIn(loaded(['keys', 'list']));
  assert.ok(packages.has('better-sqlite3'), `the store is loaded: ${[...packages]}`);
  for (const heavy of HEAVY) assert.ok(!packages.has(heavy), `${heavy} is not loaded by keys list`);
});

test('infera models validates the config (zod, every engine descriptor) without loading the server or engines', () => {
  // `infera models` imports the config schema, whose engine descriptors must stay light too.
  const packages = packagesIn(loaded(['models']));
  assert.ok(packages.has('zod'), `config validation loads zod: ${[...packages]}`);
  for (const heavy of HEAVY) assert.ok(!packages.has(heavy), `${heavy} is not loaded by infera models`);
});
