/**
 * The command-line tool (lib/cli), run as a user runs it: `node
 * dist/lib/cli/main.js ...` in a child process, against virtual ESP32s
 * (--virtual) and, without --virtual, against this machine's Bluetooth.
 * The argument parser and the progress display are also checked in process.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseCommandLine, usage, UsageError } from '../lib/cli/args';
import { EXIT_CANCELLED, signalHandler } from '../lib/cli/main';
import { formatResult } from '../lib/cli/output';
import { ProgressReporter } from '../lib/cli/progress';
import type { Progress, UpdateResult } from '../lib/client/ota-client';
import { buildAppImage } from '../lib/image/app-image-builder';
import { parseEspImage } from '../lib/image/esp-image';
import { generateSigningKey, readSignatureSector, signatureSectorOffset, signImage, signingKeyDigest, verifyImageSignature } from '../lib/image/signature';
import { explainLoadError, systemBluetoothProblem } from '../lib/noble-loader';
import { ensureVirtualEsp32 } from '../lib/virtual/build';
import { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { deviceKey } from '../lib/client/session';
import { OWNER, ownedVirtualEnv, signedImage } from './support/owner';

const MAIN = join(__dirname, '..', 'lib', 'cli', 'main.js');

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the tool; `onStdout` sees the output as it comes (to interrupt it).
 * The child's stdout and stderr are pipes, so the tool sees no terminal.
 */
