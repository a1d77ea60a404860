/**
 * The firmware's build configuration for authentication: the CMake check
 * that stops a build without an update key (run with `cmake -P`, as the
 * ESP-IDF build includes it), and the defaults a fresh project gets.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './support/node-red-process';

const CHECK = join(ROOT, 'firmware/main/auth_key_check.cmake');
const KEY = 'a1'.repeat(32);

function configure(values: Record<string, string>): { ok: boolean; output: string } {
  const defs = Object.entries(values).map(([k, v]) => `-D${k}=${v}`);
  const r = spawnSync('cmake', [...defs, '-P', CHECK], { encoding: 'utf8' });
  if (r.error) throw r.error;
  return { ok: r.status === 0, output: `${r.stdout}${r.stderr}`.replace(/\s+/g, ' ') };
}

describe('firmware configuration: the update key', function () {
  before(function () {
    const found = spawnSync('cmake', ['--version']).status === 0;
    if (!found && process.env.CI) throw new Error('cmake is missing: .ci/run installs it');
    if (!found) this.skip();
  });

  it('a build without a key stops, saying how to set one or to opt out', () => {
    const r = configure({ CONFIG_BLE_OTA_AUTH_KEY: '' });
    assert.equal(r.ok, false);
    assert.match(r.output, /No BLE OTA update key/);
    assert.match(r.output, /menuconfig > BLE OTA firmware > Update key/);
    assert.match(r.output, /CONFIG_BLE_OTA_ALLOW_UNAUTHENTICATED=y/);
  });

  it('a key that is not 64 hex digits stops the build, opt-out or not', () => {
    for (const allow of ['', 'y']) {
      for (const key of ['abc', 'g'.repeat(64), `${KEY}00`]) {
        const r = configure({ CONFIG_BLE_OTA_AUTH_KEY: key, CONFIG_BLE_OTA_ALLOW_UNAUTHENTICATED: allow });
        assert.equal(r.ok, false, `key of ${key.length} characters, opt-out '${allow}'`);
        assert.match(r.output, /must be 64 hex digits/);
        assert.ok(!r.output.includes(key), 'the message does not repeat the value');
      }
    }
  });

  it('a 64-digit key, or the explicit opt-out, builds', () => {
    assert.equal(configure({ CONFIG_BLE_OTA_AUTH_KEY: KEY }).ok, true);
    assert.equal(configure({ CONFIG_BLE_OTA_AUTH_KEY: KEY.toUpperCase() }).ok, true);
    assert.equal(configure({ CONFIG_BLE_OTA_AUTH_KEY: '', CONFIG_BLE_OTA_ALLOW_UNAUTHENTICATED: 'y' }).ok, true);
  });

  it('the default build has no key, no opt-out and no seed protocol, and the build includes the check', () => {
    const defaults = readFileSync(join(ROOT, 'firmware/sdkconfig.defaults'), 'utf8');
    assert.doesNotMatch(defaults, /CONFIG_BLE_OTA_(AUTH_KEY|ALLOW_UNAUTHENTICATED|SEED_PROTOCOL)/);
    const kconfig = readFileSync(join(ROOT, 'firmware/main/Kconfig.projbuild'), 'utf8');
    for (const [option, def] of [['BLE_OTA_AUTH_KEY', 'default ""'], ['BLE_OTA_ALLOW_UNAUTHENTICATED', 'default n'], ['BLE_OTA_SEED_PROTOCOL', 'default n']]) {
      const block = kconfig.split(/\n\s*config /).find((b) => b.startsWith(`${option}\n`) || b.startsWith(`config ${option}\n`));
      assert.ok(block, `${option} is in Kconfig.projbuild`);
      assert.ok(block.includes(def), `${option}: ${def}`);
    }
    assert.match(readFileSync(join(ROOT, 'firmware/main/CMakeLists.txt'), 'utf8'), /include\(\$\{CMAKE_CURRENT_LIST_DIR\}\/auth_key_check\.cmake\)/);
  });
});
