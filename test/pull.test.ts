// `infera pull` / `models` / `rm` and POST /admin/models/pull against imitation hubs on loopback
// (test/helpers/fake-hub.ts): the real CLI in child processes, tiny generated models published as a
// GGUF repo and an ONNX pipeline repo, then `infera serve` with no config serving them under their
// SiliconFlow ids, answered through the openai SDK. Every failure's message and exit code.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join, relative } from 'node:path';
import OpenAI from 'openai';
import { TINY_CHAT_SCRIPT, ensureTinyModels } from '../src/tiny-models/index.ts';
import { ensureTinyDiffusionModel } from '../src/tiny-models/onnx/index.ts';
import { SHARED_DATA_DIR } from './helpers/server.ts';
import { type FakeFile, type FakeHub, startFakeHub } from './helpers/fake-hub.ts';

let hub: FakeHub;
let work: string;
let catalogue: string;
const big = randomBytes(12_000_000);

function folderFiles(dir: string): FakeFile[] {
  const files: FakeFile[] = [];
  const walk = (path: string) => {
    for (const name of readdirSync(path)) {
      const child = join(path, name);
      if (statSync(child).isDirectory()) walk(child);
      else if (!name.startsWith('.')) files.push({ path: relative(dir, child).split('\\').join('/'), bytes: readFileSync(child) });
    }
  };
  walk(dir);
  return files;
}

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'infera-pull-'));
  const tiny = await ensureTinyModels(join(SHARED_DATA_DIR, 'tiny-models'));
  const sd = await ensureTinyDiffusionModel(join(SHARED_DATA_DIR, 'tiny-models', 'tiny-sd'));
  const chat = readFileSync(tiny.chat);
  hub = await startFakeHub({
    hf: {
      'infera-test/tiny-chat-GGUF': {
        files: [
          { path: 'README.md', bytes: Buffer.from('# tiny chat\n') },
          { path: 'tiny-chat-Q8_0.gguf', bytes: chat },
          // A split GGUF (F16) in two parts, and a file the first download of which is cut halfway.
          { path: 'F16/tiny-chat-F16-00001-of-00002.gguf', bytes: chat.subarray(0, 5000) },
          { path: 'F16/tiny-chat-F16-00002-of-00002.gguf', bytes: chat.subarray(5000, 9000) },
          { path: 'tiny-chat-Q6_K.gguf', bytes: big, cutOnce: true },
          { path: 'tiny-chat-Q5_K_M.gguf', bytes: big.subarray(0, 11_000_000), stallAtHalf: true },
        ],
      },
      'infera-test/tiny-embed-GGUF': { files: [{ path: 'tiny-embed-Q8_0.gguf', bytes: readFileSync(tiny.embedding) }] },
      'infera-test/tiny-sd-onnx': { files: folderFiles(sd) },
      'infera-test/gated-GGUF': { gatedToken: 'hf_good_token', files: [{ path: 'gated-Q4_K_M.gguf', bytes: Buffer.from('GGUF gated bytes'), lfs: true }] },
      'infera-test/corrupt-GGUF': { files: [{ path: 'corrupt-Q4_K_M.gguf', bytes: randomBytes(4096), listedSha256: '0'.repeat(64) }] },
      'infera-test/huge-GGUF': { files: [{ path: 'huge-Q4_K_M.gguf', bytes: randomBytes(2048), listedSize: 10 ** 17 }] },
    },
    ms: {
      'infera-test/tiny-rerank-GGUF': { files: [{ path: 'tiny-rerank-Q8_0.gguf', bytes: readFileSync(tiny.reranker) }] },
      'infera-test/gated-GGUF': { gatedToken: 'ms-good-token', files: [{ path: 'gated-Q4_K_M.gguf', bytes: Buffer.from('GGUF gated bytes') }] },
    },
  });
  catalogue = join(work, 'presets.yaml');
  writeFileSync(
    catalogue,
    [
      'sets:',
      '  starter: [Qwen/Qwen3-1.7B, BAAI/bge-m3, BAAI/bge-reranker-v2-m3, stabilityai/sd-turbo]',
      'models:',
      '  Qwen/Qwen3-1.7B:',
      '    type: chat',
      '    source: hf:infera-test/tiny-chat-GGUF:Q8_0',
      '    entry: { engine: llama-cpp, llamaCpp: { contextSize: 2048, sequences: 2, threads: 1 } }',
      '  BAAI/bge-m3:',
      '    type: embedding',
      '    source: hf:infera-test/tiny-embed-GGUF',
      '    entry: { engine: llama-cpp, llamaCpp: { threads: 1, contexts: 1 } }',
      '  BAAI/bge-reranker-v2-m3:',
      '    type: reranker',
      '    source: ms:infera-test/tiny-rerank-GGUF:Q8_0',
      '    entry: { engine: llama-cpp, llamaCpp: { threads: 1, contexts: 1 } }',
      '  stabilityai/sd-turbo:',
      '    type: text-to-image',
      '    source: hf:infera-test/tiny-sd-onnx',
      '    entry: { engine: onnx-diffusion, onnx: { threads: 1, minSize: 64, defaultSize: 64x64 } }',
      '',
    ].join('\n'),
  );
});

