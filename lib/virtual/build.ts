/**
 * Builds the virtual ESP32 (firmware/host) on first use.
 *
 * The binary is compiled from the firmware's own C sources with the host's C
 * compiler, into a cache folder named after a hash of those sources, so an
 * installed package never writes into its own folder and a source change
 * always gets a fresh build.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
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

function sourceHash(): string {
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

async function build(): Promise<string> {
  const cacheRoot = process.env.BLE_OTA_VIRTUAL_CACHE ?? join(tmpdir(), 'ble-ota-virtual-esp32');
  const buildDir = join(cacheRoot, sourceHash());
  const binary = join(buildDir, 'virtual-esp32');
  if (existsSync(binary)) return binary;

  // Build into a private folder, then rename: two processes building at
  // once both succeed and never run a half-written binary.
  const scratch = `${buildDir}.${process.pid}.tmp`;
  mkdirSync(scratch, { recursive: true });
  try {
    await new Promise<void>((resolvePromise, reject) => {
      execFile(
        'make',
        ['-s', '-C', join(FIRMWARE_DIR, 'host'), `BUILD_DIR=${scratch}`, 'virtual'],
        { timeout: 120_000 },
        (error, _stdout, stderr) => {
          if (!error) return resolvePromise();
          const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
          reject(
            new BleOtaError(
              'BLUETOOTH_UNAVAILABLE',
              missing
                ? 'the virtual ESP32 is built from C sources on first use and needs `make` and a C compiler (cc); install them (e.g. `apt install build-essential`)'
                : `building the virtual ESP32 failed: ${stderr.trim().split('\n').slice(-5).join(' | ')}`,
              { cause: error },
            ),
          );
        },
      );
    });
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
  return binary;
}
