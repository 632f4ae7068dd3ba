// The two hubs a ref can name. Listing a Hugging Face repo goes through @huggingface/hub (`listFiles`,
// with `hubUrl` for HF_ENDPOINT mirrors); ModelScope has no JavaScript client, so its two endpoints
// (the recursive file list and the file download) are called here directly.
import { HubApiError, listFiles } from '@huggingface/hub';
import { PullError } from './errors.ts';
import { formatModelRef, type HubName, type ModelRef } from './ref.ts';

/** One file of a repo as its hub describes it. */
export interface RemoteFile {
  /** Path inside the repo, "/"-separated. */
  path: string;
  size: number;
  /** sha256 of the content, when the hub gives one (LFS / Xet files on HF, every file on ModelScope). */
  sha256?: string;
  /** Git blob id (sha1 of "blob <size>\0" + content): what HF gives for small non-LFS files. */
  gitOid?: string;
}

export interface Hub {
  name: HubName;
  /** Base URL, no trailing slash (HF_ENDPOINT / MODELSCOPE_ENDPOINT or the public hub). */
  endpoint: string;
  /** Every file of the repo at the ref's revision. */
  list(ref: ModelRef): Promise<RemoteFile[]>;
  /** Where a file's bytes are fetched (the hub may redirect to a CDN). */
  fileUrl(ref: ModelRef, path: string): string;
  /** Headers for hub requests (the token, if any). */
  headers(): Record<string, string>;
  /** What to set when a repo answers 401/403. */
  tokenVariable: string;
}

export interface HubEnv {
  HF_ENDPOINT?: string;
  HF_TOKEN?: string;
  HUGGING_FACE_HUB_TOKEN?: string;
  MODELSCOPE_ENDPOINT?: string;
  MODELSCOPE_API_TOKEN?: string;
  MODELSCOPE_TOKEN?: string;
}

const trimSlash = (url: string) => url.replace(/\/+$/, '');
const encodePath = (path: string) => path.split('/').map(encodeURIComponent).join('/');

export function hubFor(name: HubName, env: HubEnv = process.env): Hub {
  return name === 'hf' ? huggingFace(env) : modelScope(env);
}

function huggingFace(env: HubEnv): Hub {
  const endpoint = trimSlash(env.HF_ENDPOINT || 'https://huggingface.co');
  const token = env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN || undefined;
  const headers = (): Record<string, string> => (token ? { authorization: `Bearer ${token}` } : {});
  // The token travels in our own fetch rather than listFiles' accessToken, which refuses tokens not
  // starting with "hf_" (mirrors and enterprise hubs issue others).
  const withToken: typeof fetch = (input, init) => fetch(input, { ...init, headers: { ...(init?.headers as Record<string, string>), ...headers() } });
  return {
    name: 'hf',
    endpoint,
    tokenVariable: 'HF_TOKEN',
    headers,
    fileUrl: (ref, path) => `${endpoint}/${ref.repo}/resolve/${encodeURIComponent(ref.revision ?? 'main')}/${encodePath(path)}`,
    async list(ref) {
      const files: RemoteFile[] = [];
      try {
        for await (const entry of listFiles({ repo: { type: 'model', name: ref.repo }, recursive: true, revision: ref.revision, hubUrl: endpoint, fetch: withToken })) {
          if (entry.type !== 'file') continue;
          files.push({
            path: entry.path,
            size: entry.lfs?.size ?? entry.size,
            ...(entry.lfs?.oid ? { sha256: entry.lfs.oid } : entry.oid ? { gitOid: entry.oid } : {}),
          });
        }
      } catch (error) {
        throw hubFailure(error, this, ref, `${endpoint}/api/models/${ref.repo}/tree/${ref.revision ?? 'main'}`);
      }
      return files;
    },
  };
}

interface ModelScopeFile {
  Path: string;
  Type: string;
  Size: number;
  Sha256?: string;
}

