/**
 * ble-ota-upload in a real Node-RED runtime (node-red-node-test-helper),
 * against virtual ESP32s.
 */
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { OtaEvent, otaEvents } from '../nodes/shared/ota-events';
import { buildAppImage } from '../lib/image/app-image-builder';
import { generateSigningKey } from '../lib/image/signature';
import { OWNER, ownedDevice, signedImage } from './support/owner';
import { systemBluetoothProblem } from '../lib/noble-loader';
import { addressFromName, VirtualEsp32 } from '../lib/virtual/virtual-device';
import { sharedVirtualRadio } from '../lib/virtual/virtual-radio';
import { eventually } from './support/eventually';
import { fixture, haveFixtures } from './support/fixtures';
import { catchNode, deviceNode, exchange, helper, lastStatus, TestNode, uploadNode, useNodeRed } from './support/node-red';

type Msg = Record<string, unknown>;

function flow(deviceName: string, backend = 'virtual', options: Record<string, unknown> = {}) {
  return [
    { id: 'tab', type: 'tab' },
    // The virtual radio has only the devices a device node declares.
    { id: 'dev', type: 'ble-ota-device', device: deviceName, backend, virtualDevices: backend === 'virtual' ? deviceName : '', scanTimeout: 3, operationTimeout: 3 },
    { id: 'up', z: 'tab', type: 'ble-ota-upload', device: 'dev', wires: [['out'], ['progress']], ...options },
    { id: 'out', z: 'tab', type: 'helper' },
    { id: 'progress', z: 'tab', type: 'helper' },
    { id: 'catcher', z: 'tab', type: 'catch', scope: null, uncaught: false, wires: [['errors']] },
    { id: 'errors', z: 'tab', type: 'helper' },
  ];
}

interface Loaded {
  up: TestNode;
  out: TestNode;
  progress: TestNode;
  errors: TestNode;
}

async function load(deviceName: string, backend?: string, options?: Record<string, unknown>): Promise<Loaded> {
  await new Promise<void>((resolve) => helper.load([deviceNode, uploadNode, catchNode], flow(deviceName, backend, options), resolve));
  return { up: helper.getNode('up'), out: helper.getNode('out'), progress: helper.getNode('progress'), errors: helper.getNode('errors') };
}

/** Every status text a node showed, in order (what a core Status node receives). */
function statusTexts(node: TestNode): string[] {
  const spy = node.status as unknown as { args: Array<[{ text?: string }]> }; // the test helper's sinon spy
  return spy.args.map(([status]) => status.text ?? '');
}

/** Sends msg into the upload node; resolves with the result or the Catch node's error message. */
const send = (nodes: Loaded, msg: Msg) => exchange(nodes.up, msg, nodes);

