// `infera ps`: the models of a running server and where each stands in its lifecycle (loaded or not,
// memory, last use, when it unloads), read from its admin API (GET /admin/models). The server is the
// one the config describes (server.host and server.port), or --url; the admin key is server.adminKey
// (INFERA_ADMIN_KEY) or --admin-key.
import type { Command } from 'commander';
import { printTable } from './keys.ts';
import { configFromCli } from './program.ts';

interface ModelRow {
  id: string;
  type: string;
  state: string;
  progress: number;
  unloading?: boolean;
  error?: string;
  pid?: number;
  memory?: number;
  keepAlive: number;
  lastUsed?: string;
  expiresAt?: string;
  leases: number;
  preload: boolean;
}

interface ModelsAnswer {
  data: ModelRow[];
  lifecycle?: { maxLoaded: number; memoryBudget: number | null; resident: number; memoryUsed: number };
}

/** "3 s ago", "in 4 min": how an operator reads times in a listing. */
function relative(iso: string | undefined, now: number): string {
  if (!iso) return '-';
  const delta = Date.parse(iso) - now;
  const size = Math.abs(Math.round(delta / 1000));
  const text = size < 90 ? `${size} s` : size < 5400 ? `${Math.round(size / 60)} min` : `${(size / 3600).toFixed(1)} h`;
  // A time under half a second ago rounds to 0: still the past ("0 s ago", not "in 0 s").
  return delta <= 0 ? `${text} ago` : `in ${text}`;
}

function stateOf(row: ModelRow): string {
  if (row.unloading) return 'unloading';
  if (row.state === 'loading') return `loading ${Math.round(row.progress * 100)}%`;
  if (row.state === 'ready') return 'loaded';
  return row.state;
}

export function registerPsCommand(program: Command): void {
  program
    .command('ps')
    .description("a running server's models: loaded or not, memory, last use, when each unloads")
    .option('--url <url>', 'the server (default: server.host and server.port of the config)')
    .option('--admin-key <key>', 'its admin key (default: server.adminKey or INFERA_ADMIN_KEY)')
    .option('--json', 'print the admin API answer as JSON')
    .action(async (flags: { url?: string; adminKey?: string; json?: boolean }) => {
      const { config } = await configFromCli();
      const { formatBytes } = await import('../config/lifecycle.ts');
      const host = ['0.0.0.0', '::', ''].includes(config.server.host) ? '127.0.0.1' : config.server.host;
      const base = (flags.url ?? `http://${host.includes(':') ? `[${host}]` : host}:${config.server.port}`).replace(/\/+$/, '');
      const adminKey = flags.adminKey ?? config.server.adminKey;
      if (!adminKey) {
        console.error('error: `infera ps` needs the server\'s admin key: set server.adminKey (or INFERA_ADMIN_KEY), or pass --admin-key.');
        process.exitCode = 1;
        return;
      }
      let answer: ModelsAnswer;
      try {
        const response = await fetch(`${base}/admin/models`, { headers: { authorization: `Bearer ${adminKey}` }, signal: AbortSignal.timeout(10_000) });
        const body = (await response.json().catch(() => undefined)) as (ModelsAnswer & { error?: { message?: string } }) | undefined;
        if (!response.ok || !body) throw new Error(body?.error?.message ?? `${base}/admin/models answered HTTP ${response.status}`);
        answer = body;
      } catch (error) {
        const cause = (error as { cause?: { code?: string } }).cause?.code;
        console.error(`error: ${cause === 'ECONNREFUSED' ? `no server answers at ${base} (is \`infera serve\` running? --url picks another)` : (error as Error).message}`);
        process.exitCode = 1;
        return;
      }
      if (flags.json) return console.log(JSON.stringify(answer, null, 2));
      const now = Date.now();
      printTable(
        ['MODEL', 'TYPE', 'STATE', 'MEMORY', 'PID', 'IN USE', 'LAST USED', 'UNLOADS', 'KEEP-ALIVE'],
        answer.data.map((row) => [
          row.id,
          row.type,
          stateOf(row),
          row.memory === undefined ? '-' : formatBytes(row.memory),
          row.pid === undefined ? '-' : String(row.pid),
          String(row.leases),
          relative(row.lastUsed, now),
          row.state === 'ready' && !row.unloading ? (row.expiresAt ? relative(row.expiresAt, now) : row.leases > 0 ? 'after use' : 'never') : '-',
          row.keepAlive < 0 ? 'forever' : `${row.keepAlive} s`,
        ]),
      );
      for (const row of answer.data) if (row.state === 'failed' && row.error) console.log(`${row.id}: failed: ${row.error}`);
      const lifecycle = answer.lifecycle;
      if (lifecycle) {
        const budget = lifecycle.memoryBudget === null ? 'no memory budget' : `memory ${formatBytes(lifecycle.memoryUsed)} of ${formatBytes(lifecycle.memoryBudget)}`;
        const cap = lifecycle.maxLoaded > 0 ? `${lifecycle.resident} of at most ${lifecycle.maxLoaded} models resident` : `${lifecycle.resident} model(s) resident`;
        console.log(`${cap}; ${budget}`);
      }
    });
}
