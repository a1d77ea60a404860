/**
 * What `npm run test:hardware` is told through its environment
 * (docs/HARDWARE.md, *Testing with a real ESP32*): the Bluetooth adapter and
 * the device are required, and without both the run is skipped with a
 * message saying how to start it; the rest is optional. Every value is
 * checked before any radio work, and a bad one is refused with what was
 * wrong and what to give instead. Secrets are read from files and never
 * printed.
 */
import { readFileSync } from 'node:fs';
import { delimiter } from 'node:path';
import { targetOf } from '../../lib/client/target';
import { parseSecret } from '../../lib/client/session';
import type { Target } from '../../lib/client/scanner';
import { validateImage } from '../../lib/image/validate';
import { signingKeyInfo } from '../../lib/image/signature';

/** The environment variables, by role. */
export const HW_ENV = {
  adapter: 'BLE_OTA_HW_ADAPTER',
  device: 'BLE_OTA_HW_DEVICE',
  secretFile: 'BLE_OTA_HW_SECRET_FILE',
  signingKey: 'BLE_OTA_HW_SIGNING_KEY',
  images: 'BLE_OTA_HW_IMAGES',
} as const;

export interface HardwareImage {
  path: string;
  data: Buffer;
  version: string;
  chipId: number;
}

export interface HardwareConfig {
  /** The HCI adapter's index (hci1: 1), for noble's NOBLE_HCI_DEVICE_ID. */
  adapter: number;
  /** The device as given, and how the client looks for it. */
  device: string;
  target: Target;
  /** The fleet secret (64 hex digits), for a device with authentication. */
  secret?: string;
  /** The signing key (PEM), for the test images of a device that takes only signed ones. */
  signingKey?: string;
  /** Builds of the firmware the device boots, for the cases that update it. */
  images: HardwareImage[];
}

export type HardwareSetup = { kind: 'skip'; message: string } | { kind: 'error'; message: string } | { kind: 'run'; config: HardwareConfig };

export const SKIP_MESSAGE =
  `set ${HW_ENV.adapter} (the Bluetooth adapter, e.g. hci0) and ${HW_ENV.device} (the advertised name or the address of an ESP32 ` +
  "running this package's firmware) to run the protocol conformance tests and one update against it; docs/HARDWARE.md, " +
  'Testing with a real ESP32, says how.';

type ReadFile = (path: string) => Buffer;

/** Reads the run's settings from env; read stands in for readFileSync in tests. */
export function hardwareSetup(env: NodeJS.ProcessEnv, read: ReadFile = (p) => readFileSync(p)): HardwareSetup {
  const adapterText = env[HW_ENV.adapter]?.trim() ?? '';
  const device = env[HW_ENV.device]?.trim() ?? '';
  if (adapterText === '' && device === '') return { kind: 'skip', message: SKIP_MESSAGE };
  try {
    if (adapterText === '') throw new Error(`${HW_ENV.device} is set but ${HW_ENV.adapter} is not: name the Bluetooth adapter to use, e.g. ${HW_ENV.adapter}=hci0.`);
    if (device === '') throw new Error(`${HW_ENV.adapter} is set but ${HW_ENV.device} is not: give the advertised name or the address (AA:BB:CC:DD:EE:FF) of the ESP32 to test.`);
    return {
      kind: 'run',
      config: {
        adapter: adapterIndex(adapterText),
        device,
        target: targetOf(device),
        secret: secretFrom(env[HW_ENV.secretFile], read),
        signingKey: signingKeyFrom(env[HW_ENV.signingKey], read),
        images: imagesFrom(env[HW_ENV.images], read),
      },
    };
  } catch (err) {
    return { kind: 'error', message: (err as Error).message };
  }
}

function adapterIndex(text: string): number {
  const m = /^(?:hci)?(\d{1,3})$/i.exec(text);
  if (!m || Number(m[1]) > 255) {
    throw new Error(`${HW_ENV.adapter} must name an HCI adapter: hci0, hci1, ... or its number (hciconfig and btmgmt info list them); got "${text.slice(0, 40)}".`);
  }
  return Number(m[1]);
}

function readNamed(variable: string, path: string, read: ReadFile): Buffer {
  try {
    return read(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`${variable} names ${path}, which cannot be read${code ? ` (${code})` : ''}: give the path of an existing file.`, { cause: err });
  }
}

function secretFrom(path: string | undefined, read: ReadFile): string | undefined {
  if (path === undefined || path.trim() === '') return undefined;
  const text = readNamed(HW_ENV.secretFile, path, read).toString('utf8').trim();
  try {
    parseSecret(text);
  } catch (err) {
    // parseSecret never quotes the secret.
    throw new Error(`${HW_ENV.secretFile} (${path}): ${(err as Error).message} Give the file esp32-ble-ota secret wrote.`, { cause: err });
  }
  return text;
}

function signingKeyFrom(path: string | undefined, read: ReadFile): string | undefined {
  if (path === undefined || path.trim() === '') return undefined;
  const pem = readNamed(HW_ENV.signingKey, path, read).toString('utf8');
  let isPrivate: boolean;
  try {
    isPrivate = signingKeyInfo(pem).isPrivate;
  } catch (err) {
    throw new Error(`${HW_ENV.signingKey} (${path}): ${(err as Error).message}`, { cause: err });
  }
  if (!isPrivate) {
    throw new Error(`${HW_ENV.signingKey} (${path}) is a public key; the tests sign images, so give the private key the device's images are signed with.`);
  }
  return pem;
}

function imagesFrom(list: string | undefined, read: ReadFile): HardwareImage[] {
  if (list === undefined || list.trim() === '') return [];
  return list
    .split(delimiter)
    .map((p) => p.trim())
    .filter((p) => p !== '')
    .map((path) => {
      const data = readNamed(HW_ENV.images, path, read);
      try {
        const image = validateImage(data);
        return { path, data, version: image.appDesc.version, chipId: image.chipId };
      } catch (err) {
        throw new Error(`${HW_ENV.images}: ${path} is no app image the device could boot: ${(err as Error).message}`, { cause: err });
      }
    });
}
