// The gateway's one-connection cost in its steady state (issue 14, "Overhead"): requests back to back on
// one keep-alive connection (or --connections N through autocannon) against Infera servers on the priced
// config of bench/gateway-overhead.ts (":open" after a DIR: no key, limit or price), builds alternating
// round by round, after --warm requests each (V8 needs thousands to optimise the path). Per server and
// round: CPU per request from /proc/PID/task/*/schedstat, by thread ("main" is the event loop, "node" V8's
// platform workers: concurrent compiles and the parallel scavenger), and wall p50/p99.
//   --node "FLAGS": node flags for the servers (%N: the target's name), e.g. "--trace-gc --trace-gc-nvp"
//   or "--perf-basic-prof" (the servers' pids are printed, for perf record -p); --types "T1|T2": each round
//   sends its requests once per content type, rows named NAME[T] (the same server, e.g. "application/json|
//   application/json; charset=utf-8": quick.ts takes the first only, so the second is Fastify's path); --get PATH: GET instead
//   of the chat POST; --stream: the chat POST with stream: true; --server "k: v": more server settings; --extra "yaml;yaml": more config lines;
//   --idle S: S seconds with no request before each round of each server (as gateway-overhead.ts's windows
//   come after the other targets' turns: the server goes quiet, V8 shrinks its young generation).
// Usage: node --import tsx bench/gateway-one.ts [--requests 3000] [--rounds 3] [--warm 2000] [--connections 1]
import { fakeUpstreamSource, spawnReady } from './http-bench-common.ts';
//   NAME=DIR[:open][@yaml;yaml] ...      e.g. before=/work/base this=. open=.:open 'long=.@  keyCacheSeconds: 3600'
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Client } from 'undici';
import autocannon from 'autocannon';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { requests: { type: 'string', default: '3000' }, rounds: { type: 'string', default: '3' }, open: { type: 'boolean' }, warm: { type: 'string', default: '2000' }, node: { type: 'string', default: '' }, connections: { type: 'string', default: '1' }, get: { type: 'string' }, stream: { type: 'boolean' }, extra: { type: 'string' }, server: { type: 'string', default: '' }, types: { type: 'string', default: 'application/json' }, idle: { type: 'string', default: '0' } },
});
const MODEL = 'bench/echo';
const upstreamSource = fakeUpstreamSource(MODEL);

const start = spawnReady;

/** ns of CPU by thread name of a process. */
function threads(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      const ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      const key = Number(tid) === pid ? 'main' : name.replace(/\d+$/, '#');
      out.set(key, (out.get(key) ?? 0) + ns);
    } catch {}
  }
  return out;
}

