// kill -9 under load loses no ledger row of a request whose settle() had resolved (= response completed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { configSchema } from '../config/schema.ts';
import type { PostgresStore } from '../storage/postgres-store.ts';
import { openPlatformStore } from './index.ts';

const child = fileURLToPath(new URL('./fixtures/ledger-crash-child.ts', import.meta.url));

async function crashUnderLoad(rawConfig: Record<string, unknown>, completionsBeforeKill: number) {
  const proc = spawn(process.execPath, ['--import', 'tsx', child, JSON.stringify(rawConfig)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const completed: string[] = [];
  let buffer = '';
  let stderr = '';
  proc.stderr.on('data', (chunk) => (stderr += chunk));
  const exited = new Promise<NodeJS.Signals | null>((resolve) => proc.on('exit', (_code, signal) => resolve(signal)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`child too slow; stderr: ${stderr}`)), 20_000);
    proc.stdout.on('data', (chunk) => {
      buffer += chunk;
      const lines = buffer.split('\n');
      buffer = lines.pop()!;
      completed.push(...lines);
      if (completed.length >= completionsBeforeKill) {
        clearTimeout(timer);
        // Still under load: 32 requests are in flight right now.
        proc.kill('SIGKILL');
        resolve();
      }
    });
    proc.on('exit', () => reject(new Error(`child exited early; stderr: ${stderr}`)));
  });
  assert.equal(await exited, 'SIGKILL');
  return completed;
}

test('kill -9 under load: every completed settle has its ledger row (SQLite)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'infera-crash-'));
  try {
    const raw = { storage: { dataDir: dir } };
    const completed = await crashUnderLoad(raw, 1000);
    // "Restart": open the database again, as the next server start would.
    const store = await openPlatformStore(configSchema.parse(raw));
    try {
      const rows = await store.countLedger();
      assert.ok(rows >= completed.length, `${rows} rows < ${completed.length} completed`);
      for (const id of completed) assert.ok(await store.hasRequest(id), `lost the row of completed request ${id}`);
    } finally {
      await store.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const databaseUrl = process.env.DATABASE_URL;
test(
  'kill -9 under load: every completed settle has its ledger row (Postgres)',
  { skip: databaseUrl ? false : 'SKIPPED: set DATABASE_URL to run the Postgres crash test' },
  async () => {
    const schema = `infera_crash_${randomBytes(4).toString('hex')}`;
    const raw = { storage: { databaseUrl }, platform: { postgresSchema: schema } };
    const completed = await crashUnderLoad(raw, 1000);
    const store = (await openPlatformStore(configSchema.parse(raw))) as PostgresStore;
    try {
      const rows = await store.countLedger();
      assert.ok(rows >= completed.length, `${rows} rows < ${completed.length} completed`);
      for (const id of completed.slice(-200)) assert.ok(await store.hasRequest(id), `lost the row of completed request ${id}`);
    } finally {
      await store.dropSchema();
      await store.close();
    }
  },
);
