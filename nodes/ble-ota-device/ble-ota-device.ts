/**
 * ble-ota-device (config node): which ESP32 to update and through which
 * radio: the system's Bluetooth adapter (noble) or the virtual ESP32s that
 * run the firmware's OTA core on this machine.
 */
import type { Timeouts } from '../../lib/client/ota-client';
import { systemBluetoothProblem } from '../../lib/noble-loader';
import { parseVirtualDevices, sharedVirtualRadio, type VirtualRadio } from '../../lib/virtual/virtual-radio';
import { adapterFor, localiseAdapterBusy } from '../shared/adapter';
import { discoverOtaDevices } from '../../lib/client/discovery';
import { BleOtaError } from '../../lib/errors';
import { nodeConfig, serveMigrations } from '../shared/config';
import { translator } from '../shared/i18n';
import type { RED } from '../shared/red';
import { parseDeviceId } from '../../lib/client/session';
import { hasSecretForm, hideSecretForms, targetOf } from '../../lib/client/target';
import { DeviceNode, DeviceNodeDef } from './device-node';

/** The scan time and the timeout, in seconds: their defaults, and the most the editor allows (the least is MIN_SECONDS). */
const MIN_SECONDS = 1;
const TIMEOUTS = {
  scanTimeout: { fallback: 15, max: 3600 },
  operationTimeout: { fallback: 5, max: 600 },
} as const;

/**
 * How the virtual radio's declarations know the device a field names. A
 * virtual device's id is its address without colons (as on Linux): an id
 * that is no declared name is that address.
 */
function declaredAs(device: string): string {
  const { id } = targetOf(device);
  if (id?.length !== 12 || sharedVirtualRadio().declaration(device)) return device;
  return id.match(/../g)!.join(':');
}

