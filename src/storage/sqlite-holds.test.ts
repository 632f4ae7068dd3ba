// Reservations held in memory (SqliteStore memoryHolds): while one server is alone on its SQLite file it
// holds reservations without a commit each. What must hold: the balance is never overdrawn (holds count
// against it), the ledger commit charges exactly the cost, another connection sees nothing taken for a
// hold, and a second server on the file makes the holder write its holds out as rows before it reserves
// anything itself — so two servers together never admit more than the balance covers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SqliteStore } from './sqlite-store.ts';
import type { LedgerRow, Reservation } from './types.ts';

const reservation = (id: string, amountMicro: number, instanceId = 'inst_a'): Reservation => ({
  id,
  accountId: 'acct',
  amountMicro,
  instanceId,
  requestId: `req_${id}`,
  createdAt: Date.now(),
});

const row = (requestId: string, reservationId: string, costMicro: number): LedgerRow => ({
  requestId,
  accountId: 'acct',
  keyId: 'key',
  model: 'm',
  endpoint: 'chat',
  promptTokens: 1,
  completionTokens: 1,
  reasoningTokens: 0,
  images: 0,
  documents: 0,
  latencyMs: 1,
  status: 200,
  outcome: 'ok',
  costMicro,
  createdAt: Date.now(),
  reservationId,
});

