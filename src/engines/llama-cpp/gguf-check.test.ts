// Real GGUF files from the project's writer, corrupted the way a hostile or broken download would be:
// each is refused by the header check, quickly and with little memory, naming the problem.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeTinyModels } from '../../tiny-models/index.ts';
import { checkGgufFile, checkGgufFileOnce, GgufCheckError } from './gguf-check.ts';

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

/**
 * Headers that pass every count-against-size check, each 24 MiB of one thing the reader loops over:
 * an array of millions of empty strings, millions of metadata entries, millions of tensor infos. Before
 * the budget, 32 MiB of the last two took 4–10 s, 180–350 MiB and event-loop pauses of 0.2–0.8 s
 * (in the server process, where the check runs); 256 MiB, the header cap, eight times that.
 */
function headerBomb(kind: 'strings' | 'metadata' | 'tensors', bytes: number): Buffer {
  const u32 = (value: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(value);
    return b;
  };
  const u64 = (value: number) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(value));
    return b;
  };
  const str = (text: string) => Buffer.concat([u64(Buffer.byteLength(text)), Buffer.from(text)]);
  const body: Buffer[] = [];
  let tensors = 0;
  let entries = 0;
  if (kind === 'strings') {
    const count = Math.floor(bytes / 8);
    entries = 1;
    body.push(str('tokenizer.ggml.tokens'), u32(9), u32(8), u64(count), Buffer.alloc(count * 8));
  } else {
    for (let size = 0; size < bytes; ) {
      const name = str((kind === 'metadata' ? entries++ : tensors++).toString(36));
      const item = kind === 'metadata' ? Buffer.concat([name, u32(4), u32(7)]) : Buffer.concat([name, u32(1), u64(0), u32(0), u64(0)]);
      body.push(item);
      size += item.length;
    }
  }
  return Buffer.concat([Buffer.from('GGUF'), u32(3), u64(tensors), u64(entries), ...body, Buffer.alloc(64)]);
}

test('header bombs within the size cap are checked within a time and memory budget, without pausing the event loop', async () => {
  for (const kind of ['strings', 'metadata', 'tensors'] as const) {
    const path = write(headerBomb(kind, 24 * 1024 * 1024));
    global.gc?.();
    const rssBefore = process.memoryUsage.rss();
    let peak = rssBefore;
    let turns = 0;
    // Counted in turns per CPU millisecond, not in the longest pause: on the shared 2-core box an idle
    // Node process already sees 180 ms pauses when the load average is 12.
    const ticker = setInterval(() => {
      turns++;
      peak = Math.max(peak, process.memoryUsage.rss());
    }, 1);
    const cpu = process.cpuUsage();
    const start = performance.now();
    const outcome = await checkGgufFile(path).then(
      () => 'passed',
      (error: Error) => error.message,
    );
    const ms = performance.now() - start;
    const { user, system } = process.cpuUsage(cpu);
    const cpuMs = (user + system) / 1000;
    clearInterval(ticker);
    peak = Math.max(peak, process.memoryUsage.rss());
    console.log(
      `# ${kind} bomb (24 MiB): ${outcome.slice(-80)}; ${ms.toFixed(0)} ms (${cpuMs.toFixed(0)} ms CPU), RSS +${((peak - rssBefore) / 2 ** 20).toFixed(0)} MiB, ${turns} event-loop turns`,
    );
    if (kind !== 'strings') assert.match(outcome, kind === 'metadata' ? /declares \d+ metadata entries \(at most 65536\)/ : /declares \d+ tensors \(at most 65536\)/);
    assert.ok(cpuMs < 1500, `${kind}: ${cpuMs} ms of CPU`);
    assert.ok(peak - rssBefore < 64 * 2 ** 20, `${kind}: RSS grew ${peak - rssBefore} bytes`);
    assert.ok(turns >= Math.floor(cpuMs / 50), `${kind}: ${turns} event-loop turns in ${cpuMs} ms of CPU`);
  }
});

test('a header that takes longer than the time budget to check is refused, naming the budget', async () => {
  const path = write(headerBomb('strings', 8 * 1024 * 1024));
  await assert.rejects(checkGgufFile(path, { budgetMs: 1 }), /checking its header took longer than 0\.001 s/);
});

test('checkGgufFileOnce checks a file version once: the same result for the same file, a new check once it changes', async () => {
  const path = write(models.chat);
  const first = checkGgufFileOnce(path);
  const summary = await first;
  assert.equal(summary.tensorCount, (await checkGgufFile(path)).tensorCount);
  // The very object of the first check: not read again.
  assert.equal(await checkGgufFileOnce(path), summary);
  // Rewritten with a bad version (same size): checked again, and refused.
  const bytes = Buffer.from(await readFile(path));
  bytes.writeUInt32LE(9, 4);
  writeFileSync(path, bytes);
  await assert.rejects(checkGgufFileOnce(path), /GGUF version 9 is not supported/);
  // Good again: passes again (a refusal is kept only for the version it was about).
  writeFileSync(path, models.chat);
  assert.equal((await checkGgufFileOnce(path)).tensorCount, summary.tensorCount);
  // A missing file fails as checkGgufFile does, and is not kept.
  await assert.rejects(checkGgufFileOnce(join(dir, 'missing.gguf')), /ENOENT/);
});
