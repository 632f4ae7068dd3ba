// The server config the HTTP-path benches share: one served model that is never loaded (/v1/models only
// reads the registry, refusals never reach an engine). maxRequestsPerSocket 0: autocannon ignores
// `Connection: close`, so with the default (1000) it would measure the 503s Node sends after it.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const BENCH_KEY = 'sk-bench-0123456789';

export function writeNeverLoadedConfig(prefix: string): { dir: string; configPath: string } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const configPath = join(dir, 'infera.yaml');
  writeFileSync(
    configPath,
    `server:\n  logLevel: info\n  maxRequestsPerSocket: 0\nstorage:\n  dataDir: ${dir}\nmodels:\n  - id: bench/never-loaded\n    type: chat\n    engine: llama-cpp\n    path: ${dir}/none.gguf\n`,
  );
  return { dir, configPath };
}
