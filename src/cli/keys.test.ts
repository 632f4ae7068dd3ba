// The keys / accounts / usage commands as a person runs them: separate processes on one data directory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { configSchema } from '../config/schema.ts';
import { createGate } from '../platform/index.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
// Only the commands under test (bin/infera.js would also load the serving stack: slower to start).
const entry = `
const { program } = await import('./src/cli/program.ts');
const { registerKeysCommands } = await import('./src/cli/keys.ts');
const { registerUsageCommands } = await import('./src/cli/usage.ts');
registerKeysCommands(program);
registerUsageCommands(program);
await program.parseAsync(['node', 'infera', ...process.argv.slice(1)]);
`;

function infera(dataDir: string, ...args: string[]) {
  const result = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', entry, ...args], {
    cwd: root,
    env: { ...process.env, INFERA_DATA_DIR: dataDir, INFERA_CONFIG: '', INFERA_DATABASE_URL: '' },
    encoding: 'utf8',
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

test('infera keys create / list / revoke, accounts topup, usage: the newcomer path on SQLite', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'infera-cli-'));
  try {
    const created = infera(dir, 'keys', 'create', '--name', 'laptop', '--account', 'acme', '--models', 'tiny/chat', '--limits', 'rpm=1', '--expires', '30d', '--json');
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

    const usage = infera(dir, 'usage', '--by', 'key', '--since', '1h');
    assert.equal(usage.status, 0, usage.stderr);
    assert.match(usage.stdout, new RegExp(`${key.id} \\(laptop\\)\\s+2\\s+1\\s+0\\s+2\\s+3`));

    const revoked = infera(dir, 'keys', 'revoke', key.id);
    assert.equal(revoked.status, 0, revoked.stderr);
    const list = infera(dir, 'keys', 'list');
    assert.match(list.stdout, new RegExp(`${key.id}\\s+laptop\\s+acme\\s+\\S+\\s+revoked\\s+tiny/chat\\s+rpm=1`));
    assert.ok(!list.stdout.includes(key.secret));

    const bad = infera(dir, 'accounts', 'topup', 'acme', 'lots');
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /"lots" is not an amount/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
