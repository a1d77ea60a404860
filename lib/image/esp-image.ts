/**
 * Parser and validator for ESP32-family application images (the
 * `build/<project>.bin` that ESP-IDF writes to an OTA partition).
 *
 * The client runs this before connecting to a device, so a wrong file (a
 * bootloader, a partition table, an ESP8266 build, a cut-off download) is
 * reported with a clear message instead of being rejected by the device after
 * minutes of transfer.
 *
 * Image layout (little endian):
 *   24-byte header, then `segment_count` segments of
 *   { load address u32, length u32, data }, then zero padding so that the
 *   checksum byte is the last byte of a 16-byte block, then optionally a
 *   SHA-256 over everything before it. The first segment of an app starts with
 *   the 256-byte `esp_app_desc_t`, i.e. at image offset 0x20.
 */

import { createHash } from 'node:crypto';
import { types } from 'node:util';
import { ImageError } from '../errors';
import { chipName, chipsFitting, findChip, isFlashMapped, isInRam, segmentMismatch } from './esp-chips';
import { readSignatureSector, type SignatureScheme } from './signature';

export { chipName } from './esp-chips';
export { crc32 } from './signature';

// ---------------------------------------------------------------------------
// Layout constants

export const ESP_IMAGE_MAGIC = 0xe9;
export const ESP_IMAGE_HEADER_SIZE = 24;
export const ESP_SEGMENT_HEADER_SIZE = 8;
/** ESP-IDF's bootloader refuses images with more segments than this. */
export const ESP_IMAGE_MAX_SEGMENTS = 16;
export const ESP_CHECKSUM_SEED = 0xef;
export const ESP_SHA256_SIZE = 32;
export const ESP_APP_DESC_MAGIC = 0xabcd5432;
export const ESP_APP_DESC_SIZE = 256;
/** The app descriptor is the start of the first segment's data. */
export const ESP_APP_DESC_OFFSET = ESP_IMAGE_HEADER_SIZE + ESP_SEGMENT_HEADER_SIZE;

/** ESP8266 "v2" images start with this byte instead of 0xE9. */
const ESP8266_V2_MAGIC = 0xea;
/** ESP8266 images have an 8-byte header (no extended header). */
const ESP8266_HEADER_SIZE = 8;
const PARTITION_ENTRY_SIZE = 32;
const PARTITION_MAGIC = [0xaa, 0x50] as const;
/** The MD5 entry that ESP-IDF appends to a partition table starts with 0xEB 0xEB. */
const PARTITION_MD5_MAGIC = [0xeb, 0xeb] as const;

/**
 * A RAM-only image (nothing mapped from flash, none after it either) this
 * large is taken to be an ESP-IDF second-stage bootloader when it has no
 * bootloader descriptor (ESP-IDF before v5.2): bootloaders are RAM-only and
 * several KiB even with logging off, while tiny RAM-only images are test
 * programs. Either way it is not an app.
 */
const BOOTLOADER_MIN_RAM_BYTES = 4096;
/** esp_bootloader_desc_t: its magic byte and size. */
const BOOTLOADER_DESC_MAGIC = 0x50;
const BOOTLOADER_DESC_SIZE = 80;

const FLASH_MODES = ['QIO', 'QOUT', 'DIO', 'DOUT', 'FAST_READ', 'SLOW_READ'] as const;
const FLASH_SIZES = ['1MB', '2MB', '4MB', '8MB', '16MB', '32MB', '64MB', '128MB'] as const;

const SIXTEEN_MB = 0x1000000;
/** The flash MMU page: mapped segments keep their offset within it. */
const MMU_PAGE = 0x10000;

const APP_FILE_HINT = 'Select the application binary of your ESP-IDF build (build/<project>.bin).';

// ---------------------------------------------------------------------------
// Types

export interface EspImageHeader {
  readonly magic: number;
  readonly segmentCount: number;
  /** SPI flash mode code (byte 2). */
  readonly flashMode: number;
  /** "QIO", "DIO", ... or "unknown (n)". */
  readonly flashModeName: string;
  /** High nibble of byte 3. */
  readonly flashSizeCode: number;
  /** "4MB" etc. (same coding for all ESP32-family chips). */
  readonly flashSize: string;
  /** Low nibble of byte 3; its meaning in MHz differs per chip, so it is kept raw. */
  readonly flashFreqCode: number;
  readonly entryAddress: number;
  readonly wpPin: number;
  readonly spiPinDrive: readonly [number, number, number];
  readonly chipId: number;
  /** Legacy minimum chip revision (major only). */
  readonly minChipRev: number;
  /** Minimum chip revision as major * 100 + minor. */
  readonly minChipRevFull: number;
  /** Maximum chip revision as major * 100 + minor. */
  readonly maxChipRevFull: number;
  readonly hashAppended: boolean;
}

