#!/usr/bin/env node
// Runs the whole suite with node's own test runner (Node 20 has no --test globbing, so we list files).
// Usage: npm test [-- path-substring ...] to run only matching files.
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { spawnSync } from 'node:child_process';

const roots = ['src', 'test'];
const files = [];
const walk = (dir) => {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path);
    else if (name.endsWith('.test.ts')) files.push(path);
  }
};
for (const root of roots) walk(root);
const filters = process.argv.slice(2);
const selected = files.sort().filter((file) => filters.length === 0 || filters.some((f) => file.includes(f)));
if (selected.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}
const step = (name, args) => {
  const started = Date.now();
  const result = spawnSync(process.execPath, args, { stdio: 'inherit' });
  if (result.status !== 0) {
    console.error(`\nnpm test: ${name} failed (see above); no tests were run.`);
    process.exit(result.status ?? 1);
  }
  console.log(`${name}: ok (${((Date.now() - started) / 1000).toFixed(1)} s)`);
};
// The CLI and drain tests run bin/infera.js, which runs the compiled build: rebuild it from the
// sources under test so they never exercise a stale dist/.
step('build', ['scripts/build.js']);
// The whole tree (tests, benchmarks and scripts too) type-checks and lints clean; a filtered run
// (npm test -- name) skips both to stay quick while iterating.
if (filters.length === 0) {
  const bin = (pkg, file) => join(dirname(createRequire(import.meta.url).resolve(`${pkg}/package.json`)), file);
  step('typecheck (tsc --noEmit)', [bin('typescript', 'bin/tsc'), '-p', 'tsconfig.json', '--noEmit']);
  step('lint (biome, zero warnings)', [bin('@biomejs/biome', 'bin/biome'), 'lint', '--error-on-warnings', '.']);
}
// Human-readable spec output on the terminal; a TAP copy to count from for the closing summary line.
const scratch = mkdtempSync(join(tmpdir(), 'infera-test-report-'));
const tap = join(scratch, 'report.tap');
const result = spawnSync(
  process.execPath,
  [
    '--import', 'tsx', '--test',
    '--test-reporter=spec', '--test-reporter-destination=stdout',
    '--test-reporter=tap', `--test-reporter-destination=${tap}`,
    ...selected,
  ],
  { stdio: 'inherit', env: { ...process.env, NODE_ENV: 'test', INFERA_TEST_RUN: String(process.pid) } },
);
const report = (() => {
  try {
    return readFileSync(tap, 'utf8');
  } catch {
    return '';
  }
})();
rmSync(scratch, { recursive: true, force: true });
// Tiny models generated for this run (test/helpers/server.ts SHARED_DATA_DIR).
rmSync(join(tmpdir(), `infera-test-data-${process.pid}`), { recursive: true, force: true });
const count = (name) => Number(report.match(new RegExp(`^# ${name} (\\d+)$`, 'm'))?.[1] ?? 0);
const passed = count('pass');
const failed = count('fail');
// node's own `# skipped` counts tests only: a skipped describe() block (e.g. the browser suites without
// chromium) would vanish from it, so every `# SKIP` directive in the report is counted instead.
const skipped = Math.max(count('skipped'), (report.match(/^\s*ok \d+ - .*# SKIP/gm) ?? []).length);
console.log(`\n${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(result.status ?? 1);
