/**
 * The bad-input corpus: images made by damaging a valid synthetic app
 * (header and segment fields out of range, truncation, integrity, another
 * chip, no app descriptor, too large), plus every esptool fixture.
 * Each input says which error the client's own checks must give it.
 */
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import type { BleOtaErrorCode } from '../../lib/errors';
import { buildAppImage } from '../../lib/image/app-image-builder';
import { checksumBlockEnd, espChecksum, parseEspImage } from '../../lib/image/esp-image';
import { fixture, FIXTURES_DIR, haveFixtures } from './fixtures';

export interface BadInput {
  name: string;
  data: Buffer;
  /** The code validateImage must refuse it with. */
  clientCode: BleOtaErrorCode;
}

/** The valid image the mutations start from: 4 segments, hash appended. */
export function baseImage(): Buffer {
  return buildAppImage({ size: 12 * 1024, projectName: 'virtual-esp32', version: '2.0.0', seed: 77 });
}

interface Segment {
  headerOffset: number;
  dataOffset: number;
  length: number;
}

function segmentsOf(image: Buffer): Segment[] {
  return parseEspImage(image).segments.map((s) => ({ headerOffset: s.dataOffset - 8, dataOffset: s.dataOffset, length: s.length }));
}

/**
 * Recomputes the checksum and the appended SHA-256 after a change, so that
 * only the changed field is wrong (what a broken build tool would write).
 */
function seal(image: Buffer, segs: Segment[]): Buffer {
  const last = segs[segs.length - 1];
  const blockEnd = checksumBlockEnd(last.dataOffset + last.length);
  image[blockEnd - 1] = espChecksum(segs.map((s) => image.subarray(s.dataOffset, s.dataOffset + s.length)));
  createHash('sha256').update(image.subarray(0, blockEnd)).digest().copy(image, blockEnd);
  return image;
}

function mutate(base: Buffer, fn: (b: Buffer) => void): Buffer {
  const copy = Buffer.from(base);
  fn(copy);
  return copy;
}

/** validateImage's code for each segment of baseImage() whose length field is zeroed. */
const ZEROED_CODES: BleOtaErrorCode[] = ['IMAGE_BAD_CHECKSUM', 'IMAGE_TRUNCATED', 'IMAGE_TRUNCATED', 'IMAGE_BAD_CHECKSUM'];