export interface EspImageSegment {
  readonly index: number;
  readonly loadAddress: number;
  readonly length: number;
  /** Offset of the segment's data (not its 8-byte header) in the file. */
  readonly dataOffset: number;
  /** View of the segment's data (not a copy). */
  readonly data: Buffer;
}

/** `esp_app_desc_t`: what ESP-IDF embeds in every app to identify it. */
export interface EspAppDescriptor {
  readonly magic: number;
  readonly secureVersion: number;
  readonly version: string;
  readonly projectName: string;
  /** Build time, e.g. "10:15:21". */
  readonly time: string;
  /** Build date, e.g. "Aug 30 2022". */
  readonly date: string;
  readonly idfVersion: string;
  readonly appElfSha256: Buffer;
  readonly minEfuseBlkRevFull: number;
  readonly maxEfuseBlkRevFull: number;
  /** log2 of the flash MMU page size; 0 when the image predates the field. */
  readonly mmuPageSizeLog2: number;
}

/**
 * Secure Boot v2 signature blocks found after the image: their presence, not
 * their validity (lib/image/signature.ts verifies them).
 */
export interface EspSignatureInfo {
  /** File offset of the signature sector: the image length rounded up to 4 KiB. */
  readonly offset: number;
  /** Number of valid signature blocks (1-3) from block 0 on, as espsecure.py writes them. */
  readonly blockCount: number;
  /** Block version byte of block 0: 2 = RSA-PSS, 3 = ECDSA. */
  readonly version: number;
  /** Scheme of block 0. */
  readonly scheme: SignatureScheme;
  /** SHA-256 of block 0's public key: the digest of the key it was signed with, as a device trusts it. */
  readonly keyDigest: Buffer;
}

export interface EspImage {
  readonly header: EspImageHeader;
  readonly chipId: number;
  readonly chipName: string;
  readonly segments: readonly EspImageSegment[];
  readonly checksum: number;
  /** File offset of the checksum byte. */
  readonly checksumOffset: number;
  /**
   * The image's SHA-256 as ESP-IDF reports it for an app partition: the
   * appended hash when there is one, otherwise the hash of the image bytes.
   */
  readonly sha256: Buffer;
  /** Bytes of the image itself, including checksum padding and appended hash. */
  readonly imageLength: number;
  /** Bytes after the image (signature sector, flash padding...). */
  readonly trailingBytes: number;
  readonly appDesc: EspAppDescriptor;
  readonly signature?: EspSignatureInfo;
}

export interface EspImageSummary {
  readonly chip: string;
  readonly chipId: number;
  readonly project: string;
  readonly version: string;
  readonly idfVersion: string;
  readonly secureVersion: number;
  /** Bytes that will be sent: the whole file, including trailing bytes such as a signature. */
  readonly size: number;
  readonly sha256: string;
  /** The image carries a Secure Boot v2 signature block (its presence, not its validity: the device checks that). */
  readonly signed: boolean;
}

// ---------------------------------------------------------------------------
// Public API

/**
 * Throws IMAGE_NOT_BUFFER / IMAGE_EMPTY unless `x` is a non-empty Buffer.
 * Takes `unknown` because it is meant for `msg.payload` as it arrives.
 */
export function assertImageBuffer(x: unknown): asserts x is Buffer {
  if (!Buffer.isBuffer(x)) {
    throw new ImageError('IMAGE_NOT_BUFFER', notBufferMessage(x));
  }
  if (x.length === 0) {
    throw new ImageError(
      'IMAGE_EMPTY',
      'The firmware image is empty (0 bytes). Check the file name in the node that reads it ' + 'and that the build actually produced the .bin file.',
    );
  }
}

/**
 * Parses and validates an ESP32-family app image; throws ImageError with an
 * IMAGE_* code when it is anything else or damaged. Accepts `unknown` so a
 * flow's `msg.payload` can be passed straight in.
 */
