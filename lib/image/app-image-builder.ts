/**
 * Builds synthetic but structurally valid ESP-IDF app images, for tests and
 * the virtual ESP32: same header, segment, checksum, hash and app descriptor
 * layout as a real `build/<project>.bin`, filled with a deterministic
 * pseudo-random payload so that images of any size can be made without a
 * toolchain and different seeds give different images.
 */

import { createHash } from 'node:crypto';
import { findChip, type EspChip } from './esp-chips';
import {
  ESP_APP_DESC_MAGIC,
  ESP_APP_DESC_SIZE,
  ESP_IMAGE_HEADER_SIZE,
  ESP_IMAGE_MAGIC,
  ESP_SEGMENT_HEADER_SIZE,
  ESP_SHA256_SIZE,
  checksumBlockEnd,
  espChecksum,
} from './esp-image';
import { signImage } from './signature';

export interface AppImageOptions {
  /** Header chip id (0 ESP32, 2 ESP32-S2, 5 ESP32-C3, 9 ESP32-S3, ...). Default 0. */
  readonly chipId?: number;
  /**
   * Chip id to write into the header instead of `chipId`, whose addresses the
   * segments keep: an image relabelled for another chip, as tests need.
   */
  readonly headerChipId?: number;
  /** Approximate total image size in bytes. Default 64 KiB; at least ~400 bytes are always produced. */
  readonly size?: number;
  /** Seed of the payload; different seeds give different images. Default 1. */
  readonly seed?: number;
  /** Default "app". At most 31 bytes. */
  readonly projectName?: string;
  /** Default "1.0.0". At most 31 bytes. */
  readonly version?: string;
  /** Default "v5.3.1". At most 31 bytes. */
  readonly idfVersion?: string;
  /** Anti-rollback version in the app descriptor. Default 0. */
  readonly secureVersion?: number;
  /** Append the SHA-256 of the image, as ESP-IDF does by default. Default true. */
  readonly hashAppended?: boolean;
  /** Build time string. Default "12:00:00". At most 15 bytes. */
  readonly time?: string;
  /** Build date string. Default "Jan  1 2025". At most 15 bytes. */
  readonly date?: string;
  /** Minimum chip revision, major * 100 + minor. Default 0. */
  readonly minChipRevFull?: number;
  /** Maximum chip revision, major * 100 + minor. Default 0x63 (v0.99), as ESP-IDF writes for "any". */
  readonly maxChipRevFull?: number;
  /**
   * PEM private keys (RSA-3072 or ECDSA) to sign the image with, one
   * Secure Boot v2 block each (at most 3), as `espsecure.py sign_data
   * --version 2` does: real signatures that a device, espsecure.py and
   * verifyImageSignature accept. Default: unsigned.
   */
  readonly signingKeys?: string | readonly string[];
  /**
   * Segment contents instead of random bytes (repeated as needed), e.g. the
   * code of a real app, so that the image compresses as that app does.
   */
  readonly fill?: Buffer;
}

/** Segment roles in the order ESP-IDF typically emits them. */
const SEGMENT_SHARES = [
  { role: 'drom', share: 0.25 },
  { role: 'dram', share: 0.05 },
  { role: 'iram', share: 0.15 },
  { role: 'irom', share: 0.55 },
] as const;

type SegmentRole = (typeof SEGMENT_SHARES)[number]['role'];

/** Flash-mapped segments must have file offset and address equal modulo the cache page. */
const CACHE_PAGE = 0x10000;
const MIN_SEGMENT = 4;
const DEFAULT_SIZE = 64 * 1024;
/** Flash mode DIO, 4 MB flash, code 0 for frequency: the ESP-IDF defaults. */
const DEFAULT_FLASH_MODE = 2;
const DEFAULT_FLASH_SIZE_FREQ = 0x20;
/** ESP-IDF writes 0xEE ("not used") as the WP pin. */
const WP_PIN_UNUSED = 0xee;

interface PlannedSegment {
  readonly role: SegmentRole;
  readonly length: number;
}

/** Builds an image that `parseEspImage` accepts and that round-trips every option. */
export function buildAppImage(options: AppImageOptions = {}): Buffer {
  const chipId = options.chipId ?? 0;
  const chip = findChip(chipId);
  if (chip === undefined) throw new RangeError(`buildAppImage: no memory layout known for chip id ${chipId}`);

  const hashAppended = options.hashAppended ?? true;
  const plan = planSegments(options.size ?? DEFAULT_SIZE, hashAppended);
  const endOfSegments = ESP_IMAGE_HEADER_SIZE + plan.reduce((sum, s) => sum + ESP_SEGMENT_HEADER_SIZE + s.length, 0);
  const blockEnd = checksumBlockEnd(endOfSegments);
  const image = Buffer.alloc(blockEnd + (hashAppended ? ESP_SHA256_SIZE : 0));

  const random = xorshift32(options.seed ?? 1);
  const segments = writeSegments(image, plan, chip, random, options.fill);
  const iram = segments.find((s) => s.role === 'iram');
  // The entry point lies in IRAM, where ESP-IDF puts call_start_cpu0.
  writeHeader(image, options, chip, plan.length, iram?.loadAddress ?? chip.iramBase, hashAppended);
  writeAppDesc(image.subarray(segments[0].dataOffset), options);

  image[blockEnd - 1] = espChecksum(segments.map((s) => image.subarray(s.dataOffset, s.dataOffset + s.length)));
  if (hashAppended) {
    createHash('sha256').update(image.subarray(0, blockEnd)).digest().copy(image, blockEnd);
  }
  const keys = options.signingKeys;
  const unsigned = keys === undefined || (typeof keys !== 'string' && keys.length === 0);
  return unsigned ? image : signImage(image, keys);
}

