/**
 * A radio neighbourhood of virtual ESP32s: one VirtualBindings, the noble
 * instance built on it, and the devices in range. Devices exist only when
 * code adds them (addDevice, ensureDevice) or they are declared (declare():
 * the device node's list, BLE_OTA_VIRTUAL_DEVICES); a declared device's
 * process starts when a scan or an update looks for it, and stops again
 * when idle, so any number of names cannot start any number of processes.
 * A declared device keeps its flash while stopped: it starts again running
 * what it was last updated to, as a real one switched off and on.
 */
import { existsSync, mkdtempSync, rmSync, type Stats, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { NobleLike } from '../client/noble-types';
import { normalizeAddress } from '../client/scanner';
import { parseSecret } from '../client/session';
import { hideSecretForms, targetOf } from '../client/target';
import { BleOtaError } from '../errors';
import { readRegularFileSync } from '../regular-file';
import { peripheralId, VirtualBindings } from './bindings';
import { deviceStateFolder } from './build';
import { Preset, PRESETS } from './link-model';
import type { Scheduler } from './scheduler';
import { addressFromName, VirtualDeviceOptions, VirtualEsp32 } from './virtual-device';

/** The link preset a device declared `slow` without one uses: a Bluetooth 4.1 adapter. */
export const DEFAULT_SLOW_PRESET = 'linux-noble-bt41-esp32';

/** The chance that a `flaky` device without a figure drops each connection. */
const DEFAULT_FLAKY = 0.5;

/** A virtual device a user declared, and how it behaves. */
export interface VirtualDeclaration {
  name: string;
  address: string;
  /** Declared but out of range: never found, as a device that is off. */
  offline: boolean;
  /** Requests go no faster than on this link preset's link (lib/virtual/link-model.ts PRESETS). */
  preset?: Preset;
  /** The chance (0 to 1) that a connection drops at a random moment in its first seconds. */
  flaky: number;
}

/**
 * Parses a list of virtual devices: entries separated by commas or new
 * lines, each a name or an address followed by options separated by
 * spaces: `offline`, `slow` or `slow=<preset>`, `flaky` or
 * `flaky=<percent>`. E.g. "esp32-a, esp32-b slow, esp32-c offline".
 */
export function parseVirtualDevices(text: string): VirtualDeclaration[] {
  const declarations: VirtualDeclaration[] = [];
  for (const entry of text.split(/[,\n]/)) {
    const [id, ...options] = entry.trim().split(/\s+/).filter(Boolean);
    if (!id) continue;
    const target = targetOf(id);
    const declaration: VirtualDeclaration = {
      name: target.address ? 'esp32' : id,
      address: target.address ?? addressFromName(id).toLowerCase(),
      offline: false,
      flaky: 0,
    };
    for (const option of options) {
      const [key, value] = option.split('=', 2);
      if (key === 'offline' && value === undefined) declaration.offline = true;
      else if (key === 'slow') {
        const name = value ?? DEFAULT_SLOW_PRESET;
        declaration.preset = PRESETS.find((p) => p.name === name);
        if (!declaration.preset) throw invalid(id, option, `the presets are ${PRESETS.map((p) => p.name).join(', ')}`);
      } else if (key === 'flaky') {
        const percent = value === undefined ? DEFAULT_FLAKY * 100 : Number(value);
        if (!(percent >= 0 && percent <= 100)) throw invalid(id, option, 'give a percentage from 0 to 100, e.g. flaky=30');
        declaration.flaky = percent / 100;
      } else {
        throw invalid(id, option, 'the options are offline, slow[=<preset>] and flaky[=<percent>]');
      }
    }
    declarations.push(declaration);
  }
  return declarations;
}

function invalid(device: string, option: string, hint: string): BleOtaError {
  // A fleet secret typed as an option (no option takes one) is not repeated.
  return new BleOtaError('INVALID_ARGUMENT', hideSecretForms(`Virtual device "${device}" has an unknown option "${option}": ${hint}.`));
}

/** How many declared devices may run at once, and after how long unused one stops. */
export interface VirtualRadioLimits {
  maxProcesses: number;
  idleMs: number;
}

/** The limits from BLE_OTA_VIRTUAL_MAX_PROCESSES and BLE_OTA_VIRTUAL_IDLE_S (defaults 8 and 300 s). */
export function virtualLimitsFromEnv(env: NodeJS.ProcessEnv = process.env): VirtualRadioLimits {
  const max = Number(env.BLE_OTA_VIRTUAL_MAX_PROCESSES ?? 8);
  const idleS = Number(env.BLE_OTA_VIRTUAL_IDLE_S ?? 300);
  return {
    maxProcesses: Number.isInteger(max) && max > 0 ? max : 8,
    idleMs: Number.isFinite(idleS) && idleS > 0 ? idleS * 1000 : 300_000,
  };
}

type WithBindings = (bindings: VirtualBindings) => NobleLike;

export class VirtualRadio {
  readonly bindings: VirtualBindings;
  readonly noble: NobleLike;
  private readonly devices = new Map<string, Promise<VirtualEsp32>>();
  /** Each declarer's list (a device node's id, or "env"). */
  private readonly declarations = new Map<string, VirtualDeclaration[]>();
  /** All declared devices, by address. */
  private declared = new Map<string, VirtualDeclaration>();
  /** Addresses of the running devices the radio started for a declaration (it may stop them), and when each was last used. */
  private readonly lastUsed = new Map<string, number>();
  private sweeper: NodeJS.Timeout | undefined;
  /** Where stopped declared devices keep the image they boot (a private folder of this radio's, made when first needed). */
  private flashFolder: string | undefined;
  limits: VirtualRadioLimits = { maxProcesses: 8, idleMs: 300_000 };

  /**
   * @param defaults options every device this radio starts gets, unless
   *   addDevice() says otherwise (e.g. the key of a keyed fleet)
   */
  constructor(
    centralMtu?: number,
    private readonly defaults: VirtualDeviceOptions = {},
    /** When requests go and results come (VirtualBindings); real time unless given. */
    scheduler?: Scheduler,
  ) {
    this.bindings = new VirtualBindings(centralMtu, scheduler);
    // A device the radio started for a declaration is out of range as soon as
    // nobody declares it (a flow removed): scans stop finding it at once, and
    // its process stops at the next idle check. Devices code added are always in range.
    this.bindings.inRange = (address) => !this.lastUsed.has(address) || this.declared.has(address);
    // with-bindings loads noble's core only, never the HCI socket.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const withBindings = require('@abandonware/noble/with-bindings') as WithBindings;
    this.noble = withBindings(this.bindings);
    // A scan finds the declared devices that are in range, as a real one
    // would (one that cannot start is simply not found by it).
    this.bindings.on('scanStart', () => void this.startDeclared().catch(() => undefined));
    this.bindings.on('air-connect', (address: string) => this.used(address));
    this.bindings.on('connect', (id: string, err: unknown) => {
      if (!err) this.maybeDrop(id);
    });
  }

  /**
   * Sets the devices one declarer (a device node's id, say) declares,
   * replacing its earlier list. A device the radio started that is now
   * offline or has another name stops at once; one no longer declared
   * stops at the next idle check (a redeploy withdraws a device node's
   * list and declares it again: its device keeps running, with what it
   * was sent).
   */
  declare(declarations: VirtualDeclaration[], declarer = 'code'): void {
    if (declarations.length) this.declarations.set(declarer, declarations);
    else this.declarations.delete(declarer);
    const before = this.declared;
    this.declared = new Map([...this.declarations.values()].flat().map((d) => [d.address, d]));
    for (const address of this.lastUsed.keys()) {
      const was = before.get(address);
      const now = this.declared.get(address);
      if (!now) continue;
      if (now.offline || (was && now.name !== was.name)) void this.stopDevice(address);
      else if (now.preset !== was?.preset)
        void this.devices.get(address)?.then(
          (device) => this.bindings.pace(device, now.preset),
          () => undefined,
        );
    }
  }

  /** Withdraws a declarer's devices (a device node removed or redeployed). */
  undeclare(declarer: string): void {
    this.declare([], declarer);
  }

  /** The declaration for this name or address, if any. */
  declaration(nameOrAddress: string): VirtualDeclaration | undefined {
    const { address, name } = targetOf(nameOrAddress);
    if (address) return this.declared.get(address);
    return [...this.declared.values()].find((d) => d.name === name);
  }

  /**
   * The device a flow names, when it is declared and in range: started if
   * needed. Undefined otherwise: the client's scan then ends with
   * DEVICE_NOT_FOUND after the scan time, as with a real radio.
   */
  async reach(nameOrAddress: string): Promise<VirtualEsp32 | undefined> {
    const running = this.runningDevice(nameOrAddress);
    if (running) return running;
    const d = this.declaration(nameOrAddress);
    if (!d || d.offline) return undefined;
    return this.startDeclaration(d);
  }

  /**
   * Starts the declared devices in range that are not running, as many as
   * the bound allows. Throws VIRTUAL_DEVICE_UNAVAILABLE when no virtual
   * ESP32 can run on this machine (no C compiler, an unsafe cache).
   */
  async startDeclared(): Promise<void> {
    for (const d of this.declared.values()) {
      if (d.offline || this.devices.has(d.address)) continue;
      // Up to the bound, stopping none: a scan that stopped devices to start
      // others would stop the ones it just started. reach() makes room for
      // the device a flow names.
      if (this.lastUsed.size >= this.limits.maxProcesses) return;
      try {
        await this.startDeclaration(d);
      } catch (err) {
        if (err instanceof BleOtaError && err.code === 'VIRTUAL_DEVICE_UNAVAILABLE') throw err;
        return; // the bound is reached, or the device cannot start: a scan finds the others
      }
    }
  }

  private runningDevice(nameOrAddress: string): Promise<VirtualEsp32> | undefined {
    const { address } = targetOf(nameOrAddress);
    if (address) return this.devices.get(address);
    const d = this.declaration(nameOrAddress);
    if (d && this.devices.has(d.address)) return this.devices.get(d.address);
    const named = addressFromName(nameOrAddress.trim());
    return [...this.devices.entries()].find(([running]) => running === named)?.[1];
  }

  private async startDeclaration(d: VirtualDeclaration): Promise<VirtualEsp32> {
    const existing = this.devices.get(d.address);
    if (existing) return existing;
    if (this.lastUsed.size >= this.limits.maxProcesses) await this.makeRoom();
    this.lastUsed.set(d.address, Date.now());
    const kept = this.keptImage(d.address);
    const device = await this.addDevice({ name: d.name, address: d.address, image: existsSync(kept) ? kept : undefined });
    device.once('exit', () => this.lastUsed.delete(d.address));
    this.bindings.pace(device, d.preset);
    this.sweep();
    return device;
  }

  /** Stops the least recently used idle device the radio started, or says the bound is reached. */
  private async makeRoom(): Promise<void> {
    const idle = [...this.lastUsed.entries()].filter(([address]) => !this.busy(address)).sort((a, b) => a[1] - b[1]);
    if (idle.length === 0) {
      throw new BleOtaError(
        'BUSY',
        `${this.limits.maxProcesses} virtual devices are running and in use; try again when one is done (BLE_OTA_VIRTUAL_MAX_PROCESSES raises the bound).`,
      );
    }
    await this.stopDevice(idle[0][0]);
  }

  private busy(address: string): boolean {
    const device = this.bindings.devices.find((d) => d.address === address);
    return device !== undefined && this.bindings.isConnected(device);
  }

  private used(address: string): void {
    if (this.lastUsed.has(address)) this.lastUsed.set(address, Date.now());
  }

  private async stopDevice(address: string): Promise<void> {
    const started = this.devices.get(address);
    this.devices.delete(address);
    this.lastUsed.delete(address);
    const device = await started?.catch(() => undefined);
    if (!device) return;
    this.bindings.removeDevice(device);
    await this.keepFlash(address, device);
    await device.stop();
  }

  private keptImage(address: string): string {
    this.flashFolder ??= mkdtempSync(join(deviceStateFolder(), 'radio-'));
    return join(this.flashFolder, `${address.replace(/:/g, '')}.bin`);
  }

  /**
   * Keeps the image a stopping device would boot, for its next start: the
   * power is cut first, so the device's bootloader decides (a new image
   * nobody confirmed is rolled back, as on an ESP32 switched off).
   */
  private async keepFlash(address: string, device: VirtualEsp32): Promise<void> {
    try {
      await device.powerCycle();
      const state = await device.state();
      const slot = state.slots[state.running];
      if (!slot || slot.size === 0) return;
      writeFileSync(this.keptImage(address), await device.readFlash(state.running, 0, slot.size), { mode: 0o600 });
    } catch {
      // A device that cannot say (it crashed): it starts with what was kept before, or its first image.
    }
  }

  /** Stops the devices the radio started that nobody used for limits.idleMs (checked while any runs). */
  private sweep(): void {
    if (this.sweeper) return;
    this.sweeper = setInterval(
      () => {
        const cutoff = Date.now() - this.limits.idleMs;
        for (const [address, at] of this.lastUsed) {
          if (this.busy(address)) this.lastUsed.set(address, Date.now());
          else if (at < cutoff || !this.declared.has(address)) void this.stopDevice(address);
        }
        if (this.lastUsed.size === 0) {
          clearInterval(this.sweeper);
          this.sweeper = undefined;
        }
      },
      Math.min(this.limits.idleMs / 2, 30_000),
    );
    this.sweeper.unref();
  }

  /** A flaky device's new connection drops, with its declared chance, at a random moment within 3 s. */
  private maybeDrop(id: string): void {
    const d = [...this.declared.values()].find((x) => peripheralId(x.address) === id);
    if (!d || d.flaky <= 0 || Math.random() >= d.flaky) return;
    const device = this.bindings.devices.find((x) => x.address === d.address);
    if (!device) return;
    setTimeout(() => this.bindings.dropLink(device), 300 + Math.random() * 2700).unref();
  }

  /** Starts a virtual device and puts it in range. */
  async addDevice(options: VirtualDeviceOptions = {}): Promise<VirtualEsp32> {
    const name = options.name ?? 'esp32';
    const address = (options.address ?? addressFromName(name)).toLowerCase();
    const existing = this.devices.get(address);
    if (existing) return existing;
    const settings = { ...this.defaults, ...options, name, address };
    const started = VirtualEsp32.start(settings).then((device) => {
      this.bindings.addDevice(device, settings.rssi);
      device.once('exit', () => {
        if (this.devices.get(address) === started) this.devices.delete(address);
        this.bindings.removeDevice(device);
      });
      return device;
    });
    this.devices.set(address, started);
    started.catch(() => this.devices.delete(address));
    return started;
  }

  /**
   * The device with this name or address, started when not yet running
   * (code declaring it, as the CLI's --virtual does). 12 hex digits are the
   * id a scan reports, a virtual device's address without colons (as noble's
   * on Linux): the device at that address, as the device node reads them,
   * not a device of that name.
   */
  ensureDevice(nameOrAddress: string, options: VirtualDeviceOptions = {}): Promise<VirtualEsp32> {
    const { address, id } = targetOf(nameOrAddress);
    const at = address ?? (id?.length === 12 ? normalizeAddress(id) : undefined);
    return at ? this.addDevice({ ...options, address: at }) : this.addDevice({ ...options, name: nameOrAddress });
  }

  /** Stops every device; what stopped declared devices kept is dropped (the neighbourhood is gone). */
  async stopAll(): Promise<void> {
    if (this.flashFolder) rmSync(this.flashFolder, { recursive: true, force: true });
    this.flashFolder = undefined;
    this.lastUsed.clear();
    const devices = await Promise.allSettled([...this.devices.values()]);
    this.devices.clear();
    await Promise.all(devices.map((d) => (d.status === 'fulfilled' ? (this.bindings.removeDevice(d.value), d.value.stop()) : undefined)));
  }
}

/**
 * The text of BLE_OTA_VIRTUAL_SIGNING_KEY's file, read only when it is a
 * regular file of at most 64 KiB: this read is synchronous, so a FIFO named
 * there would stop the whole process (Node-RED with it) until a writer came,
 * and a device (/dev/zero) would read without end. Throws the file system's
 * error (its `code`), or one saying what the file is instead.
 */
export function readSigningKeyFile(file: string): string {
  return readRegularFileSync(file, (s: Stats) => {
    if (!s.isFile()) throw new Error('not a regular file: a FIFO, a device, a socket or a folder');
    if (s.size > 64 * 1024) throw new Error(`${s.size} bytes, too large for a PEM key`);
  }).toString('utf8');
}

/**
 * What every virtual device of this process stands for, from the
 * environment: BLE_OTA_VIRTUAL_SECRET (a fleet secret, 64 hex digits)
 * provisions each device with its key; BLE_OTA_VIRTUAL_SIGNING_KEY (the
 * path of a signing key PEM) makes each device run an image signed with it
 * and take only images signed with it. Both together: our firmware's
 * default build. Neither: a development build that takes anything.
 * BLE_OTA_VIRTUAL_RSSI (dBm) is the RSSI the adapter reports for each
 * device; 127 is its "not available", to see how tools show that.
 */
export function virtualDefaultsFromEnv(env: NodeJS.ProcessEnv = process.env): VirtualDeviceOptions {
  const defaults: VirtualDeviceOptions = {};
  const secret = env.BLE_OTA_VIRTUAL_SECRET?.trim();
  if (secret) {
    try {
      parseSecret(secret);
    } catch (err) {
      // Checked here, naming the variable: at a device's start it would read as a mistake in the client's own secret. parseSecret never repeats the value.
      throw new BleOtaError('INVALID_ARGUMENT', `BLE_OTA_VIRTUAL_SECRET: ${(err as Error).message} Give the virtual devices' fleet secret there, or unset it.`);
    }
    defaults.fleetSecret = secret;
  }
  const keyFile = env.BLE_OTA_VIRTUAL_SIGNING_KEY?.trim();
  if (keyFile) {
    try {
      defaults.signingKey = readSigningKeyFile(keyFile);
    } catch (err) {
      const reason = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      throw new BleOtaError(
        'INVALID_ARGUMENT',
        // The key's PEM text itself, set where its path goes, is not repeated.
        hideSecretForms(
          `BLE_OTA_VIRTUAL_SIGNING_KEY names ${keyFile}, which cannot be read (${reason}): give the path of the virtual devices' signing key (a PEM file), or unset it.`,
        ),
      );
    }
  }
  const rssi = env.BLE_OTA_VIRTUAL_RSSI?.trim();
  if (rssi) defaults.rssi = parseRssi(rssi);
  return defaults;
}

/** An RSSI as an LE advertising report carries it: -127 to 20 dBm, or 127 (not available). */
function parseRssi(text: string): number {
  const rssi = Number(text);
  if (!Number.isInteger(rssi) || rssi < -127 || (rssi > 20 && rssi !== 127)) {
    throw new BleOtaError('INVALID_ARGUMENT', `BLE_OTA_VIRTUAL_RSSI is "${text}": give a whole number of dBm from -127 to 20, or 127 (not available)`);
  }
  return rssi;
}

let shared: VirtualRadio | undefined;

/**
 * The process-wide virtual radio the Node-RED nodes share. Besides the
 * device nodes' lists, the environment variable BLE_OTA_VIRTUAL_DEVICES
 * (parseVirtualDevices' syntax) declares virtual devices; see
 * virtualDefaultsFromEnv for what the devices are, virtualLimitsFromEnv
 * for how many run at once.
 */
export function sharedVirtualRadio(): VirtualRadio {
  if (!shared) {
    const defaults = virtualDefaultsFromEnv();
    const declared = virtualDevicesFromEnv();
    const radio = new VirtualRadio(undefined, defaults);
    radio.limits = virtualLimitsFromEnv();
    radio.declare(declared, 'env');
    shared = radio;
  }
  return shared;
}

/**
 * The devices BLE_OTA_VIRTUAL_DEVICES declares. A mistake in it names the
 * variable: the same mistake in a device node's In range list reads alike,
 * and the user would look there.
 */
export function virtualDevicesFromEnv(env: NodeJS.ProcessEnv = process.env): VirtualDeclaration[] {
  try {
    return parseVirtualDevices(env.BLE_OTA_VIRTUAL_DEVICES ?? '');
  } catch (err) {
    throw new BleOtaError('INVALID_ARGUMENT', `BLE_OTA_VIRTUAL_DEVICES: ${(err as Error).message} Correct it there, or unset it, and start Node-RED again.`);
  }
}