export function parseEspImage(data: unknown): EspImage {
  assertImageBuffer(data);
  rejectForeignFormats(data);

  const header = parseHeader(data);
  const problem = headerProblem(data, header);
  if (problem !== undefined) {
    if (isEsp8266V1Image(data)) throw esp8266Error();
    throw new ImageError(
      'IMAGE_NOT_AN_IMAGE',
      `This file starts with the ESP image byte 0xE9 but its header is not valid ` + `(${problem}), so it is not an ESP32 firmware image. ${APP_FILE_HINT}`,
    );
  }

  let layout: ImageLayout;
  try {
    layout = parseLayout(data, header);
    verifyIntegrity(data, layout);
  } catch (err) {
    // An ESP8266 image can look like a damaged ESP32 one; name it correctly.
    if (isEsp8266V1Image(data)) throw esp8266Error();
    throw err;
  }

  const appDesc = classifyAndReadAppDesc(data, header, layout);
  const signature = findSignature(data, layout.imageLength);
  return {
    header,
    chipId: header.chipId,
    chipName: chipName(header.chipId),
    segments: layout.segments,
    checksum: data[layout.checksumOffset],
    checksumOffset: layout.checksumOffset,
    sha256: imageDigest(data, layout),
    imageLength: layout.imageLength,
    trailingBytes: data.length - layout.imageLength,
    appDesc,
    ...(signature === undefined ? {} : { signature }),
  };
}

/** The facts a result message needs about an image. */
export function imageSummary(img: EspImage): EspImageSummary {
  return {
    chip: img.chipName,
    chipId: img.chipId,
    project: img.appDesc.projectName,
    version: img.appDesc.version,
    idfVersion: img.appDesc.idfVersion,
    secureVersion: img.appDesc.secureVersion,
    size: img.imageLength + img.trailingBytes,
    sha256: img.sha256.toString('hex'),
    signed: img.signature !== undefined,
  };
}

/** XOR checksum of segment data as the ROM and bootloader compute it. */
export function espChecksum(segments: readonly Buffer[]): number {
  let sum = ESP_CHECKSUM_SEED;
  for (const seg of segments) sum = xorBytes(sum, seg);
  return sum;
}

/** Offset just past the 16-byte-aligned padding whose last byte is the checksum. */
export function checksumBlockEnd(endOfSegments: number): number {
  return alignUp(endOfSegments + 1, 16);
}

// ---------------------------------------------------------------------------
// Recognising files that are not ESP32 images

function notBufferMessage(x: unknown): string {
  const hint =
    typeof x === 'string' && looksLikeBase64(x)
      ? ' It looks like base64 text: decode it into a Buffer first, e.g. a Function node with ' + "msg.payload = Buffer.from(msg.payload, 'base64')"
      : typeof x === 'string'
        ? ' Set the upstream node to output binary (a file read as text is damaged by the character decoding): File In "a single Buffer object", ' +
          'HTTP Request "a binary buffer", MQTT In "a Buffer".'
        : isJsonBuffer(x)
          ? ' It is a Buffer turned into JSON ({"type":"Buffer","data":[...]}), as JSON.stringify or a JSON node leaves one: send the Buffer itself, ' +
            'or turn it back with a Function node: msg.payload = Buffer.from(msg.payload.data)'
          : isByteArray(x)
            ? ' It is an array of byte values: turn it into a Buffer with a Function node: msg.payload = Buffer.from(msg.payload)'
            : ' Make the upstream node output binary: File In "a single Buffer object", HTTP Request "a binary buffer", MQTT In "a Buffer"; ' +
              'an HTTP In upload is in msg.req.files[0].buffer.';
  return `The firmware image must be a Buffer, but msg.payload is ${describePayload(x)}.${hint}`;
}

/** What JSON.stringify makes of a Buffer: {"type":"Buffer","data":[bytes]}. */
function isJsonBuffer(x: unknown): x is { type: 'Buffer'; data: unknown[] } {
  return typeof x === 'object' && x !== null && (x as { type?: unknown }).type === 'Buffer' && Array.isArray((x as { data?: unknown }).data);
}

/** A non-empty array of whole numbers from 0 to 255: the bytes of a file, as a JSON array holds them. */
function isByteArray(x: unknown): x is number[] {
  return Array.isArray(x) && x.length > 0 && x.every((v) => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 255);
}

/**
 * Base64 of a binary file: only the base64 alphabet (line breaks allowed),
 * whole groups of four. An app image's base64 starts with "6" (0xE9); any
 * long enough base64 still gets the hint, as it is never an image as text.
 */
function looksLikeBase64(text: string): boolean {
  const compact = text.replace(/\s+/g, '');
  return compact.length >= 16 && compact.length % 4 === 0 && /^[A-Za-z0-9+/]+={0,2}$/.test(compact);
}

