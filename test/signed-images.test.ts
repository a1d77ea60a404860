/**
 * Signed images, as an attacker who can put any bytes on the air would try
 * them, against virtual ESP32s that take only the owner's signed images
 * (the firmware's default build, ESP-IDF's signed-app verification with the
 * key of the running image):
 * - a flow with the owner's public key refuses unsigned, foreign and
 *   tampered images before the radio is used;
 * - a client that knows no key still refuses them before sending anything,
 *   from the key digest the device names;
 * - a client that skips every check gets each refused by the device itself
 *   at END (BAD_SIGNATURE), which keeps booting its old image;
 * - an older signed image (lower secure_version) is refused the same ways;
 * - the owner's image, RSA-3072 or ECDSA P-256 signed, goes through whole.
 */
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { formatInfo, infoView } from '../lib/cli/output';
import { BleOtaClient } from '../lib/client/ota-client';
import { CommandRefused } from '../lib/client/refusal';
import { BleOtaError } from '../lib/errors';
import { buildAppImage } from '../lib/image/app-image-builder';
import { parseEspImage } from '../lib/image/esp-image';
import { generateSigningKey, publicKeyPem, signImage } from '../lib/image/signature';
import { Command, OTA_STREAM_UUID, Status } from '../lib/protocol/constants';
import { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { VirtualRadio } from '../lib/virtual/virtual-radio';
import { OWNER, ownedDevice, signedImage } from './support/owner';

const STRANGER_KEY = generateSigningKey('ecdsa256');

function code(expected: string) {
  return (err: unknown) => {
    assert.ok(err instanceof BleOtaError, String(err));
    assert.equal(err.code, expected, err.message);
    return true;
  };
}

/** A valid signed image whose bytes were changed after signing, the image's own checksum and hash fixed up. */
function tampered(): Buffer {
  const good = signedImage({ size: 20 * 1024, version: '2.0.0', seed: 11 });
  const other = buildAppImage({ size: 20 * 1024, version: '6.6.6', seed: 12 });
  const parsed = parseEspImage(good);
  assert.equal(parseEspImage(other).imageLength, parsed.imageLength, 'same layout, other bytes');
  const out = Buffer.from(good);
  other.copy(out, 0, 0, parsed.imageLength); // the attacker's image, under the owner's signature sector
  return out;
}

describe('signed images, from the attacker side', function () {
  this.timeout(90_000);
  let radio: VirtualRadio;
  let device: VirtualEsp32;

  before(async function () {
    this.timeout(120_000);
    radio = new VirtualRadio();
    device = await radio.addDevice(ownedDevice({ name: 'signed', restartDelayMs: 20 }));
  });
  after(() => radio?.stopAll());

  const client = () => new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000, gattMs: 2000 } });
  const bad: Array<[string, () => Buffer, string]> = [
    ['unsigned', () => buildAppImage({ size: 20 * 1024, version: '2.0.0', seed: 9 }), 'IMAGE_NOT_SIGNED'],
    ["signed with a stranger's key", () => buildAppImage({ size: 20 * 1024, version: '2.0.0', seed: 9, signingKeys: STRANGER_KEY }), 'IMAGE_SIGNATURE_INVALID'],
    ['tampered after signing', tampered, 'IMAGE_SIGNATURE_INVALID'],
  ];

  async function unchanged(): Promise<void> {
    const state = await device.state();
    assert.equal(state.boot, state.running);
    const other = state.running === 'ota_0' ? 'ota_1' : 'ota_0';
    assert.notEqual(state.slots[other].state, 'new');
  }

  it("with the owner's public key, a flow refuses each bad image before the radio is used", async () => {
    let onAir = 0;
    const count = () => onAir++;
    radio.bindings.on('air-connect', count);
    try {
      for (const [what, make, expected] of bad) {
        await assert.rejects(
          client().update({ target: { name: 'signed' }, image: make(), secret: OWNER.secret, requireSignature: true, publicKey: OWNER.publicKey }),
          code(expected),
          what,
        );
      }
      // A requirement without a key to check against is a configuration error, not a pass.
      await assert.rejects(client().update({ target: { name: 'signed' }, image: signedImage(), requireSignature: true }), code('INVALID_ARGUMENT'));
    } finally {
      radio.bindings.off('air-connect', count);
    }
    assert.equal(onAir, 0);
  });

  it('without a public key, the client still refuses each before sending a byte: the device names its key', async () => {
    let streamed = 0;
    const count = (_a: string, uuid: string) => uuid === OTA_STREAM_UUID && streamed++;
    radio.bindings.on('air-write', count);
    try {
      for (const [what, make, expected] of bad) {
        await assert.rejects(client().update({ target: { name: 'signed' }, image: make(), secret: OWNER.secret }), code(expected), what);
      }
    } finally {
      radio.bindings.off('air-write', count);
    }
    assert.equal(streamed, 0);
    await unchanged();
  });

  it('past every client check, the device refuses each at END with BAD_SIGNATURE and keeps its image', async () => {
    for (const [what, make] of bad) {
      const image = make();
      const conn = await client().connect({ name: 'signed' }, { secret: OWNER.secret });
      try {
        const v2 = conn.v2!;
        await v2.provenInfo(2000);
        const answer = await v2.begin({ size: image.length, sha256: createHash('sha256').update(image).digest(), chipId: 0, flags: 0 }, 2000);
        await v2.stream(image, answer.offset, answer.window, answer.maxPacket, 2000, () => undefined);
        await assert.rejects(v2.command(Command.END, 5000), (err: unknown) => {
          assert.ok(err instanceof CommandRefused, `${what}: ${String(err)}`);
          assert.equal(err.status, Status.BAD_SIGNATURE, what);
          return true;
        });
      } finally {
        await conn.close();
      }
      await unchanged();
    }
    await device.powerCycle();
    await unchanged();
  });

  it('an older signed image (lower secure_version) is refused by the client and by the device', async () => {
    const v3 = signedImage({ size: 24 * 1024, version: '3.0.0', secureVersion: 3, seed: 13 });
    const r = await client().update({ target: { name: 'signed' }, image: v3, secret: OWNER.secret });
    assert.equal(r.runningVersion, '3.0.0');
    const old = signedImage({ size: 24 * 1024, version: '2.9.9', secureVersion: 2, seed: 14 });
    await assert.rejects(client().update({ target: { name: 'signed' }, image: old, secret: OWNER.secret }), code('SECURE_VERSION_TOO_OLD'));
    const conn = await client().connect({ name: 'signed' }, { secret: OWNER.secret });
    try {
      const v2 = conn.v2!;
      await v2.provenInfo(2000);
      const answer = await v2.begin({ size: old.length, sha256: createHash('sha256').update(old).digest(), chipId: 0, flags: 0 }, 2000);
      await assert.rejects(
        v2.stream(old, answer.offset, answer.window, answer.maxPacket, 2000, () => undefined),
        (err: unknown) => {
          assert.ok(err instanceof CommandRefused, String(err));
          assert.equal(err.status, Status.OLD_SECURE_VERSION);
          return true;
        },
      );
    } finally {
      await conn.close();
    }
    assert.equal((await device.state()).slots[(await device.state()).running].state, 'valid');
  });

  it("the owner's signed image goes through whole, signature sector included (ECDSA P-256 and RSA-3072)", async () => {
    const image = signedImage({ size: 40 * 1024, version: '4.1.0', secureVersion: 3, seed: 15 });
    const result = await client().update({ target: { name: 'signed' }, image, secret: OWNER.secret, requireSignature: true, publicKey: OWNER.publicKey });
    assert.equal(result.image.signed, true);
    assert.equal(result.runningVersion, '4.1.0');
    const state = await device.state();
    assert.ok((await device.readFlash(state.running, 0, image.length)).equals(image), 'the slot holds the image and its signature sector');

    const rsa = generateSigningKey('rsa3072');
    await radio.addDevice({ name: 'signed-rsa', fleetSecret: OWNER.secret, signingKey: rsa, restartDelayMs: 20 });
    const rsaImage = signImage(buildAppImage({ size: 30 * 1024, version: '5.0.0', seed: 16 }), rsa);
    const r = await client().update({ target: { name: 'signed-rsa' }, image: rsaImage, secret: OWNER.secret, requireSignature: true, publicKey: publicKeyPem(rsa) });
    assert.equal(r.runningVersion, '5.0.0');
    // ... and the ECDSA owner's image is foreign to it.
    await assert.rejects(client().update({ target: { name: 'signed-rsa' }, image: signedImage({ version: '5.1.0' }), secret: OWNER.secret }), code('IMAGE_SIGNATURE_INVALID'));
  });

  it("a device running an unsigned build flashed over USB trusts no key: even the owner's signed image is refused at BEGIN, nothing sent, saying what to flash", async () => {
    const unsigned = await radio.addDevice(ownedDevice({ name: 'flashed-unsigned', firstImageUnsigned: true, restartDelayMs: 20 }));
    let streamed = 0;
    const count = (address: string, uuid: string) => address === unsigned.address && uuid === OTA_STREAM_UUID && streamed++;
    radio.bindings.on('air-write', count);
    try {
      const image = signedImage({ size: 40 * 1024, version: '4.2.0', secureVersion: 3, seed: 17 });
      await assert.rejects(client().update({ target: { name: 'flashed-unsigned' }, image, secret: OWNER.secret }), (err: unknown) => {
        assert.ok(err instanceof BleOtaError, String(err));
        assert.equal(err.code, 'DEVICE_TRUSTS_NO_KEY', err.message);
        assert.match(err.message, /carries no signature that signs it.*Nothing was sent\. Flash a signed build of its firmware over USB once/);
        assert.equal(err.device?.runs, 'old');
        return true;
      });
    } finally {
      radio.bindings.off('air-write', count);
    }
    assert.equal(streamed, 0, 'no packet of the image');
    const state = await unsigned.state();
    assert.equal(state.boot, state.running);
    assert.equal(state.slots[state.running === 'ota_0' ? 'ota_1' : 'ota_0'].state, 'empty');
    // Before any update, `esp32-ble-ota info` says so too: no key, so no image goes in.
    const connection = await client().connect({ name: 'flashed-unsigned' }, { secret: OWNER.secret });
    try {
      const view = infoView(await connection.info());
      assert.deepEqual([view.capabilities.includes('signed'), view.signingKey], [true, null]);
      assert.match(formatInfo(view), /^signing key +none named: with our default build, every image is refused until a signed build is flashed over USB/m);
    } finally {
      await connection.close();
    }
  });

  it("a device on the seed protocol that trusts no key refuses REQUEST: the seed protocol cannot say why, so the error gives both causes' remedies", async () => {
    // Our firmware with the seed protocol on (a development build: no authentication), flashed unsigned over USB.
    await radio.addDevice({ name: 'seed-unsigned', seedProtocol: true, signingKey: OWNER.signingKey, firstImageUnsigned: true, restartDelayMs: 20 });
    const image = signedImage({ size: 20 * 1024, version: '4.3.0', secureVersion: 3, seed: 18 });
    await assert.rejects(client().update({ target: { name: 'seed-unsigned' }, image, protocol: 'seed' }), (err: unknown) => {
      assert.ok(err instanceof BleOtaError, String(err));
      assert.equal(err.code, 'REQUEST_REFUSED', err.message);
      assert.match(
        err.message,
        /the seed protocol does not say why\. If its running image awaits confirmation: wait a moment, confirm it or restart the device, then update again\./,
      );
      assert.match(err.message, /If its running image is unsigned or trusts no signing key: flash a signed build over USB once/);
      assert.equal(err.device?.runs, 'old');
      return true;
    });
  });
});
