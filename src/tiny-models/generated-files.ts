// Generated model files are reused across starts without encoding them again: encoding the tiny
// models took ~270 ms of every `infera serve` start (measured, bench/cli-startup.ts), more than the
// whole start-up budget allows. A manifest next to the files records a fingerprint of the generator's
// own code (every file of this folder, as it runs: .ts from the sources, .js from the build) plus what
// was asked for; while it matches and the files are there at their recorded sizes, nothing is encoded.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const MANIFEST = '.infera-generated.json';

let generatorDigest: string | undefined;

/** Hash of every file under src/tiny-models (or dist/tiny-models): any change to a generator counts. */
function generatorFingerprint(): string {
  if (generatorDigest) return generatorDigest;
  const hash = createHash('sha256');
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (!name.endsWith('.map') && !name.endsWith('.md')) hash.update(name).update(readFileSync(path));
    }
  };
  walk(dirname(fileURLToPath(import.meta.url)));
  generatorDigest = hash.digest('hex');
  return generatorDigest;
}

interface Manifest {
  fingerprint: string;
  files: Record<string, number>;
}

/**
 * Ensures `dir` holds the files `produce()` returns (relative path → bytes) for this generator and
 * `variant`, calling `produce` only when they are missing or stale. Files and the manifest appear
 * through atomic renames, so readers in other processes (parallel test files) never see half a file.
 */
export async function ensureGeneratedFiles(
  dir: string,
  variant: unknown,
  produce: () => Iterable<[string, Uint8Array]>,
): Promise<void> {
  const fingerprint = createHash('sha256').update(generatorFingerprint()).update(JSON.stringify(variant ?? null)).digest('hex');
  const manifestPath = join(dir, MANIFEST);
  const manifest = await readFile(manifestPath, 'utf8').then((text) => JSON.parse(text) as Manifest, () => undefined);
  if (manifest?.fingerprint === fingerprint && (await filesMatch(dir, manifest.files))) return;
  const files: Record<string, number> = {};
  for (const [path, bytes] of produce()) {
    const target = join(dir, path);
    const existing = await readFile(target).catch(() => undefined);
    if (!existing?.equals(bytes)) await writeAtomically(target, bytes);
    files[path] = bytes.length;
  }
  await writeAtomically(manifestPath, Buffer.from(JSON.stringify({ fingerprint, files } satisfies Manifest)));
}

async function filesMatch(dir: string, files: Record<string, number>): Promise<boolean> {
  for (const [path, size] of Object.entries(files))
    if (!(await stat(join(dir, path)).then((s) => s.isFile() && s.size === size, () => false))) return false;
  return true;
}

export async function writeAtomically(path: string, bytes: Uint8Array): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const temporary = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  await writeFile(temporary, bytes);
  await rename(temporary, path);
}
