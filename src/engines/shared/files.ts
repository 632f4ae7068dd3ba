// The check for engines that read a local file or folder: fail fast and plainly on the most common
// operator mistake, before waking a native engine.
import { existsSync } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';

export function requireLocalPath(path: string): void {
  if (!existsSync(path)) throw new Error(`file not found: ${path} (check models[].path)`);
}

/**
 * Bytes under a file or folder (folders summed recursively, links not followed): the memory estimate of
 * a model whose weights are read whole (an ONNX export folder). A folder holding several variants of
 * the weights over-counts; such a model sets `memory` in its entry.
 */
export async function pathBytes(path: string): Promise<number> {
  const stats = await lstat(path);
  if (!stats.isDirectory()) return stats.isFile() ? stats.size : 0;
  let total = 0;
  for (const name of await readdir(path)) total += await pathBytes(join(path, name));
  return total;
}
