/**
 * Encoding and decoding of protocol v2 messages (docs/PROTOCOL.md). Pure
 * functions: no I/O, so every byte layout is tested on its own.
 */
import {
  ANSWER,
  BEGIN_PATCH_SIZE,
  BEGIN_SIZE,
  BeginFlag,
  Command,
  Event,
  INFO_SIZE_V1,
  INFO_VERSION,
  InfoFieldName,
  infoSize,
  InfoLayout,
  LinkRequest,
  Phy,
  STREAM_HEADER,
  UpdateSlot,
} from './constants';

export interface DeviceInfoV2 {
  infoVersion: number;
  protocol: number;
  features: number;
  chipId: number;
  chipRevision: number;
  slotSize: number;
  maxPacket: number;
  window: number;
  runningState: number;
  lastStatus: number;
  transferState: number;
  /**
   * The image last written to the update slot ran pending verify and was
   * rolled back (its self-test failed, no CONFIRM came, or the device
   * restarted before), and nothing was written there since.
   */
  updateSlotRolledBack: boolean;
  transferOffset: number;
  transferSha256: Buffer;
  app: {
    secureVersion: number;
    version: string;
    projectName: string;
    idfVersion: string;
    date: string;
    time: string;
    /** The running app's ELF SHA-256: the identity of its build. */
    elfSha256: Buffer;
  };
  /**
   * info_version 2: the device's identity (its factory MAC address, the
   * input of its key), undefined before.
   */
  deviceId?: Buffer;
  /**
   * info_version 2: digest of the key images must be signed with (Secure
   * Boot v2 key digest), when the device requires signed images and names
   * its key; undefined otherwise.
   */
  signingKeyDigest?: Buffer;
  /** info_version 3: the link as the device sees it; undefined before. */
  link?: DeviceLink;
  /**
   * info_version 4: the size and SHA-256 of the image in the running slot,
   * as a file holds it (the image a delta patch must be made from);
   * undefined before, and when the device cannot tell.
   */
  runningSize?: number;
  runningSha256?: Buffer;
}

export type PhyName = '1M' | '2M' | 'Coded';

/**
 * The link a device reports (OTA Info, info_version 3), in plain units. A
 * field the device does not know (0 on the air) is undefined.
 */
export interface DeviceLink {
  /** Connection interval in ms (a multiple of 1.25). */
  intervalMs?: number;
  /** Connection events the device may skip. */
  latency?: number;
  supervisionTimeoutMs?: number;
  /** PHY from the client to the device (the stream's direction), and back. */
  phy?: { toDevice?: PhyName; fromDevice?: PhyName };
  /** LL payload octets per PDU (27 without Data Length Extension, up to 251), each way. */
  dataLength?: { toDevice?: number; fromDevice?: number };
  mtu?: number;
  /** The connection parameters the device last asked for: none yet (the central's choice), a transfer's, or idle ones. */
  requested: 'none' | 'transfer' | 'idle';
}

function phyName(value: number): PhyName | undefined {
  return value === Phy.LE_1M ? '1M' : value === Phy.LE_2M ? '2M' : value === Phy.LE_CODED ? 'Coded' : undefined;
}

/**
 * Reads OTA Info's fields by their names in InfoLayout: integers as numbers,
 * text up to its first NUL, bytes as a copy.
 */
class InfoReader {
  constructor(private readonly value: Buffer) {}

  num(name: InfoFieldName): number {
    const f = InfoLayout[name];
    switch (f.type) {
      case 'u8':
        return this.value[f.offset];
      case 'u16':
        return this.value.readUInt16LE(f.offset);
      case 'u32':
        return this.value.readUInt32LE(f.offset);
      default:
        throw new TypeError(`OTA Info field ${name} is ${f.type}, not a number`);
    }
  }

  text(name: InfoFieldName): string {
    const f = InfoLayout[name];
    const field = this.value.subarray(f.offset, f.offset + f.size);
    const end = field.indexOf(0);
    return field.subarray(0, end < 0 ? field.length : end).toString('utf8');
  }

