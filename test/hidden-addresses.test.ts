/**
 * A platform that hides device addresses (macOS: CoreBluetooth gives noble
 * an empty address for every device): the client still reaches the device
 * it started with, by noble's id, when it connects again after RESTART and
 * when a scan reads each device's version, with other OTA devices in range.
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { discoverOtaDevices } from '../lib/client/discovery';
import { BleOtaClient } from '../lib/client/ota-client';
import { buildAppImage } from '../lib/image/app-image-builder';
import { VirtualRadio } from '../lib/virtual/virtual-radio';
import { OWNER, ownedDevice, signedImage } from './support/owner';

/** A radio whose advertisements carry no address, as noble reports them on macOS. */
function radioWithoutAddresses(): VirtualRadio {
  const radio = new VirtualRadio();
  const emit = radio.bindings.emit.bind(radio.bindings);
  radio.bindings.emit = (event: string | symbol, ...args: unknown[]) => {
    if (event === 'discover') args[1] = '';
    return emit(event, ...args);
  };
  return radio;
}

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
