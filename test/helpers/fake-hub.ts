// An imitation of Hugging Face's and ModelScope's model endpoints on loopback, for `infera pull`
// tests: HF's tree listing (/api/models/{repo}/tree/{rev}), model info, /{repo}/resolve/{rev}/{path}
// redirecting LFS files to a CDN on another port (X-Linked-ETag / X-Linked-Size, as HF does), HTTP
// Range, gated repos (401 without the right token), 404s, a transfer cut halfway once, a file whose
// listed sha256 is wrong; and ModelScope's file list and download endpoints.
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeFile {
  path: string;
  bytes: Buffer;
  /** Stored as an LFS file (sha256 listed, served from the CDN); default: files over 1 KiB. */
  lfs?: boolean;
  /** List this sha256 instead of the real one (a corrupt copy on the hub). */
  listedSha256?: string;
  /** List this size (bytes served stay the real ones). */
  listedSize?: number;
  /** The first ranged download of this file stops after half its bytes (the socket is destroyed). */
  cutOnce?: boolean;
  /** Ranged downloads of this file reaching past its middle send up to the middle, then stall (the socket stays open) until `release()`. */
  stallAtHalf?: boolean;
}

export interface FakeRepo {
  files: FakeFile[];
  /** Needs `Authorization: Bearer <token>`. */
  gatedToken?: string;
}

export interface FakeHub {
  /** HF_ENDPOINT */
  hfUrl: string;
  /** MODELSCOPE_ENDPOINT */
  msUrl: string;
  cdnUrl: string;
  /** Every request seen: "METHOD host-kind path range". */
  log: string[];
  /** Stop stalling `stallAtHalf` files (later requests get their bytes). */
  release(): void;
  close(): Promise<void>;
}

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');
const gitOid = (bytes: Buffer) => createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex');
const isLfs = (file: FakeFile) => file.lfs ?? file.bytes.length > 1024;

