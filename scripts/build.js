#!/usr/bin/env node
// Compiles src/ to dist/ (what `npm start` and the `infera` bin run). `npm ci` runs it through
// `prepare`, so the README's two commands stay the only set-up. TypeScript 7's compiler is a native
// binary: the whole tree compiles in a few seconds.
import { spawnSync } from 'node:child_process';
import { cpSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');

let tsc;
try {
  // The package's exports hide bin/; its package.json names it.
  const manifest = createRequire(import.meta.url).resolve('typescript/package.json');
  tsc = join(dirname(manifest), 'bin', 'tsc');
} catch {
  console.error('infera build: the TypeScript compiler is not installed. Run `npm ci` (it installs the dev dependencies and builds).');
  process.exit(1);
}

// A clean dist: a file deleted from src must not linger in the build.
rmSync(dist, { recursive: true, force: true });
const result = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit', cwd: root });
if (result.status !== 0) {
  console.error('infera build: tsc failed (see above).');
  process.exit(result.status ?? 1);
}

// Files the code reads at run time next to itself (new URL('./x', import.meta.url)).
const ASSETS = ['.jinja', '.yaml'];
const copyAssets = (dir) => {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) copyAssets(path);
    else if (ASSETS.some((ext) => name.endsWith(ext))) cpSync(path, join(dist, relative(join(root, 'src'), path)));
  }
};
copyAssets(join(root, 'src'));
