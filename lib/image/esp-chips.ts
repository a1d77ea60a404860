/**
 * Facts about the ESP32-family chips that the image parser and the synthetic
 * image builder both need: the chip id written into the image header, a
 * readable name, and where the flash cache and internal RAM sit in the
 * address space (used to tell apps, which run from flash, from RAM-only
 * images such as bootloaders).
 *
 * Chip ids are ESP-IDF's esp_chip_id_t
 * (components/bootloader_support/include/esp_app_format.h); address ranges
 * are ESP-IDF's components/soc/<chip>/include/soc/soc.h (SOC_IROM_*,
 * SOC_DROM_*, SOC_IRAM_*, SOC_DRAM_*, SOC_RTC_*), the ranges the bootloader's
 * should_map() and verify_load_addresses() (esp_image_format.c) test. The
 * parser uses them to tell which chip an image's segments were linked for;
 * firmware/host/host_image.c holds the same flash windows and bases for the
 * virtual ESP32 (test/esp-chips.test.ts compares the two).
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
  /** Internal RAM a segment may be loaded into: IRAM, DRAM and RTC memory. */
  readonly ram: readonly AddressRange[];
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
    // SOC_DRAM, SOC_IRAM, SOC_RTC_IRAM/DRAM/DATA; plus SOC_CACHE_PRO_LOW..SOC_CACHE_APP_HIGH,
    // where the second-stage bootloader loads its iram_loader_seg (bootloader.memory.ld.in).
    ram: [range(0x3ffae000, 0x40000000), range(0x40070000, 0x400aa000), range(0x400c0000, 0x400c2000), range(0x3ff80000, 0x3ff82000), range(0x50000000, 0x50002000)],
    dromBase: 0x3f400000,
    iromBase: 0x400d0000,
    dramBase: 0x3ffb0000,
    iramBase: 0x40080000,
  },
  {
    id: 2,
    name: 'ESP32-S2',
    flashWindows: [range(0x3f000000, 0x3ff80000), range(0x40080000, 0x40800000)],
    ram: [range(0x3ffb0000, 0x40000000), range(0x40020000, 0x40072000), range(0x3ff9e000, 0x3ffa0000), range(0x50000000, 0x50002000)],
    dromBase: 0x3f000000,
    iromBase: 0x40080000,
    dramBase: 0x3ffb0000,
    iramBase: 0x40020000,
  },
  {
    id: 5,
    name: 'ESP32-C3',
    flashWindows: [range(0x3c000000, 0x3c800000), range(0x42000000, 0x42800000)],
    ram: [range(0x3fc80000, 0x3fce0000), range(0x4037c000, 0x403e0000), range(0x50000000, 0x50002000)],
    dromBase: 0x3c000000,
    iromBase: 0x42000000,
    dramBase: 0x3fc88000,
    iramBase: 0x40380000,
  },
  {
    id: 9,
    name: 'ESP32-S3',
    flashWindows: [range(0x3c000000, 0x3e000000), range(0x42000000, 0x44000000)],
    ram: [range(0x3fc88000, 0x3fd00000), range(0x40370000, 0x403e0000), range(0x600fe000, 0x60100000), range(0x50000000, 0x50002000)],
    dromBase: 0x3c000000,
    iromBase: 0x42000000,
    dramBase: 0x3fc88000,
    iramBase: 0x40378000,
  },
  {
    id: 12,
    name: 'ESP32-C2',
    flashWindows: [range(0x3c000000, 0x3c400000), range(0x42000000, 0x42400000)],
    ram: [range(0x3fca0000, 0x3fce0000), range(0x4037c000, 0x403c0000)],
    dromBase: 0x3c000000,
    iromBase: 0x42000000,
    dramBase: 0x3fca0000,
    iramBase: 0x40380000,
  },
  {
    id: 13,
    name: 'ESP32-C6',
    flashWindows: [range(0x42000000, 0x43000000)],
    ram: [range(0x40800000, 0x40880000), range(0x50000000, 0x50004000)],
    dromBase: 0x42800000,
    iromBase: 0x42000000,
    dramBase: 0x40808000,
    iramBase: 0x40800000,
  },
  {
    id: 16,
    name: 'ESP32-H2',
    flashWindows: [range(0x42000000, 0x43000000)],
    ram: [range(0x40800000, 0x40850000), range(0x50000000, 0x50001000)],
    dromBase: 0x42800000,
    iromBase: 0x42000000,
    dramBase: 0x40808000,
    iramBase: 0x40800000,
  },
  {
    id: 18,
    name: 'ESP32-P4',
    flashWindows: [range(0x40000000, 0x44000000), range(0x48000000, 0x4c000000)],
    ram: [range(0x4ff00000, 0x4ffc0000), range(0x50108000, 0x50110000)],
    dromBase: 0x40800000,
    iromBase: 0x40000000,
    dramBase: 0x4ff10000,
    iramBase: 0x4ff00000,
  },
  {
    // SOC_IROM_HIGH is SOC_IROM_LOW + 32 MiB; DROM shares the window.
    id: 20,
    name: 'ESP32-C61',
    flashWindows: [range(0x42000000, 0x44000000)],
    ram: [range(0x40800000, 0x40850000)],
    dromBase: 0x42800000,
    iromBase: 0x42000000,
    dramBase: 0x40808000,
    iramBase: 0x40800000,
  },
  {
    id: 23,
    name: 'ESP32-C5',
    flashWindows: [range(0x42000000, 0x44000000)],
    ram: [range(0x40800000, 0x40860000), range(0x50000000, 0x50004000)],
    dromBase: 0x42800000,
    iromBase: 0x42000000,
    dramBase: 0x40808000,
    iramBase: 0x40800000,
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

/** Every chip this module knows, in chip id order. */
export function knownChips(): readonly EspChip[] {
  return CHIPS;
}

/** What the address check needs to know of a segment. */
export interface PlacedSegment {
  readonly loadAddress: number;
  readonly length: number;
  /** File offset of the segment's data. */
  readonly dataOffset: number;
}

/** Below this ESP-IDF loads nothing (should_load()): esptool's padding segments sit at address 0. */
const NOT_LOADED_BELOW = 0x10000000;
/** The flash MMU page: a mapped segment keeps its address's offset within it in the file. */
const MMU_PAGE = 0x10000;

function inRanges(ranges: readonly AddressRange[], address: number): boolean {
  return ranges.some((r) => address >= r.start && address < r.end);
}

/**
 * Why these segments cannot have been linked for this chip, or undefined when
 * they fit its memory map: each one lies in its internal RAM, or in a flash
 * window at its address's offset within the 64 KiB MMU page (a segment at an
 * address another chip maps from flash sits elsewhere in the file). Empty
 * segments and reserved low addresses say nothing and are skipped.
 */
export function segmentMismatch(chip: EspChip, segments: readonly PlacedSegment[]): string | undefined {
  for (const [index, seg] of segments.entries()) {
    if (seg.length === 0 || seg.loadAddress < NOT_LOADED_BELOW) continue;
    const at = `segment ${index + 1} at 0x${seg.loadAddress.toString(16).toUpperCase()}`;
    if (inRanges(chip.flashWindows, seg.loadAddress)) {
      if (seg.dataOffset % MMU_PAGE !== seg.loadAddress % MMU_PAGE) {
        return `${at} would be mapped from flash on the ${chip.name}, but not from file offset 0x${seg.dataOffset.toString(16)}`;
      }
    } else if (!inRanges(chip.ram, seg.loadAddress)) {
      return `${at} is in no memory of the ${chip.name}`;
    }
  }
  return undefined;
}

/** The known chips whose memory map fits every segment. */
export function chipsFitting(segments: readonly PlacedSegment[]): EspChip[] {
  return CHIPS.filter((chip) => segmentMismatch(chip, segments) === undefined);
}

/** Whether a segment loaded at `address` lies in this chip's internal RAM. */
export function isInRam(chip: EspChip, address: number): boolean {
  return inRanges(chip.ram, address);
}
