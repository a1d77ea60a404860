/**
 * `npm run test:hardware`: the protocol conformance tests and one update
 * against a real ESP32, through noble's HCI bindings and the adapter the
 * environment names (docs/HARDWARE.md, Testing with a real ESP32). Without
 * BLE_OTA_HW_ADAPTER and BLE_OTA_HW_DEVICE it says how to start it and
 * exits 0; a bad setting exits 2 with what was wrong; failed tests exit 1.
 */
import Mocha from 'mocha';
import { join } from 'node:path';
import { hardwareSetup } from './config';

/** The test files the run loads: the same conformance cases the virtual ESP32 runs. */
export const HARDWARE_SPECS = [join(__dirname, 'real-esp32.hw.js')];

function main(): void {
  const setup = hardwareSetup(process.env);
  if (setup.kind === 'skip') {
    console.log(`test:hardware: skipped: ${setup.message}`);
    return;
  }
  if (setup.kind === 'error') {
    console.error(`test:hardware: ${setup.message}`);
    process.exitCode = 2;
    return;
  }
  // Read by noble when it opens the adapter, on first use.
  process.env.NOBLE_HCI_DEVICE_ID = String(setup.config.adapter);
  console.log(`test:hardware: device ${setup.config.device} through hci${setup.config.adapter}`);
  const mocha = new Mocha({ timeout: 120_000, reporter: 'spec' });
  for (const file of HARDWARE_SPECS) mocha.addFile(file);
  // noble's socket keeps the process alive: leave once the run is over.
  mocha.run((failures) => process.exit(failures > 0 ? 1 : 0));
}

if (require.main === module) main();
