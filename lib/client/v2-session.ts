/**
 * Protocol v2 on one connection: OTA Command requests and their answers,
 * the device's ACK / RESYNC / FAILED events, the windowed stream, and the
 * authenticated session on devices that require one (docs/PROTOCOL.md).
 */
import { BleOtaError, DeviceError, ProtocolError } from '../errors';
import { ANSWER, AUTH_MAC_LEN, Command, Feature, HELLO_SIZE, Status, STREAM_HEADER, TransferState } from '../protocol/constants';
import {
  BeginAnswer,
  BeginRequest,
  CommandNotification,
  decodeBeginAnswer,
  decodeInfo,
  decodeNotification,
  DeviceInfoV2,
  encodeBegin,
  encodeCommand,
  encodeStreamPacket,
} from '../protocol/v2-codec';
import { createHash } from 'node:crypto';
import { COMMAND_NAMES, CommandRefused } from './refusal';
import { deviceKey, formatDeviceId, Session } from './session';
import type { Link } from './link';
import type { NobleCharacteristic } from './noble-types';

type StreamEvent = Extract<CommandNotification, { kind: 'ack' | 'resync' | 'failed' }>;

/**
 * The smallest ATT MTU an authenticated session needs: the longest answer
 * with its MAC (INFO's) must fit one notification. Requests may be longer
 * than a PDU: they go as long writes.
 */
export const AUTH_MIN_MTU = 2 + 32 + AUTH_MAC_LEN + 3;

/** Who the client updates: the owner's fleet secret and what it accepts without it. */
export interface AuthPolicy {
  /** The owner's fleet secret (parsed): device keys derive from it. */
  secret?: Buffer;
  /**
   * With a secret: update devices that cannot authenticate (no AUTH
   * feature, the seed protocol) anyway. Off by default: such a device may
   * be anyone's.
   */
  allowUnauthenticated?: boolean;
  /**
   * The device id (6 bytes) the device must have: the one the owner
   * expects, or the one an update proved on its first link. A device with
   * another id is refused (WRONG_DEVICE) before anything is sent to it.
   */
  deviceId?: Buffer;
  /**
   * With a secret: every device must prove itself, whatever
   * allowUnauthenticated says. Set for the later connections of an update
   * whose first one was proven, and when a device id is asked for: a claim
   * of an id without proof is worth nothing.
   */
  requireSession?: boolean;
}

/** OTA Info, and whether the device proved it (a session MAC over its digest). */
export interface ProvenInfo {
  info: DeviceInfoV2;
  authenticated: boolean;
}

export interface StreamProgress {
  acked: number;
  /** Undefined while a source's length is not known yet. */
  total: number | undefined;
}

/**
 * What stream() sends when it is not one Buffer: bytes produced as the
 * transfer reaches them (the DEFLATE stream), so the client never holds
 * them all. The length is known once the end has been read.
 */
export interface StreamSource {
  readonly length: number | undefined;
  /** Up to `max` bytes at `offset`: fewer only at the end, none past it. */
  read(offset: number, max: number): Buffer;
  /**
   * Optional: what read() would return, copied into `target` at `at`;
   * returns how many bytes. Saves a view of the bytes per packet.
   */
  copy?(offset: number, max: number, target: Buffer, at: number): number;
  /** The device acknowledged the bytes before `offset` (they may still be read again). */
  release(offset: number): void;
}

const bufferSource = (image: Buffer): StreamSource => ({
  length: image.length,
  read: (offset, max) => image.subarray(offset, Math.min(offset + max, image.length)),
  copy: (offset, max, target, at) => (offset < image.length ? image.copy(target, at, offset, Math.min(offset + max, image.length)) : 0),
  release: () => undefined,
});

export interface StreamStats {
  packets: number;
  /** Packets sent again after a RESYNC or a stalled window. */
  resent: number;
}

