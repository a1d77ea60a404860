/**
 * One update from a fresh process, for the benchmark: what a user's Node.js
 * spends on the central's side of a whole update (scan, connect, discovery,
 * transfer, restart, reconnect, confirm), on one backend:
 *
 *   node central.js virtual <image.bin>   noble on the virtual bindings, a virtual ESP32
 *   node --require preload.js central.js system <image.bin>
 *                                         noble's own HCI code (an emulated controller)
 *
 * Prints one JSON line: CPU (user + system) and wall time of the update call.
 */
import { readFileSync } from 'node:fs';
import { BleOtaClient } from '../lib/client/ota-client';
import { loadSystemNoble, releaseSystemBluetooth } from '../lib/noble-loader';
import { VirtualRadio } from '../lib/virtual/virtual-radio';

async function main(): Promise<void> {
  const [backend, file, name = 'esp32'] = process.argv.slice(2);
  const image = readFileSync(file);
  const radio = backend === 'virtual' ? new VirtualRadio() : undefined;
  if (radio) await radio.addDevice({ name, slotSize: 0x500000, restartDelayMs: 20 });
  const client = new BleOtaClient({ noble: radio ? radio.noble : loadSystemNoble(), timeouts: { scanMs: 10_000 } });
  const cpu = process.cpuUsage();
  const started = process.hrtime.bigint();
  const result = await client.update({ target: { name }, image });
  const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
  const used = process.cpuUsage(cpu);
  console.log(JSON.stringify({ backend, bytes: image.length, cpuMs: (used.user + used.system) / 1000, wallMs, packets: result.packets, mtu: result.mtu }));
  await radio?.stopAll();
  releaseSystemBluetooth();
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
