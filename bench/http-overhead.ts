// Per-request cost of Infera's HTTP layer (routing, request id, auth, error shape, access log) on a
// trivial route and on its error answers (404 route, 401 key, 400 body), against a bare node:http server
// answering the same JSON in the same run. Two bare baselines: "bare" is a GET that reads no body (every
// target's "over bare" column); "bare POST" reads a JSON body, JSON.parses it and answers a small 400
// JSON, the least any server that looks at a POST's body must do, so the POST targets are also shown
// "over bare POST" (the fair figure for them: Node's parser taking a body costs more than a GET). Besides req/s and round trips it reads each server's own CPU
// time (/proc/<pid>/stat) per request: on a shared box that figure moves far less with other load than
// wall-clock ones do.
// Usage: node --import tsx bench/http-overhead.ts [--duration 10] [--connections 10] [--rounds 3] [--baseline DIR]
// --baseline DIR: also serve from another build (a folder holding bin/, dist/, package.json and a
// node_modules link, e.g. a copy of an earlier commit's build) and measure it in the same rounds, so a
// change is judged against its baseline under the same load.
// --only REGEX: measure only the targets whose name matches (bare is always measured), e.g. to profile
// one answer on its own (INFERA_BENCH_PROFILE_DIR=DIR NODE_OPTIONS=--import=./bench/cpu-profile-hook.mjs).
import autocannon from 'autocannon';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BENCH_KEY, cpuUs, startServer, stopServers, writeNeverLoadedConfig } from './http-bench-common.ts';

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    connections: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '3' },
    baseline: { type: 'string' },
    only: { type: 'string' },
  },
});
const duration = Number(values.duration);
const connections = Number(values.connections);
const rounds = Number(values.rounds);
const KEY = BENCH_KEY;
const { configPath } = writeNeverLoadedConfig('infera-bench-http-');

// Every server listens on a port of the system's choosing (other benches may run beside this one) and
// is killed when this process exits, whatever happens before the rounds' own clean-up.
interface Target {
  url: string;
  method?: 'GET' | 'POST';
  headers?: Record<string, string>;
  body?: string;
  status: number;
}

