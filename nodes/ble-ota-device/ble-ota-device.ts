/**
 * ble-ota-device (config node): which ESP32 to update and through which
 * radio: the system's Bluetooth adapter (noble) or the virtual ESP32s that
 * run the firmware's OTA core on this machine.
 */
import type { Timeouts } from '../../lib/client/ota-client';
import { systemBluetoothProblem } from '../../lib/noble-loader';
import { sharedVirtualRadio } from '../../lib/virtual/virtual-radio';
import { adapterFor } from '../shared/adapter';
import type { RED } from '../shared/red';
import { DeviceNode, DeviceNodeDef, targetOf } from './device-node';

function seconds(value: string | number | undefined, fallback: number): number {
  const n = Number(value);
  return Number.isFinite(n) && n > 0 ? n * 1000 : fallback;
}

export = function register(RED: RED): void {
  function BleOtaDeviceNode(this: DeviceNode, def: DeviceNodeDef) {
    RED.nodes.createNode(this, def);
    this.backend = def.backend === 'virtual' ? 'virtual' : 'bluetooth';
    this.device = String(def.device ?? '').trim();
    this.adapter = adapterFor(this.backend);
    const timeouts: Partial<Timeouts> = {
      scanMs: seconds(def.scanTimeout, 15_000),
      gattMs: seconds(def.operationTimeout, 5_000),
    };
    this.timeouts = timeouts;

    this.problem = () => (this.backend === 'bluetooth' ? systemBluetoothProblem() : undefined);

    this.prepare = async (deviceOverride) => {
      const device = (deviceOverride ?? this.device).trim();
      const problem = this.problem();
      if (problem) throw problem;
      // A virtual device named in a flow comes into range when first used.
      if (this.backend === 'virtual' && device) await sharedVirtualRadio().ensureDevice(device);
      return { client: this.adapter.client(timeouts), target: targetOf(device) };
    };
  }

  RED.nodes.registerType('ble-ota-device', BleOtaDeviceNode);
};
