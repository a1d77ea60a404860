/**
 * Builds the virtual ESP32 (firmware/host) on first use.
 *
 * The binary is compiled from the firmware's own C sources with the host's C
 * compiler, into a cache folder named after a hash of those sources, so an
 * installed package never writes into its own folder and a source change
 * always gets a fresh build.
 *
 * Node-RED runs that binary, so the cache is private: in the user's cache
 * folder (not a fixed name in the shared temporary folder, where another
 * user could create it first and plant a binary), created owner-only, and
 * checked before every use: a folder or binary that another user owns, or
 * that others may write to, is refused, never run.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { BleOtaError } from '../errors';

/** The package's firmware folder, from dist/lib/virtual or lib/virtual. */
export const FIRMWARE_DIR = findFirmwareDir(__dirname);

function findFirmwareDir(start: string): string {
  let dir = start;
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, 'firmware', 'host', 'Makefile');
    if (existsSync(candidate)) return join(dir, 'firmware');
    dir = resolve(dir, '..');
  }
  return resolve(start, '../../../firmware');
}

function listSources(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir).sort()) {
    const full = join(dir, entry);
    if (entry === 'build') continue;
    const st = statSync(full);
    if (st.isDirectory()) out.push(...listSources(full));
    else if (/\.(c|h)$|^Makefile$/.test(entry)) out.push(full);
  }
  return out;
}

/** Names the build folder: a hash of the sources the binary is built from. */
export function sourceHash(): string {
  const hash = createHash('sha256');
  for (const dir of [join(FIRMWARE_DIR, 'host'), join(FIRMWARE_DIR, 'components', 'ble_ota_core')]) {
    for (const file of listSources(dir)) {
      hash.update(file.slice(FIRMWARE_DIR.length));
      hash.update(readFileSync(file));
    }
  }
  return hash.digest('hex').slice(0, 16);
}

let pending: Promise<string> | undefined;

/** Path of a built virtual ESP32 binary; builds it when needed. */
export function ensureVirtualEsp32(): Promise<string> {
  pending ??= build().catch((err: unknown) => {
    pending = undefined;
    throw err;
  });
  return pending;
}

/**
 * Throws unless path is a folder (or, with file, a regular file) that this
 * process's user owns and nobody else may write to; symbolic links are
 * refused too, as they could point anywhere.
 */
export function assertPrivate(path: string, kind: 'folder' | 'file'): void {
  const st = lstatSync(path);
  const uid = process.getuid?.();
  const problem = (kind === 'folder' ? !st.isDirectory() : !st.isFile())
    ? `is not a ${kind}`
    : uid !== undefined && st.uid !== uid
      ? `belongs to another user (uid ${st.uid}, not ${uid})`
      : (st.mode & 0o022) !== 0
        ? `may be written by other users (mode ${(st.mode & 0o777).toString(8)})`
        : undefined;
  if (problem) {
    throw new BleOtaError(
      'VIRTUAL_DEVICE_UNAVAILABLE',
      `Refusing to run the virtual ESP32: ${path} ${problem}. Remove it (or set BLE_OTA_VIRTUAL_CACHE to a folder of your own) and try again.`,
    );
  }
}

/** Creates folder owner-only when missing, then checks it is private. */
function privateFolder(path: string): void {
  mkdirSync(path, { recursive: true, mode: 0o700 });
  assertPrivate(path, 'folder');
}

/**
 * The cache root: BLE_OTA_VIRTUAL_CACHE, else the user's cache folder
 * (XDG_CACHE_HOME or ~/.cache). A user without a usable home (some service
 * accounts) gets a fresh private folder per process (mkdtemp: unpredictable),
 * at the cost of a build per start.
 */
function cacheRoot(): string {
  if (process.env.BLE_OTA_VIRTUAL_CACHE) return process.env.BLE_OTA_VIRTUAL_CACHE;
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  const root = join(base, 'node-red-contrib-esp32-ble-ota', 'virtual-esp32');
  try {
    mkdirSync(root, { recursive: true, mode: 0o700 });
    return root;
  } catch {
    fallbackRoot ??= mkdtempSync(join(tmpdir(), 'ble-ota-virtual-esp32-'));
    return fallbackRoot;
  }
}
let fallbackRoot: string | undefined;