/** Every damaged image, generated from one valid image. */
export function generatedBadImages(base = baseImage()): BadInput[] {
  const out: BadInput[] = [];
  const add = (name: string, clientCode: BleOtaErrorCode, data: Buffer) => out.push({ name, data, clientCode });
  const segs = segmentsOf(base);
  const hashAt = base.length - 32;
  const checksumAt = hashAt - 1;

  // Each header field with a range, out of it; sealed so that only the field is wrong.
  const header: Array<[string, (b: Buffer) => void, BleOtaErrorCode]> = [
    ['magic 0x00', (b) => (b[0] = 0x00), 'IMAGE_NOT_AN_IMAGE'],
    ['magic 0xE8', (b) => (b[0] = 0xe8), 'IMAGE_NOT_AN_IMAGE'],
    ['segment count 0', (b) => (b[1] = 0), 'IMAGE_NOT_AN_IMAGE'],
    ['segment count 17', (b) => (b[1] = 17), 'IMAGE_NOT_AN_IMAGE'],
    ['segment count 255', (b) => (b[1] = 255), 'IMAGE_NOT_AN_IMAGE'],
    ['SPI flash mode 6', (b) => (b[2] = 6), 'IMAGE_NOT_AN_IMAGE'],
    ['SPI flash mode 255', (b) => (b[2] = 255), 'IMAGE_NOT_AN_IMAGE'],
    ['flash size code 8', (b) => (b[3] = (b[3] & 0x0f) | 0x80), 'IMAGE_NOT_AN_IMAGE'],
    ['flash size code 15', (b) => (b[3] = (b[3] & 0x0f) | 0xf0), 'IMAGE_NOT_AN_IMAGE'],
    ['chip id 0x1234 (not an ESP chip id)', (b) => b.writeUInt16LE(0x1234, 12), 'IMAGE_NOT_AN_IMAGE'],
    ['chip id 0x00AB (no such chip)', (b) => b.writeUInt16LE(0xab, 12), 'IMAGE_WRONG_CHIP'],
    ['min chip revision above max', (b) => b.writeUInt16LE(512, 15), 'IMAGE_NOT_AN_IMAGE'],
    ['hash flag 2', (b) => (b[23] = 2), 'IMAGE_NOT_AN_IMAGE'],
    ['hash flag 255', (b) => (b[23] = 255), 'IMAGE_NOT_AN_IMAGE'],
  ];
  for (const [what, fn, code] of header) add(`header: ${what}`, code, seal(mutate(base, fn), segs));

  // Header bytes without a range of their own: changed, not sealed, the appended hash tells.
  const unsealed: Array<[string, number]> = [
    ['entry address', 4],
    ['WP pin', 8],
    ['SPI pin drive', 9],
    ['chip id (another chip, hash not updated)', 12],
    ['minimum chip revision', 14],
    ['reserved byte', 20],
  ];
  for (const [what, at] of unsealed)
    add(
      `header: ${what} changed, hash stale`,
      'IMAGE_BAD_HASH',
      mutate(base, (b) => (b[at] ^= 0x5a)),
    );

  // Segment header fields out of range.
  const last = segs[segs.length - 1];
  const shorter = segs.map((s) => (s === last ? { ...s, length: s.length - 2 } : s));
  add(
    `segment ${segs.length}: length not a multiple of 4`,
    'IMAGE_BAD_SEGMENT',
    seal(
      mutate(base, (b) => b.writeUInt32LE(last.length - 2, last.headerOffset + 4)),
      shorter,
    ),
  );
  segs.forEach((s, i) => {
    // What follows is read as the next segment header: where that walk ends decides the error.
    add(
      `segment ${i + 1}: length zeroed (a zero-length segment)`,
      ZEROED_CODES[i],
      mutate(base, (b) => b.writeUInt32LE(0, s.headerOffset + 4)),
    );
    add(
      `segment ${i + 1}: length runs past the file`,
      'IMAGE_TRUNCATED',
      mutate(base, (b) => b.writeUInt32LE(0x00ffff00, s.headerOffset + 4)),
    );
  });
  add(
    'segment 1 (flash-mapped): address off its 64 KB page offset',
    'IMAGE_BAD_SEGMENT',
    seal(
      mutate(base, (b) => b.writeUInt32LE(b.readUInt32LE(segs[0].headerOffset) + 4, segs[0].headerOffset)),
      segs,
    ),
  );
  add(
    `segment 4 (flash-mapped): address off its 64 KB page offset`,
    'IMAGE_BAD_SEGMENT',
    seal(
      mutate(base, (b) => b.writeUInt32LE(b.readUInt32LE(segs[3].headerOffset) + 0x100, segs[3].headerOffset)),
      segs,
    ),
  );

  // A segment count that overruns the file.
  for (const count of [segs.length + 1, 16])
    add(
      `segment count ${count} (overruns the file)`,
      'IMAGE_TRUNCATED',
      mutate(base, (b) => (b[1] = count)),
    );

  // Truncated inside the header and at every segment boundary.
  for (const at of [1, 2, 8, 12, 14, 23]) add(`truncated in the header at ${at}`, 'IMAGE_TRUNCATED', base.subarray(0, at));
  segs.forEach((s, i) => {
    add(`truncated before segment ${i + 1}'s header`, 'IMAGE_TRUNCATED', base.subarray(0, s.headerOffset));
    add(`truncated inside segment ${i + 1}'s header`, 'IMAGE_TRUNCATED', base.subarray(0, s.headerOffset + 5));
    add(`truncated after segment ${i + 1}'s header`, 'IMAGE_TRUNCATED', base.subarray(0, s.dataOffset));
    add(`truncated inside segment ${i + 1}'s data`, 'IMAGE_TRUNCATED', base.subarray(0, s.dataOffset + Math.floor(s.length / 2)));
  });
  add('truncated before the checksum', 'IMAGE_TRUNCATED', base.subarray(0, checksumAt));
  add('truncated before the appended SHA-256', 'IMAGE_TRUNCATED', base.subarray(0, hashAt));
  add('truncated inside the appended SHA-256', 'IMAGE_TRUNCATED', base.subarray(0, base.length - 1));

  // Integrity.
  add(
    'checksum byte flipped',
    'IMAGE_BAD_CHECKSUM',
    mutate(base, (b) => (b[checksumAt] ^= 0xff)),
  );
  add(
    'a segment data byte flipped',
    'IMAGE_BAD_CHECKSUM',
    mutate(base, (b) => (b[segs[2].dataOffset + 3] ^= 0x01)),
  );
  add(
    'appended SHA-256 wrong',
    'IMAGE_BAD_HASH',
    mutate(base, (b) => (b[hashAt + 7] ^= 0x80)),
  );
  add(
    'a data byte changed, checksum kept right, SHA-256 stale',
    'IMAGE_BAD_HASH',
    mutate(base, (b) => {
      b[segs[3].dataOffset] ^= 0x11;
      b[checksumAt] ^= 0x11;
    }),
  );

  // Another chip: the ESP32-S2 has no Bluetooth (refused before connecting).
  add('built for the ESP32-S2 (no Bluetooth)', 'IMAGE_WRONG_CHIP', buildAppImage({ chipId: 2, size: 12 * 1024, seed: 78 }));
  // No app descriptor: the first segment's data is not esp_app_desc_t.
  add(
    'no app descriptor',
    'IMAGE_NO_APP_DESC',
    seal(
      mutate(base, (b) => b.writeUInt32LE(0x12345678, segs[0].dataOffset)),
      segs,
    ),
  );
  // Larger than any app partition.
  add('larger than 16 MB', 'IMAGE_TOO_LARGE', buildAppImage({ size: 16 * 1024 * 1024 + 4096, seed: 79 }));
  return out;
}