/** Splits the data budget over the segment roles; every length is a multiple of 4 as esptool emits. */
function planSegments(size: number, hashAppended: boolean): PlannedSegment[] {
  const overhead = ESP_IMAGE_HEADER_SIZE + SEGMENT_SHARES.length * ESP_SEGMENT_HEADER_SIZE + 16 + (hashAppended ? ESP_SHA256_SIZE : 0);
  const budget = Math.max(0, Math.floor(size) - overhead);
  return SEGMENT_SHARES.map(({ role, share }) => {
    const minimum = role === 'drom' ? ESP_APP_DESC_SIZE : MIN_SEGMENT;
    return { role, length: Math.max(minimum, align4Down(budget * share)) };
  });
}

interface WrittenSegment extends PlannedSegment {
  readonly loadAddress: number;
  readonly dataOffset: number;
}

function writeSegments(image: Buffer, plan: readonly PlannedSegment[], chip: EspChip, random: () => number, fill: Buffer | undefined): WrittenSegment[] {
  const written: WrittenSegment[] = [];
  let offset = ESP_IMAGE_HEADER_SIZE;
  for (const seg of plan) {
    const dataOffset = offset + ESP_SEGMENT_HEADER_SIZE;
    const loadAddress = segmentAddress(seg.role, chip, dataOffset);
    image.writeUInt32LE(loadAddress, offset);
    image.writeUInt32LE(seg.length, offset + 4);
    if (fill && fill.length > 0) {
      for (let i = 0; i < seg.length; i++) image[dataOffset + i] = fill[(dataOffset + i) % fill.length];
    } else {
      fillRandom(image, dataOffset, seg.length, random);
    }
    written.push({ ...seg, loadAddress, dataOffset });
    offset = dataOffset + seg.length;
  }
  return written;
}

function segmentAddress(role: SegmentRole, chip: EspChip, dataOffset: number): number {
  switch (role) {
    case 'drom':
      return chip.dromBase + (dataOffset % CACHE_PAGE);
    case 'irom':
      return chip.iromBase + (dataOffset % CACHE_PAGE);
    case 'dram':
      return chip.dramBase;
    case 'iram':
      return chip.iramBase;
  }
}

function writeHeader(image: Buffer, options: AppImageOptions, chip: EspChip, segmentCount: number, entryAddress: number, hashAppended: boolean): void {
  image[0] = ESP_IMAGE_MAGIC;
  image[1] = segmentCount;
  image[2] = DEFAULT_FLASH_MODE;
  image[3] = DEFAULT_FLASH_SIZE_FREQ;
  image.writeUInt32LE(entryAddress, 4);
  image[8] = WP_PIN_UNUSED;
  // bytes 9-11: SPI pin drive settings, 0 = default
  image.writeUInt16LE(options.headerChipId ?? chip.id, 12);
  const minFull = options.minChipRevFull ?? 0;
  image[14] = Math.floor(minFull / 100);
  image.writeUInt16LE(minFull, 15);
  image.writeUInt16LE(options.maxChipRevFull ?? 0x63, 17);
  // bytes 19-22 reserved
  image[23] = hashAppended ? 1 : 0;
}

function writeAppDesc(desc: Buffer, options: AppImageOptions): void {
  desc.fill(0, 0, ESP_APP_DESC_SIZE);
  desc.writeUInt32LE(ESP_APP_DESC_MAGIC, 0);
  desc.writeUInt32LE(options.secureVersion ?? 0, 4);
  writeCString(desc, 16, 32, options.version ?? '1.0.0', 'version');
  writeCString(desc, 48, 32, options.projectName ?? 'app', 'projectName');
  writeCString(desc, 80, 16, options.time ?? '12:00:00', 'time');
  writeCString(desc, 96, 16, options.date ?? 'Jan  1 2025', 'date');
  writeCString(desc, 112, 32, options.idfVersion ?? 'v5.3.1', 'idfVersion');
  // app_elf_sha256: derived from the names and seed so it differs between builds, as a real one would.
  createHash('sha256')
    .update(`${options.projectName ?? 'app'}/${options.version ?? '1.0.0'}/${options.seed ?? 1}`)
    .digest()
    .copy(desc, 144);
  desc.writeUInt16LE(0, 176); // min_efuse_blk_rev_full
  desc.writeUInt16LE(0, 178); // max_efuse_blk_rev_full
  desc[180] = 16; // mmu_page_size: log2(64 KiB)
}

/** Writes a NUL-terminated string into a fixed field; too long would be silently cut by ESP-IDF, so refuse. */
function writeCString(buf: Buffer, offset: number, size: number, value: string, name: string): void {
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length >= size) {
    throw new RangeError(`buildAppImage: ${name} "${value}" is ${bytes.length} bytes; at most ${size - 1} fit`);
  }
  bytes.copy(buf, offset);
}

/** Fills `length` (a multiple of 4) bytes at `offset` with the generator's output. */
function fillRandom(buf: Buffer, offset: number, length: number, random: () => number): void {
  for (let i = 0; i < length; i += 4) buf.writeUInt32LE(random(), offset + i);
}

/** Marsaglia xorshift32: tiny, fast and deterministic; quality is irrelevant for filler bytes. */
function xorshift32(seed: number): () => number {
  // Mix the seed so that small seeds differ early and 0 (a fixed point of xorshift) is avoided.
  let state = (Math.imul(seed >>> 0, 0x9e3779b1) ^ 0x6d2b79f5) >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state;
  };
}

function align4Down(value: number): number {
  return Math.floor(value / 4) * 4;
}
