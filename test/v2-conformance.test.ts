/**
 * Protocol v2 conformance, message by message, through noble and the
 * virtual bindings: every request, every event, every status the device can
 * answer over the air (docs/PROTOCOL.md).
 */
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { BleOtaClient, OtaConnection } from '../lib/client/ota-client';
import { CommandRefused } from '../lib/client/refusal';
import { V2Session } from '../lib/client/v2-session';
import { buildAppImage } from '../lib/image/app-image-builder';
import {
  BEGIN_SIZE,
  Command,
  Feature,
  INFO_SIZE,
  PROTOCOL_VERSION,
  RunningState,
  Status,
  STREAM_HEADER,
  TransferState,
} from '../lib/protocol/constants';
import { BeginRequest, encodeBegin } from '../lib/protocol/v2-codec';
import { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { VirtualRadio } from '../lib/virtual/virtual-radio';
import { eventually } from './support/eventually';

const WINDOW = 8192;
const T = 2000;

function beginFor(image: Buffer, over: Partial<BeginRequest> = {}): BeginRequest {
  return { size: image.length, sha256: createHash('sha256').update(image).digest(), chipId: 0, flags: 0, ...over };
}

async function refused(promise: Promise<unknown>, status: number): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof CommandRefused, String(err));
    assert.equal(err.status, status, `expected status 0x${status.toString(16)}, got 0x${err.status.toString(16)}`);
    return true;
  });
}

