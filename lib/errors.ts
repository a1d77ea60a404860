/**
 * Errors of the OTA client. Every error has a stable `code` (each one is in
 * docs/TROUBLESHOOTING.md) and a message that says what happened and what
 * to do.
 */

export type BleOtaErrorCode =
  // the firmware image (checked before any connection)
  | 'IMAGE_NOT_BUFFER'
  | 'IMAGE_STREAMED'
  | 'IMAGE_SAMPLE'
  | 'IMAGE_EMPTY'
  | 'IMAGE_NOT_AN_IMAGE'
  | 'IMAGE_BOOTLOADER'
  | 'IMAGE_PARTITION_TABLE'
  | 'IMAGE_ESP8266'
  | 'IMAGE_TRUNCATED'
  | 'IMAGE_BAD_SEGMENT'
  | 'IMAGE_BAD_CHECKSUM'
  | 'IMAGE_BAD_HASH'
  | 'IMAGE_NO_APP_DESC'
  | 'IMAGE_TOO_LARGE'
  | 'IMAGE_WRONG_CHIP'
  | 'IMAGE_NOT_SIGNED'
  | 'IMAGE_SIGNATURE_INVALID'
  | 'SECURE_VERSION_TOO_OLD'
  | 'IMAGE_MISMATCH'
  | 'DOWNGRADE_REFUSED'
  // the Bluetooth side
  | 'BLUETOOTH_UNAVAILABLE'
  | 'VIRTUAL_DEVICE_UNAVAILABLE'
  | 'DEVICE_NOT_FOUND'
  | 'CONNECT_FAILED'
  | 'GATT_TIMEOUT'
  | 'DISCONNECTED'
  | 'NOT_OTA_DEVICE'
  // the device's answers
  | 'REQUEST_REFUSED'
  | 'DEVICE_REJECTED_IMAGE'
  | 'TRANSFER_FAILED'
  | 'PROTOCOL_ERROR'
  | 'ROLLED_BACK'
  | 'CONFIRM_FAILED'
  | 'AUTH_REQUIRED'
  | 'AUTH_FAILED'
  | 'AUTH_LOCKED'
  | 'NOT_PROVISIONED'
  | 'DEVICE_TRUSTS_NO_KEY'
  | 'DEVICE_NOT_AUTHENTICATED'
  | 'WRONG_DEVICE'
  | 'WRONG_BASE'
  // the caller
  | 'CANCELLED'
  | 'BUSY'
  | 'INVALID_ARGUMENT';

/** What a device runs after an update failed, as far as the client saw it. */
export interface DeviceOutcome {
  /**
   * `old`: what it ran before (or another image than the new one);
   * `new-unconfirmed`: the new image, pending verify (it returns to the
   * previous one at its next restart unless confirmed); `new-confirmed`;
   * `unknown`: it restarted and did not answer again.
   */
  runs: 'old' | 'new-unconfirmed' | 'new-confirmed' | 'unknown';
  /** The version it runs, where known. */
  version?: string;
}

export class BleOtaError extends Error {
  readonly code: BleOtaErrorCode;
  /** Update failures once the device was found: what the device runs now (the message says it too). */
  device?: DeviceOutcome;

  constructor(code: BleOtaErrorCode, message: string, options?: { cause?: unknown }) {
    super(asSentence(message), options);
    this.name = new.target.name;
    this.code = code;
  }

  /** Adds what the device runs, to the error and to its message. */
  withDevice(device: DeviceOutcome, sentence: string): this {
    this.device = device;
    this.message = `${this.message.replace(/[.;]?\s*$/, '.')} ${asSentence(sentence)}`;
    return this;
  }

  /**
   * A failure before the update's first request: nothing was sent in this
   * call (said once: a refusal such as DEVICE_NOT_AUTHENTICATED says it
   * already), and what the device runs is not known.
   */
  withNothingSent(): this {
    const said = /\bNothing was sent\b/.test(this.message);
    return this.withDevice({ runs: 'unknown' }, said ? 'What the device runs is not known.' : 'Nothing was sent in this call, and what the device runs could not be read.');
  }

  /**
   * The message alone: Node-RED puts `err.toString()` into msg.error.message
   * and its log, where Error's "ImageError: ..." would show a class name to
   * people who never see the code; the code has its own field.
   */
  override toString(): string {
    return this.message;
  }
}

/**
 * Messages read as sentences wherever they show (a Catch node, the log, the
 * CLI): a capital first letter unless the message opens with a name (a
 * flag, a property, a device, a file), and a full stop.
 */
export function asSentence(text: string): string {
  // A plain lower-case word followed by a space and not by "(": "kitchen (aa:bb:...)" is a device's name.
  let s = text.trim().replace(/^[a-z][a-z']*(?= [^(])/, (word) => word[0].toUpperCase() + word.slice(1));
  if (s === '') return s;
  if (/[^.]\.\.$/.test(s)) s = s.slice(0, -1); // a message ending in a quoted sentence
  return /[.!?]$/.test(s) ? s : `${s}.`;
}

/** The firmware image is not something the device can boot. */
export class ImageError extends BleOtaError {}

/**
 * An update a policy refused before anything was sent: an older version
 * where downgrades are not allowed. The image itself is sound.
 */
export class UpdateRefusedError extends BleOtaError {}

/** No Bluetooth adapter can be used (no kernel support, no adapter, powered off). */
export class BluetoothUnavailableError extends BleOtaError {
  /** The reason in a few words, for a node's status. */
  readonly reason: string;

  constructor(reason: string, message: string, options?: { cause?: unknown }) {
    super('BLUETOOTH_UNAVAILABLE', message, options);
    this.reason = reason;
  }
}

/** A device could not be found, reached or used. */
export class DeviceError extends BleOtaError {}

/** A GATT operation did not complete in time. */
export class GattTimeoutError extends BleOtaError {
  constructor(operation: string, timeoutMs: number) {
    super('GATT_TIMEOUT', `${operation} got no answer within ${timeoutMs} ms; the device may be out of range, busy or have rejected the request`);
  }
}

/** The device refused or failed a step of the OTA protocol. */
export class ProtocolError extends BleOtaError {}

/** The caller cancelled the operation. */
export class CancelledError extends BleOtaError {
  constructor(message = 'the update was cancelled') {
    super('CANCELLED', message);
  }
}
