#!/usr/bin/env node
// Runs the whole suite with node's own test runner (Node 20 has no --test globbing, so we list files).
// Usage: npm test [-- path-substring ...] to run only matching files.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
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
const result = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-reporter=spec', ...selected],
  { stdio: 'inherit', env: { ...process.env, NODE_ENV: 'test' } },
);
process.exit(result.status ?? 1);
