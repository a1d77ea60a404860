/**
 * Compression (protocol v2 DEFLATE) over the air: a compressible image goes
 * deflated, arrives byte for byte, and resumes exactly after a lost link;
 * without the device's DEFLATE feature, or with compress: false, the image
 * goes as it is.
 */
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { readFileSync, existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { BleOtaClient } from '../lib/client/ota-client';
import { buildAppImage } from '../lib/image/app-image-builder';
import { BeginFlag, Command, OTA_COMMAND_UUID, OTA_STREAM_UUID } from '../lib/protocol/constants';
import { deflateChunks } from '../lib/protocol/deflate-chunks';
import { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { VirtualRadio } from '../lib/virtual/virtual-radio';

const BLINK = resolve(__dirname, '../../../shared/fixtures/esptool-images/esp_idf_blink_esp32s2.bin');

/** An ESP32 app whose segments hold real app code (the S2 blink's bytes), or low-entropy bytes without the fixtures. */
function compressibleImage(version: string, size = 200 * 1024): Buffer {
  const fill = existsSync(BLINK) ? readFileSync(BLINK) : Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7) % 16));
  return buildAppImage({ size, version, fill });
}

describe('compression (DEFLATE)', function () {
  this.timeout(60_000);
  let radio: VirtualRadio;

  before(() => {
    radio = new VirtualRadio();
  });
  after(() => radio.stopAll());

  const client = () => new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000, gattMs: 2000 } });

  /** Stream bytes sent to the device and BEGIN's flags, while `run` runs. */
  async function onAir<T>(device: VirtualEsp32, run: () => Promise<T>): Promise<{ result: T; streamBytes: number; flags: number[] }> {
    let streamBytes = 0;
    const flags: number[] = [];
    const listen = (address: string, uuid: string, data: Buffer) => {
      if (address !== device.address) return;
      if (uuid === OTA_STREAM_UUID) streamBytes += data.length - 4;
      if (uuid === OTA_COMMAND_UUID && data[0] === Command.BEGIN) flags.push(data.readUInt16LE(39));
    };
    radio.bindings.on('air-write', listen);
    try {
      return { result: await run(), streamBytes, flags };
    } finally {
      radio.bindings.off('air-write', listen);
    }
  }

  it('sends a compressible image deflated; the slot holds it byte for byte', async () => {
    const device = await radio.addDevice({ name: 'zip-a', restartDelayMs: 20 });
    const image = compressibleImage('2.0.0');
    const { result, streamBytes, flags } = await onAir(device, () => client().update({ target: { name: 'zip-a' }, image }));
    assert.equal(result.runningVersion, '2.0.0');
    assert.ok(flags[0] & BeginFlag.DEFLATE, 'BEGIN asked for DEFLATE');
    assert.equal(streamBytes, deflateChunks(image).length);
    assert.ok(streamBytes < image.length / 1.4, `${streamBytes} bytes on air for ${image.length}`);
    const state = await device.state();
    assert.ok((await device.readFlash(state.running, 0, image.length)).equals(image));
  });

  it("deflates each chunk against the one before it: 4 KB of random bytes repeated cost a few bytes per chunk", async () => {
    // Alone, a chunk of random bytes does not deflate at all; with the
    // previous chunk as its dictionary, it is one long back-reference.
    const device = await radio.addDevice({ name: 'zip-dict', restartDelayMs: 20 });
    const image = buildAppImage({ size: 256 * 1024, version: '2.0.1', fill: randomBytes(4096) });
    const { result, streamBytes } = await onAir(device, () => client().update({ target: { name: 'zip-dict' }, image }));
    assert.equal(result.runningVersion, '2.0.1');
    assert.ok(streamBytes < image.length / 20, `${streamBytes} bytes on air for ${image.length}`);
    const state = await device.state();
    assert.ok((await device.readFlash(state.running, 0, image.length)).equals(image));
  });

  it('resumes a deflated transfer after a lost link, exactly', async () => {
    const device = await radio.addDevice({ name: 'zip-b', restartDelayMs: 20 });
    const image = compressibleImage('2.1.0', 300 * 1024);
    // The link drops halfway through the deflated stream.
    const half = deflateChunks(image).length / 2;
    let sent = 0;
    let dropped = false;
    const cut = (address: string, uuid: string, data: Buffer) => {
      if (address !== device.address || uuid !== OTA_STREAM_UUID || dropped) return;
      sent += data.length - 4;
      if (sent >= half) {
        dropped = true;
        radio.bindings.dropLink(device);
      }
    };
    radio.bindings.on('air-write', cut);
    let result;
    try {
      result = await client().update({ target: { name: 'zip-b' }, image });
    } finally {
      radio.bindings.off('air-write', cut);
    }
    assert.equal(result.resumes, 1);
    assert.equal(result.runningVersion, '2.1.0');
    const state = await device.state();
    assert.ok((await device.readFlash(state.running, 0, image.length)).equals(image));
  });

  it('sends the image as it is to a device without DEFLATE, and with compress: false', async () => {
    const plain = await radio.addDevice({ name: 'zip-c', restartDelayMs: 20, deflate: false });
    const image = compressibleImage('2.2.0');
    const a = await onAir(plain, () => client().update({ target: { name: 'zip-c' }, image }));
    assert.equal(a.flags[0] & BeginFlag.DEFLATE, 0);
    assert.equal(a.streamBytes, image.length);
    const device = await radio.addDevice({ name: 'zip-d', restartDelayMs: 20 });
    const b = await onAir(device, () => client().update({ target: { name: 'zip-d' }, image, compress: false }));
    assert.equal(b.flags[0] & BeginFlag.DEFLATE, 0);
    assert.equal(b.result.runningVersion, '2.2.0');
  });
});