export class V2Session {
  private readonly answers: Array<{ opcode: number; status: number; body: Buffer }> = [];
  private readonly events: StreamEvent[] = [];
  private wake: (() => void) | undefined;
  private readonly onData = (data: Buffer, isNotification: boolean) => {
    if (!isNotification || data.length === 0) return;
    const n = decodeNotification(data);
    if (n.kind === 'answer') this.answers.push(n);
    else if (n.kind !== 'unknown') this.events.push(n);
    this.wake?.();
  };

  /** OTA Info's features, once read. */
  private features: number | undefined;
  private deviceId: Buffer | undefined;
  private subscribed = false;
  /** The link's session, once HELLO was answered. */
  private session: Session | undefined;
  /** Bytes of OTA Stream content sent on this connection (packets sent again included, their offsets not). */
  streamBytes = 0;

  constructor(
    readonly link: Link,
    private readonly chars: { info: NobleCharacteristic; command: NobleCharacteristic; stream: NobleCharacteristic },
    private readonly mtu: number,
    private readonly policy: AuthPolicy = {},
  ) {
    chars.command.on('data', this.onData);
  }

  /** True once the device proved it holds its key on this link. */
  get authenticated(): boolean {
    return this.session?.open === true;
  }

  /** OTA Info as read: nothing proves it came from the device (see provenInfo). */
  async readInfo(): Promise<DeviceInfoV2> {
    return (await this.readInfoValue()).info;
  }

  /**
   * Reads and decodes OTA Info. The first read fixes what later requests
   * rest on (features, device id) for the whole connection: a device does
   * not change them while connected, so a value that does is not its own.
   */
  private async readInfoValue(): Promise<{ value: Buffer; info: DeviceInfoV2 }> {
    const value = await this.link.read(this.chars.info, 'OTA Info');
    if (value.length === 0) {
      // An error answer (noble gives an empty value): a device restarting, or going away.
      throw new BleOtaError('GATT_TIMEOUT', `${this.link.describe()} answered the OTA Info read with an error; it may be restarting.`);
    }
    let info: DeviceInfoV2;
    try {
      info = decodeInfo(value);
    } catch (err) {
      throw new ProtocolError('PROTOCOL_ERROR', `The device's OTA Info could not be read: ${(err as Error).message}.`);
    }
    if (this.features === undefined) {
      this.checkDeviceId(info.deviceId);
      this.features = info.features;
      this.deviceId = info.deviceId;
    } else if (info.features !== this.features || !sameId(info.deviceId, this.deviceId)) {
      throw new DeviceError(
        'DEVICE_NOT_AUTHENTICATED',
        `${this.link.describe()} changed its OTA Info's ${info.features !== this.features ? 'features' : 'device id'} within one connection: another device may be answering in its place. Nothing more was sent.`,
      );
    }
    return { value, info };
  }

  /** The device must be the one the policy names, if it names one. */
  private checkDeviceId(id: Buffer | undefined): void {
    const expected = this.policy.deviceId;
    if (expected === undefined || sameId(id, expected)) return;
    throw new DeviceError(
      'WRONG_DEVICE',
      `${this.link.describe()} is ${id ? `device ${formatDeviceId(id)}` : 'a device without a device id'}, not the expected ${formatDeviceId(expected)}. Nothing was sent to it. Check the device id asked for, and which device uses the name or address it was found by.`,
    );
  }

  /**
   * OTA Info the client may act on. On a device with authentication, the
   * device proves the value it serves: INFO answers its SHA-256 under the
   * session MAC (read again when it changed in between). On one without,
   * the value as read, when the policy allows such devices.
   */
  async provenInfo(timeoutMs: number): Promise<ProvenInfo> {
    for (let attempt = 0; ; attempt++) {
      const { value, info } = await this.readInfoValue();
      if (!this.requiresSession(info.features)) return { info, authenticated: false };
      const digest = await this.request(Command.INFO, encodeCommand(Command.INFO), timeoutMs);
      if (digest.equals(createHash('sha256').update(value).digest())) return { info, authenticated: true };
      // The value changed between the read and INFO (a transfer moved on), or an impostor answered.
      if (attempt >= 2) {
        throw new DeviceError(
          'DEVICE_NOT_AUTHENTICATED',
          `${this.link.describe()} does not vouch for the OTA Info it serves: what was read differs from what the device signed, three times. Another device may be answering in its place.`,
        );
      }
    }
  }

