// Key, account and usage management shared by the admin API and the CLI (both thin over this).
import { badRequest, InferaError } from '../errors/index.ts';
import type { AccountRecord, KeyRecord, PlatformStore, UsageAggregate, UsageQuery } from '../storage/types.ts';
import { limitsSchema, type Limits } from './config.ts';
import { generateKeyId, generateSecret, hashSecret, secretPrefix } from './keys.ts';
import { formatMicro } from './pricing.ts';

export interface CreateKeyInput {
  name: string;
  /** Default "default". Created when missing. */
  accountId?: string;
  models?: string[];
  limits?: Limits;
  /** Epoch ms. */
  expiresAt?: number;
}

/** A key as shown to people and admin clients: never the hash. */
export interface KeyView {
  id: string;
  name: string;
  accountId: string;
  prefix: string;
  models: string[] | null;
  limits: Limits | null;
  /** ISO time; null = never; "invalid" when the stored value is not a date (see `invalid`). */
  expiresAt: string | null;
  disabled: boolean;
  createdAt: string;
  /** What is wrong with the stored row, when something is: such a key authenticates nobody. */
  invalid?: string[];
}

export interface AccountView {
  id: string;
  name: string;
  balance: string;
  balanceMicro: number;
  createdAt: string;
}

/** Rendering never throws: a row written by an older version or by hand must not break a listing. */
const isoTime = (value: number): string => {
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? 'invalid' : date.toISOString();
};

export const keyView = (key: KeyRecord): KeyView => ({
  id: key.id,
  name: key.name,
  accountId: key.accountId,
  prefix: key.prefix,
  models: key.models,
  limits: key.limits as Limits | null,
  expiresAt: key.expiresAt === null ? null : isoTime(key.expiresAt),
  disabled: key.disabled,
  createdAt: isoTime(key.createdAt),
  ...(key.invalid ? { invalid: key.invalid } : {}),
});

/** Latest expiry accepted: the end of year 9999 (what ISO dates, and every store column, can hold). */
export const MAX_EXPIRES_AT = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

export const accountView = (account: AccountRecord): AccountView => ({
  id: account.id,
  name: account.name,
  balance: formatMicro(account.balanceMicro),
  balanceMicro: account.balanceMicro,
  createdAt: new Date(account.createdAt).toISOString(),
});

const accountIdPattern = /^[A-Za-z0-9._@-]{1,64}$/;

export class PlatformAdmin {
  constructor(
    readonly store: PlatformStore,
    /** Called after a change that caches must see at once (revoke, top-up). */
    private readonly onChange: () => void = () => {},
  ) {}

  /** Returns the secret once; only its hash is stored. */
  async createKey(input: CreateKeyInput): Promise<{ key: KeyView; secret: string }> {
    const name = input.name?.trim();
    if (!name) throw badRequest('A key needs a name.', 'name');
    const accountId = input.accountId ?? 'default';
    if (!accountIdPattern.test(accountId)) throw badRequest(`Invalid account id "${accountId}".`, 'account');
    const limits = input.limits === undefined ? null : limitsSchema.parse(input.limits);
    const expiresAt = input.expiresAt;
    if (expiresAt !== undefined) {
      if (typeof expiresAt !== 'number' || !Number.isFinite(expiresAt))
        throw badRequest(`expires_at: ${String(expiresAt)} is not a time (give an ISO date, epoch milliseconds or a duration like 30d).`, 'expires_at');
      if (!(expiresAt > Date.now())) throw badRequest('expires_at: must lie in the future.', 'expires_at');
      if (expiresAt > MAX_EXPIRES_AT)
        throw badRequest(`expires_at: ${expiresAt} is out of range (latest: ${new Date(MAX_EXPIRES_AT).toISOString()}); omit it for a key that never expires.`, 'expires_at');
    }
    const models = input.models?.map((m) => m.trim()).filter(Boolean);
    // An empty allow-list is refused rather than stored: "no models" and "all models" are one typo apart.
    if (input.models !== undefined && (!models || models.length === 0))
      throw badRequest('models: the allow-list names no model; list at least one model id, or omit it to allow every model.', 'models');
    const secret = generateSecret();
    const record: KeyRecord = {
      id: generateKeyId(),
      name,
      accountId,
      hash: hashSecret(secret),
      prefix: secretPrefix(secret),
      models: models ?? null,
      limits: limits && Object.keys(limits).length > 0 ? (limits as Record<string, number>) : null,
      expiresAt: expiresAt === undefined ? null : Math.trunc(expiresAt),
      disabled: false,
      createdAt: Date.now(),
    };
    await this.store.createKey(record);
    this.onChange();
    return { key: keyView(record), secret };
  }

  async listKeys(accountId?: string): Promise<KeyView[]> {
    return (await this.store.listKeys(accountId)).map(keyView);
  }

  async revokeKey(id: string): Promise<void> {
    if (!(await this.store.revokeKey(id)))
      throw new InferaError({ status: 404, message: `No key with id "${id}".`, param: 'id', code: 'key_not_found' });
    this.onChange();
  }

  async listAccounts(): Promise<AccountView[]> {
    return (await this.store.listAccounts()).map(accountView);
  }

  async createAccount(id: string, name?: string): Promise<AccountView> {
    if (!accountIdPattern.test(id)) throw badRequest(`Invalid account id "${id}".`, 'id');
    return accountView(await this.store.ensureAccount(id, name ?? id));
  }

  /** Adds amountMicro (negative to deduct) to the account's balance. */
  async topUp(id: string, amountMicro: number): Promise<AccountView> {
    if (!accountIdPattern.test(id)) throw badRequest(`Invalid account id "${id}".`, 'id');
    if (!Number.isSafeInteger(amountMicro) || amountMicro === 0) throw badRequest('amount must be a non-zero number.', 'amount');
    await this.store.adjustBalance(id, amountMicro);
    this.onChange();
    return accountView((await this.store.getAccount(id))!);
  }

  async usage(query: UsageQuery): Promise<(UsageAggregate & { cost: string })[]> {
    return (await this.store.usage(query)).map((row) => ({ ...row, cost: formatMicro(row.costMicro) }));
  }
}

/** "1h", "7d", "30m", or a date/ISO timestamp → epoch ms. */
export function parseSince(text: string, now = Date.now()): number {
  const relative = /^(\d+)\s*(m|h|d|w)$/.exec(text.trim());
  if (relative) {
    const unit = { m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[relative[2] as 'm' | 'h' | 'd' | 'w'];
    return now - Number(relative[1]) * unit;
  }
  const date = Date.parse(text);
  if (Number.isNaN(date)) throw new Error(`"${text}" is neither a duration (30m, 1h, 7d, 2w) nor a date`);
  return date;
}
