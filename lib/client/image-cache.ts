/**
 * The images this client installed, kept so that the next update of a
 * device can go as a delta patch (docs/DELTA.md): the device reports the
 * SHA-256 of the image it runs, and the cache holds that image when this
 * client (or another using the same folder) installed it.
 *
 * One file per image in a folder, named by the image's SHA-256
 * (`<64 hex digits>.bin`). Bounded by count and bytes: past either, the
 * least recently used images go first (a file's modification time is when
 * it was last stored or used), and where the disk has no room for a new image
 * (the newest is the next update's base). Written to a temporary file, then renamed,
 * so a crash never leaves a half image under an image's name; and every
 * read hashes the file again, so a damaged or replaced file is never used
 * as a base (it is removed), and a file of another name is left alone.
 *
 * The cache is an optimisation: nothing in it fails an update. Its methods
 * do not throw for the file system's errors; put() says what went wrong.
 * Nor does it hold an update up: a file system that stops answering (a
 * stale network mount) makes a lookup find nothing and a store fail once
 * `timeoutMs` has passed. It opens only regular files, and follows no
 * symbolic link in its folder: anything else under an image's name (a
 * FIFO, whose read would wait for a writer; a device, whose opening may
 * act; a folder; a link), or a file it may not read or larger than the
 * cache holds, is no image: a lookup finds nothing there and says so once
 * (`onWarning`), and the next image stored under that name replaces it (a
 * folder excepted: storing says to remove it).
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { type FileHandle, lstat, mkdir, open, readdir, readlink, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';

export interface ImageCacheOptions {
  /** The folder; created when the first image is stored. */
  dir: string;
  /** The most images kept (default 8). */
  maxImages?: number;
  /** The most bytes kept, all images together (default 64 MiB). */
  maxBytes?: number;
  /** How long a lookup or a store may take before the cache gives up on it (default 30 s). */
  timeoutMs?: number;
  /**
   * Told, once per lookup, why an entry under the image's name is not used
   * (not a regular file, unreadable, too large): the message names the path
   * and what to do. The lookup finds nothing then; the full image goes.
   */
  onWarning?: (message: string) => void;
}

export const DEFAULT_CACHE_IMAGES = 8;
export const DEFAULT_CACHE_BYTES = 64 * 1024 * 1024;
/** Storing a 16 MB image on a slow SD card takes seconds; a file system silent for this long is not answering. */
export const DEFAULT_CACHE_TIMEOUT_MS = 30_000;

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

/** What find() found: a lookup, and why an entry in the way is not used. */
interface Found extends CacheLookup {
  unusable?: string;
}

export class ImageCache {
  readonly dir: string;
  readonly maxImages: number;
  readonly maxBytes: number;
  readonly timeoutMs: number;
  private readonly onWarning: ((message: string) => void) | undefined;
  private lastUse = 0;

  constructor(options: ImageCacheOptions) {
    if (typeof options.dir !== 'string' || options.dir === '') throw new TypeError('the image cache needs a folder');
    this.dir = options.dir;
    this.maxImages = options.maxImages ?? DEFAULT_CACHE_IMAGES;
    this.maxBytes = options.maxBytes ?? DEFAULT_CACHE_BYTES;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_CACHE_TIMEOUT_MS;
    this.onWarning = options.onWarning;
    if (!(this.maxImages >= 1) || !(this.maxBytes >= 1)) throw new RangeError('the image cache must hold at least one image of at least one byte');
    if (!(this.timeoutMs > 0)) throw new RangeError('the image cache needs a time limit above zero');
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
    const found = await this.within(this.find(sha256));
    if (found?.unusable !== undefined) this.onWarning?.(found.unusable);
    return { ...(found?.image ? { image: found.image } : {}), ...(found?.damaged ? { damaged: true } : {}) };
  }

  private async find(sha256: Buffer): Promise<Found> {
    if (sha256.length !== 32) return {};
    const hex = sha256.toString('hex');
    const file = join(this.dir, `${hex}.bin`);
    const data = await this.read(file);
    if (!Buffer.isBuffer(data)) return data;
    if (!createHash('sha256').update(data).digest().equals(sha256)) {
      await rm(file, { force: true }).catch(() => undefined);
      return { damaged: true };
    }
    await this.touch(file);
    return { image: data };
  }