after(async () => {
  await hub?.close();
  rmSync(work, { recursive: true, force: true });
});

function cli(args: string[], env: Record<string, string | undefined> = {}) {
  const child = spawn(process.execPath, ['bin/infera.js', ...args], {
    env: { ...process.env, HF_ENDPOINT: hub.hfUrl, MODELSCOPE_ENDPOINT: hub.msUrl, HF_TOKEN: '', INFERA_PRESETS: catalogue, INFERA_API_KEY: '', LOG_LEVEL: 'warn', HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  child.stderr.on('data', (chunk) => (output += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, exited, output: () => output };
}

async function run(args: string[], env: Record<string, string | undefined> = {}) {
  const process = cli(args, env);
  const code = await process.exited;
  return { code, output: process.output() };
}

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

test('first run with INFERA_AUTO_PULL=1 pulls the starter presets, serves them under their SiliconFlow ids; pull/models/rm', async () => {
  const dataDir = join(work, 'starter');
  const env = { INFERA_DATA_DIR: dataDir };
  const key = 'sk-pull-test-key-0123456789';
  const server = cli(['serve', '--port', '0'], { ...env, INFERA_ADMIN_KEY: 'admin-key-for-pull-test', INFERA_AUTO_PULL: '1', INFERA_API_KEY: key });
  try {
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no banner in 60 s:\n${server.output()}`)), 60_000);
      server.child.stderr.on('data', () => {
        const match = /serving the SiliconFlow \/ OpenAI API at (http:\/\/\S+)\/v1/.exec(server.output());
        if (match && /-d '\{"model":.*\n/.test(server.output())) {
          clearTimeout(timer);
          resolve(match[1]!);
        }
      });
      server.exited.then((code) => reject(new Error(`exited ${code}:\n${server.output()}`)));
    });
    const output = server.output();
    assert.match(output, /INFERA_AUTO_PULL: no models configured or pulled; pulling the starter set/);
    assert.match(output, /hf:infera-test\/tiny-chat-GGUF:Q8_0 from http:\/\/127\.0\.0\.1:\d+: 1 file/);
    assert.match(output, /100%/, 'a plain progress line per 5 % when stderr is not a terminal');
    assert.match(output, /ms:infera-test\/tiny-rerank-GGUF:Q8_0: done/);
    assert.doesNotMatch(output, /TINY TEST MODELS/);
    assert.match(output, /serving the presets pulled into/);
    assert.match(output, /curl \S+\/v1\/chat\/completions -H "Authorization: Bearer \$INFERA_API_KEY"/, 'the banner\'s curl carries the key');
    assert.match(output, /"model":"Qwen\/Qwen3-1\.7B"/);
    const manifest = JSON.parse(readFileSync(join(dataDir, 'models', 'manifest.json'), 'utf8'));
    assert.deepEqual(manifest.models.map((model: { preset: string }) => model.preset).sort(), ['BAAI/bge-m3', 'BAAI/bge-reranker-v2-m3', 'Qwen/Qwen3-1.7B', 'stabilityai/sd-turbo']);
    const sd = manifest.models.find((model: { preset: string }) => model.preset === 'stabilityai/sd-turbo');
    assert.ok(existsSync(join(dataDir, 'models', sd.path, 'unet', 'model.onnx')), 'the ONNX pipeline folder is in place');
    assert.ok(!hub.log.some((line) => line.startsWith('GET cdn') && line.endsWith('auth')), 'the token never goes to the CDN');
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: key });
    const ids = (await client.models.list()).data.map((model) => model.id).sort();
    assert.deepEqual(ids, ['BAAI/bge-m3', 'BAAI/bge-reranker-v2-m3', 'Qwen/Qwen3-1.7B', 'stabilityai/sd-turbo']);
    const completion = await client.chat.completions.create({ model: 'Qwen/Qwen3-1.7B', messages: [{ role: 'user', content: 'hello' }] });
    assert.equal(completion.choices[0]!.message.content, TINY_CHAT_SCRIPT.answer);
    // `infera models` asks the running server (this config's port, the admin key) what is loaded.
    const live = await run(['models'], { ...env, PORT: new URL(url).port, INFERA_ADMIN_KEY: 'admin-key-for-pull-test' });
    assert.equal(live.code, 0, live.output);
    assert.match(live.output, /hf:infera-test\/tiny-chat-GGUF:Q8_0 .*chat\s+llama-cpp\s+Qwen\/Qwen3-1\.7B\s+yes/);
    assert.match(live.output, /hf:infera-test\/tiny-sd-onnx .*stabilityai\/sd-turbo\s+no/);
    const embedding = await client.embeddings.create({ model: 'BAAI/bge-m3', input: 'hello', encoding_format: 'float' });
    assert.equal(embedding.data[0]!.embedding.length, 128);
    const image = await client.images.generate({ model: 'stabilityai/sd-turbo', prompt: 'a cat', size: '64x64', response_format: 'b64_json' } as never);
    assert.ok(image.data?.[0]?.b64_json);

    // The same pull over the admin API, as server-sent events.
    const response = await fetch(`${url}/admin/models/pull`, {
      method: 'POST',
      headers: { authorization: 'Bearer admin-key-for-pull-test', 'content-type': 'application/json' },
      body: JSON.stringify({ ref: 'hf:infera-test/tiny-chat-GGUF/README.md' }),
    });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /text\/event-stream/);
    const events = (await response.text()).split('\n\n').filter(Boolean).map((frame) => /^event: (\S+)/.exec(frame)?.[1]);
    assert.deepEqual(events.filter((event) => event !== 'progress'), ['resolved', 'done', 'end']);
    const failed = await fetch(`${url}/admin/models/pull`, {
      method: 'POST',
      headers: { authorization: 'Bearer admin-key-for-pull-test', 'content-type': 'application/json' },
      body: JSON.stringify({ ref: 'hf:infera-test/nope' }),
    });
    const text = await failed.text();
    assert.match(text, /event: error\ndata: \{"code":"not_found","exit_code":10,"message":"hf:infera-test\/nope was not found/);
  } finally {
    server.child.kill('SIGKILL');
  }

  const again = await run(['pull', '--preset', 'starter'], env);
  assert.equal(again.code, 0, again.output);
  assert.equal(again.output.match(/all here already/g)?.length, 4, again.output);

  const listed = await run(['models'], env);
  assert.equal(listed.code, 0, listed.output);
  assert.match(listed.output, /hf:infera-test\/tiny-sd-onnx\s+\S+ \S+\s+text-to-image\s+onnx-diffusion\s+stabilityai\/sd-turbo/);
  assert.match(listed.output, /ms:infera-test\/tiny-rerank-GGUF:Q8_0 .* reranker\s+llama-cpp\s+BAAI\/bge-reranker-v2-m3/);

  const removed = await run(['rm', 'BAAI/bge-m3'], env);
  assert.equal(removed.code, 0, removed.output);
  assert.match(removed.output, /removed hf:infera-test\/tiny-embed-GGUF/);
  assert.ok(!existsSync(join(dataDir, 'models', 'hf', 'infera-test', 'tiny-embed-GGUF')));
  const missing = await run(['rm', 'BAAI/bge-m3'], env);
  assert.equal(missing.code, 10);
  assert.match(missing.output, /no pulled model is BAAI\/bge-m3/);
});

test('pull: a split GGUF comes as all its parts; a transfer cut halfway resumes with a Range request; checksums hold', async () => {
  const env = { INFERA_DATA_DIR: join(work, 'split') };
  const split = await run(['pull', 'hf:infera-test/tiny-chat-GGUF:F16'], env);
  assert.equal(split.code, 0, split.output);
  const dir = join(work, 'split', 'models', 'hf', 'infera-test', 'tiny-chat-GGUF', 'F16');
  assert.deepEqual(readdirSync(dir).sort(), ['tiny-chat-F16-00001-of-00002.gguf', 'tiny-chat-F16-00002-of-00002.gguf']);
  const manifest = JSON.parse(readFileSync(join(work, 'split', 'models', 'manifest.json'), 'utf8'));
  assert.equal(manifest.models[0].path, 'hf/infera-test/tiny-chat-GGUF/F16/tiny-chat-F16-00001-of-00002.gguf', 'a model entry points at the first part');

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
