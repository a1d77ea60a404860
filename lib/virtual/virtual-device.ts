/**
 * One virtual ESP32: a child process running the firmware's OTA core on the
 * host (firmware/host/virtual_esp32.c), driven through the line protocol of
 * docs/VIRTUAL_ESP32.md.
 */
import { ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { keyPartition, parseDeviceId, parseSecret } from '../client/session';
import { buildAppImage } from '../image/app-image-builder';
import { knownChips } from '../image/esp-chips';
import { parseEspImage } from '../image/esp-image';
import { sampleImage } from '../image/sample-image';
import { signImage } from '../image/signature';
import { ensureVirtualEsp32 } from './build';

export interface VirtualDeviceOptions {
  /** Advertised name (default "esp32"). */
  name?: string;
  /** Public address, "aa:bb:cc:dd:ee:ff" (default: derived from the name). */
  address?: string;
  /** App image the device runs from ota_0 at first boot (default: virtualFirstImage()). */
  image?: string;
  /** Size of each OTA slot in bytes. */
  slotSize?: number;
  /** The device's preferred ATT MTU (default 517). */
  mtu?: number;
  /** Delay between DONE_ACK / RESTART and the restart (default 500 ms). */
  restartDelayMs?: number;
  /** `seed`: serve only the seed protocol, as a device running the seed's firmware (default: both). */
  protocol?: 'seed' | 'v2';
  /** ESP image chip id of the device (default 0, ESP32). */
  chipId?: number;
  /** v2 window in bytes (default 32768). */
  window?: number;
  /** A suspended v2 transfer is aborted after this (default 60 s). */
  abandonTimeoutMs?: number;
  /** A new image awaiting CONFIRM is rolled back after this (default 300 s). */
  confirmWindowMs?: number;
  /**
   * The owner's fleet secret (64 hex digits, or 32 bytes): the device is
   * provisioned with the key derived from it and its device id, as
   * `esp32-ble-ota provision` and esptool do for a real one, and takes
   * requests only in an authenticated session (docs/PROTOCOL.md).
   */
  fleetSecret?: string | Buffer;
  /**
   * Without a key: take updates from anyone (a build with
   * CONFIG_BLE_OTA_ALLOW_UNAUTHENTICATED). Default: true without
   * fleetSecret. False and no key: the device refuses every update
   * (NOT_PROVISIONED), as our default build does until provisioned.
   */
  allowUnauthenticated?: boolean;
  /** The device id, its factory MAC ("aa:bb:cc:dd:ee:ff"; default: its address). */
  deviceId?: string;
  /**
   * The owner's signing key (a private key PEM, RSA-3072 or ECDSA P-256):
   * the device's first image is signed with it, and the device installs
   * only images signed with the same key, as our firmware's default build
   * (ESP-IDF signed-app verification). Without it the device takes
   * unsigned images, as a build that opted out.
   */
  signingKey?: string;
  /**
   * With signingKey: the first image goes unsigned, as an unsigned build
   * flashed over USB to a device whose build verifies signatures. It trusts
   * no key and refuses every update at BEGIN (docs/PROTOCOL.md, Signed images).
   */
  firstImageUnsigned?: boolean;
  /** Serve the seed protocol (default: off with authentication, as our firmware's default build; on without). */
  seedProtocol?: boolean;
  /** Report each request's flash work ('flash' events: sector erases, page programs), for the flash model. */
  flashEvents?: boolean;
  /** false: a platform that cannot inflate (OTA Info without DEFLATE). Default true. */
  deflate?: boolean;
  /**
   * 'manual': a new image's self-test (on the ESP32, the firmware's checks
   * and then the application's own, ble_ota_app_healthy) waits for
   * selfTest() instead of passing as the device boots; until then the image
   * runs pending verify and CONFIRM answers BAD_STATE. Default 'auto'.
   */
  selfTest?: 'auto' | 'manual';
  /**
   * With selfTest 'manual': a new image that has no verdict after this many
   * ms (real time) fails its self-test and is rolled back, as the firmware
   * does after CONFIG_BLE_OTA_APP_CHECK_TIMEOUT_S. Default 20000.
   */
  selfTestTimeoutMs?: number;
  /**
   * false: a platform that cannot read its running slot: OTA Info without
   * DELTA and without the running image's SHA-256, BEGIN refuses PATCH. Default true.
   */
  delta?: boolean;
  /**
   * The RSSI the central's controller reports for the device's
   * advertisements, in dBm (default -50); 127 is its "not available".
   * Used by the radio (VirtualBindings), not by the device.
   */
  rssi?: number;
}

/** What the device received since it started (ATT operations and stream bytes). */
export interface VirtualDeviceStats {
  writes: number;
  writeCmds: number;
  reads: number;
  notifies: number;
  streamBytes: number;
}

export interface VirtualCharacteristic {
  service: string;
  uuid: string;
  properties: string[];
}

export type SlotState = 'empty' | 'new' | 'pending-verify' | 'valid' | 'invalid' | 'aborted';

export interface VirtualDeviceState {
  running: string;
  boot: string;
  slots: Record<string, { state: SlotState; size: number }>;
  transfer: string;
  /** The running image waits for a client's CONFIRM. */
  confirm: boolean;
}

/**
 * What the firmware asked of its link on the current connection (the
 * `link-request` events of docs/VIRTUAL_ESP32.md), as NimBLE would have
 * asked the central: for the central the bindings play to answer with
 * setLink(). Undefined until asked.
 */
export interface VirtualLinkRequests {
  /** Data length (LL payload octets and time) and the PHY it prefers. */
  dataPath?: { txOctets: number; txTimeUs: number; phy: '1M' | '2M' };
  /** Connection parameters, in ms, and why (a transfer runs, or it ended or stalled). */
  connParams?: { profile: 'transfer' | 'idle'; intervalMinMs: number; intervalMaxMs: number; latency: number; supervisionTimeoutMs: number };
}

/**
 * The link as the central's controller set it, for setLink(): what the
 * firmware then reports in OTA Info. Directions are the central's to the
 * device and back.
 */
export interface VirtualLink {
  intervalMs: number;
  latency: number;
  supervisionTimeoutMs: number;
  phy: { toDevice: '1M' | '2M' | 'Coded'; fromDevice: '1M' | '2M' | 'Coded' };
  dataLength: { toDevice: number; fromDevice: number };
}

const PHY_VALUE = { '1M': 1, '2M': 2, Coded: 3 } as const;

/** A fault the virtual device can inject (docs/VIRTUAL_ESP32.md, Fault injection). */
export type VirtualFault =
  /** The n-th next flash write (firmware data or OTA data) fails. */
  | { kind: 'flash-write-fail'; after: number }
  /** The power is cut during the n-th next flash operation; the device boots again. */
  | { kind: 'power-loss-after'; flashOps: number }
  /** The next n notifications are lost on air. */
  | { kind: 'drop-notify'; count: number }
  /** The next n attempts to send a notification find no buffer (the firmware's retries decide whether it is lost). */
  | { kind: 'no-buffer'; count: number }
  /** The next n requests of that kind are lost on air: nothing comes back. */
  | { kind: 'no-answer'; request: 'connect' | 'read' | 'write' | 'write-cmd' | 'subscribe'; count: number }
  /** Now, one bit of a slot flips under the firmware (a cell that lost its charge); not armed, so `clear` does not undo it. */
  | { kind: 'bit-rot'; slot: 'ota_0' | 'ota_1'; offset: number }
  | { kind: 'clear' };

/** A request an injected fault lost on air: the device never answered it. */
export class LostRequestError extends Error {
  constructor(readonly request: string) {
    super(`${request} was lost on air (injected fault)`);
  }
}

/** An ATT error returned by the virtual device. */
export class AttError extends Error {
  constructor(
    readonly attCode: number,
    request: string,
  ) {
    super(`ATT error 0x${attCode.toString(16).padStart(2, '0')} on ${request}`);
  }
}

interface Pending {
  request: string;
  resolve(value: string): void;
  reject(err: Error): void;
}

/**
 * Events: 'notify' (uuid, data), 'disconnected' (reason), 'boot' (slot,
 * state), 'log' (level, text), 'exit' (code), 'reply' (request word, as
 * each reply arrives, before its promise settles), 'link-request'
 * (VirtualLinkRequests, each time the firmware asks something of the link),
 * and with flashEvents 'flash'
 * (sector erases, page programs, 64 KB block erases) before the reply of the request that did them.
 */
export class VirtualEsp32 extends EventEmitter {
  name = '';
  address = '';
  mtu = 0;
  readonly advertisedServices: string[] = [];
  readonly services: string[] = [];
  readonly characteristics: VirtualCharacteristic[] = [];
  /** Log lines kept for tests and diagnostics (the most recent 500). */
  readonly logs: string[] = [];
  /**
   * What the firmware asked of the link on the current connection (reset
   * at connect). The virtual link does not change by itself: a central
   * that grants a request answers with setLink().
   */
  linkRequests: VirtualLinkRequests = {};

  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private exited = false;

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    super();
  }

  /** Starts a virtual device and resolves once it advertises. */
  static async start(options: VirtualDeviceOptions = {}): Promise<VirtualEsp32> {
    const binary = await ensureVirtualEsp32();
    const name = options.name ?? 'esp32';
    const args = ['--name', name, '--address', options.address ?? addressFromName(name)];
    if (options.slotSize) args.push('--slot-size', String(options.slotSize));
    if (options.mtu) args.push('--mtu', String(options.mtu));
    if (options.restartDelayMs !== undefined) args.push('--restart-delay-ms', String(options.restartDelayMs));
    if (options.protocol) args.push('--protocol', options.protocol);
    if (options.chipId !== undefined) args.push('--chip-id', String(options.chipId));
    if (options.window !== undefined) args.push('--window', String(options.window));
    if (options.abandonTimeoutMs !== undefined) args.push('--abandon-timeout-ms', String(options.abandonTimeoutMs));
    if (options.confirmWindowMs !== undefined) args.push('--confirm-window-ms', String(options.confirmWindowMs));
    if (options.seedProtocol !== undefined) args.push('--seed-protocol', options.seedProtocol ? 'on' : 'off');
    if (options.flashEvents) args.push('--flash-events', 'on');
    if (options.deflate === false) args.push('--deflate', 'off');
    if (options.delta === false) args.push('--delta', 'off');
    if (options.selfTest === 'manual') args.push('--self-test', 'manual');
    if (options.selfTestTimeoutMs !== undefined) args.push('--self-test-timeout-ms', String(options.selfTestTimeoutMs));
    const address = args[3];
    const deviceId = parseDeviceId(options.deviceId ?? address);
    args.push('--device-id', [...deviceId].map((b) => b.toString(16).padStart(2, '0')).join(':'));
    args.push('--allow-unauthenticated', (options.allowUnauthenticated ?? options.fleetSecret === undefined) ? 'on' : 'off');
    args.push('--require-signature', options.signingKey ? 'on' : 'off');

    // What a factory writes over USB (the key partition, the first image)
    // goes through files in a private folder, gone once the device has read them.
    const dir = mkdtempSync(join(tmpdir(), 'ble-ota-device-'));
    try {
      if (options.fleetSecret !== undefined) {
        const file = join(dir, 'key-partition.bin');
        writeFileSync(file, keyPartition(parseSecret(options.fleetSecret), deviceId), { mode: 0o600 });
        args.push('--key-partition', file);
      }
      const first = options.image && !options.signingKey ? undefined : firstImage(options);
      if (first) {
        const file = join(dir, 'first-image.bin');
        writeFileSync(file, first, { mode: 0o600 });
        args.push('--image', file);
      } else if (options.image) {
        args.push('--image', options.image);
      }
      const child = spawn(binary, args, { stdio: ['pipe', 'pipe', 'pipe'] });
      const device = new VirtualEsp32(child);
      await device.attach();
      return device;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  private attach(): Promise<void> {
    return new Promise((resolve, reject) => {
      let ready = false;
      const stderr: string[] = [];
      this.child.stderr.setEncoding('utf8');
      this.child.stderr.on('data', (chunk: string) => stderr.push(chunk));
      this.child.on('error', (err) => {
        if (!ready) reject(err);
      });
      this.child.on('exit', (code) => {
        this.exited = true;
        const err = new Error(`virtual ESP32 ${this.name} exited (code ${code}) ${stderr.join('').trim()}`);
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
        if (!ready) reject(err);
        this.emit('exit', code);
      });
      const lines = createInterface({ input: this.child.stdout, crlfDelay: Infinity });
      lines.on('line', (line) => {
        if (!ready) {
          if (this.onStartupLine(line)) {
            ready = true;
            resolve();
          }
          return;
        }
        this.onLine(line);
      });
    });
  }

  /** Returns true on "ready". */
  private onStartupLine(line: string): boolean {
    const f = line.split(' ');
    switch (f[0]) {
      case 'dev':
        this.address = f[1];
        this.name = f[2];
        this.mtu = Number(f[3]);
        break;
      case 'adv':
        this.advertisedServices.push(f[1]);
        break;
      case 'svc':
        this.services.push(f[1]);
        break;
      case 'chr':
        this.characteristics.push({ service: f[1], uuid: f[2], properties: f[3].split(',') });
        break;
      case 'ready':
        return true;
      default:
        this.onLine(line);
    }
    return false;
  }

  private onLine(line: string): void {
    const space = line.indexOf(' ');
    const head = space < 0 ? line : line.slice(0, space);
    const rest = space < 0 ? '' : line.slice(space + 1);
    if (/^\d+$/.test(head)) {
      const id = Number(head);
      const p = this.pending.get(id);
      if (!p) return;
      this.pending.delete(id);
      // Synchronously, in order: what follows on stdout belongs to the next request.
      this.emit('reply', p.request);
      const [status, value = ''] = splitOnce(rest);
      if (status === 'ok') p.resolve(value);
      else if (status === 'lost') p.reject(new LostRequestError(p.request));
      else p.reject(new AttError(parseInt(value, 16), p.request));
      return;
    }
    const [a, b = ''] = splitOnce(rest);
    switch (head) {
      case 'notify':
        this.emit('notify', a, fromHex(b));
        break;
      case 'disconnected':
        this.emit('disconnected', parseInt(a, 16));
        break;
      case 'flash': {
        const [pages, blocks = '0'] = splitOnce(b);
        this.emit('flash', Number(a), Number(pages), Number(blocks));
        break;
      }
      case 'flash-idle': {
        // Idle work (idle()): no request's, so a flash model charges it to no request.
        const [pages, blocks = '0'] = splitOnce(b);
        this.emit('flash-idle', Number(a), Number(pages), Number(blocks));
        break;
      }
      case 'boot':
        this.emit('boot', a, b);
        break;
      case 'link-request':
        this.onLinkRequest(a, b.split(' '));
        break;
      case 'log':
        this.logs.push(rest);
        if (this.logs.length > 500) this.logs.shift();
        this.emit('log', a, b);
        break;
      default:
        break;
    }
  }

  /** `link-request data-path <octets> <time> <2m|1m>` or `link-request conn-params <profile> <min> <max> <latency> <timeout>`. */
  private onLinkRequest(kind: string, f: string[]): void {
    if (kind === 'data-path') {
      this.linkRequests.dataPath = { txOctets: Number(f[0]), txTimeUs: Number(f[1]), phy: f[2] === '2m' ? '2M' : '1M' };
    } else if (kind === 'conn-params') {
      this.linkRequests.connParams = {
        profile: f[0] === 'transfer' ? 'transfer' : 'idle',
        intervalMinMs: Number(f[1]) * 1.25,
        intervalMaxMs: Number(f[2]) * 1.25,
        latency: Number(f[3]),
        supervisionTimeoutMs: Number(f[4]) * 10,
      };
    } else {
      return;
    }
    this.emit('link-request', { ...this.linkRequests });
  }

  private request(line: string): Promise<string> {
    if (this.exited) return Promise.reject(new Error(`virtual ESP32 ${this.name} is not running`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { request: line.split(' ')[0], resolve, reject });
      this.child.stdin.write(`${id} ${line}\n`);
    });
  }

  /**
   * A central connects; resolves with the negotiated ATT MTU. The link
   * starts as noble's HCI bindings open one (7.5 ms, latency 0, 420 ms,
   * LE 1M, 27-octet PDUs) until setLink() says otherwise.
   */
  async connect(centralMtu: number): Promise<number> {
    this.linkRequests = {};
    return Number(await this.request(`connect ${centralMtu}`));
  }

  /**
   * The central's controller changed the link (a connection update, a PHY
   * update, a data length change): the firmware reports it from now on,
   * as NimBLE's events tell it on an ESP32. Needs a connected central.
   */
  async setLink(link: VirtualLink): Promise<void> {
    const units = (ms: number, unit: number) => Math.round(ms / unit);
    await this.request(
      [
        'link',
        units(link.intervalMs, 1.25),
        link.latency,
        units(link.supervisionTimeoutMs, 10),
        PHY_VALUE[link.phy.fromDevice],
        PHY_VALUE[link.phy.toDevice],
        link.dataLength.fromDevice,
        link.dataLength.toDevice,
      ].join(' '),
    );
  }

  async disconnect(): Promise<void> {
    await this.request('disconnect');
  }

  async read(uuid: string): Promise<Buffer> {
    return fromHex(await this.request(`read ${uuid}`));
  }

  async write(uuid: string, data: Buffer, withoutResponse: boolean): Promise<void> {
    await this.request(`${withoutResponse ? 'write-cmd' : 'write'} ${uuid} ${toHex(data)}`);
  }

  async subscribe(uuid: string, enable: boolean): Promise<void> {
    await this.request(`subscribe ${uuid} ${enable ? 1 : 0}`);
  }

  /** Cuts power: the link drops, RAM is lost, the device boots again. */
  async powerCycle(): Promise<void> {
    await this.request('power-cycle');
  }

  async state(): Promise<VirtualDeviceState> {
    const kv = parsePairs(await this.request('state'));
    const slots: VirtualDeviceState['slots'] = {};
    for (const slot of ['ota_0', 'ota_1']) {
      const [state, size] = (kv.get(slot) ?? 'empty:0').split(':');
      slots[slot] = { state: state as SlotState, size: Number(size) };
    }
    return {
      running: kv.get('running') ?? '',
      boot: kv.get('boot') ?? '',
      slots,
      transfer: kv.get('transfer') ?? '',
      confirm: kv.get('confirm') === '1',
    };
  }

  async stats(): Promise<VirtualDeviceStats> {
    const kv = parsePairs(await this.request('stats'));
    const n = (k: string) => Number(kv.get(k) ?? 0);
    return { writes: n('writes'), writeCmds: n('write-cmds'), reads: n('reads'), notifies: n('notifies'), streamBytes: n('stream-bytes') };
  }

  /** Arms a fault (docs/VIRTUAL_ESP32.md, Fault injection). */
  async fault(fault: VirtualFault): Promise<void> {
    switch (fault.kind) {
      case 'flash-write-fail':
        await this.request(`fault flash-write-fail ${fault.after}`);
        break;
      case 'power-loss-after':
        await this.request(`fault power-loss-after ${fault.flashOps}`);
        break;
      case 'drop-notify':
        await this.request(`fault drop-notify ${fault.count}`);
        break;
      case 'no-buffer':
        await this.request(`fault no-buffer ${fault.count}`);
        break;
      case 'no-answer':
        await this.request(`fault no-answer ${fault.request} ${fault.count}`);
        break;
      case 'bit-rot':
        await this.request(`fault bit-rot ${fault.slot} ${fault.offset}`);
        break;
      case 'clear':
        await this.request('fault clear');
        break;
    }
  }

  /** How many injected faults took effect since the device started. */
  async faultsHit(): Promise<number> {
    return Number(parsePairs(await this.request('faults')).get('hit') ?? 0);
  }

  /**
   * The device has time with nothing to do, as the firmware's OTA task has
   * whenever its queue is empty: its idle work (the next update's slot
   * erased a step at a time: a 64 KB block without a client, a 4 KB sector
   * with one), up to `steps` steps (0: until nothing is left). Resolves with
   * the erase steps done and whether more is left.
   */
  async idle(steps = 0): Promise<{ steps: number; more: boolean }> {
    const kv = parsePairs(await this.request(steps > 0 ? `idle ${steps}` : 'idle'));
    return { steps: Number(kv.get('steps') ?? 0), more: kv.get('more') === '1' };
  }

  /**
   * The application's verdict on the new image it runs (selfTest 'manual'):
   * passed, the firmware confirms it (or, where the update asked for it,
   * leaves it to the client's CONFIRM); failed, it rolls it back and
   * restarts. Resolves with the state of the image it runs then: 'valid',
   * 'pending-verify' (waiting for CONFIRM) or 'invalid' (rolled back, about
   * to restart). Refused when no self-test waits.
   */
  async selfTest(passed: boolean): Promise<SlotState> {
    return (await this.request(`self-test ${passed ? 'pass' : 'fail'}`)) as SlotState;
  }

  /** Raw bytes of a slot. */
  async readFlash(slot: string, offset: number, length: number): Promise<Buffer> {
    return fromHex(await this.request(`flash-read ${slot} ${offset} ${length}`));
  }

  /** Stops the process. */
  async stop(): Promise<void> {
    if (this.exited) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 2000);
    await exited;
    clearTimeout(timer);
  }

  get running(): boolean {
    return !this.exited;
  }
}

