// `infera keys …` and `infera accounts …`: manage the key store the server reads (SQLite in the data
// directory, or Postgres when storage.databaseUrl is set). A running server sees a new key at once and
// a revoke within platform.keyCacheSeconds (5 s by default).
import type { Command } from 'commander';
import type { KeyView, PlatformAdmin } from '../platform/admin.ts';
import { formatMicro, parseAmount } from '../platform/pricing.ts';
import type { PlatformStore } from '../storage/types.ts';
import { configFromCli } from './program.ts';

/** Opens the store the config names, runs `work`, always closes; user errors exit 1 with their message. */
export async function withAdmin(work: (admin: PlatformAdmin) => Promise<void>): Promise<void> {
  const { config } = await configFromCli();
  let store: PlatformStore | undefined;
  try {
    // Imported here: only the store the config names is loaded (SQLite or Postgres), nothing else.
    const { openPlatformStore, PlatformAdmin } = await import('../platform/index.ts');
    store = await openPlatformStore(config);
    await work(new PlatformAdmin(store));
  } catch (error) {
    // The CLI's callers are people: one line saying what is wrong, exit status 1.
    console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
    process.exitCode = 1;
  } finally {
    await store?.close();
  }
}

/** "30d", "12h", "2w" from now, or a date/ISO timestamp. */
export function parseExpires(text: string, now = Date.now()): number {
  const relative = /^(\d+)\s*(m|h|d|w)$/.exec(text.trim());
  if (relative) {
    const unit = { m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[relative[2] as 'm' | 'h' | 'd' | 'w'];
    return now + Number(relative[1]) * unit;
  }
  const date = Date.parse(text);
  if (Number.isNaN(date)) throw new Error(`--expires "${text}" is neither a duration (30d, 12h) nor a date`);
  return date;
}

const describeLimits = (limits: KeyView['limits']) =>
  limits ? Object.entries(limits).map(([k, v]) => `${k}=${v}`).join(',') : '-';

export function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  console.log(line(header));
  for (const row of rows) console.log(line(row));
}

export function registerKeysCommands(program: Command): void {
  const keys = program.command('keys').description('create, list and revoke API keys');

  keys
    .command('create')
    .description('create an API key; the secret is printed once and stored only as a hash')
    .requiredOption('--name <name>', 'a label for people, e.g. "ci" or "alice-laptop"')
    .option('--account <id>', 'account the key belongs to (limits, balance, usage)', 'default')
    .option('--models <ids>', 'comma-separated model ids this key may use (default: all)')
    .option('--limits <limits>', 'per-key limits across models, e.g. rpm=10,tpm=1000 (rpm rph rpd tpm tpd ipm ipd)')
    .option('--expires <when>', 'expiry: a duration from now (30d, 12h) or a date')
    .option('--json', 'print JSON')
    .action(async (flags: { name: string; account: string; models?: string; limits?: string; expires?: string; json?: boolean }) => {
      await withAdmin(async (admin) => {
        const { parseLimitsFlag } = await import('../platform/config.ts');
        const { key, secret } = await admin.createKey({
          name: flags.name,
          accountId: flags.account,
          models: flags.models?.split(','),
          limits: flags.limits ? parseLimitsFlag(flags.limits) : undefined,
          expiresAt: flags.expires ? parseExpires(flags.expires) : undefined,
        });
        if (flags.json) return console.log(JSON.stringify({ ...key, secret }, null, 2));
        console.log(`Created key ${key.id} "${key.name}" for account "${key.accountId}".`);
        console.log('');
        console.log(`  ${secret}`);
        console.log('');
        console.log('This secret is shown only now; Infera keeps just its hash. Use it as');
        console.log('  OPENAI_API_KEY=<secret>   or   Authorization: Bearer <secret>');
        if (key.models) console.log(`Models: ${key.models.join(', ')}`);
        if (key.limits) console.log(`Limits: ${describeLimits(key.limits)}`);
        if (key.expiresAt) console.log(`Expires: ${key.expiresAt}`);
      });
    });

  keys
    .command('list')
    .description('list keys (never their secrets)')
    .option('--account <id>', 'only this account')
    .option('--json', 'print JSON')
    .action(async (flags: { account?: string; json?: boolean }) => {
      await withAdmin(async (admin) => {
        const list = await admin.listKeys(flags.account);
        if (flags.json) return console.log(JSON.stringify(list, null, 2));
        if (list.length === 0) return console.log('no keys yet: `infera keys create --name <name>`');
        const now = Date.now();
        printTable(
          ['ID', 'NAME', 'ACCOUNT', 'KEY', 'STATUS', 'MODELS', 'LIMITS', 'EXPIRES', 'CREATED'],
          list.map((k) => [
            k.id,
            k.name,
            k.accountId,
            k.prefix,
            k.invalid ? 'invalid' : k.disabled ? 'revoked' : k.expiresAt && Date.parse(k.expiresAt) <= now ? 'expired' : 'active',
            k.models?.join(',') ?? '*',
            describeLimits(k.limits),
            k.expiresAt ?? '-',
            k.createdAt,
          ]),
        );
      });
    });

  keys
    .command('revoke')
    .description('disable a key for good (running servers notice within platform.keyCacheSeconds)')
    .argument('<id>', 'key id from `infera keys list`')
    .action(async (id: string) => {
      await withAdmin(async (admin) => {
        await admin.revokeKey(id);
        console.log(`Revoked ${id}.`);
      });
    });

  const accounts = program.command('accounts').description('accounts and their balances');

  accounts
    .command('list')
    .description('list accounts and balances')
    .option('--json', 'print JSON')
    .action(async (flags: { json?: boolean }) => {
      await withAdmin(async (admin) => {
        const list = await admin.listAccounts();
        if (flags.json) return console.log(JSON.stringify(list, null, 2));
        printTable(['ID', 'NAME', 'BALANCE', 'CREATED'], list.map((a) => [a.id, a.name, a.balance, a.createdAt]));
      });
    });

  accounts
    .command('create')
    .description('create an account (keys create one on demand too)')
    .argument('<id>')
    .option('--name <name>', 'display name (default: the id)')
    .action(async (id: string, flags: { name?: string }) => {
      await withAdmin(async (admin) => {
        const account = await admin.createAccount(id, flags.name);
        console.log(`Account ${account.id}: balance ${account.balance}`);
      });
    });

  accounts
    .command('topup')
    .description('add balance to an account (a negative amount deducts)')
    .argument('<id>')
    .argument('<amount>', 'amount in currency units, e.g. 10 or 0.5')
    .allowExcessArguments(false)
    .action(async (id: string, amount: string) => {
      await withAdmin(async (admin) => {
        const account = await admin.topUp(id, parseAmount(amount));
        console.log(`Account ${account.id}: balance ${account.balance} (${amount.startsWith('-') ? '' : '+'}${formatMicro(parseAmount(amount))})`);
      });
    });
}

