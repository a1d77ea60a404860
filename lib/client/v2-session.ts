/**
 * Protocol v2 on one connection: OTA Command requests and their answers,
 * the device's ACK / RESYNC / FAILED events, the windowed stream, and the
 * authenticated session on devices that require one (docs/PROTOCOL.md).
 */
import { DeviceError, ProtocolError } from '../errors';
import { ANSWER, AUTH_MAC_LEN, BEGIN_SIZE, Command, Feature, HELLO_SIZE, Status, statusName, TransferState } from '../protocol/constants';
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
import { deviceKey, formatDeviceId, Session } from './session';
import type { Link } from './link';
import type { NobleCharacteristic } from './noble-types';

type StreamEvent = Extract<CommandNotification, { kind: 'ack' | 'resync' | 'failed' }>;

const COMMAND_NAMES: Record<number, string> = {
  0: 'the transfer',
  [Command.BEGIN]: 'BEGIN',
  [Command.END]: 'END',
  [Command.RESTART]: 'RESTART',
  [Command.ABORT]: 'ABORT',
  [Command.CONFIRM]: 'CONFIRM',
  [Command.HELLO]: 'HELLO',
  [Command.INFO]: 'INFO',
};

/**
 * The smallest ATT MTU an authenticated session needs: BEGIN with its MAC
 * in one write, INFO's answer with its MAC in one notification.
 */
export const AUTH_MIN_MTU = Math.max(BEGIN_SIZE + AUTH_MAC_LEN, 2 + 32 + AUTH_MAC_LEN) + 3;

/** An answer whose status is not OK. */
export class CommandRefused extends Error {
  constructor(readonly opcode: number, readonly status: number, readonly body: Buffer = Buffer.alloc(0)) {
    super(`${COMMAND_NAMES[opcode] ?? opcode} answered ${statusName(status)}`);
  }
}

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
}

/** OTA Info, and whether the device proved it (a session MAC over its digest). */
export interface ProvenInfo {
  info: DeviceInfoV2;
  authenticated: boolean;
}

export interface StreamProgress {
  acked: number;
  total: number;
}

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

  /** Reads and decodes OTA Info; keeps what later requests need (features, device id). */
  private async readInfoValue(): Promise<{ value: Buffer; info: DeviceInfoV2 }> {
    const value = await this.link.read(this.chars.info, 'OTA Info');
    let info: DeviceInfoV2;
    try {
      info = decodeInfo(value);
    } catch (err) {
      throw new ProtocolError('PROTOCOL_ERROR', `The device's OTA Info could not be read: ${(err as Error).message}.`);
    }
    this.features = info.features;
    this.deviceId = info.deviceId;
    return { value, info };
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
        throw new DeviceError(
          'AUTH_REQUIRED',
          `${this.link.describe()} takes updates only from its owner: give the fleet secret its key was derived from (the device node's Fleet secret, or the CLI's --secret-file).`,
        );
      }
      return true;
    }
    if (this.policy.secret && !this.policy.allowUnauthenticated) {
      throw new DeviceError(
        'DEVICE_NOT_AUTHENTICATED',
        `${this.link.describe()} cannot prove it is your device: its firmware has no authentication (a development build, or another device using its name). Nothing was sent. Flash firmware with a provisioned key, or allow unauthenticated devices in the device node.`,
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
    const answer = await this.exchange(opcode, sealed.value, timeoutMs);
    const raw = Buffer.concat([Buffer.from([opcode | ANSWER, answer.status]), answer.body]);
    const proven = session.verify(raw, sealed.seq);
    if (proven) {
      if (proven[1] !== Status.OK) throw new CommandRefused(opcode, proven[1], proven.subarray(2));
      return proven.subarray(2);
    }
    // Refusals of a request that did not authenticate carry no MAC: the
    // device could not make one. Anything else must have one.
    if (answer.status === Status.AUTH_FAILED || answer.status === Status.AUTH_LOCKED || answer.status === Status.AUTH_REQUIRED) {
      throw new CommandRefused(opcode, answer.status, answer.body);
    }
    throw new DeviceError(
      'DEVICE_NOT_AUTHENTICATED',
      `${this.link.describe()} answered ${COMMAND_NAMES[opcode] ?? opcode} without proof that it holds the key for device ${this.deviceId ? formatDeviceId(this.deviceId) : '?'}: another device may be answering in its place. Nothing it said was taken.`,
    );
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
      await this.link.wait('the device\'s authentication lock', answer.body.readUInt32LE(0) + 50, () => undefined).catch((err: unknown) => {
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
   * answer to opcode, whatever its status.
   */
  async exchange(opcode: number, value: Buffer, timeoutMs: number): Promise<{ status: number; body: Buffer }> {
    const name = COMMAND_NAMES[opcode] ?? `command 0x${opcode.toString(16)}`;
    // A request on a new connection (a recovery) must not wait for an answer nobody subscribed to.
    await this.subscribe();
    // Answers to earlier requests that nobody awaited (e.g. after a timeout) are stale.
    this.answers.length = 0;
    await this.link.write(this.chars.command, value, name);
    const answer = await this.link.wait<{ status: number; body: Buffer }>(`the answer to ${name}`, timeoutMs, (resolve) => {
      const take = () => {
        const i = this.answers.findIndex((a) => a.opcode === opcode);
        if (i >= 0) resolve(this.answers.splice(i, 1)[0]);
      };
      this.wake = take;
      take();
      return () => {
        this.wake = undefined;
      };
    });
    return answer;
  }

  async begin(req: BeginRequest, timeoutMs: number): Promise<BeginAnswer> {
    const body = await this.request(Command.BEGIN, encodeBegin(req), timeoutMs);
    return decodeBeginAnswer(body);
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
    image: Buffer,
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
    let stalls = 0;
    while (acked < image.length) {
      while (next < image.length && next - acked < window) {
        const end = Math.min(next + chunk, image.length);
        this.link.check();
        this.sendPacket(base + next, image.subarray(next, end));
        stats.packets++;
        if (end <= highest) stats.resent++;
        highest = Math.max(highest, end);
        next = end;
      }
      let event: StreamEvent;
      try {
        event = await this.nextEvent(stallMs);
      } catch (err) {
        if ((err as { code?: string }).code !== 'GATT_TIMEOUT' || ++stalls > 2) throw err;
        const info = await this.readInfo();
        if (info.transferState !== TransferState.RECEIVING) {
          // The transfer ended on the device: a FAILED event that never arrived.
          throw new CommandRefused(0, info.lastStatus === Status.OK ? Status.BAD_STATE : info.lastStatus);
        }
        if (info.transferOffset - base > acked) {
          acked = Math.min(info.transferOffset - base, image.length);
          onProgress({ acked, total: image.length });
        }
        next = acked; // send again from what the device has
        continue;
      }
      if (event.kind === 'failed') throw new CommandRefused(0, event.status); // the device aborted the transfer
      stalls = 0;
      const offset = event.offset - base;
      if (offset > acked) {
        acked = Math.min(offset, image.length);
        onProgress({ acked, total: image.length });
      }
      if (event.kind === 'resync') next = Math.max(offset, acked);
      if (next < acked) next = acked;
    }
    return stats;
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
