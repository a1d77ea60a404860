/**
 * A virtual ESP32 in a process of its own, for measuring the central's
 * process alone (`npm run bench`, the Node side). In-process, the virtual
 * device's driver (its line protocol to the firmware core's process: hex
 * encoding every packet, parsing every answer) runs on the client's CPU and
 * would be counted as the client's. Here that driver runs in a host process
 * (this file run as a script), and the client's process keeps only the
 * virtual bindings (noble's side, standing for noble's HCI bindings) and a
 * proxy that hands each request over a pipe in a small binary frame, as
 * noble hands each packet to an HCI socket.
 *
 * Frames, each a u32 length then the body:
 *   to the host:   u32 id, u8 op (OP), the op's fields
 *   to the client: u8 kind (KIND), the kind's fields
 */
import { ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { AttError, LostRequestError, VirtualDeviceOptions, VirtualEsp32 } from '../lib/virtual/virtual-device';

const OP = { connect: 1, disconnect: 2, read: 3, write: 4, writeCmd: 5, subscribe: 6 } as const;
const KIND = { info: 0, ok: 1, lost: 2, att: 3, notify: 4, disconnected: 5, flash: 6 } as const;
const REQUEST_WORD: Record<number, string> = { 1: 'connect', 2: 'disconnect', 3: 'read', 4: 'write', 5: 'write-cmd', 6: 'subscribe' };

/** The characteristics as the virtual bindings read them from a VirtualEsp32. */
interface DeviceInfo {
  name: string;
  address: string;
  mtu: number;
  advertisedServices: string[];
  services: string[];
  characteristics: VirtualEsp32['characteristics'];
}

const queued = new Map<Writable, Buffer[]>();

/**
 * Queues a frame; the frames of one turn of the event loop (a window of
 * packets) go in one write. One pipe write per packet would cost more than
 * the client's own work per packet and measure the pipe, not the client.
 */
function writeFrame(out: Writable, head: Buffer, data?: Buffer): void {
  const length = Buffer.allocUnsafe(4);
  length.writeUInt32LE(head.length + (data?.length ?? 0), 0);
  let frames = queued.get(out);
  if (!frames) {
    frames = [];
    queued.set(out, frames);
    process.nextTick(() => {
      queued.delete(out);
      out.write(Buffer.concat(frames!));
    });
  }
  frames.push(length, head);
  if (data) frames.push(data);
}

/** Calls `onFrame` with each frame's body read from `input`. */
function readFrames(input: Readable, onFrame: (body: Buffer) => void): void {
  let pending: Buffer = Buffer.alloc(0);
  input.on('data', (data: Buffer) => {
    pending = pending.length ? Buffer.concat([pending, data]) : data;
    let at = 0;
    while (pending.length - at >= 4) {
      const length = pending.readUInt32LE(at);
      if (pending.length - at - 4 < length) break;
      onFrame(pending.subarray(at + 4, at + 4 + length));
      at += 4 + length;
    }
    pending = pending.subarray(at);
  });
}

/**
 * Stands for a VirtualEsp32 towards VirtualBindings (what addDevice() reads
 * and calls: its identity, services, characteristics, connect, disconnect,
 * read, write, subscribe, and its events).
 */
export class RemoteDevice extends EventEmitter {
  private nextId = 1;
  private readonly pending = new Map<number, { op: number; resolve(value: Buffer): void; reject(err: Error): void }>();
  private info!: DeviceInfo;

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    super();
  }

  static start(options: VirtualDeviceOptions): Promise<RemoteDevice> {
    const child = spawn(process.execPath, [__filename, JSON.stringify(options)], { stdio: ['pipe', 'pipe', 'pipe'] });
    const device = new RemoteDevice(child);
    return new Promise((resolve, reject) => {
      const stderr: string[] = [];
      child.stderr.setEncoding('utf8').on('data', (s: string) => stderr.push(s));
      child.on('exit', (code) => {
        for (const p of device.pending.values()) p.reject(new Error('the device host exited'));
        device.pending.clear();
        reject(new Error(`device host exited (${code}): ${stderr.join('')}`));
        device.emit('exit', code);
      });
      readFrames(child.stdout, (body) => {
        if (body[0] === KIND.info) {
          device.info = JSON.parse(body.subarray(1).toString()) as DeviceInfo;
          resolve(device);
        } else device.onFrame(body);
      });
    });
  }

  get name(): string {
    return this.info.name;
  }
  get address(): string {
    return this.info.address;
  }
  get mtu(): number {
    return this.info.mtu;
  }
  get advertisedServices(): string[] {
    return this.info.advertisedServices;
  }
  get services(): string[] {
    return this.info.services;
  }
  get characteristics(): VirtualEsp32['characteristics'] {
    return this.info.characteristics;
  }

  async connect(centralMtu: number): Promise<number> {
    const head = Buffer.allocUnsafe(2);
    head.writeUInt16LE(centralMtu, 0);
    return (await this.request(OP.connect, head)).readUInt16LE(0);
  }
  async disconnect(): Promise<void> {
    await this.request(OP.disconnect);
  }
  read(uuid: string): Promise<Buffer> {
    return this.request(OP.read, Buffer.of(this.index(uuid)));
  }
  async write(uuid: string, data: Buffer, withoutResponse: boolean): Promise<void> {
    await this.request(withoutResponse ? OP.writeCmd : OP.write, Buffer.of(this.index(uuid)), data);
  }
  async subscribe(uuid: string, enable: boolean): Promise<void> {
    await this.request(OP.subscribe, Buffer.of(this.index(uuid), enable ? 1 : 0));
  }

  /** Ends the host (and the firmware core's process under it). */
  stop(): Promise<void> {
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.stdin.end();
    return exited;
  }

  private index(uuid: string): number {
    return this.info.characteristics.findIndex((c) => c.uuid === uuid);
  }

  private request(op: number, fields = Buffer.alloc(0), data?: Buffer): Promise<Buffer> {
    const id = this.nextId++;
    const head = Buffer.allocUnsafe(5 + fields.length);
    head.writeUInt32LE(id, 0);
    head[4] = op;
    fields.copy(head, 5);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { op, resolve, reject });
      writeFrame(this.child.stdin, head, data);
    });
  }

  private onFrame(body: Buffer): void {
    const kind = body[0];
    if (kind === KIND.ok || kind === KIND.lost || kind === KIND.att) {
      const id = body.readUInt32LE(1);
      const p = this.pending.get(id);
      if (!p) return;
      this.pending.delete(id);
      // As a VirtualEsp32 does: 'reply' first, synchronously, then the promise settles.
      const word = REQUEST_WORD[p.op];
      this.emit('reply', word);
      if (kind === KIND.ok) p.resolve(body.subarray(5));
      else if (kind === KIND.lost) p.reject(new LostRequestError(word));
      else p.reject(new AttError(body[5], word));
    } else if (kind === KIND.notify) {
      this.emit('notify', this.info.characteristics[body[1]].uuid, body.subarray(2));
    } else if (kind === KIND.disconnected) {
      this.emit('disconnected', body[1]);
    } else if (kind === KIND.flash) {
      this.emit('flash', body.readUInt32LE(1), body.readUInt32LE(5), body.readUInt32LE(9));
    }
  }
}

