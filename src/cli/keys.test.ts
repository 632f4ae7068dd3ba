// The keys / accounts / usage commands on one data directory, as a person runs them one after another.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Command } from 'commander';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configSchema } from '../config/schema.ts';
import { createGate } from '../platform/index.ts';
import { registerKeysCommands } from './keys.ts';
import { registerUsageCommands } from './usage.ts';

// In-process (a spawned CLI costs seconds on a busy box; platform-http.test.ts runs the real binary):
// each call gets a fresh commander program, output captured, the data directory from the environment.
async function infera(dataDir: string, ...args: string[]) {
  const program = new Command('infera').exitOverride();
  registerKeysCommands(program);
  registerUsageCommands(program);
  const stdout: string[] = [];
  const stderr: string[] = [];
  const { log, error } = console;
  const saved = { dataDir: process.env.INFERA_DATA_DIR, config: process.env.INFERA_CONFIG, db: process.env.INFERA_DATABASE_URL };
  console.log = (...parts: unknown[]) => void stdout.push(parts.join(' '));
  console.error = (...parts: unknown[]) => void stderr.push(parts.join(' '));
  process.env.INFERA_DATA_DIR = dataDir;
  delete process.env.INFERA_CONFIG;
  delete process.env.INFERA_DATABASE_URL;
  process.exitCode = undefined;
  try {
    await program.parseAsync(args, { from: 'user' });
  } finally {
    console.log = log;
    console.error = error;
    for (const [name, value] of [['INFERA_DATA_DIR', saved.dataDir], ['INFERA_CONFIG', saved.config], ['INFERA_DATABASE_URL', saved.db]] as const)
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
  }
  const status = process.exitCode ?? 0;
  process.exitCode = undefined;
  return { status, stdout: `${stdout.join('\n')}\n`, stderr: stderr.join('\n') };
}

test('infera keys create / list / revoke, accounts topup, usage: the newcomer path on SQLite', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'infera-cli-'));
  try {
    const created = await infera(dir, 'keys', 'create', '--name', 'laptop', '--account', 'acme', '--models', 'tiny/chat', '--limits', 'rpm=1', '--expires', '30d', '--json');
    assert.equal(created.status, 0, created.stderr);
    const key = JSON.parse(created.stdout);
    assert.match(key.secret, /^sk-/);
    assert.deepEqual(key.limits, { rpm: 1 });

    // The server side (same data dir) accepts the key and enforces its limit; both requests reach the ledger.
    const gate = await createGate(configSchema.parse({ storage: { dataDir: dir } }), { info() {}, warn() {}, error() {} });
    const principal = await gate.authenticate(key.secret, '127.0.0.1');
    const admission = await gate.admit({ principal, model: 'tiny/chat', endpoint: 'chat', requestId: 'cli-1', estimatedTokens: 5, images: 0 });
    await admission.settle({ promptTokens: 2, completionTokens: 3, reasoningTokens: 0, images: 0, documents: 0, status: 200, outcome: 'ok', latencyMs: 4 });
    await assert.rejects(
      gate.admit({ principal, model: 'tiny/chat', endpoint: 'chat', requestId: 'cli-2', estimatedTokens: 5, images: 0 }),
      /RPM limit reached: API key "laptop"/,
    );
    await gate.close();

    const usage = await infera(dir, 'usage', '--by', 'key', '--since', '1h');
    assert.equal(usage.status, 0, usage.stderr);
    assert.match(usage.stdout, new RegExp(`${key.id} \\(laptop\\)\\s+2\\s+1\\s+0\\s+2\\s+3`));

    const revoked = await infera(dir, 'keys', 'revoke', key.id);
    assert.equal(revoked.status, 0, revoked.stderr);
    const list = await infera(dir, 'keys', 'list');
    assert.match(list.stdout, new RegExp(`${key.id}\\s+laptop\\s+acme\\s+\\S+\\s+revoked\\s+tiny/chat\\s+rpm=1`));
    assert.ok(!list.stdout.includes(key.secret));

    const bad = await infera(dir, 'accounts', 'topup', 'acme', 'lots');
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /"lots" is not an amount/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
