import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { InferaError } from '../errors/index.ts';
import { ImageStore } from './images-store.ts';

test('the images folder is created 0700', async () => {
  const parent = await mkdtemp(join(tmpdir(), 'infera-images-'));
  const store = await ImageStore.open({ dir: join(parent, 'images'), ttlSeconds: 60 });
  try {
    assert.equal((await stat(join(parent, 'images'))).mode & 0o777, 0o700);
  } finally {
    store.close();
    await rm(parent, { recursive: true, force: true });
  }
});

test('stored images get unguessable names, are served until they expire (410 after), and are swept', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'infera-images-'));
  let now = 1_700_000_000_000;
  const store = await ImageStore.open({ dir, ttlSeconds: 3600, now: () => now, sweepIntervalMs: 3_600_000 });
  try {
    const a = await store.save(Buffer.from('png-a'));
    const b = await store.save(Buffer.from('jpeg-b'), 'image/jpeg');
    assert.match(a.name, /^[0-9a-z]+-[A-Za-z0-9_-]{32}\.png$/);
    assert.match(b.name, /\.jpg$/);
    assert.notEqual(a.name, b.name);
    assert.equal(a.expiresAt, now / 1000 + 3600);
    const read = await store.read(a.name);
    assert.equal(read.data.toString(), 'png-a');
    assert.equal(read.mediaType, 'image/png');
    assert.equal((await store.read(b.name)).mediaType, 'image/jpeg');
    assert.equal((await stat(join(dir, a.name))).mode & 0o777, 0o600, "an image file is the server user's alone");

    const status = (name: string) => store.read(name).then(() => 200, (e: InferaError) => e.status);
    assert.equal(await status('nope.png'), 404);
    assert.equal(await status('../etc/passwd'), 404);
    // A forged name with a valid shape and a future expiry points at no file.
    assert.equal(await status(`${(a.expiresAt + 10).toString(36)}-${'x'.repeat(32)}.png`), 404);
    // Editing the expiry prefix of a real name does not extend it: that name does not exist.
    assert.equal(await status(`${(a.expiresAt + 99999).toString(36)}${a.name.slice(a.name.indexOf('-'))}`), 404);

    await writeFile(join(dir, 'not-ours.txt'), 'keep me');
    now += 3600 * 1000 + 1;
    assert.equal(await status(a.name), 410, 'expired before the sweep');
    assert.equal(await store.sweep(), 2);
    assert.equal(await status(a.name), 410, 'still 410 after the file is gone');
    assert.deepEqual(await readdir(dir), ['not-ours.txt'], 'the sweeper deletes only its own files');
  } finally {
    store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('opening the store sweeps files that expired while the server was down', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'infera-images-'));
  let now = 1_700_000_000_000;
  try {
    const first = await ImageStore.open({ dir, ttlSeconds: 60, now: () => now });
    const old = await first.save(Buffer.from('x'));
    first.close();
    now += 61_000;
    const second = await ImageStore.open({ dir, ttlSeconds: 60, now: () => now });
    second.close();
    assert.deepEqual(await readdir(dir), []);
    assert.ok(old.name);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the periodic sweeper runs on its own', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'infera-images-'));
  let now = 1_700_000_000_000;
  const store = await ImageStore.open({ dir, ttlSeconds: 1, now: () => now, sweepIntervalMs: 20 });
  try {
    await store.save(Buffer.from('x'));
    now += 2000;
    for (let i = 0; i < 50 && (await readdir(dir)).length; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(await readdir(dir), []);
  } finally {
    store.close();
    await rm(dir, { recursive: true, force: true });
  }
});
