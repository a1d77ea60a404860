/**
 * Facts about the ESP32-family chips that the image parser and the synthetic
 * image builder both need: the chip id written into the image header, a
 * readable name, and where the flash cache and internal RAM sit in the
 * address space (used to tell apps, which run from flash, from RAM-only
 * images such as bootloaders).
 *
 * Addresses follow the chips' technical reference manuals; they are only used
 * for classification and for building plausible test images, never to decide
 * whether an image is accepted by a device.
 */

/** A half-open address range [start, end). */
export interface AddressRange {
  readonly start: number;
  readonly end: number;
}

export interface EspChip {
  /** The `chip_id` value of the image header. */
  readonly id: number;
  /** Marketing name, e.g. "ESP32-C3". */
  readonly name: string;
  /** Address windows through which the chip executes/reads code and data from flash. */
  readonly flashWindows: readonly AddressRange[];
  /** Where an app's flash-mapped read-only data (and its app descriptor) starts. */
  readonly dromBase: number;
  /** Where an app's flash-mapped code starts (cache page aligned). */
  readonly iromBase: number;
  /** Start of internal data RAM used for an app's initialised data. */
  readonly dramBase: number;
  /** Start of internal instruction RAM used for an app's IRAM code. */
  readonly iramBase: number;
}

function range(start: number, end: number): AddressRange {
  return { start, end };
}

const CHIPS: readonly EspChip[] = [
  {
    id: 0,
    name: 'ESP32',
    flashWindows: [range(0x3f400000, 0x3f800000), range(0x400d0000, 0x40400000)],
    dromBase: 0x3f400000,
    iromBase: 0x400d0000,
    dramBase: 0x3ffb0000,
    iramBase: 0x40080000,
  },
  {
    id: 2,
    name: 'ESP32-S2',
    flashWindows: [range(0x3f000000, 0x3ff80000), range(0x40080000, 0x40800000)],
    dromBase: 0x3f000000,
    iromBase: 0x40080000,
    dramBase: 0x3ffb0000,
    iramBase: 0x40020000,
  },
  {
    id: 5,
    name: 'ESP32-C3',
    flashWindows: [range(0x3c000000, 0x3c800000), range(0x42000000, 0x42800000)],
    dromBase: 0x3c000000,
    iromBase: 0x42000000,
    dramBase: 0x3fc88000,
    iramBase: 0x40380000,
  },
  {
    id: 9,
    name: 'ESP32-S3',
    flashWindows: [range(0x3c000000, 0x3e000000), range(0x42000000, 0x44000000)],
    dromBase: 0x3c000000,
    iromBase: 0x42000000,
    dramBase: 0x3fc88000,
    iramBase: 0x40378000,
  },
  {
    id: 12,
    name: 'ESP32-C2',
    flashWindows: [range(0x3c000000, 0x3c400000), range(0x42000000, 0x42400000)],
    dromBase: 0x3c000000,
    iromBase: 0x42000000,
    dramBase: 0x3fca0000,
    iramBase: 0x40380000,
  },
  {
    id: 13,
    name: 'ESP32-C6',
    flashWindows: [range(0x42000000, 0x43000000)],
    dromBase: 0x42800000,
    iromBase: 0x42000000,
    dramBase: 0x40808000,
    iramBase: 0x40800000,
  },
  {
    id: 16,
    name: 'ESP32-H2',
    flashWindows: [range(0x42000000, 0x43000000)],
    dromBase: 0x42800000,
    iromBase: 0x42000000,
    dramBase: 0x40808000,
    iramBase: 0x40800000,
  },
  {
    id: 18,
    name: 'ESP32-P4',
    flashWindows: [range(0x40000000, 0x44000000)],
    dromBase: 0x40800000,
    iromBase: 0x40000000,
    dramBase: 0x4ff10000,
    iramBase: 0x4ff00000,
  },
];

/** The chip with this header `chip_id`, or undefined for ids this module does not know. */
export function findChip(chipId: number): EspChip | undefined {
  return CHIPS.find((chip) => chip.id === chipId);
}

/** A readable chip name; unknown ids stay visible so users can report them. */
export function chipName(chipId: number): string {
  return findChip(chipId)?.name ?? `unknown chip (id ${chipId})`;
}

/**
 * Whether a segment loaded at `address` is mapped from flash on this chip.
 * Returns undefined when the chip is unknown, because then nothing can be said.
 */
export function isFlashMapped(chipId: number, address: number): boolean | undefined {
  const chip = findChip(chipId);
  if (chip === undefined) return undefined;
  return chip.flashWindows.some((w) => address >= w.start && address < w.end);
}