  bytes(name: InfoFieldName): Buffer {
    const f = InfoLayout[name];
    return Buffer.from(this.value.subarray(f.offset, f.offset + f.size));
  }
}

function decodeLink(r: InfoReader): DeviceLink {
  const known = (n: number) => (n === 0 ? undefined : n);
  const interval = r.num('CONN_INTERVAL');
  const timeout = r.num('SUPERVISION_TIMEOUT');
  const request = r.num('LINK_REQUEST');
  const toPhy = phyName(r.num('RX_PHY'));
  const fromPhy = phyName(r.num('TX_PHY'));
  const toOctets = known(r.num('RX_OCTETS'));
  const fromOctets = known(r.num('TX_OCTETS'));
  return {
    intervalMs: interval === 0 ? undefined : interval * 1.25,
    // Latency 0 is a value, but only next to an interval the device knows.
    latency: interval === 0 ? undefined : r.num('CONN_LATENCY'),
    supervisionTimeoutMs: timeout === 0 ? undefined : timeout * 10,
    phy: toPhy || fromPhy ? { toDevice: toPhy, fromDevice: fromPhy } : undefined,
    dataLength: toOctets || fromOctets ? { toDevice: toOctets, fromDevice: fromOctets } : undefined,
    mtu: known(r.num('ATT_MTU')),
    requested: request === LinkRequest.TRANSFER ? 'transfer' : request === LinkRequest.IDLE ? 'idle' : 'none',
  };
}

/**
 * Decodes OTA Info by its info_version: a field is read only from a value
 * whose version has it (InfoLayout's `since`), so an older device's value
 * decodes with the fields it had and the later ones undefined. A later
 * version only appends: what follows the fields this client knows is
 * ignored. Throws RangeError when the value is shorter than its version's
 * fields (as far as this client knows them).
 */
export function decodeInfo(value: Buffer): DeviceInfoV2 {
  if (value.length < INFO_SIZE_V1) {
    throw new RangeError(`OTA Info is ${value.length} bytes, shorter than the ${INFO_SIZE_V1} of its first version`);
  }
  const infoVersion = value[InfoLayout.INFO_VERSION.offset];
  // Version 0 was never sent: read such a value as version 1, its fields are there.
  const known = Math.min(Math.max(infoVersion, 1), INFO_VERSION);
  if (value.length < infoSize(known)) {
    throw new RangeError(`OTA Info of info_version ${infoVersion} is ${value.length} bytes, expected at least ${infoSize(known)}`);
  }
  const has = (name: InfoFieldName) => InfoLayout[name].since <= known;
  const r = new InfoReader(value);
  const info: DeviceInfoV2 = {
    infoVersion,
    protocol: r.num('PROTOCOL'),
    features: r.num('FEATURES'),
    chipId: r.num('CHIP_ID'),
    chipRevision: r.num('CHIP_REVISION'),
    slotSize: r.num('SLOT_SIZE'),
    maxPacket: r.num('MAX_PACKET'),
    window: r.num('WINDOW'),
    runningState: r.num('RUNNING_STATE'),
    lastStatus: r.num('LAST_STATUS'),
    transferState: r.num('TRANSFER_STATE'),
    updateSlotRolledBack: r.num('UPDATE_SLOT') === UpdateSlot.ROLLED_BACK,
    transferOffset: r.num('TRANSFER_OFFSET'),
    transferSha256: r.bytes('TRANSFER_SHA256'),
    app: {
      secureVersion: r.num('SECURE_VERSION'),
      version: r.text('VERSION'),
      projectName: r.text('PROJECT_NAME'),
      idfVersion: r.text('IDF_VERSION'),
      date: r.text('DATE'),
      time: r.text('TIME'),
      elfSha256: r.bytes('APP_ELF_SHA256'),
    },
  };
  if (has('DEVICE_ID')) info.deviceId = r.bytes('DEVICE_ID');
  if (has('SIGNING_KEY')) {
    const digest = r.bytes('SIGNING_KEY');
    if (digest.some((b) => b !== 0)) info.signingKeyDigest = digest;
  }
  // The link fields arrived together: a value has all of them or none.
  if (has('CONN_INTERVAL')) info.link = decodeLink(r);
  // Both zero when the device cannot tell (no running image found, a malformed one).
  if (has('RUNNING_SIZE') && r.num('RUNNING_SIZE') !== 0) {
    info.runningSize = r.num('RUNNING_SIZE');
    info.runningSha256 = r.bytes('RUNNING_SHA256');
  }
  return info;
}

