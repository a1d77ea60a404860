/**
 * The delta patch format (docs/DELTA.md): instructions that rebuild a new
 * image from the image a device runs, cut into 4 KB blocks that each start
 * at an instruction boundary with the positions reached so far, so that a
 * device applies a patch as it arrives, in a few hundred bytes of RAM, and
 * a transfer resumes at any block (one DEFLATE chunk of the stream).
 *
 * The device's applier is firmware/components/ble_ota_core/ble_ota_delta.c;
 * apply.ts is the same in TypeScript, the reference the tests compare it with.
 */
import { createHash } from 'node:crypto';
import { DEFLATE_CHUNK } from '../protocol/constants';

/** "BODP": BLE OTA delta patch. */
export const DELTA_MAGIC = Buffer.from('BODP', 'latin1');
export const DELTA_VERSION = 1;
/** log2 of the block size: one DEFLATE chunk of the stream. */
export const DELTA_BLOCK_SHIFT = 12;
export const DELTA_BLOCK = 1 << DELTA_BLOCK_SHIFT;
if (DELTA_BLOCK !== DEFLATE_CHUNK) throw new Error('a delta block must be one DEFLATE chunk');

/** Bytes of the header at the start of block 0. */
export const DELTA_HEADER_SIZE = 84;
/** Bytes of the cursor (new position, old position) at the start of every other block. */
export const DELTA_CURSOR_SIZE = 8;

/** Header field offsets. */
export const HeaderOffset = {
  MAGIC: 0,
  VERSION: 4,
  BLOCK_SHIFT: 5,
  RESERVED: 6,
  OLD_SIZE: 8,
  OLD_SHA256: 12,
  NEW_SIZE: 44,
  NEW_SHA256: 48,
  PATCH_SIZE: 80,
} as const;

/**
 * Opcodes. COPY, ADD and INSERT carry a length in their low 6 bits (1-63),
 * or 0 there and a varint v after the opcode for a length of 64 + v.
 */
export const Op = {
  /** new bytes = old bytes at the old position; both positions advance. */
  COPY: 0x00,
  /** new bytes = old bytes + the n bytes that follow (each modulo 256); both positions advance. */
  ADD: 0x40,
  /** new bytes = the n bytes that follow; the old position stays. */
  INSERT: 0x80,
  /** old position += a zigzag varint (never 0), staying within the old image. */
  SEEK: 0xc0,
  /** The block ends here: every byte left in it is 0x00. */
  END_BLOCK: 0xff,
} as const;

/** Lengths up to this fit in the opcode. */
export const SHORT_LENGTH = 63;
/** The most bytes a varint takes (a u32). */
export const VARINT_MAX = 5;

export interface DeltaHeader {
  /** Bytes of the image the patch applies to (the running image). */
  oldSize: number;
  oldSha256: Buffer;
  /** Bytes of the image it rebuilds. */
  newSize: number;
  newSha256: Buffer;
  /** Bytes of the whole patch, this header included. */
  patchSize: number;
}

/**
 * What is wrong with a patch, the same names as the C applier's
 * BLE_OTA_DELTA_ERR_*; the tests hold the two to the same verdict.
 */
export type DeltaFault =
  | 'HEADER' // not a patch of this version, or its header is inconsistent
  | 'BASE' // made for another old image (larger than the running one, or refused by the caller's check)
  | 'TOO_LARGE' // the new image does not fit where it goes
  | 'OP' // a reserved opcode, a varint longer than a u32, a SEEK of 0
  | 'BLOCK' // an instruction runs past its block, a cursor disagrees, padding is not zero
  | 'OLD_RANGE' // an instruction reads outside the old image
  | 'NEW_RANGE' // an instruction writes past the new image's size
  | 'LENGTH' // bytes past the patch's size, or the patch ends early
  | 'READ' // reading the old image failed
  | 'EMIT'; // storing rebuilt bytes failed

