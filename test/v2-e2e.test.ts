/**
 * Protocol v2 end to end: the OTA client through noble and the virtual
 * bindings to virtual ESP32s running the firmware's core.
 */
import { strict as assert } from 'node:assert';
import { BleOtaClient } from '../lib/client/ota-client';
import { BleOtaError } from '../lib/errors';
import { buildAppImage } from '../lib/image/app-image-builder';
import { Command, OTA_COMMAND_UUID, OTA_STREAM_UUID } from '../lib/protocol/constants';
import { decodeNotification } from '../lib/protocol/v2-codec';
import { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { VirtualRadio } from '../lib/virtual/virtual-radio';
import { eventually } from './support/eventually';

const MB = 1024 * 1024;

function otherSlot(slot: string): string {
  return slot === 'ota_0' ? 'ota_1' : 'ota_0';
}

/** Records the stream packets and BEGIN answers that cross the air for one device. */
function airTrace(radio: VirtualRadio, device: VirtualEsp32) {
  const packets: Array<{ offset: number; length: number }> = [];
  const beginOffsets: number[] = [];
  const onWrite = (address: string, uuid: string, data: Buffer) => {
    if (address === device.address && uuid === OTA_STREAM_UUID) packets.push({ offset: data.readUInt32LE(0), length: data.length - 4 });
  };
  const onNotify = (address: string, uuid: string, data: Buffer) => {
    if (address !== device.address || uuid !== OTA_COMMAND_UUID) return;
    const n = decodeNotification(data);
    if (n.kind === 'answer' && n.opcode === Command.BEGIN && n.status === 0) beginOffsets.push(n.body.readUInt32LE(0));
  };
  radio.bindings.on('air-write', onWrite);
  radio.bindings.on('air-notify', onNotify);
  return {
    packets,
    beginOffsets,
    stop: () => {
      radio.bindings.off('air-write', onWrite);
      radio.bindings.off('air-notify', onNotify);
    },
  };
}

describe('protocol v2 end to end through noble and the virtual ESP32', function () {
  this.timeout(60_000);
  let radio: VirtualRadio;
  let client: BleOtaClient;

  before(async function () {
    this.timeout(120_000);
    radio = new VirtualRadio();
    client = new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000, gattMs: 2000, restartMs: 3000 } });
  });

  after(() => radio.stopAll());

  it('updates with a 1 MB image, confirms it after the restart, in few ATT round trips', async () => {
    const device = await radio.addDevice({ name: 'v2-1mb', restartDelayMs: 20 });
    const before = await device.state();
    const statsBefore = await device.stats();
    const image = buildAppImage({ size: MB, projectName: 'v2-app', version: '2.1.0', seed: 21 });

    const result = await client.update({ target: { name: 'v2-1mb' }, image });

    assert.equal(result.protocol, 'v2');
    assert.equal(result.confirmed, true);
    assert.equal(result.runningVersion, '2.1.0');
    assert.equal(result.resumes, 0);
    const slot = otherSlot(before.running);
    const state = await device.state();
    assert.equal(state.running, slot);
    assert.equal(state.slots[slot].state, 'valid');
    assert.equal(state.confirm, false);
    assert.ok((await device.readFlash(slot, 0, image.length)).equals(image), 'slot contents equal the image');

    const stats = await device.stats();
    const roundTrips = stats.writes - statsBefore.writes + (stats.reads - statsBefore.reads);
    const dataPackets = stats.writeCmds - statsBefore.writeCmds;
    console.log(`      1 MB over v2: ${dataPackets} data packets, ${roundTrips} ATT round trips (${((100 * roundTrips) / dataPackets).toFixed(2)} %)`);
    assert.ok(dataPackets >= Math.ceil(image.length / (256 - 3 - 4)));
    assert.ok(roundTrips < 0.02 * dataPackets, `${roundTrips} round trips for ${dataPackets} packets`);
  });

  it('skips a device that already runs the same build, and refuses a downgrade unless allowed', async () => {
    const device = await radio.addDevice({ name: 'v2-skip', restartDelayMs: 20 });
    const image = buildAppImage({ size: 64 * 1024, projectName: 'app', version: '2.0.0', seed: 28 });
    await client.update({ target: { name: 'v2-skip' }, image });

    const before = await device.stats();
    const again = await client.update({ target: { name: 'v2-skip' }, image, skipIfRunning: true });
    assert.equal(again.skipped, true);
    assert.equal((await device.stats()).writeCmds, before.writeCmds, 'nothing was streamed');

    // Without skipIfRunning, the same build is sent and the device restarts into the copy.
    const slot = (await device.state()).running;
    const resent = await client.update({ target: { name: 'v2-skip' }, image, skipIfRunning: false });
    assert.deepEqual([resent.skipped, resent.restarted, resent.confirmed, resent.runningVersion], [false, true, true, '2.0.0']);
    assert.ok((await device.stats()).writeCmds > before.writeCmds, 'the image was streamed');
    assert.notEqual((await device.state()).running, slot, 'the copy runs, from the other slot');

    const rebuilt = buildAppImage({ size: 64 * 1024, projectName: 'app', version: '2.0.0', seed: 29 });
    const other = await client.update({ target: { name: 'v2-skip' }, image: rebuilt, skipIfRunning: true });
    assert.equal(other.skipped, false, 'same version, another build: updated');

    const older = buildAppImage({ size: 64 * 1024, projectName: 'app', version: '1.9.0', seed: 30 });
    await assert.rejects(
      client.update({ target: { name: 'v2-skip' }, image: older, allowDowngrade: false }),
      (err: BleOtaError) => err.code === 'DOWNGRADE_REFUSED' && /1\.9\.0.*2\.0\.0/.test(err.message),
    );
    const downgraded = await client.update({ target: { name: 'v2-skip' }, image: older, allowDowngrade: true });
    assert.equal(downgraded.runningVersion, '1.9.0');
    assert.equal(downgraded.previousVersion, '2.0.0');
  });

  it('updates a device that speaks only the seed protocol', async () => {
    const device = await radio.addDevice({ name: 'seed-only', protocol: 'seed', restartDelayMs: 20 });
    const image = buildAppImage({ size: 128 * 1024, version: '1.1.0', seed: 22 });
    const result = await client.update({ target: { name: 'seed-only' }, image });
    assert.equal(result.protocol, 'seed');
    assert.equal(result.restarted, true);
    await eventually(
      () => device.state(),
      (s) => s.running === 'ota_1' && s.transfer === 'idle',
      5000,
      'boot',
    );
    assert.ok((await device.readFlash('ota_1', 0, image.length)).equals(image));
  });

  for (const cutAt of [0.25, 0.5, 0.99]) {
    it(`resumes a transfer cut at ${cutAt * 100} %, sending each byte after the acknowledged offset once`, async () => {
      const name = `v2-cut-${cutAt * 100}`;
      const device = await radio.addDevice({ name, restartDelayMs: 20 });
      const image = buildAppImage({ size: 512 * 1024, version: '3.0.0', seed: 23 });
      const trace = airTrace(radio, device);
      let cutIndex = -1;
      const onWrite = (address: string, uuid: string, data: Buffer) => {
        if (cutIndex < 0 && address === device.address && uuid === OTA_STREAM_UUID && data.readUInt32LE(0) >= cutAt * image.length) {
          cutIndex = trace.packets.length;
          radio.bindings.dropLink(device);
        }
      };
      radio.bindings.on('air-write', onWrite);
      try {
        const result = await client.update({ target: { name }, image });
        assert.equal(result.resumes, 1);
        assert.equal(result.confirmed, true);
      } finally {
        radio.bindings.off('air-write', onWrite);
        trace.stop();
      }
      assert.ok(cutIndex > 0, 'the link was cut');
      assert.equal(trace.beginOffsets.length, 2, 'one BEGIN, one resuming BEGIN');
      const [first, resumedAt] = trace.beginOffsets;
      assert.equal(first, 0);
      assert.ok(resumedAt > 0 && resumedAt <= cutAt * image.length + 4096, `resumed at ${resumedAt}`);

      // After the resume: contiguous from the resume offset to the end, no byte twice.
      const after = trace.packets.slice(trace.packets.findIndex((p, i) => i >= cutIndex && p.offset === resumedAt));
      let expected = resumedAt;
      for (const p of after) {
        assert.equal(p.offset, expected, 'each packet follows the previous one');
        expected += p.length;
      }
      assert.equal(expected, image.length);
      const state = await device.state();
      assert.ok((await device.readFlash(state.running, 0, image.length)).equals(image));
    });
  }

  it('a BEGIN for another image after a cut starts over', async () => {
    const device = await radio.addDevice({ name: 'v2-other', restartDelayMs: 20 });
    const first = buildAppImage({ size: 256 * 1024, version: '4.0.0', seed: 24 });
    const onWrite = (address: string, uuid: string, data: Buffer) => {
      if (address === device.address && uuid === OTA_STREAM_UUID && data.readUInt32LE(0) >= first.length / 2) {
        radio.bindings.dropLink(device);
      }
    };
    radio.bindings.on('air-write', onWrite);
    await assert.rejects(client.update({ target: { name: 'v2-other' }, image: first, resumeAttempts: 0 }), (err: BleOtaError) => err.code === 'DISCONNECTED');
    radio.bindings.off('air-write', onWrite);
    assert.equal((await device.state()).transfer, 'suspended');

    const second = buildAppImage({ size: 200 * 1024, version: '4.1.0', seed: 25 });
    const trace = airTrace(radio, device);
    const result = await client.update({ target: { name: 'v2-other' }, image: second });
    trace.stop();
    assert.deepEqual(trace.beginOffsets, [0]);
    assert.equal(result.runningVersion, '4.1.0');
  });

  it('a suspended transfer nobody resumes is aborted after the abandon timeout', async () => {
    const device = await radio.addDevice({ name: 'v2-abandon', abandonTimeoutMs: 300 });
    const image = buildAppImage({ size: 128 * 1024, seed: 26 });
    const onWrite = (address: string, uuid: string, data: Buffer) => {
      if (address === device.address && uuid === OTA_STREAM_UUID && data.readUInt32LE(0) >= 32 * 1024) radio.bindings.dropLink(device);
    };
    radio.bindings.on('air-write', onWrite);
    await assert.rejects(client.update({ target: { name: 'v2-abandon' }, image, resumeAttempts: 0 }));
    radio.bindings.off('air-write', onWrite);
    await eventually(
      () => device.state(),
      (s) => s.transfer === 'idle',
      3000,
      'abort after the abandon timeout',
    );
    // The device's log says what it did, in order: a state read right after the drop
    // could come after the 300 ms on a busy machine, and find the transfer gone already.
    const said = device.logs.filter((line) => / v2 transfer (suspended|aborted) at /.test(line));
    const at = / suspended at (\d+) of /.exec(said[0] ?? '')?.[1];
    assert.ok(at !== undefined && Number(at) >= 32 * 1024, JSON.stringify(said));
    assert.deepEqual(said, [`I link lost: v2 transfer suspended at ${at} of ${image.length} bytes`, `W nobody resumed: v2 transfer aborted at ${at} of ${image.length} bytes`]);
  });

  it('an unconfirmed image is rolled back: at the next power cycle, and when the confirm window ends', async () => {
    for (const way of ['power cycle', 'confirm window'] as const) {
      const name = `v2-rb-${way.replace(' ', '-')}`; // at most 23 bytes: a longer name is advertised shortened
      const device = await radio.addDevice({ name, restartDelayMs: 20, confirmWindowMs: way === 'confirm window' ? 400 : 300_000 });
      const before = await device.state();
      const boots: string[] = [];
      device.on('boot', (slot: string, state: string) => boots.push(`${slot} ${state}`));
      const image = buildAppImage({ size: 64 * 1024, version: '9.0.0', seed: 27 });
      const connection = await client.connect({ name });
      const v2 = connection.v2!;
      try {
        await v2.subscribe();
        const { createHash } = await import('node:crypto');
        const begin = await v2.begin({ size: image.length, sha256: createHash('sha256').update(image).digest(), chipId: 0, flags: 1 }, 2000);
        await v2.stream(image, begin.offset, begin.window, begin.maxPacket, 2000, () => undefined);
        await v2.command(Command.END, 5000);
        await v2.command(Command.RESTART, 2000);
      } finally {
        await connection.close();
      }
      if (way === 'power cycle') {
        const pending = await eventually(
          () => device.state(),
          (s) => s.running !== before.running,
          3000,
          'restart into the new image',
        );
        assert.equal(pending.slots[pending.running].state, 'pending-verify');
        assert.equal(pending.confirm, true, 'it waits for a CONFIRM');
        await device.powerCycle();
      }
      // What the device booted, in order: the 400 ms window may end before a
      // state read here on a busy machine, which then finds the old image running again.
      await eventually(
        async () => boots.length,
        (n) => n >= 2,
        3000,
        `rollback by ${way}`,
      );
      assert.deepEqual(boots, [`${otherSlot(before.running)} pending-verify`, `${before.running} valid`]);
      if (way === 'confirm window') assert.ok(device.logs.includes('E no CONFIRM within 400 ms: rolling back'), JSON.stringify(device.logs.slice(-5)));
      const after = await device.state();
      assert.equal(after.running, before.running);
      assert.equal(after.slots[before.running].state, 'valid');
    }
  });
});
