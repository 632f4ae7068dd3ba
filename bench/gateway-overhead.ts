// What Infera adds in front of an upstream (issue 14, "Overhead"), against calling the upstream
// directly and against @portkey-ai/gateway, from one run on one box:
//   - a fake instant upstream (plain node:http, own process) answering chat JSON and SSE at once;
//   - Infera (`infera serve`, own process) with one model on engine openai-compatible pointing at it,
//     a stored API key of a priced account with rpm/tpm limits that never trip but are all checked, and
//     the ledger (SQLite) on: every request is authenticated, admitted, reserved, settled and recorded;
//   - the same Infera model on a second server with no key, limits or price ("infera-open"), to split
//     what the platform costs from the rest of the path;
//   - Portkey's gateway (own process, its npm build) with provider openai and custom host = the upstream;
//   - "node-proxy": the floor under any gateway on this box, a bare node:http server that forwards each
//     request through an undici Pool (what Infera uses) and streams the answer back, with nothing else:
//     two more loopback hops and a Node HTTP server and client, no framework, no checks, no ledger.
// Measured, targets in rounds that alternate between targets (so a burst of load from other tenants of
// the box hits all of them alike):
//   - latency: one keep-alive connection, requests back to back, each timed with hrtime (µs; autocannon's
//     histogram is whole milliseconds) → p50 and p99, and added = target − direct;
//   - throughput: autocannon, 50 connections → req/s;
//   - streaming first byte: one connection, `stream: true`, time to the first body byte → p50 / p99.
// Usage: node --import tsx bench/gateway-overhead.ts [--seconds 4] [--rounds 3] [--connections 50] [--warm 5000]
import { fakeUpstreamSource, spawnReady } from './http-bench-common.ts';
//   [--only direct,node-proxy,infera,infera-open,portkey,infera-before]
//   [--warm N]: one-connection requests sent to each target before the rounds (default 5000).
//   [--compare DIR]: DIR holds another build (DIR/bin/infera.js + DIR/dist, e.g. a copy of an earlier
//     commit's): it serves the priced config as a fifth target, "infera-before", so before and after
//     are measured in the same rounds under the same load.
//   [--profile DIR]: the Infera servers run with --cpu-prof and write their profiles to DIR at exit.
//   [--alloc DIR]: after the rounds, bytes allocated per request in each Infera server (V8's sampling heap
//     profiler, bench/alloc-profile-hook.mjs), over --alloc-requests requests on one connection, non-streamed
//     then streamed; the profiles stay in DIR for bench/heap-profile-summary.ts.
//   [--node-infera="FLAGS"]: node flags for the `infera` target's server only, e.g. "--trace-opt --trace-deopt
//     --trace-gc"; with BENCH_DEBUG=1 its output is copied to stderr between "=== infera rN start/end" marks
//     (bench/v8-trace-rounds.ts splits it by window; the other servers get no flags, so their output holds none).
//   [--tail DIR]: what the slow one-connection requests overlapped. The Infera servers run with
//     bench/gateway-tail-hook.mjs (DIR/NAME.txt, DIR/NAME.txt.gc at exit), every timed request carries
//     x-bench-seq, and DIR/NAME.client.txt holds "seq round client_us" per one-connection request of every
//     target, so the client's time (the bench's figure) can be joined with the server's record of it.
import autocannon from 'autocannon';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Client } from 'undici';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '4' },
    rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '50' },
    only: { type: 'string', default: 'direct,node-proxy,infera,infera-open,portkey,infera-before' },
    compare: { type: 'string' },
    profile: { type: 'string' },
    alloc: { type: 'string' },
    tail: { type: 'string' },
    'alloc-requests': { type: 'string', default: '2000' },
    warm: { type: 'string', default: '5000' },
    'node-infera': { type: 'string', default: '' },
  },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const connections = Number(values.connections);
const warmRequests = Number(values.warm);
const MODEL = 'bench/echo';

const upstreamSource = fakeUpstreamSource(MODEL);

// The bare proxy: headers and body go through as they came, the answer's status, content-type and bytes
// come back as they arrive (SSE included), over the same undici Pool dispatch() Infera's upstreams use.
const nodeProxySource = `
const { Pool } = require('undici');
const pool = new Pool(process.env.UPSTREAM, { connections: 64, keepAliveTimeout: 30000 });
require('node:http').createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    pool.dispatch({ method: req.method, path: req.url, headers: { 'content-type': 'application/json' }, body: Buffer.concat(chunks) }, {
      onConnect() {},
      onHeaders(status, raw) {
        let type = 'application/json';
        for (let i = 0; i + 1 < raw.length; i += 2) if (String(raw[i]).toLowerCase() === 'content-type') type = String(raw[i + 1]);
        res.writeHead(status, { 'content-type': type });
        return true;
      },
      onData(chunk) { res.write(chunk); return true; },
      onComplete() { res.end(); },
      onError(error) { if (!res.headersSent) res.writeHead(502); res.end(String(error)); },
    });
  });
}).listen(0, '127.0.0.1', function () { process.stdout.write('port ' + this.address().port + '\\n'); });`;

