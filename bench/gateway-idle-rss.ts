// RSS of an idle gateway server (the priced config of gateway-one.ts): after start-up, then after each burst of
// N one-connection chat requests and IDLE_S seconds (default 6) of quiet. LOG_LEVEL=debug with BENCH_DEBUG=1
// shows the server's releases.
// Usage: node --import tsx bench/gateway-idle-rss.ts DIR [N ...]     e.g. /work/base 300 3000
import { fakeUpstreamSource, spawnReady } from './http-bench-common.ts';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'undici';
const MODEL = 'bench/echo';
const [root, ...counts] = process.argv.slice(2);
const dir = mkdtempSync(join(tmpdir(), 'gwt-rss-'));
const up = await spawnReady(process.execPath, ['-e', fakeUpstreamSource(MODEL)], {}, /port (\d+)/);
const configPath = join(dir, 'c.yaml');
writeFileSync(configPath, [
  `server: { host: 127.0.0.1, port: 0, maxRequestsPerSocket: 0${process.env.LOG_LEVEL ? `, logLevel: ${process.env.LOG_LEVEL}` : ''} }`, `storage: { dataDir: ${join(dir, 'd')} }`, 'models:',
  `  - { id: ${MODEL}, type: chat, engine: openai-compatible, upstream: { baseUrl: http://127.0.0.1:${up.match[1]}/v1, dialect: openai, contextSize: 4096 } }`,
  'platform:', '  limits: { defaults: { chat: { rpm: 100000000, tpm: 1000000000000, rpd: 100000000 } } }', `  pricing: { ${MODEL}: { inputPerMillion: 1, outputPerMillion: 2 } }`, ''].join('\n'));
const bin = join(root!, 'bin/infera.js');
const cli = (...a: string[]) => execFileSync(process.execPath, [bin, '--config', configPath, ...a], { encoding: 'utf8' });
const secret = (JSON.parse(cli('keys', 'create', '--name', 'b', '--account', 'b', '--limits', 'rpm=100000000', '--json')) as { secret: string }).secret;
cli('accounts', 'topup', 'b', '1000000');
const server = await spawnReady(process.execPath, [bin, '--config', configPath, 'serve'], {}, /serving the SiliconFlow \/ OpenAI API at (http:\/\/\S+)\/v1/);
const rss = () => { const s = readFileSync(`/proc/${server.child.pid}/status`, 'utf8'); return ['VmRSS', 'RssAnon'].map((k) => `${k} ${(Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)![1]) / 1024).toFixed(1)}`).join(' '); };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
await sleep(8000);
const out = [`idle after start: ${rss()}`];
const body = JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'Say hello.' }], max_tokens: 16 });
for (const n of counts.map(Number)) {
  const client = new Client(server.match[1]!, { pipelining: 1 });
  for (let i = 0; i < n; i++) { const r = await client.request({ method: 'POST', path: '/v1/chat/completions', headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json' }, body }); await r.body.dump(); }
  await client.close();
  await sleep(Number(process.env.IDLE_S ?? 6) * 1000);
  out.push(`+${n} requests, idle ${process.env.IDLE_S ?? 6} s: ${rss()}`);
}
console.log(root, out.join(' | '));
server.child.kill(); up.child.kill();
