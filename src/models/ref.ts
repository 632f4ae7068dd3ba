// Model refs as `infera pull` takes them:
//   hf:owner/repo                 the whole repo (a GGUF-only repo: its default quantisation)
//   hf:owner/repo/path/file.gguf  one file (a split GGUF: all its parts)
//   hf:owner/repo/some/folder     one folder (an ONNX pipeline inside a bigger repo)
//   hf:owner/repo:Q4_K_M          the GGUF of that quantisation
//   ms:...                        the same on ModelScope
// and an optional `#revision` (branch, tag or commit) at the end, as node-llama-cpp's hf: URIs take it.
import { PullError } from './errors.ts';

export type HubName = 'hf' | 'ms';

export interface ModelRef {
  hub: HubName;
  /** owner/repo */
  repo: string;
  /** A file or folder inside the repo; absent: the whole repo. */
  path?: string;
  /** A quantisation name (Q4_K_M, Q8_0, F16...), upper case. */
  quant?: string;
  /** absent: the hub's default branch. */
  revision?: string;
}

const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export function parseModelRef(text: string): ModelRef {
  const input = text.trim();
  const scheme = /^(hf|huggingface|ms|modelscope):(?:\/\/)?(.*)$/i.exec(input);
  if (!scheme)
    throw new PullError('bad_ref', `"${text}" is not a model ref: use hf:owner/repo, hf:owner/repo/file.gguf, hf:owner/repo:Q4_K_M or ms:owner/repo (ModelScope)`);
  const hub: HubName = scheme[1]!.toLowerCase().startsWith('h') ? 'hf' : 'ms';
  let rest = scheme[2]!;
  let revision: string | undefined;
  const hash = rest.indexOf('#');
  if (hash >= 0) {
    revision = rest.slice(hash + 1) || undefined;
    rest = rest.slice(0, hash);
  }
  let quant: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon >= 0) {
    quant = rest.slice(colon + 1).toUpperCase() || undefined;
    rest = rest.slice(0, colon);
  }
  const parts = rest.split('/').filter((part) => part !== '');
  if (parts.length < 2 || !SEGMENT.test(parts[0]!) || !SEGMENT.test(parts[1]!))
    throw new PullError('bad_ref', `"${text}": the repo must be owner/repo, e.g. ${hub}:Qwen/Qwen3-8B-GGUF`);
  if (parts.slice(2).some((part) => part === '..' || part === '.'))
    throw new PullError('bad_ref', `"${text}": a path inside the repo may not contain "." or ".." segments`);
  if (quant && !/^[A-Z0-9_]+$/.test(quant))
    throw new PullError('bad_ref', `"${text}": the quantisation after ":" must look like Q4_K_M, Q8_0 or F16`);
  const path = parts.length > 2 ? parts.slice(2).join('/') : undefined;
  if (quant && path) throw new PullError('bad_ref', `"${text}": give either a file path or a :QUANT, not both`);
  return { hub, repo: `${parts[0]}/${parts[1]}`, ...(path ? { path } : {}), ...(quant ? { quant } : {}), ...(revision ? { revision } : {}) };
}

/** The canonical text of a ref (what the manifest records and `infera rm` matches). */
export function formatModelRef(ref: ModelRef): string {
  return `${ref.hub}:${ref.repo}${ref.path ? `/${ref.path}` : ''}${ref.quant ? `:${ref.quant}` : ''}${ref.revision ? `#${ref.revision}` : ''}`;
}
