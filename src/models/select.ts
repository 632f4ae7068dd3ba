// Which of a repo's files a ref means. Quantisation names are node-llama-cpp's list
// (ggufFileQuantNames); split GGUFs (`-00001-of-00003.gguf`) are kept as their parts, which
// llama.cpp loads from the first one, as node-llama-cpp's downloader leaves them.
import { ggufFileQuantNames } from 'node-llama-cpp';
import { PullError } from './errors.ts';
import type { RemoteFile } from './hubs.ts';
import { formatModelRef, type ModelRef } from './ref.ts';

export interface Selection {
  /** The files to fetch (a split GGUF's parts in order). */
  files: RemoteFile[];
  /** Path inside the repo of what a model entry points at: a .gguf (its first part) or a folder ("" = the repo root). */
  entry: string;
  /** The quantisation picked, for GGUFs. */
  quant?: string;
}

/** node-llama-cpp's default when a GGUF repo is named without a quantisation. */
export const DEFAULT_QUANT = 'Q4_K_M';

const SPLIT = /-(\d{5})-of-(\d{5})\.gguf$/i;
const isGguf = (path: string) => path.toLowerCase().endsWith('.gguf');
// Projector files for vision models share the repo but are not the language model.
const isModelGguf = (path: string) => isGguf(path) && !/(^|\/)mmproj/i.test(path);
// Longest first, so Q4_K_M wins over Q4_K.
const QUANTS = [...ggufFileQuantNames].sort((a, b) => b.length - a.length);

/** The quantisation named in a GGUF's path (file or folder name), upper case. */
export function quantOf(path: string): string | undefined {
  const stem = path.replace(SPLIT, '').replace(/\.gguf$/i, '');
  for (const quant of QUANTS) if (new RegExp(`(^|[-._/])${quant}($|[-._/])`, 'i').test(stem)) return quant;
  return undefined;
}

/** A split GGUF's parts, or the file alone. */
function groupOf(files: RemoteFile[], file: RemoteFile): RemoteFile[] {
  const split = SPLIT.exec(file.path);
  if (!split) return [file];
  const base = file.path.slice(0, file.path.length - split[0].length);
  return files
    .filter((other) => other.path.startsWith(base) && SPLIT.exec(other.path)?.[2] === split[2] && other.path.length === file.path.length)
    .sort((a, b) => a.path.localeCompare(b.path));
}

/** A listed path that would land outside the repo's folder (or is not a plain relative path). */
const unsafePath = (path: string) =>
  path === '' || path.startsWith('/') || path.includes('\\') || path.includes('\0') || path.split('/').some((part) => part === '' || part === '.' || part === '..');

export function selectFiles(ref: ModelRef, files: RemoteFile[]): Selection {
  const name = formatModelRef(ref);
  // The listing comes from a server (a mirror, perhaps): its paths become file names under the models directory.
  const unsafe = files.find((file) => unsafePath(file.path));
  if (unsafe) throw new PullError('hub_error', `${name}: the hub listed a file path that is not a plain relative path (${JSON.stringify(unsafe.path)}); refusing to write it.`);
  if (ref.path) {
    const exact = files.find((file) => file.path === ref.path);
    if (exact) {
      const group = isGguf(exact.path) ? groupOf(files, exact) : [exact];
      return { files: group, entry: group[0]!.path, ...(isGguf(exact.path) ? { quant: quantOf(exact.path) } : {}) };
    }
    const folder = ref.path.replace(/\/+$/, '');
    const inside = files.filter((file) => file.path.startsWith(`${folder}/`));
    if (inside.length) return { files: inside, entry: folder };
    const top = [...new Set(files.map((file) => file.path.split('/')[0]!))].slice(0, 20);
    throw new PullError('not_found', `${name}: the repo has no file or folder "${ref.path}". It has: ${top.join(', ')}${top.length === 20 ? ', …' : ''}`);
  }
  const ggufs = files.filter((file) => isModelGguf(file.path));
  const onnx = files.some((file) => file.path.toLowerCase().endsWith('.onnx'));
  if (ref.quant || (ggufs.length && !onnx)) {
    const wanted = ref.quant ?? DEFAULT_QUANT;
    const matching = ggufs.filter((file) => quantOf(file.path) === wanted);
    if (!matching.length) {
      // A repo with a single GGUF and no quantisation asked for: that one.
      if (!ref.quant && ggufs.length === 1) return { files: [ggufs[0]!], entry: ggufs[0]!.path, quant: quantOf(ggufs[0]!.path) };
      const available = [...new Set(ggufs.map((file) => quantOf(file.path) ?? file.path))];
      if (!available.length) throw new PullError('no_such_quant', `${name}: the repo has no GGUF files, so there is no quantisation to pick; name a file or folder instead.`);
      throw new PullError(
        'no_such_quant',
        `${name}: no GGUF file matches ${wanted}${ref.quant ? '' : ' (the default)'}. Available: ${available.join(', ')}. Pull one with ${formatModelRef({ ...ref, quant: available[0] })}`,
      );
    }
    // The first part of the first (shortest path) match; its split siblings come with it.
    const first = [...matching].sort((a, b) => a.path.length - b.path.length || a.path.localeCompare(b.path))[0]!;
    const group = groupOf(files, first);
    return { files: group, entry: group[0]!.path, quant: wanted };
  }
  // The whole repo: an ONNX pipeline or any other folder layout. .gitattributes is git plumbing.
  const all = files.filter((file) => file.path !== '.gitattributes');
  if (!all.length) throw new PullError('not_found', `${name}: the repo has no files.`);
  return { files: all, entry: '' };
}
