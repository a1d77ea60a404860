/**
 * Updates interrupted at the moments where a retry used to fail:
 * a new call for the same image finishes what the interrupted one left,
 * whatever it left; a call for another image settles an image awaiting
 * confirmation first; a compressed transfer resumes at its very end; a
 * device that cannot confirm itself is a failure that says what it runs;
 * a failure names what the device runs. Against owned, signing virtual
 * ESP32s, as our firmware's default build.
 */
import { strict as assert } from 'node:assert';
import { BleOtaClient } from '../lib/client/ota-client';
import { buildAppImage } from '../lib/image/app-image-builder';
import { BleOtaError } from '../lib/errors';
import { ANSWER, Command, OTA_COMMAND_UUID, OTA_STREAM_UUID } from '../lib/protocol/constants';
import { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { VirtualRadio } from '../lib/virtual/virtual-radio';
import { eventually } from './support/eventually';
import { OWNER, ownedDevice, signedImage } from './support/owner';

describe('interrupted updates: a new call finishes what the last one left', function () {
  this.timeout(60_000);
  let radio: VirtualRadio;
  let n = 0;

  beforeEach(() => {
    radio = new VirtualRadio();
  });
  afterEach(() => radio.stopAll());

  const client = () => new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000, gattMs: 2000, verifyMs: 3000 } });
  async function device(): Promise<{ name: string; device: VirtualEsp32 }> {
    const name = `interrupted-${++n}`;
    return { name, device: await radio.addDevice(ownedDevice({ name, restartDelayMs: 20 })) };
  }
  /** Counts the firmware bytes sent to the device from now on. */
  function streamed(): () => number {
    let bytes = 0;
    radio.bindings.on('air-write', (_a: string, uuid: string, data: Buffer) => {
      if (uuid === OTA_STREAM_UUID) bytes += data.length - 4;
    });
    return () => bytes;
  }

  it('cancelled after END: the next call restarts the device into the image and confirms it, sending nothing again', async () => {
    const { name, device: d } = await device();
    const image = signedImage({ size: 60 * 1024, version: '2.0.0', seed: 11 });
    const abort = new AbortController();
    await assert.rejects(
      client().update({
        target: { name },
        image,
        secret: OWNER.secret,
        signal: abort.signal,
        onProgress: (p) => p.phase === 'restarting' && abort.abort(),
      }),
      (err: unknown) => err instanceof BleOtaError && err.code === 'CANCELLED',
    );
    // Complete, not selected: a reboot of any other kind keeps the old image.
    assert.equal((await d.state()).transfer, 'complete');
    assert.equal((await d.state()).boot, (await d.state()).running);
    const bytes = streamed();
    const r = await client().update({ target: { name }, image, secret: OWNER.secret });
    assert.equal(r.confirmed, true);
    assert.equal(r.runningVersion, '2.0.0');
    assert.equal(bytes(), 0, 'nothing sent again');
    // The result says so: no bytes, no rate, and the version the device ran before.
    assert.equal(r.bytesSent, 0);
    assert.equal(r.bytesPerSecond, 0);
    assert.notEqual(r.previousVersion, undefined);
    assert.notEqual(r.previousVersion, '2.0.0');
  });

  it('cancelled after RESTART: the next call confirms the image the device runs pending verify', async () => {
    const { name, device: d } = await device();
    const image = signedImage({ size: 40 * 1024, version: '2.1.0', seed: 12 });
    const abort = new AbortController();
    await assert.rejects(
      client().update({ target: { name }, image, secret: OWNER.secret, signal: abort.signal, onProgress: (p) => p.phase === 'confirming' && abort.abort() }),
      // Cancelled as it connects again: it is the update that was cancelled, not a connection.
      (err: unknown) => err instanceof BleOtaError && err.code === 'CANCELLED' && /^The update was cancelled\./.test(err.message),
    );
    await eventually(
      () => d.state(),
      (st) => st.slots[st.running]?.state === 'pending-verify',
      10_000,
      'the new image running pending verify',
    );
    const bytes = streamed();
    const r = await client().update({ target: { name }, image, secret: OWNER.secret });
    assert.equal(r.confirmed, true);
    assert.equal(r.runningVersion, '2.1.0');
    assert.equal(bytes(), 0, 'nothing sent again');
    assert.equal(r.bytesSent, 0);
    assert.equal(r.bytesPerSecond, 0);
    // It already ran the new image when this call began: what it ran before, this call cannot know.
    assert.equal(r.previousVersion, undefined);
  });

  it('cancelled as the device answered RESTART: the next call, cut off by that restart while it connects, connects again and confirms', async () => {
    // The restart comes restartDelayMs after RESTART's answer; the next call's first
    // discovery is left unanswered, so that its first connection is still being made
    // when the device goes down (and would fail with GATT_TIMEOUT, should the restart
    // come before it connected): either way that connection fails before anything was
    // sent, and the call goes on.
    const name = `interrupted-${++n}`;
    const d = await radio.addDevice(ownedDevice({ name, restartDelayMs: 1500 }));
    const image = signedImage({ size: 40 * 1024, version: '2.1.2', seed: 18 });
    const boots: string[] = [];
    d.on('boot', (slot: string, state: string) => boots.push(`${slot} ${state}`));
    const abort = new AbortController();
    const onAnswer = (address: string, uuid: string, data: Buffer) => {
      if (address === d.address && uuid === OTA_COMMAND_UUID && data[0] === (ANSWER | Command.RESTART)) abort.abort();
    };
    radio.bindings.on('air-notify', onAnswer);
    await assert.rejects(client().update({ target: { name }, image, secret: OWNER.secret, signal: abort.signal }), (err: unknown) => {
      assert.ok(err instanceof BleOtaError);
      assert.equal(err.code, 'CANCELLED', err.message);
      assert.equal(err.device?.runs, 'unknown'); // RESTART answered: the device restarts, into the new image or not
      return true;
    });
    radio.bindings.off('air-notify', onAnswer);

    const bytes = streamed();
    radio.bindings.stall(d, 'discover-services');
    const r = await client().update({ target: { name }, image, secret: OWNER.secret, timeouts: { gattMs: 5000 } });
    assert.equal(r.confirmed, true);
    assert.equal(r.runningVersion, '2.1.2');
    assert.equal(r.restarted, false, "the restart was the earlier call's");
    assert.equal(r.resumes, 1, 'one new connection');
    assert.equal(bytes(), 0, 'nothing sent again');
    assert.deepEqual(boots, ['ota_1 pending-verify']);
    const st = await d.state();
    assert.equal(st.slots[st.running].state, 'valid');
  });

  it('cancelled while it waits for the device to restart: the call ends at once, saying the device restarts into what it will', async () => {
    // The device answers RESTART, then takes its time (minutes) to go down: the cancel must not wait for it.
    const name = `interrupted-${++n}`;
    const d = await radio.addDevice(ownedDevice({ name, restartDelayMs: 10 * 60_000 }));
    const image = signedImage({ size: 20 * 1024, version: '2.1.3', seed: 21 });
    const abort = new AbortController();
    const onAnswer = (address: string, uuid: string, data: Buffer) => {
      if (address === d.address && uuid === OTA_COMMAND_UUID && data[0] === (ANSWER | Command.RESTART)) setTimeout(() => abort.abort(), 100);
    };
    radio.bindings.on('air-notify', onAnswer);
    await assert.rejects(client().update({ target: { name }, image, secret: OWNER.secret, signal: abort.signal, timeouts: { restartMs: 10 * 60_000 } }), (err: unknown) => {
      assert.ok(err instanceof BleOtaError);
      assert.equal(err.code, 'CANCELLED', err.message);
      assert.equal(err.device?.runs, 'unknown');
      return true;
    });
    radio.bindings.off('air-notify', onAnswer);
  });

  it("a call for another image that finds the device about to restart into the last call's waits for that restart, settles it, and goes in", async () => {
    // RESTART answered, the call cancelled: the device restarts after its delay, and until then
    // refuses BEGIN (BAD_STATE). A call that comes in that time must not fail on it.
    const name = `interrupted-${++n}`;
    const d = await radio.addDevice(ownedDevice({ name, restartDelayMs: 3000 }));
    const first = signedImage({ size: 20 * 1024, version: '2.1.4', seed: 22 });
    const abort = new AbortController();
    const onAnswer = (address: string, uuid: string, data: Buffer) => {
      if (address === d.address && uuid === OTA_COMMAND_UUID && data[0] === (ANSWER | Command.RESTART)) abort.abort();
    };
    radio.bindings.on('air-notify', onAnswer);
    await assert.rejects(
      client().update({ target: { name }, image: first, secret: OWNER.secret, signal: abort.signal }),
      (err: unknown) => err instanceof BleOtaError && err.code === 'CANCELLED',
    );
    radio.bindings.off('air-notify', onAnswer);
    const refusals: number[] = [];
    const onRefusal = (address: string, uuid: string, data: Buffer) => {
      if (address === d.address && uuid === OTA_COMMAND_UUID && data[0] === (ANSWER | Command.BEGIN) && data[1] !== 0) refusals.push(data[1]);
    };
    radio.bindings.on('air-notify', onRefusal);

    const second = signedImage({ size: 20 * 1024, version: '2.1.5', seed: 23 });
    const r = await client().update({ target: { name }, image: second, secret: OWNER.secret, timeouts: { restartMs: 10_000 } });
    radio.bindings.off('air-notify', onRefusal);
    assert.equal(r.runningVersion, '2.1.5');
    assert.equal(r.confirmed, true);
    assert.ok(refusals.length <= 1, `BEGIN refused ${refusals.length} times: the client waits for the restart, it does not hammer`);
  });

  it('cancelled after RESTART, then another image: the image awaiting confirmation is settled first, and the new one goes in', async () => {
    const { name, device: d } = await device();
    const first = signedImage({ size: 40 * 1024, version: '2.1.5', seed: 16 });
    const abort = new AbortController();
    await assert.rejects(
      client().update({ target: { name }, image: first, secret: OWNER.secret, signal: abort.signal, onProgress: (p) => p.phase === 'confirming' && abort.abort() }),
      (err: unknown) => err instanceof BleOtaError && err.code === 'CANCELLED',
    );
    await eventually(
      () => d.state(),
      (st) => st.slots[st.running]?.state === 'pending-verify',
      10_000,
      'the first image running pending verify',
    );
    const next = signedImage({ size: 40 * 1024, version: '2.1.6', seed: 17 });
    const r = await client().update({ target: { name }, image: next, secret: OWNER.secret });
    assert.equal(r.previousVersion, '2.1.5');
    assert.equal(r.confirmed, true);
    assert.equal(r.runningVersion, '2.1.6');
  });

  it('a reconnection that finds no OTA service on the device that served it a moment ago connects again', async () => {
    const { name, device: d } = await device();
    const image = signedImage({ size: 60 * 1024, version: '2.2.5', seed: 19 });
    let dropped = false;
    const r = await client().update({
      target: { name },
      image,
      secret: OWNER.secret,
      onProgress: (p) => {
        if (dropped || p.phase !== 'uploading' || p.bytesSent < image.length / 2) return;
        dropped = true;
        radio.bindings.hideServices(d, 1);
        radio.bindings.dropLink(d);
      },
    });
    assert.ok(dropped);
    assert.equal(r.confirmed, true);
    assert.equal(r.runningVersion, '2.2.5');
    // What the lost link carried unacknowledged went again after the resume: counted once, never more than the image.
    assert.ok(r.bytesSent <= image.length, `bytesSent ${r.bytesSent} of a ${image.length}-byte image`);
    assert.ok(r.bytesSent >= image.length / 2, `bytesSent ${r.bytesSent}: the half sent after the drop at least`);
  });

  it('a device whose restarted image has no OTA service: NOT_OTA_DEVICE once the retries are spent', async () => {
    const { name, device: d } = await device();
    const image = signedImage({ size: 40 * 1024, version: '2.2.6', seed: 20 });
    d.on('boot', () => radio.bindings.hideServices(d, 100));
    await assert.rejects(client().update({ target: { name }, image, secret: OWNER.secret }), (err: unknown) => {
      assert.ok(err instanceof BleOtaError);
      assert.equal(err.code, 'NOT_OTA_DEVICE', err.message);
      return true;
    });
  });

  it('a compressed transfer whose link drops before END resumes at its very end', async () => {
    // A development build's device and an unsigned image, whose last chunk is short
    // (a signed image ends on a 4 KB boundary: its signature sector).
    const name = `interrupted-${++n}`;
    const d = await radio.addDevice({ name, restartDelayMs: 20 });
    // Low-entropy content: deflate pays, so the image goes compressed.
    const fill = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7) % 16));
    const image = buildAppImage({ size: 64 * 1024 + 1000, version: '2.2.0', seed: 13, fill });
    assert.notEqual(image.length % 4096, 0);
    let dropped = false;
    radio.bindings.on('air-write', (address: string, uuid: string, data: Buffer) => {
      if (dropped || address !== d.address || uuid !== OTA_COMMAND_UUID || data[0] !== Command.END) return;
      dropped = true;
      // The link drops as END goes out: the device has every byte, and never sees END.
      radio.bindings.dropLink(d);
    });
    const bytes = streamed();
    const r = await client().update({ target: { name }, image });
    assert.ok(dropped);
    assert.ok(bytes() < image.length * 0.9, `sent deflated: ${bytes()} bytes for ${image.length}`);
    assert.equal(r.resumes, 1);
    assert.equal(r.confirmed, true);
    assert.equal(r.runningVersion, '2.2.0');
  });

  it('a device that cannot confirm itself: a failure, saying the new image runs unconfirmed', async () => {
    const { name, device: d } = await device();
    const image = signedImage({ size: 40 * 1024, version: '2.3.0', seed: 14 });
    // The flash write that would mark the new image valid at boot fails.
    radio.bindings.on('air-write', (address: string, uuid: string, data: Buffer) => {
      if (address === d.address && uuid === OTA_COMMAND_UUID && data[0] === Command.RESTART) {
        void d.fault({ kind: 'flash-write-fail', after: 2 }); // the boot selection, then mark_valid
      }
    });
    await assert.rejects(client().update({ target: { name }, image, secret: OWNER.secret, confirm: 'device' }), (err: unknown) => {
      assert.ok(err instanceof BleOtaError);
      assert.equal(err.code, 'CONFIRM_FAILED', err.message);
      assert.deepEqual(err.device, { runs: 'new-unconfirmed', version: '2.3.0' });
      assert.match(err.message, /did not confirm the new image itself.*The device runs the new .* 2\.3\.0, not confirmed/);
      return true;
    });
  });

  it('every failure says what the device runs', async () => {
    const { name } = await device();
    const foreign = signedImage({ size: 20 * 1024, version: '9.0.0', seed: 15, chipId: 5 });
    await assert.rejects(client().update({ target: { name }, image: foreign, secret: OWNER.secret }), (err: unknown) => {
      assert.ok(err instanceof BleOtaError);
      assert.equal(err.code, 'IMAGE_WRONG_CHIP');
      assert.equal(err.device?.runs, 'old');
      assert.match(err.message, /The device runs 1\.0\.0, as before\.$/);
      return true;
    });
  });

  it('a device answer the client cannot read fails as PROTOCOL_ERROR, saying what the device runs', async () => {
    // Without authentication: an answer with a MAC that no longer fits it is ignored, as another device's would be.
    const name = `interrupted-${++n}`;
    await radio.addDevice({ name, allowUnauthenticated: true, restartDelayMs: 20 });
    // BEGIN's answer cut to its status and 4 bytes of fields (8 are due).
    const emit = radio.bindings.emit.bind(radio.bindings);
    radio.bindings.emit = (event: string | symbol, ...args: unknown[]) => {
      const data = args[3];
      if (event === 'read' && Buffer.isBuffer(data) && data[0] === (Command.BEGIN | ANSWER) && data[1] === 0) args[3] = data.subarray(0, 6);
      return emit(event, ...args);
    };
    const image = buildAppImage({ projectName: 'virtual-esp32', version: '2.0.0', size: 20 * 1024, seed: 16 });
    await assert.rejects(client().update({ target: { name }, image, resumeAttempts: 0 }), (err: unknown) => {
      assert.ok(err instanceof BleOtaError);
      assert.equal(err.code, 'PROTOCOL_ERROR', err.message);
      assert.match(err.message, /^The device's answer to BEGIN could not be read: .*\. The device runs 1\.0\.0, as before\.$/);
      assert.equal(err.device?.runs, 'old');
      return true;
    });
  });

  it('a failure on the first connection says that nothing was sent', async () => {
    const { name, device: d } = await device();
    radio.bindings.stall(d, 'discover-services', 10);
    const image = signedImage({ size: 20 * 1024, version: '2.0.0', seed: 17 });
    const c = new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000, gattMs: 300 } });
    await assert.rejects(c.update({ target: { name }, image, secret: OWNER.secret, resumeAttempts: 0 }), (err: unknown) => {
      assert.ok(err instanceof BleOtaError);
      assert.equal(err.code, 'GATT_TIMEOUT', err.message);
      assert.equal(err.device?.runs, 'unknown');
      assert.match(err.message, /Nothing was sent in this call, and what the device runs could not be read\.$/);
      return true;
    });
  });

  it('an exception thrown by onProgress neither stops the update nor leaves the device unconfirmed; it becomes one process warning', async () => {
    const { name, device: d } = await device();
    const image = signedImage({ size: 20 * 1024, version: '2.0.0', seed: 18 });
    const warnings: Error[] = [];
    const onWarning = (w: Error) => w.name === 'BleOtaWarning' && warnings.push(w);
    process.on('warning', onWarning);
    let calls = 0;
    try {
      const r = await client().update({
        target: { name },
        image,
        secret: OWNER.secret,
        onProgress: () => {
          calls++;
          // Not even an Error: String() of it throws, and that must not end the update either.
          if (calls === 2) throw Object.create(null);
          throw new TypeError('the node was closed');
        },
      });
      assert.equal(r.confirmed, true);
      assert.equal(r.runningVersion, '2.0.0');
      const state = await d.state();
      assert.equal(state.slots[state.running].state, 'valid', 'the new image is confirmed on the device');
    } finally {
      process.off('warning', onWarning);
    }
    assert.ok(calls > 3, 'onProgress went on being called');
    // Emitted on the tick after the first exception, long before the update ended.
    assert.equal(warnings.length, 1);
    assert.match(warnings[0].message, /onProgress callback threw, and the update went on: TypeError: the node was closed/);
  });
});
