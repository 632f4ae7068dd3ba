// Per-request cost of Infera's HTTP layer (routing, request id, auth, error shape, access log) on a
// trivial route, against a bare node:http server answering the same JSON in the same run.
// Usage: node --import tsx bench/http-overhead.ts [--duration 10] [--connections 10] [--rounds 3]
import autocannon from 'autocannon';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    connections: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '3' },
  },
});
const duration = Number(values.duration);
const connections = Number(values.connections);
const rounds = Number(values.rounds);
const KEY = 'sk-bench-0123456789';

const dir = mkdtempSync(join(tmpdir(), 'infera-bench-http-'));
const configPath = join(dir, 'infera.yaml');
// A served model that is never loaded: /v1/models only reads the registry.
writeFileSync(
  configPath,
  `server:\n  logLevel: info\nstorage:\n  dataDir: ${dir}\nmodels:\n  - id: bench/never-loaded\n    type: chat\n    engine: llama-cpp\n    path: ${dir}/none.gguf\n`,
);

function start(command: string, args: string[], env: Record<string, string>, ready: RegExp): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let seen = '';
    child.stderr!.on('data', (chunk) => {
      seen += chunk;
      if (ready.test(seen)) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`${command} exited ${code}: ${seen}`)));
  });
}

async function measure(url: string, headers: Record<string, string>) {
  // Throughput with `connections` clients, then latency with one client (mean, µs resolution).
  const loaded = await autocannon({ url, connections, duration, headers });
  const single = await autocannon({ url, connections: 1, duration: Math.max(2, duration / 2), headers });
  return {
    rps: loaded.requests.average,
    p50: loaded.latency.p50,
    p99: loaded.latency.p99,
    // One client sends the next request when the previous answer arrived: 1/rps is its round trip
    // (autocannon's own latency figures are whole milliseconds, too coarse here).
    meanLatencyUs: 1e6 / single.requests.average,
    errors: loaded.errors + loaded.non2xx + single.errors + single.non2xx,
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const bareSource = `
const body = JSON.stringify({object:'list',data:[{id:'bench/never-loaded',object:'model',created:1,owned_by:'infera'}]});
require('node:http').createServer((req, res) => { res.writeHead(200, {'content-type':'application/json'}); res.end(body); })
  .listen(8711, '127.0.0.1', () => process.stderr.write('ready\\n'));`;

const bare = await start(process.execPath, ['-e', bareSource], {}, /ready/);
// Logs go to /dev/null through the ignored stdout, but pino still formats each line: that is part of the cost.
const infera = await start(process.execPath, ['bin/infera.js', 'serve', '--config', configPath, '--port', '8712'], { INFERA_API_KEY: KEY }, /serving/);

const results: Record<string, Awaited<ReturnType<typeof measure>>[]> = { bare: [], infera: [] };
try {
  await measure('http://127.0.0.1:8711/', {}); // warm-up
  await measure('http://127.0.0.1:8712/v1/models', { authorization: `Bearer ${KEY}` });
  for (let round = 0; round < rounds; round++) {
    results.bare.push(await measure('http://127.0.0.1:8711/', {}));
    results.infera.push(await measure('http://127.0.0.1:8712/v1/models', { authorization: `Bearer ${KEY}` }));
  }
} finally {
  bare.kill();
  infera.kill();
}

const summary = Object.fromEntries(
  Object.entries(results).map(([name, runs]) => [
    name,
    {
      rps: median(runs.map((r) => r.rps)),
      p50: median(runs.map((r) => r.p50)),
      p99: median(runs.map((r) => r.p99)),
      meanLatencyUs: median(runs.map((r) => r.meanLatencyUs)),
      errors: runs.reduce((s, r) => s + r.errors, 0),
    },
  ]),
);
const perRequestUs = (rps: number) => (1e6 * 1) / rps; // single event loop: µs of CPU per request at saturation
console.log(JSON.stringify({ duration, connections, rounds, summary }, null, 2));
console.log(
  `bare node:http: ${summary.bare.rps.toFixed(0)} req/s (p50 ${summary.bare.p50} ms) | infera /v1/models with auth+log: ` +
    `${summary.infera.rps.toFixed(0)} req/s (p50 ${summary.infera.p50} ms) | ratio ${(summary.infera.rps / summary.bare.rps).toFixed(2)} | ` +
    `added CPU per request ≈ ${(perRequestUs(summary.infera.rps) - perRequestUs(summary.bare.rps)).toFixed(1)} µs | ` +
    `one-client round trip: bare ${summary.bare.meanLatencyUs.toFixed(0)} µs, infera ${summary.infera.meanLatencyUs.toFixed(0)} µs ` +
    `(added ${(summary.infera.meanLatencyUs - summary.bare.meanLatencyUs).toFixed(0)} µs; budget 300 µs)`,
);
