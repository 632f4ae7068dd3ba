// img2img input: `image` as a data URI or an http(s) URL → RGB pixels at the generation size.
// URL fetches are an SSRF risk on a server inside someone's network, so by default they may not reach
// loopback, private, link-local or otherwise special addresses. The check runs on the addresses DNS
// actually returned (inside the socket's lookup), so a name that resolves — or re-resolves — to
// 127.0.0.1 is refused too; redirects are followed by hand so each hop is checked the same way.
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP } from 'node:net';
// sharp (libvips, ~30 MB resident) and undici are imported when an input image arrives: a server that
// never sees img2img should not pay for them at start-up (bench/cli-startup.ts).
import type { Agent } from 'undici';
import { badRequest, ClientGoneError } from '../errors/index.ts';

const blocked = new BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.88.99.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15],
  ['198.51.100.0', 24], ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const)
  blocked.addSubnet(network, prefix, 'ipv4');
for (const [network, prefix] of [
  ['::', 128], ['::1', 128], ['64:ff9b::', 96], ['100::', 64], ['2001:db8::', 32], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8],
] as const)
  blocked.addSubnet(network, prefix, 'ipv6');

/** True for addresses a public-URL fetch must not reach (loopback, private, link-local, reserved…). */
export function isPrivateAddress(address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return blocked.check(mapped[1]!, 'ipv4');
  const family = isIP(address);
  if (family === 4) return blocked.check(address, 'ipv4');
  if (family === 6) return blocked.check(address, 'ipv6');
  return true;
}

const refusePrivate = (host: string) =>
  badRequest(
    `image: the URL's host ${host} is a loopback/private address, which this server does not fetch (images.allowPrivateUrls).`,
    'image',
    'image_url_forbidden',
  );

