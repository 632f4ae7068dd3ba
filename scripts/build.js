#!/usr/bin/env node
// Bundles src/ into dist/ (what `npm start` and the `infera` bin run). `npm ci` runs it through
// `prepare`, so the README's two commands stay the only set-up. Type checking is `npm run typecheck`.
//
// A bundle, not a file-per-module compile: `infera serve` used to resolve, read and compile ~200 of
// Infera's files and ~410 CommonJS files of its dependencies (yaml alone 72, semver 47, fastify 33)
// before it listened; importing the server then cost ~600 ms of CPU on a busy 2-core box, bundled
// ~290 (docs/BENCHMARKS.md, "Start-up: a bundled build"). Code splitting keeps every dynamic import()
// a separate file, so a command still loads only what it runs (test/cli-imports.test.ts).
import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { dirname, join, posix, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'src');
const dist = join(root, 'dist');

let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  console.error('infera build: esbuild is not installed. Run `npm ci` (it installs the dev dependencies and builds).');
  process.exit(1);
}

// The processes Node starts from a file: the CLI (and server), the engine process host.ts forks, the
// ONNX session worker. Each keeps the path it had in a file-per-module build.
const ENTRIES = ['cli/main.ts', 'engines/runner/child.ts', 'engines/onnx/session-worker.ts'];

// Left to node_modules: native addons, the big packages no start-up path loads, and Fastify's default
// schema compilers (Ajv, fast-json-stringify: ~600 KB it require()s only when no compiler is given,
// and src/http/app.ts gives its own): bundled, they would be read and parsed at every start for
// nothing. Everything else on the start-up path is bundled: left out, @fastify/swagger-ui alone loaded
// its own copy of yaml (72 files), @fastify/static and glob, ~160 ms of CPU on a busy box.
const EXTERNAL = [
  '@fastify/ajv-compiler',
  '@fastify/fast-json-stringify-compiler',
  'better-sqlite3',
  'koffi',
  'node-llama-cpp',
  '@node-llama-cpp/*',
  'onnxruntime-node',
  'sharp',
  'pg',
  'ioredis',
  'undici',
  '@huggingface/*',
];

// A module's import.meta.url must still name where it sits in the source tree (next to its .jinja /
// .yaml assets, two folders below the package root, ...), not the bundle file its code lands in. The
// plugin marks each use with the module's own dist path; once the outputs are written, each mark
// becomes a URL relative to the output file holding it.
const MARK = '__INFERA_MODULE_URL__';
const moduleUrls = {
  name: 'module-urls',
  setup(build) {
    build.onLoad({ filter: /\.ts$/ }, (args) => {
      const text = readFileSync(args.path, 'utf8');
      if (!text.includes('import.meta.url')) return undefined;
      const own = relative(src, args.path).split(sep).join('/').replace(/\.ts$/, '.js');
      return { contents: text.replaceAll('import.meta.url', `${MARK}(${JSON.stringify(own)})`), loader: 'ts' };
    });
  },
};

// Bundled CommonJS packages that find their own files through __dirname / __filename (swagger-ui's
// static assets, pino's transport worker) get them as where the file sits in node_modules, found at
// run time through the package's entry point (so a moved or copied install still works).
const ownFiles = {
  name: 'own-files',
  setup(build) {
    build.onLoad({ filter: /[\\/]node_modules[\\/].*\.c?js$/ }, (args) => {
      const text = readFileSync(args.path, 'utf8');
      if (!/\b__(dirname|filename)\b/.test(text)) return undefined;
      const name = /^(.*[\\/]node_modules[\\/])((?:@[^\\/]+[\\/])?[^\\/]+)/.exec(args.path);
      const pkg = name[2].split(sep).join('/');
      let main;
      try {
        main = createRequire(args.path).resolve(pkg);
      } catch {
        return undefined; // not require()-able: an ESM package, which has no __dirname (a mention in a comment)
      }
      // The shim resolves from dist/, which finds only hoisted packages.
      if (createRequire(join(root, 'package.json')).resolve(pkg) !== main) throw new Error(`${pkg} is not hoisted (it uses __dirname): add it to EXTERNAL in scripts/build.js`);
      const rel = relative(dirname(main), args.path).split(sep).join('/');
      const shim = `var __filename = require('node:path').join(require('node:path').dirname(require.resolve(${JSON.stringify(pkg)})), ${JSON.stringify(rel)}), __dirname = require('node:path').dirname(__filename);\n`;
      return { contents: shim + text, loader: 'js' };
    });
  },
};

// zod's `z.locales` namespace re-exports its 64 error-message languages; the bundle keeps them all
// because `z` is used as a whole namespace object, so every `infera serve` parsed ~360 KB of them (half
// the zod chunk; importing it took 53-65 ms of CPU, 36-49 without them: docs/BENCHMARKS.md, "Start-up:
// the cold first answer waits on the engine process", startup7). zod itself configures English
// (classic/external.js imports locales/en.js directly) and Infera never switches
// (`z.config(z.locales.xx())`), so `z.locales` holds English alone here.
const zodEnglishOnly = {
  name: 'zod-english-only',
  setup(build) {
    build.onLoad({ filter: /[\\/]node_modules[\\/]zod[\\/]v4[\\/]locales[\\/]index\.js$/ }, () => ({
      contents: 'export { default as en } from "./en.js";\n',
      loader: 'js',
    }));
  },
};

