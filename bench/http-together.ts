// Server CPU per request of Infera builds and a bare node:http server loaded at the same time: each round
// sends the same kind of request to every server at once (10 connections each), so all of them see the
// same box, and compares them round by round (paired medians). On a shared, busy box this separates a
// change of a few µs from the load's drift far better than measuring one server after another
// (bench/http-overhead.ts), at the price of the servers competing with each other for the cores.
// Usage: node --import tsx bench/http-together.ts [--seconds 2] [--rounds 10] [--kinds models,bad,unknown] (also: notfound, wrongkey) NAME=DIR [NAME=DIR ...]
// DIR: a build (bin/, dist/, package.json, node_modules), e.g. `.` after `npm run build`, or a copy of an
// earlier commit's build. The first NAME is the one the others are compared with. The bare server
// answers a GET without reading anything and a POST by reading and JSON.parsing its body (a 400).
// The order of the builds biases the result (on a 2-core box at load 20 the one listed second came out
// ~5 % cheaper in both orders): run both orders and take the two together.
import autocannon from 'autocannon';
import type { ChildProcess } from 'node:child_process';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { BENCH_KEY, cpuUs, startServer, stopServers, writeNeverLoadedConfig } from './http-bench-common.ts';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { seconds: { type: 'string', default: '2' }, rounds: { type: 'string', default: '10' }, kinds: { type: 'string', default: 'models,bad,unknown' } },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const KEY = BENCH_KEY;
const { configPath } = writeNeverLoadedConfig('infera-bench-together-');
const ERROR = JSON.stringify({ error: { message: 'messages: must not be empty', type: 'invalid_request_error', param: 'messages', code: 'invalid_request' } });
const LIST = JSON.stringify({ object: 'list', data: [{ id: 'bench/never-loaded', object: 'model', created: 1, owned_by: 'infera' }] });
const bareSource = `require('node:http').createServer((req, res) => {
  if (req.method === 'GET') { res.writeHead(200, {'content-type':'application/json'}); res.end(${JSON.stringify(LIST)}); return; }
  let text = ''; req.setEncoding('utf8'); req.on('data', (c) => { text += c; });
  req.on('end', () => { JSON.parse(text); res.writeHead(400, {'content-type':'application/json'}); res.end(${JSON.stringify(ERROR)}); });
}).listen(0, '127.0.0.1', function () { process.stderr.write('ready http://127.0.0.1:' + this.address().port + '\\n'); });`;

/** An Infera or bare server with the bench key in its environment. */
const start = (args: string[], ready: RegExp) => startServer(process.execPath, args, { INFERA_API_KEY: KEY }, ready);

interface Server {
  name: string;
  child: ChildProcess;
  url: string;
}
const servers: Server[] = [{ name: 'bare', ...(await start(['-e', bareSource], /ready (http:\S+)\n/)) }];
for (const spec of positionals) {
  const at = spec.indexOf('=');
  const build = resolve(spec.slice(at + 1));
  const started = await start([join(build, 'bin/infera.js'), 'serve', '--config', configPath, '--port', '0'], /at (http:\/\/\S+)\/v1/);
  servers.push({ name: spec.slice(0, at), ...started });
}

const json = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };
const KINDS: Record<string, { path: string; method: 'GET' | 'POST'; body?: string; status: number; headers?: Record<string, string> }> = {
  models: { path: '/v1/models', method: 'GET', status: 200 },
  notfound: { path: '/v1/no-such-route', method: 'GET', status: 404 },
  wrongkey: { path: '/v1/models', method: 'GET', status: 401, headers: { authorization: 'Bearer sk-wrong' } },
  bad: { path: '/v1/chat/completions', method: 'POST', body: JSON.stringify({ model: 'bench/never-loaded', messages: [] }), status: 400 },
  unknown: {
    path: '/v1/chat/completions',
    method: 'POST',
    body: JSON.stringify({ model: 'bench/no-such-model', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 16 }),
    status: 400,
  },
};
const kinds = values.kinds.split(',');

/** User + system CPU of a process in µs (Linux /proc; 10 ms ticks, fine over seconds of load). */

/** One round of one kind: every server loaded at once; CPU µs per request of each, in `servers` order. */
async function round(kind: string, duration: number): Promise<number[]> {
  const k = KINDS[kind]!;
  const before = servers.map((server) => cpuUs(server.child.pid!));
  const results = await Promise.all(
    servers.map((server) =>
      autocannon({
        url: server.url + (server.name === 'bare' ? '/' : k.path),
        method: k.method,
        headers: k.headers ?? (k.method === 'GET' ? { authorization: json.authorization } : json),
        ...(k.body ? { body: k.body } : {}),
        connections: 10,
        duration,
      }),
    ),
  );
  return servers.map((server, i) => {
    const result = results[i]!;
    const expected = `${Math.floor(k.status / 100)}xx` as '2xx' | '4xx';
    if (result[server.name === 'bare' ? (k.method === 'GET' ? '2xx' : '4xx') : expected] !== result.requests.total) throw new Error(`${server.name} ${kind}: ${result[expected]} of ${result.requests.total} answers were ${expected}`);
    return (cpuUs(server.child.pid!) - before[i]!) / result.requests.total;
  });
}

for (const kind of kinds) await round(kind, 2); // warm-up
const runs: Record<string, number[][]> = Object.fromEntries(kinds.map((kind) => [kind, []]));
const loads: number[] = [];
try {
  for (let r = 0; r < rounds; r++) {
    loads.push(loadavg()[0]!);
    for (const kind of kinds) runs[kind]!.push(await round(kind, seconds));
  }
} finally {
  stopServers();
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const signed = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(1)}`;
console.log(`${seconds} s × ${rounds} rounds, every server loaded at once; load average per round: ${loads.map((l) => l.toFixed(1)).join(', ')}`);
console.log(`| target | bare µs/request | server | µs/request | over bare, paired | vs ${servers[1]!.name}, paired | ratio |`);
console.log('|---|---|---|---|---|---|---|');
for (const kind of kinds) {
  const rows = runs[kind]!;
  const bare = median(rows.map((row) => row[0]!));
  for (let i = 1; i < servers.length; i++) {
    const versus = i === 1 ? '—' : signed(median(rows.map((row) => row[i]! - row[1]!)));
    const ratio = i === 1 ? '—' : median(rows.map((row) => row[i]! / row[1]!)).toFixed(3);
    console.log(
      `| ${kind} | ${KINDS[kind]!.method} ${bare.toFixed(1)} | ${servers[i]!.name} | ${median(rows.map((row) => row[i]!)).toFixed(1)} | ${signed(median(rows.map((row) => row[i]! - row[0]!)))} | ${versus} | ${ratio} |`,
    );
  }
}
