/**
 * A platform that hides device addresses (macOS: CoreBluetooth gives noble
 * an empty address for every device): the client still reaches the device
 * it started with, by noble's id, when it connects again after RESTART and
 * when a scan reads each device's version, with other OTA devices in range;
 * and a user picks one of two devices of one name by the id a scan shows,
 * in the command line and in the upload node.
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './support/node-red-process';
import { main } from '../lib/cli/main';
import { discoverOtaDevices } from '../lib/client/discovery';
import { BleOtaClient } from '../lib/client/ota-client';
import { buildAppImage } from '../lib/image/app-image-builder';
import type { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { sharedVirtualRadio, VirtualRadio } from '../lib/virtual/virtual-radio';
import { catchNode, deviceNode, exchange, helper, TestNode, uploadNode, useNodeRed } from './support/node-red';
import { OWNER, ownedDevice, signedImage } from './support/owner';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const scanNode = require('../nodes/ble-ota-scan/ble-ota-scan') as unknown;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const sampleNode = require('../nodes/ble-ota-sample/ble-ota-sample') as unknown;
/** Node-RED's own Change and Switch nodes, which the examples use. */
const coreNode = (file: string) =>
  require(require.resolve(`@node-red/nodes/core/function/${file}`, { paths: [process.env.BLE_OTA_NODE_RED ?? require.resolve('node-red')] })) as unknown; // eslint-disable-line @typescript-eslint/no-require-imports

/** Makes a radio's advertisements carry no address, as noble reports them on macOS; returns what undoes it. */
function hideAddresses(radio: VirtualRadio): () => void {
  const emit = radio.bindings.emit;
  const bound = emit.bind(radio.bindings);
  radio.bindings.emit = (event: string | symbol, ...args: unknown[]) => {
    if (event === 'discover') args[1] = '';
    return bound(event, ...args);
  };
  return () => {
    radio.bindings.emit = emit;
  };
}

/** A radio whose advertisements carry no address. */
function radioWithoutAddresses(): VirtualRadio {
  const radio = new VirtualRadio();
  hideAddresses(radio);
  return radio;
}

/** Two devices of one name: the case only an id tells apart where addresses are hidden. */
const TWINS = [
  { name: 'hidden-lamp', address: '24:0a:c4:00:0a:01' },
  { name: 'hidden-lamp', address: '24:0a:c4:00:0a:02' },
];

/** The slot a device runs, and whether the update under test left it alone. */
const running = async (device: VirtualEsp32) => (await device.state()).running;

describe('a platform that hides device addresses (macOS)', function () {
  this.timeout(60_000);
  let radio: VirtualRadio;
  let dir: string;
  beforeEach(() => {
    radio = radioWithoutAddresses();
    dir = mkdtempSync(join(tmpdir(), 'ble-ota-hidden-'));
  });
  afterEach(async () => {
    await radio.stopAll();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the connection after RESTART goes to the device updated, not to another OTA device in range', async () => {
    // The other device is added first: a reconnection to "any OTA device" would find it.
    const other = await radio.addDevice(ownedDevice({ name: 'hidden-other', restartDelayMs: 20 }));
    const target = await radio.addDevice(ownedDevice({ name: 'hidden-target', restartDelayMs: 20 }));
    const otherBefore = await other.state();
    const client = new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000, gattMs: 2000 } });
    const result = await client.update({ target: { name: 'hidden-target' }, image: signedImage({ size: 40 * 1024, version: '2.0.0', seed: 7 }), secret: OWNER.secret });
    assert.equal(result.confirmed, true);
    assert.equal(result.runningVersion, '2.0.0');
    assert.equal(result.device.address, '');
    const state = await target.state();
    assert.notEqual(state.running, otherBefore.running, 'the target runs the new slot');
    assert.equal(state.slots[state.running].state, 'valid');
    assert.deepEqual(await other.state(), otherBefore, 'the other device was left alone');
  });

  it('a scan that reads versions reads each device its own', async () => {
    for (const [name, version] of [
      ['hidden-a', '1.1.0'],
      ['hidden-b', '2.2.0'],
    ]) {
      const file = join(dir, `${name}.bin`);
      writeFileSync(file, buildAppImage({ projectName: 'hidden', version, size: 8192 }));
      await radio.addDevice({ name, image: file, allowUnauthenticated: true });
    }
    const client = new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000 } });
    const found = await discoverOtaDevices(client, { durationMs: 500, readVersions: true });
    assert.deepEqual(found.map((d) => `${d.name} ${d.version}`).sort(), ['hidden-a 1.1.0', 'hidden-b 2.2.0']);
  });
});

