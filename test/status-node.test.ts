/**
 * ble-ota-status in a real Node-RED runtime (node-red-node-test-helper):
 * device information from virtual ESP32s on input, OTA events of upload
 * nodes (synthetic ones on the bus, and real uploads), templates, close.
 */
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { BleOtaClient } from '../lib/client/ota-client';
import { systemBluetoothProblem } from '../lib/noble-loader';
import { buildAppImage } from '../lib/image/app-image-builder';
import { generateSigningKey } from '../lib/image/signature';
import { sharedVirtualRadio } from '../lib/virtual/virtual-radio';
import type { DeviceInfo } from '../lib/client/ota-client';
import { deviceInfoView as firmwareInfo, type DeviceInfoView as FirmwareInfo } from '../lib/device-info';
import { readFileSync } from 'node:fs';
import { eventView, reportedStates } from '../nodes/ble-ota-status/event-view';
import { OtaEvent, otaEvents, OtaState } from '../nodes/shared/ota-events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { eventually } from './support/eventually';
import { NodeRedProcess } from './support/node-red-process';
import { catchNode, deviceNode, exchange, helper, lastStatus, TestNode, uploadNode, useNodeRed } from './support/node-red';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const statusNode = require('../nodes/ble-ota-status/ble-ota-status') as unknown;

type Msg = Record<string, unknown>;
type FlowNode = Record<string, unknown>;

/** A flow with a virtual device config, the status node `st` wired to `out`, and a Catch node wired to `errors`. */
function flow(status: FlowNode, device = 'status-v2', extra: FlowNode[] = [], scanTimeout = 3): FlowNode[] {
  return [
    { id: 'tab', type: 'tab' },
    { id: 'dev', type: 'ble-ota-device', device, backend: 'virtual', virtualDevices: device, scanTimeout, operationTimeout: 3 },
    { id: 'st', z: 'tab', type: 'ble-ota-status', device: 'dev', scope: 'none', wires: [['out']], ...status },
    { id: 'out', z: 'tab', type: 'helper' },
    { id: 'catcher', z: 'tab', type: 'catch', scope: null, uncaught: false, wires: [['errors']] },
    { id: 'errors', z: 'tab', type: 'helper' },
    ...extra,
  ];
}

interface Loaded {
  st: TestNode;
  out: TestNode;
  errors: TestNode;
  /** Every message `out` received, in order. */
  received: Msg[];
}

async function load(nodes: FlowNode[]): Promise<Loaded> {
  await new Promise<void>((resolve, reject) => helper.load([deviceNode, statusNode, uploadNode, catchNode], nodes, (err?: Error) => (err ? reject(err) : resolve())));
  const out = helper.getNode('out');
  const received: Msg[] = [];
  out.on('input', (m: Msg) => received.push(m));
  return { st: helper.getNode('st'), out, errors: helper.getNode('errors'), received };
}

/** Sends msg into the status node; resolves with its output or the Catch node's message. */
const ask = (nodes: Loaded, msg: Msg) => exchange(nodes.st, msg, nodes);

function event(state: OtaState, extra: Partial<OtaEvent> = {}): OtaEvent {
  return {
    source: { id: 'u1', type: 'ble-ota-upload', name: 'fleet updater' },
    state,
    device: { name: 'esp32-kitchen' },
    timestamp: Date.UTC(2026, 0, 2, 3, 4, 5),
    ...extra,
  };
}

/** Lets Node-RED deliver what was sent (it delivers asynchronously). */
const settle = () => new Promise((r) => setTimeout(r, 50));

/** A confirmed result, as an upload node publishes it. */
function confirmedEvent(): OtaEvent {
  const image = { chip: 'ESP32', chipId: 0, project: 'fleet-app', version: '1.4.2', idfVersion: 'v5.3.1', secureVersion: 0, size: 65536, sha256: 'ab'.repeat(32), signed: false };
  return event('confirmed', {
    device: { name: 'esp32-kitchen', address: '24:0a:c4:00:00:01' },
    image,
    percent: 100,
    durationS: 12.345,
    result: {
      device: { name: 'esp32-kitchen', address: '24:0a:c4:00:00:01' },
      image,
      protocol: 'v2',
      mtu: 256,
      packetSize: 249,
      packets: 264,
      bytes: 65536,
      bytesSent: 65536,
      durationMs: 12_345,
      bytesPerSecond: 62_976,
      link: { mtu: 256 },
      restarted: true,
      confirmed: true,
      runningVersion: '1.4.2',
      resumes: 0,
      skipped: false,
      previousVersion: '1.0.0',
      authenticated: true,
    },
  });
}

