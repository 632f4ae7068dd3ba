// `infera pull` against imitation Hugging Face and ModelScope hubs (test/helpers/pull-hub.ts): split
// GGUFs, a cut transfer resumed, a killed pull resumed from its progress file, and every failure's
// message and exit code. The first run (presets served) is test/pull-first-run.test.ts.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { type PullFixture, startPullFixture } from './helpers/pull-hub.ts';

let fixture: PullFixture;
let hub: PullFixture['hub'];
let work: string;
let big: Buffer;
let cli: PullFixture['cli'];
let run: PullFixture['run'];
before(async () => {
  fixture = await startPullFixture();
  ({ hub, work, big, cli, run } = fixture);
});
after(() => fixture?.close());

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

test('pull: a split GGUF comes as all its parts; a transfer cut halfway resumes with a Range request; checksums hold', async () => {
  const env = { INFERA_DATA_DIR: join(work, 'split') };
  const split = await run(['pull', 'hf:infera-test/tiny-chat-GGUF:F16'], env);
  assert.equal(split.code, 0, split.output);
  const dir = join(work, 'split', 'models', 'hf', 'infera-test', 'tiny-chat-GGUF', 'F16');
  assert.deepEqual(readdirSync(dir).sort(), ['tiny-chat-F16-00001-of-00002.gguf', 'tiny-chat-F16-00002-of-00002.gguf']);
  const manifest = JSON.parse(readFileSync(join(work, 'split', 'models', 'manifest.json'), 'utf8'));
  assert.equal(manifest.models[0].path, 'hf/infera-test/tiny-chat-GGUF/F16/tiny-chat-F16-00001-of-00002.gguf', 'a model entry points at the first part');
  assert.deepEqual(readdirSync(join(work, 'split', 'models', '.partial')), [], 'no staging folders are left behind');

  const resumed = await run(['pull', 'hf:infera-test/tiny-chat-GGUF:Q6_K'], env);
  assert.equal(resumed.code, 0, resumed.output);
  const file = join(work, 'split', 'models', 'hf', 'infera-test', 'tiny-chat-GGUF', 'tiny-chat-Q6_K.gguf');
  assert.equal(sha256(file), createHash('sha256').update(big).digest('hex'));
  const ranges = hub.log.filter((line) => line.startsWith('GET cdn') && /bytes=[1-9]\d*-/.test(line));
  assert.ok(ranges.length > 0, `a request resumed past byte 0:\n${hub.log.join('\n')}`);
});

