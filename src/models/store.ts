// The models directory: pulled files under <dir>/<hub>/<owner>/<repo>/<path in repo>, downloads in
// progress under <dir>/.partial/ (same layout), and manifest.json saying what was pulled, from where,
// and each file's checksum. Written atomically (temp file + rename), so a crash mid-write leaves the
// previous manifest.
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import type { HubName } from './ref.ts';

export interface ManifestFile {
  path: string;
  size: number;
  sha256?: string;
  gitOid?: string;
}

export interface ManifestModel {
  /** The ref as pulled, canonical (formatModelRef). */
  ref: string;
  hub: HubName;
  /** The hub's base URL it came from (a mirror, if HF_ENDPOINT named one). */
  endpoint: string;
  repo: string;
  revision?: string;
  quant?: string;
  /** What a model entry's `path` is: a .gguf file (a split GGUF's first part) or a folder, relative to the models directory. */
  path: string;
  files: ManifestFile[];
  /** Bytes of all files. */
  size: number;
  pulledAt: string;
  /** The SiliconFlow id of the preset it was pulled for, if any. */
  preset?: string;
}

export interface Manifest {
  version: 1;
  models: ManifestModel[];
}

export const MANIFEST = 'manifest.json';
export const PARTIAL = '.partial';

export function readManifest(dir: string): Manifest {
  const path = join(dir, MANIFEST);
  if (!existsSync(path)) return { version: 1, models: [] };
  const parsed = JSON.parse(readFileSync(path, 'utf8')) as Manifest;
  return { version: 1, models: Array.isArray(parsed.models) ? parsed.models : [] };
}

export async function writeManifest(dir: string, manifest: Manifest): Promise<void> {
  await mkdir(dir, { recursive: true });
  const target = join(dir, MANIFEST);
  const temp = `${target}.${process.pid}.tmp`;
  await writeFile(temp, `${JSON.stringify(manifest, null, 2)}\n`);
  await rename(temp, target);
}

/** Where a repo's files land. */
export const repoDir = (dir: string, hub: HubName, repo: string) => join(dir, hub, ...repo.split('/'));

/** Records a pull, replacing an earlier pull of the same ref. */
export async function recordPull(dir: string, model: ManifestModel): Promise<void> {
  const manifest = readManifest(dir);
  // Pulling a preset's files again by their ref keeps them that preset's.
  const earlier = manifest.models.find((other) => other.ref === model.ref);
  const preset = model.preset ?? earlier?.preset;
  manifest.models = [...manifest.models.filter((other) => other.ref !== model.ref), { ...model, ...(preset ? { preset } : {}) }];
  await writeManifest(dir, manifest);
}

/** The absolute path a manifest entry's model entry points at. */
export const modelPath = (dir: string, model: ManifestModel) => join(dir, model.path);

/**
 * Removes a pulled model: its files (those no other pulled model shares) and its manifest entry.
 * `ref` matches the canonical ref, the ref without its revision, or the preset id.
 */
export async function removeModel(dir: string, matches: (model: ManifestModel) => boolean): Promise<ManifestModel[]> {
  const manifest = readManifest(dir);
  const removed = manifest.models.filter(matches);
  const kept = manifest.models.filter((model) => !matches(model));
  const keptFiles = new Set(kept.flatMap((model) => model.files.map((file) => join(repoDir(dir, model.hub, model.repo), file.path))));
  for (const model of removed) {
    for (const file of model.files) {
      const path = join(repoDir(dir, model.hub, model.repo), file.path);
      if (!keptFiles.has(path)) await rm(path, { force: true });
    }
    await pruneEmptyDirs(dir, repoDir(dir, model.hub, model.repo));
  }
  await writeManifest(dir, { version: 1, models: kept });
  return removed;
}

/** Removes now-empty folders from `from` up to (not including) `root`. */
export async function pruneEmptyDirs(root: string, from: string): Promise<void> {
  const walk = async (path: string): Promise<boolean> => {
    let entries: string[];
    try {
      entries = await readdir(path);
    } catch {
      return true;
    }
    let empty = true;
    for (const name of entries) {
      const child = join(path, name);
      if ((await stat(child)).isDirectory()) empty = (await walk(child)) && empty;
      else empty = false;
    }
    if (empty) await rm(path, { recursive: true, force: true });
    return empty;
  };
  await walk(from);
  let current = dirname(from);
  while (relative(root, current) && !relative(root, current).startsWith('..') && !current.endsWith(sep + PARTIAL)) {
    const left = await readdir(current).catch(() => undefined);
    if (left === undefined) {
      current = dirname(current);
      continue;
    }
    if (left.length) break;
    await rm(current, { recursive: true, force: true });
    current = dirname(current);
  }
}