/**
 * What a fresh virtual device runs, unless given an image: a sample image
 * (lib/image/sample-image.ts), so that `esp32-ble-ota sample-image --project
 * virtual-esp32 --app-version 1.0.0 --size 8k` (and --chip for another
 * chip) writes the same bytes, the base of a delta update to try; a later
 * version of that project shares its filler, so it goes as a small patch.
 */
export const VIRTUAL_FIRST_IMAGE = { projectName: 'virtual-esp32', version: '1.0.0', size: 8 * 1024 } as const;

/** The image of VIRTUAL_FIRST_IMAGE for a chip; undefined for a chip id without a known layout (the binary builds its own then). */
export function virtualFirstImage(chipId = 0, signingKey?: string): Buffer | undefined {
  if (!knownChips().some((c) => c.id === chipId)) return undefined;
  return sampleImage({ ...VIRTUAL_FIRST_IMAGE, chip: chipId, signingKey });
}

/**
 * The first image to write for the device: virtualFirstImage(), signed with
 * the owner's key when the device takes only signed images; or
 * options.image, signed when it is not yet.
 */
function firstImage(options: VirtualDeviceOptions): Buffer | undefined {
  const key = options.firstImageUnsigned ? undefined : options.signingKey;
  if (options.image) {
    const image = readFileSync(options.image);
    return key === undefined || parseEspImage(image).signature ? image : signImage(image, key);
  }
  const chipId = options.chipId ?? 0;
  const image = virtualFirstImage(chipId, key);
  if (image || key === undefined) return image;
  return buildAppImage({ chipId, projectName: VIRTUAL_FIRST_IMAGE.projectName, version: VIRTUAL_FIRST_IMAGE.version, size: 9000, signingKeys: key });
}

/** A stable address in Espressif's range, derived from a name. */
export function addressFromName(name: string): string {
  let h = 0x811c9dc5;
  for (const c of Buffer.from(name)) h = Math.imul(h ^ c, 0x01000193) >>> 0;
  const bytes = [0x24, 0x0a, 0xc4, (h >>> 16) & 0xff, (h >>> 8) & 0xff, h & 0xff];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

function parsePairs(line: string): Map<string, string> {
  const kv = new Map<string, string>();
  for (const pair of line.split(' ')) {
    const eq = pair.indexOf('=');
    if (eq > 0) kv.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
  return kv;
}

function splitOnce(s: string): [string, string] {
  const i = s.indexOf(' ');
  return i < 0 ? [s, ''] : [s.slice(0, i), s.slice(i + 1)];
}

function toHex(data: Buffer): string {
  return data.length ? data.toString('hex') : '-';
}

function fromHex(s: string): Buffer {
  return s === '-' || s === '' ? Buffer.alloc(0) : Buffer.from(s, 'hex');
}
