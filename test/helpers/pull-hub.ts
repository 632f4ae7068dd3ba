// The imitation hubs the `infera pull` tests run against (test/helpers/fake-hub.ts), with Infera's tiny
// generated models published on them, a preset catalogue pointing at them, and the CLI as a child
// process with HF_ENDPOINT / MODELSCOPE_ENDPOINT aimed there. Shared by test/pull*.test.ts.
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { ensureTinyModels } from '../../src/tiny-models/index.ts';
import { ensureTinyDiffusionModel } from '../../src/tiny-models/onnx/index.ts';
import { SHARED_DATA_DIR } from './server.ts';
import { type FakeFile, type FakeHub, startFakeHub } from './fake-hub.ts';

export interface PullFixture {
  hub: FakeHub;
  /** A scratch folder, removed by close(). */
  work: string;
  /** The bytes of tiny-chat-Q6_K.gguf (cut halfway once); tiny-chat-Q5_K_M.gguf is its first 11 MB (stalls at half). */
  big: Buffer;
  cli(args: string[], env?: Record<string, string | undefined>): { child: ChildProcessByStdio<null, Readable, Readable>; exited: Promise<number | null>; output(): string };
  run(args: string[], env?: Record<string, string | undefined>): Promise<{ code: number | null; output: string }>;
  close(): Promise<void>;
}


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

export async function startPullFixture(): Promise<PullFixture> {
  const big = randomBytes(12_000_000);
  let work = '';
  let hub: FakeHub;
  let catalogue = '';

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
  return {
    hub,
    work,
    big,
    cli,
    run,
    close: async () => {
      await hub.close();
      rmSync(work, { recursive: true, force: true });
    },
  };
}