/**
 * The kind of value, as IMAGE_NOT_BUFFER's message names it ("an object", "a Uint8Array (convert
 * it with ...)"). Binary data of another kind is named with the way to make a Buffer of it, also
 * when it comes from another JavaScript realm (a Function node's sandbox has its own Uint8Array
 * and ArrayBuffer, which instanceof does not recognise).
 */
export function describePayload(x: unknown): string {
  if (x === null || x === undefined) return String(x);
  if (Array.isArray(x)) return 'an array';
  if (types.isUint8Array(x) || types.isUint8ClampedArray(x)) return `a ${tagOf(x)} (convert it with Buffer.from(msg.payload))`;
  // Buffer.from(a Uint16Array) would keep one byte of each element: the view's bytes are wanted.
  if (ArrayBuffer.isView(x)) return `a ${tagOf(x)} (convert its bytes with Buffer.from(msg.payload.buffer, msg.payload.byteOffset, msg.payload.byteLength))`;
  if (types.isAnyArrayBuffer(x)) return `an ${tagOf(x)} (convert it with Buffer.from(msg.payload))`;
  const type = typeof x;
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

/** The built-in class of a value (Uint8Array, ArrayBuffer...), whatever realm made it. */
function tagOf(x: object): string {
  return Object.prototype.toString.call(x).slice(8, -1);
}

function rejectForeignFormats(data: Buffer): void {
  if (isPartitionTable(data)) {
    throw new ImageError(
      'IMAGE_PARTITION_TABLE',
      `This is an ESP-IDF partition table (partition-table.bin), not a firmware image; ` + `OTA updates only replace the app. ${APP_FILE_HINT}`,
    );
  }
  if (isEsp8266V2Image(data)) throw esp8266Error();
  if (data[0] !== ESP_IMAGE_MAGIC) {
    throw new ImageError(
      'IMAGE_NOT_AN_IMAGE',
      `This file is not an ESP32 firmware image: it should start with the byte 0xE9 but starts ` + `with ${hexBytes(data, 0, 4)}. ${APP_FILE_HINT}`,
    );
  }
  if (data.length < ESP_IMAGE_HEADER_SIZE) {
    throw new ImageError(
      'IMAGE_TRUNCATED',
      `The firmware image is cut off: it has ${data.length} byte(s), less than the ` + `${ESP_IMAGE_HEADER_SIZE}-byte image header. Copy or download the .bin file again.`,
    );
  }
}

/**
 * A partition table is a run of 32-byte entries starting 0xAA 0x50, ended by
 * an MD5 entry or erased (0xFF) flash. Checking the second entry as well keeps
 * random data that happens to start with 0xAA 0x50 out.
 */
function isPartitionTable(data: Buffer): boolean {
  if (!startsWith(data, 0, PARTITION_MAGIC)) return false;
  if (data.length < 2 * PARTITION_ENTRY_SIZE) return data.length >= PARTITION_ENTRY_SIZE;
  const next = PARTITION_ENTRY_SIZE;
  return startsWith(data, next, PARTITION_MAGIC) || startsWith(data, next, PARTITION_MD5_MAGIC) || startsWith(data, next, [0xff, 0xff]);
}

/**
 * ESP8266 "v2" images: 0xEA header, one flash (IROM) segment, then a complete
 * 0xE9 ESP8266 image. Requiring the inner image keeps random data out.
 */
function isEsp8266V2Image(data: Buffer): boolean {
  if (data[0] !== ESP8266_V2_MAGIC || data.length < 2 * ESP8266_HEADER_SIZE) return false;
  const iromLength = data.readUInt32LE(ESP8266_HEADER_SIZE + 4);
  const inner = 2 * ESP8266_HEADER_SIZE + iromLength;
  return inner < data.length && isEsp8266V1Image(data.subarray(inner));
}

/**
 * ESP8266 "v1" images use the same 0xE9 magic but only an 8-byte header, so
 * segments start at offset 8. A complete segment walk ending in a matching
 * checksum is strong evidence.
 */
function isEsp8266V1Image(data: Buffer): boolean {
  if (data.length < ESP8266_HEADER_SIZE || data[0] !== ESP_IMAGE_MAGIC) return false;
  const count = data[1];
  if (count === 0 || count > ESP_IMAGE_MAX_SEGMENTS) return false;
  const walk = walkSegments(data, ESP8266_HEADER_SIZE, count);
  if (walk.problem !== undefined) return false;
  const checksumOffset = checksumBlockEnd(walk.end) - 1;
  if (checksumOffset >= data.length) return false;
  return espChecksum(walk.segments.map((s) => s.data)) === data[checksumOffset];
}

function esp8266Error(): ImageError {
  return new ImageError(
    'IMAGE_ESP8266',
    'This is an ESP8266 firmware image. This node updates ESP32-family chips only; ' + 'build your project for an ESP32 target with ESP-IDF and use its build/<project>.bin.',
  );
}

// ---------------------------------------------------------------------------
// Header

function parseHeader(data: Buffer): EspImageHeader {
  const flashMode = data[2];
  const flashSizeCode = data[3] >> 4;
  return {
    magic: data[0],
    segmentCount: data[1],
    flashMode,
    flashModeName: FLASH_MODES[flashMode] ?? `unknown (${flashMode})`,
    flashSizeCode,
    flashSize: FLASH_SIZES[flashSizeCode] ?? `unknown (${flashSizeCode})`,
    flashFreqCode: data[3] & 0x0f,
    entryAddress: data.readUInt32LE(4),
    wpPin: data[8],
    spiPinDrive: [data[9], data[10], data[11]],
    chipId: data.readUInt16LE(12),
    minChipRev: data[14],
    minChipRevFull: data.readUInt16LE(15),
    maxChipRevFull: data.readUInt16LE(17),
    hashAppended: data[23] === 1,
  };
}

/**
 * Sanity checks on the header; undefined when it looks like an ESP32 image
 * header. They separate ESP32 images from ESP8266 images and random data: in
 * those, bytes 8-23 are segment data, so the hash flag is rarely 0/1 and the
 * chip id rarely small.
 */
function headerProblem(data: Buffer, header: EspImageHeader): string | undefined {
  if (header.segmentCount === 0) return 'it declares no segments';
  if (header.segmentCount > ESP_IMAGE_MAX_SEGMENTS) {
    return `it declares ${header.segmentCount} segments, more than ${ESP_IMAGE_MAX_SEGMENTS}`;
  }
  // Checked on the raw byte because the parsed header folds it to a boolean.
  const hashFlag = data[23];
  if (hashFlag > 1) return `its hash flag is ${hashFlag}, expected 0 or 1`;
  if (header.chipId > 0xff) return `chip id ${header.chipId} is not an ESP chip id`;
  if (header.flashMode >= FLASH_MODES.length) {
    return `its SPI flash mode is ${header.flashMode}, expected 0-${FLASH_MODES.length - 1}`;
  }
  if (header.flashSizeCode >= FLASH_SIZES.length) {
    return `its flash size code is ${header.flashSizeCode}, expected 0-${FLASH_SIZES.length - 1}`;
  }
  // 0 and 0xFFFF mean "no maximum".
  const maxRev = header.maxChipRevFull;
  if (maxRev !== 0 && maxRev !== 0xffff && header.minChipRevFull > maxRev) {
    return `it needs chip revision ${revName(header.minChipRevFull)} or later but at most ${revName(maxRev)}, which no chip is`;
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// Segments, checksum, hash

interface SegmentWalk {
  readonly segments: EspImageSegment[];
  /** Offset just after the last complete segment. */
  readonly end: number;
  /** Set when the file ends inside a segment header or data. */
  readonly problem?: string;
}

function walkSegments(data: Buffer, start: number, count: number): SegmentWalk {
  const segments: EspImageSegment[] = [];
  let offset = start;
  for (let index = 0; index < count; index++) {
    const where = `segment ${index + 1} of ${count}`;
    if (offset + ESP_SEGMENT_HEADER_SIZE > data.length) {
      return { segments, end: offset, problem: `the file ends inside the header of ${where}` };
    }
    const loadAddress = data.readUInt32LE(offset);
    const length = data.readUInt32LE(offset + 4);
    const dataOffset = offset + ESP_SEGMENT_HEADER_SIZE;
    const available = data.length - dataOffset;
    if (length > available) {
      return {
        segments,
        end: offset,
        problem: `${where} needs ${length} bytes but only ${available} remain in the file`,
      };
    }
    segments.push({
      index,
      loadAddress,
      length,
      dataOffset,
      data: data.subarray(dataOffset, dataOffset + length),
    });
    offset = dataOffset + length;
  }
  return { segments, end: offset };
}

interface ImageLayout {
  readonly segments: EspImageSegment[];
  readonly checksumOffset: number;
  /** Offset of the appended SHA-256, when the header says there is one. */
  readonly hashOffset?: number;
  readonly imageLength: number;
}

function parseLayout(data: Buffer, header: EspImageHeader): ImageLayout {
  const walk = walkSegments(data, ESP_IMAGE_HEADER_SIZE, header.segmentCount);
  if (walk.problem !== undefined) throw truncatedError(walk.problem);
  checkChipAddresses(data, header, walk);
  for (const seg of walk.segments) checkSegment(header, seg);

  const blockEnd = checksumBlockEnd(walk.end);
  if (blockEnd > data.length) {
    throw truncatedError(`the file ends before the checksum byte at offset ${blockEnd - 1}`);
  }
  if (!header.hashAppended) {
    return { segments: walk.segments, checksumOffset: blockEnd - 1, imageLength: blockEnd };
  }
  const imageLength = blockEnd + ESP_SHA256_SIZE;
  if (imageLength > data.length) {
    throw truncatedError(`the appended SHA-256 needs ${ESP_SHA256_SIZE} bytes at offset ${blockEnd} but the file has ${data.length} bytes`);
  }
  return { segments: walk.segments, checksumOffset: blockEnd - 1, hashOffset: blockEnd, imageLength };
}

/**
 * An image whose segments do not fit the memory map of the chip its header
 * names, but do fit another chip's, was built for that other chip (its chip
 * id rewritten, or a build for one chip flashed as another): wrong chip, not
 * damage. When no known chip fits, checkSegment says what is damaged. With an
 * appended SHA-256 that does not match, the header itself may be damaged, so
 * the integrity check speaks instead.
 */
function checkChipAddresses(data: Buffer, header: EspImageHeader, walk: SegmentWalk): void {
  const chip = findChip(header.chipId);
  if (chip === undefined) return;
  const mismatch = segmentMismatch(chip, walk.segments);
  if (mismatch === undefined) return;
  const owners = chipsFitting(walk.segments);
  if (owners.length === 0) return;
  if (header.hashAppended) {
    const blockEnd = checksumBlockEnd(walk.end);
    const stored = data.subarray(blockEnd, blockEnd + ESP_SHA256_SIZE);
    if (stored.length < ESP_SHA256_SIZE || !stored.equals(sha256(data.subarray(0, blockEnd)))) return;
  }
  const names = owners.map((c) => c.name);
  const owner = names.length === 1 ? `the ${names[0]}` : `the ${names.slice(0, -1).join(', ')} or ${names[names.length - 1]}`;
  throw new ImageError(
    'IMAGE_WRONG_CHIP',
    `This image's header says ${chip.name}, but its segments sit at addresses of ${owner} (${mismatch}): ` +
      `it was built for ${owner} and then relabelled, so an ${chip.name} cannot run it. ` +
      `Build the app for your device's chip (idf.py set-target) and send that build/<project>.bin.`,
  );
}

/**
 * What the bootloader (esp_image_verify) refuses in a segment header: a
 * length that is not a multiple of 4 or reaches 16 MB, and a segment mapped
 * from flash whose file offset and address differ within the 64 KB MMU page.
 */
function checkSegment(header: EspImageHeader, seg: EspImageSegment): void {
  const where = `segment ${seg.index + 1} of ${header.segmentCount}`;
  if (seg.length % 4 !== 0 || seg.length >= SIXTEEN_MB) {
    throw segmentError(`${where} is ${seg.length} bytes long, which is not a multiple of 4 below 16 MB`);
  }
  if (isFlashMapped(header.chipId, seg.loadAddress) === true && seg.dataOffset % MMU_PAGE !== seg.loadAddress % MMU_PAGE) {
    throw segmentError(
      `${where} is mapped from flash at 0x${seg.loadAddress.toString(16)} but its data sits at file offset ` +
        `0x${seg.dataOffset.toString(16)}; they must agree within a 64 KB page`,
    );
  }
}

function segmentError(detail: string): ImageError {
  return new ImageError('IMAGE_BAD_SEGMENT', `The firmware image is damaged: ${detail}. The bootloader would refuse it; build or copy it again.`);
}

function revName(full: number): string {
  return `v${Math.floor(full / 100)}.${full % 100}`;
}

function truncatedError(detail: string): ImageError {
  return new ImageError('IMAGE_TRUNCATED', `The firmware image is cut off or its header is damaged: ${detail}. ` + `Copy or download the complete .bin file again.`);
}

function verifyIntegrity(data: Buffer, layout: ImageLayout): void {
  const stored = data[layout.checksumOffset];
  const computed = espChecksum(layout.segments.map((s) => s.data));
  if (stored !== computed) {
    throw new ImageError(
      'IMAGE_BAD_CHECKSUM',
      `The firmware image is corrupted: its checksum byte is ${hex8(stored)} but the data gives ` +
        `${hex8(computed)}. The file changed after it was built; build or copy it again.`,
    );
  }
  if (layout.hashOffset === undefined) return;
  const storedHash = data.subarray(layout.hashOffset, layout.imageLength);
  const computedHash = sha256(data.subarray(0, layout.hashOffset));
  if (!storedHash.equals(computedHash)) {
    throw new ImageError(
      'IMAGE_BAD_HASH',
      `The firmware image is corrupted: its appended SHA-256 (${shortHex(storedHash)}...) does not ` +
        `match its contents (${shortHex(computedHash)}...). The file changed after it was built; ` +
        `build or copy it again.`,
    );
  }
}

function imageDigest(data: Buffer, layout: ImageLayout): Buffer {
  if (layout.hashOffset !== undefined) {
    return Buffer.from(data.subarray(layout.hashOffset, layout.imageLength));
  }
  return sha256(data.subarray(0, layout.imageLength));
}

// ---------------------------------------------------------------------------
// What kind of (valid) image is it?

function classifyAndReadAppDesc(data: Buffer, header: EspImageHeader, layout: ImageLayout): EspAppDescriptor {
  const totalData = layout.segments.reduce((sum, s) => sum + s.length, 0);
  if (totalData === 0) {
    // A header with empty segments: what is left when only the start of a file survives
    // or a tool wrote just the header. Nothing to boot.
    throw new ImageError(
      'IMAGE_TRUNCATED',
      `The firmware image holds only an image header (${layout.imageLength} bytes) and no program ` +
        `data. The file is incomplete; copy or download the complete .bin file again.`,
    );
  }

  const first = layout.segments[0];
  if (first.length >= ESP_APP_DESC_SIZE && first.data.readUInt32LE(0) === ESP_APP_DESC_MAGIC) {
    return readAppDesc(first.data);
  }

  const ramOnly = isRamOnly(header.chipId, layout.segments);
  if (ramOnly && hasUnlistedFlashSegments(data, header.chipId, layout.imageLength)) {
    throw new ImageError(
      'IMAGE_NO_APP_DESC',
      `This ${chipName(header.chipId)} image has a RAM-only header: the header lists only segments loaded into RAM ` +
        `and the flash-mapped ones follow it unlisted (esptool elf2image --ram-only-header, as a Zephyr app ` +
        `for ESP32 built without MCUboot is made). It is not an ESP-IDF app and has no app descriptor, so an ` +
        `ESP-IDF device cannot accept it. Update a Zephyr device with its own tools (e.g. MCUboot and mcumgr); ` +
        `to use this node, build an ESP-IDF app that includes the BLE OTA component.`,
    );
  }
  if (ramOnly && (hasBootloaderDesc(header.chipId, layout.segments) || totalData >= BOOTLOADER_MIN_RAM_BYTES)) {
    throw new ImageError(
      'IMAGE_BOOTLOADER',
      `This is an ESP32 second-stage bootloader (build/bootloader/bootloader.bin for ${chipName(header.chipId)}), ` +
        `not an application. OTA updates replace the app only. ${APP_FILE_HINT}`,
    );
  }
  const what = ramOnly ? 'It runs from RAM only, like a test program or loader, so it is not an app' : 'Without it the device cannot identify or accept the app';
  throw new ImageError('IMAGE_NO_APP_DESC', `This ${chipName(header.chipId)} image has no ESP-IDF app descriptor (esp_app_desc_t at offset 0x20). ` + `${what}. ${APP_FILE_HINT}`);
}

/**
 * esptool's --ram-only-header layout: after the checksum (no digest) come
 * further segments the header does not count, a padding one at address 0 and
 * flash-mapped ones, which the app maps itself. A bootloader ends at its
 * checksum (and digest).
 */
function hasUnlistedFlashSegments(data: Buffer, chipId: number, imageEnd: number): boolean {
  let offset = imageEnd;
  for (let i = 0; i < ESP_IMAGE_MAX_SEGMENTS && offset + ESP_SEGMENT_HEADER_SIZE <= data.length; i++) {
    const address = data.readUInt32LE(offset);
    const length = data.readUInt32LE(offset + 4);
    const mapped = isFlashMapped(chipId, address) === true;
    if ((address !== 0 && !mapped) || length % 4 !== 0 || offset + ESP_SEGMENT_HEADER_SIZE + length > data.length) return false;
    if (mapped && length > 0) return true;
    offset += ESP_SEGMENT_HEADER_SIZE + length;
  }
  return false;
}

/**
 * ESP-IDF bootloaders since v5.2 start their DRAM data with esp_bootloader_desc_t
 * (components/esp_bootloader_format/include/esp_bootloader_desc.h): magic byte
 * 0x50, then at offset 8 the ESP-IDF version ("v5.2..."). esptool's image_info
 * reads it from the same place.
 */
function hasBootloaderDesc(chipId: number, segments: readonly EspImageSegment[]): boolean {
  const chip = findChip(chipId);
  return segments.some(
    (s) => s.length >= BOOTLOADER_DESC_SIZE && (chip === undefined || isInRam(chip, s.loadAddress)) && s.data[0] === BOOTLOADER_DESC_MAGIC && /^v\d/.test(cString(s.data, 8, 32)),
  );
}

/** True when no segment is mapped from flash; undefined chip maps count as "cannot tell". */
function isRamOnly(chipId: number, segments: readonly EspImageSegment[]): boolean {
  return segments.every((s) => s.length === 0 || isFlashMapped(chipId, s.loadAddress) === false);
}

function readAppDesc(desc: Buffer): EspAppDescriptor {
  return {
    magic: desc.readUInt32LE(0),
    secureVersion: desc.readUInt32LE(4),
    version: cString(desc, 16, 32),
    projectName: cString(desc, 48, 32),
    time: cString(desc, 80, 16),
    date: cString(desc, 96, 16),
    idfVersion: cString(desc, 112, 32),
    appElfSha256: Buffer.from(desc.subarray(144, 176)),
    minEfuseBlkRevFull: desc.readUInt16LE(176),
    maxEfuseBlkRevFull: desc.readUInt16LE(178),
    mmuPageSizeLog2: desc[180],
  };
}

// ---------------------------------------------------------------------------
// Secure Boot v2 signature sector

/**
 * A block is valid when it has the magic byte, a known version and a matching
 * CRC-32 (espsecure.py's test). Counting stops at the first invalid slot:
 * ESP-IDF's update check without Secure Boot reads block 0 only.
 */
function findSignature(data: Buffer, imageLength: number): EspSignatureInfo | undefined {
  const sector = readSignatureSector(data, imageLength);
  let blockCount = 0;
  while (blockCount < sector.blocks.length && sector.blocks[blockCount].index === blockCount) blockCount++;
  if (blockCount === 0) return undefined;
  const first = sector.blocks[0];
  return { offset: sector.offset, blockCount, version: data[sector.offset + 1], scheme: first.scheme, keyDigest: first.keyDigest };
}

// ---------------------------------------------------------------------------
// Small helpers

function xorBytes(seed: number, data: Buffer): number {
  // Four bytes at a time over the 4-byte-aligned middle (a whole image's
  // segments are megabytes: byte by byte was a few ms per MB in a fresh
  // process); each byte of the words' XOR is the XOR of one byte lane.
  let sum = seed;
  let i = 0;
  const head = Math.min(data.length, (4 - (data.byteOffset % 4)) % 4);
  for (; i < head; i++) sum ^= data[i];
  const words = (data.length - head) >> 2;
  if (words > 0) {
    const view = new Int32Array(data.buffer, data.byteOffset + head, words);
    let w = 0;
    for (let k = 0; k < words; k++) w ^= view[k];
    sum ^= (w ^ (w >>> 8) ^ (w >>> 16) ^ (w >>> 24)) & 0xff;
    i = head + words * 4;
  }
  for (; i < data.length; i++) sum ^= data[i];
  return sum;
}

function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}

function startsWith(data: Buffer, offset: number, bytes: readonly number[]): boolean {
  if (offset + bytes.length > data.length) return false;
  return bytes.every((b, i) => data[offset + i] === b);
}

/** A NUL-terminated C string from a fixed-size field. */
function cString(buf: Buffer, offset: number, size: number): string {
  const field = buf.subarray(offset, offset + size);
  const nul = field.indexOf(0);
  return field.subarray(0, nul === -1 ? size : nul).toString('utf8');
}

function hex8(value: number): string {
  return `0x${value.toString(16).padStart(2, '0').toUpperCase()}`;
}

function hexBytes(data: Buffer, offset: number, count: number): string {
  return Array.from(data.subarray(offset, offset + count), (b) => hex8(b)).join(' ');
}

function shortHex(buf: Buffer): string {
  return buf.subarray(0, 8).toString('hex');
}
