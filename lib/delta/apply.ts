/**
 * Applies a delta patch as it arrives (docs/DELTA.md), the way the device
 * does (firmware/components/ble_ota_core/ble_ota_delta.c): bytes in any
 * pieces, the old image read where an instruction points, rebuilt bytes
 * handed on in order, every bound checked in the same order as the C
 * applier so that both give the same verdict on a damaged patch.
 */
import { DELTA_BLOCK, DELTA_CURSOR_SIZE, DELTA_HEADER_SIZE, DeltaFault, DeltaHeader, DeltaPatchError, decodeHeader, Op, unzigzag, VARINT_MAX } from './format';

/** Reads `length` bytes of the old image at `offset` (always within the header's oldSize). */
export type ReadOld = (offset: number, length: number) => Uint8Array;
/** Takes the next rebuilt bytes (the view is only valid during the call). */
export type Emit = (bytes: Uint8Array) => void;

export interface ApplierOptions {
  /** The most old-image bytes there are (the running slot): a header declaring more is BASE. Default: no limit. */
  oldLimit?: number;
  /** The most bytes the new image may have (the update slot): a header declaring more is TOO_LARGE. Default: no limit. */
  newLimit?: number;
  /** Called once the header is complete, before anything is emitted; throw (or return false) to refuse the patch as BASE. */
  checkHeader?: (header: DeltaHeader) => boolean | void;
}

const enum Phase {
  HEADER,
  CURSOR,
  OPCODE,
  LENGTH,
  SEEK,
  DATA,
  PAD,
}

/** Old bytes read per piece: the C applier's buffer. */
export const APPLY_PIECE = 256;

export class PatchApplier {
  private phase = Phase.HEADER;
  private readonly head = Buffer.alloc(DELTA_HEADER_SIZE);
  private known: Buffer | undefined;
  private fill = 0;
  private hdr: DeltaHeader | undefined;
  private inPos = 0;
  private newPos = 0;
  private oldPos = 0;
  private emitted = 0;
  private blockNew = 0;
  private blockOld = 0;
  private op = 0;
  private remaining = 0;
  private varValue = 0;
  private varBytes = 0;
  private failed: DeltaPatchError | undefined;
  private readonly piece = new Uint8Array(APPLY_PIECE);

  constructor(
    private readonly readOld: ReadOld,
    private readonly emit: Emit,
    private readonly options: ApplierOptions = {},
  ) {}

  /** The header, once its bytes arrived. */
  get header(): DeltaHeader | undefined {
    return this.hdr;
  }

  /** Patch bytes taken. */
  get consumed(): number {
    return this.inPos;
  }

  /** Bytes of the new image emitted. */
  get produced(): number {
    return this.emitted;
  }

  /** Takes the next patch bytes; throws DeltaPatchError (and every later call does too) when the patch is bad. */
  feed(bytes: Uint8Array): void {
    if (this.failed) throw this.failed;
    try {
      this.take(bytes);
    } catch (err) {
      if (err instanceof DeltaPatchError) this.failed = err;
      throw err;
    }
  }

  /** The patch is complete: throws LENGTH when it ended early or its image is short. */
  finish(): void {
    if (this.failed) throw this.failed;
    const ended = this.hdr !== undefined && this.inPos === this.hdr.patchSize && (this.phase === Phase.OPCODE || this.phase === Phase.PAD);
    if (!ended || this.newPos !== this.hdr?.newSize) {
      this.failed = new DeltaPatchError('LENGTH', this.inPos, `ended after ${this.inPos} bytes, ${this.newPos} bytes of the image rebuilt`);
      throw this.failed;
    }
  }

  /**
   * Back to the start of the block in progress (a resumed transfer sends
   * it again): the block's cursor is where it starts, and bytes emitted
   * already are not emitted again. Returns the patch offset to send from.
   */
  rewind(): number {
    if (this.failed) throw this.failed;
    const within = this.inPos % DELTA_BLOCK;
    if (within === 0) return this.inPos;
    this.inPos -= within;
    if (this.inPos === 0) {
      this.phase = Phase.HEADER;
      this.fill = 0;
      this.newPos = 0;
      this.oldPos = 0;
    } else {
      // The next byte starts the block: the boundary takes the cursor from there.
      this.phase = Phase.OPCODE;
      this.newPos = this.blockNew;
      this.oldPos = this.blockOld;
    }
    return this.inPos;
  }

  private fail(fault: DeltaFault, detail: string, at = this.inPos): never {
    throw new DeltaPatchError(fault, at, detail);
  }

