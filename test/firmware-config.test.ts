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
