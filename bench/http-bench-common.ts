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
