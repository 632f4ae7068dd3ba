// Builds the platform from the config: SQLite (default) or Postgres for records, in-process or Redis
// for rate-limit counters. The HTTP layer gets a Gate; the admin routes and CLI use gate.admin.
import { chmodSync, closeSync, openSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { ensurePrivateDir } from '../config/data-dir.ts';
import type { InferaConfig } from '../config/schema.ts';
import { MemoryCounterStore } from '../storage/memory-counters.ts';
import type { CounterStore, PlatformStore } from '../storage/types.ts';
import { parsePlatformConfig, type PlatformConfig } from './config.ts';
import { PlatformGate, type PlatformLogger } from './platform-gate.ts';

export { PlatformGate } from './platform-gate.ts';
export type { PlatformLogger } from './platform-gate.ts';
export { PlatformAdmin, parseSince } from './admin.ts';
export { parsePlatformConfig, platformConfigSchema } from './config.ts';
export type { PlatformConfig } from './config.ts';
export type { Gate, Principal, Admission, AdmissionRequest, UsageReport, Endpoint } from './gate.ts';

export const sqlitePath = (config: InferaConfig): string => join(resolve(config.storage.dataDir), 'infera.db');

/** The durable store the config names: Postgres when storage.databaseUrl is set, else SQLite in dataDir. */
export async function openPlatformStore(config: InferaConfig, platform?: PlatformConfig): Promise<PlatformStore> {
  const settings = platform ?? parsePlatformConfig(config.platform);
  // Drivers are imported on use: a SQLite deployment never loads pg, a Postgres one never better-sqlite3.
  if (config.storage.databaseUrl) {
    const { PostgresStore } = await import('../storage/postgres-store.ts');
    return PostgresStore.open({ connectionString: config.storage.databaseUrl, schema: settings.postgresSchema });
  }
  const { SqliteStore } = await import('../storage/sqlite-store.ts');
  const file = sqlitePath(config);
  // Key hashes and the ledger are private: dir 0700, file 0600 before SQLite opens it (its -wal/-shm copy the file's mode).
  ensurePrivateDir(dirname(file));
  closeSync(openSync(file, 'a', 0o600));
  chmodSync(file, 0o600);
  return new SqliteStore(file, {
    synchronous: settings.ledger.synchronous,
    staleAfterMs: settings.reservations.staleAfterSeconds * 1000,
    // A server's reservations are held in memory while it is alone on the file (SqliteStore.holds).
    memoryHolds: settings.reservations.memoryHolds,
  });
}

export interface CreateGateOptions {
  /** INFERA_API_KEY, passed in by main (config is the only module that reads the environment). */
  envApiKey?: string;
}

export async function createGate(
  config: InferaConfig,
  logger: PlatformLogger,
  options: CreateGateOptions = {},
): Promise<PlatformGate> {
  const platform = parsePlatformConfig(config.platform);
  const store = await openPlatformStore(config, platform);
  let counters: CounterStore;
  if (config.storage.redisUrl) {
    const { RedisCounterStore } = await import('../storage/redis-counters.ts');
    const redis = new RedisCounterStore({ url: config.storage.redisUrl, prefix: platform.redisKeyPrefix });
    counters = redis;
    await redis.ready().catch((error: unknown) => {
      logger.error(
        { err: error, redisFailure: config.storage.redisFailure },
        `Redis unreachable at startup; rate limits will fail ${config.storage.redisFailure} until it answers`,
      );
    });
  } else {
    counters = new MemoryCounterStore();
    if (config.storage.databaseUrl)
      logger.warn('storage.databaseUrl is set without storage.redisUrl: rate limits are counted per replica, not shared');
  }
  // Accounts that exist without anyone creating them, so balances and /user/info work for them too.
  await store.ensureAccount('default', 'default');
  await store.ensureAccount('anonymous', 'anonymous');
  const staticKeys = [...config.server.apiKeys, ...(options.envApiKey ? [options.envApiKey] : [])];
  logger.info(
    { store: store.kind, counters: counters.kind, staticKeys: staticKeys.length },
    'platform gate ready',
  );
  return new PlatformGate({
    store,
    counters,
    config: platform,
    logger,
    staticKeys,
    counterFailure: config.storage.redisFailure,
  });
}
