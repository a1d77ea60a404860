/**
 * The parser against the chips' memory maps: an image
 * relabelled for another chip is the wrong chip, naming the chip its
 * addresses belong to; every ESP-IDF chip with BLE is known (C5 and C61
 * included); an esptool --ram-only-header image (a Zephyr app) is told apart
 * from a second-stage bootloader; and the virtual ESP32's C table
 * (firmware/host/host_image.c) agrees with lib/image/esp-chips.ts.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ImageError } from '../lib/errors';
import { buildAppImage } from '../lib/image/app-image-builder';
import { chipsFitting, findChip, knownChips, segmentMismatch } from '../lib/image/esp-chips';
import { ESP_IMAGE_HEADER_SIZE, ESP_SEGMENT_HEADER_SIZE, checksumBlockEnd, espChecksum, parseEspImage } from '../lib/image/esp-image';
import { validateImage } from '../lib/image/validate';

const KB = 1024;
/** esp_chip_id_t of every chip with BLE that ESP-IDF supports (esp_app_format.h). */
const BLE_CHIPS: ReadonlyArray<[number, string]> = [
  [0, 'ESP32'],
  [9, 'ESP32-S3'],
  [12, 'ESP32-C2'],
  [5, 'ESP32-C3'],
  [23, 'ESP32-C5'],
  [13, 'ESP32-C6'],
  [20, 'ESP32-C61'],
  [16, 'ESP32-H2'],
];

function imageError(input: Buffer): ImageError {
  try {
    parseEspImage(input);
  } catch (err) {
    assert.ok(err instanceof ImageError, String(err));
    return err;
  }
  assert.fail('the image was accepted');
}

interface Seg {
  readonly address: number;
  readonly data: Buffer;
}

function segmentsOf(image: Buffer): Seg[] {
  const out: Seg[] = [];
  let offset = ESP_IMAGE_HEADER_SIZE;
  for (let i = 0; i < image[1]; i++) {
    const length = image.readUInt32LE(offset + 4);
    out.push({ address: image.readUInt32LE(offset), data: image.subarray(offset + 8, offset + 8 + length) });
    offset += ESP_SEGMENT_HEADER_SIZE + length;
  }
  return out;
}

/** An image with buildAppImage's header and these segments; `after` follows the checksum block unlisted. */
function assemble(template: Buffer, listed: readonly Seg[], after: readonly Seg[] = []): Buffer {
  const parts: Buffer[] = [Buffer.from(template.subarray(0, ESP_IMAGE_HEADER_SIZE))];
  parts[0][1] = listed.length;
  parts[0][23] = 0; // no digest, as esptool --ram-only-header writes
  const seg = (s: Seg): Buffer => {
    const head = Buffer.alloc(ESP_SEGMENT_HEADER_SIZE);
    head.writeUInt32LE(s.address, 0);
    head.writeUInt32LE(s.data.length, 4);
    return Buffer.concat([head, s.data]);
  };
  for (const s of listed) parts.push(seg(s));
  const end = parts.reduce((n, p) => n + p.length, 0);
  const block = Buffer.alloc(checksumBlockEnd(end) - end);
  block[block.length - 1] = espChecksum(listed.map((s) => s.data));
  parts.push(block);
  for (const s of after) parts.push(seg(s));
  return Buffer.concat(parts);
}

/** A RAM-only-header image as esptool elf2image --ram-only-header lays out a Zephyr app: RAM segments listed, flash ones after. */
function ramOnlyHeaderImage(chipId: number): Buffer {
  const chip = findChip(chipId);
  assert.ok(chip);
  const app = buildAppImage({ chipId, size: 24 * KB, hashAppended: false });
  const segs = segmentsOf(app);
  const ram = segs.filter((s) => !chip.flashWindows.some((w) => s.address >= w.start && s.address < w.end));
  const flash = segs.filter((s) => !ram.includes(s));
  // Zephyr's first segment is not an app descriptor.
  ram[0] = { address: ram[0].address, data: Buffer.alloc(ram[0].data.length, 0x11) };
  return assemble(app, ram, [{ address: 0, data: Buffer.alloc(64) }, ...flash]);
}

/** A RAM-only image whose DRAM segment starts with esp_bootloader_desc_t, as ESP-IDF v5.2+ bootloaders do. */
function bootloaderImage(chipId: number, magic = 0x50): Buffer {
  const chip = findChip(chipId);
  assert.ok(chip);
  const app = buildAppImage({ chipId, size: 2 * KB, hashAppended: false });
  const desc = Buffer.alloc(80);
  desc[0] = magic;
  desc.write('v5.4.1', 8);
  desc.write('Jan  1 2025 12:00:00', 40);
  return assemble(app, [
    { address: chip.dramBase, data: desc },
    { address: chip.iramBase, data: Buffer.alloc(1024, 0x22) },
  ]);
}

