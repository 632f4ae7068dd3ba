// Startup as an operator meets it, through the real bin: bad ports and unusable settings stop the
// process with one line naming the setting (no stack trace), and the data it creates is private.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// One configured model that is never loaded: the server starts without generating the tiny models.
const CONFIG = 'models:\n  - id: a/b\n    type: chat\n    engine: llama-cpp\n    path: /nonexistent/x.gguf\n';

function run(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, ['bin/infera.js', ...args], {
    env: { ...process.env, LOG_LEVEL: 'warn', INFERA_API_KEY: '', PORT: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  return new Promise<{ code: number | null; stderr: string }>((resolve) =>
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    }),
  );
}

function assertOneLine(stderr: string, pattern: RegExp) {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line, got:\n${stderr}`);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(stderr, /^\s+at /m, 'no stack trace');
}

test('ports parse strictly: --port 80x and PORT=8e3 stop with exit 2 naming the setting', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'infera-cli-port-'));
  writeFileSync(join(dir, 'infera.yaml'), CONFIG);
  try {
    const flag = await run(['serve', '--config', join(dir, 'infera.yaml'), '--port', '80x']);
    assert.equal(flag.code, 2);
    assertOneLine(flag.stderr, /--port must be an integer from 0 to 65535, got "80x"/);
    const env = await run(['serve', '--config', join(dir, 'infera.yaml')], { PORT: '8e3' });
    assert.equal(env.code, 2);
    assertOneLine(env.stderr, /PORT must be an integer/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('port in use: one line "port N is in use: set --port or PORT", exit 1; the data dir it created is 0700, the SQLite file 0600', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'infera-cli-busy-'));
  writeFileSync(join(dir, 'infera.yaml'), CONFIG);
  const blocker: Server = createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', () => resolve()));
  const port = (blocker.address() as { port: number }).port;
  const dataDir = join(dir, 'fresh', 'data');
  try {
    const result = await run(['serve', '--config', join(dir, 'infera.yaml'), '--host', '127.0.0.1', '--port', String(port), '--data-dir', dataDir]);
    assert.equal(result.code, 1);
    assertOneLine(result.stderr, new RegExp(`^infera: port ${port} is in use: set --port or PORT$`));
    assert.equal(statSync(dataDir).mode & 0o777, 0o700);
    assert.equal(statSync(join(dir, 'fresh')).mode & 0o777, 0o700, 'parents it created too');
    assert.equal(statSync(join(dataDir, 'infera.db')).mode & 0o777, 0o600);
  } finally {
    blocker.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a data dir that cannot be created (under /proc) fails at once with one line naming --data-dir', { skip: process.platform !== 'linux' }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'infera-cli-proc-'));
  writeFileSync(join(dir, 'infera.yaml'), CONFIG);
  try {
    const result = await run(['serve', '--config', join(dir, 'infera.yaml'), '--port', '0', '--data-dir', '/proc/infera-nope/data']);
    assert.equal(result.code, 1);
    assertOneLine(result.stderr, /cannot use \/proc\/infera-nope \(ENOENT\): set --data-dir/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a short INFERA_API_KEY or --api-key stops serve with exit 2 and one line naming what the operator set (not server.apiKeys[0])', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'infera-cli-key-'));
  writeFileSync(join(dir, 'infera.yaml'), CONFIG);
  try {
    const env = await run(['serve', '--config', join(dir, 'infera.yaml'), '--port', '0'], { INFERA_API_KEY: 'short' });
    assert.equal(env.code, 2);
    assertOneLine(env.stderr, /^INFERA_API_KEY must be at least 8 characters \(got 5\)/);
    assert.doesNotMatch(env.stderr, /apiKeys/);
    const flag = await run(['serve', '--config', join(dir, 'infera.yaml'), '--port', '0', '--api-key', 'tiny']);
    assert.equal(flag.code, 2);
    assertOneLine(flag.stderr, /^--api-key must be at least 8 characters \(got 4\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