/** What validateImage says about each esptool fixture (none is an app this client may send). */
const FIXTURE_CODES: Record<string, BleOtaErrorCode> = {
  'bootloader_esp32.bin': 'IMAGE_BOOTLOADER',
  'bootloader_esp32c3.bin': 'IMAGE_BOOTLOADER',
  'esp32c3_header_min_rev.bin': 'IMAGE_TRUNCATED',
  'esp32s3_header.bin': 'IMAGE_TRUNCATED',
  'esp8266_deepsleep.bin': 'IMAGE_ESP8266',
  'esp_idf_blink_esp32s2.bin': 'IMAGE_WRONG_CHIP',
  'helloworld-esp32.bin': 'IMAGE_NO_APP_DESC',
  'helloworld-esp32c3.bin': 'IMAGE_NO_APP_DESC',
  'not_4_byte_aligned.bin': 'IMAGE_ESP8266',
  'one_kb.bin': 'IMAGE_NOT_AN_IMAGE',
  'onebyte.bin': 'IMAGE_NOT_AN_IMAGE',
  'partitions_singleapp.bin': 'IMAGE_PARTITION_TABLE',
  'sector.bin': 'IMAGE_NOT_AN_IMAGE',
  'zerolength.bin': 'IMAGE_EMPTY',
};

/** Every file of ../shared/fixtures/esptool-images; [] when the folder is absent. */
export function fixtureBadImages(): BadInput[] {
  if (!haveFixtures) return [];
  return readdirSync(FIXTURES_DIR)
    .filter((f) => f.endsWith('.bin'))
    .sort()
    .map((f) => ({ name: `fixture ${f}`, data: fixture(f), clientCode: FIXTURE_CODES[f] ?? ('unlisted' as BleOtaErrorCode) }));
}