type LookupCallback = (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/** A socket lookup that resolves normally, then refuses private results. */
function guardedLookup(hostname: string, options: { all?: boolean; family?: number }, callback: LookupCallback): void {
  dnsLookup(hostname, { all: true, family: options.family ?? 0 }, (error, addresses) => {
    if (error) return callback(error, []);
    const bad = addresses.find((entry) => isPrivateAddress(entry.address));
    if (bad) return callback(Object.assign(refusePrivate(`${hostname} (${bad.address})`), { code: 'EPRIVATE' }), []);
    if (options.all) return callback(null, addresses);
    callback(null, addresses[0]!.address, addresses[0]!.family);
  });
}

/** One server's connection pools for img2img URL fetches (guarded and, if allowed, unguarded). */
export class FetchAgents {
  private guardedAgent: Agent | undefined;
  private openAgent: Agent | undefined;

  async for(allowPrivateUrls: boolean): Promise<Agent> {
    const { Agent } = await import('undici');
    if (allowPrivateUrls) {
      this.openAgent ??= new Agent();
      return this.openAgent;
    }
    this.guardedAgent ??= new Agent({ connect: { lookup: guardedLookup as never } });
    return this.guardedAgent;
  }

  async close(): Promise<void> {
    const agents = [this.guardedAgent, this.openAgent];
    this.guardedAgent = this.openAgent = undefined;
    await Promise.allSettled(agents.map((agent) => agent?.close()));
  }
}

export interface FetchImageOptions {
  agents: FetchAgents;
  allowPrivateUrls: boolean;
  maxBytes: number;
  timeoutMs: number;
  signal?: AbortSignal;
}

function findCause(error: unknown, predicate: (e: unknown) => boolean): unknown {
  for (let e: unknown = error, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) if (predicate(e)) return e;
  return undefined;
}

/** Downloads an image URL within the size and time limits; every failure is a 400 naming `image`. */
export async function fetchImageBytes(url: string, options: FetchImageOptions): Promise<Buffer> {
  const timeout = AbortSignal.timeout(options.timeoutMs);
  const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
  const { fetch: undiciFetch } = await import('undici');
  const dispatcher = await options.agents.for(options.allowPrivateUrls);
  let current = url;
  try {
    for (let hop = 0; hop <= 3; hop++) {
      let parsed: URL;
      try {
        parsed = new URL(current);
      } catch {
        throw badRequest('image: must be a data: URI (data:image/png;base64,...) or an http(s) URL.', 'image');
      }
      if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')
        throw badRequest(`image: URL scheme ${parsed.protocol} is not fetched; use http(s) or a data: URI.`, 'image');
      const host = parsed.hostname.replace(/^\[|\]$/g, '');
      if (!options.allowPrivateUrls && isIP(host) && isPrivateAddress(host)) throw refusePrivate(host);
      const response = await undiciFetch(parsed, { dispatcher, redirect: 'manual', signal, headers: { accept: 'image/*' } });
      if (response.status >= 300 && response.status < 400 && response.headers.get('location')) {
        await response.body?.cancel();
        current = new URL(response.headers.get('location')!, parsed).toString();
        continue;
      }
      if (!response.ok) {
        await response.body?.cancel();
        throw badRequest(`image: fetching the URL answered HTTP ${response.status}.`, 'image');
      }
      const declared = Number(response.headers.get('content-length') ?? NaN);
      if (declared > options.maxBytes) {
        await response.body?.cancel();
        throw badRequest(`image: the file is larger than ${options.maxBytes} bytes (images.maxInputBytes).`, 'image');
      }
      const chunks: Uint8Array[] = [];
      let size = 0;
      for await (const chunk of response.body ?? []) {
        size += chunk.byteLength;
        if (size > options.maxBytes) {
          await response.body?.cancel().catch(() => undefined);
          throw badRequest(`image: the file is larger than ${options.maxBytes} bytes (images.maxInputBytes).`, 'image');
        }
        chunks.push(chunk);
      }
      return Buffer.concat(chunks);
    }
    throw badRequest('image: the URL redirected too many times.', 'image');
  } catch (error) {
    if (options.signal?.aborted) throw new ClientGoneError();
    if (timeout.aborted) throw badRequest(`image: fetching the URL took longer than ${options.timeoutMs} ms.`, 'image');
    const ours = findCause(error, (e) => (e as { status?: number }).status === 400);
    if (ours) throw ours;
    if ((error as { status?: number }).status) throw error;
    const reason = (findCause(error, (e) => !!(e as { code?: string }).code) as { code?: string } | undefined)?.code ?? (error as Error).message;
    throw badRequest(`image: could not fetch the URL (${reason}).`, 'image');
  }
}

/** `image` field → raw bytes: a base64 data URI, or a guarded http(s) download. */
export async function loadImageInput(image: string, options: FetchImageOptions): Promise<Buffer> {
  if (image.startsWith('data:')) {
    const match = /^data:([\w.+/-]*)(;[\w=.+-]+)*;base64,(.*)$/s.exec(image);
    if (!match) throw badRequest('image: a data URI must be base64-encoded (data:image/png;base64,...).', 'image');
    const bytes = Buffer.from(match[3]!, 'base64');
    if (bytes.length > options.maxBytes) throw badRequest(`image: the file is larger than ${options.maxBytes} bytes (images.maxInputBytes).`, 'image');
    return bytes;
  }
  return fetchImageBytes(image, options);
}

const round8 = (value: number) => Math.max(8, Math.floor(value / 8) * 8);

/**
 * Decodes to RGB at the generation size (center-cropped to the aspect ratio). With no requested size
 * the image's own size is used, scaled into the model's limits (sides and pixel budget) and rounded down to multiples of 8.
 */
export async function decodeInitImage(
  bytes: Buffer,
  size: { width: number; height: number } | undefined,
  limits: { minSize: number; maxSize: number; maxPixels?: number },
): Promise<{ data: Uint8Array; width: number; height: number; channels: 3 }> {
  const { default: sharp } = await import('sharp');
  let meta: Awaited<ReturnType<ReturnType<typeof sharp>["metadata"]>>;
  try {
    meta = await sharp(bytes).metadata();
  } catch {
    throw badRequest('image: the data is not an image this server can decode (PNG, JPEG, WebP, GIF, TIFF, AVIF).', 'image');
  }
  let target = size;
  if (!target) {
    const w = meta.autoOrient?.width ?? meta.width ?? limits.minSize;
    const h = meta.autoOrient?.height ?? meta.height ?? limits.minSize;
    const down = Math.min(1, limits.maxSize / Math.max(w, h), Math.sqrt((limits.maxPixels ?? Number.POSITIVE_INFINITY) / (w * h)));
    const up = Math.max(1, limits.minSize / Math.min(w * down, h * down));
    target = {
      width: Math.min(limits.maxSize, round8(w * down * up)),
      height: Math.min(limits.maxSize, round8(h * down * up)),
    };
  }
  const { data, info } = await sharp(bytes)
    .autoOrient()
    // Transparent areas become white (what viewers show), and grey/CMYK inputs become 3-channel sRGB.
    .flatten({ background: '#ffffff' })
    .toColourspace('srgb')
    .resize(target.width, target.height, { fit: 'cover' })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height, channels: 3 };
}
