// Real GGUF files from the project's writer, corrupted the way a hostile or broken download would be:
// each is refused by the header check, quickly and with little memory, naming the problem.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeTinyModels } from '../../tiny-models/index.ts';
import { checkGgufFile, GgufCheckError } from './gguf-check.ts';

let dir: string;
let models: ReturnType<typeof encodeTinyModels>;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'infera-gguf-check-'));
  models = encodeTinyModels();
});
after(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
const write = (bytes: Buffer) => {
  const path = join(dir, `model-${files++}.gguf`);
  writeFileSync(path, bytes);
  return path;
};

/** Byte offset of a tensor info's fields, found by its name in the header. */
function tensorInfo(bytes: Buffer, name: string): { type: number; offset: number } {
  const at = bytes.indexOf(Buffer.from(name, 'latin1'));
  assert.ok(at > 0, `tensor ${name} in the file`);
  const dims = bytes.readUInt32LE(at + name.length);
  const type = at + name.length + 4 + 8 * dims;
  return { type, offset: type + 4 };
}

async function refused(bytes: Buffer, pattern: RegExp): Promise<number> {
  const path = write(bytes);
  const start = performance.now();
  await assert.rejects(checkGgufFile(path), (error: Error) => {
    assert.ok(error instanceof GgufCheckError, String(error));
    assert.ok(error.message.includes(path), error.message);
    assert.match(error.message, pattern);
    return true;
  });
  return performance.now() - start;
}

test('the generated tiny models pass', async () => {
  for (const bytes of Object.values(models)) {
    const summary = await checkGgufFile(write(bytes));
    assert.equal(summary.version, 3);
    assert.ok(summary.tensorCount > 10 && summary.headerBytes < bytes.length);
  }
});

test('a huge tensor count is refused in milliseconds with little memory', async () => {
  const bytes = Buffer.from(models.chat);
  bytes.writeBigUInt64LE(1n << 40n, 8);
  const heapBefore = process.memoryUsage().rss;
  const ms = await refused(bytes, /declares 1099511627776 tensors, more than its \d+ bytes can describe/);
  assert.ok(ms < 200, `${ms} ms`);
  assert.ok(process.memoryUsage().rss - heapBefore < 64 * 1024 * 1024);
  // A count the size check lets through but the tensor infos do not back up.
  bytes.writeBigUInt64LE(BigInt(Math.floor(models.chat.length / 64)), 8);
  await refused(bytes, /needs \d+ bytes, but the file ends|ggml type|dimensions|declared twice|not a multiple/);
});

test('huge metadata counts, string lengths and array lengths are refused', async () => {
  const count = Buffer.from(models.chat);
  count.writeBigUInt64LE(1n << 50n, 16);
  await refused(count, /metadata entries, more than its \d+ bytes can hold/);
  const key = Buffer.from(models.chat);
  key.writeBigUInt64LE(1n << 40n, 24);
  await refused(key, /metadata key #0 is 1099511627776 bytes long/);
  const beyond = Buffer.from(models.chat);
  beyond.writeBigUInt64LE(1n << 62n, 24);
  await refused(beyond, /beyond any file/);
});

test('a tensor of a type llama.cpp cannot use as a weight is refused (I32 aborts llama.cpp natively)', async () => {
  for (const [id, pattern] of [
    [26, /token_embd\.weight has ggml type 26 \(I32\)/],
    [99, /token_embd\.weight has ggml type 99,/],
    [4, /type 4 \(Q4_2 \(removed/],
    [15, /Q8_K/],
  ] as const) {
    const bytes = Buffer.from(models.chat);
    bytes.writeUInt32LE(id, tensorInfo(bytes, 'token_embd.weight').type);
    await refused(bytes, pattern);
  }
});

test('tensor data beyond the end of the file, misaligned or overlapping, or a truncated file is refused', async () => {
  const beyond = Buffer.from(models.chat);
  beyond.writeBigUInt64LE(BigInt(models.chat.length) * 32n, tensorInfo(beyond, 'output_norm.weight').offset);
  await refused(beyond, /tensor output_norm\.weight needs bytes \d+–\d+ of the data section, but the file holds only/);
  const misaligned = Buffer.from(models.chat);
  const at = tensorInfo(misaligned, 'output_norm.weight').offset;
  misaligned.writeBigUInt64LE(misaligned.readBigUInt64LE(at) + 4n, at);
  await refused(misaligned, /not a multiple of the alignment 32/);
  const overlapping = Buffer.from(models.chat);
  overlapping.writeBigUInt64LE(0n, tensorInfo(overlapping, 'output_norm.weight').offset);
  await refused(overlapping, /overlaps the tensor before it/);
  await refused(models.chat.subarray(0, models.chat.length - 100), /truncated/);
  await refused(models.chat.subarray(0, 5000), /needs \d+ bytes, but the file ends/);
  await refused(models.chat.subarray(0, 3), /the magic/);
});

test('a file that is not GGUF, or of an unknown version, is refused', async () => {
  const magic = Buffer.from(models.chat);
  magic.write('GGUX', 0, 'latin1');
  await refused(magic, /does not start with "GGUF" \(found "GGUX"\)/);
  const version = Buffer.from(models.chat);
  version.writeUInt32LE(7, 4);
  await refused(version, /GGUF version 7 is not supported/);
  await refused(Buffer.from('{"not": "a model"}'), /does not start with "GGUF"/);
});