  private take(bytes: Uint8Array): void {
    let i = 0;
    while (i < bytes.length) {
      if (this.hdr && this.inPos >= this.hdr.patchSize) this.fail('LENGTH', `bytes after the patch's ${this.hdr.patchSize}`);
      if (this.inPos > 0 && this.inPos % DELTA_BLOCK === 0 && this.phase !== Phase.CURSOR) {
        if (this.phase !== Phase.OPCODE && this.phase !== Phase.PAD) this.fail('BLOCK', 'an instruction runs past its block');
        this.phase = Phase.CURSOR;
        this.fill = 0;
        this.blockNew = this.newPos;
        this.blockOld = this.oldPos;
      }
      switch (this.phase) {
        case Phase.HEADER: {
          const n = Math.min(bytes.length - i, DELTA_HEADER_SIZE - this.fill);
          this.head.set(bytes.subarray(i, i + n), this.fill);
          this.fill += n;
          this.inPos += n;
          i += n;
          if (this.fill === DELTA_HEADER_SIZE) this.headerDone();
          break;
        }
        case Phase.CURSOR: {
          const n = Math.min(bytes.length - i, DELTA_CURSOR_SIZE - this.fill);
          this.head.set(bytes.subarray(i, i + n), this.fill);
          this.fill += n;
          this.inPos += n;
          i += n;
          if (this.fill === DELTA_CURSOR_SIZE) {
            const cursorNew = this.head.readUInt32LE(0);
            const cursorOld = this.head.readUInt32LE(4);
            if (cursorNew !== this.newPos || cursorOld !== this.oldPos) {
              this.fail('BLOCK', `block starts at new ${cursorNew} / old ${cursorOld}, the last one stopped at ${this.newPos} / ${this.oldPos}`, this.inPos - DELTA_CURSOR_SIZE);
            }
            this.phase = Phase.OPCODE;
          }
          break;
        }
        case Phase.OPCODE: {
          const b = bytes[i++];
          this.inPos++;
          this.opcode(b);
          break;
        }
        case Phase.LENGTH:
        case Phase.SEEK: {
          const b = bytes[i++];
          this.inPos++;
          this.varByte(b);
          break;
        }
        case Phase.DATA: {
          const n = Math.min(bytes.length - i, this.remaining);
          this.data(bytes.subarray(i, i + n));
          i += n;
          this.inPos += n;
          this.remaining -= n;
          if (this.remaining === 0) this.phase = Phase.OPCODE;
          break;
        }
        case Phase.PAD: {
          const blockEnd = this.blockEnd();
          const n = Math.min(bytes.length - i, blockEnd - this.inPos);
          for (let k = 0; k < n; k++) if (bytes[i + k] !== 0) this.fail('BLOCK', 'padding after END_BLOCK is not zero', this.inPos + k);
          i += n;
          this.inPos += n;
          break;
        }
      }
    }
  }

  private headerDone(): void {
    const h = decodeHeader(this.head);
    if (this.known && !this.known.equals(this.head)) this.fail('HEADER', 'the header sent again differs from the first', 0);
    if (h.oldSize > (this.options.oldLimit ?? Infinity)) this.fail('BASE', `base image of ${h.oldSize} bytes, the old image has ${this.options.oldLimit}`, 0);
    if (h.newSize > (this.options.newLimit ?? Infinity)) this.fail('TOO_LARGE', `image of ${h.newSize} bytes for ${this.options.newLimit}`, 0);
    if (!this.known) {
      try {
        if (this.options.checkHeader?.(h) === false) this.fail('BASE', 'refused by the base image check', 0);
      } catch (err) {
        if (err instanceof DeltaPatchError) throw err;
        this.fail('BASE', (err as Error).message, 0);
      }
      this.known = Buffer.from(this.head);
    }
    this.hdr = h;
    this.phase = Phase.OPCODE;
  }

  private blockEnd(): number {
    const end = this.inPos - ((this.inPos - 1) % DELTA_BLOCK) - 1 + DELTA_BLOCK;
    return Math.min(end, this.hdr?.patchSize ?? end);
  }

