// releaseLoadLeftovers drops the model file's resident pages from the process: the model must go on
// generating exactly what it generated before (every page it reads again faults back in from the file),
// and the mapping's resident size must actually fall.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GgmlType } from '../../tiny-models/gguf-writer.ts';
import { encodeRandomChatModel } from '../../tiny-models/random-chat.ts';
import { openLlamaLibrary } from '../llama-cpp/ffi/library.ts';
import { LlamaRunner } from '../llama-cpp/ffi/runner.ts';
import { releaseLoadLeftovers } from './release.ts';

let dir: string;
let path: string;
let runner: LlamaRunner;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'infera-release-'));
  path = join(dir, 'random.gguf');
  writeFileSync(
    path,
    encodeRandomChatModel({ hidden: 64, layers: 2, heads: 4, headsKv: 2, feedForward: 128, seed: 23, matrixType: GgmlType.F32, endBias: 100, asciiOnly: true }),
  );
  runner = LlamaRunner.load(await openLlamaLibrary(), path, { contextSize: 256, sequences: 1, threads: 1, promptCache: false });
});

after(async () => {
  await runner?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

/** Resident KiB of this process's mappings of the model file. */
function residentKiB(): number {
  let kib = 0;
  let inModel = false;
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inModel = line.endsWith(path);
    else if (inModel && line.startsWith('Rss:')) kib += Number(/(\d+)/.exec(line)![1]);
  }
  return kib;
}

async function greedy(): Promise<number[]> {
  const tokens: number[] = [];
  await runner.generate({
    prompt: runner.tokenize('<|im_start|>user\nalpha beta gamma delta<|im_end|>\n<|im_start|>assistant\n'),
    sampling: { temperature: 0 },
    maxTokens: 12,
    onToken: (event) => {
      tokens.push(event.token);
      return undefined;
    },
  }).done;
  return tokens;
}

test('after the release the model file is no longer resident, and the model generates exactly as before', { skip: process.platform !== 'linux' && 'Linux only' }, async () => {
  const before = await greedy();
  assert.equal(before.length, 12);
  const residentBefore = residentKiB();
  assert.ok(residentBefore > 0, 'the runner maps its GGUF');
  const released = releaseLoadLeftovers();
  assert.ok(released.trimmed, 'glibc malloc_trim ran');
  assert.ok(released.mappedMiB > 0, JSON.stringify(released));
  assert.ok(residentKiB() < residentBefore, `model file still resident: ${residentKiB()} of ${residentBefore} KiB`);
  assert.deepEqual(await greedy(), before);
});
