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
import Database from 'better-sqlite3';
import { createGate, openPlatformStore, sqlitePath } from './index.ts';

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

test('kill -9 under load with priced requests held in memory: no row lost, no money lost or charged twice, the dead claim void at once (SQLite)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'infera-crash-'));
  try {
    // 0.001 per prompt token, 0.0005 per completion token: a request holds 10 prompt-token estimates
    // (10,000 µ) and costs 4 + 6 tokens (7,000 µ), so a hold charged instead of the cost shows.
    const raw = {
      storage: { dataDir: dir },
      platform: {
        pricing: { 'tiny/chat': { inputPerMillion: 1000, outputPerMillion: 500 } },
        reservations: { heartbeatSeconds: 0.1, staleAfterSeconds: 0.5 },
      },
    };
    const config = configSchema.parse(raw);
    const start = 1_000_000_000_000;
    const before = await openPlatformStore(config);
    await before.adjustBalance('load', start);
    await before.close();
    const completed = await crashUnderLoad(raw, 1000);
    const file = new Database(sqlitePath(config), { readonly: true });
    try {
      assert.equal(file.prepare('SELECT COUNT(*) FROM hold_claim').pluck().get(), 1, 'the killed server held its reservations in memory');
    } finally {
      file.close();
    }
    // Past staleAfter: the restart gives back any reservation row the killed server left.
    await new Promise((resolve) => setTimeout(resolve, 600));
    const gate = await createGate(config, { info() {}, warn() {}, error() {} });
    try {
      const principal = { accountId: 'load', keyId: 'k', keyName: 'k' };
      const t0 = Date.now();
      const admission = await gate.admit({ principal, model: 'tiny/chat', endpoint: 'chat', requestId: 'after', estimatedTokens: 10, images: 0 });
      assert.ok(Date.now() - t0 < 2000, 'the dead server’s claim did not hold the restart up');
      await admission.settle({ promptTokens: 4, completionTokens: 6, reasoningTokens: 0, images: 0, documents: 0, status: 200, outcome: 'ok', latencyMs: 1 });
      const store = gate.admin.store;
      for (const id of completed) assert.ok(await store.hasRequest(id), `lost the row of completed request ${id}`);
      const rows = await store.countLedger();
      assert.ok(rows >= completed.length + 1);
      const [usage] = await store.usage({ by: 'account', accountId: 'load' });
      assert.equal(usage!.costMicro, rows * 7000, 'every row is charged its cost');
      assert.equal((await store.getAccount('load'))!.balanceMicro, start - usage!.costMicro, 'start − end = Σ ledger cost: no hold lost or charged');
    } finally {
      await gate.close();
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