  /**
   * Whether requests on this device need the session, by the policy: a
   * device with the AUTH feature needs a secret; with a secret, a device
   * without it is refused unless the policy allows it.
   */
  private requiresSession(features: number): boolean {
    if ((features & Feature.AUTH) !== 0) {
      if (!this.policy.secret) {
        throw new DeviceError('AUTH_REQUIRED', `${this.link.describe()} takes updates only from its owner: give the fleet secret its key was derived from.`);
      }
      return true;
    }
    if (this.policy.secret && this.policy.requireSession) {
      throw new DeviceError(
        'DEVICE_NOT_AUTHENTICATED',
        `${this.link.describe()} cannot prove it is ${this.policy.deviceId ? `device ${formatDeviceId(this.policy.deviceId)}` : 'the device this update started with'}: it does not offer authentication. Nothing more was sent to it; another device may be answering in its place.`,
      );
    }
    if (this.policy.secret && !this.policy.allowUnauthenticated) {
      throw new DeviceError(
        'DEVICE_NOT_AUTHENTICATED',
        `${this.link.describe()} cannot prove it is your device: its firmware has no authentication (a development build, or another device using its name). Nothing was sent. Flash firmware with a provisioned key, or allow unauthenticated devices (the device node's option; the CLI's --allow-unauthenticated).`,
      );
    }
    return false;
  }

  /** Subscribes to OTA Command, once per connection: answers come as notifications. */
  async subscribe(): Promise<void> {
    if (this.subscribed) return;
    await this.link.subscribe(this.chars.command, 'OTA Command notifications');
    this.subscribed = true;
  }

  /**
   * Writes a request and waits for its answer; throws CommandRefused unless
   * it is OK. On a device that requires authentication, the request goes in
   * the link's session (HELLO first), and an answer without the session's
   * MAC is refused: only the device holding the key could have sent it.
   */
  async request(opcode: number, value: Buffer, timeoutMs: number): Promise<Buffer> {
    if (this.features === undefined) await this.readInfo();
    if (!this.requiresSession(this.features ?? 0)) {
      const answer = await this.exchange(opcode, value, timeoutMs);
      if (answer.status !== Status.OK) throw new CommandRefused(opcode, answer.status, answer.body);
      return answer.body;
    }
    const session = await this.openSession(timeoutMs);
    const sealed = session.seal(value);
    const proof = (answer: { status: number; body: Buffer }) => session.verify(Buffer.concat([Buffer.from([opcode | ANSWER, answer.status]), answer.body]), sealed.seq);
    // Refusals of a request that did not authenticate carry no MAC: the
    // device could not make one. Any other answer must have one; one that
    // does not (a late answer to an earlier request, or someone else's) is
    // passed over while the real one may still come.
    const unsigned = (status: number) => status === Status.AUTH_FAILED || status === Status.AUTH_LOCKED || status === Status.AUTH_REQUIRED;
    const answer = await this.exchange(opcode, sealed.value, timeoutMs, (a) => unsigned(a.status) || proof(a) !== undefined);
    const proven = proof(answer);
    if (!proven) throw new CommandRefused(opcode, answer.status, answer.body);
    if (proven[1] !== Status.OK) throw new CommandRefused(opcode, proven[1], proven.subarray(2));
    return proven.subarray(2);
  }

