/**
 * The files a user names to the command line (the image, --base, a key,
 * --secret-file) are read only when they are regular files of a size such
 * a file can have: a FIFO would keep the tool waiting for a writer, where
 * not even Ctrl-C ends the wait, and a device (/dev/zero) reads until
 * memory runs out. Each is refused at once, saying what to give instead.
 * No radio: every refusal comes before one would start.
 */
import { strict as assert } from 'node:assert';
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { closeSync, constants, existsSync, mkdtempSync, openSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildAppImage } from '../lib/image/app-image-builder';

const MAIN = join(__dirname, '..', 'lib', 'cli', 'main.js');

describe('command-line files that are no regular file', function () {
  this.timeout(60_000);
  let dir: string;
  let fifo: string;
  let image: string;
  const children: ChildProcess[] = [];

  before(function () {
    dir = mkdtempSync(join(tmpdir(), 'ble-ota-cli-files-'));
    fifo = join(dir, 'pipe');
    try {
      execFileSync('mkfifo', [fifo]);
    } catch {
      this.skip();
    }
    image = join(dir, 'app.bin');
    writeFileSync(image, buildAppImage({ size: 16 * 1024, projectName: 'lamp', version: '1.0.0', seed: 7 }));
  });

  after(() => {
    // Should a child still wait in the FIFO's open (the defect these tests catch), it ends here.
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ESP32_BLE_OTA_SECRET: '' } });
      children.push(child);
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
      child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
  }

  async function refused(args: string[], message: string): Promise<void> {
    const run = await cli(args);
    assert.equal(run.code, 1, run.stderr);
    assert.equal(run.stderr, `esp32-ble-ota: ${message}\n`);
    assert.equal(run.stdout, '');
  }

  const notRegular = (what: string, give: string) => `${what} is not a regular file (a device, a pipe or a socket): ${give}. [FILE_UNREADABLE]`;

  it('a key that is a FIFO or a device: refused at once, naming it', async () => {
    await refused(['pubkey', '--key', fifo], notRegular(fifo, 'give the PEM key file'));
    await refused(['pubkey', '--key', '/dev/null'], notRegular('/dev/null', 'give the PEM key file'));
    const out = join(dir, 'signed.bin');
    await refused(['sign', '--key', fifo, '--out', out, image], notRegular(fifo, 'give the PEM key file'));
    assert.equal(existsSync(out), false);
    await refused(['verify', '--public-key', fifo, image], notRegular(fifo, 'give the PEM key file'));
  });

  it('a --secret-file that is a FIFO, a device or too large for a secret: refused at once, saying where a secret may come from', async () => {
    const out = join(dir, 'key.bin');
    const give = 'give the file holding the fleet secret, or the secret itself in ESP32_BLE_OTA_SECRET';
    const provision = (secretFile: string) => ['provision', '--secret-file', secretFile, '--device-id', '24:0a:c4:12:34:56', '--out', out];
    await refused(provision(fifo), notRegular(`--secret-file ${fifo}`, give));
    await refused(provision('/dev/null'), notRegular('--secret-file /dev/null', give));
    // Sparse: nothing on disk, 1 GiB a read would take into memory.
    const huge = join(dir, 'huge.secret');
    writeFileSync(huge, '');
    truncateSync(huge, 1024 * 1024 * 1024);
    await refused(provision(huge), `--secret-file ${huge} is 1073741824 bytes: it should hold the fleet secret, 64 hex digits. [INVALID_ARGUMENT]`);
    assert.equal(existsSync(out), false);
  });

  it('an image or --base that is a FIFO: refused at once', async () => {
    await refused(['upload', fifo, '--device', 'x', '--virtual'], notRegular(fifo, 'give the app image file'));
    await refused(['upload', image, '--device', 'x', '--virtual', '--base', fifo], notRegular(`--base ${fifo}`, 'give the image the device runs'));
  });

  // Nothing above opened the FIFO for reading: a writer opening it without waiting finds no reader.
  it('left the FIFO unopened', () => {
    assert.throws(() => closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK)), { code: 'ENXIO' });
  });
});
