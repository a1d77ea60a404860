/**
 * The firmware's build configuration for security: the CMake check that
 * stops a build which would take unsigned images, or that has no signing
 * key (run with `cmake -P`, as the ESP-IDF build includes it); the defaults
 * a fresh project gets; and no update key anywhere in the build inputs (it
 * lives in the key partition, written over USB).
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './support/node-red-process';

const CHECK = join(ROOT, 'firmware/main/security_check.cmake');

function configure(values: Record<string, string>): { ok: boolean; output: string } {
  const defs = Object.entries(values).map(([k, v]) => `-D${k}=${v}`);
  const r = spawnSync('cmake', [...defs, '-P', CHECK], { encoding: 'utf8' });
  if (r.error) throw r.error;
  return { ok: r.status === 0, output: `${r.stdout}${r.stderr}`.replace(/\s+/g, ' ') };
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const full = join(dir, entry);
    if (entry === 'build' || entry === 'fuzz_corpus') return [];
    return statSync(full).isDirectory() ? filesUnder(full) : [full];
  });
}

describe('firmware configuration: signed images, and no key in the build', function () {
  let project: string;

  before(function () {
    const found = spawnSync('cmake', ['--version']).status === 0;
    if (!found && process.env.CI) throw new Error('cmake is missing: .ci/run installs it');
    if (!found) this.skip();
    project = mkdtempSync(join(tmpdir(), 'ble-ota-project-'));
  });

  const signed = { CONFIG_SECURE_SIGNED_ON_UPDATE: 'y', CONFIG_SECURE_BOOT_BUILD_SIGNED_BINARIES: 'y', CONFIG_SECURE_BOOT_SIGNING_KEY: 'secure_boot_signing_key.pem' };

  it('a build that would take unsigned images stops, saying how to turn verification back on or to opt out', () => {
    const r = configure({});
    assert.equal(r.ok, false);
    assert.match(r.output, /Signed app verification is off/);
    assert.match(r.output, /Require signed app images/);
    assert.match(r.output, /CONFIG_BLE_OTA_ALLOW_UNSIGNED_IMAGES=y/);
    assert.equal(configure({ CONFIG_BLE_OTA_ALLOW_UNSIGNED_IMAGES: 'y' }).ok, true);
  });

  it('a signed build without its signing key stops, saying how to make one; with the key it goes on', () => {
    const r = configure({ ...signed, BLE_OTA_PROJECT_DIR: project });
    assert.equal(r.ok, false);
    assert.match(r.output, /No signing key at/);
    assert.match(r.output, /esp32-ble-ota keygen --out secure_boot_signing_key\.pem/);
    assert.match(r.output, /never needs to be on the Node-RED machine/);
    writeFileSync(join(project, 'secure_boot_signing_key.pem'), 'a key');
    assert.equal(configure({ ...signed, BLE_OTA_PROJECT_DIR: project }).ok, true);
    // Signing outside the build (CONFIG_SECURE_BOOT_BUILD_SIGNED_BINARIES=n) needs no key here.
    assert.equal(configure({ CONFIG_SECURE_SIGNED_ON_UPDATE: 'y' }).ok, true);
  });

  it("a signing key of another type than the chip's scheme verifies stops the build, naming the key to make", () => {
    // The ESP32-C2 verifies only ECDSA (ESP-IDF picks that scheme there); ESP-IDF would sign
    // with an RSA key all the same, and the device would refuse every update.
    const dir = mkdtempSync(join(tmpdir(), 'ble-ota-scheme-'));
    const ecdsa = { ...signed, BLE_OTA_PROJECT_DIR: dir, CONFIG_SECURE_SIGNED_APPS_ECDSA_V2_SCHEME: 'y' };
    const missing = configure(ecdsa);
    assert.equal(missing.ok, false);
    assert.match(missing.output, /ECDSA P-256 for this chip/);
    assert.match(missing.output, /esp32-ble-ota keygen --scheme ecdsa256 --out secure_boot_signing_key\.pem/);

    const key = join(dir, 'secure_boot_signing_key.pem');
    writeFileSync(key, '-----BEGIN RSA PRIVATE KEY-----\nMIIG\n-----END RSA PRIVATE KEY-----\n');
    const rsaForEcdsa = configure(ecdsa);
    assert.equal(rsaForEcdsa.ok, false);
    assert.match(rsaForEcdsa.output, /is an RSA key, but this chip verifies ECDSA P-256 signatures/);
    assert.match(rsaForEcdsa.output, /keygen --scheme ecdsa256/);
    assert.equal(configure({ ...signed, BLE_OTA_PROJECT_DIR: dir }).ok, true);

    writeFileSync(key, '-----BEGIN EC PARAMETERS-----\nBggq\n-----END EC PARAMETERS-----\n-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----\n');
    assert.equal(configure(ecdsa).ok, true);
    const ecForRsa = configure({ ...signed, BLE_OTA_PROJECT_DIR: dir });
    assert.equal(ecForRsa.ok, false);
    assert.match(ecForRsa.output, /is an EC key, but this chip verifies RSA-3072 signatures/);
  });

  it('the default build verifies signed images, needs a provisioned key and leaves the seed protocol off', () => {
    const defaults = readFileSync(join(ROOT, 'firmware/sdkconfig.defaults'), 'utf8');
    for (const line of [
      'CONFIG_SECURE_SIGNED_APPS_NO_SECURE_BOOT=y',
      'CONFIG_SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT=y',
      'CONFIG_SECURE_SIGNED_APPS_RSA_SCHEME=y',
      'CONFIG_SECURE_BOOT_BUILD_SIGNED_BINARIES=y',
    ]) {
      assert.ok(defaults.split('\n').includes(line), line);
    }
    assert.match(readFileSync(join(ROOT, 'firmware/sdkconfig.defaults.esp32'), 'utf8'), /^CONFIG_ESP32_REV_MIN_3=y$/m);
    assert.doesNotMatch(defaults, /CONFIG_BLE_OTA_(ALLOW_UNAUTHENTICATED|ALLOW_UNSIGNED_IMAGES|SEED_PROTOCOL)/);
    const kconfig = readFileSync(join(ROOT, 'firmware/main/Kconfig.projbuild'), 'utf8');
    for (const option of ['BLE_OTA_ALLOW_UNAUTHENTICATED', 'BLE_OTA_ALLOW_UNSIGNED_IMAGES', 'BLE_OTA_SEED_PROTOCOL']) {
      const block = kconfig.split(/\n\s*config /).find((b) => b.startsWith(`${option}\n`));
      assert.ok(block, `${option} is in Kconfig.projbuild`);
      assert.ok(block.includes('default n'), `${option}: default n`);
    }
    assert.match(readFileSync(join(ROOT, 'firmware/main/CMakeLists.txt'), 'utf8'), /include\(\$\{CMAKE_CURRENT_LIST_DIR\}\/security_check\.cmake\)/);
    assert.match(readFileSync(join(ROOT, 'firmware/partitions.csv'), 'utf8'), /^ble_ota_key,\s*0x40,\s*0x00,/m);
  });

  it('no firmware build input can carry an update key: no Kconfig option, no sdkconfig value, no key in the sources', () => {
    const kconfig = readFileSync(join(ROOT, 'firmware/main/Kconfig.projbuild'), 'utf8');
    assert.doesNotMatch(kconfig, /config BLE_OTA_AUTH_KEY\b|string "Update key/);
    for (const file of filesUnder(join(ROOT, 'firmware'))) {
      const text = readFileSync(file, 'latin1');
      assert.doesNotMatch(text, /CONFIG_BLE_OTA_AUTH_KEY/, `${file} reads a key from the configuration`);
    }
    // main.c takes the key from the partition, and only there.
    const main = readFileSync(join(ROOT, 'firmware/main/main.c'), 'utf8');
    assert.match(main, /esp_partition_read\(part, 0, record/);
  });
});

/**
 * The ESP-IDF options the firmware sets (sdkconfig.defaults*) or reads (its sources, CMake
 * and Kconfig), as ESP-IDF v5.3 and v5.5 define them: checked against both releases'
 * Kconfig files, every target the defaults name. The build ignores an option it does not
 * know, and one set outside its range or hidden from the user, without a word: an option
 * missing here is one nobody checked yet. `target`: defined for that chip only; `choice`:
 * the Kconfig choice it is a member of (one member at most is `y`); `range`: what Kconfig
 * allows on every chip; `hidden`: derived by ESP-IDF, a default cannot set it.
 */
