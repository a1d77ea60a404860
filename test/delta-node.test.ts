/**
 * Delta updates through the upload node (node-red-node-test-helper,
 * virtual ESP32s): the node keeps the images it installed in
 * <userDir>/ble-ota-cache and sends the next update as a patch against the
 * one the device runs; msg.baseImage gives the base itself; the result's
 * delivery and the log line say which went and what crossed the air; a
 * msg.baseImage that is no Buffer, or an empty one, is refused before the
 * radio is used.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Delivery } from '../lib/client/delivery';
import { patchThreadCounts } from '../lib/delta/patch-thread';
import { sampleImage } from '../lib/image/sample-image';
import { sharedVirtualRadio } from '../lib/virtual/virtual-radio';
import { OtaEvent, otaEvents } from '../nodes/shared/ota-events';
import { oneFunctionChanged, unrelatedApp } from './support/code-images';
import { catchNode, deviceNode, exchange, helper, TestNode, uploadNode } from './support/node-red';

type Msg = Record<string, unknown>;

const KB = 1024;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function flow(deviceName: string, upload: object = {}) {
  return [
    { id: 'tab', type: 'tab' },
    { id: 'dev', type: 'ble-ota-device', device: deviceName, backend: 'virtual', virtualDevices: deviceName, scanTimeout: 3, operationTimeout: 3 },
    { id: 'up', z: 'tab', type: 'ble-ota-upload', device: 'dev', wires: [['out'], []], ...upload },
    { id: 'out', z: 'tab', type: 'helper' },
    { id: 'catcher', z: 'tab', type: 'catch', scope: null, uncaught: false, wires: [['errors']] },
    { id: 'errors', z: 'tab', type: 'helper' },
  ];
}

describe('ble-ota-upload node: delta updates', function () {
  this.timeout(60_000);
  let userDir: string;
  let nodes: { up: TestNode; out: TestNode; errors: TestNode };

  before(function (done) {
    userDir = mkdtempSync(join(tmpdir(), 'ble-ota-delta-node-'));
    helper.startServer(done);
  });
  after(function (done) {
    rmSync(userDir, { recursive: true, force: true });
    void sharedVirtualRadio()
      .stopAll()
      .then(() => helper.stopServer(done));
  });
  afterEach(async () => {
    await helper.unload();
    // Other test files share the helper: no user directory for them.
    (helper as unknown as { settings(s: object): void }).settings({});
  });

  async function load(deviceName: string, settings: object = { userDir }, upload: object = {}): Promise<void> {
    (helper as unknown as { settings(s: object): void }).settings(settings);
    await new Promise<void>((resolve) => helper.load([deviceNode, uploadNode, catchNode], flow(deviceName, upload), resolve));
    nodes = { up: helper.getNode('up'), out: helper.getNode('out'), errors: helper.getNode('errors') };
  }

  const send = (msg: Msg) => exchange(nodes.up, msg, nodes);

  /** The node's log lines (the helper's spy on Node-RED's log). */
  function logLines(): string[] {
    const spy = (helper as unknown as { log(): { args: Array<[{ msg?: unknown }]> } }).log();
    return spy.args.map(([entry]) => String(entry.msg ?? ''));
  }

  it('installs by patch against the image it installed before, from the cache in the user directory', async () => {
    await load('delta-node-cache');
    const pair = oneFunctionChanged(128 * KB, 41, { projectName: 'fleet-app' });

    const first = await send({ payload: pair.old });
    assert.equal(first.error, undefined, JSON.stringify(first.error?.error));
    const firstDelivery = (first.result!.payload as { delivery: Delivery }).delivery;
    assert.deepEqual([firstDelivery.method, firstDelivery.reason], ['full', 'base-unknown']);
    const cacheDir = join(userDir, 'ble-ota-cache');
    assert.deepEqual(readdirSync(cacheDir), [`${sha256(pair.old)}.bin`], 'the confirmed image is in the cache');

    const second = await send({ payload: pair.new });
    assert.equal(second.error, undefined, JSON.stringify(second.error?.error));
    const d = (second.result!.payload as { delivery: Delivery; confirmed: boolean }).delivery;
    assert.deepEqual([d.method, d.baseSource, d.baseSha256], ['patch', 'cache', sha256(pair.old)]);
    assert.ok(d.bytesOverAir < d.fullBytes! / 4, `${d.bytesOverAir} bytes against ${d.fullBytes}`);
    const line = logLines().find((l) => l.includes('fleet-app 1.0.1'));
    assert.match(line ?? '', /; delta patch against the image it ran \(from the image cache\): [\d.]+ KB over the air, [\d.]+ % of the full image$/);
    // The first: the full image, as for any device whose image the node never installed, without a word on it.
    assert.match(logLines().find((l) => l.includes('fleet-app 1.0.0')) ?? '', /^updated delta-node-cache to fleet-app 1\.0\.0 in [\d.]+ s \([^;]*\)$/);
  });

  it("takes msg.baseImage as the base; one that is not the running image is passed over for the cache's", async () => {
    await load('delta-node-base');
    const pair = oneFunctionChanged(128 * KB, 42, { projectName: 'lamp' });
    const third = oneFunctionChanged(128 * KB, 42, { projectName: 'lamp' }, 160, ['1.0.0', '1.0.2']).new;
    assert.equal((await send({ payload: pair.old })).error, undefined);

    const patched = await send({ payload: pair.new, baseImage: pair.old });
    const d = (patched.result!.payload as { delivery: Delivery }).delivery;
    assert.deepEqual([d.method, d.baseSource], ['patch', 'option']);

    // The device now runs pair.new; pair.old is no longer its image, and the cache holds pair.new.
    const stranger = unrelatedApp(128 * KB, 43);
    const full = await send({ payload: third, baseImage: stranger });
    assert.equal(full.error, undefined);
    const f = (full.result!.payload as { delivery: Delivery }).delivery;
    assert.deepEqual([f.method, f.baseSource], ['patch', 'cache'], 'the cache holds the running image: the base given is not needed');
  });

  it('without a user directory there is no cache: msg.baseImage that is not the running image sends the full image, and says why', async () => {
    await load('delta-node-nodir', {});
    const pair = oneFunctionChanged(64 * KB, 44, { projectName: 'gate' });
    assert.equal((await send({ payload: pair.old })).error, undefined);
    const stranger = unrelatedApp(64 * KB, 45);
    const result = await send({ payload: pair.new, baseImage: stranger });
    const d = (result.result!.payload as { delivery: Delivery }).delivery;
    assert.deepEqual([d.method, d.reason], ['full', 'base-not-running']);
    assert.match(logLines().find((l) => l.includes('gate 1.0.1')) ?? '', /: msg\.baseImage is not the image the device runs/);
    assert.equal(existsSync(join(userDir, 'ble-ota-cache', `${sha256(pair.old)}.bin`)), false);
  });

  it('a cache folder that cannot be written fails no update: the node warns what the next one loses', async () => {
    const blocked = mkdtempSync(join(tmpdir(), 'ble-ota-delta-node-blocked-'));
    try {
      writeFileSync(join(blocked, 'ble-ota-cache'), 'a file where the cache folder should be');
      await load('delta-node-blocked', { userDir: blocked });
      const pair = oneFunctionChanged(64 * KB, 47, { projectName: 'pump' });
      const { result, error } = await send({ payload: pair.old });
      assert.equal(error, undefined);
      assert.equal((result!.payload as { cache?: { stored: boolean } }).cache?.stored, false);
      assert.ok(
        logLines().some((l) =>
          /^The image could not be kept in the image cache \(the image could not be stored in .*ble-ota-cache: .*\): the next update of delta-node-blocked sends the full image/.test(
            l,
          ),
        ),
      );
    } finally {
      rmSync(blocked, { recursive: true, force: true });
    }
  });

  it('a damaged cache file of the running image: the full image goes, the file is removed, and the node warns', async () => {
    await load('delta-node-damaged');
    const pair = oneFunctionChanged(128 * KB, 50, { projectName: 'heater' });
    assert.equal((await send({ payload: pair.old })).error, undefined);
    const file = join(userDir, 'ble-ota-cache', `${sha256(pair.old)}.bin`);
    writeFileSync(file, Buffer.concat([readFileSync(file), Buffer.from('appended by hand')]));

    const { result, error } = await send({ payload: pair.new });
    assert.equal(error, undefined);
    const d = (result!.payload as { delivery: Delivery }).delivery;
    assert.deepEqual([d.method, d.reason], ['full', 'base-damaged']);
    assert.equal(existsSync(file), false);
    assert.match(
      logLines().find((l) => l.includes('heater 1.0.1')) ?? '',
      /; full image, [\d.]+ KB over the air: the image cache's file of the image the device runs was damaged, and is removed$/,
    );
    assert.ok(
      logLines().some((l) =>
        /^The image cache's file of the image delta-node-damaged ran was damaged .*the full image went, and the file is removed\. Check the disk of .*ble-ota-cache/.test(l),
      ),
      'a warning: whoever looks after the runtime should check its disk',
    );
  });

  it("a FIFO in the cache under the running image's name: the full image goes at once, and Node-RED's log names it once", async () => {
    await load('delta-node-fifo');
    const pair = oneFunctionChanged(128 * KB, 51, { projectName: 'fan' });
    assert.equal((await send({ payload: pair.old })).error, undefined);
    const file = join(userDir, 'ble-ota-cache', `${sha256(pair.old)}.bin`);
    unlinkSync(file);
    execFileSync('mkfifo', [file]);

    const { result, error } = await send({ payload: pair.new });
    assert.equal(error, undefined);
    const d = (result!.payload as { delivery: Delivery }).delivery;
    assert.deepEqual([d.method, d.reason], ['full', 'base-unknown']);
    const warnings = logLines().filter((l) => l.includes(file));
    assert.deepEqual(warnings, [
      `ble-ota-upload: the image cache's ${file} is a FIFO (named pipe), not an image file: it is not used as the base of a delta update (the full image goes); remove it`,
    ]);
  });

  it('with "Send only what changed" cleared, the full image goes though a patch was possible, and the result says why', async () => {
    await load('delta-node-off', { userDir }, { delta: false });
    const pair = oneFunctionChanged(64 * KB, 48, { projectName: 'fan' });
    assert.equal((await send({ payload: pair.old })).error, undefined);
    const { result, error } = await send({ payload: pair.new, baseImage: pair.old });
    assert.equal(error, undefined);
    const d = (result!.payload as { delivery: Delivery }).delivery;
    assert.deepEqual([d.method, d.reason], ['full', 'delta-off']);
    // A patch of this pair is a few hundred bytes; the image's own stream is most of its size.
    assert.ok(d.bytesOverAir > pair.new.length / 4, `${d.bytesOverAir} bytes over the air for a ${pair.new.length}-byte image`);
  });

  it("two versions of an OTA sample node's image: the second goes as a small patch", async () => {
    await load('delta-node-sample');
    const first = await send({ payload: sampleImage({ projectName: 'demo', version: '1.1.0', size: 512 * KB }) });
    assert.equal(first.error, undefined, JSON.stringify(first.error?.error));
    const next = sampleImage({ projectName: 'demo', version: '1.2.0', size: 512 * KB });
    const second = await send({ payload: next });
    assert.equal(second.error, undefined, JSON.stringify(second.error?.error));
    const d = (second.result!.payload as { delivery: Delivery }).delivery;
    assert.deepEqual([d.method, d.baseSource], ['patch', 'cache']);
    assert.ok(d.bytesOverAir < d.fullBytes! / 20, `${d.bytesOverAir} bytes over the air, the full image's stream ${d.fullBytes}`);
    // A few hundred bytes of 512 KB: the log says less than 0.1 %, not 0.0 %; the result counts the whole image rebuilt.
    assert.match(logLines().find((l) => l.includes('demo 1.2.0')) ?? '', /: 0\.\d KB over the air, <0\.1 % of the full image$/);
    assert.equal((second.result!.payload as { bytesSent: number }).bytesSent, next.length);
  });

  it('msg.cancel while the patch is being computed cancels the update and stops the computation; the next goes as a patch', async () => {
    await load('delta-node-cancel');
    const pair = oneFunctionChanged(1024 * KB, 49, { projectName: 'valve' });
    assert.equal((await send({ payload: pair.old })).error, undefined);
    const before = { ...patchThreadCounts };
    // The node's preparing event: the patch is on its thread then.
    const onEvent = (e: OtaEvent) => {
      if (e.source.id !== 'up' || e.state !== 'preparing') return;
      otaEvents.off('event', onEvent);
      setImmediate(() => nodes.up.receive({ cancel: true }));
    };
    otaEvents.on('event', onEvent);
    const { result, error } = await send({ payload: pair.new, baseImage: pair.old });
    otaEvents.off('event', onEvent);
    assert.equal(result, undefined);
    assert.equal((error!.error as { code?: string }).code, 'CANCELLED');
    assert.equal(patchThreadCounts.terminated - before.terminated, 1, 'the computation was stopped, not left to finish');
    const again = await send({ payload: pair.new });
    assert.equal(again.error, undefined, JSON.stringify(again.error?.error));
    const d = (again.result!.payload as { delivery: Delivery }).delivery;
    assert.deepEqual([d.method, d.baseSource], ['patch', 'cache']);
  });

  it('a redeploy while the patch is being computed stops the computation, and the log says the update was cancelled', async () => {
    await load('delta-node-redeploy');
    const pair = oneFunctionChanged(1024 * KB, 50, { projectName: 'valve' });
    assert.equal((await send({ payload: pair.old })).error, undefined);
    const before = { ...patchThreadCounts };
    // What the node warns (the test helper's log spy ends with the flows it loaded).
    const warnings: string[] = [];
    const node = nodes.up as unknown as { warn(m: unknown): void };
    const warn = node.warn.bind(node);
    node.warn = (m: unknown) => (warnings.push(String(m)), warn(m));
    let closed!: Promise<void>;
    const preparing = new Promise<void>((resolve) => {
      const onEvent = (e: OtaEvent) => {
        if (e.source.id !== 'up' || e.state !== 'preparing') return;
        otaEvents.off('event', onEvent);
        // The node closes as a redeploy closes it, once the patch is on its thread: its running update is cancelled.
        setImmediate(() => {
          closed = helper.unload();
          resolve();
        });
      };
      otaEvents.on('event', onEvent);
    });
    const cancelled = new Promise<OtaEvent>((resolve) => {
      const onEvent = (e: OtaEvent) => {
        if (e.source.id !== 'up' || e.state !== 'cancelled') return;
        otaEvents.off('event', onEvent);
        resolve(e);
      };
      otaEvents.on('event', onEvent);
    });
    nodes.up.receive({ payload: pair.new, baseImage: pair.old });
    await preparing;
    await closed;
    const event = await cancelled;
    assert.equal(event.error?.code, 'CANCELLED');
    assert.equal(patchThreadCounts.terminated - before.terminated, 1, 'the computation was stopped, not left to finish');
    assert.ok(
      warnings.some((l) => /^The update of delta-node-redeploy was cancelled: the node was closed or redeployed while it ran\. Send the image again/.test(l)),
      'the log says the update was cancelled, and why',
    );
  });

  it('refuses a msg.baseImage that is no Buffer before the radio is used', async () => {
    await load('delta-node-bad');
    const pair = oneFunctionChanged(64 * KB, 46);
    const { result, error } = await send({ payload: pair.new, baseImage: 'firmware-1.0.0.bin' });
    assert.equal(result, undefined);
    const e = error!.error as { code?: string; message: string };
    assert.equal(e.code, 'INVALID_ARGUMENT');
    assert.match(e.message, /^msg\.baseImage must be a Buffer holding the image the device runs .*not a string\. Nothing was sent\.$/);
  });

  it('refuses an empty msg.baseImage (an empty file read) as the CLI refuses an empty --base: not taken for "no base"', async () => {
    await load('delta-node-empty');
    const pair = oneFunctionChanged(64 * KB, 47);
    const { result, error } = await send({ payload: pair.new, baseImage: Buffer.alloc(0) });
    assert.equal(result, undefined, 'no update ran');
    const e = error!.error as { code?: string; message: string };
    assert.equal(e.code, 'INVALID_ARGUMENT');
    assert.match(e.message, /^msg\.baseImage is empty \(0 bytes\): give the image the device runs .*or leave msg\.baseImage out to use the image cache\. Nothing was sent\.$/);
  });
});
