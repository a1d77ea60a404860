/**
 * The image cache delta updates take their base images from
 * (lib/client/image-cache.ts): an image stored is found by its SHA-256
 * intact, a damaged or replaced file never is, files of other names are
 * left alone, the least recently used images go first past either bound,
 * nothing half written is ever found, and a folder that cannot be written
 * fails no update.
 */
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import {
  chmodSync,
  closeSync,
  constants,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { open } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultCacheDir, FolderError, ImageCache, makeFolder } from '../lib/client/image-cache';
import { buildAppImage } from '../lib/image/app-image-builder';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest();
const image = (seed: number, size = 8 * 1024) => buildAppImage({ size, seed, version: `1.0.${seed}` });

describe('image cache', () => {
  let dir: string;
  beforeEach(() => {
    dir = join(mkdtempSync(join(tmpdir(), 'ble-ota-cache-test-')), 'cache');
  });
  afterEach(() => rmSync(join(dir, '..'), { recursive: true, force: true }));

  it('finds an image stored by its SHA-256, byte for byte, and nothing it was not given', async () => {
    const cache = new ImageCache({ dir });
    const a = image(1);
    assert.equal(await cache.get(sha256(a)), undefined);
    assert.deepEqual(await cache.put(a), { stored: true });
    assert.deepEqual(await cache.get(sha256(a)), a);
    assert.equal(await cache.get(sha256(image(2))), undefined);
    assert.equal(await cache.get(Buffer.alloc(3)), undefined, 'not a SHA-256');
    assert.deepEqual(readdirSync(dir), [`${sha256(a).toString('hex')}.bin`], 'one file, no temporary file left');
    // Firmware may be proprietary: readable by its user only.
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.equal(statSync(join(dir, `${sha256(a).toString('hex')}.bin`)).mode & 0o777, 0o600);
    // Another cache on the same folder (the next run of the command line) finds it.
    assert.deepEqual(await new ImageCache({ dir }).get(sha256(a)), a);
  });

  it('never returns a file whose content is not the image its name says, and removes it', async () => {
    const cache = new ImageCache({ dir });
    const a = image(1);
    await cache.put(a);
    const file = join(dir, `${sha256(a).toString('hex')}.bin`);
    const damaged = Buffer.from(a);
    damaged[100] ^= 1;
    writeFileSync(file, damaged);
    // lookup() says so, once: the file is gone, not hashed again on every update.
    assert.deepEqual(await cache.lookup(sha256(a)), { damaged: true });
    assert.equal(existsSync(file), false);
    assert.deepEqual(await cache.lookup(sha256(a)), {});
    await cache.put(a);
    assert.deepEqual(await cache.lookup(sha256(a)), { image: a });
    writeFileSync(file, damaged);
    assert.equal(await cache.get(sha256(a)), undefined);
    assert.equal(existsSync(file), false);
    // Cut short, as a copy interrupted outside the cache would leave it.
    await cache.put(a);
    writeFileSync(file, a.subarray(0, 1000));
    assert.equal(await cache.get(sha256(a)), undefined);
  });

  it('leaves files of other names alone and does not count them', async () => {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'notes.txt'), 'mine');
    writeFileSync(join(dir, `${'ab'.repeat(32)}.bin.bak`), 'mine too');
    const cache = new ImageCache({ dir, maxImages: 1 });
    await cache.put(image(1));
    assert.equal(readFileSync(join(dir, 'notes.txt'), 'utf8'), 'mine');
    assert.equal((await cache.list()).length, 1);
    assert.equal(readdirSync(dir).length, 3);
  });

  it('keeps at most maxImages, dropping the least recently used first', async () => {
    const cache = new ImageCache({ dir, maxImages: 2 });
    const [a, b, c] = [image(1), image(2), image(3)];
    await cache.put(a);
    await cache.put(b);
    assert.ok(await cache.get(sha256(a)), 'a used after b was stored');
    await cache.put(c);
    assert.ok(await cache.get(sha256(a)));
    assert.equal(await cache.get(sha256(b)), undefined, 'b, least recently used, went');
    assert.ok(await cache.get(sha256(c)));
    // Storing an image held already records a use, and stores nothing twice.
    await cache.put(a);
    await cache.put(image(4));
    assert.ok(await cache.get(sha256(a)));
    assert.equal(await cache.get(sha256(c)), undefined);
    assert.equal(readdirSync(dir).length, 2);
  });

  it('keeps at most maxBytes, and refuses an image larger than that without failing', async () => {
    const small = image(1, 8 * 1024);
    const cache = new ImageCache({ dir, maxBytes: small.length * 3 - 1 });
    await cache.put(small);
    await cache.put(image(2, 8 * 1024));
    const big = image(3, 10 * 1024);
    const store = await cache.put(big);
    assert.ok(store.stored && big.length > small.length);
    // The newest is kept, and the one before it; the oldest no longer fits beside them.
    assert.deepEqual(
      (await cache.list()).map((e) => e.sha256),
      [sha256(big).toString('hex'), sha256(image(2, 8 * 1024)).toString('hex')],
    );
    const huge = await cache.put(image(4, 64 * 1024));
    assert.equal(huge.stored, false);
    assert.match(huge.error ?? '', /larger than the cache/);
    assert.ok(await cache.get(sha256(big)), 'what it held is kept');
  });

  it('a disk too full for the new image makes room by dropping the least recently used images; when none is left, it says the disk is full', async function () {
    // A small file system of its own to fill: tmpfs, which only root may mount (else skipped).
    const disk = join(dir, '..', 'disk');
    mkdirSync(disk, { recursive: true });
    if (process.getuid?.() !== 0 || spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', disk]).status !== 0) this.skip();
    try {
      const cacheDir = join(disk, 'cache');
      const cache = new ImageCache({ dir: cacheDir });
      const [a, b, c] = [image(1, 24 * 1024), image(2, 24 * 1024), image(3, 24 * 1024)];
      assert.deepEqual(await cache.put(a), { stored: true });
      assert.deepEqual(await cache.put(b), { stored: true });
      // Within the cache's bounds, but not the disk's: a, the least recently used, makes room for c.
      assert.deepEqual(await cache.put(c), { stored: true });
      assert.deepEqual(
        (await cache.list()).map((e) => e.sha256),
        [sha256(c).toString('hex'), sha256(b).toString('hex')],
      );
      // Larger than the disk: everything else goes, and the error names the cause, not an errno.
      const store = await cache.put(image(4, 80 * 1024));
      assert.deepEqual(store, {
        stored: false,
        error: `the image could not be stored in ${cacheDir}: no space left on its disk, though the 2 images it held were removed to make room: free space there, or choose another folder`,
      });
      assert.deepEqual(readdirSync(cacheDir), [], 'no temporary file left behind');
    } finally {
      spawnSync('umount', [disk]);
    }
  });

  it('says why it could not store an image, without throwing, when its folder cannot be made', async () => {
    mkdirSync(join(dir, '..'), { recursive: true });
    writeFileSync(dir, 'a file where the folder should be');
    const cache = new ImageCache({ dir });
    const store = await cache.put(image(1));
    assert.equal(store.stored, false);
    // The folder is named once.
    assert.match(store.error ?? '', /^the image could not be stored in \/.*\/cache: it is a file, not a folder: remove or rename it$/);
    assert.equal(await cache.get(sha256(image(1))), undefined);
    assert.deepEqual(await cache.list(), []);
  });

  it('removes temporary files a crashed writer left an hour ago, not one being written now', async () => {
    mkdirSync(dir, { recursive: true });
    const hex = 'cd'.repeat(32);
    const stale = join(dir, `.${hex}.0a0b0c.tmp`);
    const fresh = join(dir, `.${hex}.0d0e0f.tmp`);
    writeFileSync(stale, 'half');
    writeFileSync(fresh, 'half');
    const twoHoursAgo = new Date(Date.now() - 2 * 3600 * 1000);
    utimesSync(stale, twoHoursAgo, twoHoursAgo);
    await new ImageCache({ dir }).put(image(1));
    assert.equal(existsSync(stale), false);
    assert.equal(existsSync(fresh), true);
  });

  it('a folder under /proc (no new folders there) is a store that fails with the reason, not one that never returns', async function () {
    if (!existsSync('/proc/self')) this.skip();
    // Node 20's recursive mkdir loops for ever on these.
    for (const where of ['/proc/ble-ota-test/cache', '/proc/1/ble-ota-test']) {
      const store = await new ImageCache({ dir: where }).put(image(1));
      assert.equal(store.stored, false);
      assert.match(
        store.error ?? '',
        /^the image could not be stored in \/proc\/.*: .* could not be created in \/proc.* \(that file system takes no new folders\): choose another folder$/,
      );
    }
  });

  it('an entry that is no regular file (a FIFO, a socket, a folder, a link) is no image: found absent at once, said once, and replaced when the image is stored', async function () {
    const a = image(1);
    const file = join(dir, `${sha256(a).toString('hex')}.bin`);
    mkdirSync(dir, { recursive: true });
    const outside = join(dir, '..', 'elsewhere.bin');
    writeFileSync(outside, a);
    const warnings: string[] = [];
    // Far longer than the test may take: a lookup that waited on the FIFO would fail it.
    const cache = new ImageCache({ dir, timeoutMs: 3_600_000, onWarning: (m) => warnings.push(m) });
    const kinds: Array<[string, () => Promise<() => void>, RegExp]> = [
      [
        'FIFO',
        async () => {
          execFileSync('mkfifo', [file]);
          // Lets a read the cache started go on (it would wait for a writer), should one have started.
          return () => closeSync(openSync(file, constants.O_RDWR | constants.O_NONBLOCK));
        },
        /is a FIFO \(named pipe\), not an image file/,
      ],
      [
        'socket',
        async () => {
          const server = createServer();
          await new Promise<void>((done) => server.listen(file, done));
          return () => server.close();
        },
        /is a socket, not an image file/,
      ],
      [
        // Even to the very image: the cache reads nothing outside its folder.
        'link',
        async () => {
          symlinkSync(outside, file);
          return () => undefined;
        },
        /is a symbolic link \(the cache follows none\)/,
      ],
    ];
    for (const [kind, make, what] of kinds) {
      const release = await make();
      try {
        warnings.length = 0;
        assert.deepEqual(await cache.lookup(sha256(a)), {}, kind);
        assert.equal(warnings.length, 1, kind);
        assert.ok(warnings[0].startsWith(`the image cache's ${file} `), warnings[0]);
        assert.match(warnings[0], what);
        assert.match(warnings[0], /: it is not used as the base of a delta update \(the full image goes\); remove it$/);
        // Storing the image puts a file in its place; the cache holds it from then on, and nothing more is said.
        assert.deepEqual(await cache.put(a), { stored: true }, kind);
        assert.ok(lstatSync(file).isFile(), kind);
        assert.deepEqual(await cache.lookup(sha256(a)), { image: a }, kind);
        assert.equal(warnings.length, 1, kind);
        assert.deepEqual(readFileSync(outside), a, 'what the link pointed to is left alone');
      } finally {
        release();
        rmSync(file, { force: true });
      }
    }
    // A folder under an image's name cannot be replaced: storing says so.
    mkdirSync(file);
    warnings.length = 0;
    assert.deepEqual(await cache.lookup(sha256(a)), {});
    assert.match(warnings.join('\n'), /is a folder, not an image file: it is not used/);
    assert.deepEqual(await cache.put(a), { stored: false, error: `the image could not be stored in ${dir}: ${file} is a folder, not an image file: remove it` });
    assert.equal(warnings.length, 1, 'the store says it, the lookup said it');
    assert.deepEqual(await cache.list(), [], 'neither a folder nor a link counts as an image held');
  });

  it('an entry larger than the cache holds is not read, and one it may not read is said so', async function () {
    const a = image(1);
    const file = join(dir, `${sha256(a).toString('hex')}.bin`);
    mkdirSync(dir, { recursive: true });
    const warnings: string[] = [];
    const cache = new ImageCache({ dir, maxBytes: 64 * 1024, onWarning: (m) => warnings.push(m) });
    // Sparse: no disk taken, but 256 MiB a read would put in memory and hash.
    writeFileSync(file, '');
    truncateSync(file, 256 * 1024 * 1024);
    assert.deepEqual(await cache.lookup(sha256(a)), {});
    assert.deepEqual(warnings, [
      `the image cache's ${file} holds 268435456 bytes, more than the 65536 the cache keeps: it is not used as the base of a delta update (the full image goes); remove it`,
    ]);
    assert.deepEqual(await cache.put(a), { stored: true });
    assert.deepEqual(await cache.lookup(sha256(a)), { image: a });

    // Unreadable: root reads anything, so the lookup runs as nobody then.
    chmodSync(file, 0o000);
    const expected = `the image cache's ${file} cannot be read (permission denied): it is not used as the base of a delta update (the full image goes); give the user running this read access to it and its folder, or remove it`;
    if (process.getuid?.() !== 0) {
      warnings.length = 0;
      assert.deepEqual(await cache.lookup(sha256(a)), {});
      assert.deepEqual(warnings, [expected]);
      return;
    }
    chmodSync(join(dir, '..'), 0o755);
    chmodSync(dir, 0o755);
    const script = `const { ImageCache } = require(${JSON.stringify(require.resolve('../lib/client/image-cache'))}); const w = []; new ImageCache({ dir: ${JSON.stringify(dir)}, onWarning: (m) => w.push(m) }).lookup(Buffer.from(${JSON.stringify(sha256(a).toString('hex'))}, 'hex')).then((r) => console.log(JSON.stringify([Object.keys(r), w])))`;
    const run = spawnSync(process.execPath, ['-e', script], { uid: 65534, gid: 65534, encoding: 'utf8' });
    if (run.error || run.status !== 0) this.skip(); // no nobody, or no way to read this checkout as nobody
    assert.deepEqual(JSON.parse(run.stdout), [[], [expected]]);
  });

  it('a file system that stops answering makes a lookup find nothing and a store fail, after timeoutMs', async function () {
    // Every thread of libuv's pool waits in the open of a FIFO: the cache's file system calls wait behind them, as on a
    // stale network mount.
    mkdirSync(dir, { recursive: true });
    const threads = Number(process.env.UV_THREADPOOL_SIZE) || 4;
    const fifos = Array.from({ length: threads }, (_, i) => join(dir, '..', `stuck-${i}`));
    try {
      for (const fifo of fifos) execFileSync('mkfifo', [fifo]);
    } catch {
      this.skip();
    }
    const stuck = fifos.map((fifo) => open(fifo, 'r'));
    const a = image(1);
    const cache = new ImageCache({ dir, timeoutMs: 50 });
    try {
      assert.deepEqual(await cache.lookup(sha256(a)), {});
      assert.deepEqual(await cache.put(a), { stored: false, error: `the image could not be stored in ${dir}: its file system did not answer within 0.05 s` });
    } finally {
      // A writer lets each open return; the store, unawaited, goes on then: the test waits for its image, so that
      // nothing writes in the folder once it is removed.
      for (const fifo of fifos) closeSync(openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK));
      for (const handle of await Promise.all(stuck)) await handle.close();
    }
    const file = join(dir, `${sha256(a).toString('hex')}.bin`);
    while (!existsSync(file)) await new Promise((done) => setImmediate(done));
  });

  it('refuses bounds that hold nothing', () => {
    assert.throws(() => new ImageCache({ dir, timeoutMs: 0 }), RangeError);
    assert.throws(() => new ImageCache({ dir, maxImages: 0 }), RangeError);
    assert.throws(() => new ImageCache({ dir, maxBytes: Number.NaN }), RangeError);
    assert.throws(() => new ImageCache({ dir: '' }), TypeError);
  });

  it('lives in $XDG_CACHE_HOME/esp32-ble-ota, else ~/.cache/esp32-ble-ota', () => {
    assert.equal(defaultCacheDir({ XDG_CACHE_HOME: '/var/cache/me' }), '/var/cache/me/esp32-ble-ota');
    assert.match(defaultCacheDir({}), /\/\.cache\/esp32-ble-ota$/);
    // A relative XDG_CACHE_HOME is to be ignored (XDG Base Directory specification).
    assert.match(defaultCacheDir({ XDG_CACHE_HOME: 'relative' }), /\/\.cache\/esp32-ble-ota$/);
  });
});

