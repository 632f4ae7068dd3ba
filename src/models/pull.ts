// `infera pull` and POST /admin/models/pull: ref → the hub's file list → the files the ref means →
// free-space check → downloads (resumable, checked) → the manifest. Progress goes to a callback as
// PullEvents, which the CLI draws as a bar and the admin API sends as SSE.
import { existsSync } from 'node:fs';
import { mkdir, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { downloadGroup } from './download.ts';
import { formatBytes } from './format.ts';
import { PullError } from './errors.ts';
import { type HubEnv, hubFor, type RemoteFile } from './hubs.ts';
import { formatModelRef, parseModelRef } from './ref.ts';
import { selectFiles } from './select.ts';
import { type ManifestModel, PARTIAL, pruneEmptyDirs, readManifest, recordPull, repoDir } from './store.ts';

export type PullEvent =
  | { type: 'resolved'; ref: string; endpoint: string; files: number; bytes: number; fetch: number; fetchBytes: number }
  | { type: 'progress'; ref: string; downloaded: number; total: number }
  | { type: 'done'; ref: string; path: string; size: number; skipped: boolean };

export interface PullOptions {
  modelsDir: string;
  env?: HubEnv;
  /** Recorded in the manifest: the SiliconFlow id this pull was for. */
  preset?: string;
  onEvent?: (event: PullEvent) => void;
}

/** Room kept free beyond the download itself (the manifest, logs, other writers). */
const DISK_MARGIN = 64 * 1024 * 1024;

export async function pullModel(refText: string, options: PullOptions): Promise<ManifestModel> {
  const ref = parseModelRef(refText);
  const name = formatModelRef(ref);
  const hub = hubFor(ref.hub, options.env);
  const emit = options.onEvent ?? (() => {});
  const listed = await hub.list(ref);
  const selection = selectFiles(ref, listed);
  const finalDir = repoDir(options.modelsDir, ref.hub, ref.repo);
  const stagingDir = repoDir(join(options.modelsDir, PARTIAL), ref.hub, ref.repo);

  // A file already in place with the checksum the manifest recorded for it is not fetched again.
  const known = new Map(
    readManifest(options.modelsDir)
      .models.filter((model) => model.hub === ref.hub && model.repo === ref.repo)
      .flatMap((model) => model.files.map((file) => [file.path, file] as const)),
  );
  const present = (file: RemoteFile) => {
    const recorded = known.get(file.path);
    return (
      recorded !== undefined &&
      existsSync(join(finalDir, file.path)) &&
      recorded.size === file.size &&
      (recorded.sha256 ?? recorded.gitOid) === (file.sha256 ?? file.gitOid)
    );
  };
  const toFetch = selection.files.filter((file) => !present(file));
  const bytes = selection.files.reduce((sum, file) => sum + file.size, 0);
  const fetchBytes = toFetch.reduce((sum, file) => sum + file.size, 0);
  emit({ type: 'resolved', ref: name, endpoint: hub.endpoint, files: selection.files.length, bytes, fetch: toFetch.length, fetchBytes });

  if (toFetch.length) {
    await mkdir(options.modelsDir, { recursive: true });
    const { bavail, bsize } = await statfs(options.modelsDir);
    const free = bavail * bsize;
    if (free < fetchBytes + DISK_MARGIN)
      throw new PullError('disk_full', `${name} needs ${formatBytes(fetchBytes)} but ${options.modelsDir} has ${formatBytes(free)} free: free some space or set storage.modelsDir (INFERA_MODELS_DIR) to a bigger disk.`);
  }

  // Split GGUF parts travel together (node-llama-cpp fetches them as one model); other files alone.
  const groups: RemoteFile[][] = [];
  for (const file of toFetch) {
    const last = groups.at(-1);
    const split = /-\d{5}-of-(\d{5})\.gguf$/i;
    if (last && split.test(file.path) && split.test(last[0]!.path) && last[0]!.path.replace(split, '') === file.path.replace(split, '')) last.push(file);
    else groups.push([file]);
  }
  let done = 0;
  for (const group of groups) {
    await downloadGroup({
      hub,
      ref,
      group,
      stagingDir,
      finalDir,
      onProgress: ({ downloaded }) => emit({ type: 'progress', ref: name, downloaded: done + downloaded, total: fetchBytes }),
    });
    done += group.reduce((sum, file) => sum + file.size, 0);
  }

  const entryPath = selection.entry ? join(ref.hub, ...ref.repo.split('/'), selection.entry) : join(ref.hub, ...ref.repo.split('/'));
  const model: ManifestModel = {
    ref: name,
    hub: ref.hub,
    endpoint: hub.endpoint,
    repo: ref.repo,
    ...(ref.revision ? { revision: ref.revision } : {}),
    ...(selection.quant ? { quant: selection.quant } : {}),
    path: entryPath,
    files: selection.files.map((file) => ({ path: file.path, size: file.size, ...(file.sha256 ? { sha256: file.sha256 } : {}), ...(file.gitOid ? { gitOid: file.gitOid } : {}) })),
    size: bytes,
    pulledAt: new Date().toISOString(),
    ...(options.preset ? { preset: options.preset } : {}),
  };
  await recordPull(options.modelsDir, model);
  // Staging folders left empty (a .ipull file of another unfinished pull keeps its folder).
  await pruneEmptyDirs(options.modelsDir, stagingDir);
  emit({ type: 'done', ref: name, path: join(options.modelsDir, entryPath), size: bytes, skipped: toFetch.length === 0 });
  return model;
}
