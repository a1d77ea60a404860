/**
 * `npm run test:hardware` without hardware: what it reads from its
 * environment and how it refuses a bad value, that it says how to start it
 * and exits 0 when nothing is set, and that it runs the very conformance
 * cases the virtual ESP32 passes (listed by mocha's dry run, not run).
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { delimiter } from 'node:path';
import { buildAppImage } from '../lib/image/app-image-builder';
import { generateSigningKey, publicKeyPem } from '../lib/image/signature';
import { HW_ENV, hardwareSetup, HardwareSetup, SKIP_MESSAGE } from './hardware/config';
import { HARDWARE_SPECS } from './hardware/run';
import { CONFORMANCE_TITLE } from './support/v2-conformance';

const SECRET = 'ab'.repeat(32);
const files: Record<string, Buffer> = {
  '/s/fleet.secret': Buffer.from(`${SECRET}\n`),
  '/s/short.secret': Buffer.from('abcd'),
  '/k/signing.pem': Buffer.from(generateSigningKey('ecdsa256')),
  '/i/a.bin': buildAppImage({ chipId: 5, version: '2.0.0', size: 4096, seed: 1 }),
  '/i/b.bin': buildAppImage({ chipId: 5, version: '2.1.0', size: 4096, seed: 2 }),
  '/i/notes.txt': Buffer.from('not an image'),
};
files['/k/public.pem'] = Buffer.from(publicKeyPem(files['/k/signing.pem'].toString()));

function read(path: string): Buffer {
  const data = files[path];
  if (!data) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
  return data;
}

const base = { [HW_ENV.adapter]: 'hci0', [HW_ENV.device]: 'lamp' };
const setup = (env: Record<string, string>) => hardwareSetup(env, read);

function errorOf(s: HardwareSetup): string {
  assert.equal(s.kind, 'error', JSON.stringify(s));
  return (s as { message: string }).message;
}

function configOf(s: HardwareSetup) {
  assert.equal(s.kind, 'run', JSON.stringify(s));
  return (s as Extract<HardwareSetup, { kind: 'run' }>).config;
}

describe('npm run test:hardware without hardware', function () {
  this.timeout(60_000);

  it('is skipped, saying which variables to set and where it is documented, when neither is set', () => {
    const s = setup({});
    assert.equal(s.kind, 'skip');
    assert.match(SKIP_MESSAGE, /BLE_OTA_HW_ADAPTER/);
    assert.match(SKIP_MESSAGE, /BLE_OTA_HW_DEVICE/);
    assert.match(SKIP_MESSAGE, /docs\/HARDWARE\.md/);
    assert.equal(setup({ [HW_ENV.adapter]: '  ', [HW_ENV.device]: '' }).kind, 'skip');
  });

  it('refuses one of the two without the other, naming the missing one', () => {
    assert.match(errorOf(setup({ [HW_ENV.device]: 'lamp' })), /BLE_OTA_HW_ADAPTER is not/);
    assert.match(errorOf(setup({ [HW_ENV.adapter]: 'hci0' })), /BLE_OTA_HW_DEVICE is not/);
  });

  it('takes the adapter as hciN or N, and refuses anything else with what it takes', () => {
    assert.equal(configOf(setup({ ...base, [HW_ENV.adapter]: 'hci1' })).adapter, 1);
    assert.equal(configOf(setup({ ...base, [HW_ENV.adapter]: '2' })).adapter, 2);
    assert.equal(configOf(setup({ ...base, [HW_ENV.adapter]: 'HCI0' })).adapter, 0);
    for (const bad of ['hci', 'usb0', 'hci-1', '999', 'hci0 hci1']) {
      const message = errorOf(setup({ ...base, [HW_ENV.adapter]: bad }));
      assert.match(message, /BLE_OTA_HW_ADAPTER must name an HCI adapter: hci0, hci1/);
      assert.ok(message.includes(`"${bad}"`), message);
    }
  });

  it('looks for the device by address when it looks like one, else by name', () => {
    assert.deepEqual(configOf(setup({ ...base, [HW_ENV.device]: '24-0A-C4-12-34-56' })).target, { address: '24:0a:c4:12:34:56' });
    assert.deepEqual(configOf(setup({ ...base, [HW_ENV.device]: ' kitchen lamp ' })).target, { name: 'kitchen lamp' });
  });

  it('reads the fleet secret from a file, and refuses a missing or malformed one without quoting it', () => {
    assert.equal(configOf(setup({ ...base, [HW_ENV.secretFile]: '/s/fleet.secret' })).secret, SECRET);
    assert.equal(configOf(setup(base)).secret, undefined);
    assert.match(errorOf(setup({ ...base, [HW_ENV.secretFile]: '/s/none' })), /BLE_OTA_HW_SECRET_FILE names \/s\/none, which cannot be read \(ENOENT\)/);
    const message = errorOf(setup({ ...base, [HW_ENV.secretFile]: '/s/short.secret' }));
    assert.match(message, /BLE_OTA_HW_SECRET_FILE \(\/s\/short\.secret\): The fleet secret must be 64 hex digits/);
    assert.ok(!message.includes('abcd'), message);
  });

  it('takes a private signing key only', () => {
    assert.match(configOf(setup({ ...base, [HW_ENV.signingKey]: '/k/signing.pem' })).signingKey ?? '', /PRIVATE KEY/);
    assert.match(errorOf(setup({ ...base, [HW_ENV.signingKey]: '/k/public.pem' })), /is a public key; the tests sign images/);
    assert.match(errorOf(setup({ ...base, [HW_ENV.signingKey]: '/i/notes.txt' })), /BLE_OTA_HW_SIGNING_KEY \(\/i\/notes\.txt\): This is not a PEM key/);
  });

  it('reads the builds to update to, separated as PATH is, and refuses a file that is no app image', () => {
    const images = configOf(setup({ ...base, [HW_ENV.images]: ['/i/a.bin', '/i/b.bin', ''].join(delimiter) })).images;
    assert.deepEqual(
      images.map((i) => [i.path, i.version, i.chipId]),
      [
        ['/i/a.bin', '2.0.0', 5],
        ['/i/b.bin', '2.1.0', 5],
      ],
    );
    assert.match(errorOf(setup({ ...base, [HW_ENV.images]: `/i/a.bin${delimiter}/i/notes.txt` })), /BLE_OTA_HW_IMAGES: \/i\/notes\.txt is no app image/);
  });

  /** Runs the command npm run test:hardware runs, with only these variables of ours set. */
  function runner(env: Record<string, string>) {
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BLE_OTA_HW_')));
    return spawnSync(process.execPath, [join(__dirname, 'hardware', 'run.js')], { env: { ...clean, ...env }, encoding: 'utf8', timeout: 30_000 });
  }

  it('the command exits 0 with the message when nothing is set, and 2 with the reason for a bad value', () => {
    const skipped = runner({});
    assert.equal(skipped.status, 0, skipped.stderr);
    assert.equal(skipped.stdout.trim(), `test:hardware: skipped: ${SKIP_MESSAGE}`);
    const bad = runner({ [HW_ENV.adapter]: 'bluetooth', [HW_ENV.device]: 'lamp' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /^test:hardware: BLE_OTA_HW_ADAPTER must name an HCI adapter/);
  });

  it('runs the conformance cases the virtual ESP32 passes, and the update', () => {
    /** Test titles by their top-level describe, from mocha's dry run of one file. */
    const titles = (file: string): Map<string, string[]> => {
      const run = spawnSync(process.execPath, [require.resolve('mocha/bin/mocha.js'), '--no-config', '--dry-run', '--reporter', 'json', file], {
        encoding: 'utf8',
        timeout: 30_000,
      });
      assert.equal(run.status, 0, run.stderr);
      const tests = (JSON.parse(run.stdout) as { tests: Array<{ fullTitle: string; title: string }> }).tests;
      const byTarget = new Map<string, string[]>();
      for (const t of tests) {
        const inner = [CONFORMANCE_TITLE, 'one update through the client'].find((d) => t.fullTitle.includes(` ${d} `));
        assert.ok(inner, t.fullTitle);
        const target = t.fullTitle.slice(0, t.fullTitle.indexOf(` ${inner} `));
        byTarget.set(target, [...(byTarget.get(target) ?? []), `${inner}: ${t.title}`]);
      }
      return byTarget;
    };
    assert.deepEqual(
      HARDWARE_SPECS.map((f) => f.slice(__dirname.length)),
      [join('/hardware', 'real-esp32.hw.js')],
    );
    const hardware = [...titles(HARDWARE_SPECS[0]).values()];
    assert.equal(hardware.length, 1);
    const virtual = titles(join(__dirname, 'v2-conformance.test.js'));
    const plain = virtual.get('the virtual ESP32 as the tests make it');
    const owned = [...virtual.entries()].find(([k]) => k.startsWith('a virtual ESP32-C3'))?.[1];
    assert.ok(plain && owned);
    assert.ok(plain.length >= 14, plain.join('\n'));
    assert.deepEqual(hardware[0], owned);
    assert.deepEqual(
      hardware[0].filter((t) => t.startsWith(CONFORMANCE_TITLE)),
      plain,
    );
    assert.ok(hardware[0].includes('one update through the client: sends the image the device does not run, restarts it into it and confirms it'));
  });
});