let stateFolder: string | undefined;

/**
 * A private folder for what this process's virtual devices keep while they
 * are stopped (their flash, see VirtualRadio), under the cache root: named
 * after the process, removed when it exits. Folders of processes that no
 * longer run (killed, so no exit handler ran) are removed when the next
 * process makes its own.
 */
export function deviceStateFolder(): string {
  if (stateFolder) return stateFolder;
  const root = cacheRoot();
  privateFolder(root);
  const parent = join(root, 'devices');
  privateFolder(parent);
  for (const entry of readdirSync(parent)) {
    const pid = Number(/^(\d+)-/.exec(entry)?.[1]);
    if (pid && pid !== process.pid && !alive(pid)) rmSync(join(parent, entry), { recursive: true, force: true });
  }
  const folder = mkdtempSync(join(parent, `${process.pid}-`));
  chmodSync(folder, 0o700);
  assertPrivate(folder, 'folder');
  process.once('exit', () => rmSync(folder, { recursive: true, force: true }));
  stateFolder = folder;
  return folder;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // runs, as another user
  }
}

async function build(): Promise<string> {
  const root = cacheRoot();
  privateFolder(root);
  const buildDir = join(root, sourceHash());
  const binary = join(buildDir, 'virtual-esp32');
  if (existsSync(buildDir)) {
    assertPrivate(buildDir, 'folder');
    if (existsSync(binary)) {
      assertPrivate(binary, 'file');
      return binary;
    }
  }

  // Build into a private folder, then rename: two processes building at
  // once both succeed and never run a half-written binary.
  const scratch = `${buildDir}.${process.pid}.tmp`;
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch, { mode: 0o700 });
  try {
    await new Promise<void>((resolvePromise, reject) => {
      execFile('make', ['-s', '-C', join(FIRMWARE_DIR, 'host'), `BUILD_DIR=${scratch}`, 'virtual'], { timeout: 120_000 }, (error, _stdout, stderr) => {
        if (!error) return resolvePromise();
        reject(new BleOtaError('VIRTUAL_DEVICE_UNAVAILABLE', buildFailure((error as NodeJS.ErrnoException).code === 'ENOENT', stderr), { cause: error }));
      });
    });
    // Owner-only whatever the umask: a group-writable binary would be refused.
    chmodSync(join(scratch, 'virtual-esp32'), 0o700);
    try {
      renameSync(scratch, buildDir);
    } catch {
      // Another process won the race: use its build.
      rmSync(scratch, { recursive: true, force: true });
    }
  } catch (err) {
    rmSync(scratch, { recursive: true, force: true });
    throw err;
  }
  // Checked again: whoever won the race, what runs is private.
  assertPrivate(buildDir, 'folder');
  assertPrivate(binary, 'file');
  return binary;
}

/** What to tell when the build failed: what to install where a tool or a header is missing, else make's last lines. */
export function buildFailure(noMake: boolean, stderr: string): string {
  // No make (ENOENT), or make without the compiler it calls ("cc: not found", "No such file").
  if (noMake || /\b(cc|gcc|clang)\b.*(not found|No such file)/i.test(stderr)) {
    return 'The virtual ESP32 is built from C sources on first use and needs `make`, a C compiler (cc) and the zlib and OpenSSL 3 headers: install them (e.g. `apt install build-essential zlib1g-dev libssl-dev`).';
  }
  // A header the compiler cannot find: zlib's or OpenSSL's development package is not installed.
  const header = /\b(zlib|openssl\/[a-z0-9_]+)\.h: No such file/i.exec(stderr)?.[1];
  if (header) {
    const [what, pkg] = header.startsWith('zlib') ? ['zlib', 'zlib1g-dev'] : ['OpenSSL 3', 'libssl-dev'];
    return `The virtual ESP32 is built from C sources on first use and needs the ${what} headers (${header}.h was not found): install them (e.g. \`apt install ${pkg}\`).`;
  }
  return `Building the virtual ESP32 failed: ${stderr.trim().split('\n').slice(-5).join(' | ')}`;
}
