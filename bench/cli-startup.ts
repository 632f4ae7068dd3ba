// CLI and server start-up of the compiled build, as a user meets them: `infera --help`, `infera keys
// list`, and `infera serve` until it listens (tiny models already generated, none loaded), then its
// idle RSS. A script, not a timed test. Prints medians and the load average.
//
//   npm run build && node --import tsx bench/cli-startup.ts [--runs 7]
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '7' } } });
const runs = Number(values.runs);
const bin = join(import.meta.dirname, '..', 'bin', 'infera.js');
const dataDir = mkdtempSync(join(tmpdir(), 'infera-bench-startup-'));
const env = { ...process.env, INFERA_DATA_DIR: dataDir, INFERA_API_KEY: '', INFERA_CONFIG: '' };
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function timeCommand(args: string[], script: string = bin): number {
  const start = performance.now();
  const result = spawnSync(process.execPath, [script, ...args].filter(Boolean), { env, stdio: 'ignore' });
  if (result.status !== 0) throw new Error(`infera ${args.join(' ')} exited ${result.status}`);
  return performance.now() - start;
}

/** Spawn `infera serve` on a free port; resolve at the banner's URL line with the time it took and RSS 1 s later. */
const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

function serveOnce(): Promise<{ listenMs: number; cpuMs: number; rssMiB: number }> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const child = spawn(process.execPath, [bin, 'serve', '--port', '0'], { env: { ...env, LOG_LEVEL: 'warn' }, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (chunk) => {
      err += chunk;
      if (!/serving the SiliconFlow/.test(err) || child.listenMs !== undefined) return;
      child.listenMs = performance.now() - start;
      // CPU the process used to get there: less sensitive than wall time to other load on the box.
      const fields = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      child.cpuMs = ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
      setTimeout(() => {
        const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1]);
        child.kill('SIGTERM');
        child.once('exit', () => resolve({ listenMs: child.listenMs!, cpuMs: child.cpuMs!, rssMiB: rssKiB / 1024 }));
      }, 1000);
    });
    child.once('exit', (code) => child.listenMs === undefined && reject(new Error(`serve exited ${code}: ${err}`)));
  }) as Promise<{ listenMs: number; cpuMs: number; rssMiB: number }>;
}
declare module 'node:child_process' {
  interface ChildProcess {
    listenMs?: number;
    cpuMs?: number;
  }
}

console.log(`load average before: ${loadavg().map((l) => l.toFixed(2)).join(' ')} (2 cores; figures are only good on a quiet box)`);
// First start generates the tiny models; not what this measures.
await serveOnce();
const bare: number[] = [];
const help: number[] = [];
const keys: number[] = [];
const listen: number[] = [];
const rss: number[] = [];
const cpu: number[] = [];
for (let i = 0; i < runs; i++) {
  bare.push(timeCommand(['-e', '0'], ''));
  help.push(timeCommand(['--help']));
  keys.push(timeCommand(['keys', 'list']));
  const served = await serveOnce();
  listen.push(served.listenMs);
  rss.push(served.rssMiB);
  cpu.push(served.cpuMs);
}
rmSync(dataDir, { recursive: true, force: true });
console.log(`runs: ${runs}, node ${process.version}`);
console.log(`node -e 0 (bare Node)    median ${median(bare).toFixed(0)} ms   (the floor on this machine)`);
console.log(`infera --help            median ${median(help).toFixed(0)} ms   (target ≤ 300 ms)`);
console.log(`infera keys list         median ${median(keys).toFixed(0)} ms`);
console.log(`infera serve → listening median ${median(listen).toFixed(0)} ms   (target ≤ 1000 ms)`);
console.log(`  CPU used until listening median ${median(cpu).toFixed(0)} ms (user + system)`);
console.log(`idle RSS, no model loaded median ${median(rss).toFixed(1)} MiB (target ≤ 120 MB)`);
console.log(`load average after: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
