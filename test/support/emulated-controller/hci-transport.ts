/**
 * The HCI transport of noble and bleno, swapped for an emulated controller.
 *
 * noble's and bleno's HCI code (`lib/hci-socket`) reach the adapter through
 * `@abandonware/bluetooth-hci-socket`, a native AF_BLUETOOTH socket. This
 * module stands in for that package only: every raw or user-channel socket
 * becomes a connection to btvirt's LE server socket, and so a controller of
 * its own, speaking the same H4-framed HCI packets. Everything above it
 * (noble's and bleno's HCI, L2CAP, ATT and GATT code) is the code users run.
 */
import { EventEmitter } from 'node:events';
import { connect, Socket } from 'node:net';

/** btvirt's LE server socket (fixed by btvirt). */
export const BTVIRT_LE_SOCKET = '/tmp/bt-server-le';

const H4_COMMAND = 0x01;
const H4_ACL = 0x02;
const H4_EVENT = 0x04;
const H4_ISO = 0x05;

/** Splits a byte stream into whole H4 packets (type byte, header, payload). */
export class H4Framer {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Buffer[] {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const packets: Buffer[] = [];
    for (;;) {
      const length = packetLength(this.pending);
      if (length === undefined || this.pending.length < length) break;
      packets.push(this.pending.subarray(0, length));
      this.pending = this.pending.subarray(length);
    }
    return packets;
  }
}

function packetLength(b: Buffer): number | undefined {
  if (b.length < 1) return undefined;
  switch (b[0]) {
    case H4_COMMAND:
      return b.length < 4 ? undefined : 4 + b[3];
    case H4_ACL:
      return b.length < 5 ? undefined : 5 + b.readUInt16LE(3);
    case H4_EVENT:
      return b.length < 3 ? undefined : 3 + b[2];
    case H4_ISO:
      return b.length < 5 ? undefined : 5 + (b.readUInt16LE(3) & 0x3fff);
    default:
      throw new Error(`emulated controller: unknown H4 packet type 0x${b[0].toString(16)}`);
  }
}

/**
 * The interface of `@abandonware/bluetooth-hci-socket` that noble and bleno
 * use, over a unix socket. `isDevUp()` is true once bound: an emulated
 * controller is always powered.
 */
export class UnixHciSocket extends EventEmitter {
  /** Every socket bound in this process, for tests that act on a controller directly. */
  static readonly open = new Set<UnixHciSocket>();
  private socket?: Socket;
  private readonly framer = new H4Framer();
  /** Packets read but not yet delivered: one goes up per turn of the event loop. */
  private readonly received: Buffer[] = [];
  private delivering = false;
  private paused = false;

  constructor(private readonly path: string = process.env.BLE_OTA_TEST_HCI_SOCKET || BTVIRT_LE_SOCKET) {
    super();
  }

  bindRaw(deviceId?: number): number {
    this.connect();
    return deviceId ?? 0;
  }

  bindUser(deviceId?: number): number {
    this.connect();
    return deviceId ?? 0;
  }

  /** bleno's management socket (keys of paired devices): unused on an unencrypted link. */
  bindControl(): void {}

  /** As the native socket's: packets flow, and the open socket keeps the process alive. */
  start(): void {
    this.paused = false;
    this.socket?.ref();
    this.socket?.resume();
    this.scheduleDelivery();
  }

  /** As the native socket's: no more packets, nothing keeps the process alive; the controller stays. */
  stop(): void {
    this.paused = true;
    this.socket?.pause();
    this.socket?.unref();
  }

  /** Closes the connection: btvirt removes the controller, and with it its links. */
  destroy(): void {
    this.socket?.destroy();
    this.socket = undefined;
    this.received.length = 0;
    UnixHciSocket.open.delete(this);
  }

  isDevUp(): boolean {
    return this.socket !== undefined;
  }

  /** The kernel's packet filter of a raw socket: the controller's socket has no kernel to filter. */
  setFilter(): void {}

  write(packet: Buffer): void {
    this.socket?.write(packet);
  }

  /** Sends an HCI packet to the controller behind the host's back (e.g. a command the host never sent). */
  inject(packet: Buffer): void {
    this.socket?.write(packet);
  }

  /**
   * The native socket reads one packet per poll callback, so the host's code
   * (and every promise it settles) runs to the end before the next packet
   * arrives. A stream chunk holds many packets: hand them up the same way,
   * one per macrotask, or the host sees an ordering no adapter produces.
   */
  private scheduleDelivery(): void {
    if (this.delivering || this.paused || this.received.length === 0) return;
    this.delivering = true;
    setImmediate(() => {
      this.delivering = false;
      if (this.paused || !this.socket) return;
      const packet = this.received.shift();
      if (packet) this.emit('data', packet);
      this.scheduleDelivery();
    });
  }

  private connect(): void {
    if (this.socket) return;
    UnixHciSocket.open.add(this);
    const socket = connect(this.path);
    socket.on('data', (chunk: Buffer) => {
      this.received.push(...this.framer.push(chunk));
      this.scheduleDelivery();
    });
    socket.on('error', (err) => this.emit('error', err));
    this.socket = socket;
  }
}

/**
 * Makes `require('@abandonware/bluetooth-hci-socket')`, from noble and
 * bleno alike, return UnixHciSocket. Call before either is loaded.
 */
export function installEmulatedHciTransport(): void {
  const id = require.resolve('@abandonware/bluetooth-hci-socket', {
    paths: [require.resolve('@abandonware/noble')],
  });
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- Module's constructor is not in its typed import
  const Module = require('node:module') as { new (id: string): NodeJS.Module };
  const entry = new Module(id);
  entry.filename = id;
  entry.loaded = true;
  entry.exports = UnixHciSocket;
  require.cache[id] = entry;
  // Modules of noble that an earlier attempt left loaded hold the native socket: load them again.
  for (const key of Object.keys(require.cache)) {
    if (/[\\/]@abandonware[\\/](noble|bleno)[\\/]/.test(key)) delete require.cache[key];
  }
}