describe('protocol v2 conformance over the air', function () {
  this.timeout(30_000);
  let radio: VirtualRadio;
  let device: VirtualEsp32;
  let client: BleOtaClient;
  let conn: OtaConnection;
  let v2: V2Session;
  const image = buildAppImage({ size: 40 * 1024, version: '7.0.0', seed: 31 });

  before(async function () {
    this.timeout(120_000);
    radio = new VirtualRadio();
    device = await radio.addDevice({ name: 'conformance', window: WINDOW, restartDelayMs: 20 });
    client = new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000, gattMs: T } });
  });

  beforeEach(async () => {
    conn = await client.connect({ name: 'conformance' });
    assert.ok(conn.v2, 'the device offers protocol v2');
    v2 = conn.v2;
    await v2.subscribe();
  });

  afterEach(async () => {
    await v2.command(Command.ABORT, T).catch(() => undefined);
    await conn.close();
  });

  after(() => radio.stopAll());

  it('OTA Info describes the device and its running image', async () => {
    const info = await v2.readInfo();
    assert.equal(info.protocol, PROTOCOL_VERSION);
    assert.equal(info.infoVersion, 3);
    assert.ok(info.features & Feature.RESUME && info.features & Feature.CLIENT_CONFIRM && info.features & Feature.SEED);
    assert.equal(info.chipId, 0);
    assert.equal(info.slotSize, 0x1e0000);
    assert.equal(info.window, WINDOW);
    assert.ok(info.maxPacket >= 244 + STREAM_HEADER);
    assert.equal(info.runningState, RunningState.VALID);
    assert.equal(info.transferState, TransferState.IDLE);
    assert.equal(info.app.projectName, 'virtual-esp32');
    assert.equal(info.app.version, '1.0.0');
    assert.equal(INFO_SIZE, 276);
    assert.equal(info.deviceId?.length, 6);
    assert.equal(info.app.elfSha256.length, 32);
  });

  it('BEGIN answers OK with offset 0, the window and the largest packet; Info shows the transfer', async () => {
    const answer = await v2.begin(beginFor(image), T);
    assert.deepEqual(answer, { offset: 0, window: WINDOW, maxPacket: (await v2.readInfo()).maxPacket });
    const info = await v2.readInfo();
    assert.equal(info.transferState, TransferState.RECEIVING);
    assert.ok(info.transferSha256.equals(beginFor(image).sha256));
  });

  it('UNKNOWN_COMMAND for an unknown opcode in the request range', () => refused(v2.request(0x3e, Buffer.from([0x3e]), T), Status.UNKNOWN_COMMAND));

  it('BAD_LENGTH for a short BEGIN and for END with arguments', async () => {
    await refused(v2.request(Command.BEGIN, encodeBegin(beginFor(image)).subarray(0, BEGIN_SIZE - 1), T), Status.BAD_LENGTH);
    await refused(v2.request(Command.END, Buffer.from([Command.END, 0]), T), Status.BAD_LENGTH);
  });

  it('BAD_ARGUMENT for size 0 and for a reserved flag', async () => {
    await refused(v2.begin(beginFor(image, { size: 0 }), T), Status.BAD_ARGUMENT);
    await refused(v2.begin(beginFor(image, { flags: 0x8000 }), T), Status.BAD_ARGUMENT);
  });

  it('BAD_STATE for END and RESTART without a transfer', async () => {
    await refused(v2.command(Command.END, T), Status.BAD_STATE);
    await refused(v2.command(Command.RESTART, T), Status.BAD_STATE);
  });

  it('TOO_LARGE for an image larger than the slot', () => refused(v2.begin(beginFor(image, { size: 0x1e0001 }), T), Status.TOO_LARGE));

  it('WRONG_CHIP for another chip id in BEGIN, and a FAILED event for another chip in the image header', async () => {
    await refused(v2.begin(beginFor(image, { chipId: 5 }), T), Status.WRONG_CHIP);
    const c3 = buildAppImage({ chipId: 5, size: 8192, seed: 32 });
    await v2.begin(beginFor(c3), T); // the client lies about the chip: the header tells
    v2.sendPacket(0, c3.subarray(0, 200));
    const event = await v2.nextEvent(T);
    assert.deepEqual(event, { kind: 'failed', status: Status.WRONG_CHIP, offset: 0 });
  });

  it('ACK every window/8 bytes, RESYNC once for a gap, duplicates ignored', async () => {
    await v2.begin(beginFor(image), T);
    const chunk = 200;
    let offset = 0;
    while (offset < WINDOW / 8) {
      v2.sendPacket(offset, image.subarray(offset, offset + chunk));
      offset += chunk;
    }
    const ack = await v2.nextEvent(T);
    assert.equal(ack.kind, 'ack');
    assert.ok(ack.offset >= WINDOW / 8 && ack.offset <= offset, `ack at ${ack.offset}`);
    // A gap: the packet after the next one.
    v2.sendPacket(offset + chunk, image.subarray(offset + chunk, offset + 2 * chunk));
    v2.sendPacket(offset + 2 * chunk, image.subarray(offset + 2 * chunk, offset + 3 * chunk));
    assert.deepEqual(await v2.nextEvent(T), { kind: 'resync', offset });
    // A duplicate changes nothing; the missing packet continues the transfer.
    v2.sendPacket(0, image.subarray(0, chunk));
    v2.sendPacket(offset, image.subarray(offset, offset + chunk));
    const info = await v2.readInfo();
    assert.equal(info.transferOffset, offset + chunk);
  });

  it('INCOMPLETE for END before the last byte, then ABORT ends the transfer', async () => {
    await v2.begin(beginFor(image), T);
    v2.sendPacket(0, image.subarray(0, 100));
    await refused(v2.command(Command.END, T), Status.INCOMPLETE);
    await v2.command(Command.ABORT, T);
    assert.equal((await v2.readInfo()).transferState, TransferState.IDLE);
  });

  it('HASH_MISMATCH at END: the slot is never selected', async () => {
    const before = await device.state();
    await v2.begin(beginFor(image, { sha256: Buffer.alloc(32, 7) }), T);
    await v2.stream(image, 0, WINDOW, 244 + 4, T, () => undefined);
    await refused(v2.command(Command.END, T), Status.HASH_MISMATCH);
    const after = await device.state();
    assert.equal(after.boot, before.boot);
    assert.equal((await v2.readInfo()).lastStatus, Status.HASH_MISMATCH);
  });

  it('INVALID_IMAGE at END for an image whose checksum is wrong', async () => {
    const broken = Buffer.from(image);
    broken[broken.length - 33] ^= 0x55; // the checksum byte, just before the appended SHA-256
    await v2.begin(beginFor(broken), T);
    await v2.stream(broken, 0, WINDOW, 244 + 4, T, () => undefined);
    await refused(v2.command(Command.END, T), Status.INVALID_IMAGE);
  });

  it('NOT_PENDING for CONFIRM while the running image is already valid', () => refused(v2.command(Command.CONFIRM, T), Status.NOT_PENDING));

  it('END OK, RESTART, then PENDING_CONFIRM for a new BEGIN until CONFIRM', async () => {
    const before = await device.state();
    await v2.begin(beginFor(image, { flags: 1 }), T);
    await v2.stream(image, 0, WINDOW, 244 + 4, T, () => undefined);
    await v2.command(Command.END, T);
    assert.equal((await v2.readInfo()).transferState, TransferState.COMPLETE);
    await v2.command(Command.RESTART, T);
    await eventually(() => device.state(), (s) => s.running !== before.running, 3000, 'restart');
    await conn.close();

    conn = await client.connect({ name: 'conformance' });
    v2 = conn.v2!;
    await v2.subscribe();
    const info = await v2.readInfo();
    assert.equal(info.runningState, RunningState.PENDING_VERIFY);
    assert.equal(info.app.version, '7.0.0');
    await refused(v2.begin(beginFor(image), T), Status.PENDING_CONFIRM);
    await v2.command(Command.CONFIRM, T);
    assert.equal((await v2.readInfo()).runningState, RunningState.VALID);
  });
});
