/**
 * The virtual ESP32 binary Node-RED runs is built into, and run from, a
 * folder only its user controls: a binary another local user planted in
 * the cache, or a cache others may write to, is refused and never run.
 */
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { buildFailure, sourceHash } from '../lib/virtual/build';

const ROOT = resolve(__dirname, '../..');

/** Starts a virtual ESP32 in a fresh Node.js process, as a flow would; resolves with what it printed. */
function startVirtualDevice(env: Record<string, string>): Promise<{ ok: boolean; output: string }> {
  const script = `
    const { sharedVirtualRadio } = require(${JSON.stringify(join(ROOT, 'dist/lib/virtual/virtual-radio'))});
    sharedVirtualRadio().addDevice({ name: 'esp32-private' }).then(
      () => sharedVirtualRadio().stopAll().then(() => console.log('STARTED')),
      (err) => { console.log('REFUSED ' + err.code + ': ' + err.message); process.exitCode = 1; },
    );`;
  return new Promise((done) => {
    execFile(process.execPath, ['-e', script], { env: { ...process.env, ...env }, timeout: 120_000 }, (error, stdout, stderr) =>
      done({ ok: !error && stdout.includes('STARTED'), output: stdout + stderr }),
    );
  });
}

describe('the virtual ESP32 binary, built and run privately', function () {
  this.timeout(150_000);
  let dir: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ble-ota-private-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** A binary at the exact place the cache would hold it, which, if run, leaves a file behind. */
  function plant(root: string): { folder: string; binary: string; ran: string } {
    const folder = join(root, sourceHash());
    mkdirSync(folder, { recursive: true });
    const ran = join(dir, 'planted-binary-ran');
    const binary = join(folder, 'virtual-esp32');
    writeFileSync(binary, `#!/bin/sh\ntouch ${ran}\nsleep 60\n`, { mode: 0o755 });
    return { folder, binary, ran };
  }

  it("by default, is built into an owner-only folder in the user's cache, not the shared temporary folder", async () => {
    const home = join(dir, 'home');
    mkdirSync(home);
    const result = await startVirtualDevice({ HOME: home, XDG_CACHE_HOME: '', BLE_OTA_VIRTUAL_CACHE: '' });
    assert.ok(result.ok, result.output);
    const root = join(home, '.cache', 'node-red-contrib-esp32-ble-ota', 'virtual-esp32');
    for (const path of [root, join(root, sourceHash())]) assert.equal(statSync(path).mode & 0o777, 0o700, path);
    assert.equal(statSync(join(root, sourceHash(), 'virtual-esp32')).mode & 0o777, 0o700);
  });

  it('refuses a cache that others may write to, and does not run the binary planted there', async () => {
    const root = join(dir, 'cache');
    const planted = plant(root);
    chmodSync(root, 0o700);
    chmodSync(planted.folder, 0o777);
    const result = await startVirtualDevice({ BLE_OTA_VIRTUAL_CACHE: root });
    assert.ok(!result.ok, result.output);
    assert.match(result.output, /[Rr]efusing to run the virtual ESP32: .* may be written by other users \(mode 777\)/);
    assert.ok(!existsSync(planted.ran), 'the planted binary ran');
  });

  it('refuses a world-writable binary in a private folder', async () => {
    const root = join(dir, 'cache');
    const planted = plant(root);
    chmodSync(root, 0o700);
    chmodSync(planted.folder, 0o700);
    chmodSync(planted.binary, 0o777);
    const result = await startVirtualDevice({ BLE_OTA_VIRTUAL_CACHE: root });
    assert.match(result.output, /[Rr]efusing to run the virtual ESP32: .*virtual-esp32 may be written by other users/);
    assert.ok(!existsSync(planted.ran), 'the planted binary ran');
  });

  it('refuses a binary another user owns, even with owner-only modes', async function () {
    // Only root can give a file to another user; as anyone else, the modes above are what another user could plant.
    if (process.getuid?.() !== 0) this.skip();
    const root = join(dir, 'cache');
    const planted = plant(root);
    chmodSync(root, 0o700);
    chmodSync(planted.folder, 0o755);
    chownSync(planted.folder, 4242, 4242);
    chownSync(planted.binary, 4242, 4242);
    const result = await startVirtualDevice({ BLE_OTA_VIRTUAL_CACHE: root });
    assert.match(result.output, /[Rr]efusing to run the virtual ESP32: .* belongs to another user \(uid 4242, not 0\)/);
    assert.ok(!existsSync(planted.ran), 'the planted binary ran');
  });
});

describe('the virtual ESP32 build, when it cannot be made', () => {
  it('says what to install: the tools, or the header the compiler did not find', () => {
    assert.match(buildFailure(true, ''), /needs `make`, a C compiler \(cc\) and the zlib and OpenSSL 3 headers: .*apt install build-essential zlib1g-dev libssl-dev/);
    assert.match(buildFailure(false, 'make: cc: No such file or directory'), /apt install build-essential zlib1g-dev libssl-dev/);
    const noZlib = 'ble_ota_v2.c:12:10: fatal error: zlib.h: No such file or directory\ncompilation terminated.\nmake: *** [Makefile:40: build/ble_ota_v2.o] Error 1';
    assert.equal(
      buildFailure(false, noZlib),
      'The virtual ESP32 is built from C sources on first use and needs the zlib headers (zlib.h was not found): install them (e.g. `apt install zlib1g-dev`).',
    );
    const noSsl = 'virtual_esp32.c:20:10: fatal error: openssl/evp.h: No such file or directory';
    assert.match(buildFailure(false, noSsl), /needs the OpenSSL 3 headers \(openssl\/evp\.h was not found\): .*apt install libssl-dev/);
    // Anything else: make's last lines, as they are.
    assert.equal(buildFailure(false, 'a\nb\nc\nd\ne\nf: error 2\n'), 'Building the virtual ESP32 failed: b | c | d | e | f: error 2');
  });
});
