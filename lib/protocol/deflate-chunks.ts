/**
 * The DEFLATE stream of protocol v2 (docs/PROTOCOL.md, "Compression"): the
 * image cut into 4 KB chunks, each sent as a u16 length and its raw
 * deflate, or the chunk itself when deflate does not make it smaller. Each
 * chunk is deflated with the image's previous chunk as dictionary: the
 * device keeps that chunk, even while a transfer is suspended, so a
 * transfer resumes at any chunk, and it inflates each chunk straight into
 * its 4 KB flash block.
 */
import { deflateRawSync } from 'node:zlib';
import { DEFLATE_CHUNK } from './constants';

export interface DeflatedImage {
  /** Each chunk's encoding: length, then deflate or the chunk. */
  readonly chunks: readonly Buffer[];
  /** Bytes of all encodings together. */
  readonly length: number;
  /** Bytes of the image they encode. */
  readonly imageLength: number;
}

/** Encodes every chunk of the image (level 9: the device's side costs the same whatever the level). */
export function deflateChunks(image: Buffer): DeflatedImage {
  const chunks: Buffer[] = [];
  let length = 0;
  for (let at = 0; at < image.length; at += DEFLATE_CHUNK) {
    const chunk = image.subarray(at, Math.min(at + DEFLATE_CHUNK, image.length));
    const packed = deflateRawSync(chunk, at === 0 ? { level: 9 } : { level: 9, dictionary: image.subarray(at - DEFLATE_CHUNK, at) });
    const body = packed.length < chunk.length ? packed : chunk;
    const encoded = Buffer.allocUnsafe(2 + body.length);
    encoded.writeUInt16LE(body.length, 0);
    body.copy(encoded, 2);
    chunks.push(encoded);
    length += encoded.length;
  }
  return { chunks, length, imageLength: image.length };
}

/** The stream from the chunk at image offset `imageOffset` (a chunk boundary) to the end. */
export function streamFrom(deflated: DeflatedImage, imageOffset: number): Buffer {
  // The device has the whole image (END's answer, or the link, was lost): nothing is left.
  if (imageOffset >= deflated.imageLength) return Buffer.alloc(0);
  if (imageOffset % DEFLATE_CHUNK !== 0) throw new RangeError(`image offset ${imageOffset} is not at a chunk boundary`);
  return Buffer.concat(deflated.chunks.slice(imageOffset / DEFLATE_CHUNK));
}