  /** HELLO on this link, once: the session every later request goes in. */
  private async openSession(timeoutMs: number): Promise<Session> {
    if (this.session?.open) return this.session;
    if (!this.policy.secret) throw new Error('openSession without a secret');
    if (!this.deviceId) {
      throw new ProtocolError('PROTOCOL_ERROR', `${this.link.describe()} asks for authentication but its OTA Info names no device id (info_version 1).`);
    }
    if (this.mtu < AUTH_MIN_MTU) {
      throw new DeviceError(
        'CONNECT_FAILED',
        `The link's ATT MTU is ${this.mtu}; authenticated updates need at least ${AUTH_MIN_MTU}. The Bluetooth stack did not negotiate a larger MTU: check the adapter and its driver.`,
      );
    }
    const session = new Session(deviceKey(this.policy.secret, this.deviceId), this.deviceId);
    let answer = await this.exchange(Command.HELLO, session.hello(), timeoutMs);
    if (answer.status === Status.AUTH_LOCKED && answer.body.length >= 4 && answer.body.readUInt32LE(0) <= timeoutMs) {
      // This link failed before: wait as long as the device asks, once.
      await this.link
        .wait("the device's authentication lock", answer.body.readUInt32LE(0) + 50, () => undefined)
        .catch((err: unknown) => {
          if ((err as { code?: string }).code !== 'GATT_TIMEOUT') throw err;
        });
      answer = await this.exchange(Command.HELLO, session.hello(), timeoutMs);
    }
    if (answer.status !== Status.OK) throw new CommandRefused(Command.HELLO, answer.status, answer.body);
    if (answer.body.length !== HELLO_SIZE - 1) {
      throw new ProtocolError('PROTOCOL_ERROR', `The device's HELLO answer has ${answer.body.length} bytes of nonce, expected ${HELLO_SIZE - 1}.`);
    }
    session.accept(answer.body);
    this.session = session;
    return session;
  }

  /**
   * Writes a value to OTA Command as it is (no MAC added) and waits for the
   * answer to opcode that `accept` takes (default: any, whatever its status).
   * Answers it does not take are dropped; when only such answers came, the
   * timeout says so.
   */
  async exchange(
    opcode: number,
    value: Buffer,
    timeoutMs: number,
    accept: (answer: { status: number; body: Buffer }) => boolean = () => true,
  ): Promise<{ status: number; body: Buffer }> {
    const name = COMMAND_NAMES[opcode] ?? `command 0x${opcode.toString(16)}`;
    // A request on a new connection (a recovery) must not wait for an answer nobody subscribed to.
    await this.subscribe();
    // Answers to earlier requests that nobody awaited (e.g. after a timeout) are stale.
    this.answers.length = 0;
    await this.link.write(this.chars.command, value, name);
    let ignored = 0;
    try {
      return await this.link.wait<{ status: number; body: Buffer }>(`the answer to ${name}`, timeoutMs, (resolve) => {
        const take = () => {
          for (let i = this.answers.findIndex((a) => a.opcode === opcode); i >= 0; i = this.answers.findIndex((a) => a.opcode === opcode)) {
            const answer = this.answers.splice(i, 1)[0];
            if (accept(answer)) return resolve(answer);
            ignored++;
          }
        };
        this.wake = take;
        take();
        return () => {
          this.wake = undefined;
        };
      });
    } catch (err) {
      if (ignored === 0 || (err as { code?: string }).code !== 'GATT_TIMEOUT') throw err;
      // Still a timeout (the caller may reconnect and retry), that says what came instead.
      throw new BleOtaError(
        'GATT_TIMEOUT',
        `No answer to ${name} with the proof of device ${this.deviceId ? formatDeviceId(this.deviceId) : '?'} came within ${timeoutMs} ms; ${ignored} answer${ignored === 1 ? '' : 's'} without it ${ignored === 1 ? 'was' : 'were'} ignored (a late answer to an earlier request, or another device answering in its place).`,
        { cause: err },
      );
    }
  }

  async begin(req: BeginRequest, timeoutMs: number): Promise<BeginAnswer> {
    const body = await this.request(Command.BEGIN, encodeBegin(req), timeoutMs);
    try {
      return decodeBeginAnswer(body);
    } catch (err) {
      throw new ProtocolError('PROTOCOL_ERROR', `The device's answer to BEGIN could not be read: ${(err as Error).message}.`);
    }
  }

  async command(opcode: number, timeoutMs: number): Promise<void> {
    await this.request(opcode, encodeCommand(opcode), timeoutMs);
  }

