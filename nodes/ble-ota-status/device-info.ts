/**
 * What ble-ota-status reports about a device on input: the connection's
 * DeviceInfo (and v2's OTA Info) decoded into names a flow can test
 * without knowing the protocol's numbers (docs/PROTOCOL.md, OTA Info).
 */
import type { DeviceInfo } from '../../lib/client/ota-client';
import { formatDeviceId } from '../../lib/client/session';
import { chipName } from '../../lib/image/esp-chips';
import { LAST_STATUS_NONE, statusName } from '../../lib/protocol/constants';
import {
  chipRevisionName,
  featureNames,
  FeatureName,
  runningStateName,
  RunningStateName,
  transferStateName,
  TransferStateName,
} from '../../lib/protocol/info-names';
import type { Translate } from '../shared/i18n';
import type { NodeStatus } from '../shared/red';

export type Capability = FeatureName;

/**
 * msg.payload of an information request. Every field is present for every
 * device; what a seed-only device cannot tell is null.
 */
export interface FirmwareInfo {
  name: string | null;
  address: string;
  /** In dBm; null when the adapter measured none (it reported 127, not available). */
  rssi: number | null;
  mtu: number;
  protocol: 'v2' | 'seed';
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
  /** Status name of the last update attempt since boot (OK, HASH_MISMATCH...), null when none. */
  lastStatus: string | null;
  capabilities: Capability[];
  /** The device's id (its factory MAC), null when it tells none. */
  deviceId: string | null;
  /** Digest of the key updates must be signed with, hex; null when the device names none. */
  signingKey: string | null;
  /** The device proved the values above (a fleet secret is set and the device has authentication). */
  authenticated: boolean;
}

export const capabilities = featureNames;

export function firmwareInfo(info: DeviceInfo): FirmwareInfo {
  const common = {
    name: info.name ?? null,
    address: info.address,
    rssi: info.rssi ?? null,
    mtu: info.mtu,
    protocol: info.protocol,
    firmwareRevision: info.firmwareRevision ?? null,
    authenticated: info.authenticated,
  };
  const ota = info.ota;
  if (!ota) {
    return {
      ...common,
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
      lastStatus: null,
      capabilities: ['seed'],
      deviceId: null,
      signingKey: null,
    };
  }
  const runningState = runningStateName(ota.runningState);
  const transferHash = ota.transferSha256.some((b) => b !== 0) ? ota.transferSha256.toString('hex') : null;
  return {
    ...common,
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
    lastStatus: ota.lastStatus === LAST_STATUS_NONE ? null : statusName(ota.lastStatus),
    capabilities: capabilities(ota.features),
    deviceId: ota.deviceId ? formatDeviceId(ota.deviceId) : null,
    signingKey: ota.signingKeyDigest?.toString('hex') ?? null,
  };
}

const S = 'ble-ota-status.status.';

/** Green dot with the version; yellow while the image awaits confirmation; green ring when the device tells no version. */
export function statusForInfo(t: Translate, info: FirmwareInfo): NodeStatus {
  if (info.version === null) return { fill: 'green', shape: 'ring', text: t(S + 'seedFirmware') };
  if (info.pendingConfirmation) return { fill: 'yellow', shape: 'dot', text: t(S + 'pending', { version: info.version }) };
  return { fill: 'green', shape: 'dot', text: t(S + 'version', { version: info.version }) };
}
