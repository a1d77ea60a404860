/**
 * The pre-shared key of authenticated devices (docs/PROTOCOL.md,
 * "Authentication"): parsing it, and the MAC each request carries.
 */
import { createHmac } from 'node:crypto';
import { BleOtaError } from '../errors';
import { AUTH_KEY_LEN } from '../protocol/constants';

/**
 * A key as users give it: 64 hex digits (what menuconfig takes), or 32
 * bytes. The message never repeats the value.
 */
export function parseKey(key: Buffer | string): Buffer {
  if (Buffer.isBuffer(key)) {
    if (key.length !== AUTH_KEY_LEN) {
      throw new BleOtaError('INVALID_ARGUMENT', `the key has ${key.length} bytes; it must have ${AUTH_KEY_LEN}, the same as the device's CONFIG_BLE_OTA_AUTH_KEY`);
    }
    return Buffer.from(key);
  }
  const hex = key.trim();
  if (!/^[0-9a-fA-F]+$/.test(hex) || hex.length !== 2 * AUTH_KEY_LEN) {
    throw new BleOtaError(
      'INVALID_ARGUMENT',
      `the key must be ${2 * AUTH_KEY_LEN} hex digits, the same as the device's CONFIG_BLE_OTA_AUTH_KEY (it has ${hex.length} characters${/^[0-9a-fA-F]*$/.test(hex) ? '' : ', not all hex digits'})`,
    );
  }
  return Buffer.from(hex, 'hex');
}

/** HMAC-SHA256(key, challenge || request): what the device expects after the request. */
export function requestMac(key: Buffer, challenge: Buffer, request: Buffer): Buffer {
  return createHmac('sha256', key).update(challenge).update(request).digest();
}