export = function register(RED: RED): void {
  const t = translator(RED, __dirname, 'ble-ota-device');
  serveMigrations(RED);
  function BleOtaDeviceNode(this: DeviceNode, stored: DeviceNodeDef) {
    RED.nodes.createNode(this, stored);
    const def = nodeConfig(this, stored, t);
    this.backend = def.backend === 'virtual' ? 'virtual' : 'bluetooth';
    // A flow written by hand may name another radio (a typo): said at deploy, not found out at the first update.
    if (def.backend !== undefined && def.backend !== 'virtual' && def.backend !== 'bluetooth') {
      this.warn(t('ble-ota-device.warnings.backend', { value: hideSecretForms(String(def.backend)).slice(0, 40) }));
    }
    // A fleet secret or a key pasted as the device: every node that uses this one would show it (status,
    // events, logs, DEVICE_NOT_FOUND). Kept from them, said at deploy, and every use refused.
    const device = String(def.device ?? '').trim();
    const deviceIsSecret = hasSecretForm(device);
    this.device = deviceIsSecret ? '' : device;
    if (deviceIsSecret) this.error(t('ble-ota-device.errors.deviceIsSecret'));
    this.adapter = adapterFor(this.backend);
    /**
     * A timeout from the settings, in ms. Blank: the default. A value that is
     * no number of seconds from 1 to the editor's maximum, the range the
     * editor takes (a flow written by hand or by a script), is said at
     * deploy, and the default runs instead of a timer that would fire at
     * once, too soon for any scan or answer, or never.
     */
    const seconds = (field: keyof typeof TIMEOUTS): number => {
      const { fallback, max } = TIMEOUTS[field];
      const value = def[field];
      if (value === undefined || value === null || String(value).trim() === '') return fallback * 1000;
      const n = Number(value);
      if (Number.isFinite(n) && n >= MIN_SECONDS && n <= max) return n * 1000;
      this.warn(
        t('ble-ota-device.warnings.timeout', { label: t(`ble-ota-device.label.${field}`), value: hideSecretForms(String(value)).slice(0, 40), min: MIN_SECONDS, max, fallback }),
      );
      return fallback * 1000;
    };
    const timeouts: Partial<Timeouts> = { scanMs: seconds('scanTimeout'), gattMs: seconds('operationTimeout') };
    this.timeouts = timeouts;
    // A credential: Node-RED stores it apart from the flow (flows_cred.json, encrypted).
    const secret = String(this.credentials?.secret ?? '').trim();
    this.secret = secret === '' ? undefined : secret;
    this.allowUnauthenticated = def.allowUnauthenticated === true;
    this.deviceId = String(def.deviceId ?? '').trim() || undefined;
    // The editor checks the field as it is typed; a flow written by hand is checked here, at deploy
    // (every update through this node is refused with the same message until it is corrected).
    if (this.deviceId !== undefined) {
      try {
        parseDeviceId(this.deviceId);
      } catch (err) {
        this.warn(t('ble-ota-device.warnings.deviceId', { message: (err as Error).message }));
      }
    }

    // The virtual devices this node puts in range; none exist but those declared.
    let declarationProblem: BleOtaError | undefined;
    if (this.backend === 'virtual') {
      const asError = (err: unknown) => (err instanceof BleOtaError ? err : new BleOtaError('INVALID_ARGUMENT', String(err)));
      let radio: VirtualRadio | undefined;
      try {
        radio = sharedVirtualRadio();
      } catch (err) {
        // A mistake in Node-RED's environment (BLE_OTA_VIRTUAL_DEVICES, _SECRET, ...): its message names the
        // variable, and is not put down to this node's In range list, where the user would look in vain.
        declarationProblem = asError(err);
        this.error(declarationProblem.message);
      }
      if (radio) {
        const shared = radio;
        try {
          shared.declare(parseVirtualDevices(String(def.virtualDevices ?? '')), this.id);
        } catch (err) {
          declarationProblem = asError(err);
          this.error(t('ble-ota-device.errors.virtualDevices', { message: declarationProblem.message }));
        }
        this.on('close', () => shared.undeclare(this.id));
      }
    }

    this.problem = () => (this.backend === 'bluetooth' ? systemBluetoothProblem() : undefined);

    this.prepare = async (deviceOverride) => {
      const device = (deviceOverride ?? this.device).trim();
      if (deviceIsSecret) throw new BleOtaError('INVALID_ARGUMENT', t('ble-ota-device.errors.deviceIsSecret'));
      const problem = this.problem();
      if (problem) throw problem;
      if (declarationProblem) throw declarationProblem;
      // A declared virtual device's process starts when a flow looks for it;
      // any other name is not found, after the scan time, as on a real radio.
      if (this.backend === 'virtual' && device) await sharedVirtualRadio().reach(declaredAs(device));
      return { client: this.adapter.client(timeouts), target: targetOf(device) };
    };

    this.notFoundHint = (deviceOverride) => {
      const device = (deviceOverride ?? this.device).trim();
      if (this.backend !== 'virtual' || device === '' || declarationProblem) return undefined;
      return sharedVirtualRadio().declaration(declaredAs(device)) ? undefined : t('ble-ota-device.errors.notDeclared', { device });
    };
  }

  RED.nodes.registerType('ble-ota-device', BleOtaDeviceNode, { credentials: { secret: { type: 'password' } } });

  localiseAdapterBusy((limit) => t('ble-ota-device.errors.radioQueueFull', { limit }));

  // The edit dialog's Scan button. It drives the radio and connects to every
  // device in range, so it is an action: write permission, as Node-RED's own
  // nodes ask for theirs (a read-only editor user only looks). One editor
  // scan at a time: more could only wait for the radio and delay updates.
  let editorScan = false;
  /** The radio cannot be used on this machine (no adapter, no C compiler for the virtual ESP32): 503, as for a missing service. */
  const UNAVAILABLE: string[] = ['BLUETOOTH_UNAVAILABLE', 'VIRTUAL_DEVICE_UNAVAILABLE'];
  RED.httpAdmin.get('/ble-ota/scan', RED.auth.needsPermission('ble-ota-device.write'), (req, res) => {
    const backend = req.query.backend === 'virtual' ? 'virtual' : 'bluetooth';
    const durationMs = Math.min(Math.max(Number(req.query.duration) || 5, 1), 30) * 1000;
    const adapter = adapterFor(backend);
    if (editorScan) {
      res.status(429).json({ error: { code: 'BUSY', message: t('ble-ota-device.scan.already') } });
      return;
    }
    // A flow's update may hold the radio for minutes: say so now, rather than leave the dialog waiting behind it.
    if (adapter.inUse) {
      res.status(409).json({ error: { code: 'BUSY', message: t('ble-ota-device.scan.busy') } });
      return;
    }
    editorScan = true;
    void (async () => {
      // The virtual radio has the devices declared (device nodes' lists,
      // BLE_OTA_VIRTUAL_DEVICES) and no others. Started before the scan, so
      // that a virtual ESP32 that cannot run says why instead of finding nothing.
      if (backend === 'virtual') await sharedVirtualRadio().startDeclared();
      return adapter.run(() => discoverOtaDevices(adapter.client(), { durationMs, readVersions: true }));
    })()
      .finally(() => (editorScan = false))
      .then(
        (devices) => res.json(devices),
        (err: unknown) => {
          const e = err instanceof BleOtaError ? err : new BleOtaError('BLUETOOTH_UNAVAILABLE', String(err));
          const status = UNAVAILABLE.includes(e.code) ? 503 : e.code === 'BUSY' ? 409 : 500;
          res.status(status).json({ error: { code: e.code, message: e.message } });
        },
      );
  });
};