describe('ble-ota-upload node', function () {
  this.timeout(60_000);

  useNodeRed();

  it('updates a virtual ESP32 with a 1 MB image: after its restart it boots the new slot, byte-identical', async () => {
    const nodes = await load('node-test-1mb');
    const image = buildAppImage({ size: 1024 * 1024, projectName: 'fleet-app', version: '1.4.2', seed: 42 });
    const { result, error } = await send(nodes, { payload: image });
    assert.equal(error, undefined, JSON.stringify(error?.error));
    const payload = result!.payload as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- result shape asserted field by field below
    assert.equal(payload.device.name, 'node-test-1mb');
    assert.equal(payload.image.project, 'fleet-app');
    assert.equal(payload.image.version, '1.4.2');
    assert.equal(payload.bytes, image.length);
    assert.ok(payload.durationMs > 0 && payload.bytesPerSecond > 0);
    assert.deepEqual(lastStatus(nodes.up), { fill: 'green', shape: 'dot', text: 'confirmed 1.4.2' });
    assert.equal(payload.protocol, 'v2');
    assert.equal(payload.confirmed, true);
    assert.equal(payload.runningVersion, '1.4.2');

    const device: VirtualEsp32 = await sharedVirtualRadio().ensureDevice('node-test-1mb');
    const state = await eventually(
      () => device.state(),
      (s) => s.running === 'ota_1' && s.transfer === 'idle',
      5000,
      'boot of ota_1',
    );
    assert.equal(state.slots.ota_1.state, 'valid');
    assert.ok((await device.readFlash('ota_1', 0, image.length)).equals(image));
  });

  describe('refuses what is not a firmware image, before touching the device', () => {
    const cases: Array<{ title: string; payload: () => unknown; code: string; fixture?: boolean }> = [
      { title: 'a string', payload: () => 'firmware.bin', code: 'IMAGE_NOT_BUFFER' },
      { title: 'an empty Buffer', payload: () => Buffer.alloc(0), code: 'IMAGE_EMPTY' },
      { title: 'random bytes', payload: () => randomBytes(64 * 1024), code: 'IMAGE_NOT_AN_IMAGE' },
      { title: 'bootloader_esp32.bin', payload: () => fixture('bootloader_esp32.bin'), code: 'IMAGE_BOOTLOADER', fixture: true },
      { title: 'partitions_singleapp.bin', payload: () => fixture('partitions_singleapp.bin'), code: 'IMAGE_PARTITION_TABLE', fixture: true },
      { title: 'esp8266_deepsleep.bin', payload: () => fixture('esp8266_deepsleep.bin'), code: 'IMAGE_ESP8266', fixture: true },
    ];
    const messages = new Map<string, string>();

    for (const c of cases) {
      const title = c.fixture && !haveFixtures ? `${c.title} (skipped: ../shared/fixtures not present)` : c.title;
      it(title, async function () {
        if (c.fixture && !haveFixtures) this.skip();
        const nodes = await load('node-test-refuse');
        const device = await sharedVirtualRadio().ensureDevice('node-test-refuse');
        const { result, error } = await send(nodes, { payload: c.payload() });
        assert.equal(result, undefined);
        const err = error!.error as { message: string; code: string };
        assert.equal(err.code, c.code);
        assert.ok(err.message.length > 40, `a readable message: ${err.message}`);
        assert.match(err.message, /^[A-Z].*\.$/s, 'a sentence, without a class name in front');
        assert.doesNotMatch(err.message, /^\w*Error: /);
        for (const [other, message] of messages) assert.notEqual(err.message, message, `same message as ${other}`);
        messages.set(c.title, err.message);
        assert.deepEqual(lastStatus(nodes.up), { fill: 'red', shape: 'ring', text: 'invalid image' });
        const state = await device.state();
        assert.equal(state.running, 'ota_0');
        assert.equal(state.slots.ota_1.state, 'empty', 'nothing was written to the device');
        assert.ok(
          device.logs.every((l) => !/request/i.test(l)),
          'no OTA request reached the device',
        );
      });
    }
  });

  it('a file streamed in pieces (File In "a stream of Buffer objects"): one IMAGE_STREAMED per file, the other pieces dropped', async () => {
    const nodes = await load('node-test-streamed');
    const image = buildAppImage({ size: 29 * 1024, projectName: 'app', version: '2.0.0', seed: 60 });
    const errors: Msg[] = [];
    nodes.errors.on('input', (m: Msg) => errors.push(m));
    // As File In sends a file in stream mode: msg.parts with the file's id, the count on the last piece.
    const pieces = (id: string, count: number) =>
      Array.from({ length: count }, (_, index) => ({
        payload: image.subarray(index * 1024, (index + 1) * 1024),
        filename: 'app.bin',
        parts: { id, type: 'buffer', ch: '', index, ...(index === count - 1 ? { count } : {}) },
      }));
    for (const msg of [...pieces('file-1', 29), ...pieces('file-2', 3)]) nodes.up.receive(msg);
    // Messages are handled in order: once this one's error is in, every piece was handled.
    nodes.up.receive({ payload: 'the end' });
    const codes = await eventually(
      async () => errors.map((m) => (m.error as { code: string }).code),
      (c) => c.includes('IMAGE_NOT_BUFFER'),
      10_000,
      'the last error',
    );
    assert.deepEqual(codes, ['IMAGE_STREAMED', 'IMAGE_STREAMED', 'IMAGE_NOT_BUFFER']);
    const first = errors[0].error as { message: string };
    assert.match(first.message, /^The firmware arrived in pieces.*a single Buffer object/);
    assert.equal((errors[0].parts as { id: string }).id, 'file-1');
    assert.equal((errors[1].parts as { id: string }).id, 'file-2');
  });

  it('msg.device, msg.size and msg.sha256 of the wrong kind are refused with what was given; a size as digits and a hash in capitals are taken', async () => {
    const nodes = await load('node-test-named');
    const image = buildAppImage({ size: 8 * 1024, projectName: 'app', version: '2.0.0', seed: 63 });
    const hash = createHash('sha256').update(image).digest('hex');
    const refused = async (msg: Msg) => {
      const { result, error } = await send(nodes, { payload: image, ...msg });
      assert.equal(result, undefined, 'nothing updated');
      return error!.error as { code: string; message: string };
    };
    // A device name that is no string would otherwise have updated the configured device.
    let err = await refused({ device: 7 });
    assert.equal(err.code, 'INVALID_ARGUMENT');
    assert.match(err.message, /^msg\.device is number 7, not a string: give the name, address or Bluetooth id of the device to update/);
    err = await refused({ device: { name: 'esp32' } });
    assert.match(err.message, /^msg\.device is object, not a string/);
    err = await refused({ size: 'big' });
    assert.equal(err.code, 'INVALID_ARGUMENT');
    assert.match(err.message, /^msg\.size "big" is no size in bytes: give the image's size as a whole number/);
    err = await refused({ size: -1 });
    assert.match(err.message, /^msg\.size number -1 is no size in bytes/);
    err = await refused({ size: image.length + 1 });
    assert.equal(err.code, 'IMAGE_MISMATCH');
    err = await refused({ sha256: 'xyz' });
    assert.equal(err.code, 'INVALID_ARGUMENT');
    assert.match(err.message, /^msg\.sha256 "xyz" is no SHA-256: give the image's SHA-256 as 64 hex digits/);
    err = await refused({ sha256: '00'.repeat(32) });
    assert.equal(err.code, 'IMAGE_MISMATCH');
    // The fleet secret has a SHA-256's form: one set as msg.sha256 by mistake is not repeated.
    const secret = randomBytes(32).toString('hex');
    err = await refused({ sha256: secret });
    assert.equal(err.message, `The image's SHA-256 is ${hash}, not the one msg.sha256 names: it is not the image meant (replaced or damaged on its way). Nothing was sent.`);
    assert.ok(!err.message.includes(secret.slice(0, 20)));
    // As an HTTP header or a query parameter gives them: taken.
    const { result, error } = await send(nodes, { payload: image, size: ` ${image.length}`, sha256: hash.toUpperCase(), device: ' node-test-named ' });
    assert.equal(error, undefined);
    assert.equal((result!.payload as { confirmed: boolean }).confirmed, true);
  });

  it('a device the virtual radio does not have: DEVICE_NOT_FOUND says to add it to In range', async () => {
    const nodes = await load('node-test-declared');
    const image = buildAppImage({ size: 8 * 1024, projectName: 'app', version: '2.0.0', seed: 64 });
    const { error } = await send(nodes, { payload: image, device: 'node-test-undeclared' });
    const err = error!.error as { code: string; message: string };
    assert.equal(err.code, 'DEVICE_NOT_FOUND');
    assert.match(err.message, /In range list\) or in BLE_OTA_VIRTUAL_DEVICES, and "node-test-undeclared" is in none: add it there and Deploy\.$/);
  });

  describe('a fleet secret where a device is named: refused, and shown nowhere (errors, status, events, log)', () => {
    const secret = randomBytes(32).toString('hex');
    const events: OtaEvent[] = [];
    const onEvent = (e: OtaEvent) => events.push(e);
    beforeEach(() => {
      events.length = 0;
      otaEvents.on('event', onEvent);
    });
    afterEach(() => otaEvents.off('event', onEvent));

    /** Everything a flow, a Status node or the log got from the node: none of it may hold the secret (or what `hidden` names). */
    function assertNotShown(nodes: Loaded, errors: Msg[], hidden: string[] = [secret]): void {
      const logged = (helper as unknown as { log(): { args: Array<[{ msg?: unknown }]> } }).log();
      const shown = [...logged.args.map(([e]) => String(e.msg)), ...statusTexts(nodes.up), ...events.map((e) => JSON.stringify(e)), ...errors.map((m) => JSON.stringify(m.error))];
      assert.ok(shown.length > 0);
      for (const text of shown) for (const part of hidden) assert.ok(!text.toLowerCase().includes(part.toLowerCase()), text);
    }

    it('msg.device of 64 hex digits (after 0x too, spaces around): INVALID_ARGUMENT saying why; the device is not touched', async () => {
      const nodes = await load('node-test-secret-msg');
      const image = buildAppImage({ size: 8 * 1024, projectName: 'app', version: '2.0.0', seed: 66 });
      const errors: Msg[] = [];
      for (const device of [secret, ` 0x${secret.toUpperCase()}\n`]) {
        const { result, error } = await send(nodes, { payload: image, device });
        assert.equal(result, undefined, 'nothing updated');
        errors.push(error!);
        const err = error!.error as { code: string; message: string };
        assert.equal(err.code, 'INVALID_ARGUMENT');
        assert.equal(
          err.message,
          "msg.device looks like a key or a secret, not a device name (64 hex digits, a fleet secret's form, or a key's PEM text), so it is not shown here: give the name, address or Bluetooth id of the device to update; a fleet secret goes in the device node's Fleet secret field, never in a message. Nothing was sent.",
        );
      }
      assert.deepEqual(
        events.map((e) => [e.state, e.device]),
        [
          ['failed', {}],
          ['failed', {}],
        ],
      );
      assertNotShown(nodes, errors);
    });

    it("in the device node's Device field: an error at deploy, and every message refused, msg.device or not", async () => {
      const name = 'node-test-secret-field';
      const secretFlow = flow(name).map((n) => (n.id === 'dev' ? { ...n, device: ` ${secret} ` } : n));
      await new Promise<void>((resolve) => helper.load([deviceNode, uploadNode, catchNode], secretFlow, resolve));
      const nodes: Loaded = { up: helper.getNode('up'), out: helper.getNode('out'), progress: helper.getNode('progress'), errors: helper.getNode('errors') };
      const logged = (helper as unknown as { log(): { args: Array<[{ level: number; id?: string; msg?: unknown }]>; ERROR: number } }).log();
      const deployErrors = logged.args.filter(([e]) => e.level === logged.ERROR && e.id === 'dev').map(([e]) => String(e.msg));
      assert.deepEqual(deployErrors, [
        "The Device field looks like a key or a secret, not a device name (64 hex digits, a fleet secret's form, or a key's PEM text), so it is not shown here: a device is named by its name, address or Bluetooth id; a fleet secret goes in the Fleet secret field. No device is updated or asked through this device node until you correct the field and Deploy.",
      ]);
      const image = buildAppImage({ size: 8 * 1024, projectName: 'app', version: '2.0.0', seed: 67 });
      const errors: Msg[] = [];
      for (const msg of [{ payload: image }, { payload: image, device: name }]) {
        const { result, error } = await send(nodes, msg);
        assert.equal(result, undefined, 'nothing updated');
        errors.push(error!);
        const err = error!.error as { code: string; message: string };
        assert.equal(err.code, 'INVALID_ARGUMENT');
        assert.match(
          err.message,
          /^The Device field looks like a key or a secret, not a device name \(64 hex digits, a fleet secret's form, or a key's PEM text\), so it is not shown here/,
        );
      }
      assert.equal(lastStatus(nodes.up).fill, 'red');
      assertNotShown(nodes, errors);
    });

    it("a key's PEM text as msg.device or in the Device field: refused before any scan, saying it looks like a key or a secret, and shown nowhere", async () => {
      const pem = generateSigningKey('ecdsa256');
      const hidden = ['-----BEGIN', pem.split('\n')[1].slice(0, 20)];
      const image = buildAppImage({ size: 8 * 1024, projectName: 'app', version: '2.0.0', seed: 68 });
      let nodes = await load('node-test-pem-msg');
      let errors: Msg[] = [];
      // As pasted, and as a one-line field or a header would carry it.
      for (const device of [pem, pem.replace(/\n/g, '')]) {
        const { result, error } = await send(nodes, { payload: image, device });
        assert.equal(result, undefined, 'nothing updated');
        errors.push(error!);
        const err = error!.error as { code: string; message: string };
        assert.equal(err.code, 'INVALID_ARGUMENT');
        assert.match(
          err.message,
          /^msg\.device looks like a key or a secret, not a device name .*so it is not shown here: give the name, address or Bluetooth id of the device to update/,
        );
      }
      assert.deepEqual(
        events.map((e) => [e.state, e.device]),
        [
          ['failed', {}],
          ['failed', {}],
        ],
      );
      assert.deepEqual(lastStatus(nodes.up), { fill: 'red', shape: 'ring', text: 'failed' });
      assertNotShown(nodes, errors, hidden);
      await helper.unload();

      const name = 'node-test-pem-field';
      const pemFlow = flow(name).map((n) => (n.id === 'dev' ? { ...n, device: pem } : n));
      await new Promise<void>((resolve) => helper.load([deviceNode, uploadNode, catchNode], pemFlow, resolve));
      nodes = { up: helper.getNode('up'), out: helper.getNode('out'), progress: helper.getNode('progress'), errors: helper.getNode('errors') };
      errors = [];
      const { result, error } = await send(nodes, { payload: image });
      assert.equal(result, undefined, 'nothing updated');
      errors.push(error!);
      assert.match((error!.error as { message: string }).message, /^The Device field looks like a key or a secret, not a device name/);
      assert.equal(lastStatus(nodes.up).fill, 'red');
      assertNotShown(nodes, errors, hidden);
    });
  });

  it('a private key pasted as the public key: an error at deploy, and no update until it is replaced', async () => {
    const key = generateSigningKey('ecdsa256');
    const nodes = await load('node-test-private-key', 'virtual', { requireSignature: true, publicKey: key });
    const logged = (helper as unknown as { log(): { args: Array<[{ level: number; id?: string; msg?: unknown }]>; ERROR: number } }).log();
    const errors = logged.args.filter(([e]) => e.level === logged.ERROR && e.id === 'up').map(([e]) => String(e.msg));
    assert.equal(errors.length, 1, errors.join('\n'));
    assert.match(errors[0], /^The Public key field holds a private key \(a signing key\).*esp32-ble-ota pubkey --key signing-key\.pem prints it/);
    assert.doesNotMatch(errors[0], /BEGIN/, 'the key itself is not repeated');
    assert.equal(lastStatus(nodes.up)?.fill, 'red');
    const image = buildAppImage({ size: 8 * 1024, projectName: 'app', version: '2.0.0', seed: 65, signingKeys: key });
    const { result, error } = await send(nodes, { payload: image });
    assert.equal(result, undefined, 'an image signed with that very key is not sent either');
    const err = error!.error as { code: string; message: string };
    assert.equal(err.code, 'INVALID_ARGUMENT');
    assert.match(err.message, /^The Public key field holds a private key/);
  });

  it('a base64 string: IMAGE_NOT_BUFFER with a hint to decode it', async () => {
    const nodes = await load('node-test-base64');
    const image = buildAppImage({ size: 8 * 1024, projectName: 'app', version: '2.0.0', seed: 61 });
    const { error } = await send(nodes, { payload: image.toString('base64') });
    const err = error!.error as { code: string; message: string };
    assert.equal(err.code, 'IMAGE_NOT_BUFFER');
    assert.match(err.message, /looks like base64.*Buffer\.from\(msg\.payload, 'base64'\)/);
    const { error: text } = await send(nodes, { payload: 'firmware.bin' });
    assert.doesNotMatch((text!.error as { message: string }).message, /base64/, 'no base64 hint for a file name');
  });

  it("a body an HTTP In node did not read as binary: the error says which Content-Type to send, or where a form's file is", async () => {
    const nodes = await load('node-test-http-body');
    const refused = async (msg: Msg) => {
      const { result, error } = await send(nodes, msg);
      assert.equal(result, undefined, 'nothing updated');
      return error!.error as { code: string; message: string };
    };
    const http = (contentType?: string, extra: Msg = {}) => ({ headers: contentType ? { 'content-type': contentType } : {}, ...extra });
    // curl --data-binary without -H: HTTP In parses the file as form fields.
    const form = await refused({ payload: { garbage: '' }, req: http('application/x-www-form-urlencoded') });
    assert.equal(form.code, 'IMAGE_NOT_BUFFER');
    assert.match(
      form.message,
      /^msg\.payload is an object, not a Buffer with the image: the message came from an HTTP In node, which read the request's body \(Content-Type application\/x-www-form-urlencoded\) as text or form fields\. POST the image with Content-Type: application\/octet-stream/,
    );
    assert.match((await refused({ payload: '', req: http() })).message, /^msg\.payload is a string, .*\(sent without a Content-Type\)/);
    assert.match((await refused({ payload: 'x', req: http('text/plain; charset=utf-8') })).message, /\(Content-Type text\/plain\)/);
    // A multipart form to an HTTP In node that takes no uploads arrives as its raw bytes.
    const multipart = await refused({ payload: Buffer.from('------x\r\nContent-Disposition: form-data; name="f"\r\n\r\n'), req: http('multipart/form-data; boundary=----x') });
    assert.equal(multipart.code, 'IMAGE_NOT_AN_IMAGE');
    assert.match(
      multipart.message,
      /^msg\.payload holds a multipart form, not the image: .*Tick "Accept file uploads" in that node, and let a Change node set msg\.payload to msg\.req\.files\[0\]\.buffer\.$/,
    );
    // An HTTP In node that takes uploads: the payload is the form's fields, the file is elsewhere.
    const upload = await refused({ payload: {}, req: http('multipart/form-data; boundary=----x', { files: [{ buffer: Buffer.alloc(4) }] }) });
    assert.equal(upload.code, 'IMAGE_NOT_BUFFER');
    assert.match(upload.message, /^msg\.payload is an object, the fields of a form upload: the file itself is in msg\.req\.files\[0\]\.buffer\./);
    // ... whose file, moved to msg.payload as the example flow does, is no image: the image's own message,
    // not advice to tick "Accept file uploads" in an HTTP In node that has it ticked.
    const notImage = await refused({ payload: Buffer.from('module.exports = {};\n'), req: http('multipart/form-data; boundary=----x', { files: [{ buffer: Buffer.alloc(4) }] }) });
    assert.equal(notImage.code, 'IMAGE_NOT_AN_IMAGE');
    assert.match(notImage.message, /^This file is not an ESP32 firmware image/);
    // ... and a form with no file at all.
    const noFile = await refused({ payload: undefined, req: http('multipart/form-data; boundary=----x', { files: [] }) });
    assert.match(noFile.message, /^The form upload holds no file \(msg\.req\.files is empty\): send the image as a file field of the form/);
    // A binary body that is no image keeps the image's own message.
    assert.match((await refused({ payload: Buffer.from('hello'), req: http('application/octet-stream') })).message, /^This file is not an ESP32 firmware image/);
    // A header of a fleet secret's form is not repeated.
    const secret = 'ab'.repeat(32);
    assert.doesNotMatch((await refused({ payload: {}, req: http(`application/${secret}`) })).message, new RegExp(secret));
    // Without an HTTP request, no word of HTTP.
    assert.doesNotMatch((await refused({ payload: {} })).message, /HTTP In node, which/);
  });

  it('keeps Node-RED running when Bluetooth is unavailable: red status that says why, done(err) on input', async function () {
    const problem = systemBluetoothProblem();
    if (!problem) this.skip(); // this machine has working Bluetooth
    const nodes = await load('some-esp32', 'bluetooth');
    assert.deepEqual(lastStatus(nodes.up), { fill: 'red', shape: 'ring', text: problem!.reason });
    assert.ok(problem!.reason.length <= 24);
    const { error } = await send(nodes, { payload: buildAppImage({ size: 8192 }) });
    const err = error!.error as { message: string; code: string };
    assert.equal(err.code, 'BLUETOOTH_UNAVAILABLE');
    assert.match(err.message, /Bluetooth/);
  });

  it('reports progress on its second output: each phase, whole percents at most every 500 ms', async () => {
    const nodes = await load('node-test-progress');
    const reports: Array<{ phase: string; percent: number }> = [];
    nodes.progress.on('input', (m: Msg) => reports.push(m.payload as { phase: string; percent: number }));
    const started = Date.now();
    const { error } = await send(nodes, { payload: buildAppImage({ size: 256 * 1024, version: '2.0.0', seed: 50 }), topic: 't' });
    const elapsed = Date.now() - started;
    assert.equal(error, undefined);
    const phases = [...new Set(reports.map((r) => r.phase))];
    for (const phase of ['connecting', 'uploading', 'verifying', 'restarting', 'confirming']) assert.ok(phases.includes(phase), phase);
    const uploading = reports.filter((r) => r.phase === 'uploading').length;
    assert.ok(uploading <= 2 + elapsed / 500, `${uploading} uploading reports in ${elapsed} ms`);

    // The status follows the progress output's pace (counted, not timed) and never repeats itself.
    const statuses = statusTexts(nodes.up);
    for (let i = 1; i < statuses.length; i++) assert.notEqual(statuses[i], statuses[i - 1], `status ${i} repeats: ${statuses.join(' | ')}`);
    const uploadingStatuses = statuses.filter((text) => text.startsWith('uploading')).length;
    assert.ok(uploadingStatuses <= uploading, `${uploadingStatuses} uploading statuses, ${uploading} progress reports`);
    const words = statuses.filter((text) => text !== '').map((text) => text.split(' ')[0]);
    assert.deepEqual(words.slice(0, 2), ['scanning', 'connecting'], 'scanning first, then connecting, once each');
    assert.equal(words.filter((w) => w === 'connecting').length, 1, statuses.join(' | '));
  });

  it('msg.cancel cancels the running update; the device keeps its image', async () => {
    const nodes = await load('node-test-cancel');
    const device = await sharedVirtualRadio().ensureDevice('node-test-cancel');
    const running = send(nodes, { payload: buildAppImage({ size: 1024 * 1024, version: '3.0.0', seed: 51 }) });
    await new Promise<void>((resolve) => nodes.progress.on('input', (m: Msg) => (m.payload as { phase: string }).phase === 'uploading' && resolve()));
    nodes.up.receive({ cancel: true });
    const { error } = await running;
    assert.equal((error!.error as { code: string }).code, 'CANCELLED');
    assert.deepEqual(lastStatus(nodes.up), { fill: 'red', shape: 'ring', text: 'cancelled' });
    const state = await device.state();
    assert.equal(state.running, 'ota_0');
    assert.equal(state.slots.ota_0.state, 'valid');
  });

  it('only msg.cancel === true cancels: a string "false" (or "true", or 1) leaves the running and waiting updates alone', async () => {
    const nodes = await load('node-test-cancel-string');
    const results: Msg[] = [];
    const errors: Msg[] = [];
    const finished = new Promise<void>((resolve) =>
      nodes.out.on('input', (m: Msg) => {
        results.push(m);
        if (results.length === 2) resolve();
      }),
    );
    nodes.errors.on('input', (m: Msg) => errors.push(m));
    const uploading = new Promise<void>((resolve) => nodes.progress.on('input', (m: Msg) => (m.payload as { phase: string }).phase === 'uploading' && resolve()));
    nodes.up.receive({ payload: buildAppImage({ size: 256 * 1024, version: '3.1.0', seed: 53 }) });
    nodes.up.receive({ payload: buildAppImage({ size: 256 * 1024, version: '3.2.0', seed: 54 }) }); // waits its turn
    await uploading;
    for (const cancel of ['false', 'true', 1]) nodes.up.receive({ cancel });
    await finished;
    assert.deepEqual(
      results.map((m) => [(m.payload as { confirmed: boolean }).confirmed, (m.payload as { runningVersion: string }).runningVersion]),
      [
        [true, '3.1.0'],
        [true, '3.2.0'],
      ],
    );
    // Each non-cancel is refused as a cancel that is not one, saying how to cancel; nothing was cancelled.
    const refusals = errors.map((e) => e.error as { code: string; message: string });
    assert.deepEqual(
      refusals.map((e) => e.code),
      ['INVALID_ARGUMENT', 'INVALID_ARGUMENT', 'INVALID_ARGUMENT'],
    );
    assert.match(refusals[0].message, /^msg\.cancel is "false", not the boolean true: nothing was cancelled.*set msg\.cancel to the boolean true/);
    assert.match(refusals[1].message, /^msg\.cancel is "true", not the boolean true/);
    assert.match(refusals[2].message, /^msg\.cancel is number 1, not the boolean true/);
    // The running update's status was never replaced by an error of these messages.
    assert.ok(!statusTexts(nodes.up).includes('invalid image'), JSON.stringify(statusTexts(nodes.up)));
  });

  it("a node whose update waits for another node's on the same radio says so in its status, not its last result", async () => {
    const devices = ['node-test-radio-a', 'node-test-radio-b'];
    const twoNodes = [
      { id: 'tab', type: 'tab' },
      { id: 'dev', type: 'ble-ota-device', device: devices[0], backend: 'virtual', virtualDevices: devices.join('\n'), scanTimeout: 3, operationTimeout: 3 },
      { id: 'upA', z: 'tab', type: 'ble-ota-upload', device: 'dev', wires: [['outA'], ['progressA']] },
      { id: 'upB', z: 'tab', type: 'ble-ota-upload', device: 'dev', wires: [['outB'], []] },
      { id: 'outA', z: 'tab', type: 'helper' },
      { id: 'progressA', z: 'tab', type: 'helper' },
      { id: 'outB', z: 'tab', type: 'helper' },
    ];
    await new Promise<void>((resolve) => helper.load([deviceNode, uploadNode], twoNodes, resolve));
    const [upA, upB, outA, progressA, outB] = ['upA', 'upB', 'outA', 'progressA', 'outB'].map((id) => helper.getNode(id) as TestNode);
    const finished: string[] = [];
    const doneA = new Promise<void>((resolve) => outA.on('input', () => resolve(void finished.push('A'))));
    const doneB = new Promise<void>((resolve) => outB.on('input', () => resolve(void finished.push('B'))));
    const uploading = new Promise<void>((resolve) => progressA.on('input', (m: Msg) => (m.payload as { phase: string }).phase === 'uploading' && resolve()));
    upA.receive({ payload: buildAppImage({ size: 256 * 1024, version: '4.1.0', seed: 81 }), device: devices[0] });
    await uploading; // A holds the radio
    upB.receive({ payload: buildAppImage({ size: 16 * 1024, version: '4.2.0', seed: 82 }), device: devices[1] });
    await Promise.all([doneA, doneB]);
    assert.deepEqual(finished, ['A', 'B'], 'one update at a time on the radio');
    // The test helper's spy records every node's status: each node's own calls, by their this.
    const spy = upB.status as unknown as { thisValues: unknown[]; args: Array<[{ text?: string }]> };
    const textsOf = (node: TestNode) => spy.args.filter((_, i) => spy.thisValues[i] === node).map(([status]) => status.text ?? '');
    const texts = textsOf(upB);
    const waiting = texts.indexOf('waiting for the radio');
    assert.ok(waiting >= 0 && waiting < texts.indexOf('scanning'), JSON.stringify(texts));
    assert.equal(texts[texts.length - 1], 'confirmed 4.2.0');
    assert.ok(!textsOf(upA).includes('waiting for the radio'), 'A found the radio free');
  });

  it('closing the node mid-update cancels it and finishes the close', async () => {
    const nodes = await load('node-test-close');
    const device = await sharedVirtualRadio().ensureDevice('node-test-close');
    void send(nodes, { payload: buildAppImage({ size: 1024 * 1024, version: '3.0.0', seed: 52 }) });
    await new Promise<void>((resolve) => nodes.progress.on('input', (m: Msg) => (m.payload as { phase: string }).phase === 'uploading' && resolve()));
    const closed = Date.now();
    await helper.unload();
    assert.ok(Date.now() - closed < 4000, 'close did not wait for the upload to finish');
    const state = await eventually(
      () => device.state(),
      (s) => s.transfer !== 'receiving',
      2000,
      'the device sees the link drop',
    );
    assert.equal(state.running, 'ota_0');
  });

  it('skips a device that already runs the build, and refuses a downgrade', async () => {
    const nodes = await load('node-test-skip');
    const image = buildAppImage({ size: 64 * 1024, projectName: 'app', version: '2.0.0', seed: 53 });
    assert.equal((await send(nodes, { payload: image })).error, undefined);
    const again = await send(nodes, { payload: image });
    assert.equal((again.result!.payload as { skipped: boolean }).skipped, true);
    assert.deepEqual(lastStatus(nodes.up), { fill: 'green', shape: 'ring', text: 'already 2.0.0' });
    const older = await send(nodes, { payload: buildAppImage({ size: 64 * 1024, projectName: 'app', version: '1.0.1', seed: 54 }) });
    const refused = older.error!.error as { code: string; message: string };
    assert.equal(refused.code, 'DOWNGRADE_REFUSED');
    assert.match(refused.message, /^The image's version 1\.0\.1 is older .*\.$/, 'a sentence, no class name');
    assert.deepEqual(lastStatus(nodes.up), { fill: 'red', shape: 'ring', text: 'downgrade refused' });
  });

  it('a fleet secret the device could not use: the update goes ahead only when allowed, with a yellow status and msg.warning', async () => {
    const secret = 'a1'.repeat(32);
    const image = buildAppImage({ size: 16 * 1024, projectName: 'app', version: '2.0.0', seed: 62 });
    const withSecret = async (allowUnauthenticated: boolean) => {
      const nodes = flow('node-test-nokey').map((n) => (n.id === 'dev' ? { ...n, allowUnauthenticated } : n));
      await new Promise<void>((resolve) => helper.load([deviceNode, uploadNode, catchNode], nodes, { dev: { secret } }, resolve));
      return { up: helper.getNode('up'), out: helper.getNode('out'), progress: helper.getNode('progress'), errors: helper.getNode('errors') };
    };
    const refused = await send(await withSecret(false), { payload: image });
    assert.equal((refused.error!.error as { code: string }).code, 'DEVICE_NOT_AUTHENTICATED');
    await helper.unload();

    const loaded = await withSecret(true);
    const { result, error } = await send(loaded, { payload: image });
    assert.equal(error, undefined, JSON.stringify(error?.error));
    assert.equal((result!.payload as { authenticated: boolean }).authenticated, false);
    assert.match(result!.warning as string, /fleet secret .* was not used: node-test-nokey offers no authentication/);
    assert.deepEqual(lastStatus(loaded.up), { fill: 'yellow', shape: 'dot', text: 'confirmed 2.0.0, not authenticated' });
  });

  it('with "Require an image signed with this key", refuses unsigned and foreign images and takes the owner\'s', async () => {
    const nodes = await load('node-test-signed', undefined, { requireSignature: true, publicKey: OWNER.publicKey });
    const unsigned = await send(nodes, { payload: buildAppImage({ size: 32 * 1024, projectName: 'app', version: '2.0.0', seed: 55 }) });
    assert.equal((unsigned.error!.error as { code: string }).code, 'IMAGE_NOT_SIGNED');
    assert.deepEqual(lastStatus(nodes.up), { fill: 'red', shape: 'ring', text: 'image not signed' });
    const foreign = await send(nodes, { payload: buildAppImage({ size: 32 * 1024, projectName: 'app', version: '2.0.0', seed: 55, signingKeys: generateSigningKey('ecdsa256') }) });
    assert.equal((foreign.error!.error as { code: string }).code, 'IMAGE_SIGNATURE_INVALID');
    assert.deepEqual(lastStatus(nodes.up), { fill: 'red', shape: 'ring', text: 'signature refused' });
    const signed = await send(nodes, { payload: signedImage({ size: 32 * 1024, projectName: 'app', version: '2.0.0', seed: 55 }) });
    assert.equal(signed.error, undefined);
    assert.equal((signed.result!.payload as { image: { signed: boolean } }).image.signed, true);
  });

  it('with a Device ID, updates only the device with that id; msg.deviceId sets it per message', async () => {
    const name = 'node-test-id';
    const nodes = flow(name).map((n) => (n.id === 'dev' ? { ...n, deviceId: '24:0a:c4:00:00:01' } : n));
    await new Promise<void>((resolve) => helper.load([deviceNode, uploadNode, catchNode], nodes, resolve));
    const loaded = { up: helper.getNode('up'), out: helper.getNode('out'), progress: helper.getNode('progress'), errors: helper.getNode('errors') };
    const image = buildAppImage({ size: 32 * 1024, projectName: 'app', version: '2.0.0', seed: 56 });
    const wrong = await send(loaded, { payload: image });
    assert.equal((wrong.error!.error as { code: string }).code, 'WRONG_DEVICE');
    assert.deepEqual(lastStatus(loaded.up), { fill: 'red', shape: 'ring', text: 'wrong device' });
    const right = await send(loaded, { payload: image, deviceId: addressFromName(name).toUpperCase() });
    assert.equal(right.error, undefined, JSON.stringify(right.error?.error));
    assert.equal((right.result!.payload as { device: { id: string } }).device.id, addressFromName(name));
    const malformed = await send(loaded, { payload: image, deviceId: 'kitchen' });
    assert.equal((malformed.error!.error as { code: string }).code, 'INVALID_ARGUMENT');
    assert.match((malformed.error!.error as { message: string }).message, /msg\.deviceId "kitchen" is no device id/);
    // A fleet secret sent as the device id by mistake is not repeated where the debug sidebar and the log show it.
    const secret = 'a1'.repeat(32);
    const pasted = await send(loaded, { payload: image, deviceId: secret });
    const message = (pasted.error!.error as { message: string }).message;
    assert.equal((pasted.error!.error as { code: string }).code, 'INVALID_ARGUMENT');
    assert.match(message, /^msg\.deviceId, 64 characters long, is no device id: .* not shown here/);
    assert.ok(!message.includes('a1a1a1a1'), message);
    // A number is no device id, though its digits may read as one (24:00:12:34:56:00): refused by its type, before connecting.
    let connects = 0;
    const count = () => connects++;
    sharedVirtualRadio().bindings.on('air-connect', count);
    try {
      for (const [value, shown] of [
        [240012345600, 'number 240012345600'],
        [{ mac: '24:0a:c4:00:00:01' }, 'object'],
      ] as const) {
        const typed = await send(loaded, { payload: image, deviceId: value });
        const err = typed.error!.error as { code: string; message: string };
        assert.equal(err.code, 'INVALID_ARGUMENT', shown);
        assert.equal(
          err.message,
          `msg.deviceId is ${shown}, not a string: give the device's factory MAC as text, as it was provisioned, e.g. "24:0a:c4:12:34:56", or leave msg.deviceId out. Nothing was sent.`,
        );
      }
      assert.equal(connects, 0, 'refused before connecting');
    } finally {
      sharedVirtualRadio().bindings.off('air-connect', count);
    }
  });

  it('names a device by its name, address or id: an id is the device of that id, and a name of id form still names its device', async () => {
    const image = buildAppImage({ size: 16 * 1024, projectName: 'app', version: '2.0.0', seed: 59 });
    // Declared by its address, and not running yet: the device field gives its id, as a scan shows it.
    const byId = flow('24:0a:c4:00:0b:01').map((n) => (n.id === 'dev' ? { ...n, device: '240AC4000B01' } : n));
    await new Promise<void>((resolve) => helper.load([deviceNode, uploadNode, catchNode], byId, resolve));
    const loaded = { up: helper.getNode('up'), out: helper.getNode('out'), progress: helper.getNode('progress'), errors: helper.getNode('errors') };
    const viaId = await send(loaded, { payload: image });
    assert.equal(viaId.error, undefined, JSON.stringify(viaId.error?.error));
    assert.equal((viaId.result!.payload as { device: { address: string } }).device.address, '24:0a:c4:00:0b:01');
    await helper.unload();

    // A device named with 12 hex digits, as a flow may have named it before ids were taken.
    const named = await load('c0ffee00beef');
    const viaName = await send(named, { payload: image });
    assert.equal(viaName.error, undefined, JSON.stringify(viaName.error?.error));
    const device = (viaName.result!.payload as { device: { name: string; address: string } }).device;
    assert.equal(device.name, 'c0ffee00beef');
    assert.equal(device.address, addressFromName('c0ffee00beef').toLowerCase(), 'the device of that name, whose id is another');
  });

  it('refuses before connecting an image older than the secure_version it installed on the device', async () => {
    const name = 'node-test-sv';
    await sharedVirtualRadio().addDevice(ownedDevice({ name, restartDelayMs: 20 }));
    await new Promise<void>((resolve) => helper.load([deviceNode, uploadNode, catchNode], flow(name), { dev: { secret: OWNER.secret } }, resolve));
    const nodes = { up: helper.getNode('up'), out: helper.getNode('out'), progress: helper.getNode('progress'), errors: helper.getNode('errors') };
    const installed = await send(nodes, { payload: signedImage({ size: 32 * 1024, projectName: 'app', version: '3.0.0', secureVersion: 3, seed: 57 }) });
    assert.equal(installed.error, undefined, JSON.stringify(installed.error?.error));
    assert.equal((installed.result!.payload as { authenticated: boolean }).authenticated, true);
    let connects = 0;
    const count = () => connects++;
    sharedVirtualRadio().bindings.on('air-connect', count);
    try {
      const older = await send(nodes, { payload: signedImage({ size: 32 * 1024, projectName: 'app', version: '3.0.1', secureVersion: 2, seed: 58 }) });
      const error = older.error!.error as { code: string; message: string };
      assert.equal(error.code, 'SECURE_VERSION_TOO_OLD');
      assert.match(error.message, /secure_version 2 is below the 3 this node installed on node-test-sv/);
      assert.equal(connects, 0, 'refused before connecting');
    } finally {
      sharedVirtualRadio().bindings.off('air-connect', count);
    }
  });

  it('updates one device after the other when messages arrive together, and bounds its queue', async () => {
    const nodes = await load('node-test-queue');
    const finished: string[] = [];
    const errors: string[] = [];
    nodes.out.on('input', (m: Msg) => finished.push((m.payload as { image: { version: string } }).image.version));
    nodes.errors.on('input', (m: Msg) => errors.push((m.error as { code: string }).code));
    const versions = Array.from({ length: 12 }, (_, i) => `5.0.${i + 1}`);
    for (const [i, version] of versions.entries()) {
      nodes.up.receive({ payload: buildAppImage({ size: 16 * 1024, projectName: 'app', version, seed: 60 + i }) });
    }
    await eventually(
      async () => finished.length + errors.length,
      (n) => n === 12,
      30_000,
      'all twelve messages handled',
    );
    assert.deepEqual(errors, ['BUSY'], 'one running and ten waiting: the twelfth is refused');
    assert.deepEqual(finished, versions.slice(0, 11), 'in the order they arrived');
  });
});