async function measure(pid: number, target: Target) {
  // Throughput with `connections` clients, then latency with one client (mean, µs resolution).
  const options = { url: target.url, method: target.method ?? 'GET', headers: target.headers ?? {}, duration, ...(target.body ? { body: target.body } : {}) };
  const cpuBefore = cpuUs(pid);
  const loaded = await autocannon({ ...options, connections });
  const cpuPerRequestUs = (cpuUs(pid) - cpuBefore) / loaded.requests.total;
  const single = await autocannon({ ...options, connections: 1, duration: Math.max(2, duration / 2) });
  // Answers outside the expected status class (autocannon counts them per class: 2xx, 4xx, ...).
  const expectedClass = `${Math.floor(target.status / 100)}xx`;
  const unexpected = (result: Record<string, number>) => result.errors + result.timeouts + (result.requests as unknown as { total: number }).total - result[expectedClass]!;
  return {
    rps: loaded.requests.average,
    p50: loaded.latency.p50,
    p99: loaded.latency.p99,
    cpuPerRequestUs,
    // One client sends the next request when the previous answer arrived: 1/rps is its round trip
    // (autocannon's own latency figures are whole milliseconds, too coarse here).
    meanLatencyUs: 1e6 / single.requests.average,
    errors: unexpected(loaded) + unexpected(single),
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const bareSource = `
const body = JSON.stringify({object:'list',data:[{id:'bench/never-loaded',object:'model',created:1,owned_by:'infera'}]});
require('node:http').createServer((req, res) => { res.writeHead(200, {'content-type':'application/json'}); res.end(body); })
  .listen(0, '127.0.0.1', function () { process.stderr.write('ready http://127.0.0.1:' + this.address().port + '\\n'); });`;

// The least a server refusing a JSON POST does: take the body, parse it, answer a small JSON error.
const barePostSource = `
const body = JSON.stringify({error:{message:'messages: must not be empty',type:'invalid_request_error',param:'messages',code:'invalid_request'}});
require('node:http').createServer((req, res) => {
  let text = '';
  req.setEncoding('utf8');
  req.on('data', (chunk) => { text += chunk; });
  req.on('end', () => {
    let parsed;
    try { parsed = JSON.parse(text); } catch { parsed = undefined; }
    res.writeHead(parsed && typeof parsed === 'object' ? 400 : 415, {'content-type':'application/json'});
    res.end(body);
  });
}).listen(0, '127.0.0.1', function () { process.stderr.write('ready http://127.0.0.1:' + this.address().port + '\\n'); });`;

const SERVING = /serving the SiliconFlow \/ OpenAI API at (http:\/\/\S+)\/v1/;
const bare = await startServer(process.execPath, ['-e', bareSource], {}, /ready (http:\S+)\n/);
const barePost = await startServer(process.execPath, ['-e', barePostSource], {}, /ready (http:\S+)\n/);
// Logs go to /dev/null through the ignored stdout, but pino still formats each line: that is part of the cost.
const infera = await startServer(process.execPath, ['bin/infera.js', 'serve', '--config', configPath, '--port', '0'], { INFERA_API_KEY: KEY }, SERVING);

const baseline = values.baseline
  ? await startServer(process.execPath, [join(values.baseline, 'bin/infera.js'), 'serve', '--config', configPath, '--port', '0'], { INFERA_API_KEY: KEY }, SERVING)
  : undefined;

const auth = { authorization: `Bearer ${KEY}` };
const BAD_BODY = JSON.stringify({ model: 'bench/never-loaded', messages: [] });
/** Targets compared with "bare POST" as well as with "bare": those that send a body. */
const isPost = (name: string) => targets[name]?.target.method === 'POST';
const BARES = new Set(['bare', 'bare POST']);
function inferaTargets(pid: number, base: string, suffix: string): Record<string, { pid: number; target: Target }> {
  return {
    [`models${suffix}`]: { pid, target: { url: `${base}/v1/models`, headers: auth, status: 200 } },
    [`unknown route (404)${suffix}`]: { pid, target: { url: `${base}/v1/no-such-route`, headers: auth, status: 404 } },
    [`wrong key (401)${suffix}`]: { pid, target: { url: `${base}/v1/models`, headers: { authorization: 'Bearer sk-wrong' }, status: 401 } },
    [`bad body (400)${suffix}`]: {
      pid,
      target: {
        url: `${base}/v1/chat/completions`,
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: BAD_BODY,
        status: 400,
      },
    },
    // The same route with a body that passes validation whole (what a served request pays up to the
    // model), refused only after it: the bad body's 400 should cost no more than this.
    [`valid body, unknown model (400)${suffix}`]: {
      pid,
      target: {
        url: `${base}/v1/chat/completions`,
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'bench/no-such-model', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 16 }),
        status: 400,
      },
    },
  };
}
const only = values.only ? new RegExp(values.only) : undefined;
// Each answer is measured next to its baseline twin (bare, then a, a [baseline], b, b [baseline], ...;
// every other round the reverse): on a busy box the load drifts within a round, and a twin measured
// minutes later would carry that drift.
const own = inferaTargets(infera.child.pid!, infera.url, '');
const twins = baseline ? inferaTargets(baseline.child.pid!, baseline.url, ' [baseline]') : {};
const targets: Record<string, { pid: number; target: Target }> = Object.fromEntries(
  Object.entries({
    bare: { pid: bare.child.pid!, target: { url: `${bare.url}/`, status: 200 } },
    // The same headers and body as the bad-body target (the valid-body one is 60 bytes longer).
    'bare POST': {
      pid: barePost.child.pid!,
      target: { url: `${barePost.url}/`, method: 'POST' as const, headers: { ...auth, 'content-type': 'application/json' }, body: BAD_BODY, status: 400 },
    },
    ...Object.fromEntries(
      Object.entries(own).flatMap(([name, entry]) => [
        [name, entry],
        ...(twins[`${name} [baseline]`] ? [[`${name} [baseline]`, twins[`${name} [baseline]`]!] as const] : []),
      ]),
    ),
  }).filter(([name]) => BARES.has(name) || !only || only.test(name)),
);
const results: Record<string, Awaited<ReturnType<typeof measure>>[]> = Object.fromEntries(Object.keys(targets).map((name) => [name, []]));
const loads: number[] = [];
try {
  for (const { pid, target } of Object.values(targets)) await measure(pid, target); // warm-up
  for (let round = 0; round < rounds; round++) {
    loads.push(loadavg()[0]!);
    // Every other round in the reverse order: a target measured always at the same place in the round
    // (after the same neighbour, after the same idle time) carried a bias of its own, ~+10 µs for the
    // 404 behind the list (docs/BENCHMARKS.md, http7); reversed, each target and its twin swap places too.
    const order = Object.entries(targets);
    if (round % 2 === 1) order.reverse();
    for (const [name, { pid, target }] of order) results[name]!.push(await measure(pid, target));
  }
} finally {
  stopServers();
}

