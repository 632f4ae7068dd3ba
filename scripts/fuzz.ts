// The full fuzz suite: ≥ 10,000 seeded bad requests across every route against a real server (the
// tiny models, keyless, with an admin key so /admin is fuzzed too), reporting answers by status, time,
// and every rule broken: no crash, no hang, no answer >= 500, every 4xx in OpenAI's error shape.
// The reduced form runs in `npm test` (test/fuzz.test.ts).
// Usage: node --import tsx scripts/fuzz.ts [--count 10000] [--seed 13] [--concurrency 4] [--timeout-ms 30000]
import { byStatus, fuzzRequests, runFuzz } from '../test/helpers/fuzz.ts';
import { startTestServer } from '../test/helpers/server.ts';

const args = process.argv.slice(2);
const flag = (name: string, fallback: number) => {
  const at = args.indexOf(`--${name}`);
  return at >= 0 ? Number(args[at + 1]) : fallback;
};
const count = flag('count', 10_000);
const seed = flag('seed', 13);
const concurrency = flag('concurrency', 4);
const timeoutMs = flag('timeout-ms', 30_000);
const adminKey = 'fuzz-admin-key-0123456789';

const server = await startTestServer({ config: { server: { adminKey } } });
const started = performance.now();
const answers = await runFuzz(server.url, fuzzRequests(seed, count, { adminKey }), { concurrency, timeoutMs });
const seconds = (performance.now() - started) / 1000;
const health = await fetch(`${server.url}/health`).then((response) => response.status).catch(() => 0);
await server.close();

const problems = answers.filter((answer) => answer.problem);
const kinds: Record<string, number> = {};
for (const answer of answers) kinds[answer.request.kind] = (kinds[answer.request.kind] ?? 0) + 1;
const slowest = answers.reduce((max, answer) => Math.max(max, answer.ms), 0);
console.log(
  JSON.stringify(
    {
      command: `node --import tsx scripts/fuzz.ts --count ${count} --seed ${seed} --concurrency ${concurrency} --timeout-ms ${timeoutMs}`,
      requests: answers.length,
      seconds: Math.round(seconds * 10) / 10,
      byStatus: byStatus(answers),
      byKind: kinds,
      slowestMs: Math.round(slowest),
      healthAfter: health,
      problems: problems.length,
    },
    null,
    2,
  ),
);
for (const problem of problems.slice(0, 50))
  console.log(`${problem.request.kind} ${problem.request.method} ${problem.request.path} ${problem.request.body?.slice(0, 160) ?? ''}\n  → ${problem.problem}`);
process.exitCode = problems.length === 0 && health === 200 ? 0 : 1;
