/**
 * ble-ota-sample in a Node-RED runtime: the image it makes is the one asked
 * for (version typed in, or from the message), the message's other
 * properties pass, a version the message lacks is an error that says where
 * it was looked for, and where the virtual devices take only signed images
 * (BLE_OTA_VIRTUAL_SIGNING_KEY) the sample is signed with their key.
 */
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseEspImage } from '../lib/image/esp-image';
import { isSampleImage } from '../lib/image/sample-image';
import { generateSigningKey, verifyImageSignature } from '../lib/image/signature';
import { virtualDefaultsFromEnv } from '../lib/virtual/virtual-radio';
import { catchNode, deviceNode, exchange, helper, lastStatus, TestNode, uploadNode } from './support/node-red';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const sampleNode = require('../nodes/ble-ota-sample/ble-ota-sample') as unknown;

async function load(options: Record<string, unknown>): Promise<{ sample: TestNode; out: TestNode; errors: TestNode }> {
  const flow = [
    { id: 'tab', type: 'tab' },
    { id: 'sample', z: 'tab', type: 'ble-ota-sample', wires: [['out']], ...options },
    { id: 'out', z: 'tab', type: 'helper' },
    { id: 'catcher', z: 'tab', type: 'catch', scope: null, wires: [['errors']] },
    { id: 'errors', z: 'tab', type: 'helper' },
  ];
  await new Promise<void>((resolve) => helper.load([sampleNode, catchNode], flow, resolve));
  return { sample: helper.getNode('sample'), out: helper.getNode('out'), errors: helper.getNode('errors') };
}

