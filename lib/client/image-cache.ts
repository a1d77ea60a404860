/**
 * The images this client installed, kept so that the next update of a
 * device can go as a delta patch (docs/DELTA.md): the device reports the
 * SHA-256 of the image it runs, and the cache holds that image when this
 * client (or another using the same folder) installed it.
 *
 * One file per image in a folder, named by the image's SHA-256
 * (`<64 hex digits>.bin`). Bounded by count and bytes: past either, the
 * least recently used images go first (a file's modification time is when
 * it was last stored or used). Written to a temporary file, then renamed,
 * so a crash never leaves a half image under an image's name; and every
 * read hashes the file again, so a damaged or replaced file is never used
 * as a base (it is removed), and a file of another name is left alone.
 *
 * The cache is an optimisation: nothing in it fails an update. Its methods
 * do not throw for the file system's errors; put() says what went wrong.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';

export interface ImageCacheOptions {
  /** The folder; created when the first image is stored. */
  dir: string;
  /** The most images kept (default 8). */
  maxImages?: number;
  /** The most bytes kept, all images together (default 64 MiB). */
  maxBytes?: number;
}

export const DEFAULT_CACHE_IMAGES = 8;
export const DEFAULT_CACHE_BYTES = 64 * 1024 * 1024;

const ENTRY = /^([0-9a-f]{64})\.bin$/;
const TEMP = /^\.[0-9a-f]{64}\.[0-9a-f]+\.tmp$/;
/** A temporary file older than this is left over from a writer that crashed. */
const STALE_TEMP_MS = 60 * 60 * 1000;

/** What put() did. */
export interface CacheStore {
  stored: boolean;
  /** Why it did not store the image (a file system error, or an image larger than the cache). */
  error?: string;
}

/** What lookup() found. */
export interface CacheLookup {
  /** The image, intact. */
  image?: Buffer;
  /** A file held for it was damaged, and is removed. */
  damaged?: boolean;
}

export class ImageCache {
  readonly dir: string;
  readonly maxImages: number;
  readonly maxBytes: number;
  private lastUse = 0;

  constructor(options: ImageCacheOptions) {
    if (typeof options.dir !== 'string' || options.dir === '') throw new TypeError('the image cache needs a folder');
    this.dir = options.dir;
    this.maxImages = options.maxImages ?? DEFAULT_CACHE_IMAGES;
    this.maxBytes = options.maxBytes ?? DEFAULT_CACHE_BYTES;
    if (!(this.maxImages >= 1) || !(this.maxBytes >= 1)) throw new RangeError('the image cache must hold at least one image of at least one byte');
  }

  /**
   * The image whose SHA-256 this is, if the cache holds it intact; its use
   * is recorded (it is kept longer). A file whose content does not hash to
   * its name is removed.
   */
  async get(sha256: Buffer): Promise<Buffer | undefined> {
    return (await this.lookup(sha256)).image;
  }

  /**
   * As get(), and whether the cache held a file for that SHA-256 whose
   * content no longer hashes to it (a damaged disk, an edited file): that
   * file is removed, so it is reported, and hashed, once.
   */
  async lookup(sha256: Buffer): Promise<CacheLookup> {
    if (sha256.length !== 32) return {};
    const hex = sha256.toString('hex');
    const file = join(this.dir, `${hex}.bin`);
    let data: Buffer;
    try {
      data = await readFile(file);
    } catch {
      return {};
    }
    if (!createHash('sha256').update(data).digest().equals(sha256)) {
      await rm(file, { force: true }).catch(() => undefined);
      return { damaged: true };
    }
    await this.touch(file);
    return { image: data };
  }

  /** Stores an image (again: then only its use is recorded), and drops the least recently used past the bounds. */
  async put(image: Buffer): Promise<CacheStore> {
    if (image.length > this.maxBytes) {
      return { stored: false, error: `the image (${image.length} bytes) is larger than the cache's ${this.maxBytes} bytes` };
    }
    const hex = createHash('sha256').update(image).digest('hex');
    const file = join(this.dir, `${hex}.bin`);
    try {
      // Firmware may be proprietary: the folder is the user's alone, as the files in it.
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      if ((await this.get(Buffer.from(hex, 'hex'))) === undefined) {
        const temp = join(this.dir, `.${hex}.${randomBytes(6).toString('hex')}.tmp`);
        try {
          await writeFile(temp, image, { flag: 'wx', mode: 0o600 });
          await rename(temp, file);
          await this.touch(file);
        } catch (err) {
          await rm(temp, { force: true }).catch(() => undefined);
          throw err;
        }
      }
      await this.prune(hex);
      return { stored: true };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why =
        code === 'EEXIST' || code === 'ENOTDIR'
          ? `${this.dir}, or a folder above it, is a file, not a folder: remove or rename it`
          : code === 'EACCES' || code === 'EPERM'
            ? `permission denied in ${this.dir}: give the user running this write access, or another folder`
            : (err as Error).message;
      return { stored: false, error: `the image could not be stored in ${this.dir}: ${why}` };
    }
  }

  /** The SHA-256 (hex) of the images held, most recently used first (their content is checked on get). */
  async list(): Promise<Array<{ sha256: string; size: number; usedMs: number }>> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return [];
    }
    const entries: Array<{ sha256: string; size: number; usedMs: number }> = [];
    for (const name of names) {
      const m = ENTRY.exec(name);
      if (!m) continue;
      const s = await stat(join(this.dir, name)).catch(() => undefined);
      if (s?.isFile()) entries.push({ sha256: m[1], size: s.size, usedMs: s.mtimeMs });
    }
    // Ties (a coarse clock) keep a stable order by name.
    return entries.sort((a, b) => b.usedMs - a.usedMs || (a.sha256 < b.sha256 ? -1 : 1));
  }

  /**
   * Records a use: the file's modification time, strictly later than the
   * last this cache recorded, so that uses in the same millisecond keep
   * their order.
   */
  private async touch(file: string): Promise<void> {
    this.lastUse = Math.max(Date.now(), this.lastUse + 1);
    const when = new Date(this.lastUse);
    await utimes(file, when, when).catch(() => undefined);
  }

  /** Drops the least recently used images past the bounds (never `keep`), and temporary files a crashed writer left. */
  private async prune(keep: string): Promise<void> {
    const entries = await this.list();
    entries.sort((a, b) => (a.sha256 === keep ? -1 : b.sha256 === keep ? 1 : 0));
    let count = 0;
    let bytes = 0;
    let full = false;
    for (const e of entries) {
      // Past the first image that does not fit, every older one goes too: a small old image never outlives a newer one.
      full ||= count + 1 > this.maxImages || bytes + e.size > this.maxBytes;
      if (full) {
        await rm(join(this.dir, `${e.sha256}.bin`), { force: true });
      } else {
        count++;
        bytes += e.size;
      }
    }
    for (const name of await readdir(this.dir).catch(() => [] as string[])) {
      if (!TEMP.test(name)) continue;
      const s = await stat(join(this.dir, name)).catch(() => undefined);
      if (s && Date.now() - s.mtimeMs > STALE_TEMP_MS) await rm(join(this.dir, name), { force: true }).catch(() => undefined);
    }
  }
}

/**
 * The command line's cache folder: $XDG_CACHE_HOME/esp32-ble-ota, else
 * ~/.cache/esp32-ble-ota (the XDG Base Directory specification's default).
 */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_CACHE_HOME;
  // The specification ignores a relative path there.
  const base = xdg && xdg.startsWith('/') ? xdg : join(homedir(), '.cache');
  return join(base, 'esp32-ble-ota');
}