function modelScope(env: HubEnv): Hub {
  const endpoint = trimSlash(env.MODELSCOPE_ENDPOINT || 'https://www.modelscope.cn');
  const token = env.MODELSCOPE_API_TOKEN || env.MODELSCOPE_TOKEN || undefined;
  const headers = (): Record<string, string> => (token ? { authorization: `Bearer ${token}` } : {});
  const revision = (ref: ModelRef) => ref.revision ?? 'master';
  return {
    name: 'ms',
    endpoint,
    tokenVariable: 'MODELSCOPE_API_TOKEN',
    headers,
    fileUrl: (ref, path) =>
      `${endpoint}/api/v1/models/${ref.repo}/repo?Revision=${encodeURIComponent(revision(ref))}&FilePath=${encodeURIComponent(path)}`,
    async list(ref) {
      const url = `${endpoint}/api/v1/models/${ref.repo}/repo/files?Revision=${encodeURIComponent(revision(ref))}&Recursive=true`;
      let body: { Code?: number; Success?: boolean; Message?: string; Data?: { Files?: ModelScopeFile[] } };
      try {
        const response = await fetch(url, { headers: { accept: 'application/json', ...headers() } });
        if (!response.ok) throw new HubApiError(url, response.status, undefined, await response.text().catch(() => ''));
        body = (await response.json()) as typeof body;
      } catch (error) {
        throw hubFailure(error, this, ref, url);
      }
      // ModelScope answers some failures with 200 and Success: false.
      if (body.Success === false || !Array.isArray(body.Data?.Files)) {
        const message = body.Message ?? 'no file list in the answer';
        const status = /not ?exist|not found/i.test(message) ? 404 : /auth|permission|login/i.test(message) ? 401 : 502;
        throw hubFailure(new HubApiError(url, status, undefined, message), this, ref, url);
      }
      return body.Data.Files.filter((file) => file.Type !== 'tree').map((file) => ({
        path: file.Path,
        size: file.Size,
        ...(file.Sha256 ? { sha256: file.Sha256.toLowerCase() } : {}),
      }));
    },
  };
}

/** A listing failure as the PullError the operator can act on. */
export function hubFailure(error: unknown, hub: Hub, ref: ModelRef, url: string): PullError {
  const name = formatModelRef({ hub: ref.hub, repo: ref.repo, revision: ref.revision });
  if (error instanceof HubApiError) {
    if (error.statusCode === 404)
      return new PullError('not_found', `${name} was not found on ${hub.endpoint} (HTTP 404${ref.revision ? `; check the revision "${ref.revision}"` : ''}): check the owner/repo spelling.`);
    if (error.statusCode === 401 || error.statusCode === 403)
      return new PullError(
        'unauthorized',
        `${name} is gated or private (HTTP ${error.statusCode} from ${hub.endpoint}): set ${hub.tokenVariable} to a token that may read it` +
          `${hub.name === 'hf' ? ' (https://huggingface.co/settings/tokens) and accept the model\'s terms on its page' : ''}. ` +
          (hub.name === 'hf' ? 'Hugging Face answers a misspelt repo name the same way without a token.' : ''),
      );
    return new PullError('hub_error', `${hub.endpoint} answered HTTP ${error.statusCode} for ${name}: ${error.message.split('. URL:')[0]}`);
  }
  return networkFailure(error, hub, url);
}

/** fetch() failed before any HTTP answer: say which endpoint was tried and which variable sets it. */
export function networkFailure(error: unknown, hub: Pick<Hub, 'name' | 'endpoint'>, url: string): PullError {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  const why = cause?.code ?? cause?.message ?? (error as Error).message ?? String(error);
  const variable = hub.name === 'hf' ? 'HF_ENDPOINT (e.g. https://hf-mirror.com)' : 'MODELSCOPE_ENDPOINT';
  return new PullError('network', `cannot reach ${hub.endpoint} (${why}) while fetching ${url}: check the network, or set ${variable} to a mirror you can reach.`);
}