const body = JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'Say hello.' }], max_tokens: 16, ...(values.stream ? { stream: true } : {}) });
async function run(origin: string, headers: Record<string, string>, n: number, type = 'application/json'): Promise<number[]> {
  const conns = Number(values.connections);
  if (conns > 1) {
    const r = await autocannon({ url: `${origin}/v1/chat/completions`, method: 'POST', connections: conns, amount: n, headers: { ...headers, 'content-type': type }, body });
    if (r.non2xx || r.errors) throw new Error(`errors ${r.non2xx} ${r.errors}`);
    return [r.latency.p50 * 1000, r.latency.p99 * 1000];
  }
  const client = new Client(origin, { pipelining: 1 });
  const times: number[] = [];
  const h = { ...headers, 'content-type': type };
  try {
    for (let i = 0; i < n; i++) {
      const t0 = process.hrtime.bigint();
      const response = values.get ? await client.request({ method: 'GET', path: values.get, headers: h }) : await client.request({ method: 'POST', path: '/v1/chat/completions', headers: h, body });
      if (response.statusCode !== 200) throw new Error(`${response.statusCode} ${await response.body.text()}`);
      await response.body.dump();
      times.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  } finally {
    await client.close();
  }
  return times;
}
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

const dir = mkdtempSync(join(tmpdir(), 'infera-gw-one-'));
const children: ChildProcess[] = [];
try {
  const upstream = await start(process.execPath, ['-e', upstreamSource], {}, /port (\d+)/);
  children.push(upstream.child);
  const upstreamUrl = `http://127.0.0.1:${upstream.match[1]}`;
  const targets: { name: string; pid: number; origin: string; headers: Record<string, string> }[] = [];
  for (const spec of positionals) {
    const [name, fullSpec] = spec.split(/=(.*)/s) as [string, string];
    // NAME=DIR[:open][@yaml;yaml]: config lines for this target only, after the rest (e.g. "@  keyCacheSeconds: 3600" under platform:).
    const [rootSpec, ownExtra] = fullSpec.split('@') as [string, string | undefined];
    const [root, mode] = rootSpec.split(':') as [string, string | undefined];
    const openOne = values.open || mode === 'open';
    const configPath = join(dir, `${name}.yaml`);
    const lines = [
      `server: { host: 127.0.0.1, port: 0, maxRequestsPerSocket: 0${values.server ? `, ${values.server}` : ''} }`,
      `storage: { dataDir: ${join(dir, name)} }`,
      'models:',
      `  - { id: ${MODEL}, type: chat, engine: openai-compatible, upstream: { baseUrl: ${upstreamUrl}/v1, dialect: openai, contextSize: 4096 } }`,
    ];
    if (!openOne)
      lines.push('platform:', '  limits: { defaults: { chat: { rpm: 100000000, tpm: 1000000000000, rpd: 100000000 } } }', `  pricing: { ${MODEL}: { inputPerMillion: 1, outputPerMillion: 2 } }`);
    if (values.extra) lines.push(...values.extra.split(';'));
    if (ownExtra) lines.push(...ownExtra.split(';'));
    writeFileSync(configPath, `${lines.join('\n')}\n`);
    const bin = join(root, 'bin/infera.js');
    const headers: Record<string, string> = {};
    if (!openOne) {
      const cli = (...args: string[]) => execFileSync(process.execPath, [bin, '--config', configPath, ...args], { encoding: 'utf8' });
      headers.authorization = `Bearer ${(JSON.parse(cli('keys', 'create', '--name', 'b', '--account', 'b', '--limits', 'rpm=100000000', '--json')) as { secret: string }).secret}`;
      cli('accounts', 'topup', 'b', '1000000');
    }
    const nodeArgs = values.node ? values.node.split(' ').filter(Boolean).map((a) => a.replace('%N', name)) : [];
    const server = await start(process.execPath, [...nodeArgs, bin, '--config', configPath, 'serve'], openOne ? { INFERA_API_KEY: '' } : {}, /serving the SiliconFlow \/ OpenAI API at (http:\/\/\S+)\/v1/);
    children.push(server.child);
    targets.push({ name, pid: server.child.pid!, origin: server.match[1]!, headers });
    console.log(`pid ${name} ${server.child.pid}`);
  }
  const n = Number(values.requests);
  for (const t of targets) for (const type of values.types.split('|')) await run(t.origin, t.headers, Number(values.warm), type);
  if (process.env.BENCH_DEBUG) console.error('=== warm-up end');
  const rows: Record<string, { cpu: number[]; p50: number[]; p99: number[]; by: Map<string, number[]> }> = {};
  const types = values.types.split('|');
  for (let round = 0; round < Number(values.rounds); round++) {
    for (const t of round % 2 ? [...targets].reverse() : targets)
    for (const type of round % 2 ? [...types].reverse() : types) {
      const name = types.length > 1 ? `${t.name}[${type}]` : t.name;
      if (Number(values.idle) > 0) await new Promise((resolve) => setTimeout(resolve, Number(values.idle) * 1000));
      // With BENCH_DEBUG (the servers' output copied to stderr) a mark where each measured round starts, so
      // that a server's own trace (e.g. --node "--trace-opt --trace-deopt", bench/v8-trace-rounds.ts) splits by round.
      if (process.env.BENCH_DEBUG) console.error(`=== ${name} r${round + 1} start`);
      const before = threads(t.pid);
      const times = await run(t.origin, t.headers, n, type);
      const after = threads(t.pid);
      rows[name] ??= { cpu: [], p50: [], p99: [], by: new Map() };
      const row = rows[name]!;
      let total = 0;
      const parts: string[] = [];
      for (const [k, v] of after) {
        const d = (v - (before.get(k) ?? 0)) / 1000 / n;
        total += d;
        if (!row.by.has(k)) row.by.set(k, []);
        row.by.get(k)!.push(d);
        if (d >= 1) parts.push(`${k} ${d.toFixed(0)}`);
      }
      row.cpu.push(total);
      row.p50.push(pct(times, 50));
      row.p99.push(pct(times, 99));
      if (process.env.BENCH_DEBUG) console.error(`=== ${name} r${round + 1} end`);
      console.log(`r${round + 1} ${name}: CPU ${total.toFixed(0)} µs/req [${parts.join(', ')}] p50 ${pct(times, 50).toFixed(0)} p99 ${pct(times, 99).toFixed(0)} load ${loadavg()[0]!.toFixed(2)}`);
    }
  }
  const med = (xs: number[]) => pct(xs, 50);
  for (const [name, row] of Object.entries(rows))
    console.log(`${name}: median CPU ${med(row.cpu).toFixed(0)} µs/req, p50 ${med(row.p50).toFixed(0)}, p99 ${med(row.p99).toFixed(0)}; ${[...row.by].map(([k, v]) => `${k} ${med(v).toFixed(0)}`).join(', ')}`);
} finally {
  for (const child of children) child.kill();
}
