/**
 * `npm start`'s demo: a real Node-RED process with the package installed
 * into a user dir and the example flow deployed. Triggering the Inject
 * updates the virtual ESP32. It starts beside a server that holds its port
 * (another Node-RED, say) on the next free one and says which URL to open;
 * the flows a user changed are kept across starts, until --reset.
 */
import { strict as assert } from 'node:assert';
import { ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, ROOT, waitForText } from './support/node-red-process';

/** The node types package.json registers: every one must load and have its editor and help. */
const OUR_TYPES = Object.keys((JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { 'node-red': { nodes: Record<string, string> } })['node-red'].nodes).sort();

const RUNNING = /Node-RED with the BLE OTA demo is running: open (http:\/\/127\.0\.0\.1:(\d+))\n/;

type FlowNode = { id: string; type: string; name?: string; z?: string };

/** One `npm start` (the script it runs), its output, and the URL it said to open. */
class Demo {
  output = '';
  url = '';
  private constructor(readonly child: ChildProcess) {
    child.stdout!.on('data', (d: Buffer) => (this.output += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (this.output += d.toString()));
  }

  static async start(userDir: string, env: Record<string, string>, args: string[] = []): Promise<Demo> {
    const child = spawn(process.execPath, [join(ROOT, 'scripts/start-demo.js'), ...args], {
      env: { ...process.env, BLE_OTA_DEMO_DIR: userDir, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const demo = new Demo(child);
    const exited = new Promise<never>((_, reject) => child.once('exit', (code) => reject(new Error(`npm start ended (${code}):\n${demo.output}`))));
    const [, url] = await Promise.race([demo.waitFor(RUNNING, 90_000), exited]);
    demo.url = url;
    return demo;
  }

  waitFor(pattern: RegExp, timeoutMs: number, from = 0): Promise<RegExpMatchArray> {
    return waitForText(() => this.output.slice(from), pattern, timeoutMs);
  }

  async flows(): Promise<FlowNode[]> {
    return (await (await fetch(`${this.url}/flows`)).json()) as FlowNode[];
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    await exited;
  }
}

describe('npm start (demo)', function () {
  this.timeout(120_000);
  let demo: Demo;
  let userDir: string;
  let taken: number;
  let holder: Server;

  before(async () => {
    // Another server on the port the demo is asked for, as a Node-RED on 1880 would be.
    taken = await freePort();
    holder = createServer();
    await new Promise<void>((resolve) => holder.listen(taken, '127.0.0.1', resolve));
    userDir = mkdtempSync(join(tmpdir(), 'ble-ota-demo-'));
    demo = await Demo.start(userDir, { PORT: String(taken) });
  });

  after(async () => {
    await demo?.stop();
    holder?.close();
    rmSync(userDir, { recursive: true, force: true });
  });

  it('takes another port when its own is taken, says so, and gives the URL once Node-RED listens there', async () => {
    assert.match(demo.output, new RegExp(`Port ${taken} is in use \\(another Node-RED\\?\\): the demo takes port (\\d+)\\.`));
    assert.notEqual(demo.url, `http://127.0.0.1:${taken}`);
    assert.ok(!demo.output.includes(`http://127.0.0.1:${taken}`), 'no URL of the taken port');
    // Printed after Node-RED said it listens, and once.
    assert.ok(demo.output.indexOf('Server now running at') < demo.output.search(RUNNING));
    assert.equal(demo.output.split('Node-RED with the BLE OTA demo is running').length, 2);
    assert.equal((await fetch(`${demo.url}/`)).status, 200);
  });

  it('serves the editor on 127.0.0.1 with our nodes in the palette', async () => {
    const nodes = (await (await fetch(`${demo.url}/nodes`, { headers: { Accept: 'application/json' } })).json()) as Array<{
      module: string;
      types: string[];
      enabled: boolean;
    }>;
    const ours = nodes.filter((n) => n.module === 'node-red-contrib-esp32-ble-ota');
    assert.deepEqual(ours.flatMap((n) => n.types).sort(), OUR_TYPES);
    assert.ok(ours.every((n) => n.enabled));
  });

  it("serves each node's editor, help text and message catalogue", async () => {
    const html = await (await fetch(`${demo.url}/nodes`, { headers: { Accept: 'text/html' } })).text();
    for (const type of OUR_TYPES) {
      assert.ok(html.includes(`data-template-name="${type}"`), `${type} editor`);
      assert.match(html, new RegExp(`data-help-name="${type}">\\s*<p>\\w`), `${type} help`);
    }
    const catalogue = (await (await fetch(`${demo.url}/locales/node-red-contrib-esp32-ble-ota/ble-ota-upload?lng=en-US`)).json()) as {
      'ble-ota-upload': { status: Record<string, string> };
    };
    assert.equal(catalogue['ble-ota-upload'].status.verifying, 'verifying');
  });

  it("the demo's Inject updates the virtual ESP32 with a sample signed with the demo's key", async () => {
    const inject = (await demo.flows()).find((n) => n.type === 'inject');
    assert.ok(inject, 'the demo flow is deployed');
    const res = await fetch(`${demo.url}/inject/${inject.id}`, { method: 'POST' });
    assert.equal(res.status, 200);
    // As the default build: the demo device proved itself (the log says nothing else), and the
    // fleet secret is in no flow file.
    await demo.waitFor(/updated esp32-demo to demo-app 2\.0\.0 in [\d.]+ s \(v2, confirmed, device id [0-9a-f:]{17}\)\n/, 60_000);
    const secret = readFileSync(join(userDir, 'owner/fleet.secret'), 'utf8').trim();
    assert.ok(!readFileSync(join(userDir, 'flows.json'), 'utf8').includes(secret));
    assert.ok(!existsSync(join(userDir, 'firmware')), 'no firmware file: the sample node makes the image');
  });

  it('keeps the flows a user deployed across starts; --reset puts the example back and keeps the old flows aside', async () => {
    // A change made in the editor: a comment added to the demo's tab, deployed.
    const flows = await demo.flows();
    const tab = flows.find((n) => n.type === 'tab')!;
    const changed = [...flows, { id: 'c0ffee0000000001', type: 'comment', z: tab.id, name: 'my change', info: '', x: 200, y: 300, wires: [] }];
    const deployed = await fetch(`${demo.url}/flows`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'Node-RED-Deployment-Type': 'full' },
      body: JSON.stringify(changed),
    });
    assert.ok(deployed.status === 200 || deployed.status === 204, `deploy: HTTP ${deployed.status}`);
    await demo.stop();

    demo = await Demo.start(userDir, { PORT: String(taken) });
    assert.match(demo.output, /Your flows from the last start are kept; npm start -- --reset puts the example back\./);
    assert.ok(
      (await demo.flows()).some((n) => n.name === 'my change'),
      'the change is still there',
    );
    await demo.stop();

    demo = await Demo.start(userDir, { PORT: String(taken) }, ['--reset']);
    assert.match(demo.output, /The example flow is back; the flows before it are in .*flows\.json\.before-reset\./);
    const reset = await demo.flows();
    assert.ok(!reset.some((n) => n.name === 'my change'), 'the change is gone');
    assert.deepEqual(
      reset
        .filter((n) => n.type !== 'tab')
        .map((n) => n.type)
        .sort(),
      examplesTypes(),
    );
    assert.ok(readFileSync(join(userDir, 'flows.json.before-reset'), 'utf8').includes('my change'));
    // The device node still holds the demo's fleet secret: the demo device proves itself.
    const inject = reset.find((n) => n.type === 'inject')!;
    const from = demo.output.length;
    await fetch(`${demo.url}/inject/${inject.id}`, { method: 'POST' });
    await demo.waitFor(/(updated esp32-demo to|esp32-demo already runs) demo-app 2\.0\.0 .*device id [0-9a-f:]{17}\)\n/, 60_000, from);
  });

  it('a mistake on the command line or in PORT is said, with the usage, and starts nothing', async () => {
    for (const [args, env, message] of [
      [['--rest'], {}, /npm start: unknown option "--rest"\nusage: npm start \[-- --reset\]/],
      [[], { PORT: 'eighteen' }, /npm start: PORT is "eighteen": give a port number from 1 to 65535/],
    ] as const) {
      const child = spawn(process.execPath, [join(ROOT, 'scripts/start-demo.js'), ...args], {
        env: { ...process.env, BLE_OTA_DEMO_DIR: join(userDir, 'unused'), ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const code = await new Promise((r) => child.once('exit', r));
      assert.equal(code, 2);
      assert.match(stderr, message);
      assert.ok(!existsSync(join(userDir, 'unused')));
    }
  });
});

/** The node types of the example the demo deploys. */
function examplesTypes(): string[] {
  const example = JSON.parse(readFileSync(join(ROOT, 'examples/update-virtual-esp32.json'), 'utf8')) as FlowNode[];
  return example.map((n) => n.type).sort();
}
