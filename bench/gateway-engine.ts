// The engine's share of bench/gateway-overhead's Infera figure: engine openai-compatible alone
// (checkPrompt + doGenerate: building the upstream body, the undici keep-alive request, parsing and
// normalising the answer), in-process against the same kind of fake instant upstream, without HTTP
// serving, auth, limits or the ledger. CPU µs and wall µs per call, `--concurrency` calls in flight.
// Usage: node --import tsx bench/gateway-engine.ts [--calls 5000] [--concurrency 16] [--rounds 3]
import { spawn } from 'node:child_process';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { openaiCompatibleModelSchema } from '../src/engines/openai-compatible/config.ts';
import { loadRemoteModel } from '../src/engines/openai-compatible/load.ts';
import type { EngineResources } from '../src/engines/resources.ts';
import { createLogger } from '../src/observability/logger.ts';
import type { ChatCallOptions, ChatModel } from '../src/spec/index.ts';

const { values } = parseArgs({
  options: { calls: { type: 'string', default: '5000' }, concurrency: { type: 'string', default: '16' }, rounds: { type: 'string', default: '3' } },
});
const calls = Number(values.calls);
const concurrency = Number(values.concurrency);

const upstreamSource = `
const answer = JSON.stringify({ id: 'c', object: 'chat.completion', created: 1, model: 'bench/echo',
  choices: [{ index: 0, message: { role: 'assistant', content: 'Hello there!' }, finish_reason: 'stop' }],
  usage: { prompt_tokens: 9, completion_tokens: 3, total_tokens: 12 } });
require('node:http').createServer((req, res) => { req.resume(); req.on('end', () => { res.writeHead(200, { 'content-type': 'application/json' }); res.end(answer); }); })
  .listen(0, '127.0.0.1', function () { process.stdout.write('port ' + this.address().port + '\\n'); });`;
const upstream = spawn(process.execPath, ['-e', upstreamSource], { stdio: ['ignore', 'pipe', 'inherit'] });
const port = await new Promise<string>((resolve) => {
  let seen = '';
  upstream.stdout!.on('data', (chunk) => {
    seen += chunk;
    const match = /port (\d+)/.exec(seen);
    if (match) resolve(match[1]!);
  });
});

const config = openaiCompatibleModelSchema.parse({
  id: 'bench/echo',
  type: 'chat',
  engine: 'openai-compatible',
  upstream: { baseUrl: `http://127.0.0.1:${port}/v1`, dialect: 'openai', contextSize: 4096 },
});
const shared = new Map<string, unknown>();
const resources = {
  get: (key: string, make: () => unknown) => {
    if (!shared.has(key)) shared.set(key, make());
    return shared.get(key);
  },
} as unknown as EngineResources;
const loaded = await loadRemoteModel(config, { logger: createLogger('silent'), resources, signal: new AbortController().signal });
const model = loaded.model as ChatModel;
const options = { messages: [{ role: 'user', content: 'Say hello.' }], maxTokens: 16, sampling: {}, thinking: {} } as unknown as Omit<ChatCallOptions, 'signal'>;

async function round(total: number) {
  let issued = 0;
  const cpu = process.cpuUsage();
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (issued++ < total) {
        const signal = new AbortController().signal;
        await model.checkPrompt({ ...options, signal });
        await model.doGenerate({ ...options, signal });
      }
    }),
  );
  const used = process.cpuUsage(cpu);
  return { cpuUsPerCall: +((used.user + used.system) / total).toFixed(1), wallUsPerCall: +(((performance.now() - started) * 1000) / total).toFixed(1), load: +loadavg()[0]!.toFixed(2) };
}

try {
  await round(Math.min(calls, 2000)); // warm-up: JIT, the pool's connections
  for (let r = 0; r < Number(values.rounds); r++) console.log(JSON.stringify(await round(calls)));
} finally {
  upstream.kill();
}
process.exit(0);
