/**
 * Requiring a signed image: the client refuses an image without a Secure
 * Boot v2 signature block before any radio work, and uploads a signed one,
 * signature sector included, to the virtual ESP32.
 */
import { strict as assert } from 'node:assert';
import { BleOtaClient } from '../lib/client/ota-client';
import { BleOtaError } from '../lib/errors';
import { buildAppImage } from '../lib/image/app-image-builder';
import { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { VirtualRadio } from '../lib/virtual/virtual-radio';

describe('signed images', function () {
  this.timeout(60_000);
  let radio: VirtualRadio;
  let device: VirtualEsp32;

  before(async function () {
    this.timeout(120_000);
    radio = new VirtualRadio();
    device = await radio.addDevice({ name: 'signed', restartDelayMs: 20 });
  });
  after(() => radio?.stopAll());

  const client = () => new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000, gattMs: 2000 } });

  it('with requireSignature, an unsigned image is refused before anything goes on air', async () => {
    let onAir = 0;
    const count = () => onAir++;
    radio.bindings.on('air-connect', count);
    try {
      await assert.rejects(
        client().update({ target: { name: 'signed' }, image: buildAppImage({ version: '2.0.0' }), requireSignature: true }),
        (err: unknown) => {
          assert.ok(err instanceof BleOtaError);
          assert.equal(err.code, 'IMAGE_NOT_SIGNED');
          assert.match(err.message, /espsecure\.py sign_data/);
          return true;
        },
      );
    } finally {
      radio.bindings.off('air-connect', count);
    }
    assert.equal(onAir, 0);
  });

  it('a signed image goes through whole, signature sector included, and the result says it is signed', async () => {
    const image = buildAppImage({ size: 40 * 1024, version: '2.1.0', signatureBlocks: 1 });
    const result = await client().update({ target: { name: 'signed' }, image, requireSignature: true });
    assert.equal(result.image.signed, true);
    assert.equal(result.runningVersion, '2.1.0');
    const state = await device.state();
    const stored = await device.readFlash(state.running, 0, image.length);
    assert.ok(stored.equals(image), 'the slot holds the image and its signature sector');
  });
});
