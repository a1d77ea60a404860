/**
 * Giving up on a connection being made (a cancel, a connect timeout) must
 * not leave that connection behind: noble cannot
 * disconnect a peripheral that is still connecting, the connection is made
 * afterwards, nobody owns it, and the device, connected, stops advertising.
 * The client cancels the attempt and drops a connection made all the same.
 *
 * Before any of that, the client waits for the adapter: a cancel ends that
 * wait at once, and an adapter that cannot be used says what to do without
 * making the caller wait out the scan timeout.
 */
import { strict as assert } from 'node:assert';
import { EventEmitter } from 'node:events';
import { mock } from 'node:test';
import { BleOtaClient } from '../lib/client/ota-client';
import type { NoblePeripheral } from '../lib/client/noble-types';
import type { NobleLike } from '../lib/client/noble-types';
import { findPeripheral, POWERED_OFF_GRACE_MS, scanDevices, waitPoweredOn } from '../lib/client/scanner';
import { BleOtaError } from '../lib/errors';
import { buildAppImage } from '../lib/image/app-image-builder';
import { peripheralId } from '../lib/virtual/bindings';
import { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { VirtualRadio } from '../lib/virtual/virtual-radio';

const TIMEOUTS = { scanMs: 3000, gattMs: 2000, restartMs: 3000 };

describe('cancelling while a connection is being made', function () {
  this.timeout(60_000);
  let radio: VirtualRadio;
  let client: BleOtaClient;

  before(async function () {
    this.timeout(120_000);
    radio = new VirtualRadio();
    client = new BleOtaClient({ noble: radio.noble, timeouts: TIMEOUTS });
  });

  after(() => radio.stopAll());

  /** What the bindings reported for the device's connection attempts: null for a connection made, else the error. */
  function connectOutcomes(device: VirtualEsp32) {
    const outcomes: Array<string | null> = [];
    const onConnect = (id: string, err: Error | null) => {
      if (id === peripheralId(device.address)) outcomes.push(err ? err.message : null);
    };
    radio.bindings.on('connect', onConnect);
    return { outcomes, stop: () => radio.bindings.off('connect', onConnect) };
  }

  /** The noble peripheral of the device, as the update finds it. */
  function capturePeripheral(device: VirtualEsp32) {
    const seen: { peripheral?: NoblePeripheral } = {};
    const onDiscover = (p: NoblePeripheral) => {
      if (p.address === device.address) seen.peripheral = p;
    };
    radio.noble.on('discover', onDiscover);
    return { seen, stop: () => radio.noble.off('discover', onDiscover) };
  }

  /** Aborts the controller the moment the central sends its connection request to the device. */
  function abortOnConnect(device: VirtualEsp32, controller: AbortController) {
    const onAirConnect = (address: string) => {
      if (address === device.address) controller.abort();
    };
    radio.bindings.on('air-connect', onAirConnect);
    return () => radio.bindings.off('air-connect', onAirConnect);
  }

  async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
    await assert.rejects(p, (err: unknown) => {
      assert.ok(err instanceof BleOtaError, `a BleOtaError, got ${String(err)}`);
      assert.equal(err.code, code, err.message);
      return true;
    });
  }

  /** Nothing of the attempt outlives the failed update, the device advertises, and it updates. */
  async function expectNothingLeft(device: VirtualEsp32, peripheral: NoblePeripheral | undefined, name: string, seed: number) {
    assert.equal(radio.bindings.isConnected(device), false, 'no connection stays open');
    assert.ok(peripheral, 'the update found the device');
    assert.notEqual(peripheral.state, 'connected');
    assert.equal(peripheral.listenerCount('connect'), 0, 'nothing still listens for the connection');
    assert.equal(peripheral.listenerCount('disconnect'), 0);

    // Advertising again: a scan finds it (fails with DEVICE_NOT_FOUND otherwise).
    const found = await findPeripheral(radio.noble, { address: device.address }, TIMEOUTS.scanMs);
    assert.equal(found.address, device.address);

    const image = buildAppImage({ size: 64 * 1024, projectName: 'cancel-connect', version: `3.0.${seed}`, seed });
    const result = await client.update({ target: { name }, image });
    assert.equal(result.protocol, 'v2');
    assert.equal(result.confirmed, true);
    assert.equal(result.runningVersion, `3.0.${seed}`);
    assert.equal(radio.bindings.isConnected(device), false);
  }

  it('cancelled before the device answers: the attempt is cancelled, the device advertises and the next update succeeds', async () => {
    const name = 'cc-cancel';
    const device = await radio.addDevice({ name, restartDelayMs: 10 });
    const controller = new AbortController();
    const stopAbort = abortOnConnect(device, controller);
    const outcomes = connectOutcomes(device);
    const capture = capturePeripheral(device);
    try {
      const image = buildAppImage({ size: 64 * 1024, projectName: 'cancel-connect', version: '2.0.0', seed: 1 });
      await expectCode(client.update({ target: { name }, image, signal: controller.signal }), 'CANCELLED');
    } finally {
      stopAbort();
      capture.stop();
      outcomes.stop();
    }
    // The controller ended the attempt (LE Create Connection Cancel), no connection was reported.
    assert.deepEqual(outcomes.outcomes, ['Unknown Connection Identifier (0x2)']);
    await expectNothingLeft(device, capture.seen.peripheral, name, 1);
  });

  it('a connection made after the cancel (the cancel came too late) is dropped at once', async () => {
    const name = 'cc-late';
    const device = await radio.addDevice({ name, restartDelayMs: 10 });
    radio.bindings.lateConnect(device);
    const controller = new AbortController();
    const stopAbort = abortOnConnect(device, controller);
    const outcomes = connectOutcomes(device);
    const capture = capturePeripheral(device);
    const disconnects: number[] = [];
    const onDisconnect = (id: string, reason: number) => {
      if (id === peripheralId(device.address)) disconnects.push(reason);
    };
    radio.bindings.on('disconnect', onDisconnect);
    try {
      const image = buildAppImage({ size: 64 * 1024, projectName: 'cancel-connect', version: '2.0.0', seed: 2 });
      await expectCode(client.update({ target: { name }, image, signal: controller.signal }), 'CANCELLED');
    } finally {
      stopAbort();
      capture.stop();
      outcomes.stop();
      radio.bindings.off('disconnect', onDisconnect);
    }
    // The connection was made after the cancel, and the client ended it.
    assert.deepEqual(outcomes.outcomes, [null]);
    assert.deepEqual(disconnects, [0x16]);
    await expectNothingLeft(device, capture.seen.peripheral, name, 2);
  });

  it('a connect timeout has the same guarantee, for a connection made late', async () => {
    const name = 'cc-timeout';
    const device = await radio.addDevice({ name, restartDelayMs: 10 });
    // Held until the client gives up: the timeout surely comes first. One attempt
    // (resumeAttempts: 0): an update connects again after a timeout, and would succeed.
    radio.bindings.lateConnect(device);
    const outcomes = connectOutcomes(device);
    const capture = capturePeripheral(device);
    try {
      const image = buildAppImage({ size: 64 * 1024, projectName: 'cancel-connect', version: '2.0.0', seed: 3 });
      await expectCode(client.update({ target: { name }, image, timeouts: { connectMs: 300 }, resumeAttempts: 0 }), 'GATT_TIMEOUT');
    } finally {
      capture.stop();
      outcomes.stop();
    }
    assert.deepEqual(outcomes.outcomes, [null]);
    await expectNothingLeft(device, capture.seen.peripheral, name, 3);
  });

  it('a disconnect event during the attempt (one the previous link sent late, or twice) leaves no connection behind: the update finishes', async () => {
    const name = 'cc-stray';
    const device = await radio.addDevice({ name, restartDelayMs: 10 });
    const bindings = radio.bindings as unknown as { connect: (id: string, parameters: unknown) => void };
    const connect = bindings.connect.bind(bindings);
    let connects = 0;
    bindings.connect = (id, parameters) => {
      // The reconnection after RESTART: the restart's disconnect is reported again as it starts.
      if (id === peripheralId(device.address) && ++connects === 2) radio.bindings.emit('disconnect', id, 0x16);
      connect(id, parameters);
    };
    try {
      const image = buildAppImage({ size: 64 * 1024, projectName: 'cancel-connect', version: '2.0.0', seed: 5 });
      const result = await client.update({ target: { name }, image });
      assert.ok(connects >= 3, 'the update connected again after the failed attempt');
      assert.equal(result.confirmed, true);
      assert.equal(result.runningVersion, '2.0.0');
    } finally {
      bindings.connect = connect;
    }
    assert.equal(radio.bindings.isConnected(device), false, 'no connection stays open');
  });

  it('cancelled before noble was asked to connect: the call ends at once, without waiting for an attempt that never started', async function () {
    // Far longer than this test may take: waiting for it would fail the test.
    this.timeout(30_000);
    const name = 'cc-before';
    await radio.addDevice({ name, restartDelayMs: 10 });
    const slow = new BleOtaClient({ noble: radio.noble, timeouts: { ...TIMEOUTS, gattMs: 120_000 } });
    const controller = new AbortController();
    const outcomes: string[] = [];
    const onConnect = (id: string) => outcomes.push(id);
    radio.bindings.on('air-connect', onConnect);
    try {
      await expectCode(slow.connect({ name }, { signal: controller.signal, onProgress: (p) => p.phase === 'connecting' && controller.abort() }), 'CANCELLED');
    } finally {
      radio.bindings.off('air-connect', onConnect);
    }
    assert.deepEqual(outcomes, [], 'no connection was asked for');
  });

  it('a connect timeout on a request the device never answered: the cancel ends the attempt', async () => {
    const name = 'cc-lost';
    const device = await radio.addDevice({ name, restartDelayMs: 10 });
    await device.fault({ kind: 'no-answer', request: 'connect', count: 1 });
    // One attempt, as above.
    const outcomes = connectOutcomes(device);
    const capture = capturePeripheral(device);
    try {
      const image = buildAppImage({ size: 64 * 1024, projectName: 'cancel-connect', version: '2.0.0', seed: 4 });
      await expectCode(client.update({ target: { name }, image, timeouts: { connectMs: 300 }, resumeAttempts: 0 }), 'GATT_TIMEOUT');
    } finally {
      capture.stop();
      outcomes.stop();
    }
    assert.deepEqual(outcomes.outcomes, ['Unknown Connection Identifier (0x2)']);
    await expectNothingLeft(device, capture.seen.peripheral, name, 4);
  });
});

