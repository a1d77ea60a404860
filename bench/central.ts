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
import { readFileSync } from 'node:fs';
import { BleOtaClient } from '../lib/client/ota-client';
import type { NobleLike } from '../lib/client/noble-types';
import { loadSystemNoble, releaseSystemBluetooth } from '../lib/noble-loader';
import { VirtualBindings } from '../lib/virtual/bindings';
import type { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { VirtualRadio } from '../lib/virtual/virtual-radio';
import { measure } from './fresh-process';
import { RemoteDevice } from './remote-device';

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
  const { result, cost } = await measure(() => client.update({ target: { name }, image }));
  console.log(JSON.stringify({ backend, bytes: image.length, ...cost, packets: result.packets, mtu: result.mtu }));
  await radio?.stopAll();
  await remote?.stop();
  releaseSystemBluetooth();
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
