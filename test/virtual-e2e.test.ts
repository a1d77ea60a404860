/**
 * End to end in the seed protocol: the OTA client, through noble
 * (with-bindings) and the virtual bindings, to a virtual ESP32 running the
 * firmware's OTA core. The device speaks both protocols; the client is told
 * to use the seed's, as the seed's own Python client would.
 */
import { strict as assert } from 'node:assert';
import { BleOtaClient, Progress } from '../lib/client/ota-client';
import { BleOtaError } from '../lib/errors';
import { buildAppImage } from '../lib/image/app-image-builder';
import { Control, nobleUuid, OTA_CONTROL_UUID, OTA_DATA_UUID, OTA_SERVICE_UUID } from '../lib/protocol/constants';
import { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { VirtualRadio } from '../lib/virtual/virtual-radio';
import { eventually } from './support/eventually';

const MB = 1024 * 1024;

async function bootedSlot(device: VirtualEsp32, slot: string) {
  return eventually(
    () => device.state(),
    (s) => s.running === slot && s.transfer === 'idle',
    5000,
    `booting ${slot}`,
  );
}

describe('seed protocol end to end through noble and the virtual ESP32', function () {
  let radio: VirtualRadio;
  let device: VirtualEsp32;
  let client: BleOtaClient;

  before(async function () {
    this.timeout(120_000); // the first run compiles the virtual ESP32
    radio = new VirtualRadio();
    device = await radio.addDevice({ name: 'e2e-esp32', restartDelayMs: 20 });
    client = new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000, gattMs: 2000 } });
  });

  after(() => radio.stopAll());

  it('uploads a 1 MB image; the device restarts into the new slot, byte-identical to the image', async () => {
    const before = await device.state();
    const target = before.running === 'ota_0' ? 'ota_1' : 'ota_0';
    const image = buildAppImage({ size: MB, projectName: 'e2e', version: '2.0.0', seed: 7 });
    const progress: Progress[] = [];

    const result = await client.update({ target: { name: 'e2e-esp32' }, image, protocol: 'seed', onProgress: (p) => progress.push(p) });

    assert.equal(result.restarted, true);
    assert.equal(result.image.version, '2.0.0');
    assert.equal(result.bytes, image.length);
    assert.equal(result.mtu, 256, 'noble asks for MTU 256, the device offers 517');
    assert.equal(result.packetSize, 253);
    assert.equal(result.packets, Math.ceil(image.length / 253));

    const state = await bootedSlot(device, target);
    assert.equal(state.slots[target].state, 'valid', 'the new image confirmed itself after booting');
    const flash = await device.readFlash(target, 0, image.length);
    assert.ok(flash.equals(image), 'slot contents equal the image');

    const phases = [...new Set(progress.map((p) => p.phase))];
    assert.deepEqual(phases, ['scanning', 'connecting', 'preparing', 'uploading', 'verifying', 'restarting']);
    const percents = progress.filter((p) => p.phase === 'uploading').map((p) => p.percent);
    assert.deepEqual(
      percents,
      [...percents].sort((a, b) => a - b),
      'progress never goes back',
    );
    assert.equal(percents[percents.length - 1], 100);
  });

  it('reads the new firmware revision after the restart', async () => {
    const image = buildAppImage({ size: 64 * 1024, projectName: 'e2e', version: '3.1.4', seed: 8 });
    await client.update({ target: { name: 'e2e-esp32' }, image, protocol: 'seed' });
    await eventually(
      () => device.state(),
      (s) => s.transfer === 'idle' && s.slots[s.running].size === image.length,
      5000,
      'restart',
    );
    const connection = await client.connect({ name: 'e2e-esp32' });
    try {
      assert.equal((await connection.info()).firmwareRevision, '3.1.4');
    } finally {
      await connection.close();
    }
  });

  it('an image the device rejects at DONE leaves the running image in place', async () => {
    const before = await device.state();
    const image = buildAppImage({ size: 32 * 1024, seed: 9 });
    image[image.length - 5] ^= 0xff; // inside the appended SHA-256: only the device sees it
    const connection = await client.connect({ name: 'e2e-esp32' });
    try {
      await assert.rejects(connection.uploadSeed(image), (err: BleOtaError) => err.code === 'DEVICE_REJECTED_IMAGE');
    } finally {
      await connection.close();
    }
    const after = await device.state();
    assert.equal(after.running, before.running);
    assert.equal(after.boot, before.boot, 'the rejected slot is never selected');
  });

  it('a cancelled upload is aborted on the device, and the next one succeeds', async () => {
    const before = await device.state();
    const image = buildAppImage({ size: 256 * 1024, version: '4.0.0', seed: 10 });
    const abort = new AbortController();
    await assert.rejects(
      client.update({
        target: { name: 'e2e-esp32' },
        image,
        protocol: 'seed',
        signal: abort.signal,
        onProgress: (p) => p.percent >= 50 && abort.abort(),
      }),
      (err: BleOtaError) => err.code === 'CANCELLED',
    );
    const mid = await eventually(
      () => device.state(),
      (s) => s.transfer === 'idle',
      2000,
      'abort on the device',
    );
    assert.equal(mid.running, before.running);
    assert.equal(mid.boot, before.boot);

    const result = await client.update({ target: { name: 'e2e-esp32' }, image, protocol: 'seed' });
    assert.equal(result.restarted, true);
  });

  it('power lost mid-transfer: the client reports the lost link, the device boots its old image', async () => {
    const before = await device.state();
    const image = buildAppImage({ size: 256 * 1024, version: '5.0.0', seed: 11 });
    let cut = false;
    await assert.rejects(
      client.update({
        target: { name: 'e2e-esp32' },
        image,
        protocol: 'seed',
        onProgress: (p) => {
          if (p.percent >= 30 && !cut) {
            cut = true;
            void device.powerCycle();
          }
        },
      }),
      (err: BleOtaError) => {
        assert.equal(err.code, 'DISCONNECTED');
        // The seed protocol installs nothing before DONE: the failure says so.
        assert.equal(err.device?.runs, 'old');
        assert.match(err.message, /The device runs its previous firmware: the seed protocol installs nothing before the end of the transfer\.$/);
        return true;
      },
    );
    const after = await eventually(
      () => device.state(),
      (s) => s.transfer === 'idle',
      2000,
      'boot after power loss',
    );
    assert.equal(after.running, before.running);
    assert.equal(after.slots[after.running].state, 'valid');
  });

  it('a control notification that came during the transfer is not read as the answer to DONE', async () => {
    // A REQUEST_ACK notified again mid-transfer (sent twice, or a late one): DONE's answer is what counts.
    const bindings = radio.bindings as unknown as { write: (id: string, s: string, c: string, data: Buffer, withoutResponse: boolean) => void };
    const write = bindings.write.bind(bindings);
    let stray = false;
    bindings.write = (id, service, chr, data, withoutResponse) => {
      if (chr === nobleUuid(OTA_DATA_UUID) && !stray && data.length > 2) {
        stray = true;
        setImmediate(() => radio.bindings.emit('read', id, nobleUuid(OTA_SERVICE_UUID), nobleUuid(OTA_CONTROL_UUID), Buffer.from([Control.REQUEST_ACK]), true));
      }
      write(id, service, chr, data, withoutResponse);
    };
    try {
      const image = buildAppImage({ size: 32 * 1024, version: '6.0.0', seed: 12 });
      const result = await client.update({ target: { name: 'e2e-esp32' }, image, protocol: 'seed' });
      assert.ok(stray, 'the stray notification came during the transfer');
      assert.equal(result.restarted, true);
    } finally {
      bindings.write = write;
    }
  });

  it('a seed update refused before anything is sent says the device runs what it ran', async () => {
    // The seed protocol names no device id: asked for one, the client refuses before its first request.
    const image = buildAppImage({ size: 32 * 1024, version: '7.0.0', seed: 13 });
    await assert.rejects(client.update({ target: { name: 'e2e-esp32' }, image, protocol: 'seed', deviceId: '24:0a:c4:00:00:09' }), (err: BleOtaError) => {
      assert.equal(err.code, 'WRONG_DEVICE');
      assert.equal(err.device?.runs, 'old');
      assert.match(err.message, /Nothing was sent\. The device runs what it ran before\.$/);
      return true;
    });
  });

  it('a scan lists the virtual devices in range with their names and the OTA service', async () => {
    const other = await radio.addDevice({ name: 'e2e-second' });
    const seen = await client.scan(200);
    const names = seen.map((d) => d.name).sort();
    assert.deepEqual(names, ['e2e-esp32', 'e2e-second']);
    assert.ok(seen.every((d) => d.advertisesOta));
    assert.ok(seen.some((d) => d.address === other.address));
  });

  it('a connection cancelled while it looks for the device says so, and names no update', async () => {
    const controller = new AbortController();
    const connecting = client.connect({ name: 'nobody' }, { signal: controller.signal, timeouts: { scanMs: 60_000 }, onProgress: () => controller.abort() });
    await assert.rejects(connecting, (err: BleOtaError) => err.code === 'CANCELLED' && err.message === 'The connection was cancelled before it was made.');
  });

  it('a device nobody advertises ends in DEVICE_NOT_FOUND', async () => {
    await assert.rejects(
      client.update({ target: { name: 'nobody' }, image: buildAppImage({ size: 4096 }), timeouts: { scanMs: 300 } }),
      (err: BleOtaError) => err.code === 'DEVICE_NOT_FOUND' && /nobody/.test(err.message),
    );
  });
});
