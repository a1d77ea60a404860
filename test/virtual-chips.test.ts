/**
 * Virtual ESP32s of every chip the package builds images for: each takes the
 * image buildAppImage() makes for its chip (the host image check uses that
 * chip's memory map, as the TypeScript parser does) and boots it, and still
 * refuses an image built for another chip.
 */
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { BleOtaClient } from '../lib/client/ota-client';
import { CommandRefused } from '../lib/client/refusal';
import { V2Session } from '../lib/client/v2-session';
import { BleOtaError } from '../lib/errors';
import { buildAppImage } from '../lib/image/app-image-builder';
import { chipName } from '../lib/image/esp-chips';
import { Command, Status } from '../lib/protocol/constants';
import { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { VirtualRadio } from '../lib/virtual/virtual-radio';
import { eventually } from './support/eventually';

const KB = 1024;
const T = 3000;
/** Every chip id esp-chips.ts (and so buildAppImage) knows. */
const CHIPS = [0, 2, 5, 9, 12, 13, 16, 18, 20, 23];
/** The ESP32-S2 has no Bluetooth: the client refuses its images before connecting. */
const NO_BLUETOOTH = new Set([2]);

function otherSlot(slot: string): string {
  return slot === 'ota_0' ? 'ota_1' : 'ota_0';
}

function otherChip(chipId: number): number {
  return chipId === 5 ? 9 : 5;
}

function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

function lastErrors(device: VirtualEsp32): string {
  return device.logs
    .filter((line) => /\bE\b|invalid|refused/i.test(line))
    .slice(-3)
    .join(' | ');
}

describe('virtual ESP32s of every chip take the images built for them', function () {
  this.timeout(60_000);
  let radio: VirtualRadio;
  let client: BleOtaClient;

  before(function () {
    radio = new VirtualRadio();
    client = new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000, gattMs: T, restartMs: 3000 } });
  });

  after(() => radio.stopAll());

  /** Protocol v2 by hand, for what the client would refuse before connecting: BEGIN, stream, END, RESTART. */
  async function pushV2(name: string, chipId: number, image: Buffer): Promise<void> {
    const conn = await client.connect({ name });
    try {
      assert.ok(conn.v2, 'the device offers protocol v2');
      const v2: V2Session = conn.v2;
      await v2.subscribe();
      const answer = await v2.begin({ size: image.length, sha256: sha256(image), chipId, flags: 0 }, T);
      await v2.stream(image, answer.offset, answer.window, answer.maxPacket, T, () => undefined);
      await v2.command(Command.END, T);
      await v2.command(Command.RESTART, T);
    } finally {
      await conn.close().catch(() => undefined);
    }
  }

  for (const chipId of CHIPS) {
    const chip = chipName(chipId);

    it(`a virtual ${chip} (chip id ${chipId}) takes and boots buildAppImage({ chipId: ${chipId} }), and refuses an ${chipName(otherChip(chipId))} image`, async () => {
      const name = `chip-${chipId}`;
      const device = await radio.addDevice({ name, chipId, restartDelayMs: 20 });
      const before = await device.state();
      const image = buildAppImage({ chipId, size: 48 * KB + chipId * 100, projectName: 'chip-app', version: '2.0.0', seed: 40 + chipId });
      const slot = otherSlot(before.running);

      try {
        if (NO_BLUETOOTH.has(chipId)) {
          await assert.rejects(client.update({ target: { name }, image }), (err: BleOtaError) => err.code === 'IMAGE_WRONG_CHIP');
          await pushV2(name, chipId, image);
        } else {
          const result = await client.update({ target: { name }, image });
          assert.equal(result.protocol, 'v2');
          assert.equal(result.confirmed, true);
          assert.equal(result.runningVersion, '2.0.0');
        }
      } catch (err) {
        throw new Error(`${chip}: ${String(err)}; device log: ${lastErrors(device)}`, { cause: err });
      }
      const booted = await eventually(
        () => device.state(),
        (s) => s.running === slot && s.slots[slot].state === 'valid',
        5000,
        `${chip} runs its new image`,
      );
      assert.equal(booted.boot, slot);
      assert.ok((await device.readFlash(slot, 0, image.length)).equals(image), 'slot contents equal the image');

      // An image for another chip: the client refuses it after OTA Info ...
      const foreign = buildAppImage({ chipId: otherChip(chipId), size: 16 * KB, version: '3.0.0', seed: 60 + chipId });
      if (!NO_BLUETOOTH.has(chipId)) {
        await assert.rejects(
          client.update({ target: { name }, image: foreign }),
          (err: BleOtaError) => err.code === 'IMAGE_WRONG_CHIP' && err.message.includes(chipName(otherChip(chipId))),
        );
      }
      // ... and the device refuses it itself when a client claims its chip in BEGIN: the header tells.
      const conn = await client.connect({ name });
      try {
        assert.ok(conn.v2);
        await conn.v2.subscribe();
        await conn.v2.begin({ size: foreign.length, sha256: sha256(foreign), chipId, flags: 0 }, T);
        conn.v2.sendPacket(0, foreign.subarray(0, 200));
        assert.deepEqual(await conn.v2.nextEvent(T), { kind: 'failed', status: Status.WRONG_CHIP, offset: 0 });
        // and BEGIN naming the other chip is refused at once
        await assert.rejects(
          conn.v2.begin({ size: foreign.length, sha256: sha256(foreign), chipId: otherChip(chipId), flags: 0 }, T),
          (err: unknown) => err instanceof CommandRefused && err.status === Status.WRONG_CHIP,
        );
      } finally {
        await conn.close().catch(() => undefined);
      }
      const after = await device.state();
      assert.equal(after.running, slot, 'the new image still runs');
      assert.equal(after.slots[slot].state, 'valid');
    });
  }
});
