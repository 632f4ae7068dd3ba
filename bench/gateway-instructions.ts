// The gateway's one-connection cost in instructions, not CPU time: on a shared 2-vCPU box the CPU time
// per request of one server moves ±20–30 % from one 2-s round to the next (other tenants' cache and
// SMT pressure), far more than a change worth 5–10 %; an instruction count does not. Each Infera build
// (the priced config of bench/gateway-one.ts: key with limits, price, SQLite ledger) runs under
// callgrind with instrumentation off for --warm requests (V8 optimises the path by call counts, so the
// warm-up is the same as at full speed), then on for --requests requests back to back on one keep-alive
// connection; the figure is instructions per request over every thread of the server (main thread
// alone too), less the server's instructions while idle for as long (its timers' work, which goes by
// the clock). Builds run one after another; run them twice, in both orders: what is left still moves a
// few % with the load.
// Needs valgrind (callgrind_control on PATH). Slow: ~10-20 min for two builds at the defaults.
// --keep leaves the callgrind files (~150 MB a build) for callgrind_annotate; the directory is printed.
// --node "FLAGS": node flags for the servers, e.g. "--perf-basic-prof" (/tmp/perf-PID.map names the JIT code
// addresses callgrind_annotate prints as ???).
// Usage: node --import tsx bench/gateway-instructions.ts [--warm 6000] [--requests 500] [--keep] [--node=FLAGS] NAME=DIR ...
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Client } from 'undici';
import { fakeUpstreamSource, spawnReady } from './http-bench-common.ts';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { warm: { type: 'string', default: '6000' }, requests: { type: 'string', default: '500' }, keep: { type: 'boolean' }, node: { type: 'string', default: '' } },
});
const MODEL = 'bench/echo';
const body = JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'Say hello.' }], max_tokens: 16 });

async function send(origin: string, authorization: string, n: number): Promise<void> {
  const client = new Client(origin, { pipelining: 1, headersTimeout: 600_000, bodyTimeout: 600_000 });
  try {
    for (let i = 0; i < n; i++) {
      const response = await client.request({ method: 'POST', path: '/v1/chat/completions', headers: { authorization, 'content-type': 'application/json' }, body });
      if (response.statusCode !== 200) throw new Error(`${response.statusCode} ${await response.body.text()}`);
      await response.body.dump();
    }
  } finally {
    await client.close();
  }
}

/** Instructions (Ir) of dump `dump` (1, 2, ...) of `pid` in a callgrind output directory: every thread, and the main one. */
function instructions(dir: string, pid: number, dump: number): { total: number; main: number } {
  let total = 0;
  let main = 0;
  for (const file of readdirSync(dir).filter((name) => name.startsWith(`callgrind.out.${pid}.${dump}-`))) {
    const text = readFileSync(join(dir, file), 'utf8');
    const summary = /^summary:\s+(\d+)/m.exec(text) ?? /^totals:\s+(\d+)/m.exec(text);
    const ir = summary ? Number(summary[1]) : 0;
    total += ir;
    // --separate-threads=yes names the first (main) thread's file ...-01.
    if (/-01$/.test(file)) main += ir;
  }
  return { total, main };
}

const dir = mkdtempSync(join(tmpdir(), 'infera-gw-instr-'));
const upstream = await spawnReady(process.execPath, ['-e', fakeUpstreamSource(MODEL)], {}, /port (\d+)/);
try {
  const upstreamUrl = `http://127.0.0.1:${upstream.match[1]}`;
  for (const spec of positionals) {
    const [name, root] = spec.split('=') as [string, string];
    const configPath = join(dir, `${name}.yaml`);
    writeFileSync(
      configPath,
      `${[
        // Health checks far apart: under valgrind a probe may be slower than its timeout.
        'server: { host: 127.0.0.1, port: 0, maxRequestsPerSocket: 0 }',
        `storage: { dataDir: ${join(dir, name)} }`,
        'models:',
        `  - { id: ${MODEL}, type: chat, engine: openai-compatible, upstream: { baseUrl: ${upstreamUrl}/v1, dialect: openai, contextSize: 4096 } }`,
        'platform:',
        '  limits: { defaults: { chat: { rpm: 100000000, tpm: 1000000000000, rpd: 100000000 } } }',
        `  pricing: { ${MODEL}: { inputPerMillion: 1, outputPerMillion: 2 } }`,
      ].join('\n')}\n`,
    );
    const bin = join(root, 'bin/infera.js');
    const cli = (...args: string[]) => execFileSync(process.execPath, [bin, '--config', configPath, ...args], { encoding: 'utf8' });
    const authorization = `Bearer ${(JSON.parse(cli('keys', 'create', '--name', 'b', '--account', 'b', '--limits', 'rpm=100000000', '--json')) as { secret: string }).secret}`;
    cli('accounts', 'topup', 'b', '1000000');
    const out = join(dir, `cg-${name}`);
    execFileSync('mkdir', ['-p', out]);
    const child = spawn(
      'valgrind',
      ['--tool=callgrind', '--instr-atstart=no', '--separate-threads=yes', '--smc-check=all-non-file', `--callgrind-out-file=${out}/callgrind.out.%p`, process.execPath, ...values.node!.split(' ').filter(Boolean), bin, '--config', configPath, 'serve'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const origin = await new Promise<string>((resolve, reject) => {
      let seen = '';
      const look = (chunk: Buffer) => {
        if (seen.length < 256 * 1024) seen += chunk;
        const match = /serving the SiliconFlow \/ OpenAI API at (http:\/\/\S+)\/v1/.exec(seen);
        if (match) resolve(match[1]!);
      };
      child.stdout!.on('data', look);
      child.stderr!.on('data', look);
      child.once('exit', (code) => reject(new Error(`server exited ${code}: ${seen.slice(-2000)}`)));
    });
    const pid = child.pid!;
    const t0 = Date.now();
    await send(origin, authorization, Number(values.warm));
    execFileSync('callgrind_control', ['-i', 'on', String(pid)]);
    const t1 = Date.now();
    await send(origin, authorization, Number(values.requests));
    execFileSync('callgrind_control', ['-d', String(pid)]);
    const t2 = Date.now();
    // The server's work that goes by the clock, not by request (timers: the claim's poll, health checks,
    // heartbeats, key refreshes): under valgrind a request takes tens of ms, more or less with the box's
    // load, so this work per request is large and varies. Measured idle for as long as the requests took,
    // and taken out at its rate.
    await new Promise((resolve) => setTimeout(resolve, t2 - t1));
    execFileSync('callgrind_control', ['-d', String(pid)]);
    const t3 = Date.now();
    execFileSync('callgrind_control', ['-i', 'off', String(pid)]);
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    const busy = instructions(out, pid, 1);
    const idle = instructions(out, pid, 2);
    const scale = (t2 - t1) / (t3 - t2);
    const n = Number(values.requests);
    const per = (busyIr: number, idleIr: number) => ((busyIr - idleIr * scale) / n / 1000).toFixed(1);
    console.log(
      `${name}: ${per(busy.total, idle.total)} k instructions/request (main thread ${per(busy.main, idle.main)} k; before taking out the idle rate ${(busy.main / n / 1000).toFixed(1)} k, idle ${((idle.main * scale) / n / 1000).toFixed(1)} k) over ${n} requests after ${values.warm}; warm-up ${((t1 - t0) / 1000).toFixed(0)} s, measured ${((t2 - t1) / 1000).toFixed(0)} s, load ${loadavg()[0]!.toFixed(2)}`,
    );
  }
} finally {
  upstream.child.kill();
  if (values.keep) console.log(`callgrind files under ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
}
