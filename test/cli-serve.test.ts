// `infera serve` as a newcomer runs it (what `npm start` does): a real process, the tiny models generated
// on first start, the banner, one chat answer through the openai SDK, and a clean shutdown.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { TINY_CHAT_SCRIPT } from '../src/tiny-models/index.ts';

function runCli(args: string[], env: Record<string, string>) {
  const child = spawn(process.execPath, ['bin/infera.js', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, exited, stderr: () => stderr };
}

/** The live child processes of `pid` (an engine process, a spare one). */
function childrenOf(pid: number | undefined): string[] {
  return readdirSync('/proc').filter((entry) => {
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      return /^\d+$/.test(entry) && Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid;
    } catch {
      return false;
    }
  });
}

test('infera serve: banner with URL, models and key advice; answers the openai SDK; exits cleanly on SIGTERM', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'infera-cli-'));
  const cli = runCli(['serve', '--port', '0'], { INFERA_DATA_DIR: dataDir, LOG_LEVEL: 'warn', INFERA_API_KEY: '', HOST: '127.0.0.1' });
  try {
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no banner in 60 s:\n${cli.stderr()}`)), 60_000);
      cli.child.stderr.on('data', () => {
        const match = /serving the SiliconFlow \/ OpenAI API at (http:\/\/\S+)\/v1/.exec(cli.stderr());
        // The banner arrives in several writes: wait for its last line (the curl example's body).
        if (match && /-d '\{"model":.*\n/.test(cli.stderr())) {
          clearTimeout(timer);
          resolve(match[1]);
        }
      });
      cli.exited.then((code) => reject(new Error(`exited ${code}:\n${cli.stderr()}`)));
    });
    const banner = cli.stderr();
    assert.match(banner, /TINY TEST MODELS/);
    assert.match(banner, /infera\/tiny-qwen3-chat/);
    assert.match(banner, /infera keys create/, 'tells how to make a key');
    assert.match(banner, /npx infera pull --preset starter/, 'tells how to pull real models');
    assert.match(banner, /curl \S+ -H 'Content-Type/, 'no Authorization in the curl example while no key exists');
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none' });
    const completion = await client.chat.completions.create({ model: 'Qwen/QwQ-32B', messages: [{ role: 'user', content: 'hello' }] });
    assert.equal(completion.choices[0].message.content, TINY_CHAT_SCRIPT.answer);
    const models = await client.models.list();
    const tiny = models.data.find((m) => m.id === 'infera/tiny-qwen3-chat') as unknown as { infera: { description: string } };
    assert.match(tiny.infera.description, /TINY TEST MODEL/);
    cli.child.kill('SIGTERM');
    assert.equal(await cli.exited, 0);
  } finally {
    cli.child.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('infera serve: an invalid config stops with exit 2 and names the bad key', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'infera-cli-bad-'));
  const configPath = join(dir, 'infera.yaml');
  writeFileSync(configPath, 'server:\n  port: "eighty"\nmodels:\n  - id: x\n    type: chat\n    engine: llama-cpp\n');
  const cli = runCli(['serve', '--config', configPath], {});
  try {
    assert.equal(await cli.exited, 2);
    assert.match(cli.stderr(), /server\.port/);
    assert.match(cli.stderr(), /models\[0\]\.path/);
    // One readable line per bad setting, no stack trace.
    assert.doesNotMatch(cli.stderr(), /^\s+at /m);
    assert.ok(cli.stderr().trim().split('\n').length <= 3, cli.stderr());
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('infera serve: an eager model in an engine process starts loading before the server is built, and that process serves it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'infera-cli-eager-'));
  const { ensureTinyModels } = await import('../src/tiny-models/index.ts');
  const tiny = await ensureTinyModels(join(dir, 'models'));
  const configPath = join(dir, 'infera.yaml');
  writeFileSync(
    configPath,
    `server:\n  host: 127.0.0.1\n  port: 0\n  logLevel: debug\nstorage:\n  dataDir: ${join(dir, 'data')}\nmodels:\n` +
      `  - id: eager/chat\n    type: chat\n    engine: llama-cpp\n    path: ${tiny.chat}\n    eager: true\n    llamaCpp: { contextSize: 512, sequences: 1 }\n`,
  );
  // No INFERA_CACHE_DIR from outside: the cache folder comes from the config (storage.dataDir), read
  // after the engine process was forked, so its load message must carry it.
  const cli = runCli(['serve', '--config', configPath], { INFERA_API_KEY: '', INFERA_CONFIG: '', INFERA_CACHE_DIR: '' });
  let log = '';
  cli.child.stdout.on('data', (chunk) => (log += chunk));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`not ready in 90 s:\n${cli.stderr()}`)), 90_000);
      cli.child.stderr.on('data', () => {
        if (/model eager\/chat: ready/.test(cli.stderr())) {
          clearTimeout(timer);
          resolve();
        }
      });
      cli.exited.then((code) => reject(new Error(`exited ${code}:\n${cli.stderr()}`)));
    });
    // The spare forked before the config was read is the one the registry adopted: exactly one engine
    // process was started.
    assert.match(log, /engine process started early by infera serve \(a spare, before the config was read\); adopted/);
    assert.equal(childrenOf(cli.child.pid).length, 1);
    const url = /serving the SiliconFlow \/ OpenAI API at (http:\/\/\S+)\/v1/.exec(cli.stderr())![1];
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none' });
    const completion = await client.chat.completions.create({ model: 'eager/chat', messages: [{ role: 'user', content: 'hello' }] });
    assert.equal(completion.choices[0].message.content, TINY_CHAT_SCRIPT.answer);
    // Its chat wrappers were resolved on this first start and cached once idle, in <dataDir>/cache.
    const cacheDir = join(dir, 'data', 'cache');
    const cached = () => {
      try {
        return readdirSync(cacheDir).filter((name) => /^chat-wrapper-.*\.json$/.test(name));
      } catch {
        return [];
      }
    };
    const deadline = Date.now() + 20_000;
    while (cached().length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(cached().length, 1, `no chat wrapper cached in ${cacheDir}`);
    cli.child.kill('SIGTERM');
    assert.equal(await cli.exited, 0);
  } finally {
    cli.child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('infera serve: with no eager model the spare engine process is stopped once the config is read', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'infera-cli-lazy-'));
  const { ensureTinyModels } = await import('../src/tiny-models/index.ts');
  const tiny = await ensureTinyModels(join(dir, 'models'));
  const configPath = join(dir, 'infera.yaml');
  writeFileSync(
    configPath,
    `server:\n  host: 127.0.0.1\n  port: 0\n  logLevel: warn\nstorage:\n  dataDir: ${join(dir, 'data')}\nmodels:\n` +
      `  - id: lazy/chat\n    type: chat\n    engine: llama-cpp\n    path: ${tiny.chat}\n    llamaCpp: { contextSize: 512, sequences: 1 }\n`,
  );
  const cli = runCli(['serve', '--config', configPath], { INFERA_API_KEY: '', INFERA_CONFIG: '' });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no banner in 60 s:\n${cli.stderr()}`)), 60_000);
      cli.child.stderr.on('data', () => {
        if (/-d '\{"model":.*\n/.test(cli.stderr())) {
          clearTimeout(timer);
          resolve();
        }
      });
      cli.exited.then((code) => reject(new Error(`exited ${code}:\n${cli.stderr()}`)));
    });
    // Nothing is loaded before a request asks for it: no engine process, the spare included (not left
    // for its 120 s timer).
    const deadline = Date.now() + 10_000;
    while (childrenOf(cli.child.pid).length > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(childrenOf(cli.child.pid), []);
    cli.child.kill('SIGTERM');
    assert.equal(await cli.exited, 0);
  } finally {
    cli.child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('infera serve: an eager model whose file fails the check has its early engine process stopped, and is reported failed', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'infera-cli-eager-bad-'));
  const bad = join(dir, 'bad.gguf');
  writeFileSync(bad, Buffer.concat([Buffer.from('GGUF'), Buffer.from([9, 0, 0, 0]), Buffer.alloc(64)]));
  const configPath = join(dir, 'infera.yaml');
  writeFileSync(
    configPath,
    `server:\n  host: 127.0.0.1\n  port: 0\n  logLevel: warn\nstorage:\n  dataDir: ${join(dir, 'data')}\nmodels:\n` +
      `  - id: eager/bad\n    type: chat\n    engine: llama-cpp\n    path: ${bad}\n    eager: true\n`,
  );
  const cli = runCli(['serve', '--config', configPath], { INFERA_API_KEY: '', INFERA_CONFIG: '' });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no failure reported in 60 s:\n${cli.stderr()}`)), 60_000);
      cli.child.stderr.on('data', () => {
        if (/model eager\/bad: failed/.test(cli.stderr())) {
          clearTimeout(timer);
          resolve();
        }
      });
      cli.exited.then((code) => reject(new Error(`exited ${code}:\n${cli.stderr()}`)));
    });
    assert.match(cli.stderr(), /GGUF version 9 is not supported/);
    // The process started before the check finished is gone (not left for its 120 s adoption timer).
    const children = () => childrenOf(cli.child.pid);
    const deadline = Date.now() + 10_000;
    while (children().length > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(children(), []);
    cli.child.kill('SIGTERM');
    assert.equal(await cli.exited, 0);
  } finally {
    cli.child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
