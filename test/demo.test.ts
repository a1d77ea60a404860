/**
 * `npm start`'s demo: a real Node-RED process with the package installed
 * into a user dir and the example flow deployed. Triggering the Inject
 * updates the virtual ESP32.
 */
import { strict as assert } from 'node:assert';
import { ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, ROOT, waitForText } from './support/node-red-process';

/** The node types package.json registers: every one must load and have its editor and help. */
const OUR_TYPES = Object.keys(
  (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { 'node-red': { nodes: Record<string, string> } })['node-red'].nodes,
).sort();

describe('npm start (demo)', function () {
  this.timeout(120_000);
  let child: ChildProcess;
  let output = '';
  let port: number;
  let userDir: string;

  const waitForOutput = (pattern: RegExp, timeoutMs: number) => waitForText(() => output, pattern, timeoutMs);

  before(async () => {
    port = await freePort();
    userDir = mkdtempSync(join(tmpdir(), 'ble-ota-demo-'));
    child = spawn(process.execPath, [join(ROOT, 'scripts/start-demo.js')], {
      env: { ...process.env, PORT: String(port), BLE_OTA_DEMO_DIR: userDir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    await waitForOutput(/Started flows/, 90_000);
  });

  after(async () => {
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    rmSync(userDir, { recursive: true, force: true });
  });

  it('serves the editor on 127.0.0.1 with our nodes in the palette', async () => {
    const editor = await fetch(`http://127.0.0.1:${port}/`);
    assert.equal(editor.status, 200);
    const nodes = (await (await fetch(`http://127.0.0.1:${port}/nodes`, { headers: { Accept: 'application/json' } })).json()) as Array<{
      module: string;
      types: string[];
      enabled: boolean;
    }>;
    const ours = nodes.filter((n) => n.module === 'node-red-contrib-esp32-ble-ota');
    assert.deepEqual(ours.flatMap((n) => n.types).sort(), OUR_TYPES);
    assert.ok(ours.every((n) => n.enabled));
  });

  it('serves each node\'s editor, help text and message catalogue', async () => {
    const html = await (await fetch(`http://127.0.0.1:${port}/nodes`, { headers: { Accept: 'text/html' } })).text();
    for (const type of OUR_TYPES) {
      assert.ok(html.includes(`data-template-name="${type}"`), `${type} editor`);
      assert.match(html, new RegExp(`data-help-name="${type}">\\s*<p>\\w`), `${type} help`);
    }
    const catalogue = (await (
      await fetch(`http://127.0.0.1:${port}/locales/node-red-contrib-esp32-ble-ota/ble-ota-upload?lng=en-US`)
    ).json()) as { 'ble-ota-upload': { status: Record<string, string> } };
    assert.equal(catalogue['ble-ota-upload'].status.verifying, 'verifying');
  });

  it("the demo's Inject updates the virtual ESP32", async () => {
    const flows = (await (await fetch(`http://127.0.0.1:${port}/flows`)).json()) as Array<{ id: string; type: string }>;
    const inject = flows.find((n) => n.type === 'inject');
    assert.ok(inject, 'the demo flow is deployed');
    const res = await fetch(`http://127.0.0.1:${port}/inject/${inject.id}`, { method: 'POST' });
    assert.equal(res.status, 200);
    // As the default build: the demo device proved itself (the log says nothing else), and the
    // fleet secret is in no flow file.
    const [line] = await waitForOutput(/updated esp32-demo to demo-app 2\.0\.0 in [\d.]+ s \(v2, confirmed, device id [0-9a-f:]{17}\)\n/, 60_000);
    assert.ok(line);
    const secret = readFileSync(join(userDir, 'owner/fleet.secret'), 'utf8').trim();
    assert.ok(!readFileSync(join(userDir, 'flows.json'), 'utf8').includes(secret));
  });
});
