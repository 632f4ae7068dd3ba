// What the HTTP-path benches (http-overhead.ts, http-together.ts, and the gateway benches'
// spawnReady) share: the server config, starting servers, and a process's CPU time.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const BENCH_KEY = 'sk-bench-0123456789';

/**
 * One served model that is never loaded (/v1/models only reads the registry, refusals never reach an
 * engine). maxRequestsPerSocket 0: autocannon ignores `Connection: close`, so with the default (1000)
 * it would measure the 503s Node sends after it.
 */
export function writeNeverLoadedConfig(prefix: string): { dir: string; configPath: string } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const configPath = join(dir, 'infera.yaml');
  writeFileSync(
    configPath,
    `server:\n  logLevel: info\n  maxRequestsPerSocket: 0\nstorage:\n  dataDir: ${dir}\nmodels:\n  - id: bench/never-loaded\n    type: chat\n    engine: llama-cpp\n    path: ${dir}/none.gguf\n`,
  );
  return { dir, configPath };
}

const children: ChildProcess[] = [];
/** Kills every server startServer started (also done when the bench exits). */
export function stopServers(): void {
  for (const child of children) child.kill();
}
process.on('exit', stopServers);

/** Starts a server (killed when the bench exits); resolves with it and its base URL (the first group of `ready` in its stderr). */
export function startServer(command: string, args: string[], env: Record<string, string>, ready: RegExp): Promise<{ child: ChildProcess; url: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(child);
    let seen = '';
    child.stderr!.on('data', (chunk) => {
      seen += chunk;
      const match = ready.exec(seen);
      if (match) resolve({ child, url: match[1]! });
    });
    child.once('exit', (code) => reject(new Error(`${command} exited ${code}: ${seen}`)));
  });
}

/**
 * Spawns a process and resolves once `ready` matches its stdout or stderr. Both pipes are drained for
 * the whole run: a full pipe would block the child's writes (Infera's access log).
 */
export function spawnReady(command: string, args: string[], env: Record<string, string | undefined>, ready: RegExp): Promise<{ child: ChildProcess; match: RegExpExecArray }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let seen = '';
    const look = (chunk: Buffer) => {
      if (process.env.BENCH_DEBUG) process.stderr.write(chunk);
      if (seen.length < 64 * 1024) seen += chunk;
      const match = ready.exec(seen);
      if (match) resolve({ child, match });
    };
    child.stdout!.on('data', look);
    child.stderr!.on('data', look);
    child.once('exit', (code) => reject(new Error(`${command} ${args.join(' ')} exited ${code}: ${seen}`)));
  });
}

/** User + system CPU of a process in µs (Linux /proc; clock ticks of 10 ms, fine over seconds of load). */
export function cpuUs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

/**
 * Source for `node -e` of the gateway benches' fake instant upstream (an OpenAI-compatible server serving
 * `model`): it reads the whole body (as a real server must) and answers with a fixed completion, or with
 * `"stream": true` five SSE events in one write (role, two content deltas, finish, usage) and [DONE];
 * a GET gets the model list. It prints "port N" once listening.
 */
export function fakeUpstreamSource(model: string): string {
  return `
const created = 1700000000;
const answer = JSON.stringify({ id: 'chatcmpl-bench', object: 'chat.completion', created, model: '${model}',
  choices: [{ index: 0, message: { role: 'assistant', content: 'Hello there!' }, finish_reason: 'stop' }],
  usage: { prompt_tokens: 9, completion_tokens: 3, total_tokens: 12 } });
const chunk = (delta, finish) => 'data: ' + JSON.stringify({ id: 'chatcmpl-bench', object: 'chat.completion.chunk', created, model: '${model}',
  choices: [{ index: 0, delta, finish_reason: finish }] }) + '\\n\\n';
const stream = chunk({ role: 'assistant', content: '' }, null) + chunk({ content: 'Hello' }, null) + chunk({ content: ' there!' }, null)
  + chunk({}, 'stop') + 'data: ' + JSON.stringify({ id: 'chatcmpl-bench', object: 'chat.completion.chunk', created, model: '${model}', choices: [],
  usage: { prompt_tokens: 9, completion_tokens: 3, total_tokens: 12 } }) + '\\n\\ndata: [DONE]\\n\\n';
const models = JSON.stringify({ object: 'list', data: [{ id: '${model}', object: 'model', created, owned_by: 'bench' }] });
require('node:http').createServer((req, res) => {
  let body = '';
  req.on('data', (c) => (body += c));
  req.on('end', () => {
    if (req.method === 'GET') { res.writeHead(200, { 'content-type': 'application/json' }); res.end(models); return; }
    if (/"stream"\\s*:\\s*true/.test(body)) { res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' }); res.end(stream); return; }
    res.writeHead(200, { 'content-type': 'application/json' }); res.end(answer);
  });
}).listen(0, '127.0.0.1', function () { process.stdout.write('port ' + this.address().port + '\\n'); });`;
}
