/**
 * Node-RED robustness, in a real Node-RED runtime
 * (node-red-node-test-helper) against virtual ESP32s: a redeploy during an
 * upload, two flows updating the same device, a device that disappears
 * mid-transfer, a node closed mid-transfer. After each: no connection left
 * open, no listener left on the shared noble or its peripherals, no
 * unhandled promise rejection, and Node-RED still updates devices.
 */
import { strict as assert } from 'node:assert';
import type { EventEmitter } from 'node:events';
import { buildAppImage } from '../lib/image/app-image-builder';
import { OTA_STREAM_UUID } from '../lib/protocol/constants';
import { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { sharedVirtualRadio } from '../lib/virtual/virtual-radio';
import { eventually } from './support/eventually';
import { catchNode, deviceNode, exchange, helper, uploadNode } from './support/node-red';

type Msg = Record<string, unknown>;

/** Every listener on the shared noble, its peripherals, their services and characteristics. */
function listenerCount(): number {
  const noble = sharedVirtualRadio().noble as unknown as EventEmitter & {
    _peripherals: Record<string, EventEmitter>;
    _services: Record<string, Record<string, EventEmitter>>;
    _characteristics: Record<string, Record<string, Record<string, EventEmitter>>>;
  };
  const sum = (e: EventEmitter) => e.eventNames().reduce((n, name) => n + e.listenerCount(name), 0);
  let n = sum(noble);
  for (const p of Object.values(noble._peripherals)) n += sum(p);
  for (const services of Object.values(noble._services)) for (const s of Object.values(services)) n += sum(s);
  for (const byService of Object.values(noble._characteristics)) {
    for (const chars of Object.values(byService)) for (const c of Object.values(chars)) n += sum(c);
  }
  return n;
}

/** Nobody holds a connection to the device: a central can connect right away. */
async function assertNotConnected(device: VirtualEsp32, what: string): Promise<void> {
  await eventually(
    async () =>
      device.connect(23).then(
        () => true,
        () => false,
      ),
    (free) => free,
    3000,
    `${what}: the device is free for a new connection`,
  );
  await device.disconnect();
}

/**
 * Upload nodes, each with its own device configuration and outputs; one
 * Catch node (the test helper loads one per flow) reports every error.
 */
function flows(devices: Array<{ id: string; name: string }>, uploads: Array<{ id: string; device: string }>) {
  return [
    { id: 'tab', type: 'tab' },
    ...devices.map((d) => ({ id: d.id, type: 'ble-ota-device', device: d.name, backend: 'virtual', scanTimeout: 2, operationTimeout: 1 })),
    ...uploads.flatMap((u) => [
      { id: u.id, z: 'tab', type: 'ble-ota-upload', device: u.device, wires: [[`${u.id}-out`], [`${u.id}-progress`]] },
      { id: `${u.id}-out`, z: 'tab', type: 'helper' },
      { id: `${u.id}-progress`, z: 'tab', type: 'helper' },
    ]),
    { id: 'catcher', z: 'tab', type: 'catch', scope: null, uncaught: false, wires: [['errors']] },
    { id: 'errors', z: 'tab', type: 'helper' },
  ];
}

function load(flow: unknown[]): Promise<void> {
  return new Promise((resolve) => helper.load([deviceNode, uploadNode, catchNode], flow, resolve));
}

/** Sends msg to an upload node; resolves with its result or its error. */
function update(id: string, msg: Msg): Promise<{ result?: Msg; error?: Msg }> {
  return exchange(helper.getNode(id), msg, { out: helper.getNode(`${id}-out`), errors: helper.getNode('errors') });
}

/** Resolves when the image's bytes past `offset` cross the air to the device: mid-transfer. */
function midTransfer(device: VirtualEsp32, offset = 256 * 1024): Promise<void> {
  const bindings = sharedVirtualRadio().bindings;
  return new Promise((resolve) => {
    const on = (address: string, uuid: string, data: Buffer) => {
      if (address === device.address && uuid === OTA_STREAM_UUID && data.readUInt32LE(0) >= offset) {
        bindings.off('air-write', on);
        resolve();
      }
    };
    bindings.on('air-write', on);
  });
}

describe('Node-RED robustness', function () {
  this.timeout(60_000);
  const rejections: unknown[] = [];
  const onRejection = (reason: unknown) => rejections.push(reason);
  let baseline = 0;

  before(function (done) {
    process.on('unhandledRejection', onRejection);
    helper.startServer(done);
  });
  after(function (done) {
    process.off('unhandledRejection', onRejection);
    void sharedVirtualRadio()
      .stopAll()
      .then(() => helper.stopServer(done));
  });
  beforeEach(async () => {
    await helper.unload();
    baseline = listenerCount();
  });
  afterEach(async () => {
    await helper.unload();
    assert.deepEqual(rejections.map(String), [], 'no unhandled promise rejection');
    await eventually(
      async () => listenerCount(),
      (n) => n <= baseline,
      3000,
      'listeners back to where they were',
    );
  });

  it('a redeploy during an upload: the transfer stops, the device is free, the new flow updates it', async () => {
    const name = 'nr-redeploy';
    const flow = flows([{ id: 'dev', name }], [{ id: 'up', device: 'dev' }]);
    await load(flow);
    const device = await sharedVirtualRadio().ensureDevice(name);
    const first = update('up', { payload: buildAppImage({ size: 1536 * 1024, version: '2.0.0', seed: 90 }) });
    await midTransfer(device);
    // A full deploy: the old nodes close, then the new ones start.
    await helper.unload();
    await load(flow);
    const state = await eventually(
      () => device.state(),
      (s) => s.transfer !== 'receiving',
      3000,
      'the transfer stops',
    );
    assert.equal(state.transfer, 'suspended', 'stopped mid-transfer, kept for a resume');
    assert.equal(state.running, 'ota_0');
    void first; // the old node is gone: nobody waits for its message
    await assertNotConnected(device, 'after the redeploy');

    const again = await update('up', { payload: buildAppImage({ size: 64 * 1024, version: '2.1.0', seed: 91 }) });
    assert.equal(again.error, undefined, JSON.stringify(again.error?.error));
    assert.equal((again.result!.payload as { runningVersion: string }).runningVersion, '2.1.0');
  });

  it('two flows updating the same device: one after the other, both complete, the device runs the last', async () => {
    const name = 'nr-two-flows';
    await load(
      flows(
        [
          { id: 'devA', name },
          { id: 'devB', name },
        ],
        [
          { id: 'upA', device: 'devA' },
          { id: 'upB', device: 'devB' },
        ],
      ),
    );
    const device = await sharedVirtualRadio().ensureDevice(name);
    const [a, b] = await Promise.all([
      update('upA', { payload: buildAppImage({ size: 128 * 1024, version: '3.0.0', seed: 92 }) }),
      update('upB', { payload: buildAppImage({ size: 128 * 1024, version: '3.1.0', seed: 93 }) }),
    ]);
    assert.equal(a.error, undefined, JSON.stringify(a.error?.error));
    assert.equal(b.error, undefined, JSON.stringify(b.error?.error));
    const versions = [a, b].map((r) => (r.result!.payload as { runningVersion: string }).runningVersion);
    assert.deepEqual(versions.sort(), ['3.0.0', '3.1.0']);
    const state = await eventually(
      () => device.state(),
      (s) => s.transfer === 'idle',
      3000,
      'idle',
    );
    assert.equal(state.slots[state.running].state, 'valid');
    await assertNotConnected(device, 'after both updates');
  });

  it('a device that disappears mid-transfer: a specific error to Catch, nothing left open, the device boots its old image', async () => {
    const name = 'nr-vanish';
    await load(flows([{ id: 'dev', name }], [{ id: 'up', device: 'dev' }]));
    const radio = sharedVirtualRadio();
    const device = await radio.ensureDevice(name);
    const running = update('up', { payload: buildAppImage({ size: 1536 * 1024, version: '4.0.0', seed: 94 }) });
    await midTransfer(device);
    radio.bindings.removeDevice(device); // out of range
    const { result, error } = await running;
    assert.equal(result, undefined);
    const code = (error!.error as { code: string }).code;
    assert.ok(['DISCONNECTED', 'DEVICE_NOT_FOUND'].includes(code), code);
    await device.powerCycle();
    const state = await device.state();
    assert.equal(state.running, 'ota_0');
    assert.equal(state.slots.ota_0.state, 'valid');
    await assertNotConnected(device, 'after it vanished');
    // Back in range: the same node updates it.
    radio.bindings.addDevice(device);
    const again = await update('up', { payload: buildAppImage({ size: 64 * 1024, version: '4.1.0', seed: 95 }) });
    assert.equal(again.error, undefined, JSON.stringify(again.error?.error));
  });

  it('a node closed mid-transfer: the close finishes at once, the link is dropped, nothing leaks', async () => {
    const name = 'nr-close';
    await load(flows([{ id: 'dev', name }], [{ id: 'up', device: 'dev' }]));
    const device = await sharedVirtualRadio().ensureDevice(name);
    void update('up', { payload: buildAppImage({ size: 1536 * 1024, version: '5.0.0', seed: 96 }) });
    await midTransfer(device);
    const started = Date.now();
    await helper.unload();
    assert.ok(Date.now() - started < 3000, 'the close did not wait for the upload');
    const state = await eventually(
      () => device.state(),
      (s) => s.transfer !== 'receiving',
      3000,
      'the device sees the link drop',
    );
    assert.equal(state.transfer, 'suspended', 'stopped mid-transfer');
    assert.equal(state.running, 'ota_0');
    await assertNotConnected(device, 'after the close');
  });
});
