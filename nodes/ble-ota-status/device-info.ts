/**
 * What ble-ota-status shows about a device it read: msg.payload is the
 * library's device-info view (lib/device-info.ts, the one info --json
 * prints), the status its version.
 */
import type { DeviceInfoView } from '../../lib/device-info';
import type { Translate } from '../shared/i18n';
import type { NodeStatus } from '../shared/red';

export { deviceInfoView as firmwareInfo, type DeviceInfoView as FirmwareInfo, type Capability } from '../../lib/device-info';

const S = 'ble-ota-status.status.';

/** Green dot with the version; yellow while the image awaits confirmation; green ring when the device tells no version. */
export function statusForInfo(t: Translate, info: DeviceInfoView): NodeStatus {
  if (info.version === null) return { fill: 'green', shape: 'ring', text: t(S + 'seedFirmware') };
  if (info.pendingConfirmation) return { fill: 'yellow', shape: 'dot', text: t(S + 'pending', { version: info.version }) };
  return { fill: 'green', shape: 'dot', text: t(S + 'version', { version: info.version }) };
}