const summary = Object.fromEntries(
  Object.entries(results).map(([name, runs]) => [
    name,
    {
      rps: median(runs.map((r) => r.rps)),
      p50: median(runs.map((r) => r.p50)),
      p99: median(runs.map((r) => r.p99)),
      cpuPerRequestUs: median(runs.map((r) => r.cpuPerRequestUs)),
      meanLatencyUs: median(runs.map((r) => r.meanLatencyUs)),
      errors: runs.reduce((s, r) => s + r.errors, 0),
    },
  ]),
);
console.log(JSON.stringify({ duration, connections, rounds, loadAverages: loads, summary }, null, 2));
const base = summary.bare!;
const basePost = summary['bare POST']!;
const over = (value: number, of: number) => `${value - of >= 0 ? '+' : ''}${(value - of).toFixed(1)}`;
console.log(`load average per round: ${loads.map((l) => l.toFixed(1)).join(', ')}`);
console.log(
  `"over bare": over bare Node's GET that reads no body (${base.cpuPerRequestUs.toFixed(1)} µs). ` +
    `"over bare POST" (POST targets only): over bare Node's POST that reads and JSON.parses the same body and answers a 400 (${basePost.cpuPerRequestUs.toFixed(1)} µs).`,
);
console.log('| target | req/s | server CPU µs/request | over bare (GET) | over bare POST | one-client round trip µs | over bare (GET) | unexpected answers |');
console.log('|---|---|---|---|---|---|---|---|');
for (const [name, row] of Object.entries(summary))
  console.log(
    `| ${name} | ${row.rps.toFixed(0)} | ${row.cpuPerRequestUs.toFixed(1)} | ${name === 'bare' ? '—' : over(row.cpuPerRequestUs, base.cpuPerRequestUs)} | ` +
      `${isPost(name) && name !== 'bare POST' ? over(row.cpuPerRequestUs, basePost.cpuPerRequestUs) : '—'} | ` +
      `${row.meanLatencyUs.toFixed(0)} | ${name === 'bare' ? '—' : over(row.meanLatencyUs, base.meanLatencyUs)} | ${row.errors} |`,
  );

if (baseline) {
  // Per round, this build's CPU per request minus its twin's (measured next to each other), then the
  // median over rounds: steadier on a busy box than the difference of two medians.
  console.log('\n| target | this build over bare GET (µs) | baseline over bare GET (µs) | this build over bare POST | baseline over bare POST | this − baseline, median of rounds (µs) | ratio of CPU/request |');
  console.log('|---|---|---|---|---|---|---|');
  for (const name of Object.keys(own)) {
    const mine = results[name];
    const theirs = results[`${name} [baseline]`];
    if (!mine || !theirs) continue;
    const delta = median(mine.map((run, i) => run.cpuPerRequestUs - theirs[i]!.cpuPerRequestUs))!;
    const ratio = median(mine.map((run, i) => run.cpuPerRequestUs / theirs[i]!.cpuPerRequestUs))!;
    console.log(
      `| ${name} | ${over(summary[name]!.cpuPerRequestUs, base.cpuPerRequestUs)} | ${over(summary[`${name} [baseline]`]!.cpuPerRequestUs, base.cpuPerRequestUs)} | ` +
        (isPost(name)
          ? `${over(summary[name]!.cpuPerRequestUs, basePost.cpuPerRequestUs)} | ${over(summary[`${name} [baseline]`]!.cpuPerRequestUs, basePost.cpuPerRequestUs)} | `
          : '— | — | ') +
        `${delta >= 0 ? '+' : ''}${delta.toFixed(1)} | ${ratio.toFixed(2)} |`,
    );
  }
}
