// Per-request server CPU of an *idle-started* server: starts each build's `infera serve` (a never-loaded
// model), waits IDLE ms (its start-up release runs while idle: src/engines/runner/release.ts), then sends N
// keep-alive GET /v1/models over C connections; prints server CPU per request and RSS before / after.
// Builds alternate, round by round. A script, not a timed test.
//   node bench/idle-http.mjs a/bin/infera.js,b/bin/infera.js [rounds 3] [N 30000] [C 10] [IDLE ms 3000]
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';
import { spawn } from 'node:child_process';
const [bins, rounds = '3', N = '30000', C = '10', IDLE = '3000'] = process.argv.slice(2);
const tick = 100; // CLK_TCK on Linux
const cpu = (pid) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) * 1000 / tick; };
const rss = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;
async function once(bin) {
  const dir = mkdtempSync(join(tmpdir(), 'infera-idle-http-'));
  writeFileSync(`${dir}/infera.yaml`, `server:\n  logLevel: warn\n  port: 0\nstorage:\n  dataDir: ${dir}\nmodels:\n  - id: bench/never-loaded\n    type: chat\n    engine: llama-cpp\n    path: ${dir}/none.gguf\n`);
  const child = spawn(process.execPath, [bin, 'serve', '--config', `${dir}/infera.yaml`], { env: { ...process.env, INFERA_API_KEY: '', INFERA_CONFIG: '', INFERA_DATA_DIR: dir }, stdio: ['ignore', 'ignore', 'pipe'] });
  let seen = '';
  const port = await new Promise((res) => child.stderr.on('data', (c) => { seen += c; const m = /http:\/\/[^:]+:(\d+)/.exec(seen); if (m) res(Number(m[1])); }));
  await new Promise((r) => setTimeout(r, Number(IDLE)));
  const rss0 = rss(child.pid), c0 = cpu(child.pid);
  const agent = new http.Agent({ keepAlive: true, maxSockets: Number(C) });
  let left = Number(N);
  const one = () => new Promise((res, rej) => http.get({ host: '127.0.0.1', port, path: '/v1/models', agent }, (r) => { r.resume(); r.on('end', res); }).on('error', rej));
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Number(C) }, async () => { while (left-- > 0) await one(); }));
  const wall = performance.now() - t0;
  const c1 = cpu(child.pid), rss1 = rss(child.pid);
  child.kill();
  agent.destroy();
  rmSync(dir, { recursive: true, force: true });
  return { us: (c1 - c0) * 1000 / Number(N), rps: Number(N) / wall * 1000, rss0, rss1 };
}
const list = bins.split(',');
const res = Object.fromEntries(list.map((b) => [b, []]));
for (let i = 0; i < Number(rounds); i++) for (const b of list) { const r = await once(b); res[b].push(r); console.log(b, i, `cpu ${r.us.toFixed(1)} µs/req, ${r.rps.toFixed(0)} req/s, RSS idle ${r.rss0.toFixed(1)} -> after ${r.rss1.toFixed(1)} MiB`); }
const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
for (const b of list) console.log(`median ${b}: cpu ${med(res[b].map((r) => r.us)).toFixed(1)} µs/req, RSS idle ${med(res[b].map((r) => r.rss0)).toFixed(1)} -> ${med(res[b].map((r) => r.rss1)).toFixed(1)}`);
