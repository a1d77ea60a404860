/**
 * A device's refusal of a request (an answer whose status is not OK) and
 * the client's typed error for it: what the status means and what to do.
 */
import { BleOtaError, DeviceError, ImageError, ProtocolError } from '../errors';
import { Command, Status, statusName } from '../protocol/constants';

export const COMMAND_NAMES: Record<number, string> = {
  0: 'the transfer',
  [Command.BEGIN]: 'BEGIN',
  [Command.END]: 'END',
  [Command.RESTART]: 'RESTART',
  [Command.ABORT]: 'ABORT',
  [Command.CONFIRM]: 'CONFIRM',
  [Command.HELLO]: 'HELLO',
  [Command.INFO]: 'INFO',
};

/** An answer whose status is not OK; callers turn it into a typed error (refusalError). */
export class CommandRefused extends Error {
  constructor(
    readonly opcode: number,
    readonly status: number,
    readonly body: Buffer = Buffer.alloc(0),
  ) {
    super(`${COMMAND_NAMES[opcode] ?? opcode} answered ${statusName(status)}`);
  }
}

/** The client's error for a status the device answered. */
export function refusalError(err: CommandRefused, size: number): BleOtaError {
  const what = err.message;
  switch (err.status) {
    case Status.TOO_LARGE:
      return new ImageError('IMAGE_TOO_LARGE', `the image (${size} bytes) does not fit the device's OTA slot (${what})`);
    case Status.WRONG_CHIP:
      return new ImageError('IMAGE_WRONG_CHIP', `the device says the image is for another chip (${what}); build it for the device's chip`);
    case Status.PENDING_CONFIRM:
      return new ProtocolError(
        'REQUEST_REFUSED',
        `the device's running image, another than this one, still awaits confirmation (${what}); confirm it, or restart the device to return to the previous image, then update again`,
      );
    case Status.FLASH_ERROR:
      return new ProtocolError('TRANSFER_FAILED', `the device could not write its flash (${what}). Retry; if it persists, check the device's flash and partition table`);
    case Status.HASH_MISMATCH:
      return new ProtocolError('DEVICE_REJECTED_IMAGE', `what the device received does not match the image's SHA-256 (${what}). Retry the update`);
    case Status.INVALID_IMAGE:
      return new ProtocolError('DEVICE_REJECTED_IMAGE', `the device's validation rejected the image (${what}). Check that it was built for this device`);
    case Status.BAD_DATA:
      return new ProtocolError('TRANSFER_FAILED', `the device could not inflate a compressed chunk (${what}). Retry, or turn compression off`);
    case Status.AUTH_REQUIRED:
      return new DeviceError('AUTH_REQUIRED', `The device takes updates only from its owner (${what}); give the fleet secret its key was derived from.`);
    case Status.AUTH_FAILED:
      return new DeviceError(
        'AUTH_FAILED',
        `The device refused the key derived from your fleet secret (${what}): it was provisioned with another secret, or for another device. Nothing was changed; check the secret, or provision the device again.`,
      );
    case Status.NOT_PROVISIONED:
      return new DeviceError(
        'NOT_PROVISIONED',
        `The device has no update key yet (${what}), so it takes no update over the air. Provision it once over USB: esp32-ble-ota provision (docs/SECURITY.md).`,
      );
    case Status.BAD_SIGNATURE:
      // At BEGIN, before the image: the device refuses every image, whoever signed it.
      if (err.opcode === Command.BEGIN) {
        return new DeviceError(
          'DEVICE_TRUSTS_NO_KEY',
          `The device installs no image over the air (${what}): the app it runs carries no signature that signs it (an unsigned build flashed over USB, or a signature sector an older image left), so it trusts no signing key. Nothing was sent. Flash a signed build of its firmware over USB once; from then on it takes images signed with that key.`,
        );
      }
      return new ImageError(
        'IMAGE_SIGNATURE_INVALID',
        `The device refused the image: it is not signed with the key the device trusts (${what}). Sign the image with your signing key (esp32-ble-ota sign, or build with signing on).`,
      );
    case Status.OLD_SECURE_VERSION:
      return new ImageError('SECURE_VERSION_TOO_OLD', `The device refused the image: its secure_version is below the running firmware's (${what}).`);
    case Status.WRONG_BASE:
      return new ImageError(
        'WRONG_BASE',
        `the device does not run the image the delta patch was made for (${what}); nothing changed on it. Send the full image, or a patch made against the image the device runs`,
      );
    case Status.AUTH_LOCKED: {
      const seconds = err.body.length >= 4 ? Math.ceil(err.body.readUInt32LE(0) / 1000) : undefined;
      return new DeviceError(
        'AUTH_LOCKED',
        `the device refuses authentication for ${seconds === undefined ? 'a while' : `${seconds} s`} after repeated failures (${what}); check the key, then try again later`,
      );
    }
    default:
      return new ProtocolError('PROTOCOL_ERROR', `the device refused a step of the update (${what}); status ${statusName(err.status)}`);
  }
}
