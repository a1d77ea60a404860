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
  /** Glob (`esp32-*`: `*` and `?`, case-insensitive): only devices whose name matches. */
  namePattern?: string;
  /** Weaker devices are left out, and so are those whose RSSI is unknown. */
  minRssi?: number;
  /** Connect to devices that do not advertise the OTA service to find out whether they have it. */
  probe?: boolean;
  /** Connect to each OTA device and read its firmware version. */
  readVersions?: boolean;
  signal?: AbortSignal;
}

export interface DiscoveredDevice {
  name: string | undefined;
  /** '' where the platform hides addresses (macOS). */
  address: string;
  /** noble's id of the device (see SeenDevice): what a device field or msg.device takes to name this device, on every platform. */
  id: string;
  /** In dBm; undefined when the adapter measured none (see SeenDevice). */
  rssi: number | undefined;
  /** 'v2', 'seed', or 'unknown' when not connected to. */
  protocol: 'v2' | 'seed' | 'unknown';
  /** What the device runs, where known: v2 OTA Info's app version, or Device Information's firmware revision. */
  version?: string;
  project?: string;
}

/**
 * A name filter: a glob (`esp32-*`: `*` any run, `?` one character, any
 * case). No regular expressions: patterns come from flows and from fleet
 * jobs on a broker, names from anyone in radio range, and a regular
 * expression can backtrack for minutes (`/^(a+)+$/` against a long name).
 * A pattern written as one (`/.../`) is refused rather than taken literally.
 */
export function namePattern(pattern: string): (name: string) => boolean {
  if (/^\/.*\/[a-z]*$/.test(pattern)) {
    throw new BleOtaError('INVALID_ARGUMENT', `Name patterns are globs (* any characters, ? one character), not regular expressions: ${pattern}`);
  }
  const glob = pattern.toLowerCase();
  return (name) => globWalk(glob, name.toLowerCase()).matched;
}

/**
 * Glob matching by the greedy two-pointer walk, which never backtracks
 * further than the last `*`: at most (length(pattern) + 1) x (length(name) + 1)
 * steps, linear in the name for a given pattern. steps is for tests.
 */
export function globWalk(p: string, s: string): { matched: boolean; steps: number } {
  let i = 0;
  let j = 0;
  let star = -1;
  let mark = 0;
  let steps = 0;
  while (j < s.length) {
    steps++;
    if (i < p.length && (p[i] === '?' || p[i] === s[j])) {
      i++;
      j++;
    } else if (i < p.length && p[i] === '*') {
      star = i++;
      mark = j;
    } else if (star >= 0) {
      i = star + 1;
      j = ++mark;
    } else {
      return { matched: false, steps };
    }
  }
  while (p[i] === '*') {
    steps++;
    i++;
  }
  return { matched: i === p.length, steps };
}

export async function discoverOtaDevices(client: BleOtaClient, options: DiscoveryOptions): Promise<DiscoveredDevice[]> {
  const pattern = options.namePattern ? namePattern(options.namePattern) : undefined;
  const seen = await client.scan(options.durationMs, options.signal);
  const candidates = seen.filter((d) => strongEnough(d.rssi, options.minRssi) && (!pattern || pattern(d.name ?? '')));
  const found: DiscoveredDevice[] = [];
  for (const d of candidates) {
    // A seed device is recognised by the name the user gave, or by connecting.
    // Once stopped, only what is known without connecting is reported.
    const stopped = options.signal?.aborted === true;
    const worthConnecting = !stopped && (options.readVersions || (!d.advertisesOta && options.probe));
    if (!d.advertisesOta && !pattern && (!options.probe || stopped)) continue;
    if (!worthConnecting) {
      found.push({ name: d.name, address: d.address, id: d.id, rssi: d.rssi, protocol: 'unknown' });
      continue;
    }
    const known = await inspect(client, d, options.signal);
    if (known) found.push(known);
  }
  return found;
}

/** An unknown RSSI passes no minimum: the device may be at the edge of range, or beyond. */
function strongEnough(rssi: number | undefined, minRssi: number | undefined): boolean {
  return minRssi === undefined || (rssi !== undefined && rssi >= minRssi);
}

/** Connects and reads what the device is; undefined when it has no OTA service or cannot be reached. */
async function inspect(client: BleOtaClient, d: SeenDevice, signal?: AbortSignal): Promise<DiscoveredDevice | undefined> {
  let connection;
  try {
    connection = await client.connect({ id: d.id, name: d.name }, { signal });
    const info = await connection.info();
    return {
      name: d.name,
      address: d.address,
      id: d.id,
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
