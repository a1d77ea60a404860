import * as assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vm from 'node:vm';
import * as zlib from 'node:zlib';
import { BleOtaErrorCode, ImageError } from '../lib/errors';
import { buildAppImage } from '../lib/image/app-image-builder';
import { findChip } from '../lib/image/esp-chips';
import {
  ESP_IMAGE_HEADER_SIZE,
  ESP_SEGMENT_HEADER_SIZE,
  EspImage,
  assertImageBuffer,
  checksumBlockEnd,
  crc32,
  espChecksum,
  imageSummary,
  parseEspImage,
} from '../lib/image/esp-image';
import { generateSigningKey, signingKeyDigest } from '../lib/image/signature';

const KB = 1024;
const MB = 1024 * KB;

/** Asserts that parsing throws an ImageError with `code` and a message matching every pattern. */
function expectImageError(input: unknown, code: BleOtaErrorCode, ...patterns: RegExp[]): ImageError {
  let caught: unknown;
  try {
    parseEspImage(input);
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof ImageError, `expected ImageError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  for (const pattern of patterns) assert.match(caught.message, pattern);
  return caught;
}

interface RawSegment {
  headerOffset: number;
  dataOffset: number;
  length: number;
}

/** Walks the segment table of a well-formed image (test helper, trusts the input). */
function rawSegments(image: Buffer): RawSegment[] {
  const segments: RawSegment[] = [];
  let offset = ESP_IMAGE_HEADER_SIZE;
  for (let i = 0; i < image[1]; i++) {
    const length = image.readUInt32LE(offset + 4);
    segments.push({ headerOffset: offset, dataOffset: offset + ESP_SEGMENT_HEADER_SIZE, length });
    offset += ESP_SEGMENT_HEADER_SIZE + length;
  }
  return segments;
}

/** Recomputes checksum and appended hash after a deliberate edit, so only the edit itself is tested. */
function reseal(image: Buffer): Buffer {
  const segments = rawSegments(image);
  const last = segments[segments.length - 1];
  const blockEnd = checksumBlockEnd(last.dataOffset + last.length);
  image[blockEnd - 1] = espChecksum(segments.map((s) => image.subarray(s.dataOffset, s.dataOffset + s.length)));
  if (image[23] === 1) createHash('sha256').update(image.subarray(0, blockEnd)).digest().copy(image, blockEnd);
  return image;
}

function sha256Hex(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Deterministic noise for "random file" cases (not the builder's generator, to stay independent). */
function noise(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  let block = Buffer.alloc(0);
  for (let i = 0; i < length; i++) {
    if (i % 32 === 0) block = createHash('sha256').update(`${seed}:${i}`).digest();
    out[i] = block[i % 32];
  }
  return out;
}

/** A minimal ESP8266 "v1" image: 8-byte header, one segment, checksum. */
function esp8266Image(): Buffer {
  const payload = noise(64, 8266);
  const end = 8 + ESP_SEGMENT_HEADER_SIZE + payload.length;
  const image = Buffer.alloc(checksumBlockEnd(end));
  image[0] = 0xe9;
  image[1] = 1;
  image[2] = 2;
  image[3] = 0x40;
  image.writeUInt32LE(0x40100004, 4);
  image.writeUInt32LE(0x40100000, 8);
  image.writeUInt32LE(payload.length, 12);
  payload.copy(image, 16);
  // Make byte 23 (the ESP32 hash flag position) clearly not an ESP32 header value.
  image[23] = 0x7f;
  image[image.length - 1] = espChecksum([image.subarray(16, 16 + payload.length)]);
  return image;
}

describe('ESP app image', () => {
  describe('buildAppImage -> parseEspImage round trip', () => {
    const chips = [0, 2, 5, 9, 12, 13, 16, 18];
    for (const chipId of chips) {
      const name = findChip(chipId)?.name ?? String(chipId);
      it(`round-trips every field for ${name}`, () => {
        const options = {
          chipId,
          size: 48 * KB + chipId * 1000,
          seed: 100 + chipId,
          projectName: `proj-${chipId}`,
          version: `v1.${chipId}.0-rc1`,
          idfVersion: 'v5.2.2-dirty',
          secureVersion: chipId + 3,
          time: '09:08:07',
          date: 'Feb 29 2024',
          minChipRevFull: 101,
          maxChipRevFull: 399,
        };
        const image = buildAppImage(options);
        const parsed = parseEspImage(image);

        assert.equal(parsed.chipId, chipId);
        assert.equal(parsed.chipName, name);
        assert.equal(parsed.appDesc.projectName, options.projectName);
        assert.equal(parsed.appDesc.version, options.version);
        assert.equal(parsed.appDesc.idfVersion, options.idfVersion);
        assert.equal(parsed.appDesc.secureVersion, options.secureVersion);
        assert.equal(parsed.appDesc.time, options.time);
        assert.equal(parsed.appDesc.date, options.date);
        assert.equal(parsed.header.minChipRevFull, 101);
        assert.equal(parsed.header.minChipRev, 1);
        assert.equal(parsed.header.maxChipRevFull, 399);
        assert.equal(parsed.header.hashAppended, true);
        assert.equal(parsed.header.flashModeName, 'DIO');
        assert.equal(parsed.header.flashSize, '4MB');
        assert.equal(parsed.imageLength, image.length);
        assert.equal(parsed.trailingBytes, 0);
        assert.equal(parsed.sha256.toString('hex'), sha256Hex(image.subarray(0, image.length - 32)));

        const chip = findChip(chipId);
        assert.ok(chip);
        const [first] = parsed.segments;
        assert.equal(first.loadAddress, chip.dromBase + 0x20, 'app descriptor segment is flash-mapped rodata');
        assert.ok(parsed.segments.length >= 3, 'an app has several segments');
        const entryInSegment = parsed.segments.some((s) => parsed.header.entryAddress >= s.loadAddress && parsed.header.entryAddress < s.loadAddress + s.length);
        assert.ok(entryInSegment, 'entry point lies inside a loaded segment');
      });
    }

    it('builds a 1 MB ESP32 image of about the requested size', () => {
      const image = buildAppImage({ size: MB, seed: 3 });
      assert.ok(Math.abs(image.length - MB) <= 64, `size ${image.length}`);
      const parsed = parseEspImage(image);
      assert.equal(parsed.chipName, 'ESP32');
      assert.equal(parsed.imageLength, image.length);
      const dataBytes = parsed.segments.reduce((sum, s) => sum + s.length, 0);
      assert.ok(dataBytes > MB - 200, 'almost all of the image is segment data');
    });

    it('builds and parses a 4 MB image quickly', () => {
      const started = Date.now();
      const image = buildAppImage({ size: 4 * MB, chipId: 9, seed: 4 });
      const parsed = parseEspImage(image);
      const elapsed = Date.now() - started;
      assert.equal(parsed.chipName, 'ESP32-S3');
      assert.ok(elapsed < 2000, `took ${elapsed} ms`);
    });

    it('is deterministic per seed and differs between seeds', () => {
      const a = buildAppImage({ size: 16 * KB, seed: 1 });
      const b = buildAppImage({ size: 16 * KB, seed: 1 });
      const c = buildAppImage({ size: 16 * KB, seed: 2 });
      assert.ok(a.equals(b));
      assert.equal(a.length, c.length);
      assert.ok(!a.equals(c));
      assert.notEqual(parseEspImage(a).sha256.toString('hex'), parseEspImage(c).sha256.toString('hex'));
    });

    it('builds images without an appended hash; the digest is then computed over the image', () => {
      const image = buildAppImage({ size: 8 * KB, hashAppended: false });
      const parsed = parseEspImage(image);
      assert.equal(parsed.header.hashAppended, false);
      assert.equal(parsed.imageLength, image.length);
      assert.equal(image.length % 16, 0);
      assert.equal(parsed.sha256.toString('hex'), sha256Hex(image));
    });

    it('builds the smallest image when asked for a tiny size', () => {
      const parsed = parseEspImage(buildAppImage({ size: 1 }));
      assert.equal(parsed.appDesc.projectName, 'app');
    });

    it('refuses names that would not fit the app descriptor', () => {
      assert.throws(() => buildAppImage({ projectName: 'x'.repeat(32) }), RangeError);
      assert.throws(() => buildAppImage({ chipId: 77 }), /chip id 77/);
    });
  });

  describe('what parseEspImage reports', () => {
    it('reports trailing bytes and counts them in the summary size', () => {
      const image = buildAppImage({ size: 8 * KB, projectName: 'blinky', version: '2.1.0' });
      const padded = Buffer.concat([image, Buffer.alloc(100, 0xff)]);
      const parsed = parseEspImage(padded);
      assert.equal(parsed.imageLength, image.length);
      assert.equal(parsed.trailingBytes, 100);
      assert.equal(parsed.signature, undefined);
      const summary = imageSummary(parsed);
      assert.deepEqual(summary, {
        chip: 'ESP32',
        chipId: 0,
        project: 'blinky',
        version: '2.1.0',
        idfVersion: 'v5.3.1',
        secureVersion: 0,
        size: padded.length,
        sha256: sha256Hex(image.subarray(0, image.length - 32)),
        signed: false,
      });
    });

    it('the builder signs like espsecure.py: blocks on the next 4 KiB boundary that the parser finds', function () {
      this.timeout(20_000);
      const keys = [generateSigningKey('ecdsa256'), generateSigningKey('rsa3072'), generateSigningKey('ecdsa256')];
      for (const blocks of [1, 2, 3]) {
        const signed = buildAppImage({ size: 10 * KB, signingKeys: keys.slice(0, blocks) });
        const parsed = parseEspImage(signed);
        assert.equal(parsed.signature?.blockCount, blocks);
        assert.equal(parsed.signature?.offset, Math.ceil(parsed.imageLength / 4096) * 4096);
        assert.equal(parsed.signature?.scheme, 'ecdsa256');
        assert.ok(parsed.signature?.keyDigest.equals(signingKeyDigest(keys[0])));
        assert.equal(parsed.trailingBytes, signed.length - parsed.imageLength);
        assert.equal(imageSummary(parsed).signed, true);
      }
      assert.throws(() => buildAppImage({ signingKeys: [...keys, keys[0]] }), /holds 3 blocks/);
    });

    it('finds a Secure Boot v2 signature block on the next 4 KiB boundary', () => {
      const image = buildAppImage({ size: 10 * KB });
      const sigOffset = Math.ceil(image.length / 4096) * 4096;
      const signed = Buffer.alloc(sigOffset + 4096, 0xff);
      image.copy(signed);
      const block = noise(1216, 5);
      block[0] = 0xe7;
      block[1] = 0x02;
      block.writeUInt32LE(crc32(block.subarray(0, 1196)), 1196);
      block.copy(signed, sigOffset);

      const parsed = parseEspImage(signed);
      assert.deepEqual(parsed.signature, {
        offset: sigOffset,
        blockCount: 1,
        version: 2,
        scheme: 'rsa3072',
        keyDigest: createHash('sha256').update(block.subarray(36, 812)).digest(),
      });
      assert.equal(parsed.trailingBytes, signed.length - image.length);

      signed[sigOffset + 100] ^= 1; // CRC no longer matches: not a valid block
      assert.equal(parseEspImage(signed).signature, undefined);
    });

    it('counts blocks from block 0 on, and only blocks of a known version', () => {
      const image = buildAppImage({ size: 10 * KB });
      const sigOffset = Math.ceil(image.length / 4096) * 4096;
      const signed = Buffer.alloc(sigOffset + 4096, 0xff);
      image.copy(signed);
      const putBlock = (slot: number, version: number) => {
        const block = noise(1216, 10 + slot);
        block[0] = 0xe7;
        block[1] = version;
        block.writeUInt32LE(crc32(block.subarray(0, 1196)), 1196);
        block.copy(signed, sigOffset + slot * 1216);
      };
      putBlock(0, 0x02);
      putBlock(1, 0x07); // not RSA (2) or ECDSA (3): espsecure.py does not count it either
      putBlock(2, 0x02);
      assert.equal(parseEspImage(signed).signature?.blockCount, 1);
      putBlock(0, 0x07);
      assert.equal(parseEspImage(signed).signature, undefined, 'no block 0, which is what the device reads');
    });

    it('computes CRC-32 as zlib does', function () {
      const zlibCrc = (zlib as { crc32?: (data: Buffer) => number }).crc32;
      if (zlibCrc === undefined) this.skip(); // zlib.crc32 needs Node >= 20.15
      const data = noise(3000, 6);
      assert.equal(crc32(data), zlibCrc(data));
      assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
    });

    it('names chips it does not know instead of rejecting them', () => {
      const image = buildAppImage({ size: 4 * KB });
      // 0x1C is the ESP32-H4 (no memory map here): an id this parser cannot check addresses against.
      image.writeUInt16LE(0x1c, 12);
      const parsed = parseEspImage(reseal(image));
      assert.equal(parsed.chipName, 'unknown chip (id 28)');
    });
  });

  describe('rejecting what is not a usable app image', () => {
    let good: Buffer;
    before(() => {
      good = buildAppImage({ size: 32 * KB, seed: 11 });
    });
    const copy = (): Buffer => Buffer.from(good);

    it('IMAGE_NOT_BUFFER for a string, with the settings of the nodes a file usually comes from', () => {
      expectImageError('\u00e9\u0001\u0002', 'IMAGE_NOT_BUFFER', /is a string/, /File In "a single Buffer object", HTTP Request "a binary buffer", MQTT In "a Buffer"/);
    });

    it('IMAGE_NOT_BUFFER for other non-Buffers', () => {
      expectImageError(undefined, 'IMAGE_NOT_BUFFER', /is undefined/);
      expectImageError({ type: 'Buffer', data: [0xe9] }, 'IMAGE_NOT_BUFFER', /is an object/);
      expectImageError(new Uint8Array(good), 'IMAGE_NOT_BUFFER', /Uint8Array.*Buffer\.from/);
      // What a Function node makes: its sandbox is another realm, whose Uint8Array is no instance of ours.
      const sandboxed: unknown = vm.runInNewContext('new Uint8Array([0xe9, 1, 2])');
      assert.ok(!(sandboxed instanceof Uint8Array), 'a value of another realm');
      expectImageError(sandboxed, 'IMAGE_NOT_BUFFER', /is a Uint8Array \(convert it with Buffer\.from\(msg\.payload\)\)/);
      expectImageError(vm.runInNewContext('new ArrayBuffer(16)'), 'IMAGE_NOT_BUFFER', /is an ArrayBuffer \(convert it with Buffer\.from\(msg\.payload\)\)/);
      // Buffer.from(a Uint16Array) keeps one byte of each element: the message names the view's bytes instead.
      expectImageError(new Uint16Array(4), 'IMAGE_NOT_BUFFER', /is a Uint16Array .*Buffer\.from\(msg\.payload\.buffer, msg\.payload\.byteOffset, msg\.payload\.byteLength\)/);
      assert.throws(
        () => assertImageBuffer(42),
        (err: ImageError) => err.code === 'IMAGE_NOT_BUFFER',
      );
    });

    it('IMAGE_NOT_BUFFER for a Buffer turned into JSON, an array of bytes or base64 says how to turn it back', () => {
      const json: unknown = JSON.parse(JSON.stringify(good));
      const err = expectImageError(json, 'IMAGE_NOT_BUFFER', /is an object/, /a Buffer turned into JSON/, /msg\.payload = Buffer\.from\(msg\.payload\.data\)\.$/);
      assert.ok(err.message.length < 400, 'the bytes are not repeated');
      expectImageError([...good], 'IMAGE_NOT_BUFFER', /is an array\. It is an array of byte values/, /msg\.payload = Buffer\.from\(msg\.payload\)\.$/);
      // Not bytes: the general advice.
      const other = expectImageError([1, 2, 300], 'IMAGE_NOT_BUFFER', /is an array\. Make the upstream node output binary/);
      assert.doesNotMatch(other.message, /byte values/);
      expectImageError({ type: 'Buffer' }, 'IMAGE_NOT_BUFFER', /is an object\. Make the upstream node output binary/);
      // The code to write ends the sentence, without a stray semicolon before the full stop.
      expectImageError(good.toString('base64'), 'IMAGE_NOT_BUFFER', /msg\.payload = Buffer\.from\(msg\.payload, 'base64'\)\.$/);
    });

    it('IMAGE_EMPTY for a zero-length Buffer', () => {
      expectImageError(Buffer.alloc(0), 'IMAGE_EMPTY', /empty/);
      assert.throws(
        () => assertImageBuffer(Buffer.alloc(0)),
        (err: ImageError) => err.code === 'IMAGE_EMPTY',
      );
    });

    it('IMAGE_NOT_AN_IMAGE for random bytes, also when they happen to start with 0xE9', () => {
      for (let seed = 0; seed < 20; seed++) {
        const random = noise(4 * KB, seed);
        expectImageError(random, 'IMAGE_NOT_AN_IMAGE', /not an ESP32 firmware image|header is not valid/);
        random[0] = 0xe9;
        expectImageError(random, 'IMAGE_NOT_AN_IMAGE', /build\/<project>\.bin/);
      }
    });

    it('IMAGE_NOT_AN_IMAGE for a text file, showing the first bytes', () => {
      expectImageError(Buffer.from('<!DOCTYPE html><html>404</html>'), 'IMAGE_NOT_AN_IMAGE', /0x3C 0x21 0x44 0x4F/);
    });

    it('IMAGE_PARTITION_TABLE for a partition table', () => {
      const table = Buffer.alloc(3 * 32, 0xff);
      for (let i = 0; i < 2; i++) {
        table.set([0xaa, 0x50, i === 0 ? 0 : 1, i === 0 ? 0 : 2], i * 32);
        table.write(i === 0 ? 'factory' : 'nvs', i * 32 + 12, 'latin1');
      }
      table.set([0xeb, 0xeb], 64);
      expectImageError(table, 'IMAGE_PARTITION_TABLE', /partition table/, /build\/<project>\.bin/);
    });

    it('IMAGE_ESP8266 for ESP8266 images (v1 and v2 formats)', () => {
      const v1 = esp8266Image();
      expectImageError(v1, 'IMAGE_ESP8266', /ESP8266/, /ESP32/);
      const irom = noise(100, 7);
      const v2 = Buffer.alloc(16 + irom.length);
      v2.set([0xea, 4, 2, 0x40]);
      v2.writeUInt32LE(0x40201010, 8);
      v2.writeUInt32LE(irom.length, 12);
      irom.copy(v2, 16);
      expectImageError(Buffer.concat([v2, v1]), 'IMAGE_ESP8266', /ESP8266/);
    });

    it('IMAGE_TRUNCATED when the file ends inside the header', () => {
      expectImageError(good.subarray(0, 10), 'IMAGE_TRUNCATED', /10 byte\(s\)/, /24-byte image header/);
    });

    it('IMAGE_TRUNCATED when the file ends at a segment boundary', () => {
      const [, second] = rawSegments(good);
      const cut = good.subarray(0, second.dataOffset + second.length);
      expectImageError(cut, 'IMAGE_TRUNCATED', /segment 3 of 4/, /again/);
    });

    it('IMAGE_TRUNCATED when the file ends inside segment data or the appended hash', () => {
      const [first] = rawSegments(good);
      expectImageError(good.subarray(0, first.dataOffset + 100), 'IMAGE_TRUNCATED', /segment 1 of 4 needs/);
      expectImageError(good.subarray(0, good.length - 1), 'IMAGE_TRUNCATED', /SHA-256/);
    });

    it('IMAGE_TRUNCATED when the segment count overruns the file', () => {
      const image = copy();
      image[1] = 16;
      expectImageError(image, 'IMAGE_TRUNCATED', /of 16/);
    });

    it('IMAGE_TRUNCATED for a header with only empty segments', () => {
      const image = Buffer.alloc(48);
      image.set([0xe9, 1, 2, 0x20]);
      image.writeUInt16LE(5, 12);
      image.writeUInt32LE(0x3c000020, 24);
      image[47] = 0xef;
      expectImageError(image, 'IMAGE_TRUNCATED', /only an image header/);
    });

    it('IMAGE_BAD_CHECKSUM when the checksum byte is wrong', () => {
      const image = copy();
      const checksumOffset = image.length - 33;
      const stored = image[checksumOffset];
      image[checksumOffset] ^= 0x5a;
      const hex = (v: number): string => `0x${v.toString(16).padStart(2, '0').toUpperCase()}`;
      expectImageError(image, 'IMAGE_BAD_CHECKSUM', /corrupted/, new RegExp(`${hex(stored ^ 0x5a)} but the data gives ${hex(stored)}`));
    });

    it('IMAGE_BAD_CHECKSUM when segment data is damaged', () => {
      const image = copy();
      image[rawSegments(image)[3].dataOffset + 1234] ^= 0x01;
      expectImageError(image, 'IMAGE_BAD_CHECKSUM', /build or copy it again/);
    });

    it('IMAGE_BAD_HASH when a byte of the appended SHA-256 is flipped', () => {
      const image = copy();
      image[image.length - 5] ^= 0xff;
      expectImageError(image, 'IMAGE_BAD_HASH', /SHA-256/, /corrupted/);
    });

    it('IMAGE_BAD_HASH for damage the XOR checksum cannot see', () => {
      // Flipping the same bit in two data bytes leaves the XOR checksum unchanged.
      const image = copy();
      const { dataOffset } = rawSegments(image)[3];
      image[dataOffset + 10] ^= 0x08;
      image[dataOffset + 20] ^= 0x08;
      expectImageError(image, 'IMAGE_BAD_HASH');
    });

    it('IMAGE_NO_APP_DESC for a flash app without an app descriptor', () => {
      const image = copy();
      image.writeUInt32LE(0, ESP_IMAGE_HEADER_SIZE + ESP_SEGMENT_HEADER_SIZE);
      expectImageError(reseal(image), 'IMAGE_NO_APP_DESC', /app descriptor/, /build\/<project>\.bin/);
    });

    it('IMAGE_BOOTLOADER for a RAM-only image of bootloader size, IMAGE_NO_APP_DESC for a tiny one', () => {
      const chip = findChip(0);
      assert.ok(chip);
      const toRam = (image: Buffer): Buffer => {
        for (const seg of rawSegments(image)) image.writeUInt32LE(chip.dramBase, seg.headerOffset);
        image.writeUInt32LE(0, ESP_IMAGE_HEADER_SIZE + ESP_SEGMENT_HEADER_SIZE);
        return reseal(image);
      };
      expectImageError(toRam(buildAppImage({ size: 20 * KB })), 'IMAGE_BOOTLOADER', /bootloader/, /build\/<project>\.bin/);
      expectImageError(toRam(buildAppImage({ size: 1 })), 'IMAGE_NO_APP_DESC', /RAM only/);
    });
  });

  // The esptool test images live next to the repository (../shared); a user's clone has none.
  const fixtureDir = path.resolve(__dirname, '../../../shared/fixtures/esptool-images');
  describe('esptool fixture images', () => {
    if (!fs.existsSync(fixtureDir)) {
      it.skip(`../shared/fixtures not present (${fixtureDir}): fixture tests skipped`, () => undefined);
      return;
    }
    const read = (name: string): Buffer => fs.readFileSync(path.join(fixtureDir, name));

    it('parses the ESP-IDF blink app for ESP32-S2', () => {
      const img: EspImage = parseEspImage(read('esp_idf_blink_esp32s2.bin'));
      assert.equal(img.chipName, 'ESP32-S2');
      assert.equal(img.segments.length, 6);
      assert.equal(img.checksum, 0x18);
      assert.ok(img.header.hashAppended);
      assert.match(img.sha256.toString('hex'), /^10f48f4a.*31b7$/);
      assert.equal(img.appDesc.projectName, 'blink');
      assert.equal(img.appDesc.version, 'qa-test-v5.0-20220830-4-g4532e6');
      assert.equal(img.appDesc.idfVersion, 'v5.0-beta1-427-g4532e6e0b2-dirt');
      assert.equal(img.imageLength, 182368);
      assert.equal(img.trailingBytes, 0);
      assert.equal(img.signature, undefined);
      assert.equal(imageSummary(img).sha256.slice(0, 8), '10f48f4a');
    });

    const expected: ReadonlyArray<[string, BleOtaErrorCode, RegExp]> = [
      ['bootloader_esp32.bin', 'IMAGE_BOOTLOADER', /bootloader.*ESP32\)/],
      ['bootloader_esp32c3.bin', 'IMAGE_BOOTLOADER', /bootloader.*ESP32-C3/],
      ['partitions_singleapp.bin', 'IMAGE_PARTITION_TABLE', /partition table/],
      ['esp8266_deepsleep.bin', 'IMAGE_ESP8266', /ESP8266/],
      // An 8-byte-header ESP8266 image (valid segment walk and checksum) plus 5 stray bytes.
      ['not_4_byte_aligned.bin', 'IMAGE_ESP8266', /ESP8266/],
      ['helloworld-esp32.bin', 'IMAGE_NO_APP_DESC', /RAM only/],
      ['helloworld-esp32c3.bin', 'IMAGE_NO_APP_DESC', /ESP32-C3 image/],
      ['esp32s3_header.bin', 'IMAGE_TRUNCATED', /only an image header/],
      ['esp32c3_header_min_rev.bin', 'IMAGE_TRUNCATED', /only an image header/],
      ['one_kb.bin', 'IMAGE_NOT_AN_IMAGE', /starts with 0xED/],
      ['sector.bin', 'IMAGE_NOT_AN_IMAGE', /starts with 0x16/],
      ['onebyte.bin', 'IMAGE_NOT_AN_IMAGE', /starts with 0x61/],
      ['zerolength.bin', 'IMAGE_EMPTY', /empty/],
    ];
    for (const [name, code, pattern] of expected) {
      it(`${name} -> ${code}`, () => {
        expectImageError(read(name), code, pattern);
      });
    }
  });
});