function listen(handler: (request: IncomingMessage, response: ServerResponse) => void): Promise<{ server: Server; url: string }> {
  const server = createServer(handler);
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` })),
  );
}

/** Serves bytes with Range support; `cut` sends half of what was asked and destroys the socket. */
function sendBytes(request: IncomingMessage, response: ServerResponse, bytes: Buffer, headers: Record<string, string>, cut: boolean, stall = false): void {
  let start = 0;
  let end = bytes.length - 1;
  const range = /^bytes=(\d+)-(\d*)$/.exec(request.headers.range ?? '');
  if (range) {
    start = Number(range[1]);
    if (range[2]) end = Math.min(Number(range[2]), bytes.length - 1);
    if (start >= bytes.length) {
      response.writeHead(416, { 'content-range': `bytes */${bytes.length}` }).end();
      return;
    }
  }
  const body = bytes.subarray(start, end + 1);
  response.writeHead(range ? 206 : 200, {
    ...headers,
    'accept-ranges': 'bytes',
    'content-type': 'application/octet-stream',
    'content-length': String(body.length),
    ...(range ? { 'content-range': `bytes ${start}-${end}/${bytes.length}` } : {}),
  });
  if (request.method === 'HEAD') {
    response.end();
    return;
  }
  if (cut) {
    response.write(body.subarray(0, Math.floor(body.length / 2)), () => response.destroy());
    return;
  }
  const middle = Math.floor(bytes.length / 2);
  if (stall && range && end >= middle) {
    if (start < middle) response.write(bytes.subarray(start, middle));
    return;
  }
  response.end(body);
}

export async function startFakeHub(repos: { hf?: Record<string, FakeRepo>; ms?: Record<string, FakeRepo> }): Promise<FakeHub> {
  const log: string[] = [];
  let stalling = true;
  const blobs = new Map<string, FakeFile>();
  const cut = new Set<FakeFile>();
  for (const repo of [...Object.values(repos.hf ?? {}), ...Object.values(repos.ms ?? {})])
    for (const file of repo.files) {
      blobs.set(sha256(file.bytes), file);
      if (file.cutOnce) cut.add(file);
    }
  // Only a ranged GET is cut: the downloader's first GET reads just the headers (size, Accept-Ranges).
  const cutNow = (request: IncomingMessage, file: FakeFile) => request.method === 'GET' && request.headers.range !== undefined && cut.delete(file);
  const json = (response: ServerResponse, status: number, body: unknown) =>
    response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  const allowed = (repo: FakeRepo, request: IncomingMessage) => !repo.gatedToken || request.headers.authorization === `Bearer ${repo.gatedToken}`;

  const cdn = await listen((request, response) => {
    const url = new URL(request.url!, 'http://cdn');
    log.push(`${request.method} cdn ${url.pathname} ${request.headers.range ?? ''} ${request.headers.authorization ? 'auth' : ''}`.trim());
    const file = blobs.get(url.pathname.replace('/blobs/', ''));
    if (!file) return json(response, 404, { error: 'no such blob' });
    sendBytes(request, response, file.bytes, { etag: `"${sha256(file.bytes)}"` }, cutNow(request, file), file.stallAtHalf === true && stalling);
  });

  const hf = await listen((request, response) => {
    const url = new URL(request.url!, 'http://hf');
    const path = decodeURIComponent(url.pathname);
    log.push(`${request.method} hf ${path} ${request.headers.range ?? ''}`.trim());
    let match = /^\/api\/models\/([^/]+\/[^/]+)(?:\/tree\/([^/]+)(?:\/(.*))?)?$/.exec(path);
    if (match) {
      const repo = repos.hf?.[match[1]!];
      if (!repo) return json(response, 404, { error: 'Repository not found' });
      if (!allowed(repo, request)) return json(response, 401, { error: 'Access to model is restricted. You must have access to it and be authenticated to access it.' });
      if (!match[2]) return json(response, 200, { id: match[1], modelId: match[1], private: false, gated: repo.gatedToken ? 'manual' : false });
      const dirs = new Set(repo.files.flatMap((file) => file.path.split('/').slice(0, -1).map((_, i, parts) => parts.slice(0, i + 1).join('/'))));
      return json(response, 200, [
        ...[...dirs].map((dir) => ({ type: 'directory', path: dir, size: 0, oid: gitOid(Buffer.from(dir)) })),
        ...repo.files.map((file) => ({
          type: 'file',
          path: file.path,
          size: isLfs(file) ? 134 : file.bytes.length,
          oid: gitOid(file.bytes),
          ...(isLfs(file) ? { lfs: { oid: file.listedSha256 ?? sha256(file.bytes), size: file.listedSize ?? file.bytes.length, pointerSize: 134 } } : {}),
        })),
      ]);
    }
    match = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    if (match) {
      const repo = repos.hf?.[match[1]!];
      if (!repo) return json(response, 404, { error: 'Repository not found' });
      if (!allowed(repo, request)) return json(response, 401, { error: 'Access restricted' });
      const file = repo.files.find((candidate) => candidate.path === match![3]);
      if (!file) return json(response, 404, { error: 'Entry not found' });
      if (isLfs(file)) {
        response.writeHead(302, {
          location: `${cdn.url}/blobs/${sha256(file.bytes)}?signature=x`,
          'x-linked-etag': `"${file.listedSha256 ?? sha256(file.bytes)}"`,
          'x-linked-size': String(file.bytes.length),
        });
        return response.end();
      }
      return sendBytes(request, response, file.bytes, { etag: `"${gitOid(file.bytes)}"` }, cutNow(request, file));
    }
    json(response, 404, { error: 'not found' });
  });

  const ms = await listen((request, response) => {
    const url = new URL(request.url!, 'http://ms');
    log.push(`${request.method} ms ${url.pathname}${url.search} ${request.headers.range ?? ''}`.trim());
    const match = /^\/api\/v1\/models\/([^/]+\/[^/]+)\/repo(\/files)?$/.exec(url.pathname);
    const repo = match ? repos.ms?.[match[1]!] : undefined;
    if (!match) return json(response, 404, { Code: 404, Success: false, Message: 'not found' });
    if (!repo) return json(response, 404, { Code: 10010205001, Success: false, Message: `model ${match[1]} not exists` });
    if (!allowed(repo, request)) return json(response, 401, { Code: 10010205002, Success: false, Message: 'permission denied' });
    if (match[2])
      return json(response, 200, {
        Code: 200,
        Success: true,
        Data: {
          Files: repo.files.map((file) => ({
            Name: file.path.split('/').pop(),
            Path: file.path,
            Type: 'blob',
            Size: file.listedSize ?? file.bytes.length,
            Sha256: file.listedSha256 ?? sha256(file.bytes),
          })),
        },
      });
    const file = repo.files.find((candidate) => candidate.path === url.searchParams.get('FilePath'));
    if (!file) return json(response, 404, { Code: 404, Success: false, Message: 'file not exists' });
    sendBytes(request, response, file.bytes, {}, cutNow(request, file));
  });

  return {
    hfUrl: hf.url,
    msUrl: ms.url,
    cdnUrl: cdn.url,
    log,
    release: () => {
      stalling = false;
    },
    close: async () => {
      for (const { server } of [hf, ms, cdn]) {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      }
    },
  };
}
