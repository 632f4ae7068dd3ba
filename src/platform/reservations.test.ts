// Balance reservations across processes, on SQLite and on Postgres: replicas reserving at once never
// take more than the balance holds, and the reservations of a server killed mid-request (kill -9, its
// requests never settled) come back to the account once its heartbeat is stale — while a live server's
// reservations are left alone. Postgres runs when DATABASE_URL is set (SKIPPED otherwise, visibly).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { configSchema } from '../config/schema.ts';
import { InferaError } from '../errors/index.ts';
import type { PostgresStore } from '../storage/postgres-store.ts';
import type { Principal } from './gate.ts';
import { createGate, type PlatformGate } from './index.ts';

const databaseUrl = process.env.DATABASE_URL;
const holder = fileURLToPath(new URL('./fixtures/reservation-holder.ts', import.meta.url));
const silent = { info() {}, warn() {}, error() {} };
// 0.001 per token: a worst case of 1000 tokens holds 1.0.
const pricing = { 'paid/chat': { inputPerMillion: 1000, outputPerMillion: 1000 } };
const worstCase = { promptTokens: 100, completionTokens: 900, images: 0, documents: 0 };

const backends = [
  { name: 'SQLite', skip: false as const, raw: (dir: string) => ({ storage: { dataDir: dir }, platform: { pricing } }) },
  {
    name: 'Postgres',
    skip: databaseUrl ? (false as const) : 'SKIPPED: set DATABASE_URL to test reservations on Postgres',
    raw: (_dir: string, schema = `infera_res_${Date.now().toString(36)}${randomBytes(3).toString('hex')}`) => ({
      storage: { databaseUrl },
      platform: { pricing, postgresSchema: schema },
    }),
  },
];

async function gateFor(raw: Record<string, unknown>, reservations?: Record<string, number>): Promise<PlatformGate> {
  const platform = { ...(raw.platform as object), ...(reservations ? { reservations } : {}) };
  return createGate(configSchema.parse({ ...raw, platform }), silent);
}

for (const backend of backends) {
  describe(`reservations on ${backend.name}`, { skip: backend.skip }, () => {
    test('two replicas reserving at once: exactly what the balance covers is admitted, never below zero', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'infera-res-'));
      const raw = backend.raw(dir);
      const [a, b] = [await gateFor(raw), await gateFor(raw)];
      try {
        await a.admin.topUp('team', 10_500_000); // 10.5: ten worst cases of 1.0
        const principal: Principal = { accountId: 'team', keyId: 'k', keyName: 'k' };
        const attempts = await Promise.allSettled(
          Array.from({ length: 64 }, (_, i) =>
            (i % 2 ? a : b).admit({ principal, model: 'PAID/chat', endpoint: 'chat', requestId: `r${i}`, estimatedTokens: 1, images: 0, worstCase }),
          ),
        );
        const admitted = attempts.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
        for (const r of attempts)
          if (r.status === 'rejected') assert.ok(r.reason instanceof InferaError && r.reason.siliconflowCode === 30001, String(r.reason));
        assert.equal(admitted.length, 10);
        assert.equal((await a.admin.store.getAccount('team'))!.balanceMicro, 500_000);
        // Each used 30 tokens (0.03): the rest of every reservation comes back.
        await Promise.all(admitted.map((admission) => admission.settle({ promptTokens: 10, completionTokens: 20, reasoningTokens: 0, images: 0, documents: 0, status: 200, outcome: 'ok', latencyMs: 1 })));
        assert.equal((await b.admin.store.getAccount('team'))!.balanceMicro, 10_500_000 - 10 * 30_000);
      } finally {
        if (backend.name === 'Postgres') await (a.admin.store as PostgresStore).dropSchema();
        await a.close();
        await b.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });

    test('kill -9 mid-request: the dead server’s reservations come back, a live server’s stay held', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'infera-res-'));
      const raw = backend.raw(dir);
      const fast = { heartbeatSeconds: 0.1, staleAfterSeconds: 0.5 };
      const live = await gateFor(raw, fast);
      try {
        await live.admin.topUp('crash', 5_000_000);
        const child = spawn(process.execPath, ['--import', 'tsx', holder, JSON.stringify(raw), '3'], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stderr = '';
        child.stderr!.on('data', (chunk) => (stderr += chunk));
        await new Promise<void>((resolve, reject) => {
          child.stdout!.on('data', (chunk) => String(chunk).includes('held') && resolve());
          child.once('exit', (code) => reject(new Error(`holder exited ${code}: ${stderr}`)));
        });
        child.kill('SIGKILL');
        await new Promise((resolve) => child.once('exit', resolve));
        assert.equal((await live.admin.store.getAccount('crash'))!.balanceMicro, 2_000_000, 'three reservations of 1.0 were held');

        // The live server holds one of its own over the same window.
        const principal: Principal = { accountId: 'crash', keyId: 'k', keyName: 'k' };
        const own = await live.admit({ principal, model: 'paid/chat', endpoint: 'chat', requestId: 'own', estimatedTokens: 1, images: 0, worstCase });
        const deadline = Date.now() + 5000;
        let balance = 0;
        while (Date.now() < deadline) {
          balance = (await live.admin.store.getAccount('crash'))!.balanceMicro;
          if (balance === 4_000_000) break;
          await new Promise((r) => setTimeout(r, 50));
        }
        assert.equal(balance, 4_000_000, 'the killed server’s 3.0 came back; the live one’s 1.0 is still held');
        await new Promise((r) => setTimeout(r, 700));
        assert.equal((await live.admin.store.getAccount('crash'))!.balanceMicro, 4_000_000, 'a live reservation outlasts staleAfterSeconds');
        await own.settle({ promptTokens: 100, completionTokens: 0, reasoningTokens: 0, images: 0, documents: 0, status: 200, outcome: 'ok', latencyMs: 1 });
        assert.equal((await live.admin.store.getAccount('crash'))!.balanceMicro, 5_000_000 - 100_000);
      } finally {
        if (backend.name === 'Postgres') await (live.admin.store as PostgresStore).dropSchema();
        await live.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
}
