/**
 * BlueZ's controller emulator, btvirt, for tests: one process whose LE
 * server socket gives every connection a controller of its own; the
 * controllers of one process advertise to, scan, connect to and carry ACL
 * data between each other.
 *
 * btvirt's socket paths are fixed (/tmp/bt-server-*): one runs at a time.
 * Its controllers open an AF_ALG socket when created; where the kernel has
 * none, afalg-shim.c (built here with the system's C compiler) stands in.
 */
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, rmSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { join, resolve } from 'node:path';
import { BTVIRT_LE_SOCKET } from './hci-transport';

const BTVIRT_SOCKETS = ['le', 'bredr', 'bredrle', 'amp', 'mon'].map((kind) => `/tmp/bt-server-${kind}`);
const SHIM_SOURCE = resolve(__dirname, '../../../../test/support/emulated-controller/afalg-shim.c');
const SHIM = join(__dirname, 'afalg-shim.so');

export class BtvirtMissingError extends Error {
  constructor() {
    super("btvirt is not installed: the emulated-controller tests need BlueZ's controller emulator (apt-get install bluez-test-tools)");
  }
}

function findBtvirt(): string {
  for (const dir of (process.env.PATH ?? '').split(':').concat('/usr/bin', '/usr/sbin')) {
    const candidate = join(dir, 'btvirt');
    if (dir && existsSync(candidate)) return candidate;
  }
  throw new BtvirtMissingError();
}

function buildShim(): string {
  const stale = !existsSync(SHIM) || statSync(SHIM).mtimeMs < statSync(SHIM_SOURCE).mtimeMs;
  if (stale) {
    execFileSync('cc', ['-std=c11', '-shared', '-fPIC', '-O2', '-Wall', '-Wextra', '-Werror', '-o', SHIM, SHIM_SOURCE, '-ldl']);
  }
  return SHIM;
}

/** Whether something already answers on btvirt's LE socket. */
function socketAnswers(path: string): Promise<boolean> {
  return new Promise((done) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.destroy();
      done(true);
    });
    socket.once('error', () => done(false));
  });
}

export class Btvirt {
  private constructor(private readonly child: ChildProcess) {}

  /** Starts btvirt and resolves once its LE socket takes connections. */
  static async start(): Promise<Btvirt> {
    const binary = findBtvirt();
    if (await socketAnswers(BTVIRT_LE_SOCKET)) {
      throw new Error(`another btvirt already serves ${BTVIRT_LE_SOCKET}: stop it first (pkill btvirt)`);
    }
    for (const path of BTVIRT_SOCKETS) rmSync(path, { force: true });
    // SIGPIPE ignored (an ignored signal stays so across exec): a host that goes away, as a
    // process ends, makes btvirt's next write to its controller's socket fail with EPIPE
    // instead of killing btvirt, and with it every other controller.
    const child = spawn('/bin/sh', ['-c', 'trap "" PIPE; exec "$0" -s -l0', binary], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, LD_PRELOAD: buildShim() },
    });
    const stderr: string[] = [];
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => stderr.push(chunk));
    const btvirt = new Btvirt(child);
    const exited = new Promise<never>((_, reject) => child.once('exit', (code) => reject(new Error(`btvirt exited (code ${code}): ${stderr.join('').trim()}`))));
    exited.catch(() => undefined);
    // Until the socket exists: a process start, not a race to win.
    for (;;) {
      const ready = await Promise.race([socketAnswers(BTVIRT_LE_SOCKET), exited]);
      if (ready) return btvirt;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    await exited;
    for (const path of BTVIRT_SOCKETS) rmSync(path, { force: true });
  }
}
