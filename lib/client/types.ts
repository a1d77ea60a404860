/**
 * The client's public types: options, progress, results, timeouts. In a
 * module of their own, so that the client and the update steps share them
 * without importing each other.
 */
import type { EspImageSummary } from '../image/esp-image';
import type { Delivery } from './delivery';
import type { ImageCache } from './image-cache';
import type { DeviceInfoV2, PhyName } from '../protocol/v2-codec';
import type { NobleLike } from './noble-types';
import type { Target } from './scanner';
import type { UploadProgress } from './seed-upload';

export interface Timeouts {
  /** Scanning for the device. */
  scanMs: number;
  /** Establishing the connection. */
  connectMs: number;
  /** Any single GATT operation (discovery, read, write, subscribe), and a device's answer. */
  gattMs: number;
  /** The device's validation of the whole image after DONE / END. */
  verifyMs: number;
  /** The device's restart after a successful upload. */
  restartMs: number;
}

export const DEFAULT_TIMEOUTS: Timeouts = {
  scanMs: 15_000,
  connectMs: 10_000,
  gattMs: 5_000,
  verifyMs: 30_000,
  restartMs: 5_000,
};

export type Phase = 'scanning' | 'connecting' | UploadProgress['phase'] | 'resuming' | 'confirming';

export interface Progress extends Omit<UploadProgress, 'phase'> {
  phase: Phase;
  /**
   * v2: the link as the device last reported it (OTA Info version 3), so a
   * slow transfer shows why while it runs; absent before the first look.
   */
  link?: LinkReport;
}

/**
 * Who confirms a new image (protocol v2): the client after reconnecting to
 * the restarted device and checking its version (`client`, the default), or
 * the device itself once its self-test passed (`device`). The seed protocol
 * always leaves it to the device.
 */
export type ConfirmMode = 'client' | 'device';

export interface UpdateOptions {
  target: Target;
  /** The app image (.bin), as built by ESP-IDF. */
  image: Buffer;
  onProgress?: (progress: Progress) => void;
  /** Aborting cancels the update: a seed device discards what it received, a v2 device keeps it for a later update of the same image to resume (docs/CLIENT.md). */
  signal?: AbortSignal;
  timeouts?: Partial<Timeouts>;
  confirm?: ConfirmMode;
  /**
   * New connections after a lost link, each after a backoff (default 3): a
   * first connection lost before anything was sent, a v2 transfer resumed,
   * a restarted device reached again.
   */
  resumeAttempts?: number;
  /** `seed` forces the seed protocol on a device that speaks both. */
  protocol?: 'auto' | 'seed';
  /**
   * v2: when the device already runs this build (same project, version and
   * ELF SHA-256), send nothing and resolve with `skipped: true`.
   */
  skipIfRunning?: boolean;
  /** v2: update even when the image's version is older than the running one (default true). */
  allowDowngrade?: boolean;
  /** v2: send the image deflated where the device offers it and it makes the image smaller (default true). */
  compress?: boolean;
  /**
   * Verify the image's signature against `publicKey` before any connection:
   * an unsigned image, one signed with another key and one changed after
   * signing are refused without using the radio (IMAGE_NOT_SIGNED,
   * IMAGE_SIGNATURE_INVALID). The device checks again itself.
   */
  requireSignature?: boolean;
  /** The public key (PEM) images must be signed with; needed by requireSignature. */
  publicKey?: string;
  /**
   * The owner's fleet secret (64 hex digits or 32 bytes): each device's key
   * derives from it and the device id. Never logged nor put in messages.
   */
  secret?: Buffer | string;
  /**
   * With a secret: still update devices that cannot authenticate (no AUTH
   * feature, the seed protocol). Off by default, as such a device may be
   * anyone's.
   */
  allowUnauthenticated?: boolean;
  /**
   * v2: the device id (the chip's factory MAC, "24:0a:c4:12:34:56") the
   * device must have. With a fleet secret, the device proves it: a device
   * of the same fleet cannot stand in for another one. Without it, any of
   * the owner's devices found by the target passes.
   */
  deviceId?: string;
  /**
   * v2, delta updates (docs/DELTA.md): the image the device runs now, the
   * base a patch rebuilds the new image from. Used when its SHA-256 (or
   * that of its start, of the size the device reports: a .bin padded after
   * the app) is the one the device reports; otherwise the cache is asked, or the full image
   * goes (the result's `delivery.reason` says why). Not an error when it is
   * another image.
   */
  baseImage?: Buffer;
  /**
   * v2: the images this client installed (ImageCache): the base of a patch
   * when the device runs one of them, and where the image goes once the
   * device runs it, confirmed. Without it, only `baseImage` can be a base.
   */
  cache?: ImageCache;
  /** v2: send a patch where the device applies one and it is clearly smaller (default true). Needs `compress`. */
  delta?: boolean;
}

