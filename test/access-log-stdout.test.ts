// The access log of a real `infera serve` process (the compiled build) on its stdout. Lines are buffered
// and written together (src/observability/logger.ts): an idle server's line must still come out
// promptly, and a graceful stop (SIGTERM) must write every line still buffered before the process exits.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = mkdtempSync(join(tmpdir(), 'infera-access-log-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** `infera serve` with a never-loaded model (GET /v1/models only reads the registry), logging at info. */
async function serve(name: string, logging: string[]) {
  const configPath = join(dir, `${name}.yaml`);
  writeFileSync(
    configPath,
    [
      'server:',
      '  host: 127.0.0.1',
      '  port: 0',
      '  logLevel: info',
      ...logging,
      'storage:',
      `  dataDir: ${join(dir, name)}`,
      'models:',
      '  - id: never/loaded',
      '    type: chat',
      '    engine: llama-cpp',
      `    path: ${join(dir, 'none.gguf')}`,
      '',
    ].join('\n'),
  );
  const child = spawn(process.execPath, ['bin/infera.js', 'serve', '--config', configPath], {
    env: { ...process.env, INFERA_API_KEY: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk) => (stdout += chunk));
  child.stderr!.on('data', (chunk) => (stderr += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not ready in 60 s:\n${stderr}`)), 60_000);
    child.stderr!.on('data', () => {
      const match = /serving the SiliconFlow \/ OpenAI API at (http:\/\/\S+)\/v1/.exec(stderr);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    });
    void exited.then((code) => reject(new Error(`exited ${code}:\n${stderr}`)));
  });
  const requestLines = () => stdout.split('\n').filter((line) => line.includes('"msg":"request"'));
  return { child, url, exited, requestLines, stdout: () => stdout, stderr: () => stderr };
}

test('access log on stdout, default flush: an idle request line comes out within a second, redacted', async () => {
  const server = await serve('idle', []);
  try {
    const answer = await fetch(`${server.url}/v1/models?api_key=sk-secret-in-url`, { headers: { 'x-request-id': 'idle-1' } });
    assert.equal(answer.status, 200);
    // The buffer's timer writes it, not a later request.
    for (const started = Date.now(); server.requestLines().length < 1 && Date.now() - started < 1000; ) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(server.requestLines().length, 1, `the idle request's line did not come out within 1 s: ${server.stdout()}`);
    assert.match(server.requestLines()[0]!, /"id":"idle-1"/);
    assert.match(server.requestLines()[0]!, /api_key=\[redacted\]/);
    assert.doesNotMatch(server.stdout(), /sk-secret-in-url/);
  } finally {
    server.child.kill('SIGKILL');
  }
});

test('access log on stdout: a graceful stop (SIGTERM) writes every buffered line before the process exits', async () => {
  // Lines may wait 10 s: only the flush on close can get them out before exit.
  const server = await serve('burst', ['logging:', '  flushMs: 10000']);
  try {
    const burst = 50;
    const answers = await Promise.all(Array.from({ length: burst }, (_, i) => fetch(`${server.url}/v1/models`, { headers: { 'x-request-id': `burst-${i}` } })));
    for (const answer of answers) assert.equal(answer.status, 200);
    assert.equal(server.requestLines().length, 0, 'still buffered');
    server.child.kill('SIGTERM');
    assert.equal(await server.exited, 0, server.stderr());
    const lines = server.requestLines();
    assert.equal(lines.length, burst, `expected ${burst} request lines, got ${lines.length}:\n${server.stdout()}`);
    for (const line of lines) assert.doesNotThrow(() => JSON.parse(line), `a whole JSON line: ${line}`);
    for (let i = 0; i < burst; i++) assert.ok(lines.some((line) => line.includes(`"id":"burst-${i}"`)), `burst-${i} logged`);
  } finally {
    server.child.kill('SIGKILL');
  }
});