interface IdfOption {
  kconfig: string;
  target?: string;
  choice?: string;
  range?: [number, number];
  hidden?: boolean;
}
const NIMBLE = 'components/bt/host/nimble/Kconfig.in';
const BOOTLOADER = 'components/bootloader/Kconfig.projbuild';
const ESP32_CONTROLLER = 'components/bt/controller/esp32/Kconfig.in';
const IDF_OPTIONS: Record<string, IdfOption> = {
  BT_ENABLED: { kconfig: 'components/bt/Kconfig' },
  BT_BLUEDROID_ENABLED: { kconfig: 'components/bt/Kconfig', choice: 'BT_HOST' },
  BT_NIMBLE_ENABLED: { kconfig: 'components/bt/Kconfig', choice: 'BT_HOST' },
  BTDM_CTRL_MODE_BLE_ONLY: { kconfig: ESP32_CONTROLLER, target: 'esp32', choice: 'BTDM_CTRL_MODE' },
  BTDM_CTRL_MODE_BR_EDR_ONLY: { kconfig: ESP32_CONTROLLER, target: 'esp32', choice: 'BTDM_CTRL_MODE' },
  BTDM_CTRL_MODE_BTDM: { kconfig: ESP32_CONTROLLER, target: 'esp32', choice: 'BTDM_CTRL_MODE' },
  BTDM_CTRL_BLE_MAX_CONN: { kconfig: ESP32_CONTROLLER, target: 'esp32', range: [1, 9] },
  // 1 to 2 on the ESP32-C2, up to 9, 35 or 70 elsewhere.
  BT_NIMBLE_MAX_CONNECTIONS: { kconfig: NIMBLE, range: [1, 2] },
  BT_NIMBLE_TRANSPORT_ACL_FROM_LL_COUNT: { kconfig: NIMBLE },
  BT_NIMBLE_ATT_PREFERRED_MTU: { kconfig: NIMBLE },
  BT_NIMBLE_EXT_ADV: { kconfig: NIMBLE },
  BT_NIMBLE_HOST_TASK_STACK_SIZE: { kconfig: NIMBLE },
  BT_NIMBLE_GAP_DEVICE_NAME_MAX_LEN: { kconfig: NIMBLE },
  BT_NIMBLE_LL_CFG_FEAT_LE_2M_PHY: { kconfig: NIMBLE },
  ESP_MAIN_TASK_STACK_SIZE: { kconfig: 'components/esp_system/Kconfig' },
  // v5.5 moved it to components/bootloader/Kconfig.app_rollback.
  BOOTLOADER_APP_ROLLBACK_ENABLE: { kconfig: BOOTLOADER },
  SECURE_SIGNED_APPS_NO_SECURE_BOOT: { kconfig: BOOTLOADER },
  SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT: { kconfig: BOOTLOADER },
  SECURE_SIGNED_ON_UPDATE: { kconfig: BOOTLOADER, hidden: true },
  SECURE_SIGNED_APPS_RSA_SCHEME: { kconfig: BOOTLOADER, choice: 'SECURE_SIGNED_APPS_SCHEME' },
  SECURE_SIGNED_APPS_ECDSA_V2_SCHEME: { kconfig: BOOTLOADER, choice: 'SECURE_SIGNED_APPS_SCHEME' },
  SECURE_BOOT_ECDSA_KEY_LEN_192_BITS: { kconfig: BOOTLOADER, choice: 'SECURE_BOOT_ECDSA_KEY_LEN_SIZE' },
  SECURE_BOOT_BUILD_SIGNED_BINARIES: { kconfig: BOOTLOADER },
  SECURE_BOOT_SIGNING_KEY: { kconfig: BOOTLOADER },
  SECURE_BOOT_V2_ENABLED: { kconfig: BOOTLOADER, choice: 'SECURE_BOOT_VERSION' },
  SPI_FLASH_WRITE_CHUNK_SIZE: { kconfig: 'components/spi_flash/Kconfig', range: [256, 8192] },
  ESPTOOLPY_FLASHSIZE_4MB: { kconfig: 'components/esptool_py/Kconfig.projbuild', choice: 'ESPTOOLPY_FLASHSIZE' },
  PARTITION_TABLE_CUSTOM: { kconfig: 'components/partition_table/Kconfig.projbuild', choice: 'PARTITION_TABLE_TYPE' },
  PARTITION_TABLE_CUSTOM_FILENAME: { kconfig: 'components/partition_table/Kconfig.projbuild' },
  PARTITION_TABLE_FILENAME: { kconfig: 'components/partition_table/Kconfig.projbuild' },
  ESP32_REV_MIN_3: { kconfig: 'components/esp_hw_support/port/esp32/Kconfig.hw_support', target: 'esp32', choice: 'ESP32_REV_MIN' },
  IDF_TARGET: { kconfig: 'Kconfig', hidden: true },
  IDF_FIRMWARE_CHIP_ID: { kconfig: 'Kconfig', hidden: true },
  ...Object.fromEntries(
    ['ESP32', 'ESP32S2', 'ESP32S3', 'ESP32C2', 'ESP32C3', 'ESP32C6', 'ESP32H2', 'ESP32P4'].map((chip) => [`IDF_TARGET_${chip}`, { kconfig: 'Kconfig', hidden: true }]),
  ),
};
const IDF_TARGETS = ['esp32', 'esp32s2', 'esp32s3', 'esp32c2', 'esp32c3', 'esp32c5', 'esp32c6', 'esp32c61', 'esp32h2', 'esp32p4'];

