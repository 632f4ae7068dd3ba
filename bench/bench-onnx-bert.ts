// The ONNX twins of the bench's BERT GGUFs (same weights), generated once into the benches' model directory.
// One place for the export's directory name: a new version of the export (the `-v2`) is one edit here,
// not one in every bench that times the ONNX engine.
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureOnnxBert } from '../src/tiny-models/onnx/index.ts';

export function ensureBenchOnnxBert(task: 'embed' | 'rerank', dir = join(tmpdir(), 'infera-bench-models')): Promise<string> {
  return ensureOnnxBert(task === 'embed' ? 'bench-embed' : 'bench-rerank', join(dir, `onnx-bert-384x12-${task}-v2`));
}
