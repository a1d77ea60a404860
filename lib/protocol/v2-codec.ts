/**
 * Encoding and decoding of protocol v2 messages (docs/PROTOCOL.md). Pure
 * functions: no I/O, so every byte layout is tested on its own.
 */
import { ANSWER, BEGIN_SIZE, Command, DEVICE_ID_LEN, Event, INFO_SIZE_V1, InfoOffset as O, LinkRequest, Phy, STREAM_HEADER, UpdateSlot } from './constants';


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

function decodeLink(value: Buffer): DeviceLink {
  const known = (n: number) => (n === 0 ? undefined : n);
  const interval = value.readUInt16LE(O.CONN_INTERVAL);
  const timeout = value.readUInt16LE(O.SUPERVISION_TIMEOUT);
  const request = value[O.LINK_REQUEST];
  const toPhy = phyName(value[O.RX_PHY]);
  const fromPhy = phyName(value[O.TX_PHY]);
  const toOctets = known(value.readUInt16LE(O.RX_OCTETS));
  const fromOctets = known(value.readUInt16LE(O.TX_OCTETS));
  return {
    intervalMs: interval === 0 ? undefined : interval * 1.25,
    // Latency 0 is a value, but only next to an interval the device knows.
    latency: interval === 0 ? undefined : value.readUInt16LE(O.CONN_LATENCY),
    supervisionTimeoutMs: timeout === 0 ? undefined : timeout * 10,
    phy: toPhy || fromPhy ? { toDevice: toPhy, fromDevice: fromPhy } : undefined,
    dataLength: toOctets || fromOctets ? { toDevice: toOctets, fromDevice: fromOctets } : undefined,
    mtu: known(value.readUInt16LE(O.ATT_MTU)),
    requested: request === LinkRequest.TRANSFER ? 'transfer' : request === LinkRequest.IDLE ? 'idle' : 'none',
  };
}

/** OTA Info of info_version 3 ends after link_request and its reserved byte. */
const INFO_SIZE_V3 = O.LINK_REQUEST + 2;

function cString(buf: Buffer, offset: number, length: number): string {
  const field = buf.subarray(offset, offset + length);
  const end = field.indexOf(0);
  return field.subarray(0, end < 0 ? field.length : end).toString('utf8');
}

/**
 * Decodes OTA Info. A later info_version may be longer: what follows the
 * fields this version knows is ignored. Throws RangeError when the value is
 * too short for its version.
 */
export function decodeInfo(value: Buffer): DeviceInfoV2 {
  if (value.length < INFO_SIZE_V1) {
    throw new RangeError(`OTA Info is ${value.length} bytes, expected at least ${INFO_SIZE_V1}`);
  }
  const infoVersion = value[O.INFO_VERSION];
  const info: DeviceInfoV2 = {
    infoVersion,
    protocol: value[O.PROTOCOL],
    features: value.readUInt16LE(O.FEATURES),
    chipId: value.readUInt16LE(O.CHIP_ID),
    chipRevision: value.readUInt16LE(O.CHIP_REVISION),
    slotSize: value.readUInt32LE(O.SLOT_SIZE),
    maxPacket: value.readUInt16LE(O.MAX_PACKET),
    window: value.readUInt16LE(O.WINDOW),
    runningState: value[O.RUNNING_STATE],
    lastStatus: value[O.LAST_STATUS],
    transferState: value[O.TRANSFER_STATE],
    updateSlotRolledBack: value[O.UPDATE_SLOT] === UpdateSlot.ROLLED_BACK,
    transferOffset: value.readUInt32LE(O.TRANSFER_OFFSET),
    transferSha256: Buffer.from(value.subarray(O.TRANSFER_SHA256, O.TRANSFER_SHA256 + 32)),
    app: {
      secureVersion: value.readUInt32LE(O.SECURE_VERSION),
      version: cString(value, O.VERSION, 32),
      projectName: cString(value, O.PROJECT_NAME, 32),
      idfVersion: cString(value, O.IDF_VERSION, 32),
      date: cString(value, O.DATE, 16),
      time: cString(value, O.TIME, 16),
      elfSha256: Buffer.from(value.subarray(O.APP_ELF_SHA256, O.APP_ELF_SHA256 + 32)),
    },
  };
  if (infoVersion >= 2) {
    if (value.length < O.SIGNING_KEY + 32) {
      throw new RangeError(`OTA Info version ${infoVersion} is ${value.length} bytes, expected at least ${O.SIGNING_KEY + 32}`);
    }
    info.deviceId = Buffer.from(value.subarray(O.DEVICE_ID, O.DEVICE_ID + DEVICE_ID_LEN));
    const digest = value.subarray(O.SIGNING_KEY, O.SIGNING_KEY + 32);
    if (digest.some((b) => b !== 0)) info.signingKeyDigest = Buffer.from(digest);
  }
  // Version 2 (older firmware) has no link fields: link stays undefined.
  if (infoVersion >= 3) {
    if (value.length < INFO_SIZE_V3) {
      throw new RangeError(`OTA Info version ${infoVersion} is ${value.length} bytes, expected at least ${INFO_SIZE_V3}`);
    }
    info.link = decodeLink(value);
  }
  return info;
}

export interface BeginRequest {
  size: number;
  sha256: Buffer;
  chipId: number;
  flags: number;
}

export function encodeBegin(req: BeginRequest): Buffer {
  if (req.sha256.length !== 32) throw new RangeError('sha256 must be 32 bytes');
  const buf = Buffer.alloc(BEGIN_SIZE);
  buf[0] = Command.BEGIN;
  buf.writeUInt32LE(req.size, 1);
  req.sha256.copy(buf, 5);
  buf.writeUInt16LE(req.chipId, 37);
  buf.writeUInt16LE(req.flags, 39);
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
  /** DEFLATE: the image offset of the chunk that starts at `offset`. */
  imageOffset?: number;
}

export function decodeBeginAnswer(body: Buffer): BeginAnswer {
  if (body.length < 8) throw new RangeError(`BEGIN answer has ${body.length} bytes of fields, expected 8`);
  const answer: BeginAnswer = { offset: body.readUInt32LE(0), window: body.readUInt16LE(4), maxPacket: body.readUInt16LE(6) };
  if (body.length >= 12) answer.imageOffset = body.readUInt32LE(8);
  return answer;
}