describe('image cache folder creation (makeFolder)', () => {
  let root: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'ble-ota-folder-test-'));
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  const refusal = async (dir: string): Promise<FolderError> => {
    try {
      await makeFolder(dir);
    } catch (err) {
      assert.ok(err instanceof FolderError, String(err));
      return err;
    }
    assert.fail(`${dir} was made`);
  };

  it('makes every missing level with the mode given, and a folder that exists (or is made meanwhile) is fine', async () => {
    const dir = join(root, 'a', 'b', 'c');
    await makeFolder(dir, 0o700);
    for (const level of ['a', 'a/b', 'a/b/c']) {
      const s = statSync(join(root, level));
      assert.ok(s.isDirectory());
      assert.equal(s.mode & 0o777, 0o700);
    }
    await makeFolder(dir);
    // Two at once on the same new levels: each one's mkdir may find the other's folder.
    await Promise.all([makeFolder(join(root, 'x', 'y', 'z')), makeFolder(join(root, 'x', 'y', 'z'))]);
    assert.ok(statSync(join(root, 'x', 'y', 'z')).isDirectory());
  });

  it('a file in the way, at the folder or above it, is named', async () => {
    writeFileSync(join(root, 'f'), 'a file');
    assert.equal((await refusal(join(root, 'f'))).message, 'it is a file, not a folder: remove or rename it');
    const above = await refusal(join(root, 'f', 'sub', 'cache'));
    assert.equal(above.message, `${join(root, 'f')} is a file, not a folder: remove or rename it`);
  });

  it('a device in the way (--cache-dir /dev/null, to keep nothing) is not to be removed: another folder is what to give', async function () {
    if (!existsSync('/dev/null')) this.skip();
    assert.equal((await refusal('/dev/null')).message, 'it is a device, not a folder: choose a folder');
    assert.equal((await refusal('/dev/null/cache')).message, '/dev/null is a device, not a folder: choose a folder');
  });

  it('a dangling symbolic link says where it points', async () => {
    symlinkSync(join(root, 'gone'), join(root, 'link'));
    const err = await refusal(join(root, 'link'));
    assert.equal(err.message, `it is a symbolic link to ${join(root, 'gone')}, which does not exist: create that folder, or remove the link`);
    const below = await refusal(join(root, 'link', 'cache'));
    assert.match(below.message, /^\/.*\/link is a symbolic link to .*gone, which does not exist/);
    // A link to a folder is followed.
    mkdirSync(join(root, 'gone'));
    await makeFolder(join(root, 'link', 'cache'));
    assert.ok(statSync(join(root, 'gone', 'cache')).isDirectory());
  });

  it('a folder above it that may not be written: permission denied, naming where', async function () {
    const locked = join(root, 'locked');
    mkdirSync(locked, { mode: 0o555 });
    chmodSync(locked, 0o555);
    const dir = join(locked, 'cache');
    const expected = `permission denied creating it in ${locked}: give the user running this write access there, or choose another folder`;
    if (process.getuid?.() !== 0) {
      const err = await refusal(dir);
      assert.deepEqual([err.code, err.message], ['EACCES', expected]);
      return;
    }
    // Root may write anywhere: ask as nobody, who may pass through root's folder but not write in it.
    chmodSync(root, 0o755);
    const script = `require(${JSON.stringify(require.resolve('../lib/client/image-cache'))}).makeFolder(${JSON.stringify(dir)}).then(() => console.log('made'), (e) => console.log(JSON.stringify([e.code, e.message])))`;
    const run = spawnSync(process.execPath, ['-e', script], { uid: 65534, gid: 65534, encoding: 'utf8' });
    if (run.error || run.status !== 0) this.skip(); // no nobody, or no way to read this checkout as nobody
    assert.deepEqual(JSON.parse(run.stdout), ['EACCES', expected]);
  });
});
