/**
 * Protocol v2 conformance, message by message, against any device the
 * client reaches: every request, every event, every status a device can
 * answer over the air (docs/PROTOCOL.md). The same cases run against the
 * virtual ESP32 (test/v2-conformance.test.ts, through the virtual bindings)
 * and against a real ESP32 (npm run test:hardware, through noble's HCI
 * bindings); what only the virtual device can tell (its exact settings,
 * the boot slot) is checked only there.
 */
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { BleOtaClient, OtaConnection } from '../../lib/client/ota-client';
import { CommandRefused } from '../../lib/client/refusal';
import type { Target } from '../../lib/client/scanner';
import { V2Session } from '../../lib/client/v2-session';
import { AppImageOptions } from '../../lib/image/app-image-builder';
import { parseEspImage } from '../../lib/image/esp-image';
import { BEGIN_SIZE, Command, Feature, INFO_VERSION, PROTOCOL_VERSION, RunningState, Status, STREAM_HEADER, TransferState } from '../../lib/protocol/constants';
import { BeginRequest, DeviceInfoV2, encodeBegin } from '../../lib/protocol/v2-codec';

/** What the cases need of a device and the way to it. */
export interface ConformanceTarget {
  client: BleOtaClient;
  target: Target;
  /** The owner's fleet secret, for a device with authentication. */
  secret?: string;
  /** Timeout of one request, END's image check included. */
  requestMs: number;
  /** How long a restart into a new image may take, until its OTA Info can be read. */
  restartMs: number;
  /**
   * A synthetic image for the device's chip (signed when the device takes
   * only signed images and the target can sign). sign: false for one left
   * unsigned whatever the device takes.
   */
  image(options: AppImageOptions & { sign?: boolean }): Buffer;
  /** Signs an image as the device requires; undefined when the target cannot. */
  sign(image: Buffer): Buffer | undefined;
  /** An image the device boots, of a version other than `running`; undefined when none was given. */
  bootable(running: string): Buffer | undefined;
  /** Why bootable() has none, for the skipped case. */
  noBootableReason: string;
  /** What only the virtual ESP32 tells: its settings, the boot slot. */
  virtual?: {
    expect: { window: number; slotSize: number; chipId: number; projectName: string; version: string; seed: boolean };
    bootSlot(): Promise<string>;
  };
}

/** Thrown by a target's setup for a device that is not there to test (the suite is skipped). */
export class TargetSkipped extends Error {}

/** The target setup gives; when it throws TargetSkipped, the suite of `hook` is skipped, saying why. */
async function targetOrSkip(hook: Mocha.Context, setup: () => Promise<ConformanceTarget>): Promise<ConformanceTarget> {
  try {
    return await setup();
  } catch (err) {
    if (err instanceof TargetSkipped) {
      console.log(`      skipped: ${err.message}`);
      hook.skip();
    }
    throw err;
  }
}

/** The cases' titles, in order: the virtual and the hardware runs must have the same ones. */
export const CONFORMANCE_TITLE = 'protocol v2 conformance over the air';

function beginFor(image: Buffer, chipId: number, over: Partial<BeginRequest> = {}): BeginRequest {
  return { size: image.length, sha256: createHash('sha256').update(image).digest(), chipId, flags: 0, ...over };
}

/** Resolves when promise rejects with the device's refusal of this status. */
export async function refused(promise: Promise<unknown>, status: number): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof CommandRefused, String(err));
    assert.equal(err.status, status, `expected status 0x${status.toString(16)}, got 0x${err.status.toString(16)}`);
    return true;
  });
}

/**
 * A link to the target in protocol v2, subscribed, its OTA Info read and
 * proven: on a device with authentication that is the link's session, so
 * that a case's malformed requests count as the owner's mistakes, not as a
 * stranger's junk that locks the link. The link is closed again when any
 * step fails.
 */