export interface BeginRequest {
  /** Bytes of the image (with PATCH: of the image the patch rebuilds). */
  size: number;
  sha256: Buffer;
  chipId: number;
  flags: number;
  /** With BeginFlag.PATCH, and only then: the SHA-256 of the image the patch applies to. */
  base?: Buffer;
}

export function encodeBegin(req: BeginRequest): Buffer {
  if (req.sha256.length !== 32) throw new RangeError('sha256 must be 32 bytes');
  const patch = (req.flags & BeginFlag.PATCH) !== 0;
  if (patch !== (req.base !== undefined)) {
    throw new RangeError(patch ? "BEGIN with the PATCH flag needs the base image's SHA-256" : 'a base SHA-256 goes only with the PATCH flag');
  }
  if (req.base !== undefined && req.base.length !== 32) throw new RangeError(`base must be a 32-byte SHA-256, not ${req.base.length} bytes`);
  const buf = Buffer.alloc(patch ? BEGIN_PATCH_SIZE : BEGIN_SIZE);
  buf[0] = Command.BEGIN;
  buf.writeUInt32LE(req.size, 1);
  req.sha256.copy(buf, 5);
  buf.writeUInt16LE(req.chipId, 37);
  buf.writeUInt16LE(req.flags, 39);
  req.base?.copy(buf, BEGIN_SIZE);
  return buf;
}

export function encodeCommand(opcode: number): Buffer {
  return Buffer.from([opcode]);
}

/** One OTA Stream packet: the offset, then the bytes. */
export function encodeStreamPacket(offset: number, data: Buffer): Buffer {
  const buf = Buffer.allocUnsafe(STREAM_HEADER + data.length);
  buf.writeUInt32LE(offset, 0);
  data.copy(buf, STREAM_HEADER);
  return buf;
}

export type CommandNotification =
  | { kind: 'answer'; opcode: number; status: number; body: Buffer }
  | { kind: 'ack'; offset: number }
  | { kind: 'resync'; offset: number }
  | { kind: 'failed'; status: number; offset: number }
  | { kind: 'unknown'; raw: Buffer };

export function decodeNotification(value: Buffer): CommandNotification {
  const type = value[0];
  if (type === Event.ACK && value.length >= 5) return { kind: 'ack', offset: value.readUInt32LE(1) };
  if (type === Event.RESYNC && value.length >= 5) return { kind: 'resync', offset: value.readUInt32LE(1) };
  if (type === Event.FAILED && value.length >= 6) {
    return { kind: 'failed', status: value[1], offset: value.readUInt32LE(2) };
  }
  if (value.length >= 2 && type & ANSWER && type < Event.ACK) {
    return { kind: 'answer', opcode: type & ~ANSWER, status: value[1], body: Buffer.from(value.subarray(2)) };
  }
  return { kind: 'unknown', raw: Buffer.from(value) };
}

export interface BeginAnswer {
  /** Where the stream goes on (with DEFLATE, in the deflated stream). */
  offset: number;
  window: number;
  maxPacket: number;
  /** DEFLATE: the image offset of the chunk that starts at `offset` (with PATCH: its patch offset). */
  imageOffset?: number;
}

export function decodeBeginAnswer(body: Buffer): BeginAnswer {
  if (body.length < 8) throw new RangeError(`BEGIN answer has ${body.length} bytes of fields, expected 8`);
  const answer: BeginAnswer = { offset: body.readUInt32LE(0), window: body.readUInt16LE(4), maxPacket: body.readUInt16LE(6) };
  if (body.length >= 12) answer.imageOffset = body.readUInt32LE(8);
  return answer;
}
