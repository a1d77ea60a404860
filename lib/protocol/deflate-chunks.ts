/**
 * The DEFLATE stream of protocol v2 (docs/PROTOCOL.md, "Compression"): the
 * image cut into 4 KB chunks, each sent as a u16 length and its raw
 * deflate, or the chunk itself when deflate does not make it smaller. Each
 * chunk is deflated with the image's previous chunk as dictionary: the
 * device keeps that chunk, even while a transfer is suspended, so a
 * transfer resumes at any chunk, and it inflates each chunk straight into
 * its 4 KB flash block.
 *
 * The client never holds the whole stream: DeflatedStream encodes chunks as
 * the transfer reaches them and forgets those the device acknowledged. A
 * chunk's encoding depends on that chunk and the one before only, so one
 * needed again (a rewind) is encoded again, to the same bytes.
 */
import { deflateRawSync } from 'node:zlib';
import { DEFLATE_CHUNK } from './constants';

/**
 * Level 9: the device's side costs the same whatever the level. An 8 KB
 * window (windowBits 13) holds the dictionary and the chunk, all a match can
 * reach; zlib's default 32 KB window only makes each call set up and touch
 * four times the memory, which dominates the cost in a fresh process.
 * chunkSize: node:zlib allocates its output buffer at this size for every
 * call; the default 16 KB is a fresh allocation outside Node's buffer pool
 * each time (about 16 MB churned per 4 MB image, page faults and RSS), while
 * under 4 KB it comes from the pool. A chunk that deflates to more (an
 * incompressible one, sent as it is anyway) takes a second buffer.
 * memLevel 6: zlib sizes its hash table and symbol buffer by it, and sets up
 * both for every call; the default (8) gives 64 KB each, page-faulted in
 * afresh per chunk, where 16 KB each still hold a whole 4 KB chunk. The
 * output is the same to the byte on app code, for half the page faults and
 * about a fifth less CPU (the 4 MB benchmark image, fresh process).
 */
const DEFLATE_OPTIONS = { level: 9, windowBits: 13, memLevel: 6, chunkSize: 4095 } as const;

/** Chunks deflated to decide whether the image is worth deflating. */
export const SAMPLE_CHUNKS = 16;

/** The encoding of chunk `index`: its u16 length, then its deflate or the chunk itself. */
export function encodeChunk(image: Buffer, index: number): Buffer {
  const at = index * DEFLATE_CHUNK;
  const chunk = image.subarray(at, Math.min(at + DEFLATE_CHUNK, image.length));
  const packed = deflateRawSync(chunk, at === 0 ? DEFLATE_OPTIONS : { ...DEFLATE_OPTIONS, dictionary: image.subarray(at - DEFLATE_CHUNK, at) });
  const body = packed.length < chunk.length ? packed : chunk;
  const encoded = Buffer.allocUnsafe(2 + body.length);
  encoded.writeUInt16LE(body.length, 0);
  body.copy(encoded, 2);
  return encoded;
}

/** How many chunks the image has. */
export function chunkCount(imageLength: number): number {
  return Math.ceil(imageLength / DEFLATE_CHUNK);
}

/**
 * Whether the image goes deflated: when SAMPLE_CHUNKS chunks spread evenly
 * over it (the first, the last, and evenly between; every chunk of a
 * smaller image), encoded as they would be sent, come out at least a tenth
 * smaller than they are. The rule is deterministic, and the sample costs
 * about 1/64 of deflating a 4 MB image whole, so an image that will not
 * shrink (encrypted, already compressed) costs almost nothing.
 */
export function worthDeflating(image: Buffer): boolean {
  const count = chunkCount(image.length);
  if (count === 0) return false;
  const picked = new Set<number>();
  const samples = Math.min(SAMPLE_CHUNKS, count);
  for (let i = 0; i < samples; i++) picked.add(samples === 1 ? 0 : Math.round((i * (count - 1)) / (samples - 1)));
  let raw = 0;
  let encoded = 0;
  for (const index of picked) {
    raw += Math.min(DEFLATE_CHUNK, image.length - index * DEFLATE_CHUNK);
    encoded += encodeChunk(image, index).length;
  }
  return encoded <= raw * 0.9;
}

/** Bytes of the whole stream (tests and the benchmark: the client never needs it). */
export function encodedLength(image: Buffer): number {
  let length = 0;
  for (let index = 0; index < chunkCount(image.length); index++) length += encodeChunk(image, index).length;
  return length;
}

/**
 * The stream from image offset `imageOffset` (a chunk boundary, where the
 * device resumes) to the end, read by stream offset (0 at that chunk's
 * encoding), encoded as reads reach it. Its length is known once the last
 * chunk is encoded.
 */