export async function connectV2(t: ConformanceTarget): Promise<{ conn: OtaConnection; v2: V2Session }> {
  const conn = await t.client.connect(t.target, { secret: t.secret });
  try {
    assert.ok(conn.v2, 'the device offers protocol v2');
    await conn.v2.subscribe();
    await conn.v2.provenInfo(t.requestMs);
    return { conn, v2: conn.v2 };
  } catch (err) {
    await conn.close().catch(() => undefined);
    throw err;
  }
}

/** A chip id the device is not: the ESP32-C3's, or the ESP32's on a C3. */
function otherChip(chipId: number): number {
  return chipId === 5 ? 0 : 5;
}

/**
 * Defines the conformance cases for the target setup() makes (in `before`;
 * TargetSkipped skips them all with its message).
 */
export function defineV2Conformance(setup: () => Promise<ConformanceTarget>): void {
  describe(CONFORMANCE_TITLE, function () {
    let t: ConformanceTarget;
    let conn: OtaConnection;
    let v2: V2Session;
    let first: DeviceInfoV2;
    let image: Buffer;
    let T: number;

    const connect = async () => {
      ({ conn, v2 } = await connectV2(t));
    };
    /**
     * The status a device answers a request written as it is, no MAC added:
     * refusals the device makes before it checks a MAC (an unknown opcode,
     * a wrong length) carry none (docs/PROTOCOL.md, Session), so a client
     * in a session would take them for someone else's.
     */
    const rawStatus = async (opcode: number, value: Buffer) => (await v2.exchange(opcode, value, T)).status;
    const begin = (img: Buffer, over: Partial<BeginRequest> = {}) => v2.begin(beginFor(img, first.chipId, over), T);
    /** A packet's image bytes at this link's MTU (the ACK case sends many). */
    const chunk = () => Math.min(200, conn.mtu - 3 - STREAM_HEADER);

    before(async function () {
      t = await targetOrSkip(this, setup);
      T = t.requestMs;
      // A transfer an earlier run left (suspended, or complete) would answer differently.
      await connect();
      await v2.command(Command.ABORT, T).catch(() => undefined);
      first = await v2.readInfo();
      await conn.close();
      image = t.image({ size: 40 * 1024, version: '7.0.0', seed: 31 });
    });

    beforeEach(connect);

    afterEach(async () => {
      await v2?.command(Command.ABORT, T).catch(() => undefined);
      await conn?.close();
    });

    it('OTA Info describes the device and its running image', async () => {
      const info = await v2.readInfo();
      assert.equal(info.protocol, PROTOCOL_VERSION);
      assert.ok(info.infoVersion >= 3, `info_version ${info.infoVersion}`);
      assert.ok(info.features & Feature.RESUME && info.features & Feature.CLIENT_CONFIRM);
      assert.ok(info.slotSize > 0 && info.slotSize % 4096 === 0, `slot size ${info.slotSize}`);
      assert.ok(info.window > 0, `window ${info.window}`);
      assert.ok(info.maxPacket >= 244 + STREAM_HEADER, `max packet ${info.maxPacket}`);
      assert.equal(info.runningState, RunningState.VALID, 'the device runs a confirmed image (confirm it, or let it roll back, before testing)');
      assert.equal(info.transferState, TransferState.IDLE);
      assert.equal(info.deviceId?.length, 6);
      assert.equal(info.app.elfSha256.length, 32);
      if (t.virtual) {
        const e = t.virtual.expect;
        assert.equal(info.infoVersion, INFO_VERSION);
        assert.equal(Boolean(info.features & Feature.SEED), e.seed);
        assert.equal(info.chipId, e.chipId);
        assert.equal(info.slotSize, e.slotSize);
        assert.equal(info.window, e.window);
        assert.equal(info.app.projectName, e.projectName);
        assert.equal(info.app.version, e.version);
      }
    });

    it('BEGIN answers OK with offset 0, the window and the largest packet; Info shows the transfer', async () => {
      const answer = await begin(image);
      const info = await v2.readInfo();
      assert.deepEqual(answer, { offset: 0, window: info.window, maxPacket: info.maxPacket });
      assert.equal(info.transferState, TransferState.RECEIVING);
      assert.ok(info.transferSha256.equals(beginFor(image, first.chipId).sha256));
    });

    it('UNKNOWN_COMMAND for an unknown opcode in the request range', async () => {
      assert.equal(await rawStatus(0x3e, Buffer.from([0x3e])), Status.UNKNOWN_COMMAND);
    });

    it('BAD_LENGTH for a short BEGIN and for END with arguments', async () => {
      assert.equal(await rawStatus(Command.BEGIN, encodeBegin(beginFor(image, first.chipId)).subarray(0, BEGIN_SIZE - 1)), Status.BAD_LENGTH);
      assert.equal(await rawStatus(Command.END, Buffer.from([Command.END, 0])), Status.BAD_LENGTH);
    });

    it('BAD_ARGUMENT for size 0 and for a reserved flag', async () => {
      await refused(begin(image, { size: 0 }), Status.BAD_ARGUMENT);
      await refused(begin(image, { flags: 0x8000 }), Status.BAD_ARGUMENT);
    });

    it('BAD_STATE for END and RESTART without a transfer', async () => {
      await refused(v2.command(Command.END, T), Status.BAD_STATE);
      await refused(v2.command(Command.RESTART, T), Status.BAD_STATE);
    });

    it('TOO_LARGE for an image larger than the slot', () => refused(begin(image, { size: first.slotSize + 1 }), Status.TOO_LARGE));

    it('WRONG_CHIP for another chip id in BEGIN, and a FAILED event for another chip in the image header', async () => {
      const other = otherChip(first.chipId);
      await refused(begin(image, { chipId: other }), Status.WRONG_CHIP);
      const foreign = t.image({ chipId: other, size: 8192, seed: 32, sign: false });
      await begin(foreign); // the client lies about the chip: the header tells
      v2.sendPacket(0, foreign.subarray(0, chunk()));
      const event = await v2.nextEvent(T);
      assert.deepEqual(event, { kind: 'failed', status: Status.WRONG_CHIP, offset: 0 });
    });

    it('ACK every window/8 bytes, RESYNC once for a gap, duplicates ignored', async () => {
      const window = first.window;
      const n = chunk();
      await begin(image);
      let offset = 0;
      while (offset < window / 8) {
        v2.sendPacket(offset, image.subarray(offset, offset + n));
        offset += n;
      }
      const ack = await v2.nextEvent(T);
      assert.equal(ack.kind, 'ack');
      assert.ok(ack.offset >= window / 8 && ack.offset <= offset, `ack at ${ack.offset}`);
      // A gap: the packet after the next one.
      v2.sendPacket(offset + n, image.subarray(offset + n, offset + 2 * n));
      v2.sendPacket(offset + 2 * n, image.subarray(offset + 2 * n, offset + 3 * n));
      assert.deepEqual(await v2.nextEvent(T), { kind: 'resync', offset });
      // A duplicate changes nothing; the missing packet continues the transfer.
      v2.sendPacket(0, image.subarray(0, n));
      v2.sendPacket(offset, image.subarray(offset, offset + n));
      const info = await v2.readInfo();
      assert.equal(info.transferOffset, offset + n);
    });

    it('INCOMPLETE for END before the last byte, then ABORT ends the transfer', async () => {
      await begin(image);
      v2.sendPacket(0, image.subarray(0, 100));
      await refused(v2.command(Command.END, T), Status.INCOMPLETE);
      await v2.command(Command.ABORT, T);
      assert.equal((await v2.readInfo()).transferState, TransferState.IDLE);
    });

    it('HASH_MISMATCH at END: the slot is never selected', async () => {
      const before = await t.virtual?.bootSlot();
      await begin(image, { sha256: Buffer.alloc(32, 7) });
      await v2.stream(image, 0, first.window, first.maxPacket, T, () => undefined);
      await refused(v2.command(Command.END, T), Status.HASH_MISMATCH);
      const info = await v2.readInfo();
      assert.equal(info.lastStatus, Status.HASH_MISMATCH);
      assert.equal(info.transferState, TransferState.IDLE);
      assert.equal(info.app.version, first.app.version);
      if (t.virtual) assert.equal(await t.virtual.bootSlot(), before);
    });

    it('INVALID_IMAGE at END for an image whose checksum is wrong', async function () {
      const broken = Buffer.from(t.image({ size: 40 * 1024, version: '7.0.0', seed: 33, sign: false }));
      broken[parseEspImage(broken).checksumOffset] ^= 0x55;
      // Signed after the damage where the device takes only signed images:
      // the checksum, not the signature, is what is wrong.
      const sent = first.features & Feature.SIGNED ? t.sign(broken) : broken;
      if (!sent) {
        console.log('      skipped: the device takes only signed images; set BLE_OTA_HW_SIGNING_KEY to the signing key its images are signed with');
        this.skip();
      }
      await begin(sent);
      await v2.stream(sent, 0, first.window, first.maxPacket, T, () => undefined);
      await refused(v2.command(Command.END, T), Status.INVALID_IMAGE);
    });

    it('NOT_PENDING for CONFIRM while the running image is already valid', () => refused(v2.command(Command.CONFIRM, T), Status.NOT_PENDING));

    it('END OK, RESTART, then PENDING_CONFIRM for a new BEGIN until CONFIRM', async function () {
      const next = t.bootable(first.app.version);
      if (!next) {
        console.log(`      skipped: ${t.noBootableReason}`);
        this.skip();
      }
      const version = parseEspImage(next).appDesc.version;
      await begin(next, { flags: 1 });
      await v2.stream(next, 0, first.window, first.maxPacket, T, () => undefined);
      await v2.command(Command.END, T);
      assert.equal((await v2.readInfo()).transferState, TransferState.COMPLETE);
      await v2.command(Command.RESTART, T);
      await conn.close();

      // The device restarts into the new image, which waits for CONFIRM.
      const deadline = Date.now() + t.restartMs;
      let info: DeviceInfoV2 | undefined;
      for (;;) {
        try {
          await connect();
          info = await v2.readInfo();
          if (info.app.version === version) break;
          await conn.close();
        } catch (err) {
          if (Date.now() > deadline) throw err;
        }
        await new Promise((resolve) => setTimeout(resolve, 250)); // still the old image, or restarting
        if (Date.now() > deadline) assert.fail(`the device still runs ${info?.app.version} ${t.restartMs} ms after RESTART, not ${version}`);
      }
      assert.equal(info.runningState, RunningState.PENDING_VERIFY);
      await refused(begin(image), Status.PENDING_CONFIRM);
      await v2.command(Command.CONFIRM, T);
      assert.equal((await v2.readInfo()).runningState, RunningState.VALID);
      first = await v2.readInfo();
    });
  });
}

/**
 * One whole update through the library, as a flow or the CLI makes it: the
 * image not running goes over, the device restarts into it and the client
 * confirms it.
 */
export function defineUpdate(setup: () => Promise<ConformanceTarget>): void {
  describe('one update through the client', function () {
    let t: ConformanceTarget;

    before(async function () {
      t = await targetOrSkip(this, setup);
    });

    it('sends the image the device does not run, restarts it into it and confirms it', async function () {
      const conn = await t.client.connect(t.target, { secret: t.secret });
      const running = (await conn.v2?.readInfo())?.app.version ?? '';
      await conn.close();
      const next = t.bootable(running);
      if (!next) {
        console.log(`      skipped: ${t.noBootableReason}`);
        this.skip();
      }
      const r = await t.client.update({ target: t.target, image: next, secret: t.secret });
      assert.equal(r.protocol, 'v2');
      assert.equal(r.restarted, true);
      assert.equal(r.confirmed, true);
      assert.equal(r.runningVersion, parseEspImage(next).appDesc.version);
      assert.equal(r.bytes, next.length);
    });
  });
}
