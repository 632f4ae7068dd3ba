// Generated images wait on disk until the client fetches them. A file's name is its capability:
// 192 random bits nobody can guess, prefixed by its expiry time, so an expired link answers 410 Gone
// even after the sweeper deleted the file, and a name cannot be edited to extend its life (the edited
// name points at no file). Only files with our own name pattern are ever deleted.
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InferaError } from '../errors/index.ts';

const NAME = /^([0-9a-z]{1,12})-([A-Za-z0-9_-]{32})\.(png|jpg|webp)$/;
const EXTENSIONS: Record<string, string> = { 'image/png': 'png', 'image/jpeg': 'jpg', 'image/webp': 'webp' };
const MEDIA_TYPES: Record<string, string> = { png: 'image/png', jpg: 'image/jpeg', webp: 'image/webp' };

export interface ImageStoreOptions {
  dir: string;
  ttlSeconds: number;
  /** How often expired files are deleted; default: every minute (at most ttl). */
  sweepIntervalMs?: number;
  /** Clock in milliseconds (tests). */
  now?: () => number;
  log?: { warn(message: string): void };
}

export interface StoredImage {
  name: string;
  /** Unix seconds. */
  expiresAt: number;
}

const notFound = () =>
  new InferaError({ status: 404, code: 'image_not_found', message: 'No such image. Image links are only valid as returned by /v1/images/generations.' });

export class ImageStore {
  private timer?: NodeJS.Timeout;
  private readonly now: () => number;

  private constructor(private readonly options: ImageStoreOptions) {
    this.now = options.now ?? Date.now;
  }

  /** Creates the folder, deletes what expired while the server was down, and starts the sweeper. */
  static async open(options: ImageStoreOptions): Promise<ImageStore> {
    const store = new ImageStore(options);
    // Generated images are the users' data: readable by the server's user only, as the SQLite file is.
    await mkdir(options.dir, { recursive: true, mode: 0o700 });
    await store.sweep();
    const interval = options.sweepIntervalMs ?? Math.min(60_000, options.ttlSeconds * 1000);
    store.timer = setInterval(() => {
      store.sweep().catch((error) => options.log?.warn(`image sweep failed: ${(error as Error).message}`));
    }, interval);
    store.timer.unref();
    return store;
  }

  get dir(): string {
    return this.options.dir;
  }

  async save(data: Buffer, mediaType = 'image/png'): Promise<StoredImage> {
    const extension = EXTENSIONS[mediaType];
    if (!extension) throw new Error(`image store: unsupported media type ${mediaType}`);
    const expiresAt = Math.ceil(this.now() / 1000) + this.options.ttlSeconds;
    const name = `${expiresAt.toString(36)}-${randomBytes(24).toString('base64url')}.${extension}`;
    await writeFile(join(this.options.dir, name), data, { flag: 'wx', mode: 0o600 });
    return { name, expiresAt };
  }

  /** The stored file, or 404 (never issued / malformed) or 410 (expired, swept or not). */
  async read(name: string): Promise<{ data: Buffer; mediaType: string; expiresAt: number }> {
    const match = NAME.exec(name);
    if (!match) throw notFound();
    const expiresAt = parseInt(match[1]!, 36);
    if (expiresAt * 1000 <= this.now())
      throw new InferaError({
        status: 410,
        code: 'image_expired',
        message: `This image link expired (links are valid for ${this.options.ttlSeconds} s). Generate the image again.`,
      });
    const data = await readFile(join(this.options.dir, name)).catch(() => undefined);
    if (!data) throw notFound();
    return { data, mediaType: MEDIA_TYPES[match[3]!]!, expiresAt };
  }

  /** Deletes expired files; returns how many. */
  async sweep(): Promise<number> {
    const now = this.now();
    let removed = 0;
    for (const name of await readdir(this.options.dir)) {
      const match = NAME.exec(name);
      if (!match || parseInt(match[1]!, 36) * 1000 > now) continue;
      await unlink(join(this.options.dir, name)).then(
        () => removed++,
        () => undefined,
      );
    }
    return removed;
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
