/**
 * A device's firmware information as users see it: the connection's
 * DeviceInfo (and v2's OTA Info) decoded into names a script or flow can
 * test without the protocol's numbers (docs/PROTOCOL.md, OTA Info). The
 * one view of a device: `esp32-ble-ota info --json` prints it and the
 * ble-ota-status node sends it as msg.payload.
 *
 * Every field is present for every device; what a device cannot tell (a
 * seed-only device: no OTA Info; older firmware: no device id or link) is
 * null. A new OTA Info field is added here, once.
 */
import type { DeviceInfo } from './client/ota-client';
import { formatDeviceId } from './client/session';
import { chipName } from './image/esp-chips';
import { LAST_STATUS_NONE, statusName } from './protocol/constants';
import { chipRevisionName, featureNames, FeatureName, runningStateName, RunningStateName, transferStateName, TransferStateName, unknownFeatureBits } from './protocol/info-names';
import type { DeviceLink, PhyName } from './protocol/v2-codec';

/** A feature by name, or a bit newer firmware sets that this version has no name for ("0x0100"). */
export type Capability = FeatureName | `0x${string}`;

/** A link as the device reports it (OTA Info version 3); what the device does not know is null. */
export interface LinkView {
  intervalMs: number | null;
  latency: number | null;
  supervisionTimeoutMs: number | null;
  phy: { toDevice: PhyName | null; fromDevice: PhyName | null } | null;
  dataLength: { toDevice: number | null; fromDevice: number | null } | null;
  mtu: number | null;
  requested: 'none' | 'transfer' | 'idle';
}

export interface DeviceInfoView {
  name: string | null;
  address: string;
  /** In dBm; null when the adapter measured none (it reported 127, not available). */
  rssi: number | null;
  mtu: number;
  protocol: 'v2' | 'seed';
  /** OTA Info's protocol version; null for a seed-only device. */
  protocolVersion: number | null;
  /** Device Information's firmware revision (0x2A26); the seed's firmware has none. */
  firmwareRevision: string | null;
  project: string | null;
  /** The running app's version (v2), or else the firmware revision. */
  version: string | null;
  idfVersion: string | null;
  secureVersion: number | null;
  build: { date: string; time: string; elfSha256: string } | null;
  chip: { name: string; id: number; revision: string } | null;
  slotSize: number | null;
  maxPacket: number | null;
  window: number | null;
  runningState: RunningStateName;
  /** The running image waits for a client's CONFIRM (or rolls back at the next restart). */
  pendingConfirmation: boolean;
  transfer: { state: TransferStateName; offset: number; sha256: string | null } | null;
  /**
   * The image file in the running slot, as the device measured it (OTA Info version 4): a
   * client that holds the file with this SHA-256 can send a patch against it. null when the
   * device does not tell (older firmware, or an image it could not read).
   */
  runningImage: { size: number; sha256: string } | null;
  /** Status name of the last update attempt since boot (OK, HASH_MISMATCH...), null when none. */
  lastStatus: string | null;
  /** What the device offers; a seed-only device: ['seed']. */
  capabilities: Capability[];
  /** The device's id (its factory MAC), null when it tells none. */
  deviceId: string | null;
  /** Digest of the key updates must be signed with, hex; null when the device names none. */
  signingKey: string | null;
  /** The link as the device sees it; null before OTA Info version 3. */
  link: LinkView | null;
  /** The device proved the values above (a fleet secret is set and the device has authentication). */
  authenticated: boolean;
}

export function linkView(link: DeviceLink): LinkView {
  return {
    intervalMs: link.intervalMs ?? null,
    latency: link.latency ?? null,
    supervisionTimeoutMs: link.supervisionTimeoutMs ?? null,
    phy: link.phy ? { toDevice: link.phy.toDevice ?? null, fromDevice: link.phy.fromDevice ?? null } : null,
    dataLength: link.dataLength ? { toDevice: link.dataLength.toDevice ?? null, fromDevice: link.dataLength.fromDevice ?? null } : null,
    mtu: link.mtu ?? null,
    requested: link.requested,
  };
}

/** Feature names, with bits a newer firmware may add shown rather than dropped. */
export function capabilities(bits: number): Capability[] {
  return [...featureNames(bits), ...(unknownFeatureBits(bits) as Array<`0x${string}`>)];
}

export function deviceInfoView(info: DeviceInfo): DeviceInfoView {
  const common = {
    name: info.name ?? null,
    address: info.address,
    rssi: info.rssi ?? null,
    mtu: info.mtu,
    protocol: info.protocol,
    firmwareRevision: info.firmwareRevision ?? null,
  };
  const ota = info.ota;
  if (!ota) {
    return {
      ...common,
      protocolVersion: null,
      project: null,
      version: info.firmwareRevision ?? null,
      idfVersion: null,
      secureVersion: null,
      build: null,
      chip: null,
      slotSize: null,
      maxPacket: null,
      window: null,
      runningState: 'unknown',
      pendingConfirmation: false,
      transfer: null,
      runningImage: null,
      lastStatus: null,
      capabilities: ['seed'],
      deviceId: null,
      signingKey: null,
      link: null,
      authenticated: info.authenticated,
    };
  }
  const runningState = runningStateName(ota.runningState);
  const transferHash = ota.transferSha256.some((b) => b !== 0) ? ota.transferSha256.toString('hex') : null;
  return {
    ...common,
    protocolVersion: ota.protocol,
    project: ota.app.projectName,
    version: ota.app.version,
    idfVersion: ota.app.idfVersion,
    secureVersion: ota.app.secureVersion,
    build: { date: ota.app.date, time: ota.app.time, elfSha256: ota.app.elfSha256.toString('hex') },
    chip: { name: chipName(ota.chipId), id: ota.chipId, revision: chipRevisionName(ota.chipRevision) },
    slotSize: ota.slotSize,
    maxPacket: ota.maxPacket,
    window: ota.window,
    runningState,
    pendingConfirmation: runningState === 'pending-verify',
    transfer: { state: transferStateName(ota.transferState), offset: ota.transferOffset, sha256: transferHash },
    runningImage: ota.runningSha256 && ota.runningSize ? { size: ota.runningSize, sha256: ota.runningSha256.toString('hex') } : null,
    lastStatus: ota.lastStatus === LAST_STATUS_NONE ? null : statusName(ota.lastStatus),
    capabilities: capabilities(ota.features),
    deviceId: ota.deviceId ? formatDeviceId(ota.deviceId) : null,
    signingKey: ota.signingKeyDigest?.toString('hex') ?? null,
    link: ota.link ? linkView(ota.link) : null,
    authenticated: info.authenticated,
  };
}