/**
 * The link of an update, as the device reported it in OTA Info (firmware
 * with info_version 3): the last look after the image was sent, else the
 * last look. What an older device does not report is undefined; the MTU
 * is then the one this client negotiated.
 */
export interface LinkReport {
  /** ATT MTU. */
  mtu: number;
  /** LL payload octets per PDU (27 without Data Length Extension, up to 251): client to device (the image's direction), device to client. */
  dataLength?: { toDevice?: number; fromDevice?: number };
  phy?: { toDevice?: PhyName; fromDevice?: PhyName };
  /** Connection interval in ms. */
  intervalMs?: number;
  /** Connection events the device may skip. */
  latency?: number;
  supervisionTimeoutMs?: number;
  /** The connection parameters the device last asked for: none yet (the central's choice), a transfer's, or idle ones. */
  requested?: 'none' | 'transfer' | 'idle';
}

export interface UpdateResult {
  /**
   * The device as found (name, address) and, in protocol v2, its device id:
   * proven when `authenticated`, as the device claims it otherwise. Every
   * connection of the update reached the device with this id.
   */
  device: { name: string | undefined; address: string; id?: string };
  image: EspImageSummary;
  protocol: 'seed' | 'v2';
  mtu: number;
  packetSize: number;
  packets: number;
  /** The image's size. */
  bytes: number;
  /**
   * Image bytes the device stored in this call, as sent or, with a patch,
   * rebuilt from it (`delivery.bytesOverAir` has what crossed the air): all
   * of `bytes` for a whole transfer, less when it resumed one, 0 when the
   * device already held the whole image (an earlier call was interrupted
   * after sending it: this one only finished, restarted or confirmed).
   */
  bytesSent: number;
  /** From the start of the connection to the end (confirmation, or restart). */
  durationMs: number;
  /** Image bytes per second during this call's transfer (`bytesSent` over its time; with a patch, above the link's rate); 0 when it sent none. */
  bytesPerSecond: number;
  /** The link as the device saw it (see LinkReport): why a transfer was as fast or slow as it was. */
  link: LinkReport;
  /** Whether the device restarted into the new image (it dropped the link). */
  restarted: boolean;
  /** v2: the device runs the new image and it is confirmed (marked valid). */
  confirmed: boolean;
  /** v2: the version the device reported after its restart. */
  runningVersion?: string;
  /** v2: how often a lost link was resumed. */
  resumes: number;
  /** The device already ran this build: nothing was sent (skipIfRunning). */
  skipped: boolean;
  /**
   * v2: the version the device ran before the update; undefined when an
   * earlier call had already restarted it into this image (unconfirmed).
   */
  previousVersion?: string;
  /**
   * The device proved it holds its key (derived from the fleet secret) on
   * every answer this result rests on. False for devices without
   * authentication, which anyone could impersonate.
   */
  authenticated: boolean;
  /**
   * How the image crossed the air: `full`, `patch` (a delta against the
   * image the device ran, `baseSha256`, from `baseSource`), or `none` (the
   * device ran it, or held it, already); `reason` says why the full image
   * went where a patch was possible or tried; `bytesOverAir`, the OTA
   * stream's bytes this call sent, packets sent again included (not the
   * packets' offsets nor the ATT and link headers). Every update's result
   * has it; optional for results made by older versions of this package.
   */
  delivery?: Delivery;
  /**
   * With an image cache: whether the image is in it now (stored once the
   * device runs it, confirmed), and why not when storing failed.
   */
  cache?: { stored: boolean; error?: string };
}

export interface DeviceInfo {
  name: string | undefined;
  address: string;
  /** In dBm, from the scan that found the device; undefined when the adapter measured none (it reported 127, not available). */
  rssi: number | undefined;
  mtu: number;
  protocol: 'seed' | 'v2';
  /** Device Information's firmware revision, when the device has one (ours do, the seed's do not). */
  firmwareRevision: string | undefined;
  /** Protocol v2's OTA Info. */
  ota?: DeviceInfoV2;
  /** The device proved the OTA Info above (a fleet secret was given and the device has authentication). */
  authenticated: boolean;
}

export interface BleOtaClientOptions {
  /** A noble instance, or a function returning one; default: the system's. */
  noble?: NobleLike | (() => NobleLike);
  timeouts?: Partial<Timeouts>;
}
