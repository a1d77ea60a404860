/**
 * The files a user names to the command line (the image, --base, a key,
 * --secret-file): regular files of a size such a file can have, or pipes
 * (`--secret-file /dev/stdin`, a shell's `<(...)`, a FIFO), read to their
 * end but never past that size, and waited for no longer than a cancel. A
 * device (/dev/zero reads until memory runs out) or a socket is refused at
 * once, saying what to give instead, before any radio would start.
 */
import { strict as assert } from 'node:assert';
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import {
  closeSync,
  constants,
  createWriteStream,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  readSync,
  renameSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildAppImage } from '../lib/image/app-image-builder';

const MAIN = join(__dirname, '..', 'lib', 'cli', 'main.js');

describe('command-line files that are pipes, devices or too large', function () {
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

  interface Run {
    code: number | null;
    stdout: string;
    stderr: string;
  }

  /**
   * Runs the tool. `producer`: a shell command whose output is piped into the
   * tool's standard input, as a shell does (a pipe; Node's own stdio pipes
   * are sockets). `started` gets the child once it runs.
   */
  function cli(args: string[], producer?: string, started?: (child: ChildProcess) => void): Promise<Run> {
    return new Promise((resolve, reject) => {
      const env = { ...process.env, ESP32_BLE_OTA_SECRET: '' };
      const stdio: Array<'ignore' | 'pipe'> = ['ignore', 'pipe', 'pipe'];
      const child =
        producer === undefined
          ? spawn(process.execPath, [MAIN, ...args], { stdio, env })
          : spawn('sh', ['-c', `${producer} | "$0" "$@"`, process.execPath, MAIN, ...args], { stdio, env });
      children.push(child);
      started?.(child);
      let stdout = '';
      let stderr = '';
      child.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
      child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
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

  /** Writes `data` into the FIFO once a reader has opened it (opening for writing waits for one). */
  function writeFifo(data: Buffer | string): void {
    createWriteStream(fifo).end(data);
  }

  const device = (what: string, give: string) => `${what} is a device or a socket, not a file or a pipe: ${give}. [FILE_UNREADABLE]`;
  const SECRET = 'a1'.repeat(32);
  const provision = (secretFile: string, out: string) => ['provision', '--secret-file', secretFile, '--device-id', '24:0a:c4:12:34:56', '--out', out];

  it('a device as key, secret, image or base: refused at once, naming it and what to give', async () => {
    await refused(['pubkey', '--key', '/dev/zero'], device('/dev/zero', 'give the PEM key file'));
    const out = join(dir, 'signed.bin');
    await refused(['sign', '--key', '/dev/null', '--out', out, image], device('/dev/null', 'give the PEM key file'));
    assert.equal(existsSync(out), false);
    await refused(['verify', '--public-key', '/dev/zero', image], device('/dev/zero', 'give the PEM key file'));
    const give = 'give the file holding the fleet secret (a pipe such as /dev/stdin will do), or the secret itself in ESP32_BLE_OTA_SECRET';
    const key = join(dir, 'key.bin');
    await refused(provision('/dev/zero', key), device('--secret-file /dev/zero', give));
    assert.equal(existsSync(key), false);
    await refused(['upload', '/dev/zero', '--device', 'x', '--virtual'], device('/dev/zero', 'give the app image file'));
    await refused(['upload', image, '--device', 'x', '--virtual', '--base', '/dev/zero'], device('--base /dev/zero', 'give the image the device runs'));
  });

  it('a secret, a key or an image from a pipe is read to its end: /dev/stdin, a FIFO', async () => {
    // The secret from standard input, as a password manager hands it over.
    const key = join(dir, 'stdin.key.bin');
    const fromStdin = await cli(provision('/dev/stdin', key), `echo ${SECRET}`);
    assert.equal(fromStdin.code, 0, fromStdin.stderr);
    assert.ok(existsSync(key));
    // The same secret from a file: the same key partition.
    const file = join(dir, 'fleet.secret');
    writeFileSync(file, SECRET);
    const again = join(dir, 'file.key.bin');
    assert.equal((await cli(provision(file, again))).code, 0);
    assert.deepEqual(readFileSync(key), readFileSync(again));

    // A public key through a FIFO (a shell's <(...) is one).
    const pem = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' });
    const pubkey = cli(['pubkey', '--key', fifo]);
    writeFifo(pem);
    const run = await pubkey;
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /BEGIN PUBLIC KEY/);

    // An image through a FIFO, into a virtual ESP32.
    const upload = cli(['upload', fifo, '--device', 'pipe-esp32', '--virtual']);
    writeFifo(readFileSync(image));
    const uploaded = await upload;
    assert.equal(uploaded.code, 0, uploaded.stderr);
    assert.match(uploaded.stdout, /updated pipe-esp32 .* to 1\.0\.0 .*confirmed/);
  });

  it('a pipe or a file larger than a secret or a key can be: refused, read no further', async () => {
    const key = join(dir, 'large.key.bin');
    const tooMuch = await cli(provision('/dev/stdin', key), 'head -c 204800 /dev/zero');
    assert.equal(tooMuch.code, 1);
    assert.equal(tooMuch.stderr, 'esp32-ble-ota: --secret-file /dev/stdin is more than 65536 bytes: it should hold the fleet secret, 64 hex digits. [INVALID_ARGUMENT]\n');
    assert.equal(existsSync(key), false);
    // Sparse: nothing on disk, 1 GiB a read would take into memory.
    const huge = join(dir, 'huge.secret');
    writeFileSync(huge, '');
    truncateSync(huge, 1024 * 1024 * 1024);
    await refused(provision(huge, key), `--secret-file ${huge} is 1073741824 bytes: it should hold the fleet secret, 64 hex digits. [INVALID_ARGUMENT]`);
    assert.equal(existsSync(key), false);
  });

  /** Resolves once `child` has `path` open (Linux: a link in /proc/<pid>/fd), as the tool holds a pipe while it waits on it. */
  function holds(child: ChildProcess, path: string): Promise<void> {
    const fds = `/proc/${child.pid}/fd`;
    const open = (fd: string) => {
      try {
        return readlinkSync(`${fds}/${fd}`) === path;
      } catch {
        return false; // closed meanwhile
      }
    };
    return until(() => existsSync(fds) && readdirSync(fds).some(open));
  }

  it('a FIFO nobody writes, or whose writer writes nothing: the tool waits, and SIGTERM ends the wait as a cancel', async () => {
    const key = join(dir, 'waiting.key.bin');
    const cancelled = async (writerOpens: boolean) => {
      let child: ChildProcess | undefined;
      const waiting = cli(provision(fifo, key), undefined, (c) => (child = c));
      await holds(child!, fifo);
      // A writer that opens the FIFO and never writes: the tool then waits for data.
      const writer = writerOpens ? openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK) : undefined;
      try {
        child!.kill('SIGTERM');
        const run = await waiting;
        assert.equal(run.code, 130, run.stderr);
        assert.match(run.stderr, new RegExp(`Cancelled while waiting for --secret-file ${fifo} to be written`));
        assert.equal(existsSync(key), false);
      } finally {
        if (writer !== undefined) closeSync(writer);
      }
    };
    await cancelled(false);
    await cancelled(true);
  });

  /** A new FIFO in the test folder. */
  function newFifo(name: string): string {
    const path = join(dir, name);
    execFileSync('mkfifo', [path]);
    return path;
  }

  /** Resolves once `done()` holds, looked at every 20 ms. */
  function until(done: () => boolean): Promise<void> {
    return new Promise((resolve) => {
      const poll = () => (done() ? resolve() : setTimeout(poll, 20));
      poll();
    });
  }

  /** Whether a process has the FIFO open for reading (opening it for writing without waiting then succeeds). */
  function hasReader(path: string): boolean {
    try {
      closeSync(openSync(path, constants.O_WRONLY | constants.O_NONBLOCK));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENXIO') return false;
      throw err;
    }
  }

  const pem = () => generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' });

  it('a cancel after a pipe was read writes nothing into it: another reader of that FIFO gets no stray byte', async () => {
    const first = newFifo('key1');
    const second = newFifo('key2');
    let child: ChildProcess | undefined;
    const signing = cli(['sign', '--key', first, '--key', second, '--out', join(dir, 'stray.bin'), image], undefined, (c) => (child = c));
    await holds(child!, first);
    await new Promise<void>((resolve) =>
      createWriteStream(first)
        .end(pem())
        .on('close', () => resolve()),
    );
    // The first key read and its pipe closed, the tool waits for the second key's writer.
    await until(() => !hasReader(first));
    await holds(child!, second);
    // Another program now reads the first FIFO (a second run of the tool, say).
    const other = openSync(first, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      child!.kill('SIGTERM');
      const run = await signing;
      assert.equal(run.code, 130, run.stderr);
      assert.match(run.stderr, new RegExp(`Cancelled while waiting for ${second} to be written`));
      let got = 0;
      try {
        got = readSync(other, Buffer.alloc(16));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
      }
      assert.equal(got, 0, 'the cancel wrote into a pipe the tool no longer read');
    } finally {
      closeSync(other);
    }
  });

  it('a FIFO whose name is given to a regular file while the tool waits for data: a cancel ends the wait and leaves that file alone', async () => {
    const pipe = newFifo('replaced');
    const key = join(dir, 'replaced.key.bin');
    let child: ChildProcess | undefined;
    const waiting = cli(provision(pipe, key), undefined, (c) => (child = c));
    await holds(child!, pipe);
    const writer = openSync(pipe, constants.O_WRONLY | constants.O_NONBLOCK); // a writer that has not written yet
    try {
      renameSync(pipe, `${pipe}.old`);
      writeFileSync(pipe, 'notes\n');
      child!.kill('SIGTERM');
      const run = await waiting;
      assert.equal(run.code, 130, run.stderr);
      assert.equal(readFileSync(pipe, 'utf8'), 'notes\n');
      assert.equal(existsSync(key), false);
    } finally {
      closeSync(writer);
    }
  });

  it('one pipe named for two files (image and --base, two keys): refused before anything is read', async () => {
    const pipe = newFifo('twice');
    const twice = await cli(['upload', pipe, '--base', pipe, '--device', 'x', '--virtual']);
    assert.equal(twice.code, 2, twice.stderr);
    assert.ok(
      twice.stderr.startsWith(`esp32-ble-ota: --base ${pipe} is the same pipe as ${pipe}, and a pipe can be read only once: give each its own file or pipe\n`),
      twice.stderr,
    );
    const keys = await cli(['sign', '--key', pipe, '--key', pipe, '--out', join(dir, 'twice.bin'), image]);
    assert.equal(keys.code, 2, keys.stderr);
    assert.match(keys.stderr, new RegExp(`--key ${pipe} is the same pipe as --key ${pipe}`));
    // Standard input named twice: the second read would find it empty.
    const stdin = await cli(['upload', '/dev/stdin', '--base', '/dev/stdin', '--device', 'x', '--virtual'], `cat ${image}`);
    assert.equal(stdin.code, 2, stdin.stderr);
    assert.match(stdin.stderr, /--base \/dev\/stdin is the same pipe as \/dev\/stdin/);
  });

  it("--secret-file /dev/stdin when standard input is a socket (Node's spawn, stdio 'pipe'): says so, and what to give instead", async () => {
    const key = join(dir, 'socket.key.bin');
    const child = spawn(process.execPath, [MAIN, ...provision('/dev/stdin', key)], { stdio: 'pipe', env: { ...process.env, ESP32_BLE_OTA_SECRET: '' } });
    children.push(child);
    child.stdin.on('error', () => undefined); // the tool may have ended before reading
    child.stdin.end(`${SECRET}\n`);
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const code = await new Promise((resolve) => child.on('close', resolve));
    assert.equal(code, 1, stderr);
    assert.equal(
      stderr,
      "esp32-ble-ota: --secret-file /dev/stdin is standard input, which is a socket here, as Node's spawn makes it with stdio 'pipe'; a socket cannot be opened by its name: " +
        'pipe it in ("producer | esp32-ble-ota ..."), or give the file holding the fleet secret (a pipe such as /dev/stdin will do), or the secret itself in ESP32_BLE_OTA_SECRET. [FILE_UNREADABLE]\n',
    );
    assert.ok(!stderr.includes(SECRET));
    assert.equal(existsSync(key), false);
  });
});
