/**
 * Finding a device: wait for the adapter, scan, match by address, name or
 * the OTA service, stop scanning, and always remove the listeners added.
 */
import { BluetoothUnavailableError, CancelledError, DeviceError } from '../errors';
import { OTA_SERVICE_UUID, nobleUuid } from '../protocol/constants';
import type { NobleLike, NoblePeripheral } from './noble-types';

/** Which device to update: by noble's id, by address, by advertised name, or the first OTA device seen. */
export interface Target {
  /**
   * noble's id of the device (a scan's `id`): the device itself, on every
   * platform, where addresses may be hidden (macOS: noble reports ''), and
   * names are not unique. Matched alone when given; `name` then only describes it,
   * unless `alsoByName`.
   */
  id?: string;
  address?: string;
  name?: string;
  /**
   * With `id`: a device advertising `name` matches as well (a device field of
   * id form that may be a name: lib/client/target.ts).
   */
  alsoByName?: boolean;
}

export function normalizeAddress(address: string): string {
  const hex = address.replace(/[:-]/g, '').toLowerCase();
  if (!/^[0-9a-f]{12}$/.test(hex)) {
    throw new DeviceError('DEVICE_NOT_FOUND', `"${address}" is not a Bluetooth address; write it as AA:BB:CC:DD:EE:FF`);
  }
  return hex.match(/../g)!.join(':');
}

export function describeTarget(target: Target): string {
  if (target.address) return target.address;
  if (target.name) return `"${target.name}"`;
  if (target.id) return `the device of id ${target.id}`;
  return 'any device with the OTA service';
}

export function matchesTarget(p: NoblePeripheral, target: Target): boolean {
  if (!target.id && !target.address && !target.name) return (p.advertisement?.serviceUuids ?? []).includes(nobleUuid(OTA_SERVICE_UUID));
  return namesDevice({ id: p.id, address: p.address, name: p.advertisement?.localName }, target);
}

/**
 * Whether the device with this id, address and advertised name is the one
 * a target names by id, address or name (scans filter their list by it,
 * connections find their device).
 */
export function namesDevice(d: { id: string; address: string | undefined; name: string | undefined }, target: Target): boolean {
  if (target.id) return d.id === target.id || (target.alsoByName === true && target.name !== undefined && d.name === target.name);
  if (target.address) {
    const wanted = normalizeAddress(target.address);
    return d.address?.toLowerCase() === wanted || d.id === wanted.replace(/:/g, '');
  }
  return target.name !== undefined && d.name === target.name;
}

const ADAPTER_PROBLEMS: Record<string, string> = {
  unsupported: 'the Bluetooth adapter does not support Bluetooth Low Energy',
  unauthorized: 'this process is not allowed to use Bluetooth',
  poweredOff: 'the Bluetooth adapter is powered off; turn it on (e.g. `bluetoothctl power on`)',
};

/** What to do about an adapter state, for the states that keep Bluetooth from being used. */
function adapterProblem(state: string): string | undefined {
  return Object.hasOwn(ADAPTER_PROBLEMS, state) ? ADAPTER_PROBLEMS[state] : undefined;
}

/**
 * How long an adapter reported powered off may take to come on before the
 * wait fails with the advice to turn it on. On Linux noble polls whether
 * the HCI device is up once a second and reports poweredOff while it is
 * down, which it is for a moment when Node-RED starts before the system
 * has brought Bluetooth up: failing at the first poweredOff would fail
 * those updates. Two polls' worth; the wait's own timeout bounds it.
 */
export const POWERED_OFF_GRACE_MS = 2000;

/**
 * Resolves once the adapter is powered on. An adapter that cannot be used
 * (no LE, no permission) fails at once with what to do, one powered off
 * once it stayed off for POWERED_OFF_GRACE_MS; aborting signal ends the
 * wait with CancelledError. noble says 'unknown' until its first
 * stateChange, so that state waits.
 */
