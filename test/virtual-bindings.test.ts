/**
 * The virtual radio's noble bindings and their schedulers: a device taken
 * out of range leaves nothing of the bindings behind on it, however often
 * it comes and goes, in real time (paced or not) and in the benchmark's
 * virtual time; put back in range, it is found and answers as one that
 * never moved.
 */
import { strict as assert } from 'node:assert';
import type { EventEmitter } from 'node:events';
import { VirtualTime } from '../bench/virtual-time';
import type { NobleLike } from '../lib/client/noble-types';
import { BleOtaClient } from '../lib/client/ota-client';
import { VirtualBindings } from '../lib/virtual/bindings';
import { preset } from '../lib/virtual/link-model';
import { RealTime, Scheduler } from '../lib/virtual/scheduler';
import { VirtualEsp32 } from '../lib/virtual/virtual-device';

function listeners(emitter: EventEmitter): Record<string, number> {
  return Object.fromEntries(emitter.eventNames().map((e) => [String(e), emitter.listenerCount(e)]));
}

function nobleOn(bindings: VirtualBindings): NobleLike {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require('@abandonware/noble/with-bindings') as (b: VirtualBindings) => NobleLike)(bindings);
}

describe('virtual bindings: a device out of range leaves nothing behind', function () {
  this.timeout(60_000);
  let device: VirtualEsp32;
  before(async () => {
    device = await VirtualEsp32.start({ name: 'bindings-a' });
  });
  after(() => device.stop());

  const schedulers: Array<[string, () => Scheduler]> = [
    ['real time', () => new RealTime()],
    ['virtual time', () => new VirtualTime(preset('linux-noble-esp32'))],
  ];
  for (const [name, scheduler] of schedulers) {
    it(`${name}: added and removed 200 times, the device has the listeners it had, and answers when back in range`, async () => {
      const baseline = listeners(device);
      const warnings: Error[] = [];
      const onWarning = (w: Error) => warnings.push(w);
      process.on('warning', onWarning);
      try {
        const bindings = new VirtualBindings(undefined, scheduler());
        for (let i = 0; i < 200; i++) {
          bindings.addDevice(device);
          bindings.pace(device, preset('linux-noble-bt41-esp32'));
          bindings.removeDevice(device);
        }
        assert.deepEqual(listeners(device), baseline);
        assert.deepEqual(bindings.devices, []);

        bindings.addDevice(device);
        bindings.addDevice(device); // added twice: still one in range
        assert.equal(bindings.devices.length, 1);
        const client = new BleOtaClient({ noble: nobleOn(bindings), timeouts: { scanMs: 10_000, connectMs: 10_000, gattMs: 10_000 } });
        const connection = await client.connect({ name: 'bindings-a' });
        assert.equal((await connection.info()).name, 'bindings-a');
        await connection.close();
        bindings.removeDevice(device);
        assert.deepEqual(listeners(device), baseline);
        await new Promise((resolve) => setImmediate(resolve)); // warnings come a tick later
        assert.deepEqual(
          warnings.filter((w) => w.name === 'MaxListenersExceededWarning').map((w) => w.message),
          [],
        );
      } finally {
        process.off('warning', onWarning);
      }
    });
  }
});