async function withFile(run: (path: string, peek: Database.Database) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'infera-sqlite-holds-'));
  const path = join(dir, 'infera.db');
  // Opened (and migrated) by a store first; `peek` is another connection: what another process sees.
  await new SqliteStore(path).close();
  const peek = new Database(path, { readonly: true });
  try {
    await run(path, peek);
  } finally {
    peek.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const fileBalance = (peek: Database.Database) => peek.prepare('SELECT balance_micro FROM accounts WHERE id = ?').pluck().get('acct') as number;
const rowsHeld = (peek: Database.Database) => peek.prepare('SELECT COUNT(*) FROM reservations').pluck().get() as number;
const claimant = (peek: Database.Database) => peek.prepare('SELECT instance_id FROM hold_claim').pluck().get() as string | undefined;

test('alone on the file: after the first reservation the rest are held in memory, never overdraw, and the ledger charges the cost', () =>
  withFile(async (path, peek) => {
    const store = new SqliteStore(path, { memoryHolds: true });
    try {
      await store.heartbeat('inst_a', Date.now());
      await store.adjustBalance('acct', 20);
      // The first one is a row (and takes the claim: no other server beats on this file).
      assert.deepEqual(await store.reserve(reservation('r0', 2)), { ok: true, balanceMicro: 18 });
      assert.equal(claimant(peek), 'inst_a');
      const results = await Promise.all(Array.from({ length: 25 }, (_, i) => store.reserve(reservation(`r${i + 1}`, 2))));
      assert.equal(results.filter((r) => r.ok).length, 9, '18 left covers exactly nine more of 2');
      assert.equal(Math.min(...results.map((r) => r.balanceMicro)), 0);
      // Nothing of the nine was committed: the file still has only r0's row and take.
      assert.equal(rowsHeld(peek), 1);
      assert.equal(fileBalance(peek), 18);
      assert.equal((await store.getAccount('acct'))!.balanceMicro, 0, 'the server counts its holds as taken');
      // A resize that the balance does not cover is refused; shrinking one makes room for another.
      assert.equal((await store.resizeReservation('r1', 'acct', 1)).ok, false);
      assert.deepEqual(await store.resizeReservation('r1', 'acct', -1), { ok: true, balanceMicro: 1 });
      assert.equal((await store.reserve(reservation('late', 2))).ok, false);
      // Each used 1: r0's row is released and refunded, each hold charged 1.
      const admitted = ['r0', ...results.flatMap((r, i) => (r.ok ? [`r${i + 1}`] : []))];
      await store.appendLedger(admitted.map((id) => row(`q_${id}`, id, 1)));
      assert.equal(fileBalance(peek), 20 - 10);
      assert.equal(rowsHeld(peek), 0);
      assert.equal((await store.getAccount('acct'))!.balanceMicro, 10);
      assert.equal(peek.prepare('SELECT SUM(cost_micro) FROM ledger').pluck().get(), 10);
    } finally {
      await store.close();
    }
    assert.equal(claimant(peek), undefined, 'a clean close gives the claim up');
  }));

test('a second server on the file: the holder writes its holds out before the other reserves, and together they admit what the balance covers', () =>
  withFile(async (path, peek) => {
    const a = new SqliteStore(path, { memoryHolds: true });
    const b = new SqliteStore(path, { memoryHolds: true });
    try {
      await a.heartbeat('inst_a', Date.now());
      await a.adjustBalance('acct', 10);
      for (let i = 0; i < 5; i++) assert.equal((await a.reserve(reservation(`a${i}`, 1))).ok, true);
      assert.equal(rowsHeld(peek), 1, 'a0 is a row, a1..a4 are held in memory');
      await b.heartbeat('inst_b', Date.now());
      const results = await Promise.all(Array.from({ length: 10 }, (_, i) => b.reserve(reservation(`b${i}`, 1, 'inst_b'))));
      assert.equal(results.filter((r) => r.ok).length, 5, 'a holds 5 of 10: b gets the other 5, not 10');
      assert.equal(fileBalance(peek), 0);
      assert.equal(rowsHeld(peek), 10, "a's holds are rows now");
      assert.equal(claimant(peek), undefined);
      // a's next reservation is a row (b is live), refused as the balance is gone; its settlements release rows.
      assert.equal((await a.reserve(reservation('a5', 1))).ok, false);
      await a.appendLedger(['a0', 'a1', 'a2', 'a3', 'a4'].map((id) => row(`q_${id}`, id, 0)));
      assert.equal(fileBalance(peek), 5);
      assert.equal(claimant(peek), undefined, 'no claim while another server beats');
    } finally {
      await a.close();
      await b.close();
    }
  }));

test("a claim is waited for while its server lives, and void at once when its process is gone", () =>
  withFile(async (path, peek) => {
    const write = new Database(path);
    const b = new SqliteStore(path, { memoryHolds: true, staleAfterMs: 60_000 });
    try {
      await b.heartbeat('inst_b', Date.now());
      await b.adjustBalance('acct', 10);
      // A live holder (this process) that never answers: b must not reserve past it.
      write.prepare('INSERT INTO instances (id, heartbeat_at) VALUES (?, ?)').run('inst_x', Date.now());
      write.prepare('INSERT INTO hold_claim (id, instance_id, host, pid) VALUES (1, ?, ?, ?)').run('inst_x', hostname(), process.pid);
      const waiting = b.reserve(reservation('w', 1, 'inst_b'));
      const outcome = await Promise.race([waiting.then(() => 'reserved'), new Promise((r) => setTimeout(() => r('waiting'), 300))]);
      assert.equal(outcome, 'waiting');
      assert.equal(peek.prepare('SELECT yield_to FROM hold_claim').pluck().get(), 'inst_b', 'b asked the holder to write its holds out');
      // The holder's process is gone (a pid that has exited): its holds went with it, b goes on.
      const gone = spawnSync(process.execPath, ['-e', '0']).pid!;
      write.prepare('UPDATE hold_claim SET pid = ?').run(gone);
      const after = await Promise.race([waiting, new Promise((r) => setTimeout(() => r('still waiting'), 2000))]);
      assert.deepEqual(after, { ok: true, balanceMicro: 9 });
      assert.equal(fileBalance(peek), 9);
    } finally {
      write.close();
      await b.close();
    }
  }));

test('a top-up or charge made from another connection (the CLI) counts at the next hold: the balance is read from the file each time', () =>
  withFile(async (path) => {
    const store = new SqliteStore(path, { memoryHolds: true });
    const cli = new SqliteStore(path);
    try {
      await store.heartbeat('inst_a', Date.now());
      await store.adjustBalance('acct', 4);
      assert.equal((await store.reserve(reservation('r0', 2))).ok, true);
      assert.equal((await store.reserve(reservation('r1', 2))).ok, true, 'held in memory: 2 of the 2 left');
      assert.equal((await store.reserve(reservation('r2', 2))).ok, false);
      assert.equal(await cli.adjustBalance('acct', 2), 4, 'the CLI does not see the hold');
      assert.deepEqual(await store.reserve(reservation('r3', 2)), { ok: true, balanceMicro: 0 });
      await cli.adjustBalance('acct', -1);
      assert.deepEqual(await store.reserve(reservation('r4', 1)), { ok: false, balanceMicro: -1 }, 'a charge from the CLI leaves less than is held');
    } finally {
      await cli.close();
      await store.close();
    }
  }));

test('a claim voided while its server was silent past staleAfter: its holds are not taken later (never below zero), they settle as holds', () =>
  withFile(async (path, peek) => {
    const a = new SqliteStore(path, { memoryHolds: true, staleAfterMs: 200 });
    const b = new SqliteStore(path, { memoryHolds: true, staleAfterMs: 200 });
    try {
      // a's last beat is a second old: to b it is a server that stopped beating (a stalled event loop).
      await a.heartbeat('inst_a', Date.now() - 1000);
      await a.adjustBalance('acct', 10);
      for (let i = 0; i < 5; i++) assert.equal((await a.reserve(reservation(`a${i}`, 1))).ok, true);
      assert.equal(claimant(peek), 'inst_a');
      await b.heartbeat('inst_b', Date.now());
      // b voids the silent claim and sees the file: 9 left (a0's row), a1..a4 unseen.
      const results = await Promise.all(Array.from({ length: 10 }, (_, i) => b.reserve(reservation(`b${i}`, 1, 'inst_b'))));
      assert.equal(results.filter((r) => r.ok).length, 9);
      await new Promise((resolve) => setTimeout(resolve, 150)); // a's timer finds its claim gone
      assert.equal(rowsHeld(peek), 10, "a's holds were not written out as rows (they would take what b took)");
      assert.equal(fileBalance(peek), 0);
      await a.appendLedger(['a1', 'a2', 'a3', 'a4'].map((id) => row(`q_${id}`, id, 1)));
      assert.equal(fileBalance(peek), 0, 'never below zero');
      assert.equal((await a.reserve(reservation('a5', 1))).ok, false, "a reserves rows now, and there's nothing left");
    } finally {
      await a.close();
      await b.close();
    }
  }));
