/**
 * How an update's image crosses the air: whole (deflated where that pays),
 * or as a delta patch against the image the device runs (docs/DELTA.md).
 *
 * A patch goes when the device applies patches (OTA Info's DELTA feature),
 * reports the SHA-256 of the image it runs, this client has that image (the
 * caller's base image, else the image cache), and the patch, encoded as it
 * would be sent, is at most PATCH_SHARE of what the full image would send.
 * Otherwise the full image goes, and the result says why.
 */
import { createHash } from 'node:crypto';
import { computePatchOffThread } from '../delta/patch-thread';
import { BleOtaError, CancelledError } from '../errors';
import { encodedLength, worthDeflating } from '../protocol/deflate-chunks';
import type { ImageCache } from './image-cache';

/**
 * The patch must be at most this share of the full image, each counted as
 * the bytes it sends (DEFLATE chunks): a patch that saves less than a
 * quarter is not worth a base image that may not be the device's after all.
 */
export const PATCH_SHARE = 3 / 4;

/** Why the full image went, when the device could have taken a patch or a patch was tried. */
export type FullReason =
  /** The caller turned delta updates off (or compression, which patches travel in), or chose the seed protocol. */
  | 'delta-off'
  /** The device does not apply patches (firmware without DELTA, or without DEFLATE, or the seed's). */
  | 'device-no-delta'
  /** The device does not know the SHA-256 of the image it runs. */
  | 'device-no-base'
  /** The base image given is not the image the device runs, and the cache does not hold that one. */
  | 'base-not-running'
  /** Neither a base image given nor the cache holds the image the device runs. */
  | 'base-unknown'
  /**
   * The cache held a file for the image the device runs, but its content no
   * longer hashes to that image (a damaged disk, an edited file): the file
   * is removed.
   */
  | 'base-damaged'
  /** The patch would not be clearly smaller (PATCH_SHARE). */
  | 'patch-not-smaller'
  /** The device refused the patch: it runs another image than the base (WRONG_BASE). */
  | 'wrong-base'
  /** The patch could not be computed (its thread failed: memory, a worker that could not start). */
  | 'patch-not-computed'
  /**
   * The device could not rebuild the image from the patch (BAD_DATA, or the rebuilt
   * image's SHA-256): the image it runs may differ from the one it reported (a flipped
   * bit in its flash, or a firmware defect), or the patch did not arrive as sent; neither
   * answer tells which. The full image went on the next step.
   */
  | 'patch-not-applied';

/** How the image went (UpdateResult.delivery). */
export interface Delivery {
  /** `none`: nothing needed sending (the device ran this image already, or held it whole from an earlier call). */
  method: 'patch' | 'full' | 'none';
  /** The SHA-256 (hex) of the image the patch applies to: the one the device ran. */
  baseSha256?: string;
  /**
   * Where the base image came from: the caller's `baseImage`, the image
   * cache, or the image sent itself (the device runs this very image and
   * gets it again: skipIfRunning off).
   */
  baseSource?: BaseSource;
  /** Why the full image went (see FullReason). */
  reason?: FullReason;
  /** The new image's size. */
  imageBytes: number;
  /**
   * Bytes of the OTA stream this call sent: deflated chunks of the image
   * or the patch, packets sent again included; not the 4-byte offset of
   * each packet, nor the ATT, L2CAP and link layer headers.
   */
  bytesOverAir: number;
  /** With a patch, the bytes the full image would have sent instead (its whole stream). */
  fullBytes?: number;
}

export type BaseSource = 'option' | 'cache' | 'image';

/** A patch chosen for the transfer. */
export interface PatchPlan {
  patch: Buffer;
  /** The base image's SHA-256, BEGIN's base. */
  base: Buffer;
  source: BaseSource;
  /** Bytes of the patch's stream, and of the full image's. */
  patchStream: number;
  fullStream: number;
}

export interface PlanInput {
  image: Buffer;
  /** The device applies patches (DELTA and DEFLATE features), and the caller allows them. */
  deviceTakesPatch: FullReason | true;
  /** OTA Info's running_sha256 and running_size (undefined, or zero, when not known). */
  runningSha256: Buffer | undefined;
  runningSize: number | undefined;
  /** The full image goes deflated (else as it is). */
  fullDeflated: boolean;
  baseImage?: Buffer;
  cache?: ImageCache;
  /** The update's: when it aborts, the patch's computation stops (CANCELLED). */
  signal?: AbortSignal;
}

