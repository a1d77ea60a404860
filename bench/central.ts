/**
 * One update from a fresh process, for the benchmark: what a user's Node.js
 * spends on the central's side of a whole update (scan, connect, discovery,
 * transfer, restart, reconnect, confirm), on one backend:
 *
 *   node central.js virtual <image.bin>   noble on the virtual bindings, a virtual ESP32
 *                                         whose driver runs in this process
 *   node central.js remote <image.bin>    the same, with the virtual ESP32's driver in a
 *                                         process of its own (remote-device.ts): this
 *                                         process is the central's alone
 *   node --require preload.js central.js system <image.bin>
 *                                         noble's own HCI code (an emulated controller)
 *
 * Prints one JSON line: CPU (user + system) and wall time of the update
 * call, and its peak RSS above the process's RSS just before it (the image
 * already read: the caller holds it anyway).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { BleOtaClient } from '../lib/client/ota-client';
import type { NobleLike } from '../lib/client/noble-types';
import { loadSystemNoble, releaseSystemBluetooth } from '../lib/noble-loader';
import { VirtualBindings } from '../lib/virtual/bindings';
import type { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { VirtualRadio } from '../lib/virtual/virtual-radio';
import { RemoteDevice } from './remote-device';

/**
 * Starts the kernel's peak-RSS count afresh (Linux: clear_refs 5 resets
 * VmHWM), so the peak read afterwards is the update's. False where that is
 * not possible: the peak then is the process's since it started.
 */
function resetPeakRss(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

/** The kernel's peak RSS of this process, in bytes. */
function peakRss(): number {
  try {
    const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    if (hwm) return Number(hwm[1]) * 1024;
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS * 1024;
}

type WithBindings = (bindings: VirtualBindings) => NobleLike;

async function remoteNoble(name: string): Promise<{ noble: NobleLike; stop: () => Promise<void> }> {
  const device = await RemoteDevice.start({ name, slotSize: 0x500000, restartDelayMs: 20 });
  const bindings = new VirtualBindings();
  // VirtualBindings reads and calls only what RemoteDevice provides (see remote-device.ts).
  bindings.addDevice(device as unknown as VirtualEsp32);
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const withBindings = require('@abandonware/noble/with-bindings') as WithBindings;
  return { noble: withBindings(bindings), stop: () => device.stop() };
}

async function main(): Promise<void> {
  const [backend, file, name = 'esp32'] = process.argv.slice(2);
  const image = readFileSync(file);
  const radio = backend === 'virtual' ? new VirtualRadio() : undefined;
  if (radio) await radio.addDevice({ name, slotSize: 0x500000, restartDelayMs: 20 });
  const remote = backend === 'remote' ? await remoteNoble(name) : undefined;
  const client = new BleOtaClient({ noble: radio ? radio.noble : remote ? remote.noble : loadSystemNoble(), timeouts: { scanMs: 10_000 } });
  const peakReset = resetPeakRss();
  const rssBefore = process.memoryUsage().rss;
  const cpu = process.cpuUsage();
  const started = process.hrtime.bigint();
  const result = await client.update({ target: { name }, image });
  const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
  const used = process.cpuUsage(cpu);
  const peakGrowthBytes = peakRss() - rssBefore;
  console.log(
    JSON.stringify({ backend, bytes: image.length, cpuMs: (used.user + used.system) / 1000, wallMs, peakGrowthBytes, peakReset, packets: result.packets, mtu: result.mtu }),
  );
  await radio?.stopAll();
  await remote?.stop();
  releaseSystemBluetooth();
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