const FIRMWARE = join(ROOT, 'firmware');

/** The firmware's ESP-IDF build inputs: what `idf.py build` reads of this project. */
function firmwareBuildInputs(): string[] {
  const main = readdirSync(join(FIRMWARE, 'main'))
    .filter((f) => /\.(c|h|cmake)$|^CMakeLists\.txt$|^Kconfig\.projbuild$/.test(f))
    .map((f) => join(FIRMWARE, 'main', f));
  const defaults = readdirSync(FIRMWARE)
    .filter((f) => f.startsWith('sdkconfig.defaults'))
    .map((f) => join(FIRMWARE, f));
  return [...defaults, join(FIRMWARE, 'CMakeLists.txt'), ...main, ...filesUnder(join(FIRMWARE, 'components'))];
}

/** NAME=value lines of an sdkconfig file, without CONFIG_ and quotes. */
function sdkconfigValues(file: string): Map<string, string> {
  const values = new Map<string, string>();
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^CONFIG_([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) values.set(m[1], m[2].replace(/^"(.*)"$/, '$1'));
  }
  return values;
}

interface Partition {
  name: string;
  type: string;
  subtype: string;
  offset: number;
  size: number;
}

function partitionTable(): Partition[] {
  return readFileSync(join(FIRMWARE, 'partitions.csv'), 'utf8')
    .split('\n')
    .map((line) => line.replace(/#.*/, '').trim())
    .filter((line) => line !== '')
    .map((line) => {
      const [name, type, subtype, offset, size] = line.split(',').map((f) => f.trim());
      return { name, type, subtype, offset: Number(offset), size: Number(size) };
    });
}

describe('firmware configuration: what ESP-IDF takes of it', function () {
  it('every ESP-IDF option the firmware sets or reads is one ESP-IDF defines, and every own option is in Kconfig.projbuild', () => {
    const kconfig = readFileSync(join(FIRMWARE, 'main/Kconfig.projbuild'), 'utf8');
    const own = new Set([...kconfig.matchAll(/^\s*config (BLE_OTA_[A-Z0-9_]+)$/gm)].map((m) => m[1]));
    const unknown = new Set<string>();
    for (const file of firmwareBuildInputs()) {
      for (const m of readFileSync(file, 'utf8').matchAll(/\bCONFIG_([A-Z0-9_]+)/g)) {
        const name = m[1];
        if (name.startsWith('BLE_OTA_') ? !own.has(name) : !(name in IDF_OPTIONS)) unknown.add(`${name} (${file.slice(ROOT.length + 1)})`);
      }
    }
    assert.deepEqual([...unknown], [], "options no one checked: find each in ESP-IDF's Kconfig files (v5.3 and the latest v5), fix its spelling, and add it to IDF_OPTIONS");
  });

  it('the defaults set each option within its range, one member of a choice, no derived option, and chip-only options only for that chip', () => {
    const base = sdkconfigValues(join(FIRMWARE, 'sdkconfig.defaults'));
    const targetFiles = readdirSync(FIRMWARE).filter((f) => f.startsWith('sdkconfig.defaults.'));
    assert.ok(targetFiles.length > 0);
    for (const file of ['sdkconfig.defaults', ...targetFiles]) {
      const target = file.split('.')[2];
      if (target !== undefined) assert.ok(IDF_TARGETS.includes(target), `${file}: ${target} is no ESP-IDF target`);
      for (const [name, value] of sdkconfigValues(join(FIRMWARE, file))) {
        const option = IDF_OPTIONS[name];
        if (option === undefined) continue; // the test above names it
        assert.ok(!option.hidden, `${file}: CONFIG_${name} is derived by ESP-IDF; setting it changes nothing`);
        // The base file may set an option of the original ESP32 (ignored elsewhere); a chip's file may not set another chip's.
        if (target !== undefined && option.target !== undefined) {
          assert.equal(target, option.target, `${file}: CONFIG_${name} exists on the ${option.target} only`);
        }
        if (option.range) {
          const n = Number(value);
          assert.ok(Number.isInteger(n) && n >= option.range[0] && n <= option.range[1], `${file}: CONFIG_${name}=${value} is outside ${option.range.join(' to ')}`);
        }
      }
    }
    for (const target of IDF_TARGETS) {
      const file = join(FIRMWARE, `sdkconfig.defaults.${target}`);
      const values = new Map([...base, ...(targetFiles.includes(`sdkconfig.defaults.${target}`) ? sdkconfigValues(file) : [])]);
      const chosen = new Map<string, string[]>();
      for (const [name, value] of values) {
        const choice = IDF_OPTIONS[name]?.choice;
        if (choice !== undefined && value === 'y') chosen.set(choice, [...(chosen.get(choice) ?? []), name]);
      }
      for (const [choice, members] of chosen) assert.equal(members.length, 1, `${target}: ${members.join(', ')} are all set in choice ${choice}`);
    }
  });

  it("the partition table keeps ESP-IDF's rules and fits the flash size the defaults set", () => {
    const defaults = sdkconfigValues(join(FIRMWARE, 'sdkconfig.defaults'));
    const sizes = [...defaults].filter(([name, value]) => /^ESPTOOLPY_FLASHSIZE_\d+MB$/.test(name) && value === 'y');
    assert.equal(sizes.length, 1, 'one flash size');
    const flash = Number(/(\d+)MB$/.exec(sizes[0][0])?.[1]) * 1024 * 1024;
    // The table itself: one 4 KB sector at CONFIG_PARTITION_TABLE_OFFSET (0x8000 unless set).
    const tableEnd = Number(defaults.get('PARTITION_TABLE_OFFSET') ?? 0x8000) + 0x1000;
    const table = partitionTable();
    let end = tableEnd;
    for (const p of table) {
      const where = `${p.name} at 0x${p.offset.toString(16)}`;
      assert.ok(Number.isInteger(p.offset) && Number.isInteger(p.size) && p.size > 0, `${where}: offset and size`);
      assert.ok(Buffer.byteLength(p.name) <= 16, `${where}: a name of at most 16 bytes (the table's field)`);
      // gen_esp32part.py: app partitions on 64 KB, the others on 4 KB; sizes in whole 4 KB sectors.
      assert.equal(p.offset % (p.type === 'app' ? 0x10000 : 0x1000), 0, `${where}: misaligned`);
      assert.equal(p.size % 0x1000, 0, `${where}: size not in whole sectors`);
      assert.ok(p.offset >= end, `${where}: overlaps what comes before it`);
      if (/^0x[0-9a-f]+$/i.test(p.type)) assert.ok(Number(p.type) >= 0x40 && Number(p.type) <= 0xfe, `${where}: a custom type is 0x40 to 0xFE`);
      end = p.offset + p.size;
    }
    assert.ok(end <= flash, `the table ends at 0x${end.toString(16)}, past the ${flash / 1024 / 1024} MB flash`);
    const otadata = table.filter((p) => p.type === 'data' && p.subtype === 'ota');
    assert.equal(otadata.length, 1, 'one otadata partition');
    assert.equal(otadata[0].size, 0x2000, 'otadata is 0x2000 bytes');
    const nvs = table.filter((p) => p.type === 'data' && p.subtype === 'nvs');
    assert.ok(nvs.length === 1 && nvs[0].size >= 0x3000, 'an NVS partition of at least 0x3000 bytes (the confirm flag lives there)');
    const apps = table.filter((p) => p.type === 'app');
    assert.deepEqual(
      apps.map((p) => p.subtype),
      ['ota_0', 'ota_1'],
      'two OTA slots and no factory app',
    );
    assert.equal(apps[0].size, apps[1].size, 'both slots hold the same image');
  });
});
