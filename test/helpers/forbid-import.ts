// A Node loader hook (for `node --import <file>`) that fails any module load whose URL matches: a test
// that something is never imported runs the code in a child process under it.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Writes `<dir>/<name>.mjs`, which registers a loader whose load() throws `message` (plus the URL) for a
 * URL that `matches`, a JavaScript expression over `url` (e.g. `url.endsWith('/x.js')`); returns its path.
 */
export function forbidImportHook(dir: string, name: string, matches: string, message: string): string {
  const hook = join(dir, `${name}.mjs`);
  const loader = `export async function load(url, context, next) { if (${matches}) throw new Error(${JSON.stringify(`${message}: `)} + url); return next(url, context); }`;
  writeFileSync(hook, `import { register } from 'node:module';\nregister('data:text/javascript,' + encodeURIComponent(${JSON.stringify(loader)}));\n`);
  return hook;
}