describe('ble-ota-status decoding', () => {
  const v2: DeviceInfo = {
    name: undefined,
    address: '24:0a:c4:00:00:09',
    rssi: -61,
    mtu: 517,
    protocol: 'v2',
    firmwareRevision: '0.9.0',
    ota: {
      infoVersion: 1,
      protocol: 2,
      features: 0x0001 | 0x0010,
      chipId: 5,
      chipRevision: 4,
      slotSize: 1_572_864,
      maxPacket: 514,
      window: 8192,
      runningState: 7,
      lastStatus: 0x0a,
      transferState: 2,
      updateSlotRolledBack: false,
      transferOffset: 471_040,
      transferSha256: Buffer.alloc(32, 0xab),
      app: { secureVersion: 2, version: '0.9.0', projectName: 'app', idfVersion: 'v5.3', date: 'd', time: 't', elfSha256: Buffer.alloc(32, 1) },
    },
    authenticated: false,
  };

  it('decodes OTA Info: chip, suspended transfer, last status, capabilities, unknown values', () => {
    const info = firmwareInfo(v2);
    assert.equal(info.name, null);
    assert.deepEqual(info.chip, { name: 'ESP32-C3', id: 5, revision: 'v0.4' });
    assert.deepEqual(info.transfer, { state: 'suspended', offset: 471_040, sha256: 'ab'.repeat(32) });
    assert.equal(info.lastStatus, 'HASH_MISMATCH');
    assert.deepEqual(info.capabilities, ['resume', 'auth']);
    assert.equal(info.runningState, 'unknown');
    assert.equal(info.pendingConfirmation, false);
    assert.equal(info.secureVersion, 2);
    assert.equal(info.runningImage, null, 'OTA Info before version 4 tells no running image');
    const v4 = firmwareInfo({ ...v2, ota: { ...v2.ota!, runningSize: 1_036_288, runningSha256: Buffer.alloc(32, 0x5b) } });
    assert.deepEqual(v4.runningImage, { size: 1_036_288, sha256: '5b'.repeat(32) });
  });

  // msg.payload as 0.1.0's node sent it: a flow may read any of these.
  const PAYLOAD_FIELDS = [
    'name',
    'address',
    'rssi',
    'mtu',
    'protocol',
    'firmwareRevision',
    'project',
    'version',
    'idfVersion',
    'secureVersion',
    'build',
    'chip',
    'slotSize',
    'maxPacket',
    'window',
    'runningState',
    'pendingConfirmation',
    'transfer',
    'lastStatus',
    'capabilities',
    'deviceId',
    'signingKey',
    'authenticated',
  ];

  it('msg.payload keeps every field 0.1.0 sent and the help documents, for a v2 and a seed device', () => {
    const help = readFileSync(join(__dirname, '../../nodes/ble-ota-status/locales/en-US/ble-ota-status.html'), 'utf8');
    const section = /<h4>Device information[\s\S]*?<\/dl>/.exec(help)?.[0] ?? '';
    // Top-level fields only: those a list item starts with.
    const documented = [...section.matchAll(/<li><code>(\w+)<\/code>/g)].map((m) => m[1]);
    assert.ok(documented.length >= 10, `the help's payload list: ${documented.join(', ')}`);
    for (const info of [firmwareInfo(v2), firmwareInfo({ ...v2, protocol: 'seed', ota: undefined })]) {
      for (const field of [...PAYLOAD_FIELDS, ...documented]) assert.ok(field in info, `${info.protocol}: ${field}`);
    }
    assert.deepEqual(firmwareInfo(v2).build, { date: 'd', time: 't', elfSha256: '01'.repeat(32) });
  });

  it('a seed device with a firmware revision reports it as its version', () => {
    const info = firmwareInfo({ ...v2, protocol: 'seed', ota: undefined });
    assert.equal(info.version, '0.9.0');
    assert.equal(info.transfer, null);
    assert.deepEqual(info.capabilities, ['seed']);
  });

  it('the view: device label, percent and durationS, flags per state', () => {
    const view = eventView(event('uploading', { device: { address: 'aa:bb:cc:dd:ee:ff' }, percent: 42, bytesPerSecond: 10_240, durationS: 3 }));
    assert.equal(view.device.label, 'aa:bb:cc:dd:ee:ff');
    assert.equal(view.durationS, '3.0');
    assert.equal(view.rate, '10 KB/s');
    assert.deepEqual(view.is, { uploading: true });
    assert.equal(view.final, false);
    const queued = eventView(event('queued'));
    assert.equal(queued.durationS, undefined);
    assert.equal(queued.percent, undefined);
    assert.equal(eventView(event('skipped')).percent, 100);
    // A rate only where data moved: a skipped update's result says 0 bytes per second.
    const skipped = eventView(event('skipped', { result: { bytesPerSecond: 0, durationMs: 800, device: {} } as unknown as OtaEvent['result'] }));
    assert.equal(skipped.rate, undefined);
  });

  it('reported states: all by default, final ones, a list (unknown names ignored)', () => {
    assert.equal(reportedStates(undefined, undefined).size, 12);
    assert.deepEqual([...reportedStates('final', [])], ['confirmed', 'updated', 'skipped', 'failed', 'cancelled']);
    assert.deepEqual([...reportedStates('selected', ['failed', 'bogus', 'queued'])], ['queued', 'failed']);
  });
});