const start = spawnReady;

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

interface Target {
  name: string;
  /** The gateway's process (none for direct): its CPU time per request is the load-independent cost. */
  pid?: number;
  origin: string;
  path: string;
  headers: Record<string, string>;
  /** Why streaming is not measured through it, when it cannot stream this answer. */
  noStream?: string;
}

const body = JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'Say hello.' }], max_tokens: 16 });
const streamBody = JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'Say hello.' }], max_tokens: 16, stream: true });

let seq = 0;
/** Back-to-back requests on one keep-alive connection for `ms`; µs per request (to the end of the body, or its first byte). */
async function timed(target: Target, payload: string, ms: number, firstByte: boolean, seqs?: number[]): Promise<number[]> {
  const client = new Client(target.origin, { pipelining: 1 });
  const times: number[] = [];
  const headers: Record<string, string> = { ...target.headers, 'content-type': 'application/json' };
  const end = performance.now() + ms;
  try {
    while (performance.now() < end) {
      if (seqs) {
        seqs.push(++seq);
        headers['x-bench-seq'] = String(seq);
      }
      const t0 = process.hrtime.bigint();
      const response = await client.request({ method: 'POST', path: target.path, headers, body: payload });
      if (response.statusCode !== 200) throw new Error(`${target.name}: ${response.statusCode} ${await response.body.text()}`);
      let first: bigint | undefined;
      for await (const _chunk of response.body) first ??= process.hrtime.bigint();
      const t1 = firstByte ? first! : process.hrtime.bigint();
      times.push(Number(t1 - t0) / 1000);
    }
  } finally {
    await client.close();
  }
  return times;
}

