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
import { BeginFlag, Command, DEFLATE_CHUNK, OTA_COMMAND_UUID, OTA_STREAM_UUID } from '../lib/protocol/constants';
import type * as Zlib from 'node:zlib';
import { DeflatedStream, encodedLength, SAMPLE_CHUNKS, worthDeflating } from '../lib/protocol/deflate-chunks';
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
    assert.equal(streamBytes, encodedLength(image));
    assert.ok(streamBytes < image.length / 1.4, `${streamBytes} bytes on air for ${image.length}`);
    const state = await device.state();
    assert.ok((await device.readFlash(state.running, 0, image.length)).equals(image));
  });

  it('deflates each chunk against the one before it: 4 KB of random bytes repeated cost a few bytes per chunk', async () => {
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
    const half = encodedLength(image) / 2;
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

  /** Image bytes handed to deflate while `run` runs (the chunks, not their dictionaries). */
  async function deflated<T>(run: () => Promise<T>): Promise<{ result: T; bytes: number }> {
    // The module object itself (an `import * as` namespace is a read-only copy): the client's
    // compiled code reads deflateRawSync from it at each call.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const patchable = require('node:zlib') as { deflateRawSync: typeof Zlib.deflateRawSync };
    const original = patchable.deflateRawSync;
    let bytes = 0;
    patchable.deflateRawSync = ((buffer: Zlib.InputType, options?: Zlib.ZlibOptions) => {
      bytes += (buffer as Buffer).length;
      return original(buffer, options);
    }) as typeof Zlib.deflateRawSync;
    try {
      return { result: await run(), bytes };
    } finally {
      patchable.deflateRawSync = original;
    }
  }

  it('never deflates an incompressible image whole: a sample of its chunks decides, and it goes as it is', async () => {
    const device = await radio.addDevice({ name: 'zip-raw', restartDelayMs: 20 });
    const image = buildAppImage({ size: 1024 * 1024, version: '2.3.0', seed: 23 });
    assert.equal(worthDeflating(image), false);
    const { result, bytes } = await deflated(() => onAir(device, () => client().update({ target: { name: 'zip-raw' }, image })));
    assert.ok(bytes <= SAMPLE_CHUNKS * DEFLATE_CHUNK, `${bytes} bytes deflated`);
    assert.equal(result.flags[0] & BeginFlag.DEFLATE, 0);
    assert.equal(result.streamBytes, image.length);
    assert.equal(result.result.runningVersion, '2.3.0');
  });

  it('deflates each chunk of a compressible image once, beside the sample, and the flash is the same as without compression', async () => {
    const image = compressibleImage('2.4.0', 512 * 1024);
    const zipped = await radio.addDevice({ name: 'zip-same-a', restartDelayMs: 20 });
    const { result, bytes } = await deflated(() => onAir(zipped, () => client().update({ target: { name: 'zip-same-a' }, image })));
    assert.ok(result.flags[0] & BeginFlag.DEFLATE, 'BEGIN asked for DEFLATE');
    assert.ok(bytes <= image.length + SAMPLE_CHUNKS * DEFLATE_CHUNK, `${bytes} bytes deflated for ${image.length}`);
    const plain = await radio.addDevice({ name: 'zip-same-b', restartDelayMs: 20 });
    await client().update({ target: { name: 'zip-same-b' }, image, compress: false });
    const flash = async (device: VirtualEsp32) => {
      const state = await device.state();
      return device.readFlash(state.running, 0, image.length);
    };
    const [a, b] = [await flash(zipped), await flash(plain)];
    assert.ok(a.equals(b), 'the same flash, deflated or not');
    assert.ok(a.equals(image));
  });

  it('reads the stream from any chunk, across chunk boundaries, and again after a rewind, as the same bytes', () => {
    const image = compressibleImage('2.5.0', 64 * 1024 + 1000);
    const whole = new DeflatedStream(image, 0).read(0, Number.MAX_SAFE_INTEGER);
    assert.equal(whole.length, encodedLength(image));
    for (const chunk of [1, 7, 16]) {
      const from = chunk * DEFLATE_CHUNK;
      const stream = new DeflatedStream(image, from);
      // The tail's first byte in the whole stream: the encodings of the chunks before it.
      const skip = encodedLength(image.subarray(0, from));
      const parts: Buffer[] = [];
      for (let at = 0; ; at += 495) {
        const part = stream.read(at, 495);
        if (part.length === 0) break;
        parts.push(part);
        stream.release(at); // forget what precedes: the rewind below must encode it again
      }
      const read = Buffer.concat(parts);
      assert.equal(stream.length, read.length);
      assert.ok(read.equals(whole.subarray(skip)), `from chunk ${chunk}`);
      assert.ok(stream.read(100, 3000).equals(read.subarray(100, 3100)), `a rewind from chunk ${chunk}`);
      assert.equal(stream.imageOffsetAt(0), from);
      assert.equal(stream.imageOffsetAt(read.length), image.length);
    }
    assert.equal(new DeflatedStream(image, image.length).read(0, 100).length, 0);
    assert.throws(() => new DeflatedStream(image, 100), RangeError);
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
