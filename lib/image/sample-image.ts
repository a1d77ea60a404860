/**
 * Sample app images, for trying flows and the command line without an
 * ESP-IDF build: valid images (header, segments in the chip's address
 * ranges, app descriptor, checksum, SHA-256; signed when asked) whose code
 * is filler. Virtual ESP32s install them; a real ESP32 would boot one and
 * crash, so each is marked (its app descriptor's ESP-IDF version field) and
 * the front ends refuse to send it over a real radio (isSampleImage).
 */
import { createHash } from 'node:crypto';
import { BleOtaError } from '../errors';
import { buildAppImage } from './app-image-builder';
import { knownChips, type EspChip } from './esp-chips';
import { parseEspImage } from './esp-image';

/** What a sample image's app descriptor gives as its ESP-IDF version: it says what the image is. */
export const SAMPLE_IDF_VERSION = 'esp32-ble-ota sample';

export const SAMPLE_DEFAULTS = { projectName: 'sample-app', version: '2.0.0', chip: 'ESP32', size: 128 * 1024 } as const;

/** The smallest image with every part, and the largest slot a virtual ESP32 can have. */
export const SAMPLE_MIN_SIZE = 1024;
export const SAMPLE_MAX_SIZE = 16 * 1024 * 1024;

export interface SampleImageOptions {
  /** The app descriptor's project name (default "sample-app"), at most 31 bytes. */
  projectName?: string;
  /** The app descriptor's version (default "2.0.0"), at most 31 bytes. */
  version?: string;
  /** The chip: a name as ESP-IDF targets spell it (esp32, esp32s3, ESP32-C3) or a header chip id. Default ESP32. */
  chip?: string | number;
  /** About this many bytes (default 128 KiB), from 1 KiB to 16 MiB. */
  size?: number;
  /** A private signing key (PEM): the image carries a Secure Boot v2 signature block made with it. */
  signingKey?: string;
}

/** The chip a name or id means, or a readable error listing the known ones. */
export function sampleChip(chip: string | number): EspChip {
  const key = (c: string) => c.toLowerCase().replace(/[-_\s]/g, '');
  const wanted = typeof chip === 'number' ? undefined : key(chip);
  const found = knownChips().find((c) => (wanted === undefined ? c.id === chip : key(c.name) === wanted || String(c.id) === wanted));
  if (!found) {
    throw new BleOtaError(
      'INVALID_ARGUMENT',
      `Unknown chip "${chip}": give one of ${knownChips()
        .map((c) => key(c.name))
        .join(', ')}.`,
    );
  }
  return found;
}

/** A sample app image; bad options are INVALID_ARGUMENT errors that say what to give. */
export function sampleImage(options: SampleImageOptions = {}): Buffer {
  const projectName = text('project name', options.projectName ?? SAMPLE_DEFAULTS.projectName);
  const version = text('version', options.version ?? SAMPLE_DEFAULTS.version);
  const chip = sampleChip(options.chip ?? SAMPLE_DEFAULTS.chip);
  const size = options.size ?? SAMPLE_DEFAULTS.size;
  if (!Number.isInteger(size) || size < SAMPLE_MIN_SIZE || size > SAMPLE_MAX_SIZE) {
    throw new BleOtaError('INVALID_ARGUMENT', `The sample's size is ${size} bytes: give a whole number of bytes from ${SAMPLE_MIN_SIZE} (1 KiB) to ${SAMPLE_MAX_SIZE} (16 MiB).`);
  }
  // The same options give the same image, other options another one; versions of one project
  // share their filler (as two builds of one app share most code), so an update from one to
  // the next goes as a small patch where the device takes patches.
  const seed = createHash('sha256').update(`${projectName}\0${chip.id}\0${size}`).digest().readUInt32LE(0);
  return buildAppImage({ chipId: chip.id, projectName, version, size, seed, idfVersion: SAMPLE_IDF_VERSION, signingKeys: options.signingKey });
}

function text(what: string, value: string): string {
  const trimmed = String(value).trim();
  if (trimmed === '') throw new BleOtaError('INVALID_ARGUMENT', `The sample's ${what} is empty: give one, e.g. ${what === 'version' ? '2.0.0' : 'sample-app'}.`);
  if (Buffer.byteLength(trimmed) > 31) {
    // Not repeated: a text this long may be a fleet secret or a key pasted into the wrong field.
    throw new BleOtaError('INVALID_ARGUMENT', `The sample's ${what} is ${Buffer.byteLength(trimmed)} bytes long: an app descriptor holds at most 31.`);
  }
  return trimmed;
}

/** Whether an image is a sample (sampleImage): filler, never to be sent to a real device. */
export function isSampleImage(image: Buffer): boolean {
  try {
    return parseEspImage(image).appDesc.idfVersion === SAMPLE_IDF_VERSION;
  } catch {
    return false;
  }
}
