#!/usr/bin/env node
// The `infera` command: runs the compiled build in dist/ (made by `npm ci` through the `prepare`
// script, or `npm run build`). Developers who want the sources as they edit them: `npm run dev`.
import { existsSync } from 'node:fs';
import module from 'node:module';

// Node 22.1+ keeps V8's compiled code of every module on disk and reuses it at the next start. Node 20
// has no equivalent: there this is a no-op. Not measured here (Node 20 box); a hand-made CommonJS code cache on Node 20 saved 28 of ~380 ms
// of CPU importing the server (median of 8, docs/BENCHMARKS.md "Start-up and memory on the AMD EPYC").
module.enableCompileCache?.();

// The build writes source maps, but Node 20 reads and parses a module's map when it loads it, not
// when a stack trace needs it: for the bundle that cost `infera serve` ~80 ms of CPU and ~10 MiB of
// idle RSS (docs/BENCHMARKS.md, "Start-up: a bundled build"). The bundle is not minified, so its
// stack traces still name functions; `NODE_OPTIONS=--enable-source-maps` maps them to .ts lines.
const entry = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(entry)) {
  console.error('infera: the compiled build (dist/) is missing. Run `npm run build` (`npm ci` builds it too).');
  process.exit(1);
}
await import(entry.href);
