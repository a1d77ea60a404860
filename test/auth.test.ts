/**
 * Authenticated updates against keyed virtual ESP32s (the firmware's
 * default build): the right key updates; no key, a wrong key, a replayed
 * request and the seed protocol are each refused, and the device keeps
 * booting its old image; repeated failures lock authentication.
 */
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { BleOtaError } from '../lib/errors';
import { BleOtaClient } from '../lib/client/ota-client';
import { buildAppImage } from '../lib/image/app-image-builder';
import { Command, Feature, OTA_COMMAND_UUID, OTA_CONTROL_UUID, Status } from '../lib/protocol/constants';
import { AttError, VirtualEsp32 } from '../lib/virtual/virtual-device';
import { VirtualRadio } from '../lib/virtual/virtual-radio';

const KEY = randomBytes(32).toString('hex');
const WRONG = randomBytes(32).toString('hex');

function code(expected: string) {
  return (err: unknown) => {
    assert.ok(err instanceof BleOtaError, String(err));
    assert.equal(err.code, expected, err.message);
    assert.ok(!err.message.includes(KEY) && !err.message.includes(WRONG), 'no key in the message');
    return true;
  };
}

describe('authenticated updates (keyed device, the default build)', function () {
  this.timeout(60_000);
  let radio: VirtualRadio;
  let device: VirtualEsp32;
  const image = buildAppImage({ size: 48 * 1024, version: '2.0.0', seed: 5 });
  const newer = buildAppImage({ size: 40 * 1024, version: '3.0.0', seed: 6 });

  before(async function () {
    this.timeout(120_000);
    radio = new VirtualRadio();
    device = await radio.addDevice({ name: 'keyed', authKey: KEY, restartDelayMs: 20 });
  });
  after(() => radio?.stopAll());

  const client = (timeouts = {}) => new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000, gattMs: 2000, ...timeouts } });

  async function unchanged(): Promise<void> {
    const state = await device.state();
    assert.equal(state.transfer, 'idle');
    const other = state.running === 'ota_0' ? 'ota_1' : 'ota_0';
    assert.notEqual(state.slots[other].state, 'new', 'no new image selected');
    assert.equal(state.boot, state.running, 'the device boots what it runs');
  }

  it('advertises AUTH and no seed protocol in OTA Info', async () => {
    const conn = await client().connect({ name: 'keyed' });
    try {
      const info = await conn.v2!.readInfo();
      assert.ok(info.features & Feature.AUTH);
      assert.equal(info.features & Feature.SEED, 0);
    } finally {
      await conn.close();
    }
  });

  it('refuses an update without the key, before anything is written', async () => {
    let streamed = 0;
    const count = (_a: string, uuid: string) => uuid !== OTA_COMMAND_UUID && streamed++;
    radio.bindings.on('air-write', count);
    try {
      await assert.rejects(client().update({ target: { name: 'keyed' }, image }), code('AUTH_REQUIRED'));
    } finally {
      radio.bindings.off('air-write', count);
    }
    assert.equal(streamed, 0, 'no firmware byte went out');
    await unchanged();
  });

  it('refuses a wrong key', async () => {
    await assert.rejects(client().update({ target: { name: 'keyed' }, image, key: WRONG }), code('AUTH_FAILED'));
    await unchanged();
    await device.powerCycle();
    await unchanged();
  });

  it('refuses a malformed key before connecting', async () => {
    await assert.rejects(client().update({ target: { name: 'nobody-here' }, image, key: 'abc' }), code('INVALID_ARGUMENT'));
  });

  it('updates with the right key (BEGIN, END, RESTART and CONFIRM all signed), and a replay of its requests fails', async () => {
    const recorded: Buffer[] = [];
    const record = (_a: string, uuid: string, data: Buffer) => uuid === OTA_COMMAND_UUID && recorded.push(Buffer.from(data));
    radio.bindings.on('air-write', record);
    let result;
    try {
      result = await client().update({ target: { name: 'keyed' }, image, key: KEY });
    } finally {
      radio.bindings.off('air-write', record);
    }
    assert.equal(result.confirmed, true);
    assert.equal(result.runningVersion, '2.0.0');
    const signed = recorded.filter((r) => r[0] !== Command.CHALLENGE);
    assert.deepEqual(
      signed.map((r) => r[0]),
      [Command.BEGIN, Command.END, Command.RESTART, Command.CONFIRM],
    );
    assert.ok(signed.every((r) => r.length === (r[0] === Command.BEGIN ? 41 : 1) + 32), 'each carries a 32-byte MAC');
    assert.equal(recorded.filter((r) => r[0] === Command.CHALLENGE).length, 4, 'one challenge per request');

    // Someone who recorded them sends them again, as they are, on a new link:
    // with no challenge, then after asking for a fresh one.
    const conn = await client().connect({ name: 'keyed' });
    try {
      await conn.v2!.subscribe();
      const begin = signed[0];
      assert.equal((await conn.v2!.exchange(Command.BEGIN, begin, 2000)).status, Status.AUTH_FAILED);
      const challenge = await conn.v2!.exchange(Command.CHALLENGE, Buffer.from([Command.CHALLENGE]), 2000);
      assert.equal(challenge.status, Status.OK);
      assert.equal((await conn.v2!.exchange(Command.BEGIN, begin, 2000)).status, Status.AUTH_FAILED);
    } finally {
      await conn.close();
    }
    await unchanged();
  });

  it('refuses the seed protocol on the default build, in the client and on the device', async () => {
    await assert.rejects(client().update({ target: { name: 'keyed' }, image: newer, key: KEY, protocol: 'seed' }), code('REQUEST_REFUSED'));
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

  it('locks authentication after repeated failures, even for the right key, then lets it in', async () => {
    // A device of its own: the failures above count on the other one.
    await radio.addDevice({ name: 'keyed-lock', authKey: KEY, restartDelayMs: 20 });
    const target = { name: 'keyed-lock' };
    for (let i = 0; i < 4; i++) {
      await assert.rejects(client().update({ target, image: newer, key: WRONG }), code('AUTH_FAILED'));
    }
    await assert.rejects(client().update({ target, image: newer, key: WRONG }), (err: unknown) => {
      code('AUTH_LOCKED')(err);
      assert.match((err as Error).message, /for 1 s/);
      return true;
    });
    await assert.rejects(client().update({ target, image: newer, key: KEY }), code('AUTH_LOCKED'));
    await new Promise((r) => setTimeout(r, 1100));
    const result = await client().update({ target, image: newer, key: KEY });
    assert.equal(result.runningVersion, '3.0.0');
  });
});