/** The host: a VirtualEsp32, driven by the frames on stdin, answering on stdout. */
async function host(options: VirtualDeviceOptions): Promise<void> {
  const device = await VirtualEsp32.start(options);
  const out = process.stdout;
  const chars = device.characteristics;
  const info: DeviceInfo = {
    name: device.name,
    address: device.address,
    mtu: device.mtu,
    advertisedServices: device.advertisedServices,
    services: device.services,
    characteristics: chars,
  };
  writeFrame(out, Buffer.concat([Buffer.of(KIND.info), Buffer.from(JSON.stringify(info))]));
  device.on('notify', (uuid: string, data: Buffer) =>
    writeFrame(
      out,
      Buffer.of(
        KIND.notify,
        chars.findIndex((c) => c.uuid === uuid),
      ),
      data,
    ),
  );
  device.on('disconnected', (reason: number) => writeFrame(out, Buffer.of(KIND.disconnected, reason)));
  device.on('flash', (erases: number, pages: number, blocks: number) => {
    const head = Buffer.allocUnsafe(13);
    head[0] = KIND.flash;
    head.writeUInt32LE(erases, 1);
    head.writeUInt32LE(pages, 5);
    head.writeUInt32LE(blocks, 9);
    writeFrame(out, head);
  });
  const answer = (id: number, request: Promise<Buffer | undefined>) => {
    const head = Buffer.allocUnsafe(6);
    head.writeUInt32LE(id, 1);
    head[5] = 0;
    request.then(
      (value) => {
        head[0] = KIND.ok;
        writeFrame(out, head.subarray(0, 5), value);
      },
      (err: unknown) => {
        head[0] = err instanceof LostRequestError ? KIND.lost : KIND.att;
        if (err instanceof AttError) head[5] = err.attCode;
        writeFrame(out, head);
      },
    );
  };
  readFrames(process.stdin, (body) => {
    const id = body.readUInt32LE(0);
    const op = body[4];
    const uuid = () => chars[body[5]].uuid;
    switch (op) {
      case OP.connect:
        answer(
          id,
          device.connect(body.readUInt16LE(5)).then((mtu) => {
            const value = Buffer.allocUnsafe(2);
            value.writeUInt16LE(mtu, 0);
            return value;
          }),
        );
        break;
      case OP.disconnect:
        answer(
          id,
          device.disconnect().then(() => undefined),
        );
        break;
      case OP.read:
        answer(id, device.read(uuid()));
        break;
      case OP.write:
      case OP.writeCmd:
        answer(
          id,
          device.write(uuid(), body.subarray(6), op === OP.writeCmd).then(() => undefined),
        );
        break;
      case OP.subscribe:
        answer(
          id,
          device.subscribe(uuid(), body[6] === 1).then(() => undefined),
        );
        break;
    }
  });
  process.stdin.on('end', () => void device.stop().then(() => process.exit(0)));
}

if (require.main === module) {
  host(JSON.parse(process.argv[2] ?? '{}') as VirtualDeviceOptions).catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
