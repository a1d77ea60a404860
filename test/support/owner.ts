/**
 * The owner of the test fleet: a fleet secret and a signing key, made once
 * per test process, as a user makes them once (esp32-ble-ota secret,
 * esp32-ble-ota keygen). Virtual devices provisioned with them stand for
 * our firmware's default build: they take requests only from the owner and
 * install only images the owner signed.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppImageOptions, buildAppImage } from '../../lib/image/app-image-builder';
import { generateSigningKey, publicKeyPem } from '../../lib/image/signature';
import type { VirtualDeviceOptions } from '../../lib/virtual/virtual-device';

/** ECDSA P-256: a key in no time; RSA-3072 signing is tested on its own. */
const signingKey = generateSigningKey('ecdsa256');

export const OWNER = {
  /** The fleet secret, 64 hex digits. */
  secret: randomBytes(32).toString('hex'),
  /** The private signing key (PEM): where images are built, never on a gateway. */
  signingKey,
  /** Its public key (PEM): what a flow may check images against. */
  publicKey: publicKeyPem(signingKey),
};

/** Options of a virtual device as the owner's default build makes it. */
export function ownedDevice(options: VirtualDeviceOptions = {}): VirtualDeviceOptions {
  return { fleetSecret: OWNER.secret, signingKey: OWNER.signingKey, ...options };
}

/** An app image signed with the owner's key. */
export function signedImage(options: AppImageOptions = {}): Buffer {
  return buildAppImage({ ...options, signingKeys: OWNER.signingKey });
}

let keyFile: string | undefined;

/**
 * The environment that makes every virtual device of a Node-RED (or CLI)
 * process an owned default build (virtualDefaultsFromEnv).
 */
export function ownedVirtualEnv(): Record<string, string> {
  if (!keyFile) {
    keyFile = join(mkdtempSync(join(tmpdir(), 'ble-ota-owner-')), 'signing-key.pem');
    writeFileSync(keyFile, OWNER.signingKey, { mode: 0o600 });
  }
  return { BLE_OTA_VIRTUAL_SECRET: OWNER.secret, BLE_OTA_VIRTUAL_SIGNING_KEY: keyFile };
}
