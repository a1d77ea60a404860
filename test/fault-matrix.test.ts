/**
 * The fault matrix: for every phase of a v2 update and
 * every fault, the client ends with a specific error or recovers by
 * resuming, and after a power cycle the virtual device boots a valid image:
 * the one it ran, or the complete new one, never anything else.
 *
 * Each case has its own radio (its own noble) and device, so cases run side
 * by side; images are small and timeouts short to keep the whole matrix fast.
 * The devices are our firmware's default build (a provisioned key, signed
 * images only), so every update opens a session (HELLO) and has the device
 * prove its OTA Info (INFO), each a phase of its own, and END checks the
 * image's signature.
 *
 * The same faults at the phases of a patched transfer (a delta update,
 * docs/DELTA.md): the device applies the patch as it arrives, into the slot
 * it does not run, so whatever happens it boots the image it ran or the
 * complete new one, and the client resumes the patch or ends with the same
 * specific error as for a full image.
 */
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BleOtaClient, UpdateResult } from '../lib/client/ota-client';
import { BleOtaError, BleOtaErrorCode } from '../lib/errors';
import { computePatch } from '../lib/delta/diff';
import { Command, OTA_COMMAND_UUID, OTA_INFO_UUID, OTA_STREAM_UUID } from '../lib/protocol/constants';
import { encodedLength } from '../lib/protocol/deflate-chunks';
import { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { VirtualRadio } from '../lib/virtual/virtual-radio';
import { oneFunctionChanged } from './support/code-images';
import { OWNER, ownedDevice, signedImage } from './support/owner';

const PHASES = [
  'connect',
  'MTU exchange',
  'discovery',
  'info read',
  'authentication',
  'info proof',
  'BEGIN',
  'data at 0',
  'data at 25 %',
  'data at 50 %',
  'last data packet',
  'END',
  'RESTART',
  'reconnect after restart',
  'CONFIRM',
] as const;
type PhaseName = (typeof PHASES)[number];

const FAULTS = ['disconnect', 'no answer', 'lost notification', 'flash write error', 'power cut', 'power loss in a flash operation'] as const;
type FaultName = (typeof FAULTS)[number];

/**
 * How the client must end: 'ok' where it recovers (reconnecting, resuming,
 * asking OTA Info where the device is), else the specific error.
 */
function expected(phase: PhaseName, fault: FaultName): BleOtaErrorCode | 'ok' {
  switch (fault) {
    case 'flash write error':
      // A firmware block, or the OTA data at END (confirm flag) and CONFIRM (image valid).
      return 'TRANSFER_FAILED';
    case 'disconnect':
      // Also while the first connection is being made: nothing was sent, it connects again.
      return 'ok';
    case 'no answer':
      // A connection never established, a discovery never answered: connected again; a lost MTU exchange leaves 23.
      return 'ok';
    case 'lost notification':
      return 'ok';
    case 'power cut':
      // After the restart, before CONFIRM: the unconfirmed image is rolled back.
      return phase === 'reconnect after restart' ? 'ROLLED_BACK' : 'ok';
    case 'power loss in a flash operation':
      // Up to RESTART, the cut loses nothing the device needs: before RESTART selects the
      // image, the old one boots and the client sends again. After the restart, the next
      // flash operation is CONFIRM's: cut, the image is rolled back, and the client says so.
      return phase === 'reconnect after restart' || phase === 'CONFIRM' ? 'ROLLED_BACK' : 'ok';
  }
}

const IMAGE_SIZE = 24 * 1024;
const CONCURRENCY = 6;
const TIMEOUTS = { scanMs: 1500, connectMs: 500, gattMs: 400, verifyMs: 800, restartMs: 800 };

interface Outcome {
  phase: PhaseName;
  fault: FaultName;
  injected: boolean;
  result: 'ok' | BleOtaErrorCode | string;
  message: string;
  resumes: number;
  /** After the power cycle: which image runs, and its slot state. */
  runs: 'old' | 'new' | 'other';
  slotState: string;
}

/** Calls `inject` once, when the phase begins; returns a function that stops listening. `streamLength`: the bytes the stream carries (the image, or the patch's DEFLATE chunks). */
function onPhase(radio: VirtualRadio, device: VirtualEsp32, streamLength: number, phase: PhaseName, inject: (how: 'sync' | 'after') => void) {
  const b = radio.bindings;
  let fired = false;
  let restartWritten = false;
  const fire = () => {
    if (fired) return;
    fired = true;
    inject('sync');
  };
  const listeners: Array<[string, (...args: never[]) => void]> = [];
  const on = (event: string, fn: (...args: never[]) => void) => {
    b.on(event, fn as (...args: unknown[]) => void);
    listeners.push([event, fn]);
  };
  const mine = (address: string) => address === device.address;
  switch (phase) {
    case 'connect':
    case 'MTU exchange':
      on('air-connect', (address: string) => mine(address) && fire());
      break;
    case 'discovery':
      on('air-discover', (address: string) => mine(address) && fire());
      break;
    case 'info read':
      on('air-read', (address: string, uuid: string) => mine(address) && uuid === OTA_INFO_UUID && fire());
      break;
    case 'reconnect after restart':
      on('air-write', (address: string, uuid: string, data: Buffer) => {
        if (mine(address) && uuid === OTA_COMMAND_UUID && data[0] === Command.RESTART) restartWritten = true;
      });
      on('air-connect', (address: string) => mine(address) && restartWritten && fire());
      break;
    default: {
      const command: Partial<Record<PhaseName, number>> = {
        authentication: Command.HELLO, // the first one: before BEGIN
        'info proof': Command.INFO, // the first one: before BEGIN
        BEGIN: Command.BEGIN,
        END: Command.END,
        RESTART: Command.RESTART,
        CONFIRM: Command.CONFIRM,
      };
      const dataAt: Partial<Record<PhaseName, (offset: number, length: number) => boolean>> = {
        'data at 0': (o) => o === 0,
        'data at 25 %': (o) => o >= streamLength / 4,
        'data at 50 %': (o) => o >= streamLength / 2,
        'last data packet': (o, n) => o + n === streamLength,
      };
      on('air-write', (address: string, uuid: string, data: Buffer) => {
        if (!mine(address)) return;
        if (uuid === OTA_COMMAND_UUID && data[0] === command[phase]) fire();
        const at = dataAt[phase];
        if (uuid === OTA_STREAM_UUID && at && at(data.readUInt32LE(0), data.length - 4)) fire();
      });
    }
  }
  return {
    get fired() {
      return fired;
    },
    stop: () => {
      for (const [event, fn] of listeners) b.off(event, fn as (...args: unknown[]) => void);
    },
  };
}

/** The fault, injected at the start of the phase. */
function injector(radio: VirtualRadio, device: VirtualEsp32, phase: PhaseName, fault: FaultName): () => void {
  const later = (fn: () => void) => setImmediate(fn);
  const swallow = (p: Promise<unknown>) => void p.catch(() => undefined);
  const isData = phase.startsWith('data') || phase === 'last data packet';
  const linkPhase = phase === 'connect' || phase === 'MTU exchange' || phase === 'reconnect after restart';
  switch (fault) {
    case 'disconnect':
      // As the link comes up, or right after the operation reached the device.
      return () => (linkPhase ? radio.bindings.once('connect', () => radio.bindings.dropLink(device)) : later(() => radio.bindings.dropLink(device)));
    case 'no answer':
      return () => {
        if (phase === 'MTU exchange') radio.bindings.stall(device, 'mtu');
        else if (phase === 'discovery') radio.bindings.stall(device, 'discover-services');
        else if (phase === 'connect' || phase === 'reconnect after restart') swallow(device.fault({ kind: 'no-answer', request: 'connect', count: 1 }));
        else if (phase === 'info read') swallow(device.fault({ kind: 'no-answer', request: 'read', count: 1 }));
        else swallow(device.fault({ kind: 'no-answer', request: isData ? 'write-cmd' : 'write', count: 1 }));
      };
    case 'lost notification':
      return () => swallow(device.fault({ kind: 'drop-notify', count: 1 }));
    case 'flash write error':
      return () => swallow(device.fault({ kind: 'flash-write-fail', after: 1 }));
    case 'power cut':
      // The central sees the link drop at once; the device loses its RAM and boots.
      return () =>
        linkPhase
          ? radio.bindings.once('connect', () => {
              radio.bindings.dropLink(device);
              swallow(device.powerCycle());
            })
          : phase === 'RESTART'
            ? // Before the device handles RESTART: once it has, its own restart and the
              // cut would race (a restarted image cut before CONFIRM is the next phase's case).
              swallow(device.powerCycle())
            : later(() => {
                // Before discovery ends (it needs no round trip to the device), the link is gone.
                if (phase === 'discovery') radio.bindings.dropLink(device);
                swallow(device.powerCycle());
              });
    case 'power loss in a flash operation':
      return () => swallow(device.fault({ kind: 'power-loss-after', flashOps: 1 }));
  }
}

/**
 * One case. `patched`: the device runs the old build of a one-function
 * change, and the client sends the new build as a patch against it
 * (deflated: patches travel in DEFLATE chunks); otherwise the full image,
 * not deflated.
 */
async function runCase(phase: PhaseName, fault: FaultName, seed: number, patched = false): Promise<Outcome> {
  const radio = new VirtualRadio();
  const name = `fm-${patched ? 'p' : ''}${seed}`;
  try {
    const pair = patched ? oneFunctionChanged(IMAGE_SIZE, seed, { projectName: 'virtual-esp32', signingKeys: OWNER.signingKey }) : undefined;
    let first: string | undefined;
    if (pair) {
      first = join(mkdtempSync(join(tmpdir(), 'ble-ota-fm-')), 'first.bin');
      writeFileSync(first, pair.old);
    }
    const device = await radio.addDevice(ownedDevice({ name, restartDelayMs: 10, window: 4096, ...(first ? { image: first } : {}) }));
    const before = await device.state();
    const old = await device.readFlash(before.running, 0, before.slots[before.running].size);
    const image = pair ? pair.new : signedImage({ size: IMAGE_SIZE, projectName: 'virtual-esp32', version: '2.0.0', seed });
    // The base is the file as flashed, signature sector included (the slot's state names the image without it).
    const streamLength = pair ? encodedLength(computePatch(pair.old, image)) : image.length;
    const client = new BleOtaClient({ noble: radio.noble, timeouts: TIMEOUTS });
    const trigger = onPhase(radio, device, streamLength, phase, injector(radio, device, phase, fault));

    let result: Outcome['result'] = 'ok';
    let message = '';
    let resumes = 0;
    let update: UpdateResult | undefined;
    const hung = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the client hung')), 20_000).unref());
    try {
      const how = pair ? { baseImage: pair.old } : { compress: false };
      update = await Promise.race([client.update({ target: { name }, image, secret: OWNER.secret, ...how }), hung]);
      resumes = update.resumes;
    } catch (err) {
      result = err instanceof BleOtaError ? err.code : `not a BleOtaError: ${String(err)}`;
      message = (err as Error).message;
    } finally {
      trigger.stop();
    }

    // Whatever happened: power off and on, then see what boots.
    await device.fault({ kind: 'clear' });
    await device.powerCycle();
    const after = await device.state();
    assert.ok(after.running === 'ota_0' || after.running === 'ota_1', `${phase} / ${fault}: nothing boots (${JSON.stringify(after)})`);
    const slot = after.slots[after.running];
    const running = await device.readFlash(after.running, 0, Math.max(old.length, image.length));
    const runs =
      running.subarray(0, old.length).equals(old) && slot.size === old.length
        ? 'old'
        : running.subarray(0, image.length).equals(image) && slot.size === image.length
          ? 'new'
          : 'other';
    if (update) {
      assert.equal(update.confirmed, true, `${phase} / ${fault}: the client succeeded without a confirmed image`);
      assert.equal(update.authenticated, true, `${phase} / ${fault}: the client succeeded without the device's proof`);
      // The patch went, from the start or resumed: no fault here is one a full image would fix.
      if (pair && update.delivery?.method !== 'none') assert.equal(update.delivery?.method, 'patch', `${phase} / ${fault}: ${update.delivery?.reason}`);
    }
    if (first) rmSync(join(first, '..'), { recursive: true, force: true });
    return { phase, fault, injected: trigger.fired, result, message, resumes, runs, slotState: slot.state };
  } finally {
    await radio.stopAll();
  }
}

async function pool<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) {
        const i = next++;
        results[i] = await fn(items[i]);
      }
    }),
  );
  return results;
}