describe('ble-ota-sample node', function () {
  this.timeout(20_000);
  before(function (done) {
    helper.startServer(done);
  });
  after(function (done) {
    helper.stopServer(done);
  });
  afterEach(() => helper.unload());

  it('puts the image asked for in msg.payload; the rest of the message passes', async () => {
    const wires = await load({ projectName: 'lamp', version: '3.1.4', versionType: 'str', chip: 'esp32c3', size: 64 });
    const { result } = await exchange(wires.sample, { topic: 'go', keep: 42 }, wires);
    assert.ok(result, 'a message');
    const image = result.payload as Buffer;
    const parsed = parseEspImage(image);
    assert.deepEqual([parsed.appDesc.projectName, parsed.appDesc.version, parsed.header.chipId], ['lamp', '3.1.4', 5]);
    assert.ok(Math.abs(image.length - 64 * 1024) < 64);
    assert.ok(isSampleImage(image), 'marked as a sample');
    assert.deepEqual([result.topic, result.keep], ['go', 42]);
  });

  it('takes the version from the message; one the message lacks is an error naming where it looked', async () => {
    const wires = await load({ projectName: 'fleet-app', version: 'targetVersion', versionType: 'msg', size: 16 });
    const { result } = await exchange(wires.sample, { targetVersion: '2.5.0' }, wires);
    assert.equal(parseEspImage(result!.payload as Buffer).appDesc.version, '2.5.0');
    const { error } = await exchange(wires.sample, {}, wires);
    assert.ok(error, 'Catch sees it');
    assert.equal((error.error as { message: string }).message, "The sample's version comes from msg.targetVersion, which is not set: set it, or type the version in the node.");
    assert.deepEqual(lastStatus(wires.sample), { fill: 'red', shape: 'ring', text: 'failed' });
  });

  it('a version too long for an app descriptor, or a size out of range, is refused with the reason', async () => {
    let wires = await load({ version: 'v'.repeat(32), versionType: 'str' });
    let { error } = await exchange(wires.sample, {}, wires);
    assert.equal((error!.error as { message: string }).message, "The sample's version is 32 bytes long: an app descriptor holds at most 31.");
    await helper.unload();
    // A fleet secret or a key taken for the version (msg.version set from the wrong property) is not repeated.
    const secret = randomBytes(32).toString('hex');
    const pem = generateSigningKey('ecdsa256');
    for (const version of [secret, pem]) {
      wires = await load({ version: 'version', versionType: 'msg' });
      ({ error } = await exchange(wires.sample, { version }, wires));
      const message = (error!.error as { message: string }).message;
      assert.match(message, /^The sample's version is \d+ bytes long/);
      assert.ok(!message.includes(version.slice(0, 20)) && !message.includes('-----BEGIN'), message);
      await helper.unload();
    }
    await helper.unload();
    wires = await load({ size: 'big' });
    ({ error } = await exchange(wires.sample, {}, wires));
    assert.equal((error!.error as { message: string }).message, 'Size: give a number of KiB from 1 to 16384.');
    await helper.unload();
    wires = await load({ size: 99999 });
    ({ error } = await exchange(wires.sample, {}, wires));
    assert.equal((error!.error as { message: string }).message, 'Size 99999 KiB is out of range: give a number of KiB from 1 to 16384.');
  });

  it('a Version left empty in the node is refused as empty, not as a property that is not set', async () => {
    const wires = await load({ version: '', versionType: 'str' });
    const { result, error } = await exchange(wires.sample, {}, wires);
    assert.equal(result, undefined);
    assert.equal(
      (error!.error as { message: string }).message,
      "The sample's Version is empty: type a version in the node (for example 1.2.0), or take it from a message property (msg.).",
    );
  });

  it('the upload node sends a sample to virtual devices only: over a Bluetooth adapter it is refused, before the radio is used', async () => {
    const flow = [
      { id: 'tab', type: 'tab' },
      { id: 'dev', type: 'ble-ota-device', device: 'esp32-real', backend: 'bluetooth', scanTimeout: 2, operationTimeout: 2 },
      { id: 'sample', z: 'tab', type: 'ble-ota-sample', size: 16, wires: [['up']] },
      { id: 'up', z: 'tab', type: 'ble-ota-upload', device: 'dev', wires: [['out'], []] },
      { id: 'out', z: 'tab', type: 'helper' },
      { id: 'catcher', z: 'tab', type: 'catch', scope: null, wires: [['errors']] },
      { id: 'errors', z: 'tab', type: 'helper' },
    ];
    await new Promise<void>((resolve) => helper.load([sampleNode, deviceNode, uploadNode, catchNode], flow, resolve));
    const errors = helper.getNode('errors');
    const caught = new Promise<Record<string, unknown>>((resolve) => errors.on('input', resolve));
    helper.getNode('sample').receive({});
    const error = (await caught).error as { code: string; message: string; source: { id: string } };
    assert.equal(error.source.id, 'up');
    assert.equal(error.code, 'IMAGE_SAMPLE');
    assert.match(error.message, /^This is a sample image .* so it is sent to virtual devices only\. Nothing was sent\./);
    assert.deepEqual(lastStatus(helper.getNode('up')), { fill: 'red', shape: 'ring', text: 'sample image' });
  });

  describe('where the virtual devices take only signed images', () => {
    let dir: string;
    const key = generateSigningKey('ecdsa256');
    before(() => {
      dir = mkdtempSync(join(tmpdir(), 'ble-ota-sample-key-'));
      writeFileSync(join(dir, 'key.pem'), key, { mode: 0o600 });
    });
    afterEach(() => delete process.env.BLE_OTA_VIRTUAL_SIGNING_KEY);
    after(() => rmSync(dir, { recursive: true, force: true }));

    it('signs the sample with their key (BLE_OTA_VIRTUAL_SIGNING_KEY)', async () => {
      process.env.BLE_OTA_VIRTUAL_SIGNING_KEY = join(dir, 'key.pem');
      const wires = await load({ size: 16 });
      const { result } = await exchange(wires.sample, {}, wires);
      const image = result!.payload as Buffer;
      assert.equal(verifyImageSignature(image, parseEspImage(image).imageLength, { publicKeyPem: key }).ok, true);
    });

    it('the same settings give the same signed image (a signature is random), a copy each time; other settings another', async () => {
      process.env.BLE_OTA_VIRTUAL_SIGNING_KEY = join(dir, 'key.pem');
      const wires = await load({ size: 16, version: 'version', versionType: 'msg' });
      const first = (await exchange(wires.sample, { version: '2.0.0' }, wires)).result!.payload as Buffer;
      first.fill(0); // a flow changing the Buffer it got changes no later sample
      const again = (await exchange(wires.sample, { version: '2.0.0' }, wires)).result!.payload as Buffer;
      const next = (await exchange(wires.sample, { version: '2.1.0' }, wires)).result!.payload as Buffer;
      const third = (await exchange(wires.sample, { version: '2.0.0' }, wires)).result!.payload as Buffer;
      assert.equal(verifyImageSignature(again, parseEspImage(again).imageLength, { publicKeyPem: key }).ok, true);
      assert.ok(again.equals(third), 'byte for byte: a device that runs it reports the same SHA-256');
      assert.equal(parseEspImage(next).appDesc.version, '2.1.0');
      assert.ok(!next.equals(again));
    });

    it('a key it cannot read is an error that names the file, never a key', async () => {
      process.env.BLE_OTA_VIRTUAL_SIGNING_KEY = join(dir, 'missing.pem');
      const wires = await load({ size: 16 });
      const { error } = await exchange(wires.sample, {}, wires);
      assert.match((error!.error as { message: string }).message, /BLE_OTA_VIRTUAL_SIGNING_KEY, .*missing\.pem\) cannot be read \(ENOENT\)/);
    });

    it("the key's PEM text set where its path goes is refused without repeating any of it", async () => {
      process.env.BLE_OTA_VIRTUAL_SIGNING_KEY = key;
      const wires = await load({ size: 16 });
      const { error } = await exchange(wires.sample, {}, wires);
      const message = (error!.error as { message: string }).message;
      assert.match(message, /^The virtual devices' signing key \(BLE_OTA_VIRTUAL_SIGNING_KEY, \[PEM text, not repeated\]\) cannot be read/);
      // The virtual devices themselves (the command line's --virtual, the virtual radio) alike.
      let radio = '';
      try {
        virtualDefaultsFromEnv({ BLE_OTA_VIRTUAL_SIGNING_KEY: key });
      } catch (err) {
        radio = (err as Error).message;
      }
      assert.match(radio, /^BLE_OTA_VIRTUAL_SIGNING_KEY names \[PEM text, not repeated\], which cannot be read/);
      const body = key.split('\n')[1];
      for (const text of [message, radio]) assert.ok(!text.includes('-----BEGIN') && !text.includes(body.slice(0, 20)), text);
    });

    it('a key that is no regular file (a device, a FIFO) is not read: an error says what it is', async () => {
      process.env.BLE_OTA_VIRTUAL_SIGNING_KEY = '/dev/null';
      const wires = await load({ size: 16 });
      const { error } = await exchange(wires.sample, {}, wires);
      assert.equal(
        (error!.error as { message: string }).message,
        "The virtual devices' signing key (BLE_OTA_VIRTUAL_SIGNING_KEY, /dev/null) cannot be read (not a regular file: a FIFO, a device, a socket or a folder), so the sample cannot be signed for them.",
      );
      // The virtual devices themselves (the command line's --virtual, the virtual radio) refuse it alike.
      assert.throws(() => virtualDefaultsFromEnv({ BLE_OTA_VIRTUAL_SIGNING_KEY: '/dev/null' }), {
        code: 'INVALID_ARGUMENT',
        message:
          "BLE_OTA_VIRTUAL_SIGNING_KEY names /dev/null, which cannot be read (not a regular file: a FIFO, a device, a socket or a folder): give the path of the virtual devices' signing key (a PEM file), or unset it.",
      });
    });
  });
});