  /**
   * The content of a regular file of at most maxBytes, else nothing, and
   * why when something other than a missing file is in the way. The entry
   * is looked at before it is opened (opening a device may act on it), and
   * opened without following a link or waiting (a FIFO put there since);
   * what was opened must be what was looked at.
   */
  private async read(file: string): Promise<Buffer | Found> {
    const unusable = (what: string, todo = 'remove it'): Found => ({
      unusable: `the image cache's ${file} ${what}: it is not used as the base of a delta update (the full image goes); ${todo}`,
    });
    const failed = (err: NodeJS.ErrnoException): Found => {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return {};
      if (err.code === 'ELOOP') return unusable(kindOf('link'));
      if (err.code === 'EACCES' || err.code === 'EPERM')
        return unusable('cannot be read (permission denied)', 'give the user running this read access to it and its folder, or remove it');
      return unusable(`cannot be read (${err.code ?? err.message})`);
    };
    let seen: Stats;
    try {
      seen = await lstat(file);
    } catch (err) {
      return failed(err as NodeJS.ErrnoException);
    }
    if (!seen.isFile()) return unusable(kindOf(seen));
    if (seen.size > this.maxBytes) return unusable(`holds ${seen.size} bytes, more than the ${this.maxBytes} the cache keeps`);
    let handle: FileHandle;
    try {
      handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (err) {
      return failed(err as NodeJS.ErrnoException);
    }
    try {
      const opened = await handle.stat();
      if (!opened.isFile()) return unusable(kindOf(opened));
      if (opened.ino !== seen.ino || opened.dev !== seen.dev) return {}; // replaced meanwhile: the next lookup looks again
      if (opened.size > this.maxBytes) return unusable(`holds ${opened.size} bytes, more than the ${this.maxBytes} the cache keeps`);
      // Only the bytes fstat counted: a file that grows meanwhile is read no further (its hash then says it is not the image).
      const data = Buffer.alloc(opened.size);
      let got = 0;
      while (got < data.length) {
        const { bytesRead } = await handle.read(data, got, data.length - got, got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return data.subarray(0, got);
    } catch (err) {
      return failed(err as NodeJS.ErrnoException);
    } finally {
      await handle.close().catch(() => undefined);
    }
  }

  /** Stores an image (again: then only its use is recorded), and drops the least recently used past the bounds. */
  async put(image: Buffer): Promise<CacheStore> {
    if (image.length > this.maxBytes) {
      return { stored: false, error: `the image (${image.length} bytes) is larger than the cache's ${this.maxBytes} bytes` };
    }
    const store = await this.within(this.store(image));
    return store ?? { stored: false, error: `the image could not be stored in ${this.dir}: its file system did not answer within ${this.timeoutMs / 1000} s` };
  }

  private async store(image: Buffer): Promise<CacheStore> {
    const hex = createHash('sha256').update(image).digest('hex');
    const file = join(this.dir, `${hex}.bin`);
    try {
      // Firmware may be proprietary: the folder is the user's alone, as the files in it.
      await makeFolder(this.dir, 0o700);
      const held = await this.find(Buffer.from(hex, 'hex'));
      if (held.image === undefined) {
        // Renaming replaces any file in the way (a FIFO, a link), not a folder.
        if ((await lstat(file).catch(() => undefined))?.isDirectory()) throw new FolderError('EISDIR', `${file} is a folder, not an image file: remove it`);
        const temp = join(this.dir, `.${hex}.${randomBytes(6).toString('hex')}.tmp`);
        try {
          await this.write(temp, image, hex);
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
        err instanceof FolderError
          ? err.message
          : code === 'EACCES' || code === 'EPERM'
            ? 'permission denied: give the user running this write access to it, or choose another folder'
            : (err as Error).message;
      return { stored: false, error: `the image could not be stored in ${this.dir}: ${why}` };
    }
  }

  /**
   * Writes a new file; where its disk is full, drops the least recently used
   * images (never `keep`) one at a time until it fits: the image just
   * installed is the base of the device's next update, the older ones only
   * of devices still running them. When nothing is left to drop, says so.
   */
  private async write(temp: string, image: Buffer, keep: string): Promise<void> {
    // Each image once: one stored again meanwhile by another client of the folder is not fought over.
    const removed = new Set<string>([keep]);
    for (;;) {
      try {
        await writeFile(temp, image, { flag: 'wx', mode: 0o600 });
        return;
      } catch (err) {
        await rm(temp, { force: true }).catch(() => undefined);
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOSPC' && code !== 'EDQUOT') throw err;
        const oldest = (await this.list()).filter((e) => !removed.has(e.sha256)).pop();
        if (!oldest) {
          const dropped = removed.size - 1;
          const made = dropped === 0 ? '' : `, though the ${dropped === 1 ? 'image' : `${dropped} images`} it held ${dropped === 1 ? 'was' : 'were'} removed to make room`;
          const what = code === 'EDQUOT' ? 'the disk quota of the user running this is used up' : 'no space left on its disk';
          throw new FolderError(code, `${what}${made}: free space there, or choose another folder`);
        }
        removed.add(oldest.sha256);
        await rm(join(this.dir, `${oldest.sha256}.bin`), { force: true });
      }
    }
  }

  /** The work's result, or undefined once timeoutMs passed without one (the work goes on, unawaited). */
  private async within<T>(work: Promise<T>): Promise<T | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<undefined>((done) => {
      timer = setTimeout(() => done(undefined), this.timeoutMs);
    });
    try {
      return await Promise.race([work, late]);
    } finally {
      clearTimeout(timer);
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
      // Not following links: an entry is a regular file in this folder, and nothing else counts.
      const s = await lstat(join(this.dir, name)).catch(() => undefined);
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
      const s = await lstat(join(this.dir, name)).catch(() => undefined);
      if (s && Date.now() - s.mtimeMs > STALE_TEMP_MS) await rm(join(this.dir, name), { force: true }).catch(() => undefined);
    }
  }
}

/** What an entry is, when it is not a regular file. */
function kindOf(entry: Stats | 'link'): string {
  if (entry === 'link' || entry.isSymbolicLink()) return 'is a symbolic link (the cache follows none)';
  if (entry.isDirectory()) return 'is a folder, not an image file';
  if (entry.isFIFO()) return 'is a FIFO (named pipe), not an image file';
  if (entry.isSocket()) return 'is a socket, not an image file';
  return 'is a device, not an image file';
}

/** Why a folder could not be made, in words that name it as "it" and any other path in full. */
export class FolderError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'FolderError';
  }
}

/**
 * Makes a folder and the missing folders above it (the new ones get `mode`),
 * as mkdir -p does, but one level at a time: Node 20's recursive mkdir never
 * returns where the kernel refuses a new folder with ENOENT under an
 * existing one (/proc/foo), and each level's error says which path is wrong.
 * Throws a FolderError; a folder made meanwhile by someone else is fine.
 */
export async function makeFolder(dir: string, mode = 0o777): Promise<void> {
  const target = resolve(dir);
  const name = (path: string) => (path === target ? 'it' : path);
  const missing: string[] = [];
  // Up to the nearest folder that exists: one step per level, and the root exists.
  for (let at = target; ; at = dirname(at)) {
    const found = await stat(at).catch((err: NodeJS.ErrnoException) => err);
    if (!(found instanceof Error)) {
      if (found.isDirectory()) break;
      // Only a regular file is the user's to move away: /dev/null, given to keep nothing, is not to be removed.
      if (!found.isFile())
        throw new FolderError('ENOTDIR', `${name(at)} is ${found.isFIFO() ? 'a FIFO' : found.isSocket() ? 'a socket' : 'a device'}, not a folder: choose a folder`);
      throw new FolderError('ENOTDIR', `${name(at)} is a file, not a folder: remove or rename it`);
    }
    if (found.code === 'ENOTDIR') continue; // a file further up: found there
    if (found.code !== 'ENOENT') throw folderError(found, at, name);
    const link = await lstat(at).catch(() => undefined);
    if (link?.isSymbolicLink()) {
      const to = await readlink(at).catch(() => '?');
      throw new FolderError('ENOENT', `${name(at)} is a symbolic link to ${to}, which does not exist: create that folder, or remove the link`);
    }
    if (dirname(at) === at) throw folderError(found, at, name);
    missing.push(at);
  }
  for (const level of missing.reverse()) {
    try {
      await mkdir(level, { mode });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'EEXIST' && (await stat(level).catch(() => undefined))?.isDirectory()) continue;
      throw folderError(e, level, name);
    }
  }
}

function folderError(err: NodeJS.ErrnoException, at: string, name: (path: string) => string): FolderError {
  const code = err.code ?? 'EIO';
  if (code === 'EACCES' || code === 'EPERM') {
    return new FolderError(code, `permission denied creating ${name(at)} in ${dirname(at)}: give the user running this write access there, or choose another folder`);
  }
  if (code === 'EEXIST') return new FolderError(code, `${name(at)} is a file, not a folder: remove or rename it`);
  if (code === 'EROFS') return new FolderError(code, `${dirname(at)} is on a read-only file system: choose another folder`);
  // ENOENT with the folder above present: a file system that takes no new folders (/proc).
  const why = code === 'ENOENT' ? 'that file system takes no new folders' : code === 'ENOSPC' ? 'no space left' : code;
  return new FolderError(code, `${name(at)} could not be created in ${dirname(at)} (${why}): choose another folder`);
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
