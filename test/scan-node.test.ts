/**
 * ble-ota-scan in a Node-RED runtime against virtual ESP32s, and the
 * config node's scan endpoint in a real Node-RED with admin auth on.
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { namePattern } from '../lib/client/discovery';
import type { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { sharedVirtualRadio } from '../lib/virtual/virtual-radio';
import { adapterFor } from '../nodes/shared/adapter';
import { eventually } from './support/eventually';
import { deviceNode, helper, lastStatus, TestNode } from './support/node-red';
import { NodeRedProcess } from './support/node-red-process';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const scanNode = require('../nodes/ble-ota-scan/ble-ota-scan') as unknown;

type Msg = Record<string, unknown>;
interface Found {
  name: string;
  address: string;
  rssi: number | undefined;
  protocol: string;
  version?: string;
}

async function load(options: Record<string, unknown>): Promise<{ scan: TestNode; out: TestNode }> {
  const flow = [
    { id: 'tab', type: 'tab' },
    { id: 'dev', type: 'ble-ota-device', device: '', backend: 'virtual', scanTimeout: 2, operationTimeout: 2 },
    { id: 'scan', z: 'tab', type: 'ble-ota-scan', device: 'dev', duration: 1, wires: [['out']], ...options },
    { id: 'out', z: 'tab', type: 'helper' },
  ];
  await new Promise<void>((resolve) => helper.load([deviceNode, scanNode], flow, resolve));
  return { scan: helper.getNode('scan'), out: helper.getNode('out') };
}

function collect(out: TestNode, count: number, timeoutMs = 10_000): Promise<Msg[]> {
  const msgs: Msg[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${msgs.length} of ${count} messages`)), timeoutMs);
    out.on('input', (m: Msg) => {
      msgs.push(m);
      if (msgs.length === count) {
        clearTimeout(timer);
        resolve(msgs);
      }
    });
  });
}

describe('ble-ota-scan node', function () {
  this.timeout(30_000);

  before(async function () {
    this.timeout(120_000);
    const radio = sharedVirtualRadio();
    await radio.addDevice({ name: 'scan-ours-1' });
    await radio.addDevice({ name: 'scan-ours-2' });
    await radio.addDevice({ name: 'scan-seed', protocol: 'seed' });
    await new Promise<void>((resolve) => helper.startServer(() => resolve()));
  });
  after(function (done) {
    void sharedVirtualRadio()
      .stopAll()
      .then(() => helper.stopServer(done));
  });
  afterEach(() => helper.unload());

  it('lists the devices that advertise the OTA service in one message, and shows the count', async () => {
    const { scan, out } = await load({ namePattern: 'scan-*' });
    const got = collect(out, 1);
    scan.receive({ payload: 'go' });
    const [msg] = await got;
    const names = (msg.payload as Found[]).map((d) => d.name).sort();
    assert.deepEqual(names, ['scan-ours-1', 'scan-ours-2', 'scan-seed'], 'the seed device is found by its name');
    assert.deepEqual(lastStatus(scan), { fill: 'green', shape: 'dot', text: '3 devices' });
  });

  it("the edit dialog's Scan, while a flow holds the radio, answers at once that it is busy; when the radio is free, it lists devices", async () => {
    await load({});
    let release = () => undefined as void;
    const held = adapterFor('virtual').run(() => new Promise<void>((resolve) => (release = resolve)));
    const busy = await helper.request().get('/ble-ota/scan?backend=virtual&duration=1');
    assert.equal(busy.status, 409);
    assert.equal(busy.body.error.code, 'BUSY');
    assert.match(busy.body.error.message, /busy .*scan again when it is done/);
    release();
    await held;
    const free = await helper.request().get('/ble-ota/scan?backend=virtual&duration=1');
    assert.equal(free.status, 200);
    assert.ok((free.body as Found[]).some((d) => d.name === 'scan-ours-1'));
  });

  it("the edit dialog's Scan runs one at a time: a second, while one runs, is refused at once (429 BUSY)", async () => {
    await load({});
    const first = helper
      .request()
      .get('/ble-ota/scan?backend=virtual&duration=5')
      .then((r) => r);
    // Started: it holds the radio now, for its five seconds of scanning at least.
    await eventually(
      async () => adapterFor('virtual').inUse,
      (busy) => busy,
      10_000,
      'the first scan',
    );
    const second = await helper.request().get('/ble-ota/scan?backend=virtual&duration=1');
    assert.equal(second.status, 429);
    assert.equal(second.body.error.code, 'BUSY');
    assert.match(second.body.error.message, /another editor scan is running/);
    assert.equal(adapterFor('virtual').queued, 0, 'nothing queued behind the radio');
    assert.equal((await first).status, 200);
  });

  it('finds seed devices by connecting when asked to probe, and reads versions; one message per device', async () => {
    const { scan, out } = await load({ output: 'each', probe: true, readVersions: true });
    const got = collect(out, 3);
    scan.receive({});
    const found = (await got).map((m) => m.payload as Found).filter((d) => d.name.startsWith('scan-'));
    const seed = found.find((d) => d.name === 'scan-seed')!;
    assert.equal(seed.protocol, 'seed');
    const ours = found.filter((d) => d.protocol === 'v2');
    assert.equal(ours.length, 2);
    assert.ok(ours.every((d) => d.version === '1.0.0'));
  });

  it("one message per device: msg.topic is the device's name when the input's topic is empty (an Inject node's default), else the input's", async () => {
    const { scan, out } = await load({ output: 'each', namePattern: 'scan-ours-*' });
    let got = collect(out, 2);
    scan.receive({ topic: '', payload: 1 });
    let msgs = await got;
    assert.deepEqual(msgs.map((m) => m.topic).sort(), ['scan-ours-1', 'scan-ours-2']);
    assert.deepEqual(
      msgs.map((m) => (m.payload as Found).name),
      msgs.map((m) => m.topic),
    );
    out.removeAllListeners('input');
    got = collect(out, 2);
    scan.receive({ topic: 'fleet/scan' });
    msgs = await got;
    assert.deepEqual(
      msgs.map((m) => m.topic),
      ['fleet/scan', 'fleet/scan'],
    );
  });

  it('leaves out devices below the minimum RSSI', async () => {
    const { scan, out } = await load({ minRssi: -40 }); // virtual devices advertise at -50 dBm
    const got = collect(out, 1);
    scan.receive({});
    assert.deepEqual((await got)[0].payload, []);
    assert.deepEqual(lastStatus(scan), { fill: 'green', shape: 'dot', text: '0 devices' });
  });

  it('msg.stop ends a running scan early with what it found', async () => {
    const { scan, out } = await load({ duration: 20 });
    const got = collect(out, 1, 5000);
    const started = Date.now();
    scan.receive({});
    setTimeout(() => scan.receive({ stop: true }), 300);
    const [msg] = await got;
    assert.ok(Date.now() - started < 3000, 'stopped long before 20 s');
    assert.ok((msg.payload as Found[]).some((d) => d.name === 'scan-ours-1'));
  });

  it('only msg.stop === true stops a scan: a stop of "false" is another request, refused as busy while the scan goes on', async () => {
    const { scan, out } = await load({ duration: 1 });
    const got = collect(out, 1);
    const refused = new Promise<{ code?: string }>((resolve) => scan.on('call:error', (call: { args: unknown[] }) => resolve(call.args[0] as { code?: string })));
    scan.receive({});
    scan.receive({ stop: 'false' });
    assert.equal((await refused).code, 'BUSY');
    const [msg] = await got;
    assert.ok(
      (msg.payload as Found[]).some((d) => d.name === 'scan-ours-1'),
      'the scan ran its course',
    );
  });

  it('name patterns: globs; a regular expression is refused, not taken literally', () => {
    assert.ok(namePattern('ESP32-*')('esp32-kitchen'));
    assert.ok(!namePattern('esp32-?')('esp32-10'));
    assert.ok(namePattern('esp32-?')('esp32-1'));
    assert.ok(!namePattern('esp32.*')('esp32-1'), 'a dot in a glob is a dot');
    assert.throws(() => namePattern('/^esp32-\\d+$/'), { code: 'INVALID_ARGUMENT', message: /globs .* not regular expressions/ });
    // A glob made to backtrack, against a long name anyone can advertise: decided at once.
    assert.ok(!namePattern('*e'.repeat(24) + '!')('e'.repeat(29)));
  });

  describe('a device whose adapter reports RSSI 127 (not available)', () => {
    const devices: VirtualEsp32[] = [];

    before(async function () {
      this.timeout(60_000);
      // Added weakest-known last, so that the order found is the sort's, not the scan's.
      const radio = sharedVirtualRadio();
      devices.push(await radio.addDevice({ name: 'rssi-unknown', rssi: 127 }));
      devices.push(await radio.addDevice({ name: 'rssi-far', rssi: -70 }));
      devices.push(await radio.addDevice({ name: 'rssi-near', rssi: -45 }));
    });
    after(() => Promise.all(devices.map((d) => d.stop())));

    it('comes after every device with a known RSSI, with rssi undefined', async () => {
      const { scan, out } = await load({ namePattern: 'rssi-*' });
      const got = collect(out, 1);
      scan.receive({});
      const found = (await got)[0].payload as Found[];
      assert.deepEqual(
        found.map((d) => [d.name, d.rssi]),
        [
          ['rssi-near', -45],
          ['rssi-far', -70],
          ['rssi-unknown', undefined],
        ],
      );
    });

    it('never passes a minimum RSSI, not even the weakest a controller reports', async () => {
      const { scan, out } = await load({ namePattern: 'rssi-*', minRssi: -127 });
      const got = collect(out, 1);
      scan.receive({});
      assert.deepEqual(
        ((await got)[0].payload as Found[]).map((d) => d.name),
        ['rssi-near', 'rssi-far'],
      );
    });
  });
});

describe("the config node's scan endpoint, with admin auth on", function () {
  this.timeout(90_000);
  let nr: NodeRedProcess;

  before(async () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const bcrypt = require(require.resolve('bcryptjs', { paths: [require.resolve('node-red')] })) as {
      hashSync(s: string, rounds: number): string;
    };
    const hash = bcrypt.hashSync('secret-pass', 8);
    nr = await NodeRedProcess.start(
      // Devices declared both ways: in a device node's In range list and in the environment.
      [{ id: 'd0d0d0d0d0d0d0d0', type: 'ble-ota-device', name: 'radio', device: '', backend: 'virtual', virtualDevices: 'esp32-from-node' }],
      `adminAuth: { type: 'credentials', users: [
        { username: 'admin', password: ${JSON.stringify(hash)}, permissions: '*' },
        { username: 'viewer', password: ${JSON.stringify(hash)}, permissions: 'read' },
      ] },`,
      { BLE_OTA_VIRTUAL_DEVICES: 'esp32-from-env, esp32-switched-off offline' },
    );
  });
  after(() => nr?.stop());

  /** A token for the user, with everything the user may do (scope: '*' for the admin, 'read' for the viewer). */
  async function login(username: string, scope: string): Promise<string> {
    const res = await fetch(`${nr.url}/auth/token`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ client_id: 'node-red-admin', grant_type: 'password', scope, username, password: 'secret-pass' }),
    });
    assert.equal(res.status, 200);
    return ((await res.json()) as { access_token: string }).access_token;
  }

  it("refuses a request without the editor's permissions", async () => {
    const res = await fetch(`${nr.url}/ble-ota/scan?backend=virtual&duration=1`);
    assert.equal(res.status, 401);
  });

  it('refuses a logged-in user with read-only access: a scan drives the radio, and viewers only look', async () => {
    const token = await login('viewer', 'read');
    // The viewer can read the flows, so the token works: only the scan is refused.
    assert.equal((await fetch(`${nr.url}/flows`, { headers: { Authorization: `Bearer ${token}` } })).status, 200);
    const res = await fetch(`${nr.url}/ble-ota/scan?backend=virtual&duration=1`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(res.status, 401);
  });

  it('answers a logged-in editor with the declared virtual devices in range, and no others', async () => {
    const token = await login('admin', '*');
    const res = await fetch(`${nr.url}/ble-ota/scan?backend=virtual&duration=1`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(res.status, 200);
    const devices = (await res.json()) as Found[];
    assert.deepEqual(devices.map((d) => [d.name, d.protocol, d.version]).sort(), [
      ['esp32-from-env', 'v2', '1.0.0'],
      ['esp32-from-node', 'v2', '1.0.0'],
    ]);
  });
});

