/**
 * A real Node-RED process for tests: a temporary user dir with this package
 * linked in (as `npm install <path>` does), the given flows deployed, on a
 * free loopback port.
 */
import { ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { AddressInfo, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';

export const ROOT = resolve(__dirname, '../../..');

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => res(port));
    });
    server.on('error', rej);
  });
}

/** Waits until what `text` returns matches `pattern`; fails with the end of the text after timeoutMs. */
export function waitForText(text: () => string, pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
  return new Promise((res, rej) => {
    const check = () => {
      const m = text().match(pattern);
      if (m) {
        clearInterval(timer);
        clearTimeout(deadline);
        res(m);
      }
    };
    const timer = setInterval(check, 50);
    const deadline = setTimeout(() => {
      clearInterval(timer);
      rej(new Error(`no ${pattern} in Node-RED's output within ${timeoutMs} ms:\n${text().slice(-3000)}`));
    }, timeoutMs);
    check();
  });
}

export class NodeRedProcess {
  output = '';
  private constructor(
    readonly child: ChildProcess,
    readonly port: number,
    readonly userDir: string,
  ) {
    child.stdout!.on('data', (d: Buffer) => (this.output += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (this.output += d.toString()));
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /**
   * Starts Node-RED with `flows` (nodes without a tab get one) and waits
   * until they run. `runtime`: another Node.js binary and Node-RED (red.js)
   * than this process's and the devDependency's; by default those in
   * BLE_OTA_NODE_BINARY and BLE_OTA_RED_JS when set (test/node-red-5.test.ts
   * runs the tests that start Node-RED with Node-RED 5 on Node.js 22).
   */
  static async start(
    flows: Array<Record<string, unknown>>,
    extraSettings = '',
    env: Record<string, string> = {},
    runtime: { node?: string; red?: string } = {},
  ): Promise<NodeRedProcess> {
    const port = await freePort();
    const userDir = mkdtempSync(join(tmpdir(), 'ble-ota-nr-'));
    const modules = join(userDir, 'node_modules');
    mkdirSync(modules);
    symlinkSync(relative(modules, ROOT), join(modules, 'node-red-contrib-esp32-ble-ota'), 'dir');
    const tab = { id: 'f1f1f1f1f1f1f1f1', type: 'tab', label: 'test' };
    const placed = flows.map((n) => ('z' in n ? { ...n, z: tab.id } : n));
    writeFileSync(join(userDir, 'flows.json'), JSON.stringify([tab, ...placed]));
    writeFileSync(
      join(userDir, 'settings.js'),
      `module.exports = { uiHost: '127.0.0.1', uiPort: ${port}, flowFile: 'flows.json', credentialSecret: false,
        fileWorkingDirectory: ${JSON.stringify(userDir)}, editorTheme: { tours: false }, telemetry: { enabled: false }, ${extraSettings} };`,
    );
    const red = runtime.red ?? process.env.BLE_OTA_RED_JS ?? require.resolve('node-red/red.js', { paths: [ROOT] });
    const child = spawn(runtime.node ?? process.env.BLE_OTA_NODE_BINARY ?? process.execPath, [red, '--userDir', userDir, '--settings', join(userDir, 'settings.js')], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    const nr = new NodeRedProcess(child, port, userDir);
    await nr.waitForOutput(/Started flows|Flows sind gestartet/, 60_000); // English, or German (lang: 'de')
    // Node-RED logs the flows' start before red.js opens its HTTP port: the admin API and Inject buttons wait for that.
    await nr.waitForPort(60_000);
    const major = process.env.BLE_OTA_EXPECT_NODE_RED; // the run on Node-RED 5 makes sure it got it
    if (major && !new RegExp(`Node-RED version: v${major}\\.`, 'i').test(nr.output)) {
      // 'Version' in German
      await nr.stop();
      throw new Error(`expected Node-RED ${major}, got: ${/Node-RED version: \S+/i.exec(nr.output)?.[0]}`);
    }
    return nr;
  }

  waitForOutput(pattern: RegExp, timeoutMs: number, from = 0): Promise<RegExpMatchArray> {
    return waitForText(() => this.output.slice(from), pattern, timeoutMs);
  }

  /** Waits until Node-RED's HTTP port takes connections; fails at once, with its output, if the process ends first. */
  private async waitForPort(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`Node-RED ended (${this.child.exitCode ?? this.child.signalCode}) before it listened on port ${this.port}:\n${this.output.slice(-3000)}`);
      }
      const open = await new Promise<boolean>((res) => {
        const socket = connect(this.port, '127.0.0.1');
        socket.once('connect', () => {
          socket.destroy();
          res(true);
        });
        socket.once('error', () => res(false));
      });
      if (open) return;
      if (Date.now() > deadline) throw new Error(`Node-RED did not listen on port ${this.port} within ${timeoutMs} ms:\n${this.output.slice(-3000)}`);
      await new Promise((res) => setTimeout(res, 50));
    }
  }

  /**
   * Deploys `flow` in one tab through the admin API, as the editor does (a
   * full deployment), each node given the credentials `credentials` returns
   * for it; resolves when the flows run.
   */
  async deploy(flow: Array<Record<string, unknown>>, credentials: (node: Record<string, unknown>) => Record<string, unknown> | undefined = () => undefined): Promise<void> {
    const tab = { id: 'f1f1f1f1f1f1f1f1', type: 'tab', label: 'deployed' };
    const nodes = flow.map((n) => {
      const placed = 'z' in n ? { ...n, z: tab.id } : n;
      const given = credentials(n);
      return given ? { ...placed, credentials: given } : placed;
    });
    const from = this.output.length;
    const res = await fetch(`${this.url}/flows`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'Node-RED-Deployment-Type': 'full' },
      body: JSON.stringify([tab, ...nodes]),
    });
    if (res.status !== 200 && res.status !== 204) throw new Error(`deploy: HTTP ${res.status}`);
    await this.waitForOutput(/Started flows|Flows sind gestartet/, 30_000, from);
  }

  /** Presses an Inject node's button, as the editor does. */
  async inject(id: string): Promise<void> {
    const res = await fetch(`${this.url}/inject/${id}`, { method: 'POST' });
    if (res.status !== 200) throw new Error(`inject ${id}: HTTP ${res.status}`);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((r) => this.child.once('exit', r));
      this.child.kill('SIGTERM');
      // A node that never finishes closing must not hold the test run: Node-RED then gets SIGKILL.
      const killer = setTimeout(() => this.child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(killer);
    }
    rmSync(this.userDir, { recursive: true, force: true });
  }
}
