/**
 * A new image's self-test that takes its time: on the ESP32 the firmware's
 * checks, then the application's own health check (ble_ota_app_healthy),
 * which may wait for a sensor or a network. Until it passes the image runs
 * pending verify and the device answers CONFIRM with BAD_STATE. The virtual
 * ESP32's manual self-test stands for it: each verdict is given when the
 * client has shown, on air, that it waits for one, so no test races a clock.
 */
import { strict as assert } from 'node:assert';
import { BleOtaClient } from '../lib/client/ota-client';
import { BleOtaError } from '../lib/errors';
import { buildAppImage } from '../lib/image/app-image-builder';
import { Command, OTA_COMMAND_UUID, OTA_INFO_UUID, Status } from '../lib/protocol/constants';
import { decodeNotification } from '../lib/protocol/v2-codec';
import type { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { VirtualRadio } from '../lib/virtual/virtual-radio';

const KB = 1024;

/** Calls `then` once, at the device's first CONFIRM answered BAD_STATE; counts the CONFIRMs answered. */
function onConfirmRefused(radio: VirtualRadio, device: VirtualEsp32, then: () => void) {
  const seen = { refused: 0, confirmed: 0 };
  const listener = (address: string, uuid: string, data: Buffer) => {
    if (address !== device.address || uuid !== OTA_COMMAND_UUID) return;
    const n = decodeNotification(data);
    if (n.kind !== 'answer' || n.opcode !== Command.CONFIRM) return;
    if (n.status === Status.BAD_STATE && seen.refused++ === 0) then();
    if (n.status === Status.OK) seen.confirmed++;
  };
  radio.bindings.on('air-notify', listener);
  return { seen, stop: () => radio.bindings.off('air-notify', listener) };
}

describe('a self-test that takes its time (the application health check)', function () {
  this.timeout(60_000);
  let radio: VirtualRadio;
  let client: BleOtaClient;

  before(() => {
    radio = new VirtualRadio();
    client = new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000, gattMs: 2000, restartMs: 3000 } });
  });

  after(() => radio.stopAll());

  it('client confirmation: CONFIRM is sent again while the device refuses it, and confirms once the self-test passed', async () => {
    const device = await radio.addDevice({ name: 'st-client', restartDelayMs: 20, selfTest: 'manual' });
    const image = buildAppImage({ size: 64 * KB, projectName: 'st-app', version: '2.0.0', seed: 71 });
    const verdicts: Array<Promise<string>> = [];
    const trace = onConfirmRefused(radio, device, () => verdicts.push(device.selfTest(true)));

    const result = await client.update({ target: { name: device.name }, image, confirm: 'client' });
    trace.stop();

    assert.equal(await verdicts[0], 'pending-verify', 'the self-test passed; the image waited for the client');
    assert.ok(trace.seen.refused >= 1, 'CONFIRM was refused while the self-test had not passed');
    assert.equal(trace.seen.confirmed, 1, 'and taken once it had');
    assert.equal(result.confirmed, true);
    assert.equal(result.runningVersion, '2.0.0');
    const state = await device.state();
    assert.equal(state.slots[state.running].state, 'valid');
  });

  it('device confirmation: the client waits while the new image runs pending verify, and reports it confirmed', async () => {
    const device = await radio.addDevice({ name: 'st-device', restartDelayMs: 20, selfTest: 'manual' });
    const image = buildAppImage({ size: 64 * KB, projectName: 'st-app', version: '2.0.0', seed: 72 });
    // The verdict comes once the client read OTA Info from the new image waiting for it.
    let booted = false;
    let verdict: Promise<string> | undefined;
    const onBoot = (_slot: string, state: string) => (booted ||= state === 'pending-verify');
    const onRead = (address: string, uuid: string) => {
      if (address === device.address && uuid === OTA_INFO_UUID && booted && !verdict) verdict = device.selfTest(true);
    };
    device.on('boot', onBoot);
    radio.bindings.on('air-read', onRead);

    const result = await client.update({ target: { name: device.name }, image, confirm: 'device' });
    radio.bindings.off('air-read', onRead);
    device.off('boot', onBoot);

    assert.ok(verdict, 'the client read OTA Info while the self-test waited');
    assert.equal(await verdict, 'valid', 'the device confirmed the image itself');
    assert.equal(result.confirmed, true);
    assert.equal(result.runningVersion, '2.0.0');
  });

  it('an application that never gives its verdict: the device rolls the image back once its time is over, and the client says so', async () => {
    // On the ESP32, CONFIG_BLE_OTA_APP_CHECK_TIMEOUT_S: a check that never returns would keep the image pending, refusing every update, until someone restarts the device.
    const device = await radio.addDevice({ name: 'st-silent', restartDelayMs: 20, selfTest: 'manual', selfTestTimeoutMs: 300 });
    const before = await device.state();
    const image = buildAppImage({ size: 64 * KB, projectName: 'st-app', version: '2.0.0', seed: 75 });

    await assert.rejects(client.update({ target: { name: device.name }, image }), (err: unknown) => {
      assert.ok(err instanceof BleOtaError, String(err));
      assert.equal(err.code, 'ROLLED_BACK', err.message);
      return true;
    });
    const after = await device.state();
    assert.equal(after.running, before.running, 'the device runs the previous image again');
    assert.equal(after.slots[after.running].state, 'valid');
  });

  it('a self-test still running when the client gives up (verifyMs): CONFIRM_FAILED, the image runs unconfirmed, and the same image sent again confirms it once the self-test passed', async () => {
    const device = await radio.addDevice({ name: 'st-slow', restartDelayMs: 20, selfTest: 'manual' });
    const image = buildAppImage({ size: 64 * KB, projectName: 'st-app', version: '2.0.0', seed: 74 });
    const impatient = new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000, gattMs: 2000, restartMs: 3000, verifyMs: 1000 } });

    await assert.rejects(impatient.update({ target: { name: device.name }, image }), (err: unknown) => {
      assert.ok(err instanceof BleOtaError, String(err));
      assert.equal(err.code, 'CONFIRM_FAILED', err.message);
      assert.equal(err.device?.runs, 'new-unconfirmed', err.message);
      // What happens next, as it will: a failing self-test rolls back; a passing one still needs a client's CONFIRM.
      assert.match(err.message, /self-test[^.]*has not passed yet/);
      assert.match(err.message, /a self-test that fails returns the device to its previous image/i);
      return true;
    });

    assert.equal(await device.selfTest(true), 'pending-verify', 'passed later: the image waits for a CONFIRM');
    const result = await client.update({ target: { name: device.name }, image });
    assert.equal(result.confirmed, true);
    assert.equal(result.runningVersion, '2.0.0');
    assert.equal(result.delivery?.method, 'none', 'nothing sent again: the image was confirmed where it ran');
  });

  it('a self-test that fails: the device returns to the previous image and the result says so, in either mode', async () => {
    for (const confirm of ['client', 'device'] as const) {
      const device = await radio.addDevice({ name: `st-fail-${confirm}`, restartDelayMs: 20, selfTest: 'manual' });
      const before = await device.state();
      const image = buildAppImage({ size: 64 * KB, projectName: 'st-app', version: '2.0.0', seed: 73 });
      let booted = false;
      let verdict: Promise<string> | undefined;
      const fail = () => (verdict ??= device.selfTest(false));
      const onBoot = (_slot: string, state: string) => (booted ||= state === 'pending-verify');
      const onRead = (address: string, uuid: string) => {
        if (confirm === 'device' && address === device.address && uuid === OTA_INFO_UUID && booted) fail();
      };
      device.on('boot', onBoot);
      radio.bindings.on('air-read', onRead);
      const trace = onConfirmRefused(radio, device, fail);

      await assert.rejects(client.update({ target: { name: device.name }, image, confirm }), (err: unknown) => {
        assert.ok(err instanceof BleOtaError, String(err));
        assert.equal(err.code, 'ROLLED_BACK', `${confirm}: ${err.message}`);
        return true;
      });
      trace.stop();
      radio.bindings.off('air-read', onRead);
      device.off('boot', onBoot);

      assert.ok(verdict, `${confirm}: the verdict was asked for`);
      assert.equal(trace.seen.confirmed, 0, `${confirm}: no CONFIRM was taken`);
      const after = await device.state();
      assert.equal(after.running, before.running, `${confirm}: the device runs the previous image again`);
    }
  });
});
