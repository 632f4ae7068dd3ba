// Fetching one file (or a split GGUF's parts) into the staging folder with node-llama-cpp's model
// downloader (ipull underneath: parallel HTTP Range requests, retries that resume where a cut transfer
// stopped, and a `.ipull` progress file that lets the next `infera pull` resume), then checking each
// file against the hub's checksum before it is moved into place. The checksum and the move are ours:
// the downloader renames its temp file to the final name before anyone has looked at the bytes.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { PullError } from './errors.ts';
import { type Hub, networkFailure, type RemoteFile } from './hubs.ts';
import type { ModelRef } from './ref.ts';

export interface FileProgress {
  /** Bytes of this group fetched so far (resumed bytes included). */
  downloaded: number;
  total: number;
}

/** sha256 of a file, or its git blob id (what HF lists for small non-LFS files). */
export async function fileDigest(path: string, kind: 'sha256' | 'git'): Promise<string> {
  const hash = createHash(kind === 'sha256' ? 'sha256' : 'sha1');
  if (kind === 'git') hash.update(`blob ${(await stat(path)).size}\0`);
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Checks a downloaded file against what the hub listed; a mismatch removes it. */
export async function verifyFile(path: string, file: RemoteFile, where: string): Promise<void> {
  const size = (await stat(path)).size;
  let problem: string | undefined;
  if (size !== file.size) problem = `${size} bytes instead of ${file.size}`;
  else if (file.sha256) {
    const actual = await fileDigest(path, 'sha256');
    if (actual !== file.sha256.toLowerCase()) problem = `sha256 ${actual}, expected ${file.sha256}`;
  } else if (file.gitOid) {
    const actual = await fileDigest(path, 'git');
    if (actual !== file.gitOid.toLowerCase()) problem = `git blob id ${actual}, expected ${file.gitOid}`;
  }
  if (problem) {
    await rm(path, { force: true });
    throw new PullError('checksum_mismatch', `${file.path} from ${where} is corrupt (${problem}); the file was removed. Run the pull again; if it fails the same way, the hub or mirror serves a bad copy.`);
  }
}

/**
 * Downloads `group` (one file, or every part of a split GGUF in order) to `stagingDir/<path>`, checks
 * each file, and moves it to `finalDir/<path>`.
 */
export async function downloadGroup(options: {
  hub: Hub;
  ref: ModelRef;
  group: RemoteFile[];
  stagingDir: string;
  finalDir: string;
  onProgress: (progress: FileProgress) => void;
}): Promise<void> {
  const { hub, ref, group, stagingDir, finalDir, onProgress } = options;
  const { createModelDownloader } = await import('node-llama-cpp');
  const first = group[0]!;
  const dirPath = join(stagingDir, dirname(first.path));
  await mkdir(dirPath, { recursive: true });
  // node-llama-cpp fetches every part of a split GGUF from the first part's URL (by its file name),
  // which holds for HF's resolve/ URLs; ModelScope's URLs carry the name in the query, so its parts
  // go one by one.
  const together = group.length > 1 && hub.name === 'hf';
  const batches = together ? [group] : group.map((file) => [file]);
  let before = 0;
  const total = group.reduce((sum, file) => sum + file.size, 0);
  for (const batch of batches) {
    const url = hub.fileUrl(ref, batch[0]!.path);
    try {
      const downloader = await createModelDownloader({
        modelUri: url,
        dirPath: join(stagingDir, dirname(batch[0]!.path)),
        fileName: basename(batch[0]!.path),
        headers: hub.headers(),
        // The token is in `headers` already; null stops node-llama-cpp looking for another in HF_TOKEN or ~/.cache.
        tokens: { huggingFace: null as unknown as undefined },
        endpoints: hub.name === 'hf' ? { huggingFace: `${hub.endpoint}/` } : undefined,
        showCliProgress: false,
        deleteTempFileOnCancel: false,
        skipExisting: true,
        onProgress: ({ downloadedSize }) => onProgress({ downloaded: before + downloadedSize, total }),
      });
      await downloader.download();
    } catch (error) {
      throw downloadFailure(error, hub, url);
    }
    before += batch.reduce((sum, file) => sum + file.size, 0);
    onProgress({ downloaded: before, total });
  }
  for (const file of group) {
    const staged = join(stagingDir, file.path);
    await verifyFile(staged, file, hub.endpoint);
    const target = join(finalDir, file.path);
    await mkdir(dirname(target), { recursive: true });
    await rename(staged, target);
  }
}

function downloadFailure(error: unknown, hub: Hub, url: string): PullError {
  if (error instanceof PullError) return error;
  const status = (error as { statusCode?: number }).statusCode;
  const code = (error as NodeJS.ErrnoException).code ?? (error as { cause?: { code?: string } }).cause?.code;
  if (code === 'ENOSPC') return new PullError('disk_full', `the disk filled up while writing ${url}: free some space and run the pull again (it resumes).`);
  if (status === 404) return new PullError('not_found', `${url} answered HTTP 404: the file is listed by the hub but cannot be fetched.`);
  if (status === 401 || status === 403)
    return new PullError('unauthorized', `${url} answered HTTP ${status}: the file is gated or private; set ${hub.tokenVariable} to a token that may read it.`);
  if (status) return new PullError('hub_error', `${url} answered HTTP ${status}.`);
  if (error instanceof TypeError || code) return networkFailure(error, hub, url);
  return new PullError('hub_error', `downloading ${url} failed: ${(error as Error)?.message ?? String(error)}`);
}
