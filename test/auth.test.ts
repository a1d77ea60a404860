/**
 * Authenticated updates, tried as an attacker would, against virtual ESP32s
 * built as our firmware's default (a provisioned key derived from the
 * owner's fleet secret, signed images only):
 * - the owner updates, every answer proven, and the result says so;
 * - no secret, another secret, an unprovisioned device: refused, nothing written;
 * - an impostor using the target's name (no authentication, or its own
 *   key) gets nothing and makes no flow report success;
 * - a recorded update and every image yield no key: no window of their
 *   bytes reproduces a recorded MAC;
 * - a request recorded for one device is refused by another and on a new link;
 * - a device of the fleet posing as another proves only its own id: a
 *   device id set refuses it, and the device that comes back after RESTART
 *   must be the one updated;
 * - forged stream events (they carry no MAC) neither fail nor stall an update;
 * - a stranger's junk writes end the stranger's link, not the owner's next
 *   one, and a stranger holding a fresh device through its confirm window
 *   does not make it roll back.
 * - the secret and the keys derived from it do not print: not in an
 *   error, not when a connection or its session is logged.
 */
import { strict as assert } from 'node:assert';
import { createHmac, randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { BleOtaError } from '../lib/errors';
import { BleOtaClient } from '../lib/client/ota-client';
import { deviceKey, parseDeviceId } from '../lib/client/session';
import { buildAppImage } from '../lib/image/app-image-builder';
import { Command, Event, Feature, MAC_REQUEST, nobleUuid, OTA_COMMAND_UUID, OTA_CONTROL_UUID, OTA_SERVICE_UUID, OTA_STREAM_UUID, Status } from '../lib/protocol/constants';
import { peripheralId } from '../lib/virtual/bindings';
import { addressFromName, AttError, VirtualDeviceOptions, VirtualEsp32 } from '../lib/virtual/virtual-device';
import { VirtualRadio } from '../lib/virtual/virtual-radio';
import { OWNER, ownedDevice, signedImage } from './support/owner';

const STRANGER_SECRET = randomBytes(32).toString('hex');

function code(expected: string) {
  return (err: unknown) => {
    assert.ok(err instanceof BleOtaError, String(err));
    assert.equal(err.code, expected, err.message);
    assert.ok(!err.message.includes(OWNER.secret) && !err.message.includes(STRANGER_SECRET), 'no secret in the message');
    return true;
  };
}

describe('authenticated updates, from the attacker side', function () {
  this.timeout(90_000);
  let radio: VirtualRadio;
  let device: VirtualEsp32;
  const image = signedImage({ size: 48 * 1024, version: '2.0.0', seed: 5 });
  const newer = signedImage({ size: 40 * 1024, version: '3.0.0', seed: 6 });

  before(async function () {
    this.timeout(120_000);
    radio = new VirtualRadio();
    device = await radio.addDevice(ownedDevice({ name: 'owned', restartDelayMs: 20 }));
  });
  after(() => radio?.stopAll());

  const client = (timeouts = {}) => new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000, gattMs: 2000, ...timeouts } });

  async function unchanged(d = device): Promise<void> {
    const state = await d.state();
    assert.equal(state.transfer, 'idle');
    const other = state.running === 'ota_0' ? 'ota_1' : 'ota_0';
    assert.notEqual(state.slots[other].state, 'new', 'no new image selected');
    assert.equal(state.boot, state.running, 'the device boots what it runs');
  }

  /** Counts what goes to a device besides reads and OTA Command requests: firmware bytes. */
  function countStream(address: string): { count: () => number; stop: () => void } {
    let n = 0;
    const on = (a: string, uuid: string) => a === address && uuid === OTA_STREAM_UUID && n++;
    radio.bindings.on('air-write', on);
    return { count: () => n, stop: () => radio.bindings.off('air-write', on) };
  }

  it('advertises AUTH and SIGNED, names its signing key, and serves no seed protocol', async () => {
    const conn = await client().connect({ name: 'owned' });
    try {
      const info = await conn.v2!.readInfo();
      assert.ok(info.features & Feature.AUTH);
      assert.ok(info.features & Feature.SIGNED);
      assert.equal(info.features & Feature.SEED, 0);
      assert.ok(info.deviceId?.equals(parseDeviceId(device.address)));
      assert.ok(info.signingKeyDigest);
    } finally {
      await conn.close();
    }
  });

  it('refuses without the secret, with another secret, and with a malformed one, before anything is written', async () => {
    const stream = countStream(device.address);
    try {
      await assert.rejects(client().update({ target: { name: 'owned' }, image }), code('AUTH_REQUIRED'));
      await assert.rejects(client().update({ target: { name: 'owned' }, image, secret: STRANGER_SECRET }), code('AUTH_FAILED'));
      await assert.rejects(client().update({ target: { name: 'nobody-here' }, image, secret: 'abc' }), code('INVALID_ARGUMENT'));
    } finally {
      stream.stop();
    }
    assert.equal(stream.count(), 0, 'no firmware byte went out');
    await unchanged();
  });

  it('a secret pasted as the device id is not repeated in the error, which says what a device id is', async () => {
    for (const deviceId of [OWNER.secret, ` ${OWNER.secret.slice(0, 40)}\n`]) {
      await assert.rejects(client().update({ target: { name: 'owned' }, image, secret: OWNER.secret, deviceId }), (err: unknown) => {
        code('INVALID_ARGUMENT')(err);
        const message = (err as Error).message;
        for (let i = 0; i + 12 <= OWNER.secret.length; i++) assert.ok(!message.includes(OWNER.secret.slice(i, i + 12)), `no 12 digits of the secret in: ${message}`);
        assert.match(message, /12 hex digits\) as esptool\.py read_mac prints it, e\.g\. 24:0a:c4:12:34:56/);
        return true;
      });
    }
    assert.throws(() => parseDeviceId(OWNER.secret), /64 characters, all hex digits.*form of a fleet secret, which goes in the secret field/);
    // A mistyped id is short enough to be no secret: it is shown, so the user sees the typo.
    assert.throws(() => parseDeviceId('24:0a:c4:12:34:5g'), /^"24:0a:c4:12:34:5g" is no device id: give the chip's MAC address/);
  });

  it('logging a connection, its session or its policy shows no secret and no key', async () => {
    const conn = await client().connect({ name: 'owned' }, { secret: OWNER.secret });
    try {
      assert.equal((await conn.info()).authenticated, true, 'the session is open: its keys are held');
      const key = deviceKey(Buffer.from(OWNER.secret, 'hex'), parseDeviceId(device.address));
      const printed = [inspect(conn, { depth: Infinity }), inspect(conn.policy, { showHidden: true }), JSON.stringify(conn.policy)];
      for (const text of printed) {
        for (const bytes of [Buffer.from(OWNER.secret, 'hex'), key]) {
          assert.ok(!text.includes(bytes.toString('hex')) && !text.includes(bytes.toString('hex', 0, 8).replace(/(..)(?!$)/g, '$1 ')), `no key bytes in ${text.slice(0, 200)}`);
        }
      }
      assert.match(printed[0], /\[fleet secret, 32 bytes, hidden\][^]*\[session key, 32 bytes, hidden\]/, 'the session was inspected, its key hidden');
      assert.ok(conn.policy.secret?.equals(Buffer.from(OWNER.secret, 'hex')), 'the client still reads the secret');
    } finally {
      await conn.close();
    }
  });

  it('the owner updates: every request and answer carries a MAC, and the result says authenticated', async () => {
    const result = await client().update({ target: { name: 'owned' }, image, secret: OWNER.secret });
    assert.equal(result.confirmed, true);
    assert.equal(result.authenticated, true);
    assert.equal(result.runningVersion, '2.0.0');
    assert.equal((await device.state()).slots[(await device.state()).running].state, 'valid');
  });

  it('a recorded update and the images give away no key: no window of their bytes reproduces a recorded MAC', async () => {
    const seen: Buffer[] = [];
    const requests: Buffer[] = [];
    const onWrite = (_a: string, uuid: string, data: Buffer) => {
      seen.push(Buffer.from(data));
      if (uuid === OTA_COMMAND_UUID) requests.push(Buffer.from(data));
    };
    const onNotify = (_a: string, _u: string, data: Buffer) => seen.push(Buffer.from(data));
    const onRead = (_id: string, _s: string, _c: string, data: Buffer) => seen.push(Buffer.from(data));
    radio.bindings.on('air-write', onWrite);
    radio.bindings.on('air-notify', onNotify);
    radio.bindings.on('read', onRead);
    try {
      await client().update({ target: { name: 'owned' }, image: newer, secret: OWNER.secret });
    } finally {
      radio.bindings.off('air-write', onWrite);
      radio.bindings.off('air-notify', onNotify);
      radio.bindings.off('read', onRead);
    }
    const air = Buffer.concat(seen);
    const key = deviceKey(Buffer.from(OWNER.secret, 'hex'), parseDeviceId(device.address));
    const flash = await device.readFlash('ota_0', 0, 64 * 1024);
    for (const [where, bytes] of [
      ['the air', air],
      ['the images', Buffer.concat([image, newer, flash])],
    ] as const) {
      assert.equal(bytes.indexOf(Buffer.from(OWNER.secret, 'hex')), -1, `the fleet secret is in ${where}`);
      assert.equal(bytes.indexOf(key), -1, `the device key is in ${where}`);
    }
    // An attacker tries every 32-byte window as the device key (or as the
    // session key) against a recorded BEGIN: its MAC covers the request
    // with sequence number 0 or 1 after HELLO.
    const begin = requests.find((r) => r[0] === Command.BEGIN)!;
    const body = begin.subarray(0, begin.length - 32);
    const mac = begin.subarray(begin.length - 32);
    const candidates = Buffer.concat([air, image, newer]);
    let hits = 0;
    for (let i = 0; i + 32 <= candidates.length; i += 1) {
      const k = candidates.subarray(i, i + 32);
      for (const seq of [0, 1]) {
        const prefix = Buffer.from([MAC_REQUEST, seq, 0, 0, 0]);
        if (createHmac('sha256', k).update(prefix).update(body).digest().equals(mac)) hits++;
      }
    }
    assert.equal(hits, 0);
    assert.ok(candidates.length > 100_000, 'a real amount of material was tried');
  });

  it('a recorded request is refused on a new link, and by another device of the same fleet', async () => {
    const other = await radio.addDevice(ownedDevice({ name: 'owned-2', restartDelayMs: 20 }));
    const recorded: Buffer[] = [];
    const record = (a: string, uuid: string, data: Buffer) => a === device.address && uuid === OTA_COMMAND_UUID && recorded.push(Buffer.from(data));
    radio.bindings.on('air-write', record);
    try {
      // Another valid image, so it is written (not skipped).
      await client().update({ target: { name: 'owned' }, image: signedImage({ size: 30 * 1024, version: '3.1.0', seed: 8 }), secret: OWNER.secret });
    } finally {
      radio.bindings.off('air-write', record);
    }
    const begin = recorded.find((r) => r[0] === Command.BEGIN)!;
    for (const target of ['owned', 'owned-2']) {
      const conn = await client().connect({ name: target });
      try {
        await conn.v2!.subscribe();
        // As it was, and in a fresh session of the attacker's own (whose key it cannot know).
        assert.equal((await conn.v2!.exchange(Command.BEGIN, begin, 2000)).status, Status.AUTH_FAILED, `${target}: replayed BEGIN`);
      } finally {
        await conn.close();
      }
    }
    await unchanged(other);
  });

  it('an impostor with the target name gets nothing: no image, no "updated", no "already current"', async () => {
    // A device of someone else's, advertising the same name: a development build
    // (no authentication), then one provisioned with the stranger's own secret.
    const impostorRadio = new VirtualRadio();
    try {
      const open = await impostorRadio.addDevice({ name: 'owned', restartDelayMs: 20 });
      const c = new BleOtaClient({ noble: impostorRadio.noble, timeouts: { scanMs: 3000, gattMs: 2000 } });
      let streamed = 0;
      const on = (_a: string, uuid: string) => uuid === OTA_STREAM_UUID && streamed++;
      impostorRadio.bindings.on('air-write', on);
      const refusal = await c.update({ target: { name: 'owned' }, image, secret: OWNER.secret, skipIfRunning: true }).then(
        () => assert.fail('the impostor was updated'),
        (err: unknown) => err,
      );
      assert.ok(code('DEVICE_NOT_AUTHENTICATED')(refusal));
      // Said once, and no claim that its OTA Info could not be read: it was read, and proves nothing.
      assert.match((refusal as Error).message, /^owned \(.*\) cannot prove it is your device: .*Nothing was sent\. [^]*What the device runs is not known\.$/);
      assert.equal((refusal as Error).message.split('Nothing was sent').length, 2, (refusal as Error).message);
      await assert.rejects(c.update({ target: { name: 'owned' }, image, secret: OWNER.secret, protocol: 'seed' }), code('DEVICE_NOT_AUTHENTICATED'));
      assert.equal(streamed, 0, 'the image never went to the impostor');
      await unchanged(open);
      await open.stop();

      await impostorRadio.addDevice({ name: 'owned', fleetSecret: STRANGER_SECRET, restartDelayMs: 20 });
      await assert.rejects(c.update({ target: { name: 'owned' }, image, secret: OWNER.secret }), code('AUTH_FAILED'));
      assert.equal(streamed, 0);
      impostorRadio.bindings.off('air-write', on);

      // Explicitly allowed: the update goes through, and says it was not authenticated.
      const allowed = await impostorRadio.addDevice({ name: 'dev-board', restartDelayMs: 20 });
      const r = await c.update({ target: { name: 'dev-board' }, image: buildAppImage({ version: '9.0.0' }), secret: OWNER.secret, allowUnauthenticated: true });
      assert.equal(r.authenticated, false);
      assert.equal(r.runningVersion, '9.0.0');
      await allowed.stop();
    } finally {
      await impostorRadio.stopAll();
    }
  });

  it('a device of the fleet posing as another (its key stolen) proves only its own id: a device id set refuses it', async () => {
    const swapRadio = new VirtualRadio();
    const STOLEN = '24:0a:c4:bb:bb:01';
    try {
      // Our own device, its key read out of its flash, now advertising the name of the target.
      await swapRadio.addDevice(ownedDevice({ name: 'boiler', deviceId: STOLEN, restartDelayMs: 20 }));
      const c = new BleOtaClient({ noble: swapRadio.noble, timeouts: { scanMs: 3000, gattMs: 2000 } });
      let streamed = 0;
      swapRadio.bindings.on('air-write', (_a: string, uuid: string) => uuid === OTA_STREAM_UUID && streamed++);
      const boilerId = '24:0a:c4:12:34:56';
      const refusal = await c.update({ target: { name: 'boiler' }, image, secret: OWNER.secret, deviceId: boilerId }).then(
        () => assert.fail('the device with another id was updated'),
        (err: unknown) => err,
      );
      assert.ok(code('WRONG_DEVICE')(refusal));
      const message = (refusal as Error).message;
      assert.ok(message.includes(STOLEN) && message.includes(boilerId), message);
      // Nothing went to it, said once; its OTA Info was read (the id is from it), so no claim that it could not be.
      assert.match(message, /^boiler \(.*\) is device .*Nothing was sent to it\. [^]*What the device runs is not known\.$/);
      assert.equal(message.split(/Nothing (?:more )?was sent/).length, 2, message);
      assert.equal(streamed, 0, 'nothing was sent to it');
      // By name alone, "one of your devices" is all the proof says; the result names which.
      const r = await c.update({ target: { name: 'boiler' }, image, secret: OWNER.secret });
      assert.equal(r.authenticated, true);
      assert.equal(r.device.id, STOLEN);
    } finally {
      await swapRadio.stopAll();
    }
  });

  /**
   * At RESTART, the updated device goes out of range and `other` takes its
   * name and address: the client's reconnection finds that one.
   */
  async function swapAtRestart(other: VirtualDeviceOptions, expected: string): Promise<void> {
    const swapRadio = new VirtualRadio();
    const impostor = await VirtualEsp32.start({ ...other, name: 'swapped', address: addressFromName('swapped'), restartDelayMs: 20 });
    try {
      const target = await swapRadio.addDevice(ownedDevice({ name: 'swapped', restartDelayMs: 20 }));
      swapRadio.bindings.on('air-write', (address: string, uuid: string, data: Buffer) => {
        if (address !== target.address || uuid !== OTA_COMMAND_UUID || data[0] !== Command.RESTART) return;
        swapRadio.bindings.removeDevice(target);
        swapRadio.bindings.addDevice(impostor);
      });
      const c = new BleOtaClient({ noble: swapRadio.noble, timeouts: { scanMs: 3000, gattMs: 2000 } });
      // allowUnauthenticated: for devices that cannot prove themselves, not for a link after one that did.
      await assert.rejects(c.update({ target: { name: 'swapped' }, image, secret: OWNER.secret, allowUnauthenticated: true }), code(expected));
      await unchanged(impostor);
    } finally {
      swapRadio.bindings.removeDevice(impostor);
      await impostor.stop();
      await swapRadio.stopAll();
    }
  }

  it('the device that comes back after RESTART must be the one that was updated', async () => {
    // Another device of the fleet: it proves its own id.
    await swapAtRestart(ownedDevice({ deviceId: '24:0a:c4:bb:bb:02' }), 'WRONG_DEVICE');
    // A development board claiming the updated device's id, which it cannot prove.
    await swapAtRestart({ deviceId: addressFromName('swapped') }, 'DEVICE_NOT_AUTHENTICATED');
  });

  it('a device id asked for must be proven, even where unauthenticated devices are allowed', async () => {
    const claimRadio = new VirtualRadio();
    try {
      // A development board (no authentication) that claims the id of the owner's device.
      const claimed = '24:0a:c4:12:34:57';
      await claimRadio.addDevice({ name: 'claimer', deviceId: claimed, restartDelayMs: 20 });
      const c = new BleOtaClient({ noble: claimRadio.noble, timeouts: { scanMs: 3000, gattMs: 2000 } });
      await assert.rejects(
        c.update({ target: { name: 'claimer' }, image: buildAppImage({ version: '9.0.0' }), secret: OWNER.secret, allowUnauthenticated: true, deviceId: claimed }),
        code('DEVICE_NOT_AUTHENTICATED'),
      );
      // Without the id, allowed as asked: the result says it was not authenticated.
      const r = await c.update({ target: { name: 'claimer' }, image: buildAppImage({ version: '9.0.0' }), secret: OWNER.secret, allowUnauthenticated: true });
      assert.equal(r.authenticated, false);
      assert.equal(r.device.id, claimed);
    } finally {
      await claimRadio.stopAll();
    }
  });

  it('forged events on the air (a FAILED, a flood of RESYNCs, an early last ACK) neither end an update with a false verdict nor stop it', async () => {
    // Events carry no MAC: anyone in range can send a notification that looks like one.
    const forgeRadio = new VirtualRadio();
    try {
      const target = await forgeRadio.addDevice(ownedDevice({ name: 'forged', restartDelayMs: 20 }));
      const inject = (data: Buffer) => forgeRadio.bindings.emit('read', peripheralId(target.address), nobleUuid(OTA_SERVICE_UUID), nobleUuid(OTA_COMMAND_UUID), data, true);
      let packets = 0;
      forgeRadio.bindings.on('air-write', (_a: string, uuid: string) => {
        if (uuid !== OTA_STREAM_UUID) return;
        packets++;
        if (packets === 10) {
          // "The device refused the image's signature", a RESYNC back to 0 twenty times,
          // and "the device has it all" (an ACK at the image's end).
          inject(Buffer.from([Event.FAILED, Status.BAD_SIGNATURE, 0, 0, 0, 0]));
          for (let i = 0; i < 20; i++) inject(Buffer.from([Event.RESYNC, 0, 0, 0, 0]));
          const end = Buffer.alloc(5);
          end[0] = Event.ACK;
          end.writeUInt32LE(image.length, 1);
          inject(end);
        }
      });
      const c = new BleOtaClient({ noble: forgeRadio.noble, timeouts: { scanMs: 3000, gattMs: 2000 } });
      const r = await c.update({ target: { name: 'forged' }, image, secret: OWNER.secret, compress: false });
      assert.ok(packets > 10, 'the forged events came mid-stream');
      assert.equal(r.confirmed, true);
      assert.equal(r.runningVersion, '2.0.0');
    } finally {
      await forgeRadio.stopAll();
    }
  });

  it('ACKs that run ahead of a device that keeps nothing end the update after the rest was sent again twice, not in a stream without end', async () => {
    // Interference drops every stream packet while someone on the air acknowledges each one.
    const forgeRadio = new VirtualRadio();
    try {
      const target = await forgeRadio.addDevice(ownedDevice({ name: 'jammed', restartDelayMs: 20 }));
      const bindings = forgeRadio.bindings as unknown as { write: (id: string, s: string, c: string, data: Buffer, withoutResponse: boolean) => void };
      const write = bindings.write.bind(bindings);
      let passes = 0;
      const harness = new AbortController();
      bindings.write = (id, service, chr, data, withoutResponse) => {
        if (chr !== nobleUuid(OTA_STREAM_UUID)) return write(id, service, chr, data, withoutResponse);
        const offset = data.readUInt32LE(0);
        // A bound for the test alone, should the client never stop.
        if (offset === 0 && ++passes > 20) harness.abort();
        const ack = Buffer.alloc(5);
        ack[0] = Event.ACK;
        ack.writeUInt32LE(offset + data.length - 4, 1);
        setImmediate(() => forgeRadio.bindings.emit('read', peripheralId(target.address), nobleUuid(OTA_SERVICE_UUID), nobleUuid(OTA_COMMAND_UUID), ack, true));
      };
      const runningBefore = (await target.state()).running;
      const c = new BleOtaClient({ noble: forgeRadio.noble, timeouts: { scanMs: 3000, gattMs: 2000 } });
      const image = signedImage({ size: 16 * 1024, version: '2.0.0', seed: 5 });
      const err = await c.update({ target: { name: 'jammed' }, image, secret: OWNER.secret, compress: false, delta: false, resumeAttempts: 1, signal: harness.signal }).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(err instanceof BleOtaError, String(err));
      assert.equal(err.code, 'GATT_TIMEOUT', err.message);
      assert.match(err.message, /The device has \d+ bytes, not all \d+, after sending the rest again twice/);
      // Three passes on the first connection and three on the one reconnection allowed.
      assert.ok(passes <= 6, `the image went ${passes} times`);
      assert.equal(err.device?.runs, 'old', err.message);
      assert.equal((await target.state()).running, runningBefore, 'the device runs its old image');
    } finally {
      await forgeRadio.stopAll();
    }
  });

  it('a device never provisioned takes no update from anyone', async () => {
    await radio.addDevice({ name: 'unprovisioned', allowUnauthenticated: false, signingKey: OWNER.signingKey, restartDelayMs: 20 });
    await assert.rejects(client().update({ target: { name: 'unprovisioned' }, image, secret: OWNER.secret }), code('NOT_PROVISIONED'));
    await assert.rejects(client().update({ target: { name: 'unprovisioned' }, image }), code('AUTH_REQUIRED'));
  });

  it("a stranger's junk writes end the stranger's link; the owner updates right after", async () => {
    const target = await radio.addDevice(ownedDevice({ name: 'owned-junk', restartDelayMs: 20 }));
    for (let round = 0; round < 4; round++) {
      await target.connect(247);
      const dropped = new Promise<number>((resolve) => target.once('disconnected', resolve));
      await target.subscribe(OTA_COMMAND_UUID, true);
      for (const junk of ['04', '3e', '0200']) {
        await target.write(OTA_COMMAND_UUID, Buffer.from(junk, 'hex'), false).catch(() => undefined);
      }
      assert.equal(await dropped, 0x13, 'the device ended the link');
    }
    const result = await client().update({ target: { name: 'owned-junk' }, image, secret: OWNER.secret });
    assert.equal(result.runningVersion, '2.0.0');
    assert.equal(result.authenticated, true);
  });

  it('a stranger holding a freshly updated device through its confirm window does not make it roll back', async () => {
    const target = await radio.addDevice(ownedDevice({ name: 'owned-hold', restartDelayMs: 20, confirmWindowMs: 3000 }));
    // The owner's client goes away once the device restarts (as a gateway
    // that lost power would), and the moment the device boots the new
    // image a stranger takes the link and keeps it, saying nothing, for
    // longer than the whole confirm window.
    const held = new Promise<boolean>((resolve) =>
      target.prependOnceListener('boot', () => {
        void (async () => {
          const got = await target.connect(247).then(
            () => true,
            () => false,
          );
          await new Promise((r) => setTimeout(r, 4500));
          if (got) await target.disconnect();
          resolve(got);
        })();
      }),
    );
    const gone = new AbortController();
    await assert.rejects(
      client().update({
        target: { name: 'owned-hold' },
        image: newer,
        secret: OWNER.secret,
        signal: gone.signal,
        onProgress: (p) => p.phase === 'confirming' && gone.abort(),
      }),
      code('CANCELLED'),
    );
    assert.equal(await held, true, 'the stranger held the device after its restart');
    // The stranger is gone: the image still waits for its owner, who confirms it.
    const conn = await client().connect({ name: 'owned-hold' }, { secret: OWNER.secret });
    try {
      const { info, authenticated } = await conn.v2!.provenInfo(2000);
      assert.equal(authenticated, true);
      assert.equal(info.app.version, '3.0.0', 'not rolled back');
      await conn.confirm();
    } finally {
      await conn.close();
    }
    const state = await target.state();
    assert.equal(state.slots[state.running].state, 'valid');
  });

  it('the seed protocol stays off on the default build, in the client and on the device', async () => {
    await assert.rejects(client().update({ target: { name: 'owned' }, image: newer, secret: OWNER.secret, protocol: 'seed' }), code('DEVICE_NOT_AUTHENTICATED'));
    // Straight to the device, past any client check.
    await device.connect(247);
    try {
      await assert.rejects(device.write(OTA_CONTROL_UUID, Buffer.from([0x01]), false), (err: unknown) => {
        assert.ok(err instanceof AttError, String(err));
        assert.equal(err.attCode, 0x03, 'Write Not Permitted');
        return true;
      });
    } finally {
      await device.disconnect();
    }
    await unchanged();
  });
});