describe('a mistake in BLE_OTA_VIRTUAL_DEVICES', function () {
  this.timeout(90_000);
  let nr: NodeRedProcess;

  before(async () => {
    // The device node's own In range list is fine: only the environment's entry is wrong.
    nr = await NodeRedProcess.start(
      [
        { id: 'envbad-dev', type: 'ble-ota-device', name: 'radio', device: '', backend: 'virtual', virtualDevices: 'esp32-b' },
        { id: 'envbad-inject', type: 'inject', z: '', props: [], repeat: '', once: false, wires: [['envbad-scan']] },
        { id: 'envbad-scan', type: 'ble-ota-scan', z: '', name: 'in range', device: 'envbad-dev', duration: 1, output: 'list', wires: [[]] },
      ],
      '',
      { BLE_OTA_VIRTUAL_DEVICES: 'esp32-a slow=warp' },
    );
  });
  after(() => nr?.stop());

  it("is named as the variable's, not put down to the device node's In range list", async () => {
    const unknownOption = 'BLE_OTA_VIRTUAL_DEVICES: Virtual device "esp32-a" has an unknown option "slow=warp": the presets are';
    const logged = nr.output.split('\n').filter((line) => line.includes('[ble-ota-device:radio]'));
    assert.ok(
      logged.some((line) => line.includes(`[error] [ble-ota-device:radio] ${unknownOption}`)),
      logged.join('\n'),
    );
    assert.ok(!logged.some((line) => line.includes('Virtual devices in range')), logged.join('\n'));
    // A flow using the radio fails with the same words.
    const from = nr.output.length;
    await nr.inject('envbad-inject');
    await nr.waitForOutput(/\[error\] \[ble-ota-scan:in range\] BLE_OTA_VIRTUAL_DEVICES: Virtual device "esp32-a" has an unknown option "slow=warp"/, 20_000, from);
  });
});