/** The patch to send, or why the full image goes. */
export async function planDelivery(input: PlanInput): Promise<PatchPlan | { reason: FullReason }> {
  if (input.deviceTakesPatch !== true) return { reason: input.deviceTakesPatch };
  const running = input.runningSha256;
  if (running === undefined || running.every((b) => b === 0)) return { reason: 'device-no-base' };
  let base: Buffer | undefined;
  let source: BaseSource = 'option';
  let damaged = false;
  const given = input.baseImage;
  const givenRuns = given && runningPart(given, running, input.runningSize);
  // The device runs this very image (sent again all the same): it rebuilds it from itself.
  const imageRuns = !givenRuns && runningPart(input.image, running, input.runningSize);
  if (givenRuns) {
    base = givenRuns;
  } else if (imageRuns) {
    base = imageRuns;
    source = 'image';
  } else if (input.cache) {
    const found = await input.cache.lookup(running);
    base = found.image;
    damaged = found.damaged === true;
    source = 'cache';
  }
  // A damaged cache file is said before a base given for another image: it is the news (a disk to check).
  if (base === undefined) return { reason: damaged ? 'base-damaged' : given !== undefined ? 'base-not-running' : 'base-unknown' };
  let patch: Buffer;
  try {
    patch = await computePatchOffThread(base, input.image, input.signal);
  } catch {
    if (input.signal?.aborted) throw new CancelledError();
    // A patch is an optimisation: whatever stopped its computation (the thread, memory) stops no update.
    return { reason: 'patch-not-computed' };
  }
  const patchStream = encodedLength(patch);
  const fullStream = input.fullDeflated ? encodedLength(input.image) : input.image.length;
  if (patchStream > fullStream * PATCH_SHARE) return { reason: 'patch-not-smaller' };
  return { patch, base: running, source, patchStream, fullStream };
}

/** Whether the full image would go deflated: the device inflates, the caller allows it and a sample says it pays. */
export function fullDeflated(image: Buffer, deviceDeflates: boolean, compress: boolean | undefined): boolean {
  return compress !== false && deviceDeflates && worthDeflating(image);
}

/** The caller's base image, checked: a Buffer that is not empty, or nothing. */
export function checkBaseImage(base: unknown): Buffer | undefined {
  if (base === undefined || base === null) return undefined;
  if (!Buffer.isBuffer(base)) {
    throw new BleOtaError(
      'INVALID_ARGUMENT',
      `The base image must be a Buffer holding the image the device runs (the .bin of its current firmware), not ${describe(base)}. Give the file's content (File In: a single Buffer object), or leave it out: the image cache, or the full image, is used then.`,
    );
  }
  if (base.length === 0) {
    throw new BleOtaError(
      'INVALID_ARGUMENT',
      'The base image is empty (0 bytes): give the image the device runs (the .bin of its current firmware), or leave it out: the image cache, or the full image, is used then.',
    );
  }
  return base;
}

function describe(value: unknown): string {
  if (typeof value === 'string') return `a string of ${value.length} characters`;
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

/**
 * What of `file` the device runs, whose size and SHA-256 it reports: the
 * file, or its start where the file has bytes after the app (padding to a
 * flash sector, as a .bin written for esptool may have: the device finds the
 * image's end by its format and hashes up to there). Undefined when neither.
 */
function runningPart(file: Buffer, running: Buffer, size: number | undefined): Buffer | undefined {
  if (size === undefined || size <= 0 || size > file.length) return undefined;
  const part = size === file.length ? file : file.subarray(0, size);
  return sha256(part).equals(running) ? part : undefined;
}

function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

/** What the update proved about the image the device runs at its end. */
export interface Installed {
  confirmed: boolean;
  skipped: boolean;
  /** As the device reports it (OTA Info version 4), else undefined. */
  runningSha256: Buffer | undefined;
  runningSize: number | undefined;
}

/**
 * Keeps the image the device runs as the base for its next update, once
 * the device proved it runs it: confirmed (or run already, skipped), and,
 * where the device reports the running image's SHA-256, that one. A file
 * with bytes after the app (padding to a flash sector, say) runs without
 * them: the device's SHA-256 is that of the file's start, which is what a
 * later patch is made against, so that start is kept. A failed or
 * unconfirmed image is never stored: undefined then.
 */
export async function storeInstalled(cache: ImageCache, image: Buffer, installed: Installed): Promise<{ stored: boolean; error?: string } | undefined> {
  if (!(installed.confirmed || installed.skipped)) return undefined;
  const running = installed.runningSha256;
  if (!running) return cache.put(image);
  // The file, or its start (each hashed once); a device that reports no size: the whole file.
  const part = runningPart(image, running, installed.runningSize);
  if (part) return cache.put(part);
  const size = installed.runningSize;
  if (size !== image.length && running.equals(sha256(image))) return cache.put(image);
  // Skipped: the device runs another file of the same build (signed again: a signature is
  // random). When the cache holds that one, the next update has its base all the same.
  if (installed.skipped && (await cache.lookup(running)).image) return { stored: true };
  return {
    stored: false,
    error: `the device reports the image it runs with SHA-256 ${running.toString('hex').slice(0, 16)}…${size !== undefined ? ` (${size} bytes)` : ''}, which is neither this file's nor that of its start, so it is not kept as the base of the next update`,
  };
}