function cli(args: string[], onStdout?: (soFar: string, child: ReturnType<typeof spawn>) => void, env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      onStdout?.(stdout, child);
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

function parseJson<T>(run: Run): T {
  try {
    return JSON.parse(run.stdout) as T;
  } catch {
    assert.fail(`stdout is not one JSON document:\n${run.stdout}\nstderr:\n${run.stderr}`);
  }
}

describe('command-line tool', function () {
  this.timeout(60_000);
  let dir: string;
  let firmware: string;
  let notFirmware: string;

  before(async function () {
    this.timeout(180_000); // the first run compiles the virtual ESP32 (cached for the children)
    await ensureVirtualEsp32();
    dir = mkdtempSync(join(tmpdir(), 'ble-ota-cli-'));
    firmware = join(dir, 'lamp-2.5.0.bin');
    writeFileSync(firmware, buildAppImage({ size: 256 * 1024, projectName: 'lamp', version: '2.5.0', seed: 41 }));
    notFirmware = join(dir, 'notes.txt');
    writeFileSync(notFirmware, 'these are release notes, not firmware\n');
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  describe('upload', () => {
    it('--virtual --json: updates a virtual device, exit 0, the result object on stdout', async () => {
      const run = await cli(['upload', firmware, '--device', 'cli-lamp', '--virtual', '--json']);
      assert.equal(run.code, 0, run.stderr);
      const result = parseJson<{
        protocol: string;
        confirmed: boolean;
        runningVersion: string;
        previousVersion: string;
        device: { name: string };
        image: { version: string; project: string };
        bytes: number;
      }>(run);
      assert.equal(result.protocol, 'v2');
      assert.equal(result.confirmed, true);
      assert.equal(result.runningVersion, '2.5.0');
      assert.equal(result.previousVersion, '1.0.0', 'the virtual device started on its built-in image');
      assert.equal(result.image.version, '2.5.0');
      assert.equal(result.image.project, 'lamp');
      assert.equal(result.device.name, 'cli-lamp');
      assert.equal(result.bytes, readFileSync(firmware).length);
      assert.match(run.stderr, /uploading 100 %/, 'with --json, progress goes to stderr');
    });

    it('without a terminal, progress is one line per phase and per tenth, and the output ends with the result', async () => {
      const run = await cli(['upload', firmware, '-d', 'cli-lines', '--virtual']);
      assert.equal(run.code, 0, run.stderr);
      assert.ok(!run.stdout.includes('\r'), 'no carriage returns outside a terminal');
      assert.ok(!run.stdout.includes('\x1b'), 'no escape sequences outside a terminal');
      const lines = run.stdout.trimEnd().split('\n');
      assert.match(lines[0], /lamp-2\.5\.0\.bin: ESP32 app "lamp" 2\.5\.0 \(ESP-IDF v5\.3\.1\), 256\.\d KB/);
      const phases = lines.map((l) => /^(looking for the device|connecting|uploading|verifying|restarting|confirming)\b/.exec(l)?.[1]).filter(Boolean);
      assert.deepEqual([...new Set(phases)], ['looking for the device', 'connecting', 'uploading', 'verifying', 'restarting', 'confirming']);
      const uploading = lines.filter((l) => l.startsWith('uploading'));
      for (const l of uploading) assert.match(l, /^uploading \d+ % \d+\.\d KB\/s$/);
      const percents = uploading.map((l) => Number(/(\d+) %/.exec(l)![1]));
      assert.equal(percents[percents.length - 1], 100);
      assert.ok(uploading.length <= 12, `at most one line per tenth (got ${uploading.length})`);
      assert.deepEqual(
        percents,
        [...percents].sort((a, b) => a - b),
      );
      assert.match(lines[lines.length - 3], /^updated cli-lines \([0-9a-f:]{17}, device id [0-9a-f:]{17}\) to 2\.5\.0 \(was 1\.0\.0\), confirmed$/);
      assert.match(
        lines[lines.length - 2],
        /^ {2}protocol v2, 256\.\d KB in [\d.]+ s, [\d.]+ KB\/s, MTU \d+, \d+ packets of up to \d+ bytes, not authenticated: nothing proves it was your device$/,
      );
      // The link the virtual device reported: the one its connection starts with (nothing answers its requests).
      // The link the firmware asked for, as the virtual radio's central (noble on Linux) granted it.
      assert.match(lines[lines.length - 1], /^ {2}link: interval [\d.]+ ms, latency 0, supervision timeout [\d.]+ s, PHY 1M, data length 251 octets$/);
    });

    it('--confirm device leaves the confirmation to the device; --protocol seed speaks the seed protocol', async () => {
      const device = await cli(['upload', firmware, '-d', 'cli-self', '--virtual', '--json', '--confirm', 'device']);
      assert.equal(device.code, 0, device.stderr);
      const r1 = parseJson<{ protocol: string; confirmed: boolean; runningVersion: string }>(device);
      assert.deepEqual([r1.protocol, r1.confirmed, r1.runningVersion], ['v2', true, '2.5.0']);

      const seed = await cli(['upload', firmware, '-d', 'cli-seed', '--virtual', '--json', '--protocol', 'seed']);
      assert.equal(seed.code, 0, seed.stderr);
      const r2 = parseJson<{ protocol: string; restarted: boolean; image: { version: string } }>(seed);
      assert.deepEqual([r2.protocol, r2.restarted, r2.image.version], ['seed', true, '2.5.0']);
    });

    it('a file that is not an image: exit 1, the problem named on stderr, before any radio is used', async () => {
      const run = await cli(['upload', notFirmware, '--device', 'cli-lamp', '--virtual']);
      assert.equal(run.code, 1);
      assert.match(run.stderr, /notes\.txt: This file is not an ESP32 firmware image: it should start with the byte 0xE9/);
      assert.match(run.stderr, /\[IMAGE_NOT_AN_IMAGE\]/);
      assert.ok(!run.stdout.includes('virtual ESP32'), 'no virtual device was started');
      assert.ok(!/\n\s+at /.test(run.stderr), 'no stack trace');

      const json = await cli(['upload', notFirmware, '--device', 'cli-lamp', '--json']);
      assert.equal(json.code, 1);
      const { error } = parseJson<{ error: { code: string; message: string } }>(json);
      assert.equal(error.code, 'IMAGE_NOT_AN_IMAGE');
      assert.match(error.message, /not an ESP32 firmware image/);
    });

    it('an owned device: --secret-file or ESP32_BLE_OTA_SECRET updates it, no secret fails with AUTH_REQUIRED, and no secret or key is printed', async () => {
      const owned = ownedVirtualEnv();
      const secretFile = join(dir, 'fleet.secret');
      writeFileSync(secretFile, `${OWNER.secret}\n`);
      const signed = join(dir, 'signed.bin');
      writeFileSync(signed, signedImage({ projectName: 'cli-app', version: '3.0.0', size: 64 * 1024, seed: 7 }));
      const withFile = await cli(['upload', signed, '-d', 'cli-keyed', '--virtual', '--secret-file', secretFile], undefined, owned);
      assert.equal(withFile.code, 0, withFile.stderr);
      assert.match(withFile.stdout, /the device proved it holds its key/);
      const withEnv = await cli(['info', '-d', 'cli-keyed', '--virtual', '--json'], undefined, { ...owned, ESP32_BLE_OTA_SECRET: OWNER.secret });
      assert.equal(withEnv.code, 0, withEnv.stderr);
      const info = parseJson<{ authenticated: boolean; deviceId: string; signingKey: string; capabilities: string[] }>(withEnv);
      assert.equal(info.authenticated, true);
      assert.ok(info.capabilities.includes('auth') && info.capabilities.includes('signed'));
      const without = await cli(['upload', signed, '-d', 'cli-keyed', '--virtual', '--json'], undefined, { ...owned, ESP32_BLE_OTA_SECRET: '' });
      assert.equal(without.code, 1);
      const required = parseJson<{ error: { code: string; message: string } }>(without).error;
      assert.equal(required.code, 'AUTH_REQUIRED');
      // The CLI's own way to give the secret, not the device node's.
      assert.match(required.message, /Give the fleet secret with --secret-file PATH, or in ESP32_BLE_OTA_SECRET\.$/);
      assert.doesNotMatch(required.message, /device node|configuration/);
      assert.match(without.stderr, /--secret-file PATH.* \[AUTH_REQUIRED\]/);
      // An unsigned image: the device names its key, so nothing is sent.
      const unsigned = await cli(['upload', firmware, '-d', 'cli-keyed', '--virtual', '--json', '--secret-file', secretFile], undefined, owned);
      assert.equal(parseJson<{ error: { code: string } }>(unsigned).error.code, 'IMAGE_NOT_SIGNED');
      for (const run of [withFile, withEnv, without, unsigned]) assert.ok(!`${run.stdout}${run.stderr}`.includes(OWNER.secret), 'the secret is not printed');

      const missing = await cli(['upload', firmware, '-d', 'x', '--virtual', '--secret-file', join(dir, 'nosecret')]);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /cannot read .*nosecret: no such file/);
      writeFileSync(join(dir, 'bad.secret'), 'not-a-secret');
      const bad = await cli(['upload', firmware, '-d', 'x', '--virtual', '--json', '--secret-file', join(dir, 'bad.secret')]);
      assert.equal(bad.code, 1);
      assert.equal(parseJson<{ error: { code: string } }>(bad).error.code, 'INVALID_ARGUMENT');
      assert.ok(!bad.stderr.includes('not-a-secret') && !bad.stdout.includes('not-a-secret'));
    });

    it('a --base that is no ESP app image (a text file) is a usage error, before any radio work', async () => {
      const run = await cli(['upload', firmware, '-d', 'cli-base-text', '--virtual', '--base', notFirmware]);
      assert.equal(run.code, 2, run.stderr);
      assert.match(
        run.stderr,
        /^esp32-ble-ota: --base .*notes\.txt is not an ESP32 app image \(its first byte is 0x74, not 0xE9\): give the \.bin the device runs now, as idf\.py build wrote it, or leave --base out\nusage: esp32-ble-ota upload /,
      );
      assert.doesNotMatch(run.stdout, /virtual ESP32 .* started/);
      const json = await cli(['upload', firmware, '-d', 'cli-base-text', '--virtual', '--base', notFirmware, '--json']);
      assert.equal(json.code, 2);
      assert.equal(parseJson<{ error: { code: string } }>(json).error.code, 'USAGE');
    });

    it('--require-signature checks the image against --public-key, and the secret is checked, before any radio work, virtual or not', async () => {
      const pub = join(dir, 'owner.pub');
      writeFileSync(pub, OWNER.publicKey);
      const run = await cli(['upload', firmware, '-d', 'x', '--virtual', '--json', '--require-signature', '--public-key', pub]);
      assert.equal(run.code, 1);
      assert.equal(parseJson<{ error: { code: string } }>(run).error.code, 'IMAGE_NOT_SIGNED');
      assert.ok(!run.stdout.includes('virtual ESP32'), 'no virtual device was started');
      const noKey = await cli(['upload', firmware, '-d', 'x', '--virtual', '--require-signature']);
      assert.equal(noKey.code, 2);
      assert.match(noKey.stderr, /upload needs --public-key FILE/);
      // With the system's Bluetooth (none here): the image's error, not the radio's.
      const system = await cli(['upload', firmware, '-d', 'x', '--json', '--require-signature', '--public-key', pub]);
      assert.equal(system.code, 1);
      assert.equal(parseJson<{ error: { code: string } }>(system).error.code, 'IMAGE_NOT_SIGNED');
      const badSecret = join(dir, 'bad.secret');
      writeFileSync(badSecret, 'not a secret\n');
      const secret = await cli(['upload', firmware, '-d', 'x', '--json', '--secret-file', badSecret]);
      assert.equal(secret.code, 1);
      const refused = parseJson<{ error: { code: string; message: string } }>(secret).error;
      assert.equal(refused.code, 'INVALID_ARGUMENT');
      // Where the malformed secret came from, so that the right one gets corrected; never its value.
      assert.equal(
        refused.message,
        `--secret-file ${badSecret}: The fleet secret must be 64 hex digits (esp32-ble-ota secret makes one); it has 12 characters, not all hex digits.`,
      );
      const fromEnv = await cli(['info', '-d', 'x', '--virtual'], undefined, { ESP32_BLE_OTA_SECRET: 'abc' });
      assert.equal(fromEnv.code, 1);
      assert.equal(
        fromEnv.stderr,
        'esp32-ble-ota: ESP32_BLE_OTA_SECRET: The fleet secret must be 64 hex digits (esp32-ble-ota secret makes one); it has 3 characters. [INVALID_ARGUMENT]\n',
      );
    });

    it("secret and provision: a fleet secret, then a device's key partition and the esptool command, never printing either", async () => {
      const secretFile = join(dir, 'made.secret');
      const made = await cli(['secret', '--out', secretFile]);
      assert.equal(made.code, 0, made.stderr);
      const secret = readFileSync(secretFile, 'utf8').trim();
      assert.match(secret, /^[0-9a-f]{64}$/);
      assert.equal(statSync(secretFile).mode & 0o777, 0o600);
      assert.equal((await cli(['secret', '--out', secretFile])).code, 1, 'never overwritten');

      const part = join(dir, 'key.bin');
      const run = await cli(['provision', '--secret-file', secretFile, '--device-id', '24:0A:C4:12:34:56', '--chip', 'esp32c3', '--out', part]);
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, /esptool\.py --chip esp32c3 write_flash 0x3d0000 .*key\.bin/);
      const bytes = readFileSync(part);
      assert.equal(bytes.length, 4096);
      assert.equal(bytes.subarray(0, 8).toString('latin1'), 'BLEOTAK1');
      assert.ok(bytes.subarray(8, 14).equals(Buffer.from('240ac4123456', 'hex')));
      assert.ok(bytes.subarray(16, 48).equals(deviceKey(Buffer.from(secret, 'hex'), Buffer.from('240ac4123456', 'hex'))), 'the key derived for this device');
      assert.ok(bytes.subarray(52).every((b) => b === 0xff));
      for (const r of [made, run]) {
        assert.ok(!`${r.stdout}${r.stderr}`.includes(secret), 'the secret is not printed');
        assert.ok(!`${r.stdout}${r.stderr}`.includes(bytes.subarray(16, 48).toString('hex')), 'the key is not printed');
      }
      // Another device's key file, or anything else, is never replaced.
      const again = await cli(['provision', '--secret-file', secretFile, '--device-id', '24:0A:C4:12:34:57', '--out', part, '--json']);
      assert.equal(again.code, 1);
      assert.equal(parseJson<{ error: { code: string } }>(again).error.code, 'FILE_EXISTS');
      assert.ok(readFileSync(part).equals(bytes), 'the first key file is unchanged');
      const badId = await cli(['provision', '--secret-file', secretFile, '--device-id', 'kitchen', '--out', join(dir, 'k2.bin')]);
      assert.equal(badId.code, 2);
      assert.match(badId.stderr, /--device-id is the chip's factory MAC, .* \(got "kitchen"\)/);
      // The secret given as the device id by mistake is not printed.
      const pasted = await cli(['provision', '--secret-file', secretFile, '--device-id', secret, '--out', join(dir, 'k2.bin')]);
      assert.equal(pasted.code, 2);
      assert.match(pasted.stderr, /\(got 64 characters, not repeated here\)/);
      assert.ok(!pasted.stderr.includes(secret));
      // --chip as ESP-IDF names targets, written as esptool.py takes it; an unknown one is a usage error.
      const named = await cli(['provision', '--secret-file', secretFile, '--device-id', '24:0A:C4:12:34:58', '--chip', 'ESP32-S3', '--out', join(dir, 'k3.bin')]);
      assert.match(named.stdout, /esptool\.py --chip esp32s3 write_flash/);
      const unknown = await cli(['provision', '--secret-file', secretFile, '--device-id', '24:0A:C4:12:34:58', '--chip', 'esp9', '--out', join(dir, 'k4.bin')]);
      assert.equal(unknown.code, 2);
      assert.match(unknown.stderr, /--chip: Unknown chip "esp9"/);
    });

    it('a file that cannot be read: exit 1 with FILE_UNREADABLE', async () => {
      const run = await cli(['upload', join(dir, 'missing.bin'), '--device', 'x', '--json']);
      assert.equal(run.code, 1);
      assert.deepEqual(parseJson<{ error: { code: string } }>(run).error.code, 'FILE_UNREADABLE');
      assert.match(run.stderr, /cannot read .*missing\.bin: no such file/);
    });

    it("a fleet secret or a key's PEM text given where a file goes is not repeated, on stderr nor in --json", async () => {
      const secret = randomBytes(32).toString('hex');
      const pem = generateSigningKey('ecdsa256');
      // A file that cannot be read is named (FILE_UNREADABLE); a PEM's first line looks like an option (USAGE).
      const runs: Array<[string[], string]> = [
        [['upload', firmware, '--device', 'x', '--secret-file', secret, '--json'], 'FILE_UNREADABLE'],
        [['upload', secret, '--device', 'x', '--json'], 'FILE_UNREADABLE'],
        [['upload', firmware, '--device', 'x', '--base', `0x${secret}`, '--json'], 'FILE_UNREADABLE'],
        [['sign', firmware, `--key=${pem}`, '--out', join(dir, 'signed.bin'), '--json'], 'FILE_UNREADABLE'],
        [['verify', firmware, `--public-key=${pem}`, '--json'], 'FILE_UNREADABLE'],
        [['sign', firmware, '--key', pem, '--out', join(dir, 'signed.bin'), '--json'], 'USAGE'],
      ];
      for (const [args, code] of runs) {
        const run = await cli(args);
        assert.equal(parseJson<{ error: { code: string } }>(run).error.code, code, args.join(' '));
        for (const out of [run.stdout, run.stderr]) {
          assert.match(out, /\[(64 hex digits|PEM text), not repeated\]/);
          assert.ok(!out.includes(secret.slice(0, 20)) && !out.includes('-----BEGIN') && !out.includes(pem.split('\n')[1].slice(0, 20)), out);
        }
      }
      const project = await cli(['sample-image', '--out', join(dir, 'x.bin'), '--project', secret]);
      assert.match(project.stderr, /The sample's project name is 64 bytes long/);
      assert.ok(!project.stderr.includes(secret.slice(0, 20)));
    });

    it('Ctrl-C cancels: exit 130, the device keeps its old firmware', async () => {
      const big = join(dir, 'big.bin');
      writeFileSync(big, buildAppImage({ size: 1800 * 1024, projectName: 'big', version: '9.0.0', seed: 42 }));
      let interrupted = false;
      const run = await cli(['upload', big, '--device', 'cli-cancel', '--virtual'], (soFar, child) => {
        if (!interrupted && /^uploading /m.test(soFar)) {
          interrupted = true;
          child.kill('SIGINT');
        }
      });
      assert.ok(interrupted, `the upload never started:\n${run.stdout}\n${run.stderr}`);
      assert.equal(run.code, 130, run.stderr);
      assert.match(run.stderr, /The update was cancelled; the device keeps its old firmware\. \[CANCELLED\]/);
      assert.ok(!/^updated /m.test(run.stdout));
    });
    it('a cache folder that cannot be made (/proc/...) fails no update: the result is reported, the warning names the folder once', async function () {
      if (!existsSync('/proc/self')) this.skip();
      const json = await cli(['upload', firmware, '-d', 'cli-proc-cache', '--virtual', '--cache-dir', '/proc/ble-ota-cli-test', '--json']);
      assert.equal(json.code, 0, json.stderr);
      const result = parseJson<{ confirmed: boolean; cache?: { stored: boolean; error?: string } }>(json);
      assert.equal(result.confirmed, true);
      assert.equal(result.cache?.stored, false);
      assert.match(
        result.cache?.error ?? '',
        /^the image could not be stored in \/proc\/ble-ota-cli-test: it could not be created in \/proc \(that file system takes no new folders\): choose another folder$/,
      );
      const words = await cli(['upload', firmware, '-d', 'cli-proc-cache', '--virtual', '--cache-dir', '/proc/1/ble-ota-cli-test']);
      assert.equal(words.code, 0, words.stderr);
      assert.match(words.stdout, /^updated cli-proc-cache /m);
      const warning = /^warning: .*$/m.exec(words.stderr)?.[0] ?? '';
      assert.match(warning, /could not be stored in \/proc\/1\/ble-ota-cli-test: .*; the next update of this device sends the full image$/);
      assert.equal(warning.split('/proc/1/ble-ota-cli-test').length, 2, `the folder named once: ${warning}`);
    });
  });

  describe('scan and info', () => {
    it('scan --virtual --json lists the virtual device with the OTA service', async () => {
      const run = await cli(['scan', '--virtual', '--json', '--duration', '0.5']);
      assert.equal(run.code, 0, run.stderr);
      const devices = parseJson<Array<{ name: string; address: string; id: string; rssi: number; advertisesOta: boolean }>>(run);
      assert.equal(devices.length, 1);
      assert.equal(devices[0].name, 'esp32', 'named "esp32" without --device');
      assert.match(devices[0].address, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
      assert.equal(devices[0].id, devices[0].address.replace(/:/g, ''), "noble's id, on Linux the address's digits");
      assert.equal(typeof devices[0].rssi, 'number');
      assert.equal(devices[0].advertisesOta, true);
    });

    it('scan prints a table', async () => {
      const run = await cli(['scan', '--virtual', '--duration', '0.5', '--device', 'kitchen']);
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, /^NAME +ADDRESS +RSSI +OTA$/m);
      assert.match(run.stdout, /^kitchen +([0-9a-f]{2}:){5}[0-9a-f]{2} +-\d+ +yes$/m);
    });

    it('an RSSI the adapter could not measure (127) is unknown: in the table, in JSON and in info', async () => {
      const env = { BLE_OTA_VIRTUAL_RSSI: '127' };
      const table = await cli(['scan', '--virtual', '--duration', '0.5', '--device', 'quiet'], undefined, env);
      assert.equal(table.code, 0, table.stderr);
      assert.match(table.stdout, /^quiet +([0-9a-f]{2}:){5}[0-9a-f]{2} +unknown +yes$/m);
      assert.doesNotMatch(table.stdout, /127/);

      const json = await cli(['scan', '--virtual', '--json', '--duration', '0.5', '--device', 'quiet'], undefined, env);
      assert.equal(json.code, 0, json.stderr);
      const devices = parseJson<Array<{ name: string; rssi: number | null }>>(json);
      assert.deepEqual(
        devices.map((d) => [d.name, d.rssi]),
        [['quiet', null]],
      );

      const info = await cli(['info', '-d', 'quiet', '--virtual'], undefined, env);
      assert.equal(info.code, 0, info.stderr);
      assert.match(info.stdout, /^device +quiet \(([0-9a-f]{2}:){5}[0-9a-f]{2}\), RSSI unknown, MTU \d+$/m);
      const infoJson = await cli(['info', '-d', 'quiet', '--virtual', '--json'], undefined, env);
      assert.equal(parseJson<{ rssi: number | null }>(infoJson).rssi, null);
    });

    it('--virtual --device of 12 hex digits (the id scan prints, the address without colons) starts the virtual device at that address, as the nodes read it', async () => {
      const run = await cli(['info', '--device', 'AABBCC112233', '--virtual']);
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, /^virtual ESP32 "esp32" \(aa:bb:cc:11:22:33\) started$/m);
      assert.match(run.stdout, /^device +esp32 \(aa:bb:cc:11:22:33\)/m);
    });

    it('info --device X --virtual --json reports the OTA Info and the firmware revision', async () => {
      const run = await cli(['info', '--device', 'cli-info', '--virtual', '--json']);
      assert.equal(run.code, 0, run.stderr);
      const info = parseJson<{
        name: string;
        protocol: string;
        firmwareRevision: string;
        protocolVersion: number;
        project: string;
        version: string;
        idfVersion: string;
        chip: { name: string };
        runningState: string;
        slotSize: number;
        window: number;
        capabilities: string[];
        build: { elfSha256: string };
        lastStatus: string | null;
      }>(run);
      assert.equal(info.name, 'cli-info');
      assert.equal(info.protocol, 'v2');
      assert.equal(info.firmwareRevision, '1.0.0');
      assert.ok(info.protocolVersion >= 2);
      assert.equal(info.project, 'virtual-esp32');
      assert.equal(info.version, '1.0.0');
      assert.equal(info.idfVersion, 'esp32-ble-ota sample', 'it runs a sample image (docs/CLI.md, Try it without hardware)');
      assert.equal(info.chip.name, 'ESP32');
      assert.equal(info.runningState, 'valid');
      assert.equal(info.slotSize, 0x1e0000);
      assert.equal(info.window, 32768);
      assert.deepEqual(info.capabilities, ['resume', 'clientConfirm', 'seed', 'deflate', 'delta']);
      assert.match(info.build.elfSha256, /^[0-9a-f]{64}$/);
      assert.equal(info.lastStatus, null);
    });

    it('info in words', async () => {
      const run = await cli(['info', '-d', '24:0a:c4:12:34:56', '--virtual']);
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, /^device +esp32 \(24:0a:c4:12:34:56\), RSSI -?\d+ dBm, MTU \d+$/m);
      assert.match(run.stdout, /^protocol +v2/m);
      assert.match(run.stdout, /^slot size +1\.88 MB \(1966080 bytes\)$/m);
      assert.match(run.stdout, /^features +resume, clientConfirm, seed, deflate, delta$/m);
    });
  });

  describe('usage', () => {
    it('--device missing: exit 2 with the usage on stderr', async () => {
      const run = await cli(['upload', firmware]);
      assert.equal(run.code, 2);
      assert.match(run.stderr, /upload needs --device DEVICE \(the advertised name, AA:BB:CC:DD:EE:FF, or the id scan prints\)/);
      assert.match(run.stderr, /^usage: esp32-ble-ota upload FILE --device DEVICE/m);
      assert.equal(run.stdout, '');
    });

    it('a fleet secret given as --device: exit 2 before any radio work, saying what was wrong without repeating it', async () => {
      const secret = createHash('sha256').update('a fleet secret for this test').digest('hex');
      for (const args of [
        ['upload', firmware, '--device', secret],
        ['info', `--device=0x${secret.toUpperCase()}`, '--virtual'],
        ['scan', '-d', ` ${secret}\n`, '--json'],
      ]) {
        const run = await cli(args);
        assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
        assert.match(
          run.stderr,
          /--device looks like a key or a secret, not a device name \(64 hex digits, a fleet secret's form, or a key's PEM text\), so it is not repeated here: .* the fleet secret goes in a file given with --secret-file/,
        );
        assert.match(run.stderr, /usage: /);
        assert.ok(!`${run.stdout}${run.stderr}`.toLowerCase().includes(secret), 'the secret is not printed');
      }
      for (const near of [secret.slice(1), `${secret}0`]) assert.equal((parseCommandLine(['info', '-d', near]) as { device: string }).device, near, 'a near miss is a name');
      // Typed where an operand, a command or another option's value goes: the mistake is told, the secret not repeated.
      for (const args of [
        ['upload', firmware, secret, '-d', 'x'],
        [secret],
        ['sign', '--key', 'k.pem', '--out', 'o.bin', 'a.bin', `0x${secret}`],
        ['scan', '--duration', secret],
        ['info', '-d', 'x', `--chip=${secret}`],
      ]) {
        const run = await cli(args);
        assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
        assert.ok(!`${run.stdout}${run.stderr}`.toLowerCase().includes(secret), `the secret is not printed: ${run.stderr}`);
        assert.match(run.stderr, /\[64 hex digits, not repeated\]|does not take/);
      }
    });

    it("a key's PEM text given as --device: exit 2 before any radio work, saying it looks like a key or a secret, without repeating it", async () => {
      const pem = generateSigningKey('ecdsa256');
      const body = pem.split('\n')[1].slice(0, 20);
      for (const args of [
        ['upload', firmware, `--device=${pem}`],
        ['info', `--device=${pem.replace(/\n/g, '')}`, '--virtual', '--json'],
      ]) {
        const run = await cli(args);
        assert.equal(run.code, 2, run.stderr);
        assert.match(run.stderr, /--device looks like a key or a secret, not a device name .*so it is not repeated here/);
        assert.ok(!`${run.stdout}${run.stderr}`.includes('-----BEGIN') && !`${run.stdout}${run.stderr}`.includes(body), run.stderr);
      }
    });

    it('other mistakes exit 2; --json still gets a JSON error', async () => {
      for (const args of [
        [],
        ['flash'],
        ['scan', '--bogus'],
        ['scan', '--confirm', 'client'],
        ['upload', 'a.bin', '-d', 'x', '--confirm', 'maybe'],
        ['scan', '--duration', 'soon'],
        ['info'],
      ]) {
        const run = await cli(args);
        assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
        assert.match(run.stderr, /usage: /);
      }
      const json = await cli(['info', '--json']);
      assert.equal(json.code, 2);
      assert.equal(parseJson<{ error: { code: string } }>(json).error.code, 'USAGE');
    });

    it('--help and --version', async () => {
      const help = await cli(['--help']);
      assert.equal(help.code, 0);
      for (const word of ['scan', 'info', 'upload', '--json', '--virtual', 'Exit status']) assert.ok(help.stdout.includes(word), word);
      const uploadHelp = await cli(['upload', '--help']);
      assert.match(uploadHelp.stdout, /--confirm client\|device/);
      const version = await cli(['--version']);
      assert.equal(version.code, 0);
      const pkg = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
      assert.equal(version.stdout.trim(), pkg.version);
    });
  });

  describe('the system Bluetooth', () => {
    it('where it is unavailable, exit 1 with the reason, no stack trace', async function () {
      const problem = systemBluetoothProblem();
      if (!problem) {
        console.log('      (skipped: this machine has working Bluetooth, so the message cannot be checked)');
        this.skip();
      }
      for (const args of [
        ['scan', '--duration', '1'],
        ['info', '-d', 'esp32'],
        ['upload', firmware, '-d', 'esp32'],
      ]) {
        const run = await cli(args);
        assert.equal(run.code, 1, `${args[0]}: ${run.stderr}`);
        assert.ok(run.stderr.includes(problem.message), `${args[0]} prints the loader's message:\n${run.stderr}`);
        assert.match(run.stderr, /\[BLUETOOTH_UNAVAILABLE\]/);
        assert.match(run.stderr, /add --virtual/);
        assert.ok(!/\n\s+at /.test(run.stderr), 'no stack trace');
      }
      const json = await cli(['info', '-d', 'esp32', '--json']);
      assert.deepEqual(parseJson<{ error: { code: string; message: string } }>(json), {
        error: { code: 'BLUETOOTH_UNAVAILABLE', message: problem.message },
      });
    });

    it('a system without Bluetooth sockets is told how to try without hardware, in the words of each way in', () => {
      const err = explainLoadError(Object.assign(new Error('Address family not supported by protocol'), { code: 'EAFNOSUPPORT' }));
      assert.equal(err.code, 'BLUETOOTH_UNAVAILABLE');
      assert.equal(err.reason, 'no Bluetooth support');
      // The device node's radio as its dialog names it, the tool's option, the class: no "backend" that nothing is called.
      assert.match(err.message, /to try without one, use a virtual ESP32 \(the device node's Radio "Virtual ESP32", the command line's --virtual, or VirtualRadio in code\)\.$/);
    });
  });
});

describe('signing commands (keygen, sign, verify, pubkey)', function () {
  this.timeout(30_000);
  let dir: string;
  let app: string;
  let rsaKey: string;
  let ecKey: string;
  const at = (name: string) => join(dir, name);
  const errorOf = (run: Run) => parseJson<{ error: { code: string; message: string } }>(run).error;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'ble-ota-sign-'));
    app = at('app.bin');
    writeFileSync(app, buildAppImage({ size: 40 * 1024, projectName: 'lamp', version: '2.6.0', seed: 43 }));
    rsaKey = at('rsa.pem');
    ecKey = at('ec.pem');
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  it('keygen writes an RSA-3072 key readable by its owner only, prints its digest and the next steps, and never overwrites', async () => {
    const run = await cli(['keygen', '--out', rsaKey]);
    assert.equal(run.code, 0, run.stderr);
    const pem = readFileSync(rsaKey, 'utf8');
    assert.match(pem, /^-----BEGIN RSA PRIVATE KEY-----\n/);
    if (process.platform !== 'win32') assert.equal(statSync(rsaKey).mode & 0o777, 0o600);
    assert.ok(run.stdout.includes(`public key digest: ${signingKeyDigest(pem).toString('hex')}`), run.stdout);
    assert.match(run.stdout, /CONFIG_SECURE_BOOT_SIGNING_KEY/);
    assert.match(run.stdout, /off the Node-RED machine/);
    assert.ok(!run.stdout.includes(pem.split('\n')[1]), 'the key is not printed');

    const again = await cli(['keygen', '--out', rsaKey, '--json']);
    assert.equal(again.code, 1);
    assert.equal(errorOf(again).code, 'FILE_EXISTS');
    assert.equal(readFileSync(rsaKey, 'utf8'), pem, 'the existing key is untouched');
  });

  it('keygen --scheme ecdsa256 --json', async () => {
    const run = await cli(['keygen', '--scheme', 'ecdsa256', '--out', ecKey, '--json']);
    assert.equal(run.code, 0, run.stderr);
    const pem = readFileSync(ecKey, 'utf8');
    assert.match(pem, /^-----BEGIN EC PRIVATE KEY-----\n/);
    assert.deepEqual(parseJson(run), { file: ecKey, scheme: 'ecdsa256', keyDigest: signingKeyDigest(pem).toString('hex') });
  });

  it('sign writes the image with a signature sector; the input is untouched', async () => {
    const before = readFileSync(app);
    const out = at('app-signed.bin');
    const run = await cli(['sign', '--key', rsaKey, '--out', out, app]);
    assert.equal(run.code, 0, run.stderr);
    assert.ok(readFileSync(app).equals(before));
    const signed = readFileSync(out);
    const { imageLength } = parseEspImage(before);
    assert.equal(signed.length, signatureSectorOffset(imageLength) + 4096);
    const check = verifyImageSignature(signed, imageLength, { publicKeyPem: readFileSync(rsaKey, 'utf8') });
    assert.equal(check.ok, true);
    assert.match(
      run.stdout,
      new RegExp(`^wrote .*app-signed\\.bin: .*app\\.bin signed, 44\\.0 KB, signature sector at 0x${signatureSectorOffset(imageLength).toString(16)}$`, 'm'),
    );
    assert.match(run.stdout, /^ {2}block 0 {2}RSA-3072 {5}key digest [0-9a-f]{64}$/m);
  });

  it('sign --append adds a block; --json lists the sector', async () => {
    const out = at('app-signed2.bin');
    const run = await cli(['sign', '--key', ecKey, '--append', '--out', out, at('app-signed.bin'), '--json']);
    assert.equal(run.code, 0, run.stderr);
    const rsaDigest = signingKeyDigest(readFileSync(rsaKey, 'utf8')).toString('hex');
    const ecDigest = signingKeyDigest(readFileSync(ecKey, 'utf8')).toString('hex');
    const signed = readFileSync(out);
    const { imageLength } = parseEspImage(signed);
    assert.deepEqual(parseJson(run), {
      file: out,
      image: at('app-signed.bin'),
      size: signed.length,
      sectorOffset: signatureSectorOffset(imageLength),
      blocks: [
        { index: 0, scheme: 'rsa3072', keyDigest: rsaDigest, added: false },
        { index: 1, scheme: 'ecdsa256', keyDigest: ecDigest, added: true },
      ],
    });
    assert.equal(readSignatureSector(signed, imageLength).blocks.length, 2);
  });

  it('sign refuses: an input as --out, a signed image without --append, a public key, a file that is not an app', async () => {
    const signedBefore = readFileSync(at('app-signed.bin'));
    const overInput = await cli(['sign', '--key', rsaKey, '--out', at('app-signed.bin'), at('app-signed.bin'), '--json']);
    assert.equal(overInput.code, 1);
    assert.equal(errorOf(overInput).code, 'INVALID_ARGUMENT');
    assert.match(errorOf(overInput).message, /an input; write to another file/);
    const overKey = await cli(['sign', '--key', rsaKey, '--out', rsaKey, app]);
    assert.equal(overKey.code, 1);
    assert.match(overKey.stderr, /an input; write to another file/);
    assert.match(readFileSync(rsaKey, 'utf8'), /BEGIN RSA PRIVATE KEY/, 'the key survives');
    assert.ok(readFileSync(at('app-signed.bin')).equals(signedBefore));

    const twice = await cli(['sign', '--key', ecKey, '--out', at('x.bin'), at('app-signed.bin')]);
    assert.equal(twice.code, 1);
    assert.match(twice.stderr, /is already signed \(1 signature block\(s\)\)\. Add --append/);

    const pub = at('pub-for-sign.pem');
    assert.equal((await cli(['pubkey', '--key', rsaKey, '--out', pub])).code, 0);
    const withPublic = await cli(['sign', '--key', pub, '--out', at('x.bin'), app]);
    assert.equal(withPublic.code, 1);
    assert.match(withPublic.stderr, /pub-for-sign\.pem: this is a public key; signing needs the private key\. \[INVALID_ARGUMENT\]/);

    writeFileSync(at('notes.txt'), 'not firmware\n');
    const notApp = await cli(['sign', '--key', rsaKey, '--out', at('x.bin'), at('notes.txt'), '--json']);
    assert.equal(notApp.code, 1);
    assert.equal(errorOf(notApp).code, 'IMAGE_NOT_AN_IMAGE');
    assert.ok(!existsSync(at('x.bin')), 'nothing written');
  });

  it('a file that is no usable key is named, its contents never printed', async () => {
    const secret = 'MIIEpAIBAAKCAQEAsecretsecretsecretsecretsecret';
    writeFileSync(at('bad.pem'), `-----BEGIN RSA PRIVATE KEY-----\n${secret}\n-----END RSA PRIVATE KEY-----\n`);
    for (const args of [
      ['sign', '--key', at('bad.pem'), '--out', at('x.bin'), app],
      ['pubkey', '--key', at('bad.pem')],
      ['verify', '--public-key', at('bad.pem'), app],
    ]) {
      const run = await cli([...args, '--json']);
      assert.equal(run.code, 1, run.stderr);
      assert.equal(errorOf(run).code, 'INVALID_ARGUMENT');
      assert.match(errorOf(run).message, /bad\.pem: Its "RSA PRIVATE KEY" block cannot be read/);
      assert.ok(!`${run.stdout}${run.stderr}`.includes(secret));
    }
    const missing = await cli(['pubkey', '--key', at('nokey.pem')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /cannot read .*nokey\.pem: no such file \[FILE_UNREADABLE\]/);
  });

  it('verify: exit 0 when block 0 is signed by the key', async () => {
    const run = await cli(['verify', '--public-key', rsaKey, at('app-signed2.bin')]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /app-signed2\.bin: signature block 0 \(RSA-3072\) verifies with .*rsa\.pem\n {2}key digest [0-9a-f]{64}\n$/);
    const json = await cli(['verify', '--public-key', at('pub-for-sign.pem'), at('app-signed.bin'), '--json']);
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(parseJson(json), {
      file: at('app-signed.bin'),
      verified: true,
      block: 0,
      scheme: 'rsa3072',
      keyDigest: signingKeyDigest(readFileSync(rsaKey, 'utf8')).toString('hex'),
    });
  });

  it('verify: exit 1 with the reason: unsigned, another key, changed after signing, bad signature', async () => {
    const signed = readFileSync(at('app-signed.bin'));
    const { imageLength } = parseEspImage(signed);
    const sectorAt = signatureSectorOffset(imageLength);
    const repadded = Buffer.from(signed);
    repadded[imageLength] = 0x00; // the 0xFF padding before the sector
    writeFileSync(at('repadded.bin'), repadded);
    const forged = Buffer.from(signed);
    forged[sectorAt + 900] ^= 1; // in the RSA signature
    const { crc32 } = await import('../lib/image/esp-image');
    forged.writeUInt32LE(crc32(forged.subarray(sectorAt, sectorAt + 1196)), sectorAt + 1196);
    writeFileSync(at('forged.bin'), forged);

    const cases: Array<[string, string, string, RegExp]> = [
      [rsaKey, app, 'IMAGE_NOT_SIGNED', /no valid Secure Boot v2 signature block/],
      [ecKey, at('app-signed2.bin'), 'SIGNATURE_UNTRUSTED', /Signature block 0 is made with another key \(key digest [0-9a-f]{64}\), not the trusted one/],
      [rsaKey, at('repadded.bin'), 'SIGNATURE_DIGEST_MISMATCH', /The padding between the image and its signature sector changed after signing/],
      [rsaKey, at('forged.bin'), 'SIGNATURE_INVALID', /its signature does not verify/],
    ];
    for (const [key, file, code, message] of cases) {
      const run = await cli(['verify', '--public-key', key, file, '--json']);
      assert.equal(run.code, 1, `${code}: ${run.stderr}`);
      assert.equal(errorOf(run).code, code);
      assert.match(errorOf(run).message, message);
      assert.match(run.stderr, new RegExp(`\\[${code}\\]\\n$`));
    }
  });

  it('pubkey: the PEM on stdout and the digest on stderr; --out writes the file; --json', async () => {
    const pem = readFileSync(ecKey, 'utf8');
    const digest = signingKeyDigest(pem).toString('hex');
    const run = await cli(['pubkey', '--key', ecKey]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^-----BEGIN PUBLIC KEY-----\n[^]*\n-----END PUBLIC KEY-----\n$/);
    assert.equal(signingKeyDigest(run.stdout).toString('hex'), digest);
    assert.equal(run.stderr, `public key digest: ${digest}\n`);

    const out = at('ec-pub.pem');
    const toFile = await cli(['pubkey', '--key', ecKey, '--out', out]);
    assert.equal(toFile.code, 0, toFile.stderr);
    assert.equal(readFileSync(out, 'utf8'), run.stdout);
    assert.ok(toFile.stdout.includes(`public key digest: ${digest}`));

    const json = await cli(['pubkey', '--key', ecKey, '--json']);
    assert.deepEqual(parseJson(json), { scheme: 'ecdsa256', keyDigest: digest, publicKey: run.stdout, file: null });
    assert.equal((await cli(['pubkey', '--key', ecKey, '--out', ecKey])).code, 1, 'never over the key');
  });

  it('an image signed by the tool is what signImage makes of it, apart from the random signature values', () => {
    const pem = readFileSync(rsaKey, 'utf8');
    const mine = signImage(readFileSync(app), pem);
    const tool = readFileSync(at('app-signed.bin'));
    const sectorAt = signatureSectorOffset(parseEspImage(tool).imageLength);
    assert.ok(mine.subarray(0, sectorAt + 812).equals(tool.subarray(0, sectorAt + 812)));
    assert.ok(mine.subarray(sectorAt + 1200).equals(tool.subarray(sectorAt + 1200)));
  });
});