/** The phases of a patched transfer: those where what goes over the air, and what the device does with it, is the patch's. */
const PATCH_PHASES: PhaseName[] = ['BEGIN', 'data at 0', 'data at 25 %', 'data at 50 %', 'last data packet', 'END', 'RESTART'];

for (const patched of [false, true])
  describe(patched ? 'fault matrix: every phase of a patched transfer × every fault' : 'fault matrix: every phase of an update × every fault', function () {
    this.timeout(180_000);
    let outcomes: Outcome[] = [];
    const phases = patched ? PATCH_PHASES : PHASES;

    before(async function () {
      const cases = phases.flatMap((phase) => FAULTS.map((fault) => ({ phase, fault })));
      outcomes = await pool(cases, CONCURRENCY, (c) => runCase(c.phase, c.fault, (patched ? 500 : 100) + cases.indexOf(c), patched));
      const width = Math.max(...phases.map((p) => p.length));
      console.log(`      ${'phase'.padEnd(width)} | ${FAULTS.join(' | ')}`);
      for (const phase of phases) {
        const row = FAULTS.map((fault) => {
          const o = outcomes.find((x) => x.phase === phase && x.fault === fault)!;
          const cell = `${o.result === 'ok' ? (o.resumes ? `ok+${o.resumes}r` : 'ok') : o.result} ${o.runs}`;
          return cell.padEnd(fault.length);
        });
        console.log(`      ${phase.padEnd(width)} | ${row.join(' | ')}`);
      }
      const injected = outcomes.filter((o) => o.injected).length;
      console.log(`      fault matrix: ${outcomes.length} cases, ${injected} faults injected`);
    });

    it('every fault was injected at its phase', () => {
      const missed = outcomes.filter((o) => !o.injected).map((o) => `${o.phase} / ${o.fault}`);
      assert.deepEqual(missed, []);
    });

    for (const fault of FAULTS) {
      it(`${fault}: at each phase the client recovers, or ends with its specific error`, () => {
        const wrong = outcomes
          .filter((o) => o.fault === fault && o.result !== expected(o.phase, fault))
          .map((o) => `${o.phase}: ${o.result}, expected ${expected(o.phase, fault)} (${o.message})`);
        assert.deepEqual(wrong, []);
      });
    }

    it('a client that failed left the device running its old image', () => {
      for (const o of outcomes.filter((x) => x.result !== 'ok')) {
        assert.equal(o.runs, 'old', `${o.phase} / ${o.fault}: ${o.result}`);
      }
    });

    it('after a power cycle, the device boots the old image or the complete new one, never anything else', () => {
      for (const o of outcomes) {
        assert.notEqual(o.runs, 'other', `${o.phase} / ${o.fault}: the running slot holds neither image`);
        assert.ok(['valid', 'pending-verify'].includes(o.slotState), `${o.phase} / ${o.fault}: running slot ${o.slotState}`);
      }
    });

    it('a client that succeeded left the new image running, confirmed', () => {
      for (const o of outcomes.filter((x) => x.result === 'ok')) {
        assert.equal(o.runs, 'new', `${o.phase} / ${o.fault}`);
        assert.equal(o.slotState, 'valid', `${o.phase} / ${o.fault}`);
      }
    });
  });

