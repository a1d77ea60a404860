/**
 * A radio neighbourhood of virtual ESP32s: one VirtualBindings, the noble
 * instance built on it, and the devices in range, started on demand.
 */
import { readFileSync } from 'node:fs';
import type { NobleLike } from '../client/noble-types';
import { BleOtaError } from '../errors';
import { VirtualBindings } from './bindings';
import type { Preset } from './link-model';
import { addressFromName, VirtualDeviceOptions, VirtualEsp32 } from './virtual-device';

type WithBindings = (bindings: VirtualBindings) => NobleLike;

export class VirtualRadio {
  readonly bindings: VirtualBindings;
  readonly noble: NobleLike;
  private readonly devices = new Map<string, Promise<VirtualEsp32>>();

  /**
   * @param defaults options every device this radio starts gets, unless
   *   addDevice() says otherwise (e.g. the key of a keyed fleet)
   */
  constructor(
    centralMtu?: number,
    private readonly defaults: VirtualDeviceOptions = {},
    /** A link and flash model: the radio runs in virtual time (VirtualBindings). */
    model?: Preset,
  ) {
    this.bindings = new VirtualBindings(centralMtu, model);
    // with-bindings loads noble's core only, never the HCI socket.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const withBindings = require('@abandonware/noble/with-bindings') as WithBindings;
    this.noble = withBindings(this.bindings);
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

  /** The device with this name or address, started when not yet running. */
  ensureDevice(nameOrAddress: string, options: VirtualDeviceOptions = {}): Promise<VirtualEsp32> {
    const isAddress = /^([0-9a-f]{2}[:-]){5}[0-9a-f]{2}$/i.test(nameOrAddress);
    return isAddress
      ? this.addDevice({ ...options, address: nameOrAddress.replace(/-/g, ':') })
      : this.addDevice({ ...options, name: nameOrAddress });
  }

  async stopAll(): Promise<void> {
    const devices = await Promise.allSettled([...this.devices.values()]);
    this.devices.clear();
    await Promise.all(
      devices.map((d) => (d.status === 'fulfilled' ? (this.bindings.removeDevice(d.value), d.value.stop()) : undefined)),
    );
  }
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
  if (secret) defaults.fleetSecret = secret;
  const keyFile = env.BLE_OTA_VIRTUAL_SIGNING_KEY?.trim();
  if (keyFile) defaults.signingKey = readFileSync(keyFile, 'utf8');
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
 * The process-wide virtual radio the Node-RED nodes share. The environment
 * variable BLE_OTA_VIRTUAL_DEVICES (names, comma-separated) puts virtual
 * devices in range from the start, for demos of scans and fleets; see
 * virtualDefaultsFromEnv for what the devices are.
 */
export function sharedVirtualRadio(): VirtualRadio {
  if (!shared) {
    shared = new VirtualRadio(undefined, virtualDefaultsFromEnv());
    for (const name of (process.env.BLE_OTA_VIRTUAL_DEVICES ?? '').split(',').map((n) => n.trim()).filter(Boolean)) {
      shared.ensureDevice(name).catch(() => undefined); // a failed start shows when the device is used
    }
  }
  return shared;
}
