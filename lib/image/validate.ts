/**
 * The checks an image passes before any connection: a well-formed ESP app
 * image (parseEspImage) built for a chip that has Bluetooth LE.
 */
import { ImageError } from '../errors';
import { findChip } from './esp-chips';
import { EspImage, parseEspImage } from './esp-image';

/** The largest app partition an ESP32-family chip can have. */
export const MAX_APP_SIZE = 16 * 1024 * 1024;

/** Chips whose images can never arrive over BLE: they have no Bluetooth radio. */
const NO_BLUETOOTH: Record<number, string> = { 2: 'ESP32-S2' };

export function validateImage(data: unknown): EspImage {
  const image = parseEspImage(data);
  if (findChip(image.chipId) === undefined) {
    throw new ImageError(
      'IMAGE_WRONG_CHIP',
      `This image names chip id ${image.chipId} in its header, which is no ESP32-family chip this node knows, so no device can take it. Build the app with ESP-IDF for your device's chip (idf.py set-target).`,
    );
  }
  if (image.imageLength + image.trailingBytes > MAX_APP_SIZE) {
    throw new ImageError(
      'IMAGE_TOO_LARGE',
      `This image is ${image.imageLength + image.trailingBytes} bytes, more than the 16 MB the largest app partition of any ESP32-family chip holds.`,
    );
  }
  const chip = NO_BLUETOOTH[image.chipId];
  if (chip) {
    throw new ImageError(
      'IMAGE_WRONG_CHIP',
      `This image was built for the ${chip}, which has no Bluetooth, so no device that receives it over BLE can run it. Build the app for your device's chip (idf.py set-target esp32, esp32c3, esp32s3, ...).`,
    );
  }
  return image;
}
