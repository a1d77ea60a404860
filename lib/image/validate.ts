/**
 * The checks an image passes before any connection: a well-formed ESP app
 * image (parseEspImage) built for a chip that has Bluetooth LE.
 */
import { ImageError } from '../errors';
import { EspImage, parseEspImage } from './esp-image';

/** Chips whose images can never arrive over BLE: they have no Bluetooth radio. */
const NO_BLUETOOTH: Record<number, string> = { 2: 'ESP32-S2' };

export function validateImage(data: unknown): EspImage {
  const image = parseEspImage(data);
  const chip = NO_BLUETOOTH[image.chipId];
  if (chip) {
    throw new ImageError(
      'IMAGE_WRONG_CHIP',
      `This image was built for the ${chip}, which has no Bluetooth, so no device that receives it over BLE can run it. Build the app for your device's chip (idf.py set-target esp32, esp32c3, esp32s3, ...).`,
    );
  }
  return image;
}