const FAULT_TEXT: Record<DeltaFault, string> = {
  HEADER: 'it is not a delta patch of a version this side knows; make the patch again with this version',
  BASE: 'it was made for another base image than the one it is applied to; make it against the image the device runs, or send the full image',
  TOO_LARGE: 'the image it rebuilds does not fit the slot; send an image that fits',
  OP: 'it holds an instruction this version does not know; the patch is damaged or newer than this side',
  BLOCK: 'an instruction runs past its 4 KB block or a block does not continue where the last one stopped; the patch is damaged',
  OLD_RANGE: 'it reads outside the base image; the patch is damaged or made for another base image',
  NEW_RANGE: 'it writes past the size of the image it declares; the patch is damaged',
  LENGTH: 'its length does not match what its header declares; the patch is damaged or cut short',
  READ: 'the base image could not be read',
  EMIT: 'the rebuilt image could not be stored',
};

/** A patch that cannot be applied: `fault` says why, `offset` where in the patch. */
export class DeltaPatchError extends Error {
  constructor(
    readonly fault: DeltaFault,
    readonly offset: number,
    detail?: string,
  ) {
    super(`The delta patch cannot be applied (${fault} at patch byte ${offset}${detail ? `: ${detail}` : ''}): ${FAULT_TEXT[fault]}.`);
    this.name = 'DeltaPatchError';
  }
}

export function encodeHeader(h: DeltaHeader): Buffer {
  const out = Buffer.alloc(DELTA_HEADER_SIZE);
  DELTA_MAGIC.copy(out, HeaderOffset.MAGIC);
  out[HeaderOffset.VERSION] = DELTA_VERSION;
  out[HeaderOffset.BLOCK_SHIFT] = DELTA_BLOCK_SHIFT;
  out.writeUInt32LE(h.oldSize, HeaderOffset.OLD_SIZE);
  h.oldSha256.copy(out, HeaderOffset.OLD_SHA256, 0, 32);
  out.writeUInt32LE(h.newSize, HeaderOffset.NEW_SIZE);
  h.newSha256.copy(out, HeaderOffset.NEW_SHA256, 0, 32);
  out.writeUInt32LE(h.patchSize, HeaderOffset.PATCH_SIZE);
  return out;
}

/**
 * The header of a patch (its first DELTA_HEADER_SIZE bytes), or
 * DeltaPatchError HEADER. Limits are the applier's business.
 */
export function decodeHeader(bytes: Uint8Array): DeltaHeader {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length < DELTA_HEADER_SIZE) throw new DeltaPatchError('LENGTH', b.length, `${b.length} bytes, shorter than a header (${DELTA_HEADER_SIZE})`);
  if (!b.subarray(0, 4).equals(DELTA_MAGIC)) throw new DeltaPatchError('HEADER', 0, 'no BODP magic');
  if (b[HeaderOffset.VERSION] !== DELTA_VERSION) throw new DeltaPatchError('HEADER', HeaderOffset.VERSION, `version ${b[HeaderOffset.VERSION]}`);
  if (b[HeaderOffset.BLOCK_SHIFT] !== DELTA_BLOCK_SHIFT) throw new DeltaPatchError('HEADER', HeaderOffset.BLOCK_SHIFT, `block size 2^${b[HeaderOffset.BLOCK_SHIFT]}`);
  if (b.readUInt16LE(HeaderOffset.RESERVED) !== 0) throw new DeltaPatchError('HEADER', HeaderOffset.RESERVED, 'reserved bytes set');
  const patchSize = b.readUInt32LE(HeaderOffset.PATCH_SIZE);
  if (patchSize < DELTA_HEADER_SIZE) throw new DeltaPatchError('HEADER', HeaderOffset.PATCH_SIZE, `patch size ${patchSize}`);
  return {
    oldSize: b.readUInt32LE(HeaderOffset.OLD_SIZE),
    oldSha256: Buffer.from(b.subarray(HeaderOffset.OLD_SHA256, HeaderOffset.OLD_SHA256 + 32)),
    newSize: b.readUInt32LE(HeaderOffset.NEW_SIZE),
    newSha256: Buffer.from(b.subarray(HeaderOffset.NEW_SHA256, HeaderOffset.NEW_SHA256 + 32)),
    patchSize,
  };
}

