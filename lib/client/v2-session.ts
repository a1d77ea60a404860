/**
 * Protocol v2 on one connection: OTA Command requests and their answers,
 * the device's ACK / RESYNC / FAILED events, and the windowed stream.
 */
import { DeviceError, ProtocolError } from '../errors';
import { AUTH_CHALLENGE_LEN, Command, Feature, Status, statusName, TransferState } from '../protocol/constants';
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
import { requestMac } from './auth';
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
  [Command.CHALLENGE]: 'CHALLENGE',
};

/** An answer whose status is not OK. */
export class CommandRefused extends Error {
  constructor(readonly opcode: number, readonly status: number, readonly body: Buffer = Buffer.alloc(0)) {
    super(`${COMMAND_NAMES[opcode] ?? opcode} answered ${statusName(status)}`);
  }
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
  private subscribed = false;

  constructor(
    readonly link: Link,
    private readonly chars: { info: NobleCharacteristic; command: NobleCharacteristic; stream: NobleCharacteristic },
    private readonly mtu: number,
    /** The device's pre-shared key (parsed), for devices that require one. */
    private readonly key?: Buffer,
  ) {
    chars.command.on('data', this.onData);
  }

  async readInfo(): Promise<DeviceInfoV2> {
    const value = await this.link.read(this.chars.info, 'OTA Info');
    let info: DeviceInfoV2;
    try {
      info = decodeInfo(value);
    } catch (err) {
      throw new ProtocolError('PROTOCOL_ERROR', `the device's OTA Info could not be read: ${(err as Error).message}`);
    }
    this.features = info.features;
    return info;
  }

  /** Subscribes to OTA Command, once per connection: answers come as notifications. */
  async subscribe(): Promise<void> {
    if (this.subscribed) return;
    await this.link.subscribe(this.chars.command, 'OTA Command notifications');
    this.subscribed = true;
  }

  /**
   * Writes a request and waits for its answer; throws CommandRefused unless
   * it is OK. On a device that requires authentication, a CHALLENGE goes
   * first and the request carries its MAC.
   */
  async request(opcode: number, value: Buffer, timeoutMs: number): Promise<Buffer> {
    const signed = await this.authenticate(value, timeoutMs);
    const answer = await this.exchange(opcode, signed, timeoutMs);
    if (answer.status !== Status.OK) throw new CommandRefused(opcode, answer.status, answer.body);
    return answer.body;
  }

  /** The request as the device takes it: with the MAC of a fresh challenge when the device requires one. */
  private async authenticate(value: Buffer, timeoutMs: number): Promise<Buffer> {
    if (this.features === undefined) await this.readInfo();
    if (((this.features ?? 0) & Feature.AUTH) === 0) return value;
    if (!this.key) {
      throw new DeviceError(
        'AUTH_REQUIRED',
        `${this.link.describe()} takes updates only from clients that know its key: set the key (64 hex digits, the device's CONFIG_BLE_OTA_AUTH_KEY) in the device's configuration`,
      );
    }
    const answer = await this.exchange(Command.CHALLENGE, Buffer.from([Command.CHALLENGE]), timeoutMs);
    if (answer.status !== Status.OK) throw new CommandRefused(Command.CHALLENGE, answer.status, answer.body);
    if (answer.body.length !== AUTH_CHALLENGE_LEN) {
      throw new ProtocolError('PROTOCOL_ERROR', `the device's challenge has ${answer.body.length} bytes, expected ${AUTH_CHALLENGE_LEN}`);
    }
    return Buffer.concat([value, requestMac(this.key, answer.body, value)]);
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