/**
 * The idle erase (docs/PROTOCOL.md, What is erased when): the device erases
 * the next update's slot while it has nothing to do. A power loss at any
 * erase step, or an update that comes before the erase is done, still ends
 * with the old image running and an update that succeeds.
 */
describe('fault matrix: the idle erase', function () {
  this.timeout(60_000);

  async function update(radio: VirtualRadio, name: string, seed: number) {
    const image = signedImage({ size: IMAGE_SIZE, projectName: 'virtual-esp32', version: '2.0.0', seed });
    const client = new BleOtaClient({ noble: radio.noble, timeouts: TIMEOUTS });
    const result = await client.update({ target: { name }, image, secret: OWNER.secret, compress: false });
    assert.equal(result.confirmed, true);
    return image;
  }

  async function runsImage(device: VirtualEsp32, image: Buffer): Promise<boolean> {
    const state = await device.state();
    return state.slots[state.running].state === 'valid' && (await device.readFlash(state.running, 0, image.length)).equals(image);
  }

  for (const cut of [1, 2, 3]) {
    it(`power lost in erase step ${cut}: the old image boots, and the next update succeeds`, async () => {
      const radio = new VirtualRadio();
      const name = `fm-idle-cut-${cut}`;
      try {
        const device = await radio.addDevice(ownedDevice({ name, restartDelayMs: 10, window: 4096 }));
        const before = await device.state();
        const old = await device.readFlash(before.running, 0, before.slots[before.running].size);
        await device.fault({ kind: 'power-loss-after', flashOps: cut });
        // The cut takes the answer with it; the device boots again.
        await assert.rejects(device.idle());
        assert.equal(await device.faultsHit(), 1);
        const after = await device.state();
        assert.equal(after.running, before.running);
        assert.ok(await runsImage(device, old));
        // Erased up to the cut or not at all, the transfer erases what it needs (odd cuts: the erase redone first).
        if (cut % 2 === 1) assert.equal((await device.idle()).more, false);
        const image = await update(radio, name, 300 + cut);
        assert.ok(await runsImage(device, image));
      } finally {
        await radio.stopAll();
      }
    });
  }

  it('an update that comes while the erase is under way succeeds; one after it erases nothing', async () => {
    const radio = new VirtualRadio();
    const name = 'fm-idle-mid';
    try {
      const device = await radio.addDevice(ownedDevice({ name, restartDelayMs: 10, window: 4096, flashEvents: true }));
      let erases = 0;
      device.on('flash', (sectors: number, _pages: number, blocks: number) => (erases += sectors + blocks));
      // One step of the slot's erase (a 4 KB sector: a client is connected), then the update.
      await device.connect(247);
      assert.deepEqual(await device.idle(1), { steps: 1, more: true });
      await device.disconnect();
      const first = await update(radio, name, 310);
      assert.ok(await runsImage(device, first));
      assert.ok(erases > 0, 'the transfer erased what the idle step had not');
      // Confirmed: the old image's slot is erased while idle, and the next transfer only programs pages.
      const steps = await device.idle();
      assert.ok(steps.steps > 0);
      assert.equal(steps.more, false);
      erases = 0;
      const second = await update(radio, name, 311);
      assert.ok(await runsImage(device, second));
      assert.equal(erases, 0, 'BEGIN and the stream erased nothing');
    } finally {
      await radio.stopAll();
    }
  });
});
