// `infera serve --upstream URL`: a real process in front of a (fake, recorded-answer) vLLM: the models it
// lists are served under their ids with no tiny defaults, the key comes from --upstream-key-env, and an
// upstream that cannot be listed stops startup with one line naming it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { type FakeUpstream, serve, startFakeUpstream } from '../src/engines/openai-compatible/testing/fake-upstream.ts';

function runCli(args: string[], env: Record<string, string>) {
  const child = spawn(process.execPath, ['bin/infera.js', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, exited, stderr: () => stderr };
}

let upstream: FakeUpstream;
let dataDir: string;
before(async () => {
  upstream = await startFakeUpstream();
  upstream.route('GET', '/v1/models', serve('vllm/models.json'));
  upstream.route('POST', '/v1/chat/completions', serve('vllm/chat-raw-think.json'));
  dataDir = mkdtempSync(join(tmpdir(), 'infera-cli-upstream-'));
});
after(async () => {
  await upstream.close();
  rmSync(dataDir, { recursive: true, force: true });
});

test('infera serve --upstream: serves what the upstream lists (dialect detected), with the key from --upstream-key-env', async () => {
  const cli = runCli(['serve', '--port', '0', '--upstream', `${upstream.url}/v1`, '--upstream-key-env', 'INFERA_TEST_VLLM_KEY'], {
    INFERA_DATA_DIR: dataDir,
    LOG_LEVEL: 'warn',
    INFERA_API_KEY: '',
    HOST: '127.0.0.1',
    INFERA_TEST_VLLM_KEY: 'sk-vllm',
  });
  try {
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no banner in 60 s:\n${cli.stderr()}`)), 60_000);
      cli.child.stderr.on('data', () => {
        const match = /serving the SiliconFlow \/ OpenAI API at (http:\/\/\S+)\/v1/.exec(cli.stderr());
        // The banner arrives in several writes: wait for its last line (the curl example's body).
        if (match && /-d '\{"model":.*\n/.test(cli.stderr())) {
          clearTimeout(timer);
          resolve(match[1]!);
        }
      });
      cli.exited.then((code) => reject(new Error(`exited ${code}:\n${cli.stderr()}`)));
    });
    const banner = cli.stderr();
    assert.match(banner, /Qwen\/Qwen3-8B\s+chat/);
    assert.doesNotMatch(banner, /TINY TEST MODELS|tiny-qwen3/);
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 });
    const completion = await client.chat.completions.create({ model: 'Qwen/Qwen3-8B', messages: [{ role: 'user', content: 'hello' }] });
    assert.equal(completion.choices[0]!.message.content, 'Hello! How can I help?');
    const sent = upstream.seen.filter((request) => request.path === '/v1/chat/completions').at(-1)!;
    assert.equal(sent.headers.authorization, 'Bearer sk-vllm');
    assert.deepEqual((await client.models.list()).data.map((model) => model.id), ['Qwen/Qwen3-8B']);
    cli.child.kill('SIGTERM');
    assert.equal(await cli.exited, 0);
  } finally {
    cli.child.kill('SIGKILL');
  }
});

test('infera serve --upstream: an upstream that cannot be listed stops startup, naming it', async () => {
  const cli = runCli(['serve', '--port', '0', '--upstream', `${upstream.url}/nothing/v1`, '--upstream-dialect', 'vllm'], {
    INFERA_DATA_DIR: dataDir,
    LOG_LEVEL: 'warn',
    HOST: '127.0.0.1',
  });
  try {
    assert.equal(await cli.exited, 1);
    assert.match(cli.stderr(), new RegExp(`upstream ${upstream.url}/nothing/v1: cannot list its models: .*answered 404`));
  } finally {
    cli.child.kill('SIGKILL');
  }
});
