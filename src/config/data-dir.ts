// The data directory holds key hashes, the ledger and generated images: created for the operator only.
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/**
 * Creates `dir` and any missing parents with mode 0700, one level at a time: Node's recursive mkdir
 * loops forever where a parent refuses new entries without saying EACCES (e.g. under /proc), so a
 * bad --data-dir would hang the server at startup instead of failing with ENOENT naming the path.
 */
export function ensurePrivateDir(dir: string): void {
  const missing: string[] = [];
  let current = resolve(dir);
  while (!existsSync(current)) {
    missing.unshift(current);
    const parent = dirname(current);
    if (parent === current) break;
    current = parent;
  }
  for (const path of missing) mkdirSync(path, { mode: 0o700 });
}