describe('ble-ota-status node', function () {
  this.timeout(60_000);

  useNodeRed();

  describe('device information on input', () => {
    it('reports a v2 device: project, version, chip, slot, states, capabilities; status shows the version', async () => {
      const nodes = await load(flow({}, 'status-v2'));
      const { result, error } = await ask(nodes, { topic: 'kept', payload: 'anything' });
      assert.equal(error, undefined, JSON.stringify(error?.error));
      assert.equal(result!.topic, 'kept', 'the rest of the message is passed on');
      const info = result!.payload as FirmwareInfo;
      assert.equal(info.name, 'status-v2');
      assert.match(info.address, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
      assert.equal(typeof info.rssi, 'number');
      assert.equal(info.protocol, 'v2');
      assert.equal(info.project, 'virtual-esp32');
      assert.equal(info.version, '1.0.0');
      assert.equal(info.firmwareRevision, '1.0.0');
      assert.equal(info.idfVersion, 'esp32-ble-ota sample', 'a virtual device starts on a sample image');
      assert.equal(info.secureVersion, 0);
      assert.deepEqual(info.chip, { name: 'ESP32', id: 0, revision: 'v3.0' });
      assert.ok(info.slotSize! > 1024 * 1024);
      assert.equal(info.runningState, 'valid');
      assert.equal(info.pendingConfirmation, false);
      assert.deepEqual(info.transfer, { state: 'idle', offset: 0, sha256: null });
      assert.equal(info.lastStatus, null);
      assert.deepEqual(info.capabilities, ['resume', 'clientConfirm', 'seed', 'deflate', 'delta']);
      assert.match(info.build!.elfSha256, /^[0-9a-f]{64}$/);
      assert.equal(result!.event, undefined, 'information replies carry no msg.event');
      assert.deepEqual(lastStatus(nodes.st), { fill: 'green', shape: 'dot', text: 'runs 1.0.0' });
    });

    it('reports what a seed-only device tells: protocol seed, no OTA Info', async () => {
      await sharedVirtualRadio().addDevice({ name: 'status-seed', protocol: 'seed' });
      const nodes = await load(flow({}, 'status-seed'));
      const { result, error } = await ask(nodes, {});
      assert.equal(error, undefined, JSON.stringify(error?.error));
      const info = result!.payload as FirmwareInfo;
      assert.equal(info.name, 'status-seed');
      assert.equal(info.protocol, 'seed');
      assert.deepEqual(info.capabilities, ['seed']);
      assert.equal(info.firmwareRevision, null, "the seed's firmware has no Device Information");
      assert.equal(info.version, null);
      assert.equal(info.project, null);
      assert.equal(info.chip, null);
      assert.equal(info.runningState, 'unknown');
      assert.equal(info.pendingConfirmation, false);
      assert.deepEqual(lastStatus(nodes.st), { fill: 'green', shape: 'ring', text: 'seed firmware' });
    });

    it('asks the device in msg.device instead of the configured one, by name or address', async () => {
      const other = await sharedVirtualRadio().ensureDevice('status-other');
      const nodes = await load(flow({}, 'status-v2'));
      const byName = await ask(nodes, { device: 'status-other' });
      assert.equal((byName.result!.payload as FirmwareInfo).name, 'status-other');
      const byAddress = await ask(nodes, { device: other.address.toUpperCase() });
      assert.equal((byAddress.result!.payload as FirmwareInfo).address, other.address);
      assert.equal((byAddress.result!.payload as FirmwareInfo).name, 'status-other');
    });

    it('a msg.device that is no string is refused, not taken for the configured device', async () => {
      const nodes = await load(flow({}, 'status-v2'));
      const { result, error } = await ask(nodes, { device: 7 });
      assert.equal(result, undefined, 'no device was asked');
      const err = error!.error as { code: string; message: string };
      assert.equal(err.code, 'INVALID_ARGUMENT');
      assert.match(err.message, /^msg\.device is number 7, not a string: give the name, address or Bluetooth id of the device to ask/);
      assert.deepEqual(lastStatus(nodes.st), { fill: 'red', shape: 'ring', text: 'failed' });
    });

    it("a fleet secret as msg.device or in the device node's Device field: refused, and shown nowhere (error, status, log)", async () => {
      const secret = randomBytes(32).toString('hex');
      const statusTexts = (node: TestNode) => (node.status as unknown as { args: Array<[{ text?: string }]> }).args.map(([st]) => st.text ?? '');
      const logged = () => (helper as unknown as { log(): { args: Array<[{ level: number; id?: string; msg?: unknown }]>; ERROR: number } }).log();
      const notShown = (nodes: Loaded, errors: Msg[]) => {
        const shown = [...logged().args.map(([e]) => String(e.msg)), ...statusTexts(nodes.st), ...errors.map((m) => JSON.stringify(m.error))];
        for (const text of shown) assert.ok(!text.toLowerCase().includes(secret), text);
      };

      let nodes = await load(flow({}, 'status-v2'));
      let errors: Msg[] = [];
      for (const device of [secret, `0x${secret.toUpperCase()} `]) {
        const { result, error } = await ask(nodes, { device });
        assert.equal(result, undefined, 'no device was asked');
        errors.push(error!);
        const err = error!.error as { code: string; message: string };
        assert.equal(err.code, 'INVALID_ARGUMENT');
        assert.equal(
          err.message,
          "msg.device looks like a key or a secret, not a device name (64 hex digits, a fleet secret's form, or a key's PEM text), so it is not shown here: give the name, address or Bluetooth id of the device to ask; a fleet secret goes in the device node's Fleet secret field, never in a message.",
        );
      }
      assert.deepEqual(lastStatus(nodes.st), { fill: 'red', shape: 'ring', text: 'failed' });
      notShown(nodes, errors);
      await helper.unload();

      nodes = await load(flow({}, 'status-v2').map((n) => (n.id === 'dev' ? { ...n, device: secret } : n)));
      assert.equal(logged().args.filter(([e]) => e.level === logged().ERROR && e.id === 'dev').length, 1, 'said at deploy');
      errors = [];
      for (const msg of [{}, { device: 'status-v2' }]) {
        const { result, error } = await ask(nodes, msg);
        assert.equal(result, undefined, 'no device was asked');
        errors.push(error!);
        assert.match(
          (error!.error as { message: string }).message,
          /^The Device field looks like a key or a secret, not a device name \(64 hex digits, a fleet secret's form, or a key's PEM text\), so it is not shown here/,
        );
      }
      notShown(nodes, errors);
    });

    it("a key's PEM text as msg.device: refused before any scan, and shown nowhere (error, status, log)", async () => {
      const pem = generateSigningKey('ecdsa256');
      const body = pem.split('\n')[1].slice(0, 20);
      const nodes = await load(flow({}, 'status-v2'));
      const { result, error } = await ask(nodes, { device: pem });
      assert.equal(result, undefined, 'no device was asked');
      const err = error!.error as { code: string; message: string };
      assert.equal(err.code, 'INVALID_ARGUMENT');
      assert.match(err.message, /^msg\.device looks like a key or a secret, not a device name .*give the name, address or Bluetooth id of the device to ask/);
      assert.deepEqual(lastStatus(nodes.st), { fill: 'red', shape: 'ring', text: 'failed' });
      const logged = (helper as unknown as { log(): { args: Array<[{ msg?: unknown }]> } }).log();
      const statuses = (nodes.st.status as unknown as { args: Array<[{ text?: string }]> }).args.map(([st]) => st.text ?? '');
      for (const text of [err.message, ...statuses, ...logged.args.map(([e]) => String(e.msg))]) {
        assert.ok(!text.includes('-----BEGIN') && !text.includes(body), text);
      }
    });

    it('shows an image that awaits confirmation: pendingConfirmation, yellow status', async () => {
      const radio = sharedVirtualRadio();
      await radio.ensureDevice('status-pending');
      // Cancel an update once the device restarted into the new image, before CONFIRM.
      const client = new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000 } });
      const abort = new AbortController();
      await assert.rejects(
        client.update({
          target: { name: 'status-pending' },
          image: buildAppImage({ size: 32 * 1024, projectName: 'app', version: '2.0.0', seed: 70 }),
          signal: abort.signal,
          onProgress: (p) => p.phase === 'confirming' && abort.abort(),
        }),
        { code: 'CANCELLED' },
      );
      const nodes = await load(flow({}, 'status-pending'));
      const info = (await eventually(
        async () => ((await ask(nodes, {})).result?.payload ?? {}) as FirmwareInfo,
        (i) => i.version === '2.0.0',
        10_000,
        'the device runs the new image',
      )) as FirmwareInfo;
      assert.equal(info.runningState, 'pending-verify');
      assert.equal(info.pendingConfirmation, true);
      assert.equal(info.lastStatus, null, 'a restart clears the last status');
      assert.deepEqual(lastStatus(nodes.st), { fill: 'yellow', shape: 'dot', text: '2.0.0 unconfirmed' });
    });

    it('a device that cannot be found: DEVICE_NOT_FOUND to Catch, red ring', async () => {
      // A connected ESP32 stops advertising: hold a connection from elsewhere.
      const radio = sharedVirtualRadio();
      await radio.ensureDevice('status-hidden');
      const holder = await new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000 } }).connect({ name: 'status-hidden' });
      try {
        // 1 s, the least the device node takes (less is warned about and runs with the default).
        const nodes = await load(flow({}, 'status-hidden', [], 1));
        const { result, error } = await ask(nodes, {});
        assert.equal(result, undefined);
        const err = error!.error as { code: string; message: string };
        assert.equal(err.code, 'DEVICE_NOT_FOUND');
        assert.match(err.message, /status-hidden/);
        assert.match(err.message, / was not found in a 1 s scan/, "the device node's scan time bounds the request");
        assert.doesNotMatch(err.message, /In range/, 'it is declared: hidden, not missing from the list');
        assert.deepEqual(lastStatus(nodes.st), { fill: 'red', shape: 'ring', text: 'device not found' });
      } finally {
        await holder.close();
      }
    });

    it('a device the virtual radio does not have: DEVICE_NOT_FOUND says to add it to In range', async () => {
      const nodes = await load(flow({}, 'status-v2', [], 0.5));
      const { error } = await ask(nodes, { device: 'status-undeclared' });
      const err = error!.error as { code: string; message: string };
      assert.equal(err.code, 'DEVICE_NOT_FOUND');
      assert.match(
        err.message,
        /"status-undeclared" was not found.* The virtual radio has only the devices in range of a deployed device node \(its In range list\) or in BLE_OTA_VIRTUAL_DEVICES, and "status-undeclared" is in none: add it there and Deploy\.$/,
      );
    });

    it('keeps Node-RED running when Bluetooth is unavailable: red status that says why, done(err) on input', async function () {
      const problem = systemBluetoothProblem();
      if (!problem) this.skip(); // this machine has working Bluetooth
      const nodes = await load(flow({}).map((n) => (n.id === 'dev' ? { ...n, backend: 'bluetooth' } : n)));
      assert.deepEqual(lastStatus(nodes.st), { fill: 'red', shape: 'ring', text: problem!.reason });
      const { error } = await ask(nodes, {});
      assert.equal((error!.error as { code: string }).code, 'BLUETOOTH_UNAVAILABLE');
      assert.deepEqual(lastStatus(nodes.st), { fill: 'red', shape: 'ring', text: problem!.reason });
    });

    it('without a device configuration: INVALID_ARGUMENT to Catch', async () => {
      const nodes = await load(flow({ device: '' }));
      const { error } = await ask(nodes, {});
      assert.equal((error!.error as { code: string }).code, 'INVALID_ARGUMENT');
      assert.deepEqual(lastStatus(nodes.st), { fill: 'red', shape: 'ring', text: 'no device configured' });
    });

    it('closing during a request cancels it and finishes the close at once', async () => {
      const radio = sharedVirtualRadio();
      await radio.ensureDevice('status-close');
      const holder = await new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000 } }).connect({ name: 'status-close' });
      try {
        const nodes = await load(flow({}, 'status-close', [], 20)); // would scan for 20 s
        nodes.st.receive({});
        await settle();
        const closing = Date.now();
        await helper.unload();
        assert.ok(Date.now() - closing < 2000, `close took ${Date.now() - closing} ms`);
      } finally {
        await holder.close();
      }
    });
  });

  describe('OTA events', () => {
    it('scope all: one message per event of any upload node, msg.payload and msg.event the event', async () => {
      const nodes = await load(flow({ scope: 'all' }));
      otaEvents.publish(event('queued'));
      otaEvents.publish(event('uploading', { source: { id: 'u2', type: 'ble-ota-upload', name: '' }, percent: 42 }));
      await eventually(
        async () => nodes.received.length,
        (n) => n === 2,
        2000,
        'two messages',
      );
      assert.equal((nodes.received[0].event as OtaEvent).state, 'queued');
      assert.deepEqual(nodes.received[0].payload, nodes.received[0].event);
      assert.equal((nodes.received[1].payload as OtaEvent).percent, 42);
      assert.equal(nodes.received[0].topic, undefined, 'no topic unless one is set');
    });

    it('scope selected: only the chosen upload nodes; scope none: nothing', async () => {
      let nodes = await load(flow({ scope: 'selected', uploads: ['u2', 'u3'] }));
      otaEvents.publish(event('queued'));
      otaEvents.publish(event('queued', { source: { id: 'u2', type: 'ble-ota-upload', name: '' } }));
      otaEvents.publish(event('queued', { source: { id: 'u3', type: 'ble-ota-upload', name: '' } }));
      await settle();
      assert.deepEqual(
        nodes.received.map((m) => (m.event as OtaEvent).source.id),
        ['u2', 'u3'],
      );
      await helper.unload();

      nodes = await load(flow({ scope: 'none' }));
      otaEvents.publish(event('queued'));
      await settle();
      assert.equal(nodes.received.length, 0);
    });

    it('reports only the chosen states: final ones, or a list', async () => {
      let nodes = await load(flow({ scope: 'all', report: 'final' }));
      for (const state of ['queued', 'connecting', 'uploading', 'verifying', 'confirmed', 'failed'] as const) otaEvents.publish(event(state));
      await settle();
      assert.deepEqual(
        nodes.received.map((m) => (m.event as OtaEvent).state),
        ['confirmed', 'failed'],
      );
      await helper.unload();

      nodes = await load(flow({ scope: 'all', report: 'selected', states: ['uploading', 'cancelled'] }));
      for (const state of ['queued', 'uploading', 'confirmed', 'cancelled'] as const) otaEvents.publish(event(state));
      await settle();
      assert.deepEqual(
        nodes.received.map((m) => (m.event as OtaEvent).state),
        ['uploading', 'cancelled'],
      );
    });

    it('renders msg.payload and msg.topic from the event with Mustache', async () => {
      const nodes = await load(
        flow({
          scope: 'all',
          template:
            '{{device.name}} updated to {{image.version}} in {{durationS}} s ({{percent}} %, {{rate}}, {{protocol}}, was {{previousVersion}})' +
            '{{#is.failed}} failed{{/is.failed}}{{#succeeded}}.{{/succeeded}} by {{source.name}} at {{time}}',
          topic: 'ota/{{device.name}}/{{state}}',
        }),
      );
      otaEvents.publish(confirmedEvent());
      await eventually(
        async () => nodes.received.length,
        (n) => n === 1,
        2000,
        'one message',
      );
      const msg = nodes.received[0];
      assert.equal(msg.payload, 'esp32-kitchen updated to 1.4.2 in 12.3 s (100 %, 62 KB/s, v2, was 1.0.0). by fleet updater at 2026-01-02T03:04:05.000Z');
      assert.equal(msg.topic, 'ota/esp32-kitchen/confirmed');
      assert.equal((msg.event as OtaEvent).state, 'confirmed', 'msg.event is always the event');
    });

    it('renders failures with error.code and error.message, unescaped', async () => {
      const nodes = await load(flow({ scope: 'all', template: '{{device.label}}: {{state}} {{error.code}} <{{error.message}}>{{^final}} (not final){{/final}}' }));
      otaEvents.publish(
        event('failed', {
          device: { address: '24:0a:c4:00:00:02' },
          error: { code: 'DEVICE_REJECTED_IMAGE', message: "the device's check failed: see firmware/README.md & retry" },
        }),
      );
      otaEvents.publish(event('uploading', { percent: 7 }));
      await eventually(
        async () => nodes.received.length,
        (n) => n === 2,
        2000,
        'two messages',
      );
      assert.equal(nodes.received[0].payload, "24:0a:c4:00:00:02: failed DEVICE_REJECTED_IMAGE <the device's check failed: see firmware/README.md & retry>");
      assert.equal(nodes.received[1].payload, 'esp32-kitchen: uploading  <> (not final)');
    });

    it('each message has its own copy of the event', async () => {
      const nodes = await load(flow({ scope: 'all' }));
      const original = event('queued');
      otaEvents.publish(original);
      await eventually(
        async () => nodes.received.length,
        (n) => n === 1,
        2000,
        'one message',
      );
      (nodes.received[0].event as OtaEvent).device.name = 'changed downstream';
      assert.equal(original.device.name, 'esp32-kitchen');
    });

    it('an invalid template: node.error and a red ring at deploy, no events sent, no crash', async () => {
      const before = otaEvents.listenerCount('event');
      const nodes = await load(flow({ scope: 'all', template: 'updated {{#final}} unclosed' }));
      assert.deepEqual(lastStatus(nodes.st), { fill: 'red', shape: 'ring', text: 'template error' });
      const errorSpy = (nodes.st as unknown as { error: { called: boolean; lastCall: { args: unknown[] } } }).error;
      assert.ok(errorSpy.called);
      assert.match(String(errorSpy.lastCall.args[0]), /template.*not valid Mustache.*Unclosed section/i);
      assert.equal(otaEvents.listenerCount('event'), before, 'not listening with a broken template');
      assert.doesNotThrow(() => otaEvents.publish(event('queued')));
      await settle();
      assert.equal(nodes.received.length, 0);
    });

    it('close removes the listener: redeploys leak none, and events after it reach nobody', async () => {
      const before = otaEvents.listenerCount('event');
      for (let i = 0; i < 3; i++) {
        await load(flow({ scope: 'all' }));
        assert.equal(otaEvents.listenerCount('event'), before + 1);
        await helper.unload();
        assert.equal(otaEvents.listenerCount('event'), before);
      }
      const nodes = await load(flow({ scope: 'all' }));
      const st = nodes.st as unknown as { send: (m: Msg) => void };
      await helper.unload();
      let sent = 0;
      st.send = () => sent++;
      otaEvents.publish(event('queued'));
      await settle();
      assert.equal(sent, 0);
    });
  });

  describe('with real upload nodes', () => {
    function uploadFlow(status: FlowNode, device: string): FlowNode[] {
      return flow(status, device, [
        { id: 'up', z: 'tab', type: 'ble-ota-upload', device: 'dev', wires: [['results'], []] },
        { id: 'other', z: 'tab', type: 'ble-ota-upload', device: 'dev', wires: [[], []] },
        { id: 'results', z: 'tab', type: 'helper' },
      ]);
    }

    it("reports every state of a selected upload node's update, and not another node's failures", async () => {
      const nodes = await load(uploadFlow({ scope: 'selected', uploads: ['up'], topic: 'ota/{{device.label}}' }, 'status-real'));
      helper.getNode('other').receive({ payload: 'not an image' }); // fails at once, and is no concern of ours
      helper.getNode('up').receive({ payload: buildAppImage({ size: 64 * 1024, projectName: 'app', version: '2.1.0', seed: 71 }) });
      await eventually(
        async () => nodes.received.length && (nodes.received.at(-1)!.event as OtaEvent).state,
        (s) => s === 'confirmed',
        30_000,
        'confirmed',
      );
      const states = [...new Set(nodes.received.map((m) => (m.event as OtaEvent).state))];
      // preparing: the client looks for a base to patch against (the device reports the image it runs).
      assert.deepEqual(states, ['queued', 'connecting', 'preparing', 'uploading', 'verifying', 'restarting', 'confirming', 'confirmed']);
      // No repeated state (an MQTT status topic behind the node would publish each): "connecting" once, each percent once.
      const events = nodes.received.map((m) => m.event as OtaEvent);
      assert.equal(events.filter((e) => e.state === 'connecting').length, 1);
      for (let i = 1; i < events.length; i++) {
        const same = events[i].state === events[i - 1].state && events[i].percent === events[i - 1].percent;
        assert.ok(!same, `event ${i} repeats ${events[i].state} ${events[i].percent ?? ''}`);
      }
      assert.ok(nodes.received.every((m) => (m.event as OtaEvent).source.id === 'up'));
      assert.ok(nodes.received.every((m) => m.topic === 'ota/status-real'));
      const last = nodes.received.at(-1)!.event as OtaEvent;
      assert.equal(last.result?.runningVersion, '2.1.0');
      assert.equal(last.device.address, (await sharedVirtualRadio().ensureDevice('status-real')).address);
    });

    it('three devices: one upload node fed three messages with msg.device updates each in turn, and the template lists each', async () => {
      const fleet = ['status-fleet-1', 'status-fleet-2', 'status-fleet-3'];
      const radio = sharedVirtualRadio();
      const devices = await Promise.all(fleet.map((name) => radio.ensureDevice(name)));
      const nodes = await load(uploadFlow({ device: '', scope: 'all', report: 'final', template: '{{device.name}} updated to {{image.version}} in {{durationS}} s' }, fleet[0]));
      const all: OtaEvent[] = [];
      const record = (e: OtaEvent) => all.push(e);
      otaEvents.on('event', record);
      try {
        const image = buildAppImage({ size: 48 * 1024, projectName: 'fleet-app', version: '3.0.0', seed: 72 });
        for (const name of fleet) helper.getNode('up').receive({ payload: image, device: name });
        await eventually(
          async () => nodes.received.length,
          (n) => n === 3,
          45_000,
          'three final events',
        );
      } finally {
        otaEvents.off('event', record);
      }

      const lines = nodes.received.map((m) => m.payload as string);
      fleet.forEach((name, i) => assert.match(lines[i], new RegExp(`^${name} updated to 3\\.0\\.0 in \\d+\\.\\d s$`)));
      assert.ok(nodes.received.every((m) => (m.event as OtaEvent).state === 'confirmed'));

      // In turn: each update starts connecting after the previous one ended.
      const ups = all.filter((e) => e.source.id === 'up');
      for (let i = 1; i < fleet.length; i++) {
        const previousEnd = ups.findIndex((e) => e.state === 'confirmed' && e.device.name === fleet[i - 1]);
        const nextStart = ups.findIndex((e) => e.state === 'connecting' && e.device.name === fleet[i]);
        assert.ok(previousEnd >= 0 && nextStart > previousEnd, `${fleet[i]} started after ${fleet[i - 1]} ended`);
      }
      for (const device of devices) {
        const state = await eventually(
          () => device.state(),
          (s) => s.running === 'ota_1',
          5000,
          `${device.name} boots ota_1`,
        );
        assert.equal(state.slots.ota_1.state, 'valid');
      }
    });
  });
});

