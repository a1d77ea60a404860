/**
 * Authentication (docs/PROTOCOL.md, "Authentication"): the owner's fleet
 * secret, the device keys derived from it, the key partition a device is
 * provisioned with, and the session that proves both sides on a link.
 *
 * The fleet secret never leaves the client: a device holds only its own
 * key, HMAC-SHA256(secret, "BLE-OTA device key" || device id), so a key
 * read out of one device's flash opens that device and no other. On a link,
 * HELLO swaps nonces; every later request carries a MAC under the session
 * key, and so does the device's answer, which proves to the client that it
 * talks to the device holding the key for the id it claims.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { inspect } from 'node:util';
import { BleOtaError } from '../errors';
import {
  ANSWER,
  AUTH_KEY_LEN,
  AUTH_MAC_LEN,
  AUTH_NONCE_LEN,
  Command,
  DEVICE_ID_LEN,
  DEVICE_KEY_LABEL,
  KEY_MAGIC,
  KEY_PARTITION_SIZE,
  KEY_RECORD_LEN,
  MAC_ANSWER,
  MAC_REQUEST,
  SESSION_LABEL,
} from '../protocol/constants';
import { crc32 } from '../image/signature';

/**
 * Marks key material so that it does not print: util.inspect (console.log,
 * Node-RED's debug sidebar) and JSON.stringify of the key, or of anything
 * holding it (a connection's policy, a session), show a placeholder. The
 * bytes and every Buffer and crypto use of them are unchanged; a copy made
 * with Buffer.from is unmarked. Returns the key itself.
 */
export function hideKey(key: Buffer, what: string): Buffer {
  const shown = `[${what}, ${key.length} bytes, hidden]`;
  const hidden = { value: () => shown, configurable: true, enumerable: false, writable: false };
  Object.defineProperties(key, { [inspect.custom]: hidden, toJSON: hidden });
  return key;
}

/**
 * The fleet secret as users give it: 64 hex digits, or 32 bytes. The
 * message never repeats the value; the result is a copy of its own (not
 * in Buffer's shared pool), marked with hideKey.
 */
export function parseSecret(secret: Buffer | string): Buffer {
  if (Buffer.isBuffer(secret)) {
    if (secret.length !== AUTH_KEY_LEN) {
      throw new BleOtaError('INVALID_ARGUMENT', `The fleet secret has ${secret.length} bytes; it must have ${AUTH_KEY_LEN}.`);
    }
    const copy = Buffer.alloc(AUTH_KEY_LEN);
    secret.copy(copy);
    return hideKey(copy, 'fleet secret');
  }
  const hex = secret.trim();
  if (!/^[0-9a-fA-F]+$/.test(hex) || hex.length !== 2 * AUTH_KEY_LEN) {
    throw new BleOtaError(
      'INVALID_ARGUMENT',
      `The fleet secret must be ${2 * AUTH_KEY_LEN} hex digits (esp32-ble-ota secret makes one); it has ${hex.length} characters${/^[0-9a-fA-F]*$/.test(hex) ? '' : ', not all hex digits'}.`,
    );
  }
  const parsed = Buffer.alloc(AUTH_KEY_LEN);
  parsed.write(hex, 'hex');
  return hideKey(parsed, 'fleet secret');
}

/** A new fleet secret: 32 random bytes. */
export function newSecret(): Buffer {
  return randomBytes(AUTH_KEY_LEN);
}

/** The longest device id as written: 24:0a:c4:12:34:56. */
export const DEVICE_ID_TEXT_LEN = 3 * DEVICE_ID_LEN - 1;

/**
 * A device id ("24:0a:c4:12:34:56", or 12 hex digits) as 6 bytes. A wrong
 * one longer than any device id is not repeated in the message: it may be
 * the fleet secret, pasted into the wrong field.
 */
export function parseDeviceId(text: string): Buffer {
  const given = text.trim();
  const hex = given.replace(/[:-]/g, '');
  if (!/^[0-9a-fA-F]{12}$/.test(hex)) {
    const advice = "give the chip's MAC address (12 hex digits) as esptool.py read_mac prints it, e.g. 24:0a:c4:12:34:56.";
    if (given.length <= DEVICE_ID_TEXT_LEN) throw new BleOtaError('INVALID_ARGUMENT', `${JSON.stringify(given)} is no device id: ${advice}`);
    const allHex = /^[0-9a-fA-F]+$/.test(given);
    const secretLike = allHex && given.length === 2 * AUTH_KEY_LEN ? ' It has the form of a fleet secret, which goes in the secret field.' : '';
    throw new BleOtaError(
      'INVALID_ARGUMENT',
      `The device id given has ${given.length} characters${allHex ? ', all hex digits' : ''}, more than any device id (so it is not repeated here).${secretLike} As the device id, ${advice}`,
    );
  }
  return Buffer.from(hex, 'hex');
}

