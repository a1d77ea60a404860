/**
 * ble-ota-upload in a real Node-RED runtime (node-red-node-test-helper),
 * against virtual ESP32s.
 */
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { buildAppImage } from '../lib/image/app-image-builder';
import { systemBluetoothProblem } from '../lib/noble-loader';
import { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { sharedVirtualRadio } from '../lib/virtual/virtual-radio';
import { eventually } from './support/eventually';
import { fixture, haveFixtures } from './support/fixtures';
import { catchNode, deviceNode, helper, lastStatus, TestNode, uploadNode } from './support/node-red';

type Msg = Record<string, unknown>;

function flow(deviceName: string, backend = 'virtual') {
  return [
    { id: 'tab', type: 'tab' },
    { id: 'dev', type: 'ble-ota-device', device: deviceName, backend, scanTimeout: 3, operationTimeout: 3 },
    { id: 'up', z: 'tab', type: 'ble-ota-upload', device: 'dev', wires: [['out']] },
    { id: 'out', z: 'tab', type: 'helper' },
    { id: 'catcher', z: 'tab', type: 'catch', scope: null, uncaught: false, wires: [['errors']] },
    { id: 'errors', z: 'tab', type: 'helper' },
  ];
}

async function load(deviceName: string, backend?: string): Promise<{ up: TestNode; out: TestNode; errors: TestNode }> {
  await new Promise<void>((resolve) => helper.load([deviceNode, uploadNode, catchNode], flow(deviceName, backend), resolve));
  return { up: helper.getNode('up'), out: helper.getNode('out'), errors: helper.getNode('errors') };
}

/** Sends msg into the upload node; resolves with the result or the Catch node's error message. */
function send(nodes: { up: TestNode; out: TestNode; errors: TestNode }, msg: Msg): Promise<{ result?: Msg; error?: Msg }> {
  return new Promise((resolve) => {
    const onResult = (m: Msg) => finish({ result: m });
    const onError = (m: Msg) => finish({ error: m });
    const finish = (r: { result?: Msg; error?: Msg }) => {
      nodes.out.off('input', onResult);
      nodes.errors.off('input', onError);
      resolve(r);
    };
    nodes.out.on('input', onResult);
    nodes.errors.on('input', onError);
    nodes.up.receive(msg);
  });
}

describe('ble-ota-upload node', function () {
  this.timeout(60_000);

  before(function (done) {
    helper.startServer(done);
  });
  after(function (done) {
    void sharedVirtualRadio()
      .stopAll()
      .then(() => helper.stopServer(done));
  });
  afterEach(() => helper.unload());

  it('updates a virtual ESP32 with a 1 MB image: after its restart it boots the new slot, byte-identical', async () => {
    const nodes = await load('node-test-1mb');
    const image = buildAppImage({ size: 1024 * 1024, projectName: 'fleet-app', version: '1.4.2', seed: 42 });
    const { result, error } = await send(nodes, { payload: image });
    assert.equal(error, undefined, JSON.stringify(error?.error));
    const payload = result!.payload as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- result shape asserted field by field below
    assert.equal(payload.device.name, 'node-test-1mb');
    assert.equal(payload.image.project, 'fleet-app');
    assert.equal(payload.image.version, '1.4.2');
    assert.equal(payload.bytes, image.length);
    assert.ok(payload.durationMs > 0 && payload.bytesPerSecond > 0);
    assert.deepEqual(lastStatus(nodes.up), { fill: 'green', shape: 'dot', text: 'confirmed 1.4.2' });
    assert.equal(payload.protocol, 'v2');
    assert.equal(payload.confirmed, true);
    assert.equal(payload.runningVersion, '1.4.2');

    const device: VirtualEsp32 = await sharedVirtualRadio().ensureDevice('node-test-1mb');
    const state = await eventually(() => device.state(), (s) => s.running === 'ota_1' && s.transfer === 'idle', 5000, 'boot of ota_1');
    assert.equal(state.slots.ota_1.state, 'valid');
    assert.ok((await device.readFlash('ota_1', 0, image.length)).equals(image));
  });

  describe('refuses what is not a firmware image, before touching the device', () => {
    const cases: Array<{ title: string; payload: () => unknown; code: string; fixture?: boolean }> = [
      { title: 'a string', payload: () => 'firmware.bin', code: 'IMAGE_NOT_BUFFER' },
      { title: 'an empty Buffer', payload: () => Buffer.alloc(0), code: 'IMAGE_EMPTY' },
      { title: 'random bytes', payload: () => randomBytes(64 * 1024), code: 'IMAGE_NOT_AN_IMAGE' },
      { title: 'bootloader_esp32.bin', payload: () => fixture('bootloader_esp32.bin'), code: 'IMAGE_BOOTLOADER', fixture: true },
      { title: 'partitions_singleapp.bin', payload: () => fixture('partitions_singleapp.bin'), code: 'IMAGE_PARTITION_TABLE', fixture: true },
      { title: 'esp8266_deepsleep.bin', payload: () => fixture('esp8266_deepsleep.bin'), code: 'IMAGE_ESP8266', fixture: true },
    ];
    const messages = new Map<string, string>();

    for (const c of cases) {
      const title = c.fixture && !haveFixtures ? `${c.title} (skipped: ../shared/fixtures not present)` : c.title;
      it(title, async function () {
        if (c.fixture && !haveFixtures) this.skip();
        const nodes = await load('node-test-refuse');
        const device = await sharedVirtualRadio().ensureDevice('node-test-refuse');
        const { result, error } = await send(nodes, { payload: c.payload() });
        assert.equal(result, undefined);
        const err = error!.error as { message: string; code: string };
        assert.equal(err.code, c.code);
        assert.ok(err.message.length > 40, `a readable message: ${err.message}`);
        for (const [other, message] of messages) assert.notEqual(err.message, message, `same message as ${other}`);
        messages.set(c.title, err.message);
        assert.deepEqual(lastStatus(nodes.up), { fill: 'red', shape: 'ring', text: 'invalid image' });
        const state = await device.state();
        assert.equal(state.running, 'ota_0');
        assert.equal(state.slots.ota_1.state, 'empty', 'nothing was written to the device');
        assert.ok(device.logs.every((l) => !/request/i.test(l)), 'no OTA request reached the device');
      });
    }
  });

  it('keeps Node-RED running when Bluetooth is unavailable: red status that says why, done(err) on input', async function () {
    const problem = systemBluetoothProblem();
    if (!problem) this.skip(); // this machine has working Bluetooth
    const nodes = await load('some-esp32', 'bluetooth');
    assert.deepEqual(lastStatus(nodes.up), { fill: 'red', shape: 'ring', text: problem!.reason });
    assert.ok(problem!.reason.length <= 24);
    const { error } = await send(nodes, { payload: buildAppImage({ size: 8192 }) });
    const err = error!.error as { message: string; code: string };
    assert.equal(err.code, 'BLUETOOTH_UNAVAILABLE');
    assert.match(err.message, /Bluetooth/);
  });
});