describe('ESP chips and their memory maps', () => {
  it('knows every chip with BLE that ESP-IDF supports, by its esp_chip_id_t', () => {
    for (const [id, name] of BLE_CHIPS) assert.equal(findChip(id)?.name, name, `chip id ${id}`);
    // Non-BLE chips stay known, so that their images are named and refused as such.
    assert.equal(findChip(2)?.name, 'ESP32-S2');
    assert.equal(findChip(18)?.name, 'ESP32-P4');
  });

  it('accepts ESP32-C5 and ESP32-C61 apps', () => {
    for (const chipId of [23, 20]) {
      const image = validateImage(buildAppImage({ chipId, size: 32 * KB, version: '5.6.1' }));
      assert.equal(image.chipName, chipId === 23 ? 'ESP32-C5' : 'ESP32-C61');
      assert.equal(image.appDesc.version, '5.6.1');
    }
  });

  it('an ESP32 image relabelled as any other chip is the wrong chip, naming the ESP32', () => {
    for (const chip of knownChips()) {
      if (chip.id === 0) continue;
      for (const hashAppended of [false, true]) {
        const err = imageError(buildAppImage({ chipId: 0, headerChipId: chip.id, hashAppended, size: 16 * KB }));
        assert.equal(err.code, 'IMAGE_WRONG_CHIP', `as ${chip.name}: ${err.message}`);
        assert.match(err.message, new RegExp(`header says ${chip.name}, but its segments sit at addresses of the ESP32 \\(`));
        assert.match(err.message, /relabelled/);
      }
    }
  });

  it('relabelled as the ESP32-S2 (whose flash window holds the ESP32 IRAM) it is the wrong chip, not a bad segment', () => {
    const err = imageError(buildAppImage({ chipId: 0, headerChipId: 2, hashAppended: false }));
    assert.equal(err.code, 'IMAGE_WRONG_CHIP');
    assert.match(err.message, /mapped from flash on the ESP32-S2/);
  });

  it('any relabelling the maps can tell is the wrong chip, naming every chip the addresses fit', () => {
    let told = 0;
    for (const real of knownChips()) {
      const image = buildAppImage({ chipId: real.id, size: 16 * KB, hashAppended: false });
      const segments = parseEspImage(image).segments;
      for (const label of knownChips()) {
        if (label.id === real.id) continue;
        const relabelled = Buffer.from(image);
        relabelled.writeUInt16LE(label.id, 12);
        if (segmentMismatch(label, segments) === undefined) {
          // Chips with one layout (C3/S3, C6/H2/C5/C61) cannot be told apart by address.
          assert.equal(parseEspImage(relabelled).chipId, label.id);
          continue;
        }
        const err = imageError(relabelled);
        assert.equal(err.code, 'IMAGE_WRONG_CHIP', `${real.name} as ${label.name}: ${err.message}`);
        for (const owner of chipsFitting(segments)) assert.ok(err.message.includes(owner.name), err.message);
        told++;
      }
    }
    assert.ok(told >= 70, `${told} relabellings told`);
  });

  it('damage that moves a segment out of every map is still a bad segment, and a broken digest still a bad hash', () => {
    const moved = buildAppImage({ chipId: 5, hashAppended: false });
    moved.writeUInt32LE(moved.readUInt32LE(ESP_IMAGE_HEADER_SIZE) + 0x100, ESP_IMAGE_HEADER_SIZE);
    assert.equal(imageError(moved).code, 'IMAGE_BAD_SEGMENT');
    const relabelledAfterHashing = buildAppImage({ chipId: 0 });
    relabelledAfterHashing.writeUInt16LE(5, 12);
    assert.equal(imageError(relabelledAfterHashing).code, 'IMAGE_BAD_HASH');
  });

  it('a RAM-only-header image (a Zephyr app) is diagnosed as such, not as a bootloader', () => {
    for (const chipId of [0, 5, 13]) {
      const err = imageError(ramOnlyHeaderImage(chipId));
      assert.equal(err.code, 'IMAGE_NO_APP_DESC', err.message);
      assert.match(err.message, /RAM-only header/);
      assert.match(err.message, /Zephyr/);
      assert.doesNotMatch(err.message, /bootloader\.bin/);
    }
  });

  it('a bootloader with esp_bootloader_desc_t is a bootloader at any size; a small RAM program without one is not', () => {
    for (const chipId of [0, 5, 23]) {
      const err = imageError(bootloaderImage(chipId));
      assert.equal(err.code, 'IMAGE_BOOTLOADER', err.message);
      assert.match(err.message, /second-stage bootloader/);
      const ramProgram = imageError(bootloaderImage(chipId, 0)); // no descriptor magic
      assert.equal(ramProgram.code, 'IMAGE_NO_APP_DESC', ramProgram.message);
      assert.match(ramProgram.message, /RAM only/);
    }
  });

  it("the virtual ESP32's chip table (firmware/host/host_image.c) agrees with esp-chips.ts", () => {
    const source = fs.readFileSync(path.resolve(__dirname, '../../firmware/host/host_image.c'), 'utf8');
    const table = /k_chips\[\] = \{([\s\S]*?)\n\};/.exec(source);
    assert.ok(table, 'k_chips found');
    const hex = '(0x[0-9A-Fa-f]+|0)u?';
    const row = new RegExp(`\\{ (\\d+), "([^"]+)", \\{ \\{ ${hex}, ${hex} \\}, \\{ ${hex}, ${hex} \\} \\},\\s*${hex}, ${hex}, ${hex}, ${hex} \\}`, 'g');
    const rows = [...table[1].matchAll(row)].map((m) => {
      const n = m.slice(3).map((v) => Number(v));
      const windows = [
        { start: n[0], end: n[1] },
        { start: n[2], end: n[3] },
      ].filter((w) => w.end !== 0);
      return { id: Number(m[1]), name: m[2], flashWindows: windows, dromBase: n[4], iromBase: n[5], dramBase: n[6], iramBase: n[7] };
    });
    const ts = knownChips().map((c) => ({
      id: c.id,
      name: c.name,
      flashWindows: c.flashWindows.map((w) => ({ start: w.start, end: w.end })),
      dromBase: c.dromBase,
      iromBase: c.iromBase,
      dramBase: c.dramBase,
      iramBase: c.iramBase,
    }));
    assert.deepEqual(rows, ts);
  });
});
