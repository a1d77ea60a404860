/**
 * Finding OTA-capable devices: those that advertise the OTA service (our
 * firmware), and, since the seed's firmware does not advertise it, those
 * whose name matches a pattern or that answer a connection with the
 * service. Optionally reads what each one runs.
 */
import { BleOtaError } from '../errors';
import type { BleOtaClient } from './ota-client';
import type { SeenDevice } from './scanner';

export interface DiscoveryOptions {
  durationMs: number;
  /** Glob (`esp32-*`, case-insensitive) or `/regex/`: only devices whose name matches. */
  namePattern?: string;
  /** Weaker devices are left out. */
  minRssi?: number;
  /** Connect to devices that do not advertise the OTA service to find out whether they have it. */
  probe?: boolean;
  /** Connect to each OTA device and read its firmware version. */
  readVersions?: boolean;
  signal?: AbortSignal;
}

export interface DiscoveredDevice {
  name: string | undefined;
  address: string;
  rssi: number;
  /** 'v2', 'seed', or 'unknown' when not connected to. */
  protocol: 'v2' | 'seed' | 'unknown';
  /** What the device runs, where known: v2 OTA Info's app version, or Device Information's firmware revision. */
  version?: string;
  project?: string;
}

/** `esp32-*` and `/^esp32-\d+$/i` alike; throws on a malformed regex. */
export function namePatternRegExp(pattern: string): RegExp {
  const re = /^\/(.*)\/([a-z]*)$/.exec(pattern);
  if (re) return new RegExp(re[1], re[2]);
  const escaped = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${escaped}$`, 'i');
}

export async function discoverOtaDevices(client: BleOtaClient, options: DiscoveryOptions): Promise<DiscoveredDevice[]> {
  const pattern = options.namePattern ? namePatternRegExp(options.namePattern) : undefined;
  const seen = await client.scan(options.durationMs, options.signal);
  const candidates = seen.filter(
    (d) => (options.minRssi === undefined || d.rssi >= options.minRssi) && (!pattern || pattern.test(d.name ?? '')),
  );
  const found: DiscoveredDevice[] = [];
  for (const d of candidates) {
    // A seed device is recognised by the name the user gave, or by connecting.
    // Once stopped, only what is known without connecting is reported.
    const stopped = options.signal?.aborted === true;
    const worthConnecting = !stopped && (options.readVersions || (!d.advertisesOta && options.probe));
    if (!d.advertisesOta && !pattern && (!options.probe || stopped)) continue;
    if (!worthConnecting) {
      found.push({ name: d.name, address: d.address, rssi: d.rssi, protocol: 'unknown' });
      continue;
    }
    const known = await inspect(client, d, options.signal);
    if (known) found.push(known);
  }
  return found;
}

/** Connects and reads what the device is; undefined when it has no OTA service or cannot be reached. */
async function inspect(client: BleOtaClient, d: SeenDevice, signal?: AbortSignal): Promise<DiscoveredDevice | undefined> {
  let connection;
  try {
    connection = await client.connect({ address: d.address }, { signal });
    const info = await connection.info();
    return {
      name: d.name,
      address: d.address,
      rssi: d.rssi,
      protocol: info.protocol,
      version: info.ota?.app.version ?? info.firmwareRevision,
      project: info.ota?.app.projectName,
    };
  } catch (err) {
    if (err instanceof BleOtaError && err.code === 'CANCELLED') throw err;
    return undefined; // not an OTA device, or gone: not part of the answer
  } finally {
    await connection?.close();
  }
}