// @fastify/static (through @fastify/swagger-ui's /docs) require()s glob at load, but calls it only
// for `wildcard: false`, which Infera never sets: bundled, glob's 136 KB were parsed and run at every
// start. It is require()d from node_modules at its first call instead.
const lazyGlob = {
  name: 'lazy-glob',
  setup(build) {
    build.onResolve({ filter: /^glob$/ }, (args) => {
      if (args.namespace === 'lazy-glob') return { path: 'glob', external: true };
      if (/[\\/]node_modules[\\/]@fastify[\\/]static[\\/]/.test(args.importer)) return { path: 'glob', namespace: 'lazy-glob' };
      return undefined;
    });
    build.onLoad({ filter: /.*/, namespace: 'lazy-glob' }, () => ({
      contents: "let real;\nmodule.exports = { glob: (...args) => (real ??= require('glob')).glob(...args) };\n",
      loader: 'js',
    }));
  },
};

// A clean dist: a file deleted from src must not linger in the build.
rmSync(dist, { recursive: true, force: true });
const result = await esbuild.build({
  absWorkingDir: root,
  entryPoints: ENTRIES.map((entry) => join(src, entry)),
  outbase: src,
  outdir: dist,
  entryNames: '[dir]/[name]',
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20.11',
  external: EXTERNAL,
  // Bundled CommonJS packages call require() for Node's built-ins; ESM has none of its own.
  banner: { js: "import { createRequire as __inferaRequire } from 'node:module'; const require = __inferaRequire(import.meta.url);" },
  sourcemap: true,
  sourcesContent: false,
  metafile: true,
  legalComments: 'none',
  logLevel: 'warning',
  plugins: [moduleUrls, ownFiles, zodEnglishOnly, lazyGlob],
});

const packageOf = (input) => /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input)?.[1] ?? (input.startsWith('src/') ? 'infera' : undefined);
const inputs = {};
for (const [file, output] of Object.entries(result.metafile.outputs)) {
  if (!file.endsWith('.js')) continue;
  const path = join(root, file);
  const here = posix.dirname(relative(dist, path).split(sep).join('/'));
  let text = readFileSync(path, 'utf8');
  const marked = new RegExp(`${MARK}\\(("[^"]+")\\)`, 'g');
  if (marked.test(text)) text = text.replace(marked, (_, own) => `new URL(${JSON.stringify(posix.relative(here, JSON.parse(own)) || '.')}, import.meta.url).href`);
  // V8 keeps each module's source as a string for as long as the process runs (lazy compilation,
  // Function.prototype.toString), one byte per character if every character fits in Latin-1, else two.
  // esbuild escapes strings but leaves comments (and regular expressions) as written, so one "…" in a
  // kept comment doubled the server's 1.5 MB main chunk to 3 MiB of heap (the rss5 heap snapshot).
  // A \uXXXX escape means the same code unit in a comment, string, regular expression or identifier.
  const wide = /[\u0100-\uffff]/g;
  if (wide.test(text)) {
    text = text.replace(wide, (char, at) => {
      if (text[at - 1] === '\\') throw new Error(`${file}: an escaped non-Latin-1 character at ${at}`);
      return `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`;
    });
  }
  writeFileSync(path, text);
  // Which packages each output file holds: test/cli-imports.test.ts maps the files a command loaded to
  // the packages it ran (bundled ones no longer show in the module URLs).
  inputs[relative(dist, path).split(sep).join('/')] = [...new Set(Object.keys(output.inputs).map(packageOf).filter(Boolean))].sort();
}
writeFileSync(join(dist, 'bundle-inputs.json'), `${JSON.stringify(inputs, null, 1)}\n`);

// Files the code reads at run time next to itself (new URL('./x', import.meta.url)).
const ASSETS = ['.jinja', '.yaml'];
const copyAssets = (dir) => {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) copyAssets(path);
    else if (ASSETS.some((ext) => name.endsWith(ext))) cpSync(path, join(dist, relative(src, path)));
  }
};
copyAssets(src);

// src/tiny-models/generated-files.ts fingerprints the generators by hashing its own folder: in the
// bundle that folder holds only the assets, so a digest of the generator sources stands in for them.
const tiny = join(src, 'tiny-models');
const hash = createHash('sha256');
const walk = (dir) => {
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path);
    else if (!name.endsWith('.md') && !name.includes('.test.')) hash.update(name).update(readFileSync(path));
  }
};
walk(tiny);
mkdirSync(join(dist, 'tiny-models'), { recursive: true });
writeFileSync(join(dist, 'tiny-models', 'generators.sha256'), `${hash.digest('hex')}\n`);
