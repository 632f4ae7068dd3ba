// Generated files are encoded once and reused while the generator and the request are the same.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, truncateSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureGeneratedFiles } from './generated-files.ts';

test('generated files: produced once, reused, produced again when a file is missing, truncated or the variant changes', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'infera-generated-'));
  try {
    let calls = 0;
    const produce = (text: string) => () => {
      calls++;
      return [['a/model.bin', Buffer.from(text)] as [string, Buffer], ['b.json', Buffer.from('{}')] as [string, Buffer]];
    };
    await ensureGeneratedFiles(dir, { v: 1 }, produce('weights'));
    await ensureGeneratedFiles(dir, { v: 1 }, produce('weights'));
    assert.equal(calls, 1, 'second call with the same variant reuses the files');
    assert.equal(readFileSync(join(dir, 'a/model.bin'), 'utf8'), 'weights');

    unlinkSync(join(dir, 'b.json'));
    await ensureGeneratedFiles(dir, { v: 1 }, produce('weights'));
    assert.equal(calls, 2, 'a missing file is produced again');

    truncateSync(join(dir, 'a/model.bin'), 3);
    await ensureGeneratedFiles(dir, { v: 1 }, produce('weights'));
    assert.equal(calls, 3, 'a file of the wrong size is produced again');
    assert.equal(readFileSync(join(dir, 'a/model.bin'), 'utf8'), 'weights');

    await ensureGeneratedFiles(dir, { v: 2 }, produce('other weights'));
    assert.equal(calls, 4, 'another variant is produced');
    assert.equal(readFileSync(join(dir, 'a/model.bin'), 'utf8'), 'other weights');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