describe('a platform that hides device addresses: two devices of one name, picked by id', function () {
  this.timeout(60_000);
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), 'ble-ota-hidden-id-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('the CLI: scan prints each id where the address is empty, and upload --device <id> updates that device only', async () => {
    const radio = radioWithoutAddresses();
    try {
      const twins = [await radio.addDevice(TWINS[0]), await radio.addDevice(TWINS[1])];
      const run = async (argv: string[]) => {
        let stdout = '';
        let stderr = '';
        const io = {
          stdout: { write: (s: string | Uint8Array) => (stdout += String(s)) },
          stderr: { write: (s: string | Uint8Array) => (stderr += String(s)) },
          signal: new AbortController().signal,
          noble: radio.noble,
        };
        const status = await main(argv, io);
        return { status, stdout, stderr };
      };

      const json = await run(['scan', '--json', '--duration', '0.5']);
      assert.equal(json.status, 0, json.stderr);
      const seen = (JSON.parse(json.stdout) as Array<{ name: string; address: string; id: string }>).filter((d) => d.name === 'hidden-lamp');
      assert.equal(seen.length, 2, json.stdout);
      assert.deepEqual(
        seen.map((d) => d.address),
        ['', ''],
      );
      const ids = seen.map((d) => d.id);
      assert.equal(new Set(ids).size, 2, 'each device its own id');

      const table = await run(['scan', '--duration', '0.5']);
      assert.equal(table.status, 0, table.stderr);
      assert.match(table.stdout, /^NAME +ADDRESS OR ID +RSSI +OTA$/m);
      for (const id of ids) assert.match(table.stdout, new RegExp(`^hidden-lamp +${id} +-\\d+ +yes$`, 'm'));

      // The second device seen, by its id; the other has the same name and must be left alone.
      const file = join(dir, 'lamp-2.0.0.bin');
      writeFileSync(file, buildAppImage({ size: 24 * 1024, projectName: 'lamp', version: '2.0.0', seed: 3 }));
      const chosen = twins.find((d) => d.address.replace(/:/g, '') === ids[1])!;
      const other = twins.find((d) => d !== chosen)!;
      const otherBefore = await other.state();
      const upload = await run(['upload', file, '--device', ids[1].toUpperCase(), '--no-cache', '--json']);
      assert.equal(upload.status, 0, upload.stderr);
      const result = JSON.parse(upload.stdout) as { confirmed: boolean; runningVersion: string; device: { address: string } };
      assert.equal(result.confirmed, true);
      assert.equal(result.runningVersion, '2.0.0');
      assert.equal(result.device.address, '');
      assert.equal(await running(chosen), 'ota_1', 'the device of that id runs the new image');
      assert.deepEqual(await other.state(), otherBefore, 'the other device of that name was left alone');

      // scan --device <id> lists that device only.
      const one = await run(['scan', '--json', '--duration', '0.5', '--device', ids[0]]);
      assert.equal(one.status, 0, one.stderr);
      assert.deepEqual(
        (JSON.parse(one.stdout) as Array<{ id: string }>).map((d) => d.id),
        [ids[0]],
      );
    } finally {
      await radio.stopAll();
    }
  });

  describe('the nodes', () => {
    useNodeRed();
    let restore: (() => void) | undefined;
    afterEach(() => restore?.());

    type Msg = Record<string, unknown>;
    async function deploy(device: string): Promise<{ up: TestNode; out: TestNode; errors: TestNode; scan: TestNode; found: TestNode }> {
      const flow = [
        { id: 'tab', type: 'tab' },
        { id: 'dev', type: 'ble-ota-device', device, backend: 'virtual', virtualDevices: '', scanTimeout: 3, operationTimeout: 3 },
        { id: 'up', z: 'tab', type: 'ble-ota-upload', device: 'dev', wires: [['out'], []] },
        { id: 'scan', z: 'tab', type: 'ble-ota-scan', device: 'dev', duration: 1, output: 'each', namePattern: 'hidden-*', wires: [['found']] },
        { id: 'out', z: 'tab', type: 'helper' },
        { id: 'found', z: 'tab', type: 'helper' },
        { id: 'catcher', z: 'tab', type: 'catch', scope: null, uncaught: false, wires: [['errors']] },
        { id: 'errors', z: 'tab', type: 'helper' },
      ];
      await new Promise<void>((resolve) => helper.load([deviceNode, uploadNode, scanNode, catchNode], flow, resolve));
      const get = (id: string) => helper.getNode(id);
      return { up: get('up'), out: get('out'), errors: get('errors'), scan: get('scan'), found: get('found') };
    }

    it("the scan node's messages carry each id, and msg.device or the device field set to an id updates that device only", async () => {
      const radio = sharedVirtualRadio();
      restore = hideAddresses(radio);
      const twins = [await radio.addDevice(TWINS[0]), await radio.addDevice(TWINS[1])];
      const image = (version: string) => buildAppImage({ size: 24 * 1024, projectName: 'virtual-esp32', version, seed: 5 });

      // The device field names the name both have: only an id picks one.
      const nodes = await deploy('hidden-lamp');
      const messages: Msg[] = [];
      const scanned = new Promise<void>((resolve) =>
        nodes.found.on('input', (m: Msg) => {
          messages.push(m);
          if (messages.length === 2) resolve();
        }),
      );
      nodes.scan.receive({});
      await scanned;
      const found = messages.map((m) => m.payload as { name: string; address: string; id: string });
      assert.deepEqual(
        found.map((d) => [d.name, d.address]),
        [
          ['hidden-lamp', ''],
          ['hidden-lamp', ''],
        ],
      );
      const ids = found.map((d) => d.id).sort();
      assert.deepEqual(ids, TWINS.map((t) => t.address.replace(/:/g, '')).sort(), 'the ids a scan node gives are the devices’');

      const [first, second] = ids.map((id) => twins.find((d) => d.address.replace(/:/g, '') === id)!);
      const firstBefore = await first.state();
      const viaMsg = await exchange(nodes.up, { payload: image('2.0.0'), device: ids[1] }, nodes);
      assert.equal(viaMsg.error, undefined, JSON.stringify(viaMsg.error?.error));
      assert.equal((viaMsg.result!.payload as { runningVersion: string }).runningVersion, '2.0.0');
      assert.equal(await running(second), 'ota_1', 'msg.device: the device of that id runs the new image');
      assert.deepEqual(await first.state(), firstBefore, 'msg.device: the other device of that name was left alone');
      await helper.unload();

      const secondBefore = await second.state();
      const byField = await deploy(` ${ids[0].toUpperCase()} `);
      const viaField = await exchange(byField.up, { payload: image('3.0.0') }, byField);
      assert.equal(viaField.error, undefined, JSON.stringify(viaField.error?.error));
      assert.equal((viaField.result!.payload as { runningVersion: string }).runningVersion, '3.0.0');
      assert.equal(await running(first), 'ota_1', 'the device field: the device of that id runs the new image');
      assert.deepEqual(await second.state(), secondBefore, 'the device field: the other device was left alone');
    });

    it('examples/fleet-update.json updates each device its scan found, by the id the scan gives, not the first OTA device again', async () => {
      restore = hideAddresses(sharedVirtualRadio());
      type FlowNode = Record<string, unknown> & { id: string; type: string; name?: string };
      const example = JSON.parse(readFileSync(join(ROOT, 'examples', 'fleet-update.json'), 'utf8')) as FlowNode[];
      const named = (type: string, name: string) => example.find((n) => n.type === type && n.name === name)!.id;
      // As imported, its Debug nodes replaced by probes, and its button pressed by sending the Inject's message to what it feeds.
      const flow = [
        { id: 'tab', type: 'tab' },
        ...example
          .filter((n) => !['comment', 'inject'].includes(n.type))
          .map((n) => (n.type === 'debug' ? { id: n.id, z: 'tab', type: 'helper' } : n.type === 'ble-ota-device' ? n : { ...n, z: 'tab' })),
      ];
      await new Promise<void>((resolve) =>
        helper.load([deviceNode, uploadNode, scanNode, sampleNode, catchNode, coreNode('15-change.js'), coreNode('10-switch.js')], flow, resolve),
      );
      const seen: Msg[] = [];
      const three = new Promise<void>((resolve) => {
        for (const id of [named('debug', 'updated'), named('debug', 'failed')])
          helper.getNode(id).on('input', (m: Msg) => {
            seen.push(m);
            if (seen.length === 3) resolve();
          });
      });
      helper.getNode(named('ble-ota-sample', 'new firmware')).receive({ targetVersion: '2.0.0' });
      await three;
      const results = seen.map((m) => m.payload as { device: { name: string }; skipped: boolean; runningVersion: string });
      assert.ok(
        seen.every((m) => !m.error),
        JSON.stringify(seen.map((m) => m.error)),
      );
      assert.deepEqual(
        results.map((r) => [r.device.name, r.skipped, r.runningVersion]).sort(),
        [1, 2, 3].map((n) => [`esp32-fleet-${n}`, false, '2.0.0']),
      );
    });
  });
});