  /**
   * Streams image[start..] with at most `window` bytes beyond the last ACK.
   * A RESYNC rewinds to the offset the device expects; a window that gets no
   * ACK within stallMs is sent again from the last ACK, twice at most, after
   * asking OTA Info where the device is (its ACK, or its FAILED, may have
   * been lost: a duplicate gets no ACK).
   * `base`: the stream offset of image[0] (with DEFLATE, where a resumed
   * encoding starts); progress and `start` count from image[0].
   */
  async stream(
    image: Buffer | StreamSource,
    start: number,
    window: number,
    maxPacket: number,
    stallMs: number,
    onProgress: (p: StreamProgress) => void,
    base = 0,
  ): Promise<StreamStats> {
    const chunk = streamValueSize(Math.min(maxPacket, this.mtu - 3)) - 4;
    if (chunk < 1) throw new DeviceError('CONNECT_FAILED', `the ATT MTU (${this.mtu}) is too small for OTA Stream packets`);
    this.events.length = 0;
    let acked = start;
    let next = start;
    let highest = start; // end of the furthest packet ever sent, to count resends
    const stats: StreamStats = { packets: 0, resent: 0 };
    // Stalls, and events that move nothing on, count from the last progress:
    // the device's events carry no MAC, and a stream that never progresses
    // must end however many of them come.
    let stalls = 0;
    let idleEvents = 0;
    // The stream's end reached by the ACKs but not by the device: how often, and the device's offset then.
    let shortEnds = 0;
    let provenShort = -1;
    const idleLimit = 2 * Math.ceil(window / chunk) + 8;
    const source = Buffer.isBuffer(image) ? bufferSource(image) : image;
    // Until the source has produced its last byte, its end is further than anything sent.
    const length = () => source.length ?? Infinity;
    while (acked < length()) {
      while (next - acked < window) {
        // The packet is built in place, its bytes copied once from the source.
        // Not reused: noble's HCI bindings copy a value when it is written,
        // but its API does not promise it, and other bindings (the virtual
        // ones, for example) keep the buffer until it is sent.
        if (next >= length()) break;
        const packet = Buffer.allocUnsafe(STREAM_HEADER + chunk);
        const n = source.copy ? source.copy(next, chunk, packet, STREAM_HEADER) : source.read(next, chunk).copy(packet, STREAM_HEADER);
        if (n === 0) break;
        const end = next + n;
        this.link.check();
        packet.writeUInt32LE(base + next, 0);
        this.chars.stream.write(n === chunk ? packet : packet.subarray(0, STREAM_HEADER + n), true);
        stats.packets++;
        this.streamBytes += n;
        if (end <= highest) stats.resent++;
        highest = Math.max(highest, end);
        next = end;
      }
      // An event already queued (most are: the device acknowledges as it
      // goes) is taken as it is, without a timer and a promise for it.
      let event: StreamEvent | undefined;
      try {
        if (idleEvents < idleLimit) {
          this.link.check(); // a lost link fails here, as nextEvent() would
          event = this.events.shift() ?? (await this.nextEvent(stallMs));
        }
      } catch (err) {
        if ((err as { code?: string }).code !== 'GATT_TIMEOUT') throw err;
      }
      if (event === undefined) {
        // No event in time, or only events that moved nothing on: a stall.
        idleEvents = 0;
        if (++stalls > 2) {
          throw new BleOtaError('GATT_TIMEOUT', `The transfer made no progress at ${base + acked} bytes, after sending the window again twice.`);
        }
        acked = await this.resumeFromDevice(stallMs, base, length(), acked, onProgress, () => (stalls = 0));
        next = acked; // send again from what the device has
        continue;
      }
      if (event.kind === 'failed') {
        // The device aborted the transfer. Events carry no MAC: in a session,
        // the device's proven OTA Info must agree before the update ends.
        if (!this.authenticated) throw new CommandRefused(0, event.status);
        const { info } = await this.provenInfo(stallMs);
        if (info.transferState !== TransferState.RECEIVING) {
          throw new CommandRefused(0, info.lastStatus === Status.OK ? Status.BAD_STATE : info.lastStatus);
        }
        idleEvents++;
        continue;
      }
      const offset = event.offset - base;
      if (offset > acked) {
        acked = Math.min(offset, length());
        source.release(acked);
        stalls = 0;
        idleEvents = 0;
        onProgress({ acked, total: source.length });
      } else {
        idleEvents++;
      }
      if (event.kind === 'resync') next = Math.max(offset, acked);
      if (next < acked) next = acked;
      if (acked >= length() && this.authenticated) {
        // ACKs carry no MAC: before END, the device's proven offset must agree
        // that it has everything (a forged ACK would otherwise cut the transfer short).
        acked = await this.resumeFromDevice(stallMs, base, length(), acked, onProgress, () => undefined);
        if (acked < length()) {
          // Only the proven offset counts as progress here: ACKs that keep
          // running ahead of the device (forged, or a device acknowledging
          // what it did not keep) would otherwise send the image for ever.
          if (acked > provenShort) {
            provenShort = acked;
            shortEnds = 0;
          }
          if (++shortEnds > 2) {
            throw new BleOtaError('GATT_TIMEOUT', `The device has ${base + acked} bytes, not all ${base + length()}, after sending the rest again twice.`);
          }
        }
        next = acked;
      }
    }
    return stats;
  }

