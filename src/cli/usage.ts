// `infera usage`: what the ledger recorded, grouped by model, key, account, endpoint or day.
import { Option, type Command } from 'commander';
import type { UsageGroup } from '../storage/types.ts';
import { printTable, withAdmin } from './keys.ts';

export function registerUsageCommands(program: Command): void {
  program
    .command('usage')
    .description('usage from the ledger: requests, tokens, images, cost')
    .addOption(new Option('--by <group>', 'group rows by').choices(['model', 'key', 'account', 'endpoint', 'day']).default('model'))
    .option('--since <when>', 'a duration back from now (30m, 1h, 7d) or a date', '24h')
    .option('--until <when>', 'end (exclusive): a duration back from now or a date')
    .option('--account <id>', 'only this account')
    .option('--json', 'print JSON')
    .action(async (flags: { by: UsageGroup; since: string; until?: string; account?: string; json?: boolean }) => {
      await withAdmin(async (admin) => {
        const { parseSince } = await import('../platform/admin.ts');
        const since = parseSince(flags.since);
        const until = flags.until ? parseSince(flags.until) : undefined;
        const rows = await admin.usage({ by: flags.by, since, until, accountId: flags.account });
        if (flags.json) return console.log(JSON.stringify(rows, null, 2));
        let names = new Map<string, string>();
        if (flags.by === 'key') names = new Map((await admin.listKeys()).map((k) => [k.id, k.name]));
        console.log(`Usage since ${new Date(since).toISOString()}${until ? ` until ${new Date(until).toISOString()}` : ''}, by ${flags.by}:`);
        if (rows.length === 0) return console.log('no requests recorded');
        printTable(
          [flags.by.toUpperCase(), 'REQUESTS', 'ERRORS', 'CANCELLED', 'PROMPT', 'COMPLETION', 'REASONING', 'IMAGES', 'DOCS', 'COST', 'AVG MS'],
          rows.map((r) => [
            names.has(r.group) ? `${r.group} (${names.get(r.group)})` : r.group,
            String(r.requests),
            String(r.errors),
            String(r.cancelled),
            String(r.promptTokens),
            String(r.completionTokens),
            String(r.reasoningTokens),
            String(r.images),
            String(r.documents),
            r.cost,
            String(r.avgLatencyMs),
          ]),
        );
      });
    });
}