  private opcode(b: number): void {
    if (b === Op.END_BLOCK) {
      this.phase = Phase.PAD;
      return;
    }
    if (b === Op.SEEK) {
      this.op = Op.SEEK;
      this.phase = Phase.SEEK;
      this.varValue = 0;
      this.varBytes = 0;
      return;
    }
    if (b > Op.SEEK) this.fail('OP', `opcode 0x${b.toString(16)}`, this.inPos - 1);
    this.op = b & 0xc0;
    const n = b & 0x3f;
    if (n === 0) {
      this.phase = Phase.LENGTH;
      this.varValue = 0;
      this.varBytes = 0;
      return;
    }
    this.lengthKnown(n);
  }

  private varByte(b: number): void {
    if (this.varBytes === VARINT_MAX - 1 && b > 0x0f) this.fail('OP', 'a varint beyond 32 bits', this.inPos - 1);
    this.varValue += (b & 0x7f) * 2 ** (7 * this.varBytes);
    this.varBytes++;
    if (b & 0x80) return;
    if (this.phase === Phase.SEEK) {
      this.seek(this.varValue);
    } else {
      if (this.varValue > 0xffffffff - 64) this.fail('OP', `length ${this.varValue + 64} beyond 32 bits`, this.inPos - 1);
      this.lengthKnown(64 + this.varValue);
    }
  }

  private seek(v: number): void {
    const d = unzigzag(v);
    if (d === 0) this.fail('OP', 'a SEEK of 0', this.inPos - 1);
    const to = this.oldPos + d;
    if (to < 0 || to > this.header!.oldSize) this.fail('OLD_RANGE', `SEEK to ${to} of ${this.header!.oldSize}`, this.inPos - 1);
    this.oldPos = to;
    this.phase = Phase.OPCODE;
  }

  private lengthKnown(n: number): void {
    const h = this.header!;
    if (this.op !== Op.COPY && this.inPos + n > this.blockEnd()) this.fail('BLOCK', `${n} bytes of data run past the block`, this.inPos - 1);
    if (this.newPos + n > h.newSize) this.fail('NEW_RANGE', `${n} bytes at ${this.newPos} of ${h.newSize}`, this.inPos - 1);
    if (this.op !== Op.INSERT && this.oldPos + n > h.oldSize) this.fail('OLD_RANGE', `${n} bytes at old ${this.oldPos} of ${h.oldSize}`, this.inPos - 1);
    if (this.op === Op.COPY) {
      for (let done = 0; done < n;) {
        const t = Math.min(APPLY_PIECE, n - done);
        this.out(this.newPos, t, () => this.read(this.oldPos, t));
        this.newPos += t;
        this.oldPos += t;
        done += t;
      }
      this.phase = Phase.OPCODE;
      return;
    }
    this.remaining = n;
    this.phase = Phase.DATA;
  }

  private data(bytes: Uint8Array): void {
    if (this.op === Op.INSERT) {
      this.out(this.newPos, bytes.length, () => bytes);
      this.newPos += bytes.length;
      return;
    }
    for (let done = 0; done < bytes.length;) {
      const t = Math.min(APPLY_PIECE, bytes.length - done);
      const at = done;
      this.out(this.newPos, t, () => {
        const old = this.read(this.oldPos, t);
        for (let k = 0; k < t; k++) this.piece[k] = (old[k] + bytes[at + k]) & 0xff;
        return this.piece.subarray(0, t);
      });
      this.newPos += t;
      this.oldPos += t;
      done += t;
    }
  }

  private read(offset: number, length: number): Uint8Array {
    let got: Uint8Array;
    try {
      got = this.readOld(offset, length);
    } catch (err) {
      this.fail('READ', (err as Error).message);
    }
    if (got.length !== length) this.fail('READ', `${got.length} of ${length} bytes at old ${offset}`);
    return got;
  }

  /** Emits the bytes at new position `at` not emitted before; `make` gives them (not called when all were). */
  private out(at: number, length: number, make: () => Uint8Array): void {
    if (at + length <= this.emitted) return;
    const bytes = make();
    const skip = this.emitted - at > 0 ? this.emitted - at : 0;
    try {
      this.emit(bytes.subarray(skip, length));
    } catch (err) {
      this.fail('EMIT', (err as Error).message);
    }
    this.emitted = at + length;
  }
}

/** The new image a patch rebuilds from `old` (checks its header against `old` and the result against the header). */
export function applyPatch(old: Uint8Array, patch: Uint8Array): Buffer {
  const parts: Buffer[] = [];
  const applier = new PatchApplier(
    (offset, length) => old.subarray(offset, offset + length),
    (bytes) => parts.push(Buffer.from(bytes)),
    { oldLimit: old.length },
  );
  applier.feed(patch);
  applier.finish();
  return Buffer.concat(parts);
}