  /**
   * Where the device is, from its proven OTA Info: its offset, in either
   * direction from what the ACKs said (they carry no MAC). Throws the
   * device's status when the transfer ended there.
   */
  private async resumeFromDevice(timeoutMs: number, base: number, length: number, acked: number, onProgress: (p: StreamProgress) => void, onAdvance: () => void): Promise<number> {
    const { info } = await this.provenInfo(timeoutMs);
    if (info.transferState !== TransferState.RECEIVING) {
      // The transfer ended on the device: a FAILED event that never arrived.
      throw new CommandRefused(0, info.lastStatus === Status.OK ? Status.BAD_STATE : info.lastStatus);
    }
    const offset = Math.max(0, Math.min(info.transferOffset - base, length));
    if (offset > acked) {
      onAdvance();
      onProgress({ acked: offset, total: Number.isFinite(length) ? length : undefined });
    }
    return offset;
  }

  /** Sends one OTA Stream packet (Write Command: nothing comes back). */
  sendPacket(offset: number, data: Buffer): void {
    this.chars.stream.write(encodeStreamPacket(offset, data), true);
  }

  /** The next ACK, RESYNC or FAILED event. */
  nextEvent(timeoutMs: number): Promise<StreamEvent> {
    return this.link.wait<StreamEvent>('an acknowledgement from the device', timeoutMs, (resolve) => {
      const take = () => {
        const e = this.events.shift();
        if (e) resolve(e);
      };
      this.wake = take;
      take();
      return () => {
        this.wake = undefined;
      };
    });
  }

  dispose(): void {
    this.chars.command.off('data', this.onData);
  }
}

/** LL payload of a data PDU with Data Length Extension, which most links use. */
const DLE_PDU = 251;
/** L2CAP (4) and ATT (3) headers of a Write Command. */
const WRITE_HEADERS = 7;

/**
 * The size of an OTA Stream value: the largest at most `limit` that fills
 * whole 251-byte PDUs. At MTU 517 a 514-byte value takes three PDUs, the
 * last nearly empty, where 495 bytes take two: about a third more firmware
 * per second on air (docs/PERFORMANCE.md). Below one PDU, the limit itself.
 */
export function streamValueSize(limit: number): number {
  const pdus = Math.floor((limit + WRITE_HEADERS) / DLE_PDU);
  return pdus >= 1 ? pdus * DLE_PDU - WRITE_HEADERS : limit;
}

function sameId(a: Buffer | undefined, b: Buffer | undefined): boolean {
  return a === undefined || b === undefined ? a === b : a.equals(b);
}
