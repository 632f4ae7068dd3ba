// Refs and which files they mean: the quantisation pick, split GGUFs, folders, and the messages when
// nothing matches. Pure functions over a listing; the hub round trips are in test/pull.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PullError } from './errors.ts';
import { formatModelRef, parseModelRef } from './ref.ts';
import { quantOf, selectFiles } from './select.ts';

const file = (path: string) => ({ path, size: 1 });

test('refs: hubs, paths, quantisations and revisions', () => {
  assert.deepEqual(parseModelRef('hf:Qwen/Qwen3-8B-GGUF:q4_k_m'), { hub: 'hf', repo: 'Qwen/Qwen3-8B-GGUF', quant: 'Q4_K_M' });
  assert.deepEqual(parseModelRef('hf:o/r/onnx/model.onnx'), { hub: 'hf', repo: 'o/r', path: 'onnx/model.onnx' });
  assert.deepEqual(parseModelRef('modelscope:o/r#v2'), { hub: 'ms', repo: 'o/r', revision: 'v2' });
  assert.equal(formatModelRef(parseModelRef('huggingface://o/r:Q8_0')), 'hf:o/r:Q8_0');
  for (const bad of ['Qwen/Qwen3-8B', 'hf:onlyowner', 'hf:o/r/../x', 'hf:o/r:Q4-K', 'hf:o/r/file.gguf:Q4_K_M'])
    assert.throws(() => parseModelRef(bad), (error: unknown) => error instanceof PullError && error.code === 'bad_ref', bad);
});

test('quantisation names come from file or folder names, longest match first', () => {
  assert.equal(quantOf('Qwen3-8B-Q4_K_M.gguf'), 'Q4_K_M');
  assert.equal(quantOf('qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf'), 'Q4_K_M');
  assert.equal(quantOf('Q8_0/model-00001-of-00003.gguf'), 'Q8_0');
  assert.equal(quantOf('bge-m3-F16.gguf'), 'F16');
  assert.equal(quantOf('model.gguf'), undefined);
});

test('selection: a quantisation with its split parts; the default; folders; the messages', () => {
  const files = [
    file('README.md'),
    file('m-Q8_0.gguf'),
    file('m-q4_k_m-00002-of-00002.gguf'),
    file('m-q4_k_m-00001-of-00002.gguf'),
    file('mmproj-m-F16.gguf'),
  ];
  const split = selectFiles(parseModelRef('hf:o/r'), files);
  assert.equal(split.quant, 'Q4_K_M', 'a GGUF repo without a quantisation: Q4_K_M, as node-llama-cpp');
  assert.deepEqual(split.files.map((f) => f.path), ['m-q4_k_m-00001-of-00002.gguf', 'm-q4_k_m-00002-of-00002.gguf']);
  assert.equal(split.entry, 'm-q4_k_m-00001-of-00002.gguf');
  assert.deepEqual(selectFiles(parseModelRef('hf:o/r/m-q4_k_m-00002-of-00002.gguf'), files).files.length, 2, 'any part names the whole split');
  assert.throws(
    () => selectFiles(parseModelRef('hf:o/r:Q2_K'), files),
    (error: unknown) => error instanceof PullError && error.code === 'no_such_quant' && /Available: Q8_0, Q4_K_M\. Pull one with hf:o\/r:Q8_0/.test(error.message),
  );
  const onnx = [file('model_index.json'), file('unet/model.onnx'), file('tokenizer/vocab.json'), file('.gitattributes')];
  assert.deepEqual(selectFiles(parseModelRef('hf:o/sd'), onnx), { files: onnx.slice(0, 3), entry: '' });
  assert.deepEqual(selectFiles(parseModelRef('hf:o/sd/unet'), onnx).files.map((f) => f.path), ['unet/model.onnx']);
  assert.throws(
    () => selectFiles(parseModelRef('hf:o/sd/vae'), onnx),
    (error: unknown) => error instanceof PullError && error.code === 'not_found' && /no file or folder "vae"\. It has: model_index\.json, unet, tokenizer/.test(error.message),
  );
});

test('a listing with a path escaping the repo folder is refused', () => {
  for (const path of ['../evil.gguf', 'a/../../evil.gguf', '/etc/evil.gguf', 'a//b.gguf', 'a\\..\\b.gguf'])
    assert.throws(
      () => selectFiles(parseModelRef('hf:o/r'), [file('ok-Q4_K_M.gguf'), file(path)]),
      (error: unknown) => error instanceof PullError && error.code === 'hub_error' && /not a plain relative path/.test(error.message),
      path,
    );
});
