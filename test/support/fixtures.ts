import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';

/**
 * Real ESP images from ../shared/fixtures/esptool-images, beside the clone.
 * A user's clone has no ../shared: tests over them skip with a note.
 */
export const FIXTURES_DIR = resolve(__dirname, '../../../../shared/fixtures/esptool-images');
export const haveFixtures = existsSync(FIXTURES_DIR);

export function fixture(name: string): Buffer {
  return readFileSync(resolve(FIXTURES_DIR, name));
}
