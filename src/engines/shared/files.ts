// The check for engines that read a local file or folder: fail fast and plainly on the most common
// operator mistake, before waking a native engine.
import { existsSync } from 'node:fs';

export function requireLocalPath(path: string): void {
  if (!existsSync(path)) throw new Error(`file not found: ${path} (check models[].path)`);
}