describe("the config node's scan endpoint where the virtual ESP32 cannot be built", function () {
  this.timeout(90_000);
  let nr: NodeRedProcess;
  let cache: string;

  before(async () => {
    // No make, no compiler on the PATH, and an empty cache: nothing to run.
    cache = mkdtempSync(join(tmpdir(), 'ble-ota-no-cc-'));
    nr = await NodeRedProcess.start(
      [
        { id: 'nocc-dev', type: 'ble-ota-device', name: 'radio', device: '', backend: 'virtual', virtualDevices: 'esp32-b' },
        { id: 'nocc-inject', type: 'inject', z: '', props: [], repeat: '', once: false, wires: [['nocc-scan']] },
        { id: 'nocc-scan', type: 'ble-ota-scan', z: '', name: 'in range', device: 'nocc-dev', duration: 1, output: 'list', wires: [[]] },
      ],
      '',
      { PATH: '/nonexistent', BLE_OTA_VIRTUAL_CACHE: cache, BLE_OTA_VIRTUAL_DEVICES: 'esp32-a' },
    );
  });
  after(async () => {
    await nr?.stop();
    rmSync(cache, { recursive: true, force: true });
  });

  it('answers 503 VIRTUAL_DEVICE_UNAVAILABLE with what to install, not an empty list or a 500', async () => {
    const res = await fetch(`${nr.url}/ble-ota/scan?backend=virtual&duration=1`);
    assert.equal(res.status, 503);
    const body = (await res.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'VIRTUAL_DEVICE_UNAVAILABLE');
    assert.match(body.error.message, /needs `make`, a C compiler \(cc\) and the zlib and OpenSSL 3 headers/);
  });

  it("a flow's scan fails with the same error, rather than finding nothing", async () => {
    const from = nr.output.length;
    await nr.inject('nocc-inject');
    await nr.waitForOutput(/\[error\] \[ble-ota-scan:in range\] The virtual ESP32 is built from C sources on first use and needs `make`, a C compiler/, 20_000, from);
  });
});