/** An adapter whose state the test sets; it records the scans started. */
class FakeAdapter extends EventEmitter implements NobleLike {
  scans = 0;
  constructor(public state: string) {
    super();
  }
  startScanning(): void {
    this.scans++;
  }
  stopScanning(): void {}
  change(state: string): void {
    this.state = state;
    this.emit('stateChange', state);
  }
}

/** Whether a promise has settled, once what is already queued has run (no timer involved). */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  p.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((resolve) => setImmediate(resolve));
  return done;
}

describe('waiting for the adapter', () => {
  afterEach(() => mock.timers.reset());

  it('a cancel ends an update waiting for the adapter at once, and the radio is free for the next one', async () => {
    const adapter = new FakeAdapter('unknown');
    const client = new BleOtaClient({ noble: adapter, timeouts: { scanMs: 600_000 } });
    const image = buildAppImage({ size: 8192, projectName: 'cancel-connect', version: '1.0.0' });
    const controller = new AbortController();
    adapter.on('newListener', (event) => event === 'stateChange' && setImmediate(() => controller.abort()));
    await assert.rejects(client.update({ target: { name: 'cc-wait' }, image, signal: controller.signal }), { code: 'CANCELLED' });
    assert.equal(adapter.listenerCount('stateChange'), 0, 'nothing still waits for the adapter');
    assert.equal(adapter.scans, 0);
    // An update waiting for the radio would wait out the first one's scan timeout.
    adapter.removeAllListeners('newListener');
    adapter.state = 'unauthorized';
    await assert.rejects(client.update({ target: { name: 'cc-wait' }, image }), { code: 'BLUETOOTH_UNAVAILABLE' });
  });

  it('an adapter without permission or without LE fails at once, saying so', async () => {
    mock.timers.enable({ apis: ['setTimeout'] });
    await assert.rejects(waitPoweredOn(new FakeAdapter('unauthorized'), 600_000), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'BLUETOOTH_UNAVAILABLE');
      assert.match(err.message, /not allowed to use Bluetooth/);
      return true;
    });
    await assert.rejects(waitPoweredOn(new FakeAdapter('unsupported'), 600_000), /does not support Bluetooth Low Energy/);
  });

  it(`an adapter powered off fails with "turn it on" once it stayed off ${POWERED_OFF_GRACE_MS} ms, not at the scan timeout`, async () => {
    mock.timers.enable({ apis: ['setTimeout'] });
    const adapter = new FakeAdapter('poweredOff');
    const waiting = waitPoweredOn(adapter, 600_000);
    mock.timers.tick(POWERED_OFF_GRACE_MS - 1);
    assert.equal(await settled(waiting), false);
    mock.timers.tick(1);
    await assert.rejects(waiting, (err: Error & { code?: string }) => {
      assert.equal(err.code, 'BLUETOOTH_UNAVAILABLE');
      assert.match(err.message, /powered off; turn it on/);
      return true;
    });
    assert.equal(adapter.listenerCount('stateChange'), 0);

    // A wait shorter than the grace ends at its timeout, with the same advice.
    const short = waitPoweredOn(new FakeAdapter('poweredOff'), 100);
    mock.timers.tick(100);
    await assert.rejects(short, /powered off; turn it on/);
  });

  it('an adapter reported off while the system brings it up is waited for: the update goes on when it comes on', async () => {
    mock.timers.enable({ apis: ['setTimeout'] });
    const atStart = new FakeAdapter('poweredOff');
    const waiting = waitPoweredOn(atStart, 600_000);
    mock.timers.tick(POWERED_OFF_GRACE_MS - 1);
    atStart.change('poweredOn');
    await waiting;

    // As noble reports it on Linux: unknown, off while hci0 is down, then on.
    const booting = new FakeAdapter('unknown');
    const wait2 = waitPoweredOn(booting, 600_000);
    booting.change('poweredOff');
    mock.timers.tick(POWERED_OFF_GRACE_MS - 1);
    booting.change('poweredOn');
    await wait2;
    assert.equal(booting.listenerCount('stateChange'), 0);
  });

  it('an adapter that never reports a state fails at the timeout, naming its state', async () => {
    mock.timers.enable({ apis: ['setTimeout'] });
    const waiting = waitPoweredOn(new FakeAdapter('unknown'), 15_000);
    mock.timers.tick(14_999);
    assert.equal(await settled(waiting), false);
    mock.timers.tick(1);
    await assert.rejects(waiting, /did not become ready within 15000 ms \(state: unknown\)/);
  });

  it('a scan cancelled before it starts, or while the adapter is not ready, scans nothing and ends at once', async () => {
    mock.timers.enable({ apis: ['setTimeout'] });
    const ready = new FakeAdapter('poweredOn');
    await assert.rejects(scanDevices(ready, 600_000, AbortSignal.abort()), { code: 'CANCELLED', message: /scan was cancelled/ });
    await assert.rejects(findPeripheral(ready, { name: 'x' }, 600_000, AbortSignal.abort()), { code: 'CANCELLED' });
    assert.equal(ready.scans, 0);

    const off = new FakeAdapter('poweredOff');
    const controller = new AbortController();
    const scanning = scanDevices(off, 600_000, controller.signal);
    controller.abort();
    await assert.rejects(scanning, { code: 'CANCELLED' });
    assert.equal(off.scans, 0);
    assert.equal(off.listenerCount('stateChange'), 0);
  });
});