export function varintLength(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

/** Bytes an opcode with length n takes (opcode and varint). */
export function lengthHeaderSize(n: number): number {
  return n <= SHORT_LENGTH ? 1 : 1 + varintLength(n - 64);
}

export const zigzag = (d: number): number => (d >= 0 ? d * 2 : -d * 2 - 1);
export const unzigzag = (v: number): number => (v % 2 === 0 ? v / 2 : -(v + 1) / 2);

/**
 * Lays instructions out in blocks: starts each block with the cursor, cuts
 * ADD and INSERT where a block ends, and pads a block whose rest cannot
 * hold the next instruction. The patch's header is written by finish().
 */
export class PatchWriter {
  private out: Buffer;
  private pos = DELTA_HEADER_SIZE;
  private blockEnd = DELTA_BLOCK;
  private newPos = 0;
  private oldPos = 0;

  constructor(
    private readonly oldImage: Uint8Array,
    private readonly newImage: Uint8Array,
  ) {
    this.out = Buffer.alloc(1 << 16);
  }

  /** The new image position the instructions have reached. */
  get position(): number {
    return this.newPos;
  }

  /** The old image position. */
  get oldPosition(): number {
    return this.oldPos;
  }

  /** `n` bytes of the new image, the same as the old image's at the old position. */
  copy(n: number): void {
    if (n <= 0) return;
    this.room(lengthHeaderSize(n));
    this.lengthOp(Op.COPY, n);
    this.newPos += n;
    this.oldPos += n;
  }

  /** ADD of `bytes` (new minus old, per byte). */
  add(bytes: Uint8Array): void {
    this.data(Op.ADD, bytes);
  }

  /** INSERT of `bytes`. */
  insert(bytes: Uint8Array): void {
    this.data(Op.INSERT, bytes);
  }

  /** Moves the old position to `oldPos`. */
  seekTo(oldPos: number): void {
    const d = oldPos - this.oldPos;
    if (d === 0) return;
    const v = zigzag(d);
    this.room(1 + varintLength(v));
    this.byte(Op.SEEK);
    this.varint(v);
    this.oldPos = oldPos;
  }

  /** The patch, header included. */
  finish(): Buffer {
    if (this.newPos !== this.newImage.length) throw new Error(`patch covers ${this.newPos} of ${this.newImage.length} bytes`);
    const header = encodeHeader({
      oldSize: this.oldImage.length,
      oldSha256: createHash('sha256').update(this.oldImage).digest(),
      newSize: this.newImage.length,
      newSha256: createHash('sha256').update(this.newImage).digest(),
      patchSize: this.pos,
    });
    header.copy(this.out, 0);
    return this.out.subarray(0, this.pos);
  }

  private data(opcode: number, bytes: Uint8Array): void {
    let at = 0;
    while (at < bytes.length) {
      this.room(2);
      const space = this.blockEnd - this.pos;
      let n = Math.min(bytes.length - at, space - 1);
      while (lengthHeaderSize(n) + n > space) n--;
      this.lengthOp(opcode, n);
      this.ensure(n);
      this.out.set(bytes.subarray(at, at + n), this.pos);
      this.pos += n;
      at += n;
      this.newPos += n;
      if (opcode === Op.ADD) this.oldPos += n;
    }
  }

  private lengthOp(opcode: number, n: number): void {
    if (n <= SHORT_LENGTH) {
      this.byte(opcode | n);
    } else {
      this.byte(opcode);
      this.varint(n - 64);
    }
  }

  /** Makes sure `need` bytes fit in the current block, padding it and starting the next one when they do not. */
  private room(need: number): void {
    if (this.blockEnd - this.pos >= need) return;
    if (this.pos < this.blockEnd) {
      this.ensure(this.blockEnd - this.pos);
      this.out[this.pos] = Op.END_BLOCK;
      this.out.fill(0, this.pos + 1, this.blockEnd);
      this.pos = this.blockEnd;
    }
    this.ensure(DELTA_CURSOR_SIZE);
    this.out.writeUInt32LE(this.newPos, this.pos);
    this.out.writeUInt32LE(this.oldPos, this.pos + 4);
    this.pos += DELTA_CURSOR_SIZE;
    this.blockEnd += DELTA_BLOCK;
  }

  private byte(v: number): void {
    this.ensure(1);
    this.out[this.pos++] = v;
  }

  private varint(v: number): void {
    this.ensure(VARINT_MAX);
    while (v >= 0x80) {
      this.out[this.pos++] = (v & 0x7f) | 0x80;
      v = Math.floor(v / 128);
    }
    this.out[this.pos++] = v;
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.out.length) return;
    const grown = Buffer.alloc(Math.max(this.out.length * 2, this.pos + n));
    this.out.copy(grown, 0, 0, this.pos);
    this.out = grown;
  }
}