describe('sample-image', function () {
  this.timeout(60_000);
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), 'ble-ota-cli-sample-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** Runs the tool with stdout as bytes (sample-image --out - writes the image there). */
  function cliBytes(args: string[]): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      let stderr = '';
      child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr }));
    });
  }

  it('writes a valid app image with the project, version, chip and size asked for, and says what it is for', async () => {
    const file = join(dir, 'lamp.bin');
    const run = await cli(['sample-image', '--out', file, '--project', 'lamp', '--app-version', '3.1.4', '--chip', 'esp32-c3', '--size', '64k']);
    assert.equal(run.code, 0, run.stderr);
    const image = parseEspImage(readFileSync(file));
    assert.deepEqual([image.appDesc.projectName, image.appDesc.version, image.header.chipId], ['lamp', '3.1.4', 5]);
    assert.ok(Math.abs(statSync(file).size - 64 * 1024) < 64, `${statSync(file).size} bytes`);
    assert.match(run.stdout, /ESP32-C3 app "lamp" 3\.1\.4, 64\.0 KB\n.*filler: for virtual devices/s);

    const json = parseJson<{ file: string; project: string; version: string; chip: string; size: number; sha256: string }>(await cli(['sample-image', '--out', file, '--json']));
    assert.deepEqual([json.project, json.version, json.chip], ['sample-app', '2.0.0', 'ESP32'], 'the defaults; an earlier sample is replaced');
    assert.equal(json.sha256, createHash('sha256').update(readFileSync(file)).digest('hex'));
  });

  it('--out - writes the image to standard output, the words to standard error', async () => {
    const run = await cliBytes(['sample-image', '--out', '-', '--app-version', '9.9.9']);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(parseEspImage(run.stdout).appDesc.version, '9.9.9');
    assert.match(run.stderr, /wrote a sample app image to standard output/);
  });

  it('never replaces a file that is not a sample; refuses bad options with what to give', async () => {
    const build = join(dir, 'app.bin');
    const real = buildAppImage({ projectName: 'real', version: '1.0.0', size: 20_000 });
    writeFileSync(build, real);
    const run = await cli(['sample-image', '--out', build]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /already exists and is not a sample image.*\[FILE_EXISTS\]/);
    assert.deepEqual(readFileSync(build), real);

    const chip = await cli(['sample-image', '--out', join(dir, 'x.bin'), '--chip', 'esp8266']);
    assert.equal(chip.code, 2, 'an unknown chip is a mistake in the command line');
    assert.match(chip.stderr, /--chip: Unknown chip "esp8266": give one of esp32, esp32s2, esp32c3, esp32s3/);
    const version = await cli(['sample-image', '--out', join(dir, 'x.bin'), '--app-version', 'v'.repeat(40)]);
    assert.match(version.stderr, /The sample's version is 40 bytes long: an app descriptor holds at most 31\. \[INVALID_ARGUMENT\]/);
    const size = await cli(['sample-image', '--out', join(dir, 'x.bin'), '--size', '20M']);
    assert.equal(size.code, 2, 'a size out of range is a mistake in the command line');
    assert.match(size.stderr, /--size 20M is 20971520 bytes: a sample image has 1 KiB to 16 MiB, e\.g\. 128k/);
    const folder = await cli(['sample-image', '--out', dir]);
    assert.equal(folder.code, 2);
    assert.match(folder.stderr, /^esp32-ble-ota: --out .* is a directory: give a file name, e\.g\. --out .*\/app\.bin\nusage: esp32-ble-ota sample-image /);
    const asVersion = await cli(['sample-image', '--out', join(dir, 'x.bin'), '--version', '2.0.0']);
    assert.equal(asVersion.code, 2);
    assert.match(asVersion.stderr, /--version prints the tool's own version; the sample's version is --app-version VERSION/);
    assert.ok(!existsSync(join(dir, 'x.bin')));
  });

  it('upload sends a sample to virtual devices only: to a real one it is refused before any radio work', async () => {
    const file = join(dir, 'sample.bin');
    assert.equal((await cli(['sample-image', '--out', file])).code, 0);
    const real = await cli(['upload', file, '--device', 'esp32']);
    assert.equal(real.code, 1);
    assert.match(real.stderr, /is a sample image .* a real device would boot and crash on\. Send it with --virtual, or send your build's \.bin\. \[IMAGE_SAMPLE\]/);
    assert.doesNotMatch(real.stderr + real.stdout, /looking for the device|BLUETOOTH_UNAVAILABLE/);
    const virtual = await cli(['upload', file, '--device', 'esp32-sample', '--virtual', '--json']);
    assert.equal(virtual.code, 0, virtual.stderr);
    assert.equal(parseJson<{ runningVersion: string }>(virtual).runningVersion, '2.0.0');
  });
  it('writes the image a fresh virtual device runs (docs/CLI.md), and a later version of it goes to one as a patch with --base', async () => {
    await ensureVirtualEsp32();
    const base = join(dir, 'base.bin');
    const next = join(dir, 'new.bin');
    const same = ['--project', 'virtual-esp32', '--size', '8k'];
    assert.equal((await cli(['sample-image', ...same, '--app-version', '1.0.0', '--out', base])).code, 0);
    assert.equal((await cli(['sample-image', ...same, '--app-version', '1.1.0', '--out', next])).code, 0);
    const info = await cli(['info', '--device', 'cli-base', '--virtual', '--json']);
    assert.equal(info.code, 0, info.stderr);
    const running = parseJson<{ runningImage: { size: number; sha256: string } }>(info).runningImage;
    const bytes = readFileSync(base);
    assert.deepEqual(running, { size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') }, 'the very bytes');

    const run = await cli(['upload', next, '--device', 'cli-base', '--virtual', '--base', base]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^updated cli-base .* to 1\.1\.0 \(was 1\.0\.0\), confirmed$/m);
    assert.match(
      run.stdout,
      /\n {2}delta patch against the image the device ran \([0-9a-f]{12}…, from --base\): [\d.]+ bytes over the air, [\d.]+ % of the [\d.]+ KB the full image takes\n/,
    );
    // Other chips too: --chip, as the device's.
    const c3 = join(dir, 'base-c3.bin');
    assert.equal((await cli(['sample-image', ...same, '--app-version', '1.0.0', '--chip', 'esp32c3', '--out', c3])).code, 0);
    const device = await VirtualEsp32.start({ name: 'cli-base-c3', chipId: 5 });
    try {
      const state = await device.state();
      const c3Bytes = readFileSync(c3);
      assert.deepEqual(await device.readFlash(state.running, 0, c3Bytes.length + 16), Buffer.concat([c3Bytes, Buffer.alloc(16, 0xff)]));
    } finally {
      await device.stop();
    }
  });
});

describe('command-line parsing', () => {
  it("docs/CLI.md's synopses are the usage lines --help prints", () => {
    const md = readFileSync(join(__dirname, '..', '..', 'docs', 'CLI.md'), 'utf8');
    const blocks = [...md.matchAll(/```\n(esp32-ble-ota [^`]*?)```/g)].map((m) => m[1].replace(/\s+/g, ' ').trim());
    for (const command of ['scan', 'info', 'upload', 'keygen', 'sign', 'verify', 'pubkey', 'secret', 'provision', 'sample-image'] as const) {
      const line = usage(command)
        .replace(/^usage: /, '')
        .trim();
      assert.ok(
        blocks.some((b) => b === line || b.startsWith(`${line} esp32-ble-ota `) || b.endsWith(` ${line}`)),
        `docs/CLI.md has no synopsis "${line}"`,
      );
    }
  });

  it('reads each command with its defaults', () => {
    assert.deepEqual(parseCommandLine(['scan']), { kind: 'scan', durationMs: 5000, device: undefined, json: false, virtual: false });
    assert.deepEqual(parseCommandLine(['info', '--device', 'AA-BB-CC-DD-EE-FF', '--timeout', '2.5', '--json']), {
      kind: 'info',
      device: 'AA-BB-CC-DD-EE-FF',
      timeoutMs: 2500,
      secretFile: undefined,
      deviceId: undefined,
      json: true,
      virtual: false,
    });
    assert.deepEqual(parseCommandLine(['--virtual', 'upload', '-d', 'x', 'fw.bin']), {
      kind: 'upload',
      file: 'fw.bin',
      device: 'x',
      confirm: 'client',
      protocol: 'auto',
      timeoutMs: undefined,
      secretFile: undefined,
      allowUnauthenticated: false,
      deviceId: undefined,
      requireSignature: false,
      publicKey: undefined,
      json: false,
      virtual: true,
    });
    assert.deepEqual(parseCommandLine(['keygen', '-o', 'k.pem']), { kind: 'keygen', scheme: 'rsa3072', out: 'k.pem', json: false, virtual: false });
    assert.deepEqual(parseCommandLine(['sign', '--key', 'a.pem', '--key', 'b.pem', '--append', '--out', 's.bin', 'app.bin', '--json']), {
      kind: 'sign',
      file: 'app.bin',
      keys: ['a.pem', 'b.pem'],
      append: true,
      out: 's.bin',
      json: true,
      virtual: false,
    });
    assert.deepEqual(parseCommandLine(['verify', 's.bin', '--public-key', 'p.pem']), { kind: 'verify', file: 's.bin', publicKey: 'p.pem', json: false, virtual: false });
    assert.deepEqual(parseCommandLine(['pubkey', '--key', 'k.pem']), { kind: 'pubkey', key: 'k.pem', out: undefined, json: false, virtual: false });
    assert.deepEqual(parseCommandLine(['sample-image', '-o', '-', '--size', '1.5M', '--chip', 'esp32s3']), {
      kind: 'sample-image',
      out: '-',
      projectName: undefined,
      version: undefined,
      chip: 'esp32s3',
      size: 1572864,
      json: false,
      virtual: false,
    });
    assert.deepEqual(parseCommandLine(['help', 'upload']), { kind: 'help', topic: 'upload', json: false });
    assert.deepEqual(parseCommandLine(['scan', '-h']), { kind: 'help', topic: 'scan', json: false });
  });

  it('names the mistake and the command whose usage applies', () => {
    const mistake = (args: string[], message: RegExp, topic?: string) =>
      assert.throws(
        () => parseCommandLine(args),
        (err: UsageError) => {
          assert.ok(err instanceof UsageError);
          assert.match(err.message, message);
          assert.equal(err.topic, topic);
          return true;
        },
      );
    mistake([], /no command given/);
    mistake(['flash'], /unknown command "flash"/);
    mistake(['upload', '-d', 'x'], /needs the firmware file/, 'upload');
    mistake(['upload', 'a', 'b', '-d', 'x'], /one file/, 'upload');
    mistake(['upload', 'a', '-d', 'x', '--timeout', '0'], /--timeout takes seconds/, 'upload');
    mistake(['upload', 'a', '-d', 'x', '--protocol', 'v3'], /--protocol is one of auto, seed/, 'upload');
    mistake(['info', '--duration', '3', '-d', 'x'], /info does not take --duration/, 'info');
    mistake(['scan', '--nope'], /Unknown option '--nope'$/, 'scan');
    // A value with a dash in front is checked as the option's own, not left to parseArgs' "ambiguous".
    mistake(['scan', '--duration', '-1'], /^--duration takes seconds, a number from 0\.001 to 3600 \(got "-1"\)$/, 'scan');
    mistake(['info', '--timeout', '0.0005', '-d', 'x'], /^--timeout takes seconds, a number from 0\.001 to 3600 \(got "0\.0005"\)$/, 'info');
    mistake(['info', '-d', 'x', '--timeout', '-5'], /^--timeout takes seconds, .*\(got "-5"\)$/, 'info');
    mistake(['sample-image', '--out', 'x.bin', '--size', '-3'], /^--size takes a size in bytes, .*\(got "-3"\)$/, 'sample-image');
    mistake(['upload', 'a', '--device', '-x'], /^--device needs a value, and "-x" looks like an option: if it is the value, write --device=-x$/, 'upload');
    mistake(['upload', 'a', '-d', '-x'], /^--device needs a value, and "-x" looks like an option: if it is the value, write --device=-x$/, 'upload');
    mistake(['sample-image', '-o', '-x'], /^--out needs a value, and "-x" looks like an option: if it is the value, write --out=-x$/, 'sample-image');
    mistake(['upload', 'a', '-d', 'x', '--base', 'b1.bin', '--base', 'b2.bin'], /^--base is given 2 times: give it once, the image the device runs now$/, 'upload');
    mistake(
      ['upload', 'a', '-d', 'x', '--base', 'b.bin', '--protocol', 'seed'],
      /^--base is the base of a delta patch, which only protocol v2 carries: --protocol seed would send the whole image/,
      'upload',
    );
    mistake(['upload', 'a', '-d', 'x', '--device', 'y'], /^--device is given 2 times: give it once$/, 'upload');
    mistake(['sample-image', '--out', 'a.bin', '--app-version', '1.0.0', '-o', 'b.bin'], /^--out is given 2 times: give it once$/, 'sample-image');
    mistake(['info', '--device'], /--device/, 'info');
    mistake(['keygen'], /keygen needs --out FILE/, 'keygen');
    mistake(['keygen', '--out', 'k.pem', '--scheme', 'rsa2048'], /--scheme is one of rsa3072, ecdsa256/, 'keygen');
    mistake(['keygen', '--out', 'k.pem', 'extra'], /keygen takes no operands/, 'keygen');
    mistake(['sign', '--out', 's.bin', 'app.bin'], /sign needs --key FILE/, 'sign');
    mistake(['sign', '--key', 'a', '--key', 'b', '--key', 'c', '--key', 'd', '--out', 's.bin', 'app.bin'], /at most 3 --key/, 'sign');
    mistake(['sign', '--key', 'k.pem', 'app.bin'], /sign needs --out FILE/, 'sign');
    mistake(['sign', '--key', 'k.pem', '--out', 's.bin'], /sign needs IMAGE/, 'sign');
    mistake(['verify', 's.bin'], /verify needs --public-key FILE/, 'verify');
    mistake(['verify', '--public-key', 'p.pem', 'a.bin', 'b.bin'], /verify takes one image/, 'verify');
    mistake(['verify', '--public-key', 'p.pem', 's.bin', '--virtual'], /verify works on files, without Bluetooth; it does not take --virtual/, 'verify');
    mistake(['pubkey', '--key', 'a.pem', '--key', 'b.pem'], /pubkey takes one --key/, 'pubkey');
    mistake(['pubkey', '--key', 'k.pem', '--device', 'x'], /pubkey does not take --device/, 'pubkey');
    mistake(['upload', 'a.bin', '-d', 'x', '--append'], /upload does not take --append/, 'upload');
    mistake(['sample-image'], /sample-image needs --out FILE/, 'sample-image');
    mistake(['sample-image', '-o', 'a.bin', '--size', 'big'], /--size takes a size in bytes, or with k or M/, 'sample-image');
    mistake(['sample-image', '-o', '-', '--json'], /--out - writes the image to standard output, where --json would go/, 'sample-image');
    mistake(['sample-image', '-o', 'a.bin', '--virtual'], /sample-image works on files/, 'sample-image');
  });
});

describe('Ctrl-C and SIGTERM', () => {
  /** The handler main installs, on a command that never ends by itself (whatever it waits for). */
  function handler(graceMs: number, json?: string[]) {
    const controller = new AbortController();
    const said: string[] = [];
    const exits: number[] = [];
    let exited: () => void = () => undefined;
    const exit = new Promise<void>((resolve) => (exited = resolve));
    const onSignal = signalHandler(
      controller,
      { write: (t: string) => said.push(t) },
      (status) => {
        exits.push(status);
        exited();
      },
      graceMs,
      json && { write: (t: string) => json.push(t) },
    );
    return { controller, said, exits, exit, onSignal };
  }

  it('the first cancels the command, and quits with 130 when the command does not end', async () => {
    const h = handler(1);
    h.onSignal();
    assert.equal(h.controller.signal.aborted, true);
    assert.deepEqual(h.exits, [], 'the command gets its chance to end as cancelled');
    await h.exit;
    assert.deepEqual(h.exits, [EXIT_CANCELLED]);
    assert.match(h.said.join(''), /cancelling \(Ctrl-C again to quit at once\)\n.*still not stopped .* after the cancel: quitting\n$/s);
  });

  it('with --json, quitting after the grace writes the cancellation as JSON', async () => {
    const json: string[] = [];
    const h = handler(1, json);
    h.onSignal();
    await h.exit;
    assert.equal(json.length, 1);
    const out = JSON.parse(json[0]) as { error: { code: string; message: string } };
    assert.equal(out.error.code, 'CANCELLED');
    assert.match(out.error.message, /still not stopped/);
  });

  it('the second quits at once with 130', () => {
    const h = handler(3_600_000);
    h.onSignal();
    h.onSignal();
    assert.deepEqual(h.exits, [EXIT_CANCELLED]);
  });
});

describe('progress display', () => {
  const at = (phase: Progress['phase'], percent = 0): Progress => ({
    phase,
    percent,
    bytesSent: percent * 100,
    totalBytes: 10_000,
    bytesPerSecond: 20_480,
  });

  it('on a terminal, redraws one line with \\r, at most every 100 ms within a phase, and ends it with a newline', () => {
    let out = '';
    let now = 0;
    const progress = new ProgressReporter({ isTTY: true, columns: 60, write: (s: string) => (out += s) }, () => now);
    progress.update(at('connecting'));
    progress.update(at('uploading', 1));
    now = 50;
    progress.update(at('uploading', 2)); // too soon: skipped
    now = 150;
    progress.update(at('uploading', 42));
    progress.update(at('uploading', 100)); // the end is always drawn
    progress.update(at('verifying', 100));
    progress.finish();
    const frames = out.split('\r').slice(1);
    assert.equal(frames.length, 5);
    assert.ok(!out.slice(0, -1).includes('\n'), 'one line until finish');
    assert.ok(out.endsWith('\n'));
    assert.equal(frames[0], 'connecting\x1b[K');
    // eslint-disable-next-line no-control-regex -- the terminal's erase-to-end-of-line sequence is what is checked
    assert.match(frames[2], /^uploading +\[#+\.+\] +42 % +20\.0 KB\/s\x1b\[K$/);
    for (const f of frames) assert.ok(f.replace('\x1b[K', '').replace('\n', '').length < 60, `fits 60 columns: ${f}`);
    const bars = frames.slice(1, 4).map((f) => f.indexOf(']'));
    assert.equal(new Set(bars).size, 1, 'the bar keeps its width');
  });

  it('elsewhere, prints a line per phase and per tenth', () => {
    let out = '';
    const progress = new ProgressReporter({ write: (s: string) => (out += s) });
    progress.update(at('scanning'));
    for (let p = 0; p <= 100; p += 3) progress.update(at('uploading', p));
    progress.update(at('uploading', 100));
    progress.update(at('verifying', 100));
    progress.finish();
    const lines = out.trimEnd().split('\n');
    assert.equal(lines[0], 'looking for the device');
    assert.deepEqual(
      lines.slice(1, -1).map((l) => Number(/(\d+) %/.exec(l)![1])),
      [0, 12, 21, 30, 42, 51, 60, 72, 81, 90, 100],
    );
    assert.equal(lines[lines.length - 1], 'verifying');
  });
});

describe('result in words', () => {
  const base: UpdateResult = {
    device: { name: 'lamp', address: '24:0a:c4:00:00:01' },
    image: { chip: 'ESP32', chipId: 0, project: 'lamp', version: '2.5.0', idfVersion: 'v5.3.1', secureVersion: 0, size: 2048, sha256: '00', signed: false },
    protocol: 'v2',
    mtu: 256,
    packetSize: 249,
    packets: 9,
    bytes: 2048,
    bytesSent: 2048,
    durationMs: 1500,
    bytesPerSecond: 4096,
    link: { mtu: 256 },
    restarted: true,
    confirmed: true,
    runningVersion: '2.5.0',
    resumes: 0,
    skipped: false,
    previousVersion: '2.4.0',
    authenticated: true,
  };

  it('says what is known for each outcome, never more', () => {
    assert.equal(
      formatResult(base),
      'updated lamp (24:0a:c4:00:00:01) to 2.5.0 (was 2.4.0), confirmed\n  protocol v2, 2.0 KB in 1.5 s, 4.0 KB/s, MTU 256, 9 packets of up to 249 bytes, the device proved it holds its key\n',
    );
    assert.match(formatResult({ ...base, confirmed: false }), /^updated .* to 2\.5\.0 \(was 2\.4\.0\); the device confirms it after its self-test$/m);
    assert.match(formatResult({ ...base, resumes: 2 }), /, 2 resumed after a lost link, /m);
    assert.match(formatResult({ ...base, packets: 1 }), /, 1 packet of up to 249 bytes, /m);
    assert.match(formatResult({ ...base, authenticated: false }), /not authenticated: nothing proves it was your device$/m);
    assert.equal(formatResult({ ...base, skipped: true }), 'lamp (24:0a:c4:00:00:01) already runs lamp 2.5.0: nothing sent\n');
    assert.equal(formatResult({ ...base, skipped: true, authenticated: false }), 'lamp (24:0a:c4:00:00:01) already runs lamp 2.5.0: nothing sent (not authenticated)\n');
    // A call that only finished what an earlier one left: no rate, no packets, nothing claimed of a previous version.
    assert.equal(
      formatResult({ ...base, bytesSent: 0, bytesPerSecond: 0, packets: 0, packetSize: 0, previousVersion: undefined, restarted: false }),
      'updated lamp (24:0a:c4:00:00:01) to 2.5.0, confirmed\n  protocol v2, nothing left to send: the device already held all 2.0 KB from an earlier call, 1.5 s, the device proved it holds its key\n',
    );
    assert.match(formatResult({ ...base, bytesSent: 1024 }), /, 1\.0 KB of 2\.0 KB in 1\.5 s \(the device held the rest\), /m);
    const seed = { ...base, protocol: 'seed' as const, confirmed: false, runningVersion: undefined, previousVersion: undefined };
    assert.match(formatResult(seed), /^uploaded 2\.5\.0 to lamp \(24:0a:c4:00:00:01\) \(seed protocol\); the device accepted it and restarted$/m);
  });
});
