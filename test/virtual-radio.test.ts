/**
 * The virtual radio behaves like a real one: only declared devices exist,
 * an unknown name or address is not found after the scan time, declared
 * options make a device offline, slow or flaky, and the processes behind
 * declared devices are bounded and stop when idle.
 */
import { strict as assert } from 'node:assert';
import { BleOtaClient } from '../lib/client/ota-client';
import { BleOtaError } from '../lib/errors';
import { buildAppImage } from '../lib/image/app-image-builder';
import { ensureVirtualEsp32 } from '../lib/virtual/build';
import { boundMs, preset } from '../lib/virtual/link-model';
import { parseVirtualDevices, virtualDefaultsFromEnv, virtualDevicesFromEnv, VirtualRadio } from '../lib/virtual/virtual-radio';
import { eventually } from './support/eventually';

const SCAN_MS = 1500;

describe('virtual radio: declared devices only', function () {
  this.timeout(60_000);
  let radio: VirtualRadio;
  let client: BleOtaClient;

  before(async function () {
    // Built first: a scan that has to wait for the compiler would end before the devices it started advertise.
    this.timeout(180_000);
    await ensureVirtualEsp32();
  });

  beforeEach(() => {
    radio = new VirtualRadio();
    client = new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: SCAN_MS, gattMs: 2000 } });
  });
  afterEach(() => radio.stopAll());

  async function notFound(target: { name: string } | { address: string }): Promise<number> {
    const started = Date.now();
    await assert.rejects(client.connect(target), (err: BleOtaError) => err.code === 'DEVICE_NOT_FOUND');
    return Date.now() - started;
  }

  it('an unknown name or address is not found after the scan time, and starts no process', async () => {
    radio.declare(parseVirtualDevices('radio-known'));
    assert.equal(await radio.reach('radio-typo'), undefined);
    assert.ok((await notFound({ name: 'radio-typo' })) >= SCAN_MS - 100);
    await notFound({ address: '24:0a:c4:de:ad:01' });
    assert.deepEqual(
      radio.bindings.devices.map((d) => d.name),
      ['radio-known'],
      'the scans started only the declared device',
    );
  });

  it('a declared device is found by a scan and by name, and its address works too', async () => {
    radio.declare(parseVirtualDevices('radio-a, 24:0a:c4:00:aa:01'));
    const connection = await client.connect({ name: 'radio-a' });
    assert.equal((await connection.info()).name, 'radio-a');
    await connection.close();
    const byAddress = await radio.reach('24-0A-C4-00-AA-01');
    assert.equal(byAddress?.address, '24:0a:c4:00:aa:01');
  });

  it('offline: declared, never found', async () => {
    radio.declare(parseVirtualDevices('radio-off offline'));
    assert.equal(await radio.reach('radio-off'), undefined);
    await notFound({ name: 'radio-off' });
    assert.equal(radio.bindings.devices.length, 0);
  });

  it('slow: an update takes as long as the preset link allows', async () => {
    radio.declare(parseVirtualDevices('radio-slow slow=linux-noble-bt41-esp32'));
    await radio.reach('radio-slow');
    const image = buildAppImage({ size: 128 * 1024, projectName: 'slow', version: '2.0.0', seed: 3 });
    const started = Date.now();
    await client.update({ target: { name: 'radio-slow' }, image });
    const bound = boundMs(preset('linux-noble-bt41-esp32'), image.length).boundMs;
    assert.ok(Date.now() - started >= bound * 0.9, `took ${Date.now() - started} ms, the link allows ${bound.toFixed(0)} ms`);
  });

  it('flaky: connections drop within seconds', async () => {
    radio.declare(parseVirtualDevices('radio-flaky flaky=100 slow'));
    await radio.reach('radio-flaky');
    const drops: number[] = [];
    radio.bindings.on('disconnect', (_id: string, reason: number) => drops.push(reason));
    const image = buildAppImage({ size: 256 * 1024, projectName: 'flaky', version: '2.0.0', seed: 4 });
    await client.update({ target: { name: 'radio-flaky' }, image, resumeAttempts: 1 }).catch(() => undefined);
    assert.ok(drops.includes(0x08), 'a link dropped as a device going out of range');
  });

  it("a mistake in the environment names its variable (the same words as the device node's list or the client's secret would)", () => {
    assert.throws(() => virtualDevicesFromEnv({ BLE_OTA_VIRTUAL_DEVICES: 'a, b flaky=150' }), {
      code: 'INVALID_ARGUMENT',
      message:
        'BLE_OTA_VIRTUAL_DEVICES: Virtual device "b" has an unknown option "flaky=150": give a percentage from 0 to 100, e.g. flaky=30. Correct it there, or unset it, and start Node-RED again.',
    });
    assert.deepEqual(
      virtualDevicesFromEnv({ BLE_OTA_VIRTUAL_DEVICES: 'a' }).map((d) => d.name),
      ['a'],
    );
    // A malformed secret, before any device starts with it; its value is not repeated.
    const almost = 'ab'.repeat(31);
    assert.throws(
      () => virtualDefaultsFromEnv({ BLE_OTA_VIRTUAL_SECRET: almost }),
      (err: BleOtaError) =>
        err.code === 'INVALID_ARGUMENT' &&
        err.message ===
          "BLE_OTA_VIRTUAL_SECRET: The fleet secret must be 64 hex digits (esp32-ble-ota secret makes one); it has 62 characters. Give the virtual devices' fleet secret there, or unset it.",
    );
    assert.equal(virtualDefaultsFromEnv({ BLE_OTA_VIRTUAL_SECRET: 'ab'.repeat(32) }).fleetSecret, 'ab'.repeat(32));
  });

  it('a bad option is refused with what is allowed', () => {
    assert.throws(
      () => parseVirtualDevices('a slow=warp'),
      (err: BleOtaError) => err.code === 'INVALID_ARGUMENT' && /presets are/.test(err.message),
    );
    assert.throws(
      () => parseVirtualDevices('a fast'),
      (err: BleOtaError) => err.code === 'INVALID_ARGUMENT',
    );
    assert.throws(
      () => parseVirtualDevices('a flaky=150'),
      (err: BleOtaError) => err.code === 'INVALID_ARGUMENT',
    );
  });

  it('at most limits.maxProcesses run: the least recently used idle one stops; idle ones stop', async () => {
    radio.limits = { maxProcesses: 2, idleMs: 60_000 };
    radio.declare(parseVirtualDevices('radio-1, radio-2, radio-3'));
    const first = await radio.reach('radio-1');
    await radio.reach('radio-2');
    await radio.reach('radio-3');
    assert.deepEqual(radio.bindings.devices.map((d) => d.name).sort(), ['radio-2', 'radio-3']);
    assert.equal(first?.running, false, 'its process ended');
    await radio.stopAll();

    radio = new VirtualRadio();
    radio.limits = { maxProcesses: 2, idleMs: 300 };
    radio.declare(parseVirtualDevices('radio-4'));
    const device = await radio.reach('radio-4');
    await eventually(
      async () => device?.running,
      (running) => running === false,
      5000,
      'the idle device stopping',
    );
    assert.equal(radio.bindings.devices.length, 0);
    assert.ok(await radio.reach('radio-4'), 'it starts again when looked for');
  });

  it('a device stopped for idleness keeps its flash: it starts again running what it was last updated to', async () => {
    radio.limits = { maxProcesses: 2, idleMs: 300 };
    radio.declare(parseVirtualDevices('radio-keep, radio-fresh'));
    await client.update({ target: { name: 'radio-keep' }, image: buildAppImage({ size: 40_000, projectName: 'kept', version: '2.0.0' }) });
    const first = radio.bindings.devices.find((d) => d.name === 'radio-keep');
    await eventually(
      async () => first?.running,
      (running) => running === false,
      5000,
      'the idle device stopping',
    );

    const again = await radio.reach('radio-keep');
    assert.notEqual(again, first, 'a new process');
    const connection = await client.connect({ name: 'radio-keep' });
    const info = await connection.info();
    await connection.close();
    assert.deepEqual([info.ota?.app.projectName, info.ota?.app.version], ['kept', '2.0.0']);
    const other = await client.connect({ name: 'radio-fresh' });
    assert.equal((await other.info()).ota?.app.version, '1.0.0', 'each device keeps its own flash');
    await other.close();
  });

  it('a new image nobody confirmed is not what a stopped device comes back with: it rolls back, as an ESP32 switched off', async () => {
    radio.limits = { maxProcesses: 1, idleMs: 60_000 };
    radio.declare(parseVirtualDevices('radio-pending, radio-next'));
    const abort = new AbortController();
    await client
      .update({
        target: { name: 'radio-pending' },
        image: buildAppImage({ size: 30_000, projectName: 'pending', version: '3.0.0' }),
        signal: abort.signal,
        onProgress: (p) => p.phase === 'confirming' && abort.abort(),
      })
      .catch(() => undefined);
    const device = await radio.reach('radio-pending');
    await eventually(
      () => device!.state(),
      (st) => st.slots[st.running]?.state === 'pending-verify',
      10_000,
      'the new image running pending verify',
    );
    await radio.reach('radio-next'); // the bound of 1: radio-pending stops to make room
    assert.equal(device!.running, false);
    const again = await radio.reach('radio-pending'); // and radio-next stops
    assert.equal((await again!.state()).slots.ota_0.state, 'valid');
    const connection = await client.connect({ name: 'radio-pending' });
    assert.equal((await connection.info()).ota?.app.version, '1.0.0');
    await connection.close();
  });

  it('a declarer withdrawing its list: the devices it started stop at the next idle check', async () => {
    radio.limits = { maxProcesses: 4, idleMs: 400 };
    radio.declare(parseVirtualDevices('radio-w'), 'node-1');
    const device = await radio.reach('radio-w');
    radio.undeclare('node-1');
    await eventually(
      async () => device?.running,
      (running) => running === false,
      5000,
      'the undeclared device stopping',
    );
    assert.equal(await radio.reach('radio-w'), undefined);
  });

  it('a device nobody declares any more is out of range at once: a scan does not find it while its process still runs', async () => {
    radio.limits = { maxProcesses: 4, idleMs: 600_000 };
    radio.declare(parseVirtualDevices('radio-gone'), 'node-1');
    radio.declare(parseVirtualDevices('radio-stays'), 'node-2');
    const gone = await radio.reach('radio-gone');
    await radio.reach('radio-stays');
    radio.undeclare('node-1');
    const found = await client.scan(SCAN_MS);
    assert.deepEqual(
      found.map((d) => d.name),
      ['radio-stays'],
    );
    assert.equal(gone?.running, true, 'its process runs until the idle check (a redeploy declares it again)');
    await notFound({ name: 'radio-gone' });
    radio.declare(parseVirtualDevices('radio-gone'), 'node-1');
    const again = await client.connect({ name: 'radio-gone' });
    await again.close();
  });
});
