// Writes Infera's tiny test models (and, with --bench, the benchmark-size ones) into a folder.
// Usage: node --import tsx scripts/generate-tiny-models.ts [dir] [--bench]
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import { join } from 'node:path';
import { ensureBenchModel, ensureTinyModels, type BenchModelKind } from '../src/tiny-models/index.ts';
import { ensureOnnxBert } from '../src/tiny-models/onnx/index.ts';

const args = process.argv.slice(2);
const dir = resolve(args.find((a) => !a.startsWith('--')) ?? '.infera/tiny-models');
const started = performance.now();
const paths: Record<string, string> = { ...(await ensureTinyModels(dir)) };
// ONNX twins of the BERT models (same weights), for the onnx engine; folders, so their model.onnx is listed.
for (const kind of ['tiny-embed', 'tiny-rerank'] as const)
  paths[`onnx-${kind}`] = join(await ensureOnnxBert(kind, join(dir, `onnx-bert-${kind}`)), 'model.onnx');
if (args.includes('--bench')) {
  for (const kind of ['chat-512x8', 'bert-384x12-embed', 'bert-384x12-rerank'] as BenchModelKind[]) {
    paths[kind] = await ensureBenchModel(kind, dir);
  }
  for (const kind of ['bench-embed', 'bench-rerank'] as const)
    paths[`onnx-${kind}`] = join(await ensureOnnxBert(kind, join(dir, `onnx-bert-${kind}`)), 'model.onnx');
}
for (const [name, path] of Object.entries(paths)) {
  console.log(`${name.padEnd(20)} ${(statSync(path).size / 1024).toFixed(0).padStart(7)} KiB  ${path}`);
}
console.log(`done in ${((performance.now() - started) / 1000).toFixed(2)} s`);
