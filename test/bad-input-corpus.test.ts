/**
 * The bad-input corpus: every damaged image of
 * test/support/bad-images.ts and every esptool fixture is refused by the
 * client before it connects, with its own error; sent straight to the
 * firmware core of a virtual ESP32 (the client's checks bypassed), in either
 * protocol, it is refused too, and the device still boots its old image.
 */
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { BleOtaClient, OtaConnection } from '../lib/client/ota-client';
import { CommandRefused } from '../lib/client/refusal';
import { BleOtaError, ImageError } from '../lib/errors';
import { buildAppImage } from '../lib/image/app-image-builder';
import { validateImage } from '../lib/image/validate';
import { Command, OTA_COMMAND_UUID, OTA_STREAM_UUID, statusName } from '../lib/protocol/constants';
import { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { VirtualRadio } from '../lib/virtual/virtual-radio';
import { BadInput, fixtureBadImages, generatedBadImages } from './support/bad-images';
import { haveFixtures } from './support/fixtures';

const T = 1500;
const SLOT = 512 * 1024;

function count(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

function show(map: Map<string, number>): string {
  return [...map]
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
}

/** The device runs its first image, confirmed, and nothing else is bootable. */
async function assertOldImageBoots(device: VirtualEsp32, what: string): Promise<void> {
  await device.powerCycle();
  const s = await device.state();
  assert.equal(s.running, 'ota_0', `${what}: runs ${s.running}`);
  assert.equal(s.slots.ota_0.state, 'valid', `${what}: ota_0 ${s.slots.ota_0.state}`);
  assert.ok(!['new', 'pending-verify', 'valid'].includes(s.slots.ota_1.state), `${what}: ota_1 is ${s.slots.ota_1.state}`);
  assert.equal(s.transfer, 'idle', `${what}: transfer ${s.transfer}`);
}

/** BEGIN, the whole stream, END, with the bytes as they are; what the device answered. */
async function sendV2(conn: OtaConnection, data: Buffer): Promise<string> {
  const v2 = conn.v2!;
  await v2.subscribe();
  try {
    const sha256 = createHash('sha256').update(data).digest();
    const answer = await v2.begin({ size: data.length, sha256, chipId: 0, flags: 0 }, T);
    await v2.stream(data, answer.offset, answer.window, answer.maxPacket, T, () => undefined);
    await v2.command(Command.END, T);
    return 'accepted';
  } catch (err) {
    if (err instanceof CommandRefused) return statusName(err.status);
    throw err;
  }
}

/** The seed protocol's upload, with the bytes as they are; the client's error. */
async function sendSeed(conn: OtaConnection, data: Buffer): Promise<string> {
  try {
    await conn.uploadSeed(data);
    return 'accepted';
  } catch (err) {
    if (err instanceof BleOtaError) return err.code;
    throw err;
  }
}

describe('bad-input corpus', function () {
  this.timeout(120_000);
  const generated = generatedBadImages();
  const fixtures = fixtureBadImages();
  const corpus: BadInput[] = [...generated, ...fixtures];

  before(() => {
    console.log(
      `      bad-input corpus: ${corpus.length} inputs (${generated.length} generated, ${fixtures.length} esptool fixtures${haveFixtures ? '' : ': skipped, ../shared/fixtures not present'})`,
    );
  });

  it('the client refuses each before connecting, with its own code and message', async () => {
    const radio = new VirtualRadio();
    const device = await radio.addDevice({ name: 'corpus-client' });
    let connections = 0;
    radio.bindings.on('air-connect', () => connections++);
    const client = new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 1000 } });
    const codes = new Map<string, number>();
    const messages = new Map<string, string>();
    try {
      for (const input of corpus) {
        let thrown: unknown;
        try {
          validateImage(input.data);
        } catch (err) {
          thrown = err;
        }
        assert.ok(thrown instanceof ImageError, `${input.name}: not refused (${String(thrown)})`);
        assert.equal(thrown.code, input.clientCode, `${input.name}: ${thrown.message}`);
        assert.ok(thrown.message.length > 40, `${input.name}: a message that says what is wrong`);
        messages.set(thrown.message, input.name);
        await assert.rejects(client.update({ target: { name: 'corpus-client' }, image: input.data }), (err: BleOtaError) => err.code === input.clientCode);
        count(codes, input.clientCode);
      }
      assert.equal(connections, 0, 'no connection was attempted');
      assert.equal((await device.stats()).writes, 0);
      console.log(`      refused by the client before connecting: ${corpus.length} (${show(codes)}), ${messages.size} different messages`);
    } finally {
      await radio.stopAll();
    }
  });

  it('an image too large for the slot, or for another chip with Bluetooth, is refused after OTA Info, before anything is sent', async () => {
    const radio = new VirtualRadio();
    await radio.addDevice({ name: 'corpus-small', slotSize: 64 * 1024 });
    let sent = 0;
    radio.bindings.on('air-write', (_a: string, uuid: string) => (uuid === OTA_COMMAND_UUID || uuid === OTA_STREAM_UUID) && sent++);
    const client = new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 1000, gattMs: T } });
    try {
      await assert.rejects(
        client.update({ target: { name: 'corpus-small' }, image: buildAppImage({ size: 80 * 1024, seed: 81 }) }),
        (err: BleOtaError) => err.code === 'IMAGE_TOO_LARGE' && /65536/.test(err.message),
      );
      await assert.rejects(
        client.update({ target: { name: 'corpus-small' }, image: buildAppImage({ chipId: 5, size: 16 * 1024, seed: 82 }) }),
        (err: BleOtaError) => err.code === 'IMAGE_WRONG_CHIP' && /ESP32-C3/.test(err.message),
      );
      assert.equal(sent, 0, 'no OTA Command or Stream write');
    } finally {
      await radio.stopAll();
    }
  });

  /** Sends the whole corpus plus what the client cannot judge alone (slot size, the device's chip). */
  const deviceCorpus = (): BadInput[] => [
    ...corpus,
    { name: 'too large for the slot', data: buildAppImage({ size: SLOT + 4096, seed: 83 }), clientCode: 'IMAGE_TOO_LARGE' },
    { name: 'built for the ESP32-C3', data: buildAppImage({ chipId: 5, size: 16 * 1024, seed: 84 }), clientCode: 'IMAGE_WRONG_CHIP' },
  ];

  for (const protocol of ['v2', 'seed'] as const) {
    it(`sent straight to the device (${protocol === 'v2' ? 'protocol v2: BEGIN, stream, END' : 'the seed protocol'}), each is refused and the old image still boots`, async () => {
      const radio = new VirtualRadio();
      const name = `corpus-${protocol}`;
      const device = await radio.addDevice({ name, slotSize: SLOT, restartDelayMs: 10 });
      const client = new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 1000, gattMs: T, verifyMs: 3000, restartMs: 1000 } });
      const answers = new Map<string, number>();
      const inputs = deviceCorpus();
      try {
        for (const input of inputs) {
          const conn = await client.connect({ name });
          let answer: string;
          try {
            answer = protocol === 'v2' ? await sendV2(conn, input.data) : await sendSeed(conn, input.data);
          } finally {
            await conn.close();
          }
          assert.notEqual(answer, 'accepted', `${input.name}: the device took it`);
          count(answers, answer);
          await assertOldImageBoots(device, input.name);
        }
        console.log(`      ${protocol}: ${inputs.length} sent to the device, ${inputs.length} refused (${show(answers)}); after a power cycle each time, the old image boots`);
      } finally {
        await radio.stopAll();
      }
    });
  }
});