export function formatDeviceId(id: Buffer): string {
  return [...id].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/** The device's own key: HMAC-SHA256(fleet secret, label || device id). */
export function deviceKey(secret: Buffer, deviceId: Buffer): Buffer {
  if (deviceId.length !== DEVICE_ID_LEN) throw new RangeError(`a device id has ${DEVICE_ID_LEN} bytes`);
  return hideKey(createHmac('sha256', secret).update(DEVICE_KEY_LABEL).update(deviceId).digest(), 'device key');
}

/**
 * The key partition image for one device (what `esp32-ble-ota provision`
 * writes and esptool flashes to the "ble_ota_key" partition): the key
 * record, then 0xFF to the partition's size.
 */
export function keyPartition(secret: Buffer, deviceId: Buffer): Buffer {
  const part = Buffer.alloc(KEY_PARTITION_SIZE, 0xff);
  const record = part.subarray(0, KEY_RECORD_LEN);
  record.fill(0);
  record.write(KEY_MAGIC, 0, 'latin1');
  deviceId.copy(record, 8);
  deviceKey(secret, deviceId).copy(record, 16);
  record.writeUInt32LE(crc32(record.subarray(0, 48)), 48);
  return part;
}

/** One link's authenticated session, client side. */
export class Session {
  private sessionKey: Buffer | undefined;
  private seq = 0;
  private readonly clientNonce = randomBytes(AUTH_NONCE_LEN);

  /**
   * @param key the device key (deviceKey(secret, deviceId))
   * @param deviceId the id the device claims (OTA Info): it is bound into
   *   the session key, so a device with another id cannot answer
   */
  constructor(
    private readonly key: Buffer,
    readonly deviceId: Buffer,
  ) {
    hideKey(key, 'device key');
  }

  get open(): boolean {
    return this.sessionKey !== undefined;
  }

  /** The HELLO request: opcode and the client's nonce. */
  hello(): Buffer {
    return Buffer.concat([Buffer.from([Command.HELLO]), this.clientNonce]);
  }

  /** Takes HELLO's answer fields (the device nonce) and derives the session key. */
  accept(deviceNonce: Buffer): void {
    if (deviceNonce.length !== AUTH_NONCE_LEN) {
      throw new RangeError(`the device nonce has ${deviceNonce.length} bytes, expected ${AUTH_NONCE_LEN}`);
    }
    this.sessionKey = hideKey(createHmac('sha256', this.key).update(SESSION_LABEL).update(this.deviceId).update(this.clientNonce).update(deviceNonce).digest(), 'session key');
    this.seq = 0;
  }

  /** The request with its MAC; returns it and the sequence number its answer must carry. */
  seal(request: Buffer): { value: Buffer; seq: number } {
    const seq = this.seq++;
    return { value: Buffer.concat([request, this.mac(MAC_REQUEST, seq, request)]), seq };
  }

  /**
   * An answer (opcode, status, fields, MAC) checked against the request
   * with sequence number seq; returns it without the MAC, or undefined when
   * the MAC is missing or wrong.
   */
  verify(answer: Buffer, seq: number): Buffer | undefined {
    if (answer.length < 2 + AUTH_MAC_LEN || (answer[0] & ANSWER) === 0) return undefined;
    const body = answer.subarray(0, answer.length - AUTH_MAC_LEN);
    const mac = answer.subarray(answer.length - AUTH_MAC_LEN);
    return timingSafeEqual(mac, this.mac(MAC_ANSWER, seq, body)) ? Buffer.from(body) : undefined;
  }

  private mac(direction: number, seq: number, bytes: Buffer): Buffer {
    if (!this.sessionKey) throw new Error('no session: HELLO first');
    const prefix = Buffer.alloc(5);
    prefix[0] = direction;
    prefix.writeUInt32LE(seq >>> 0, 1);
    return createHmac('sha256', this.sessionKey).update(prefix).update(bytes).digest();
  }
}