/** User + system CPU of a process in µs (Linux /proc; clock ticks of 10 ms, so only long runs are precise). */
function cpuUs(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

async function throughput(target: Target): Promise<{ rps: number; errors: number; cpuUsPerRequest: number }> {
  const cpu0 = cpuUs(target.pid);
  const result = await autocannon({
    url: `${target.origin}${target.path}`,
    method: 'POST',
    connections,
    duration: seconds,
    headers: { ...target.headers, 'content-type': 'application/json' },
    body,
  });
  return {
    rps: result.requests.average,
    errors: result.errors + result.non2xx + result.timeouts,
    cpuUsPerRequest: (cpuUs(target.pid) - cpu0) / result.requests.total,
  };
}

/** `n` requests back to back on one connection. */
async function send(target: Target, payload: string, n: number): Promise<void> {
  const client = new Client(target.origin, { pipelining: 1 });
  const headers = { ...target.headers, 'content-type': 'application/json' };
  try {
    for (let i = 0; i < n; i++) {
      const response = await client.request({ method: 'POST', path: target.path, headers, body: payload });
      if (response.statusCode !== 200) throw new Error(`${target.name}: ${response.statusCode} ${await response.body.text()}`);
      await response.body.dump();
    }
  } finally {
    await client.close();
  }
}

/** Bytes the target's process allocated per request while it answered `n` of them (--alloc's hook toggles the sampling on SIGUSR2). */
async function allocated(target: Target, payload: string, n: number, dir: string): Promise<number> {
  const before = new Set(readdirSync(dir));
  process.kill(target.pid!, 'SIGUSR2');
  await new Promise((resolve) => setTimeout(resolve, 100));
  await send(target, payload, n);
  process.kill(target.pid!, 'SIGUSR2');
  for (let waited = 0; waited < 10_000; waited += 50) {
    const file = readdirSync(dir).find((name) => !before.has(name) && name.startsWith(`alloc-${target.pid}-`));
    if (file) {
      // Written in one call, but wait for it to parse.
      try {
        const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as { head: HeapNode };
        renameSync(join(dir, file), join(dir, `${target.name}-${payload === body ? 'json' : 'stream'}-${n}.heapprofile`));
        const sum = (node: HeapNode): number => node.selfSize + node.children.reduce((a, child) => a + sum(child), 0);
        return Math.round(sum(profile.head) / n);
      } catch {
        // not complete yet
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`${target.name}: no heap profile in ${dir}`);
}
interface HeapNode {
  selfSize: number;
  children: HeapNode[];
}

const pct = (xs: number[], p: number) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
};
const median = (xs: number[]) => pct(xs, 50);
const round1 = (x: number) => Math.round(x * 10) / 10;

const dir = mkdtempSync(join(tmpdir(), 'infera-bench-gateway-'));
const children: ChildProcess[] = [];
try {
  const upstream = await start(process.execPath, ['-e', upstreamSource], {}, /port (\d+)/);
  children.push(upstream.child);
  const upstreamUrl = `http://127.0.0.1:${upstream.match[1]}`;

  // Limits high enough never to trip, but every dimension is counted; a price, so each request
  // reserves against the balance and settles its cost with its ledger row.
  const profileArgs = [
    ...(values.profile ? ['--cpu-prof', `--cpu-prof-dir=${values.profile}`] : []),
    ...(values.alloc ? ['--import', new URL('./alloc-profile-hook.mjs', import.meta.url).pathname] : []),
  ];
  const allocEnv = values.alloc ? { INFERA_BENCH_ALLOC_DIR: values.alloc } : {};
  if (values.tail) {
    mkdirSync(values.tail, { recursive: true });
    profileArgs.push('--import', new URL('./gateway-tail-hook.mjs', import.meta.url).pathname);
  }
  const tailEnv = (name: string) => (values.tail ? { GATEWAY_TAIL_FILE: join(values.tail, `${name}.txt`) } : {});
  const clientLines: Record<string, string[]> = {};
  const priced = async (name: string, bin: string, nodeArgs: string[] = []) => {
    const dataDir = join(dir, name);
    const configPath = join(dir, `${name}.yaml`);
    writeFileSync(
      configPath,
      [
        // maxRequestsPerSocket 0: past the default 1000 requests on one connection Node answers 503 (after
        // `Connection: close`, which autocannon ignores); the bench measures the gateway, not that cap.
        'server: { host: 127.0.0.1, port: 0, maxRequestsPerSocket: 0 }',
        `storage: { dataDir: ${dataDir} }`,
        'models:',
        `  - { id: ${MODEL}, type: chat, engine: openai-compatible, upstream: { baseUrl: ${upstreamUrl}/v1, dialect: openai, contextSize: 4096 } }`,
        'platform:',
        '  limits: { defaults: { chat: { rpm: 100000000, tpm: 1000000000000, rpd: 100000000 } } }',
        `  pricing: { ${MODEL}: { inputPerMillion: 1, outputPerMillion: 2 } }`,
        '',
      ].join('\n'),
    );
    const cli = (...args: string[]) => execFileSync(process.execPath, [bin, '--config', configPath, ...args], { encoding: 'utf8' });
    const secret = (JSON.parse(cli('keys', 'create', '--name', 'bench', '--account', 'bench', '--limits', 'rpm=100000000', '--json')) as { secret: string }).secret;
    cli('accounts', 'topup', 'bench', '1000000');
    const server = await start(process.execPath, [...profileArgs, ...nodeArgs, bin, '--config', configPath, 'serve'], { ...allocEnv, ...tailEnv(name) }, /serving the SiliconFlow \/ OpenAI API at (http:\/\/\S+)\/v1/);
    children.push(server.child);
    return { server, secret };
  };
  const wanted = values.only!.split(',');
  const { server: infera, secret: key } = await priced('infera', 'bin/infera.js', values['node-infera']!.split(' ').filter(Boolean));
  const before = values.compare && wanted.includes('infera-before') ? await priced('infera-before', join(values.compare, 'bin/infera.js')) : undefined;
  // The same model on a second Infera with no key, limit or price (keyless on loopback; its ledger still
  // writes a row per request): the difference to `infera` is what auth, limits and the balance cost.
  const openDir = join(dir, 'open');
  const openConfig = join(dir, 'open.yaml');
  writeFileSync(
    openConfig,
    [
      // maxRequestsPerSocket 0: past the default 1000 requests on one connection Node answers 503 (after
      // `Connection: close`, which autocannon ignores); the bench measures the gateway, not that cap.
      'server: { host: 127.0.0.1, port: 0, maxRequestsPerSocket: 0 }',
      `storage: { dataDir: ${openDir} }`,
      'models:',
      `  - { id: ${MODEL}, type: chat, engine: openai-compatible, upstream: { baseUrl: ${upstreamUrl}/v1, dialect: openai, contextSize: 4096 } }`,
      '',
    ].join('\n'),
  );
  const open = await start(process.execPath, [...profileArgs, 'bin/infera.js', '--config', openConfig, 'serve'], { INFERA_API_KEY: '', ...allocEnv, ...tailEnv('infera-open') }, /serving the SiliconFlow \/ OpenAI API at (http:\/\/\S+)\/v1/);
  children.push(open.child);

  const nodeProxy = wanted.includes('node-proxy') ? await start(process.execPath, ['-e', nodeProxySource], { UPSTREAM: upstreamUrl }, /port (\d+)/) : undefined;
  if (nodeProxy) children.push(nodeProxy.child);

  const portkeyPort = await freePort();
  // --headless: no UI; Portkey refuses private custom hosts unless trusted (SSRF guard), so the loopback upstream is.
  const portkey = await start(
    process.execPath,
    ['node_modules/@portkey-ai/gateway/build/start-server.js', `--port=${portkeyPort}`, '--headless'],
    { NODE_ENV: 'production', TRUSTED_CUSTOM_HOSTS: '127.0.0.1,localhost' },
    /Ready for connections/,
  );
  children.push(portkey.child);

  const all: Target[] = [
    { name: 'direct', pid: upstream.child.pid, origin: upstreamUrl, path: '/v1/chat/completions', headers: {} },
    ...(nodeProxy ? [{ name: 'node-proxy', pid: nodeProxy.child.pid, origin: `http://127.0.0.1:${nodeProxy.match[1]}`, path: '/v1/chat/completions', headers: {} }] : []),
    { name: 'infera', pid: infera.child.pid, origin: infera.match[1]!, path: '/v1/chat/completions', headers: { authorization: `Bearer ${key}` } },
    ...(before
      ? [{ name: 'infera-before', pid: before.server.child.pid, origin: before.server.match[1]!, path: '/v1/chat/completions', headers: { authorization: `Bearer ${before.secret}` } }]
      : []),
    { name: 'infera-open', pid: open.child.pid, origin: open.match[1]!, path: '/v1/chat/completions', headers: {} },
    {
      name: 'portkey',
      pid: portkey.child.pid,
      origin: `http://127.0.0.1:${portkeyPort}`,
      path: '/v1/chat/completions',
      headers: { authorization: 'Bearer sk-unused', 'x-portkey-provider': 'openai', 'x-portkey-custom-host': `${upstreamUrl}/v1` },
    },
  ];
  const targets = all.filter((target) => wanted.includes(target.name));

  // Portkey 1.15.2 on Node 20 answers every streamed chat 500 ("TypeError: immutable" in
  // ResponseService.updateHeaders: it appends x-portkey-* headers to the fetched upstream Response;
  // Portkey-AI/gateway#1389, #1550). Its streaming is then not measured, and the report says why.
  for (const target of targets) {
    const probe = await fetch(`${target.origin}${target.path}`, { method: 'POST', headers: { ...target.headers, 'content-type': 'application/json' }, body: streamBody });
    const text = await probe.text();
    if (probe.status !== 200) target.noStream = `stream: true answered ${probe.status} ${text.slice(0, 200)}`;
  }

  // Warm-up: JIT, pools, the key cache, SQLite pages. Counted in requests, not seconds: V8 optimises a
  // function called once per request only after thousands of calls, and at ~1,000 requests a second on
  // one connection 1.5 s left Infera's path half in baseline code — the first round's one-connection
  // CPU per request was 2,071 µs against 626 in the next (infera-open, load 8–9, 2026-12-07 03:37).
  const mark = (text: string) => process.env.BENCH_DEBUG && console.error(`=== ${text}`);
  for (const target of targets) {
    await send(target, body, warmRequests);
    if (!target.noStream) await timed(target, streamBody, 500, true);
    await autocannon({ url: `${target.origin}${target.path}`, method: 'POST', connections, duration: 1, headers: { ...target.headers, 'content-type': 'application/json' }, body });
  }

  mark('warm-up end');
  const loads: number[][] = [loadavg()];
  const lat: Record<string, { p50: number[]; p99: number[]; fb50: number[]; fb99: number[]; rps: number[]; cpu: number[]; cpu1: number[]; errors: number }> = {};
  for (const target of targets) lat[target.name] = { p50: [], p99: [], fb50: [], fb99: [], rps: [], cpu: [], cpu1: [], errors: 0 };
  for (let round = 0; round < rounds; round++) {
    for (const target of targets) {
      // CPU per request on one connection too: nothing shares a commit or a wake-up there, and it is
      // the floor under the single-connection latency (p50 cannot be below it plus the two extra hops).
      mark(`${target.name} r${round + 1} start`);
      const cpuBefore = cpuUs(target.pid);
      const seqs: number[] = [];
      const times = await timed(target, body, seconds * 1000, false, values.tail ? seqs : undefined);
      mark(`${target.name} r${round + 1} end`);
      if (values.tail) {
        clientLines[target.name] ??= [];
        clientLines[target.name]!.push(...times.map((t, i) => `${seqs[i]} ${round + 1} ${t.toFixed(1)}`));
      }
      const cpuOneConnection = (cpuUs(target.pid) - cpuBefore) / times.length;
      const first = target.noStream ? [Number.NaN] : await timed(target, streamBody, (seconds * 1000) / 2, true);
      const { rps, errors, cpuUsPerRequest } = await throughput(target);
      const row = lat[target.name]!;
      row.p50.push(pct(times, 50));
      row.p99.push(pct(times, 99));
      row.fb50.push(pct(first, 50));
      row.fb99.push(pct(first, 99));
      row.rps.push(rps);
      row.cpu.push(cpuUsPerRequest);
      row.cpu1.push(cpuOneConnection);
      row.errors += errors;
      console.error(
        `round ${round + 1} ${target.name}: p50 ${pct(times, 50).toFixed(0)} µs, p99 ${pct(times, 99).toFixed(0)} µs, first byte p50 ${pct(first, 50).toFixed(0)} µs, ${rps.toFixed(0)} req/s, ${cpuUsPerRequest.toFixed(0)} µs CPU/request (${cpuOneConnection.toFixed(0)} on one connection), load ${loadavg()[0]!.toFixed(2)}`,
      );
    }
    loads.push(loadavg());
  }

  if (values.tail) for (const [name, lines] of Object.entries(clientLines)) writeFileSync(join(values.tail, `${name}.client.txt`), `${lines.join('\n')}\n`);

  // After the rounds: the sampling profiler slows the process it runs in, so it never overlaps a timing.
  const allocBytesPerRequest: Record<string, { json: number; stream?: number }> = {};
  if (values.alloc) {
    mkdirSync(values.alloc, { recursive: true });
    const n = Number(values['alloc-requests']);
    for (const target of targets.filter((t) => t.name.startsWith('infera'))) {
      const json = await allocated(target, body, n, values.alloc);
      const stream = target.noStream ? undefined : await allocated(target, streamBody, n, values.alloc);
      allocBytesPerRequest[target.name] = { json, stream };
      console.error(`allocated per request, ${target.name}: ${json} B (JSON), ${stream ?? '-'} B (stream)`);
    }
  }

  const summary = Object.fromEntries(
    Object.entries(lat).map(([name, row]) => [
      name,
      {
        p50Us: round1(median(row.p50)),
        p99Us: round1(median(row.p99)),
        firstByteP50Us: round1(median(row.fb50)),
        firstByteP99Us: round1(median(row.fb99)),
        rps: Math.round(median(row.rps)),
        cpuUsPerRequest: Math.round(median(row.cpu)),
        cpuUsPerRequestOneConnection: Math.round(median(row.cpu1)),
        errors: row.errors,
      },
    ]),
  );
  const direct = summary.direct;
  const added = (name: string) =>
    direct && summary[name]
      ? {
          p50Us: round1(summary[name]!.p50Us - direct.p50Us),
          p99Us: round1(summary[name]!.p99Us - direct.p99Us),
          firstByteP50Us: round1(summary[name]!.firstByteP50Us - direct.firstByteP50Us),
          firstByteP99Us: round1(summary[name]!.firstByteP99Us - direct.firstByteP99Us),
        }
      : undefined;
  const report = {
    when: new Date().toISOString(),
    node: process.version,
    seconds,
    rounds,
    connections,
    loadAverage1m: loads.map((l) => +l[0]!.toFixed(2)),
    summary,
    addedOverDirect: {
      'node-proxy': added('node-proxy'),
      infera: added('infera'),
      'infera-before': added('infera-before'),
      'infera-open': added('infera-open'),
      portkey: added('portkey'),
    },
    notStreamed: Object.fromEntries(targets.filter((t) => t.noStream).map((t) => [t.name, t.noStream])),
    ...(values.alloc ? { allocBytesPerRequest } : {}),
    inferaOverPortkeyRps: summary.infera && summary.portkey ? +(summary.infera.rps / summary.portkey.rps).toFixed(2) : undefined,
    targets: { p50AddedUs: 300, p99AddedUs: 2000, rpsOverPortkey: 5, firstByteAddedUs: 1000 },
  };
  console.log(JSON.stringify(report, null, 2));
} finally {
  for (const child of children) child.kill('SIGTERM');
  await Promise.all(children.map((child) => new Promise((resolve) => (child.exitCode !== null ? resolve(null) : child.once('exit', resolve)))));
  rmSync(dir, { recursive: true, force: true });
}
