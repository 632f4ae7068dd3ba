import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClipTokenizer } from './clip-tokenizer.ts';
import { ensureTinyDiffusionModel } from '../../tiny-models/onnx/tiny-diffusion.ts';

// A hand-built vocab whose merges pin down BPE's rank order (the lowest rank merges first).
const base = ['a', 'b', 'c', 'l', 'o', 'w', 'e', 'r', '!', ','];
const vocab: Record<string, number> = {};
for (const piece of [...base, ...base.map((p) => `${p}</w>`), 'lo', 'low</w>', 'er</w>', 'ab', 'bc</w>', 'abc</w>', 'lower</w>', '<|startoftext|>', '<|endoftext|>'])
  vocab[piece] = Object.keys(vocab).length;
const merges = ['#version: 0.2', 'l o', 'lo w</w>', 'e r</w>', 'a b', 'b c</w>', 'ab c</w>', 'lo w', 'low er</w>'];

test('BPE applies merges by rank, marks word ends, and adds BOS/EOS/padding', () => {
  const tokenizer = new ClipTokenizer({ vocab, merges, config: { model_max_length: 8, pad_token: '!' } });
  assert.deepEqual(tokenizer.tokenize('low'), ['low</w>']);
  // "a b" (rank 3) merges before "b c</w>" (rank 4): abc → ab c</w> → abc</w>.
  assert.deepEqual(tokenizer.tokenize('abc'), ['abc</w>']);
  assert.deepEqual(tokenizer.tokenize('lower'), ['lower</w>']);
  assert.deepEqual(tokenizer.tokenize('LOW,  low!'), ['low</w>', ',</w>', 'low</w>', '!</w>']);
  // "a b" never applies to a word-final b ("b</w>" is a different symbol).
  assert.deepEqual(tokenizer.tokenize('cab'), ['c', 'a', 'b</w>']);
  const { ids, truncated } = tokenizer.encodePadded('low');
  assert.deepEqual(ids, [vocab['<|startoftext|>'], vocab['low</w>'], vocab['<|endoftext|>'], 8, 8, 8, 8, 8]);
  assert.equal(truncated, false);
  const long = tokenizer.encodePadded('low low low low low low low low');
  assert.equal(long.ids.length, 8);
  assert.equal(long.ids.at(-1), vocab['<|endoftext|>'], 'EOS survives truncation');
  assert.equal(long.truncated, true);
});

test('the tiny pipeline tokenizer: whole words, byte fallback, specials, pad token per export', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'infera-tok-'));
  try {
    await ensureTinyDiffusionModel(join(dir, 'current'), { export: 'current' });
    await ensureTinyDiffusionModel(join(dir, 'legacy'), { export: 'legacy' });
    const current = await ClipTokenizer.fromFolder(join(dir, 'current', 'tokenizer'));
    const legacy = await ClipTokenizer.fromFolder(join(dir, 'legacy', 'tokenizer'));
    assert.deepEqual(current.tokenize('A photo of  an Astronaut riding a horse'), [
      'a</w>', 'photo</w>', 'of</w>', 'an</w>', 'astronaut</w>', 'riding</w>', 'a</w>', 'horse</w>',
    ]);
    assert.deepEqual(current.tokenize('cat, dog!'), ['cat</w>', ',</w>', 'dog</w>', '!</w>']);
    assert.deepEqual(current.tokenize("it's 42"), ['i', 't</w>', "'", 's</w>', '4</w>', '2</w>']);
    assert.deepEqual(current.tokenize('fish &amp; chips').slice(0, 2), ['fish</w>', '&</w>']);
    // Unknown words and non-Latin text fall back to (byte-level) sub-word pieces, never to <unk>.
    for (const text of ['zyzzyva', 'café', '日本の猫', '🙂']) {
      const pieces = current.tokenize(text);
      const ids = current.encode(text);
      assert.ok(ids.every((id) => id !== current.eosId), `${text} → ${pieces}`);
      assert.equal(pieces.join('').replace(/<\/w>/g, '').length > 0, true);
    }
    assert.equal(current.encode('café').length > 1, true);
    assert.deepEqual(current.encode('<|endoftext|>'), [current.eosId]);
    // SD 2.x exports pad with "!" (id 0), SD 1.x with <|endoftext|>.
    assert.equal(current.padId, 0);
    assert.equal(legacy.padId, legacy.eosId);
    const { ids } = current.encodePadded('a cat');
    assert.equal(ids.length, 77);
    assert.deepEqual(ids.slice(0, 5), [current.bosId, ...current.encode('a cat'), current.eosId, 0]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