export class DeflatedStream {
  /** starts[i]: stream offset of chunk firstChunk + i; one more entry than chunks encoded so far. */
  private readonly starts: number[] = [0];
  private readonly cached = new Map<number, Buffer>();
  private readonly chunks: number;
  private readonly firstChunk: number;
  /** The chunk chunkAt() found last. */
  private lastChunk = 0;

  constructor(
    private readonly image: Buffer,
    imageOffset: number,
  ) {
    // The device has the whole image (END's answer, or the link, was lost): nothing is left.
    if (imageOffset < image.length && imageOffset % DEFLATE_CHUNK !== 0) throw new RangeError(`image offset ${imageOffset} is not at a chunk boundary`);
    this.firstChunk = Math.ceil(imageOffset / DEFLATE_CHUNK);
    this.chunks = Math.max(0, chunkCount(image.length) - this.firstChunk);
  }

  /** Stream bytes, once the last chunk is encoded; undefined before. */
  get length(): number | undefined {
    return this.starts.length > this.chunks ? this.starts[this.chunks] : undefined;
  }

  /** Up to `max` bytes at `offset`: fewer only at the end, none past it. */
  read(offset: number, max: number): Buffer {
    const end = this.encodeTo(offset + max);
    if (end <= offset) return Buffer.alloc(0);
    let i = this.chunkAt(offset);
    const first = this.chunk(i);
    const from = offset - this.starts[i];
    if (end <= this.starts[i + 1]) return first.subarray(from, from + end - offset);
    // A packet across chunk boundaries: packets stay as large as they would be from one buffer.
    const parts = [first.subarray(from)];
    let at = this.starts[i + 1];
    while (at < end) {
      i++;
      const part = this.chunk(i);
      parts.push(part.subarray(0, Math.min(part.length, end - at)));
      at += part.length;
    }
    return Buffer.concat(parts, end - offset);
  }

  /** What read() returns, copied into `target` at `at` (StreamSource.copy: the stream's packets); returns how many bytes. */
  copy(offset: number, max: number, target: Buffer, at: number): number {
    const end = this.encodeTo(offset + max);
    if (end <= offset) return 0;
    let i = this.chunkAt(offset);
    let from = offset - this.starts[i];
    let written = 0;
    while (offset + written < end) {
      const part = this.chunk(i++);
      written += part.copy(target, at + written, from, Math.min(part.length, from + end - offset - written));
      from = 0;
    }
    return written;
  }

  /** Encodes chunks until the stream reaches `offset` or ends; returns the smaller of the two. */
  private encodeTo(offset: number): number {
    while (this.starts.length <= this.chunks && this.starts[this.starts.length - 1] < offset) {
      const i = this.starts.length - 1;
      const encoded = encodeChunk(this.image, this.firstChunk + i);
      this.cached.set(i, encoded);
      this.starts.push(this.starts[i] + encoded.length);
    }
    return Math.min(offset, this.starts[this.starts.length - 1]);
  }

  /** The bytes before `offset` are acknowledged: their chunks are forgotten (encoded again if ever read). */
  release(offset: number): void {
    for (const i of this.cached.keys()) if (this.starts[i + 1] <= offset) this.cached.delete(i);
  }

  /** The image offset a stream offset stands for, in proportion within its chunk (progress). */
  imageOffsetAt(offset: number): number {
    const encoded = this.starts.length - 1;
    const i = Math.min(this.chunkAt(offset), encoded);
    const imageStart = (this.firstChunk + i) * DEFLATE_CHUNK;
    if (i >= encoded) return Math.min(imageStart, this.image.length);
    const chunkLength = Math.min(DEFLATE_CHUNK, this.image.length - imageStart);
    const within = (offset - this.starts[i]) / (this.starts[i + 1] - this.starts[i]);
    return imageStart + Math.floor(chunkLength * Math.min(1, within));
  }

  /** The chunk whose encoding holds `offset` (the last encoded one at or past the end). */
  private chunkAt(offset: number): number {
    // Packets go in order: most fall in the chunk of the one before.
    const last = this.lastChunk;
    if (last + 1 < this.starts.length && this.starts[last] <= offset && offset < this.starts[last + 1]) return last;
    this.lastChunk = this.search(offset);
    return this.lastChunk;
  }

  private search(offset: number): number {
    let lo = 0;
    let hi = this.starts.length - 2;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid] <= offset) lo = mid;
      else hi = mid - 1;
    }
    return Math.max(lo, 0);
  }

  private chunk(i: number): Buffer {
    let encoded = this.cached.get(i);
    if (!encoded) {
      encoded = encodeChunk(this.image, this.firstChunk + i);
      this.cached.set(i, encoded);
    }
    return encoded;
  }
}
