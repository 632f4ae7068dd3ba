#!/usr/bin/env node
// The `infera` command: runs the compiled build in dist/ (made by `npm ci` through the `prepare`
// script, or `npm run build`). Developers who want the sources as they edit them: `npm run dev`.
import { existsSync } from 'node:fs';

// Stack traces name .ts lines (the build writes source maps). Set here rather than with
// --enable-source-maps so `npx infera` and the bin link get it too.
process.setSourceMapsEnabled(true);
const entry = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(entry)) {
  console.error('infera: the compiled build (dist/) is missing. Run `npm run build` (`npm ci` builds it too).');
  process.exit(1);
}
await import(entry.href);