export function waitPoweredOn(noble: NobleLike, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(new CancelledError());
  if (noble.state === 'poweredOn') return Promise.resolve();
  const unusable = (state: string) => new BluetoothUnavailableError(`adapter ${state}`, `Bluetooth is unavailable: ${adapterProblem(state)}`);
  if (adapterProblem(noble.state) && noble.state !== 'poweredOff') return Promise.reject(unusable(noble.state));
  return new Promise((resolve, reject) => {
    let grace: NodeJS.Timeout | undefined;
    const finish = (err?: Error) => {
      clearTimeout(timer);
      clearTimeout(grace);
      noble.off('stateChange', onState);
      signal?.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(() => {
      const state = noble.state;
      finish(
        adapterProblem(state)
          ? unusable(state)
          : new BluetoothUnavailableError('adapter not ready', `the Bluetooth adapter did not become ready within ${timeoutMs} ms (state: ${state})`),
      );
    }, timeoutMs);
    const poweredOff = () => {
      grace ??= setTimeout(() => finish(unusable('poweredOff')), POWERED_OFF_GRACE_MS);
    };
    const onState = (state: string) => {
      if (state === 'poweredOn') finish();
      else if (state === 'poweredOff') poweredOff();
      else if (adapterProblem(state)) finish(unusable(state));
      else {
        // Changing again ('resetting', 'unknown'): not off any more; the timeout decides.
        clearTimeout(grace);
        grace = undefined;
      }
    };
    const onAbort = () => finish(new CancelledError());
    noble.on('stateChange', onState);
    signal?.addEventListener('abort', onAbort);
    if (noble.state === 'poweredOff') poweredOff();
  });
}

/** Scans until a peripheral matches the target. */
export async function findPeripheral(noble: NobleLike, target: Target, timeoutMs: number, signal?: AbortSignal): Promise<NoblePeripheral> {
  if (target.address) normalizeAddress(target.address); // a malformed address fails before scanning
  await waitPoweredOn(noble, timeoutMs, signal);
  return new Promise<NoblePeripheral>((resolve, reject) => {
    const finish = (err: Error | null, p?: NoblePeripheral) => {
      clearTimeout(timer);
      noble.off('discover', onDiscover);
      signal?.removeEventListener('abort', onAbort);
      noble.stopScanning();
      if (err) reject(err);
      else resolve(p as NoblePeripheral);
    };
    const onDiscover = (p: NoblePeripheral) => {
      if (matchesTarget(p, target)) finish(null, p);
    };
    const onAbort = () => finish(new CancelledError());
    const timer = setTimeout(
      () =>
        finish(
          new DeviceError(
            'DEVICE_NOT_FOUND',
            `${describeTarget(target)} was not found in a ${Math.round(timeoutMs / 1000)} s scan; check that it is powered, in range and not connected to another central`,
          ),
        ),
      timeoutMs,
    );
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort);
    noble.on('discover', onDiscover);
    // No callback: noble would keep it until the scan starts, which a scan stopped while
    // starting (a cancel, a quick find) never does. Powered on, noble throws its only error here.
    try {
      noble.startScanning([], false);
    } catch (err) {
      finish(new BluetoothUnavailableError('scan failed', `scanning failed: ${String(err)}`));
    }
  });
}

/**
 * The RSSI an LE advertising report gives when the controller measured
 * none: "RSSI is not available" (Core spec, Vol 4, Part E, 7.7.65.2).
 * noble passes it on as a number, which would read as the strongest signal.
 */
export const RSSI_NOT_AVAILABLE = 127;

/** The RSSI noble reports, in dBm; undefined where the controller measured none. */
export function knownRssi(rssi: number | undefined): number | undefined {
  return typeof rssi === 'number' && Number.isFinite(rssi) && rssi !== RSSI_NOT_AVAILABLE ? rssi : undefined;
}

/** Strongest signal first; an unknown RSSI after every known one. */
export function byRssi(a: { rssi: number | undefined }, b: { rssi: number | undefined }): number {
  if (a.rssi === undefined) return b.rssi === undefined ? 0 : 1;
  if (b.rssi === undefined) return -1;
  return b.rssi - a.rssi;
}

export interface SeenDevice {
  name: string | undefined;
  /** '' where the platform hides addresses (macOS). */
  address: string;
  /** noble's id of the device: `target.id` names this device, on every platform. */
  id: string;
  /** In dBm; undefined when the adapter measured none (its report said 127, not available). */
  rssi: number | undefined;
  /** The device advertises the OTA service (ours do; the seed's firmware does not). */
  advertisesOta: boolean;
}

/**
 * Lists the devices seen in a scan of durationMs, strongest signal first,
 * unknown RSSI last. Aborting signal stops the scan: it returns the devices
 * seen so far; before the scan has started (the adapter not on yet, or
 * already aborted) it fails with CancelledError, as nothing was scanned.
 */
export async function scanDevices(noble: NobleLike, durationMs: number, signal?: AbortSignal): Promise<SeenDevice[]> {
  const cancelled = () => new CancelledError('the scan was cancelled');
  if (signal?.aborted) throw cancelled();
  await waitPoweredOn(noble, Math.max(durationMs, 5000), signal).catch((err: unknown) => {
    throw err instanceof CancelledError ? cancelled() : err;
  });
  const seen = new Map<string, SeenDevice>();
  const onDiscover = (p: NoblePeripheral) =>
    seen.set(p.id, {
      name: p.advertisement?.localName,
      address: p.address,
      id: p.id,
      rssi: knownRssi(p.rssi),
      advertisesOta: (p.advertisement?.serviceUuids ?? []).includes(nobleUuid(OTA_SERVICE_UUID)),
    });
  noble.on('discover', onDiscover);
  try {
    noble.startScanning([], true);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, durationMs);
      signal?.addEventListener('abort', done);
      function done() {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        resolve();
      }
    });
  } finally {
    noble.off('discover', onDiscover);
    noble.stopScanning();
  }
  return [...seen.values()].sort(byRssi);
}