test('pull: a pull killed mid-transfer resumes in the next `infera pull` from its .ipull progress, not from byte 0', async () => {
  const env = { INFERA_DATA_DIR: join(work, 'killed') };
  const partial = join(work, 'killed', 'models', '.partial', 'hf', 'infera-test', 'tiny-chat-GGUF', 'tiny-chat-Q5_K_M.gguf.ipull');
  const first = cli(['pull', 'hf:infera-test/tiny-chat-GGUF:Q5_K_M'], env);
  // The hub sends the first half and stalls; once the downloader has saved its progress, kill it.
  const deadline = Date.now() + 30_000;
  while (!(existsSync(partial) && statSync(partial).size > 0 && /Q5_K_M: [1-9]\d*%/.test(first.output()))) {
    assert.ok(Date.now() < deadline, `no progress saved in 30 s:\n${first.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await new Promise((resolve) => setTimeout(resolve, 500));
  first.child.kill('SIGKILL');
  await first.exited;
  hub.release();
  const seen = hub.log.length;
  const second = await run(['pull', 'hf:infera-test/tiny-chat-GGUF:Q5_K_M'], env);
  assert.equal(second.code, 0, second.output);
  const file = join(work, 'killed', 'models', 'hf', 'infera-test', 'tiny-chat-GGUF', 'tiny-chat-Q5_K_M.gguf');
  assert.equal(sha256(file), createHash('sha256').update(big.subarray(0, 11_000_000)).digest('hex'));
  const ranges = hub.log.slice(seen).filter((line) => line.startsWith('GET cdn') && line.includes('bytes='));
  assert.ok(ranges.length > 0 && ranges.every((line) => !/bytes=0-/.test(line)), `the second pull fetched only what was missing:\n${ranges.join('\n')}`);
  assert.ok(!existsSync(partial), 'the progress file is gone once the file is in place');
});

test('pull failures: each with its own message and exit code', async () => {
  const env = { INFERA_DATA_DIR: join(work, 'failures') };
  // A port nothing listens on (fetch refuses the well-known "bad" ports like 9 before trying).
  const closed = await new Promise<number>((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
  // Independent pulls (none of them writes the manifest but the gated one), run side by side.
  const [unknown, msUnknown, msGated, gated, quant, corrupt, full, offline, bad, preset] = await Promise.all([
    run(['pull', 'hf:infera-test/no-such-repo'], env),
    run(['pull', 'ms:infera-test/no-such-repo'], env),
    run(['pull', 'ms:infera-test/gated-GGUF'], env),
    run(['pull', 'hf:infera-test/gated-GGUF'], env),
    run(['pull', 'hf:infera-test/tiny-chat-GGUF:Q2_K'], env),
    run(['pull', 'hf:infera-test/corrupt-GGUF'], env),
    run(['pull', 'hf:infera-test/huge-GGUF'], env),
    run(['pull', 'hf:infera-test/tiny-chat-GGUF'], { ...env, HF_ENDPOINT: `http://127.0.0.1:${closed}` }),
    run(['pull', 'Qwen/Qwen3-8B'], env),
    run(['pull', '--preset', 'nope'], env),
  ]);
  assert.equal(unknown.code, 10, unknown.output);
  assert.match(unknown.output, /hf:infera-test\/no-such-repo was not found on http:\/\/127\.0\.0\.1:\d+ \(HTTP 404\)/);
  assert.equal(msUnknown.code, 10, msUnknown.output);
  assert.match(msUnknown.output, /ms:infera-test\/no-such-repo was not found/);
  assert.equal(msGated.code, 11, msGated.output);
  assert.match(msGated.output, /gated or private \(HTTP 401 .*set MODELSCOPE_API_TOKEN/);

  assert.equal(gated.code, 11, gated.output);
  assert.match(gated.output, /gated or private \(HTTP 401 .*set HF_TOKEN/);
  const withToken = await run(['pull', 'hf:infera-test/gated-GGUF'], { ...env, HF_TOKEN: 'hf_good_token' });
  assert.equal(withToken.code, 0, withToken.output);

  assert.equal(quant.code, 12, quant.output);
  assert.match(quant.output, /no GGUF file matches Q2_K\. Available: Q8_0, F16, Q6_K, Q5_K_M/);

  assert.equal(corrupt.code, 13, corrupt.output);
  assert.match(corrupt.output, /corrupt-Q4_K_M\.gguf .* is corrupt \(sha256 [0-9a-f]{64}, expected 0{64}\); the file was removed/);
  assert.ok(!existsSync(join(work, 'failures', 'models', 'hf', 'infera-test', 'corrupt-GGUF', 'corrupt-Q4_K_M.gguf')));
  assert.ok(!existsSync(join(work, 'failures', 'models', '.partial', 'hf', 'infera-test', 'corrupt-GGUF', 'corrupt-Q4_K_M.gguf')));

  assert.equal(full.code, 14, full.output);
  assert.match(full.output, /needs 100 PB but .* free: free some space or set storage\.modelsDir/);

  assert.equal(offline.code, 15, offline.output);
  assert.match(offline.output, new RegExp(`cannot reach http://127\\.0\\.0\\.1:${closed} \\(ECONNREFUSED\\).*set HF_ENDPOINT`));

  assert.equal(bad.code, 2, bad.output);
  assert.match(bad.output, /is not a model ref: use hf:owner\/repo/);
  assert.equal(preset.code, 2, preset.output);
  assert.match(preset.output, /no preset or set named "nope"\. Sets: starter/);
});
