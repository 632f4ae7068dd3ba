// Graceful drain of a real `infera serve` process (the compiled build, as `npm start` runs it): SIGTERM
// lets a stream in flight finish, refuses new connections, settles the ledger and exits 0; past the
// drain deadline a stream is stopped with an error frame and [DONE]; a second signal exits at once.
// The model is the random 512x8 benchmark GGUF (it never stops early), so a long answer takes seconds.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBenchModel } from '../src/tiny-models/index.ts';
import { SHARED_DATA_DIR } from './helpers/server.ts';

let modelPath: string;
const dirs: string[] = [];

before(async () => {
  modelPath = await ensureBenchModel('chat-512x8', join(SHARED_DATA_DIR, 'bench-models'));
});
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

interface Served {
  child: ChildProcess;
  url: string;
  dataDir: string;
  configPath: string;
  stderr(): string;
  exited: Promise<number | null>;
}

async function serve(drainTimeoutSeconds: number): Promise<Served> {
  const dir = mkdtempSync(join(tmpdir(), 'infera-drain-'));
  dirs.push(dir);
  const configPath = join(dir, 'infera.yaml');
  writeFileSync(
    configPath,
    [
      'server:',
      '  host: 127.0.0.1',
      '  port: 0',
      '  logLevel: warn',
      `  drainTimeoutSeconds: ${drainTimeoutSeconds}`,
      'storage:',
      `  dataDir: ${join(dir, 'data')}`,
      'models:',
      '  - id: bench/chat',
      '    type: chat',
      '    engine: llama-cpp',
      `    path: ${modelPath}`,
      '    eager: true',
      '    llamaCpp: { contextSize: 2048, sequences: 2, threads: 1 }',
      '',
    ].join('\n'),
  );
  const child = spawn(process.execPath, ['bin/infera.js', 'serve', '--config', configPath], {
    env: { ...process.env, INFERA_API_KEY: '' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (chunk) => (stderr += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not ready in 60 s:\n${stderr}`)), 60_000);
    const check = () => {
      const match = /serving the SiliconFlow \/ OpenAI API at (http:\/\/\S+)\/v1/.exec(stderr);
      if (match && /model bench\/chat: ready/.test(stderr)) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    };
    child.stderr!.on('data', check);
    void exited.then((code) => reject(new Error(`exited ${code}:\n${stderr}`)));
  });
  return { child, url, dataDir: join(dir, 'data'), configPath, stderr: () => stderr, exited };
}

/** Starts a streamed chat answer; resolves once its first content frame arrived, with the rest to come. */
async function startStream(url: string, maxTokens: number) {
  const response = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'bench/chat',
      messages: [{ role: 'user', content: 'Tell me a long story.' }],
      max_tokens: maxTokens,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  assert.equal(response.status, 200);
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = '';
  while (!/"content":"/.test(text)) {
    const { value, done } = await reader.read();
    assert.ok(!done, `stream ended before its first token: ${text}`);
    text += value;
  }
  const rest = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return text;
      text += value;
    }
  })();
  return { rest };
}

const events = (text: string) =>
  text
    .split('\n\n')
    .filter((block) => block.startsWith('data: '))
    .map((block) => block.slice('data: '.length));

function connectionRefused(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'ECONNREFUSED'));
  });
}

function usage(served: Served) {
  const result = spawnSync(process.execPath, ['bin/infera.js', 'usage', '--json', '--by', 'model', '--config', served.configPath], { encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  return JSON.parse(result.stdout) as { group: string; requests: number; errors: number; cancelled: number; completionTokens: number }[];
}

test('SIGTERM: the stream in flight ends with its full answer and [DONE], new connections are refused, the ledger has its row, exit 0', async () => {
  const served = await serve(30);
  try {
    const stream = await startStream(served.url, 300);
    served.child.kill('SIGTERM');
    // The listener closes at once while the stream goes on.
    let refused = false;
    for (let i = 0; i < 50 && !refused; i++) {
      refused = await connectionRefused(served.url);
      if (!refused) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.ok(refused, 'a new connection during the drain is refused');
    const data = events(await stream.rest);
    assert.equal(data.at(-1), '[DONE]');
    const chunks = data.slice(0, -1).map((line) => JSON.parse(line) as { choices: { finish_reason: string | null }[]; usage?: { completion_tokens: number } });
    assert.ok(!chunks.some((chunk) => 'error' in chunk), 'no error frame: the answer finished');
    assert.equal(chunks.find((chunk) => chunk.choices[0]?.finish_reason)?.choices[0]?.finish_reason, 'length');
    const generated = chunks.at(-1)?.usage?.completion_tokens ?? 0;
    assert.ok(generated >= 300, `the whole answer was generated (${generated} tokens)`);
    assert.equal(await served.exited, 0, served.stderr());
    const [row] = usage(served);
    assert.equal(row?.requests, 1);
    assert.equal(row?.errors, 0);
    assert.equal(row?.cancelled, 0);
    assert.equal(row?.completionTokens, generated);
  } finally {
    served.child.kill('SIGKILL');
  }
});

test('past the drain deadline a stream gets an error frame and [DONE], a JSON request a 503, both rows settle as cancelled, exit 0', async () => {
  const served = await serve(0.3);
  try {
    const stream = await startStream(served.url, 1000);
    // A non-streamed answer running at the deadline (the model has two sequences).
    const json = fetch(`${served.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'bench/chat', messages: [{ role: 'user', content: 'Another long story.' }], max_tokens: 1000 }),
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    served.child.kill('SIGTERM');
    const jsonResponse = await json;
    assert.equal(jsonResponse.status, 503);
    assert.ok(jsonResponse.headers.get('retry-after'));
    const body = (await jsonResponse.json()) as { error: { code: string } };
    assert.equal(body.error.code, 'server_shutting_down');
    const data = events(await stream.rest);
    assert.equal(data.at(-1), '[DONE]');
    assert.equal(data.filter((line) => line === '[DONE]').length, 1, 'one [DONE]');
    assert.ok(!data.some((line) => line !== '[DONE]' && (JSON.parse(line) as { choices?: { finish_reason: string | null }[] }).choices?.some((c) => c.finish_reason)), 'the stopped answer claims no finish_reason');
    const error = JSON.parse(data.at(-2)!) as { error?: { code: string; type: string } };
    assert.equal(error.error?.code, 'server_shutting_down');
    assert.equal(error.error?.type, 'overloaded_error');
    assert.equal(await served.exited, 0, served.stderr());
    const [row] = usage(served);
    assert.equal(row?.requests, 2);
    assert.equal(row?.cancelled, 2, 'both rows settled as cancelled');
    assert.ok(row!.completionTokens > 0 && row!.completionTokens < 2000, `tokens generated before the stop are billed: ${row?.completionTokens}`);
  } finally {
    served.child.kill('SIGKILL');
  }
});

test('a second signal exits at once without waiting for the drain', async () => {
  const served = await serve(30);
  try {
    const stream = await startStream(served.url, 1000);
    // The answer is cut when the process exits: that is the point here.
    const cut = stream.rest.catch(() => 'cut');
    served.child.kill('SIGTERM');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const started = Date.now();
    served.child.kill('SIGTERM');
    assert.equal(await served.exited, 130);
    assert.ok(Date.now() - started < 2000, 'exited promptly');
    assert.equal(await cut, 'cut');
  } finally {
    served.child.kill('SIGKILL');
  }
});