describe('ble-ota-status in a real Node-RED', function () {
  this.timeout(120_000);
  let nr: NodeRedProcess;

  // Debug nodes that log to the console; a name equal to a node's id would read as a config node reference.
  const debug = (id: string, complete: string) => ({
    id,
    z: '',
    type: 'debug',
    name: `watch ${id}`,
    active: true,
    tosidebar: false,
    console: true,
    tostatus: false,
    complete,
    targetType: 'msg',
    wires: [],
  });
  const flow = [
    { id: 'nr-dev', type: 'ble-ota-device', device: 'status-nr', backend: 'virtual', virtualDevices: 'status-nr', scanTimeout: '5', operationTimeout: '5' },
    { id: 'nr-ask', z: '', type: 'inject', props: [], repeat: '', once: false, wires: [['nr-st']] },
    {
      id: 'nr-st',
      z: '',
      type: 'ble-ota-status',
      device: 'nr-dev',
      scope: 'all',
      report: 'final',
      template: 'notify: {{device.label}} {{state}} {{image.version}} in {{durationS}} s',
      topic: 'ota/{{device.label}}',
      wires: [['nr-out']],
    },
    debug('nr-out', 'true'),
    { id: 'nr-watch', z: '', type: 'status', scope: ['nr-st'], wires: [['nr-status']] },
    debug('nr-status', 'status.text'),
    { id: 'nr-update', z: '', type: 'inject', props: [], repeat: '', once: false, wires: [['nr-file']] },
    {
      id: 'nr-file',
      z: '',
      type: 'file in',
      filename: 'firmware/app.bin',
      filenameType: 'str',
      format: '',
      chunk: false,
      sendError: false,
      encoding: 'none',
      allProps: false,
      wires: [['nr-up']],
    },
    { id: 'nr-up', z: '', type: 'ble-ota-upload', device: 'nr-dev', wires: [[], []] },
  ];

  before(async () => {
    nr = await NodeRedProcess.start(flow);
  });
  after(() => nr?.stop());

  it('serves its editor, help and message catalogue', async () => {
    const html = await (await fetch(`${nr.url}/nodes`, { headers: { Accept: 'text/html' } })).text();
    assert.ok(html.includes('data-template-name="ble-ota-status"'));
    assert.match(html, /data-help-name="ble-ota-status">\s*<p>\w/);
    const catalogue = (await (await fetch(`${nr.url}/locales/node-red-contrib-esp32-ble-ota/ble-ota-status?lng=en-US`)).json()) as {
      'ble-ota-status': { label: Record<string, string> };
    };
    assert.equal(catalogue['ble-ota-status'].label.scopeAll, 'all upload nodes');
  });

  it('reports the device on input, with its status text from the catalogue', async () => {
    const from = nr.output.length;
    await nr.inject('nr-ask');
    await nr.waitForOutput(/\[debug:watch nr-status\][\s\S]*?runs 1\.0\.0/, 30_000, from);
    await nr.waitForOutput(/\[debug:watch nr-out\][\s\S]*?project: 'virtual-esp32'/, 30_000, from);
  });

  it("renders an upload node's final event with the template", async () => {
    mkdirSync(join(nr.userDir, 'firmware'), { recursive: true });
    writeFileSync(join(nr.userDir, 'firmware/app.bin'), buildAppImage({ projectName: 'nr-app', version: '4.5.6', size: 40_000 }));
    const from = nr.output.length;
    await nr.inject('nr-update');
    await nr.waitForOutput(/\[debug:watch nr-out\][\s\S]*?payload: 'notify: status-nr confirmed 4\.5\.6 in \d+\.\d s'[\s\S]*?topic: 'ota\/status-nr'/, 60_000, from);
  });
});
