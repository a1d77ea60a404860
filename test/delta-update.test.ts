/**
 * Delta updates end to end (docs/DELTA.md): the OTA client through noble
 * and the virtual bindings to virtual ESP32s that apply patches. A small
 * change installs by patch, with a fraction of the full image's bytes over
 * the air; the base comes from the caller or from the image cache the
 * client filled on an earlier update; every case where a patch cannot or
 * should not go sends the full image in the same call and says why; a
 * patched transfer resumes where its link dropped, and a power loss while
 * the device applies a patch leaves the old image running.
 */
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PATCH_SHARE, storeInstalled } from '../lib/client/delivery';
import { ImageCache } from '../lib/client/image-cache';
import { BleOtaClient, UpdateResult } from '../lib/client/ota-client';
import { computePatch } from '../lib/delta/diff';
import { computePatchOffThread, patchThreadCounts, THREAD_FROM } from '../lib/delta/patch-thread';
import { formatResult } from '../lib/cli/output';
import { BleOtaError } from '../lib/errors';
import { buildAppImage } from '../lib/image/app-image-builder';
import { BeginFlag, Command, InfoLayout, OTA_COMMAND_UUID, OTA_INFO_UUID, OTA_STREAM_UUID } from '../lib/protocol/constants';
import { encodedLength } from '../lib/protocol/deflate-chunks';
import { decodeNotification } from '../lib/protocol/v2-codec';
import { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { VirtualRadio } from '../lib/virtual/virtual-radio';
import { oneFunctionChanged, unrelatedApp } from './support/code-images';

const KB = 1024;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest();

/** What crossed the air to one device: stream packets (offset, payload bytes), BEGIN requests and their answers. */
function airTrace(radio: VirtualRadio, device: VirtualEsp32) {
  const packets: Array<{ offset: number; length: number }> = [];
  const begins: Array<{ flags: number; base?: string }> = [];
  const answers: Array<{ status: number; offset?: number; imageOffset?: number }> = [];
  let connects = 0;
  const onWrite = (address: string, uuid: string, data: Buffer) => {
    if (address !== device.address) return;
    if (uuid === OTA_STREAM_UUID) packets.push({ offset: data.readUInt32LE(0), length: data.length - 4 });
    if (uuid === OTA_COMMAND_UUID && data[0] === Command.BEGIN && data.length >= 41) {
      const flags = data.readUInt16LE(39);
      begins.push({ flags, ...(flags & BeginFlag.PATCH ? { base: data.subarray(41, 73).toString('hex') } : {}) });
    }
  };
  const onNotify = (address: string, uuid: string, data: Buffer) => {
    if (address !== device.address || uuid !== OTA_COMMAND_UUID) return;
    const n = decodeNotification(data);
    if (n.kind === 'answer' && n.opcode === Command.BEGIN) {
      // offset: in the stream; imageOffset: in what it carries, the image or the patch (deflated streams).
      const ok = n.status === 0;
      answers.push({ status: n.status, ...(ok ? { offset: n.body.readUInt32LE(0) } : {}), ...(ok && n.body.length >= 12 ? { imageOffset: n.body.readUInt32LE(8) } : {}) });
    }
  };
  const onConnect = (address: string) => address === device.address && connects++;
  radio.bindings.on('air-write', onWrite);
  radio.bindings.on('air-notify', onNotify);
  radio.bindings.on('air-connect', onConnect);
  return {
    packets,
    begins,
    answers,
    get connects() {
      return connects;
    },
    /** Stream payload bytes, resends included. */
    get streamBytes() {
      return packets.reduce((n, p) => n + p.length, 0);
    },
    stop: () => {
      radio.bindings.off('air-write', onWrite);
      radio.bindings.off('air-notify', onNotify);
      radio.bindings.off('air-connect', onConnect);
    },
  };
}

describe('delta updates end to end through noble and the virtual ESP32', function () {
  this.timeout(120_000);
  let radio: VirtualRadio;
  let client: BleOtaClient;
  let dir: string;
  let seq = 0;

  before(() => {
    radio = new VirtualRadio();
    client = new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000, gattMs: 2000, restartMs: 3000 } });
    dir = mkdtempSync(join(tmpdir(), 'ble-ota-delta-e2e-'));
  });
  after(async () => {
    await radio.stopAll();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A device running `image` (as flashed over USB). */
  async function deviceRunning(image: Buffer, name: string): Promise<VirtualEsp32> {
    const file = join(dir, `${name}-first.bin`);
    writeFileSync(file, image);
    return radio.addDevice({ name, image: file, restartDelayMs: 20 });
  }

  async function runs(device: VirtualEsp32, image: Buffer): Promise<boolean> {
    const state = await device.state();
    const slot = state.slots[state.running];
    return slot.size === image.length && (await device.readFlash(state.running, 0, image.length)).equals(image);
  }

  /** The stream a patch, or a full image, sends: DEFLATE chunks. */
  const patchStream = (old: Buffer, nw: Buffer) => encodedLength(computePatch(old, nw));

  it('installs a one-function change by patch: the stream is the patch, a fraction of the full image', async () => {
    const pair = oneFunctionChanged(256 * KB, 11, { projectName: 'lamp' });
    const device = await deviceRunning(pair.old, `dl-patch-${++seq}`);
    const trace = airTrace(radio, device);
    const progress: Array<{ phase: string; bytesSent: number; totalBytes: number; percent: number }> = [];
    const result = await client.update({ target: { name: device.name }, image: pair.new, baseImage: pair.old, onProgress: (p) => progress.push(p) });
    trace.stop();

    assert.equal(result.confirmed, true);
    // While the patch is computed the update says it is preparing (not still connecting), before any byte goes.
    const firstUpload = progress.findIndex((p) => p.phase === 'uploading');
    assert.ok(progress.findIndex((p) => p.phase === 'preparing') >= 0 && progress.findIndex((p) => p.phase === 'preparing') < firstUpload, progress.map((p) => p.phase).join(' '));
    // Progress counts the patch's bytes while it goes, to 100 %.
    const uploading = progress.filter((p) => p.phase === 'uploading');
    const patchLength = computePatch(pair.old, pair.new).length;
    assert.ok(uploading.length > 0 && uploading.every((p) => p.totalBytes === patchLength), 'uploading: totalBytes is the patch');
    assert.deepEqual(
      uploading.map((p) => p.percent),
      [...uploading.map((p) => p.percent)].sort((x, y) => x - y),
    );
    assert.equal(uploading[uploading.length - 1].percent, 100);
    assert.ok(await runs(device, pair.new), 'the rebuilt image runs, byte for byte');
    // The result counts image bytes: the device rebuilt all of them in this call.
    assert.equal(result.bytesSent, pair.new.length);
    assert.ok(result.bytesPerSecond > 0);
    const d = result.delivery!;
    assert.deepEqual([d.method, d.baseSha256, d.baseSource, d.reason], ['patch', sha256(pair.old).toString('hex'), 'option', undefined]);
    // The figures, from the encodings themselves: the patch's stream against the full image's.
    const patch = patchStream(pair.old, pair.new);
    const full = encodedLength(pair.new);
    assert.equal(d.fullBytes, full);
    assert.equal(d.imageBytes, pair.new.length);
    assert.equal(d.bytesOverAir, trace.streamBytes, 'bytesOverAir is what the stream carried');
    assert.ok(d.bytesOverAir >= patch, `${d.bytesOverAir} bytes sent, the patch's stream is ${patch}`);
    assert.ok(patch < full * 0.25, `patch ${patch} bytes against ${full}: a one-function change should be far below the full image`);
    assert.equal(Math.max(...trace.packets.map((p) => p.offset + p.length)), patch, 'the stream ends where the patch stream does');
    assert.deepEqual(
      trace.begins.map((b) => [b.flags & (BeginFlag.PATCH | BeginFlag.DEFLATE), b.base]),
      [[BeginFlag.PATCH | BeginFlag.DEFLATE, sha256(pair.old).toString('hex')]],
    );
  });

  it('takes the base from the image cache, filled by an earlier full update', async () => {
    const cache = new ImageCache({ dir: join(dir, 'cache-hit') });
    const device = await radio.addDevice({ name: `dl-cache-${++seq}`, restartDelayMs: 20 });
    const pair = oneFunctionChanged(128 * KB, 12, { projectName: 'virtual-esp32' });

    const first = await client.update({ target: { name: device.name }, image: pair.old, cache });
    assert.deepEqual([first.delivery?.method, first.delivery?.reason], ['full', 'base-unknown'], 'the built-in image is in no cache');
    assert.deepEqual(first.cache, { stored: true });
    assert.ok(await cache.get(sha256(pair.old)), 'the confirmed image is in the cache');

    const second = await client.update({ target: { name: device.name }, image: pair.new, cache });
    assert.deepEqual([second.delivery?.method, second.delivery?.baseSource, second.confirmed], ['patch', 'cache', true]);
    assert.ok(second.delivery!.bytesOverAir < first.delivery!.bytesOverAir / 4);
    assert.ok(await runs(device, pair.new));
    assert.deepEqual((await cache.list()).map((e) => e.sha256).sort(), [sha256(pair.old), sha256(pair.new)].map((h) => h.toString('hex')).sort());
  });

  it("a damaged cache file of the running image is removed, and the result says so: the full image went for it ('base-damaged')", async () => {
    const cache = new ImageCache({ dir: join(dir, 'cache-damaged') });
    const device = await radio.addDevice({ name: `dl-damaged-${++seq}`, restartDelayMs: 20 });
    const pair = oneFunctionChanged(128 * KB, 15, { projectName: 'virtual-esp32' });
    assert.deepEqual((await client.update({ target: { name: device.name }, image: pair.old, cache })).cache, { stored: true });
    const file = join(cache.dir, `${sha256(pair.old).toString('hex')}.bin`);
    const damaged = readFileSync(file);
    damaged[damaged.length >> 1] ^= 0x10;
    writeFileSync(file, damaged);

    const result = await client.update({ target: { name: device.name }, image: pair.new, cache });
    assert.deepEqual([result.delivery?.method, result.delivery?.reason, result.confirmed], ['full', 'base-damaged', true]);
    assert.equal(existsSync(file), false, 'the damaged file is gone');
    assert.deepEqual(result.cache, { stored: true }, 'the new image is kept for the next update');
  });

  it('a base image that is not the one the device runs is no error: the full image goes, and the result says why', async () => {
    const pair = oneFunctionChanged(64 * KB, 13);
    const device = await deviceRunning(pair.old, `dl-notbase-${++seq}`);
    const stranger = unrelatedApp(64 * KB, 14);
    const result = await client.update({ target: { name: device.name }, image: pair.new, baseImage: stranger });
    assert.deepEqual([result.delivery?.method, result.delivery?.reason, result.confirmed], ['full', 'base-not-running', true]);
    assert.equal(result.delivery?.bytesOverAir, encodedLength(pair.new));
    assert.ok(await runs(device, pair.new));
  });

  it("a base image for a device on the seed protocol: the full image goes, and the result says why (the device's firmware, or the caller's choice)", async () => {
    const pair = oneFunctionChanged(64 * KB, 17);
    const file = join(dir, 'seed-first.bin');
    writeFileSync(file, pair.old);
    const seedOnly = await radio.addDevice({ name: `dl-seed-${++seq}`, image: file, protocol: 'seed', restartDelayMs: 20 });
    const result = await client.update({ target: { name: seedOnly.name }, image: pair.new, baseImage: pair.old });
    assert.deepEqual([result.protocol, result.delivery?.method, result.delivery?.reason], ['seed', 'full', 'device-no-delta']);
    const device = await deviceRunning(pair.old, `dl-seed-chosen-${++seq}`);
    const chosen = await client.update({ target: { name: device.name }, image: pair.new, baseImage: pair.old, protocol: 'seed' });
    assert.deepEqual([chosen.protocol, chosen.delivery?.method, chosen.delivery?.reason], ['seed', 'full', 'delta-off']);
  });

  it('a base image with bytes after the app (the .bin flashed, padded) is the base: the patch goes against the app the device runs', async () => {
    const pair = oneFunctionChanged(64 * KB, 41);
    // The file flashed over USB, padded with erased flash to whole sectors: the device runs (and reports) the app alone.
    const flashed = Buffer.concat([pair.old, Buffer.alloc(4096 - (pair.old.length % 4096) + 4096, 0xff)]);
    const device = await deviceRunning(flashed, `dl-padbase-${++seq}`);
    const result = await client.update({ target: { name: device.name }, image: pair.new, baseImage: flashed });
    assert.deepEqual(
      [result.delivery?.method, result.delivery?.baseSource, result.delivery?.baseSha256, result.delivery?.reason],
      ['patch', 'option', sha256(pair.old).toString('hex'), undefined],
    );
    assert.ok(await runs(device, pair.new));

    // The same padded build sent again (skipIfRunning off): a patch against the app it runs, from the file itself.
    const padded = Buffer.concat([pair.new, Buffer.alloc(4096 - (pair.new.length % 4096), 0xff)]);
    const again = await client.update({ target: { name: device.name }, image: padded, skipIfRunning: false });
    assert.deepEqual([again.delivery?.method, again.delivery?.baseSource], ['patch', 'image']);
    const state = await device.state();
    assert.ok((await device.readFlash(state.running, 0, padded.length)).equals(padded), 'the padded file, byte for byte, in the slot it runs from');
  });

  it('a base image that is not a Buffer is refused before the radio is used, saying what to give', async () => {
    const pair = oneFunctionChanged(64 * KB, 15);
    const device = await deviceRunning(pair.old, `dl-badbase-${++seq}`);
    const trace = airTrace(radio, device);
    await assert.rejects(
      client.update({ target: { name: device.name }, image: pair.new, baseImage: 'firmware-1.0.0.bin' as unknown as Buffer }),
      (err: BleOtaError) => err.code === 'INVALID_ARGUMENT' && /base image must be a Buffer.*not a string/.test(err.message),
    );
    trace.stop();
    assert.equal(trace.begins.length, 0);
  });

  it('an empty base image (a file read empty) is refused before the radio is used, not taken for no base', async () => {
    const pair = oneFunctionChanged(64 * KB, 18);
    const device = await deviceRunning(pair.old, `dl-emptybase-${++seq}`);
    const trace = airTrace(radio, device);
    await assert.rejects(
      client.update({ target: { name: device.name }, image: pair.new, baseImage: Buffer.alloc(0) }),
      (err: BleOtaError) => err.code === 'INVALID_ARGUMENT' && /base image is empty \(0 bytes\)/.test(err.message),
    );
    trace.stop();
    assert.equal(trace.begins.length, 0);
  });

  it('an unrelated image goes whole: its patch would not be clearly smaller', async () => {
    const pair = oneFunctionChanged(64 * KB, 16);
    const device = await deviceRunning(pair.old, `dl-unrelated-${++seq}`);
    const other = unrelatedApp(64 * KB, 17);
    const result = await client.update({ target: { name: device.name }, image: other, baseImage: pair.old });
    assert.deepEqual([result.delivery?.method, result.delivery?.reason], ['full', 'patch-not-smaller']);
    assert.ok(patchStream(pair.old, other) > encodedLength(other) * PATCH_SHARE, 'the rule, from the encodings');
    assert.ok(await runs(device, other));
  });

  it('a patch the device refuses as WRONG_BASE gives way to the full image on the same connection', async () => {
    const pair = oneFunctionChanged(64 * KB, 18);
    const device = await deviceRunning(pair.old, `dl-wrongbase-${++seq}`);
    // The device says it runs `claimed` (as if its image changed between the look and BEGIN), another
    // build of the same code, close enough for a patch to pay; it runs pair.old.
    const claimed = oneFunctionChanged(64 * KB, 18, {}, 160).new;
    const read = device.read.bind(device);
    device.read = async (uuid: string) => {
      const value = await read(uuid);
      if (uuid !== OTA_INFO_UUID || value.length < InfoLayout.RUNNING_SHA256.offset + 32) return value;
      const forged = Buffer.from(value);
      forged.writeUInt32LE(claimed.length, InfoLayout.RUNNING_SIZE.offset);
      sha256(claimed).copy(forged, InfoLayout.RUNNING_SHA256.offset);
      return forged;
    };
    const trace = airTrace(radio, device);
    const result = await client.update({ target: { name: device.name }, image: pair.new, baseImage: claimed });
    trace.stop();
    assert.deepEqual([result.delivery?.method, result.delivery?.reason, result.confirmed], ['full', 'wrong-base', true]);
    assert.deepEqual(trace.begins.map((b) => b.flags & BeginFlag.PATCH).slice(0, 2), [BeginFlag.PATCH, 0], 'BEGIN with the patch, refused, then BEGIN with the full image');
    assert.equal(trace.answers[0].status, 0x15, 'WRONG_BASE');
    assert.equal(result.resumes, 0, 'no new connection for it');
    assert.ok(await runs(device, pair.new));
  });

  it("a device whose running image lost a bit after it booted cannot rebuild the image from the patch: the full image goes in the same call ('patch-not-applied')", async () => {
    const pair = oneFunctionChanged(64 * KB, 19);
    const device = await deviceRunning(pair.old, `dl-rot-${++seq}`);
    // OTA Info still names the image the device booted; its flash now holds another one.
    await device.fault({ kind: 'bit-rot', slot: (await device.state()).running as 'ota_0' | 'ota_1', offset: pair.old.length >> 1 });
    const trace = airTrace(radio, device);
    const result = await client.update({ target: { name: device.name }, image: pair.new, baseImage: pair.old });
    trace.stop();
    assert.deepEqual([result.delivery?.method, result.delivery?.reason, result.confirmed], ['full', 'patch-not-applied', true]);
    assert.deepEqual(
      trace.begins.map((b) => b.flags & BeginFlag.PATCH),
      [BeginFlag.PATCH, 0],
      'BEGIN with the patch, then BEGIN with the full image',
    );
    // The device's answer does not tell a flipped bit from a patch damaged on the way: the line claims neither.
    assert.match(
      formatResult(result),
      /could not rebuild the image from the patch: the image it runs may differ from the one it reports \(a flipped bit in its flash\), or the patch did not arrive as sent/,
    );
    assert.ok(await runs(device, pair.new));
  });

  for (const at of [0.25, 0.5, 0.95]) {
    it(`a patched transfer whose link drops at ${at * 100} % of the stream resumes there, not from the start`, async () => {
      const pair = oneFunctionChanged(256 * KB, 20 + at * 100);
      const device = await deviceRunning(pair.old, `dl-drop-${++seq}`);
      const patch = patchStream(pair.old, pair.new);
      let dropped = false;
      const drop = (address: string, uuid: string, data: Buffer) => {
        if (dropped || address !== device.address || uuid !== OTA_STREAM_UUID || data.readUInt32LE(0) < patch * at) return;
        dropped = true;
        radio.bindings.dropLink(device);
      };
      radio.bindings.on('air-write', drop);
      const trace = airTrace(radio, device);
      let result: UpdateResult;
      try {
        result = await client.update({ target: { name: device.name }, image: pair.new, baseImage: pair.old });
      } finally {
        radio.bindings.off('air-write', drop);
        trace.stop();
      }
      assert.ok(dropped);
      assert.equal(result.delivery?.method, 'patch');
      assert.ok(result.resumes >= 1);
      assert.equal(result.bytesSent, pair.new.length, 'the device rebuilt the whole image in this call, over two connections');
      assert.ok(await runs(device, pair.new));
      const resumedAt = trace.answers.filter((a) => a.status === 0).map((a) => a.offset!);
      assert.equal(resumedAt[0], 0);
      assert.ok(resumedAt.length >= 2 && resumedAt[1] > 0, `the second BEGIN resumed at ${resumedAt[1]}`);
      assert.ok(
        trace.begins.every((b) => (b.flags & BeginFlag.PATCH) !== 0),
        'every BEGIN carried the patch',
      );
      // What was sent again is at most what the device had not stored: less than the whole patch stream twice.
      assert.equal(result.delivery?.bytesOverAir, trace.streamBytes);
      assert.ok(trace.streamBytes < 2 * patch, `${trace.streamBytes} stream bytes for a ${patch}-byte patch stream`);
    });
  }

  it('a power loss while the device applies a patch leaves the old image running; the next update installs by patch', async () => {
    const pair = oneFunctionChanged(256 * KB, 30);
    const device = await deviceRunning(pair.old, `dl-power-${++seq}`);
    const before = (await device.state()).running;
    const patch = patchStream(pair.old, pair.new);
    let cut = false;
    const cutPower = (address: string, uuid: string, data: Buffer) => {
      if (cut || address !== device.address || uuid !== OTA_STREAM_UUID || data.readUInt32LE(0) < patch / 2) return;
      cut = true;
      radio.bindings.dropLink(device);
      void device.powerCycle().catch(() => undefined);
    };
    radio.bindings.on('air-write', cutPower);
    try {
      await assert.rejects(client.update({ target: { name: device.name }, image: pair.new, baseImage: pair.old, resumeAttempts: 0 }), BleOtaError);
    } finally {
      radio.bindings.off('air-write', cutPower);
    }
    assert.ok(cut);
    const state = await device.state();
    assert.equal(state.running, before, 'the slot it ran');
    assert.ok(await runs(device, pair.old), 'the old image, intact');

    const result = await client.update({ target: { name: device.name }, image: pair.new, baseImage: pair.old });
    assert.deepEqual([result.delivery?.method, result.confirmed], ['patch', true]);
    assert.ok(await runs(device, pair.new));
  });

  it('a patch shorter than one block counts the whole image rebuilt: bytesSent, the rate and the words say so', async () => {
    const old = buildAppImage({ projectName: 'lamp', version: '1.0.0', size: 512 * KB });
    const next = buildAppImage({ projectName: 'lamp', version: '1.1.0', size: 512 * KB });
    const device = await deviceRunning(old, `dl-tiny-${++seq}`);
    const result = await client.update({ target: { name: device.name }, image: next, baseImage: old });
    assert.deepEqual([result.delivery?.method, result.confirmed], ['patch', true]);
    assert.ok(result.delivery!.bytesOverAir < 4096, `${result.delivery!.bytesOverAir} bytes: one short block`);
    assert.equal(result.bytesSent, next.length);
    assert.ok(result.bytesPerSecond > 0);
    const words = formatResult(result);
    assert.doesNotMatch(words, /nothing left to send|held the rest/);
    assert.match(words, /, 512\.0 KB rebuilt from a patch in [\d.]+ s, [\d.]+ KB\/s of image, /);
    // A few hundred bytes of 512 KB: a share above 0 that would round to 0.0.
    assert.match(words, /: \d+ bytes over the air, <0\.1 % of the 512\.0 KB the full image takes\n/);
  });

  it('a patched transfer left halfway is resumed by the next call, whose bytesSent is the part of the image it rebuilt', async () => {
    const pair = oneFunctionChanged(1024 * KB, 36, { projectName: 'lamp' }, 20000);
    const device = await deviceRunning(pair.old, `dl-resume-${++seq}`);
    // The link drops halfway through the patch's stream, and this call gives up (no resume): the device keeps what it stored.
    const half = patchStream(pair.old, pair.new) / 2;
    const drop = (address: string, uuid: string, data: Buffer) => {
      if (address === device.address && uuid === OTA_STREAM_UUID && data.readUInt32LE(0) >= half) radio.bindings.dropLink(device);
    };
    radio.bindings.on('air-write', drop);
    try {
      await assert.rejects(
        client.update({ target: { name: device.name }, image: pair.new, baseImage: pair.old, resumeAttempts: 0 }),
        (err: BleOtaError) => err.code === 'DISCONNECTED',
      );
    } finally {
      radio.bindings.off('air-write', drop);
    }
    const trace = airTrace(radio, device);
    // When this call's first stream packet went, and when the device last answered before each report.
    let firstPacket = 0;
    let lastAnswer = 0;
    const onWrite = (address: string, uuid: string) => address === device.address && uuid === OTA_STREAM_UUID && (firstPacket ||= Date.now());
    const onNotify = (address: string) => address === device.address && (lastAnswer = Date.now());
    radio.bindings.on('air-write', onWrite);
    radio.bindings.on('air-notify', onNotify);
    const reports: Array<{ phase: string; bytesSent: number; bytesPerSecond: number; since: number }> = [];
    let result: UpdateResult;
    try {
      result = await client.update({
        target: { name: device.name },
        image: pair.new,
        baseImage: pair.old,
        onProgress: (p) => reports.push({ ...p, since: lastAnswer - firstPacket }),
      });
    } finally {
      trace.stop();
      radio.bindings.off('air-write', onWrite);
      radio.bindings.off('air-notify', onNotify);
    }
    assert.deepEqual([result.delivery?.method, result.confirmed], ['patch', true]);
    // Where the device resumed: a block of the patch, whose cursor says how many image bytes the blocks before it rebuilt.
    const resumedAt = trace.answers[0].imageOffset!;
    const patch = computePatch(pair.old, pair.new);
    assert.ok(resumedAt > 0 && resumedAt < patch.length, `resumed at patch byte ${resumedAt} of ${patch.length}`);
    const before = patch.readUInt32LE(resumedAt);
    assert.ok(before > 0);
    assert.equal(result.bytesSent, pair.new.length - before);
    assert.match(formatResult(result), / of 1024\.0 KB rebuilt from a patch in [\d.]+ s \(the device held the rest\), /);
    // The rate while uploading counts the patch bytes this call sent, not those the device held: at most what moved
    // since the first packet over the time the device's answers show passed (the client's own clock saw at least that).
    const uploading = reports.filter((r) => r.phase === 'uploading' && r.since > 0);
    assert.ok(uploading.length > 0);
    for (const r of uploading) {
      assert.ok(r.bytesPerSecond <= ((r.bytesSent - resumedAt) * 1000) / r.since + 1, `${r.bytesPerSecond} B/s at ${r.bytesSent}, resumed at ${resumedAt}, ${r.since} ms`);
    }
    // After the stream, progress says the result's rate: image bytes stored in this call per second of transfer.
    const after = reports.filter((r) => r.phase === 'restarting' || r.phase === 'confirming');
    assert.ok(after.length > 0);
    assert.deepEqual(new Set(after.map((r) => r.bytesPerSecond)), new Set([result.bytesPerSecond]));
  });

  /** Sends the image to the device and cancels the call once half of it is acknowledged: the device keeps a suspended transfer. */
  async function cancelHalfway(name: string, image: Buffer): Promise<void> {
    const controller = new AbortController();
    const onProgress = (p: { phase: string; bytesSent: number; totalBytes: number }) => p.phase === 'uploading' && p.bytesSent >= p.totalBytes / 2 && controller.abort();
    await assert.rejects(client.update({ target: { name }, image, signal: controller.signal, onProgress }), (err: BleOtaError) => err.code === 'CANCELLED');
  }

  it('a full image cancelled halfway is resumed by the next call, whose bytesSent is the part it sent', async () => {
    const image = buildAppImage({ projectName: 'lamp', version: '2.0.0', size: 256 * KB, seed: 37 });
    const device = await radio.addDevice({ name: `dl-resume-full-${++seq}`, restartDelayMs: 20 });
    await cancelHalfway(device.name, image);
    const trace = airTrace(radio, device);
    let result: UpdateResult;
    try {
      result = await client.update({ target: { name: device.name }, image });
    } finally {
      trace.stop();
    }
    assert.deepEqual([result.delivery?.method, result.confirmed], ['full', true]);
    const deflated = (trace.begins[0].flags & BeginFlag.DEFLATE) !== 0;
    const resumedAt = deflated ? trace.answers[0].imageOffset! : trace.answers[0].offset!;
    assert.ok(resumedAt > 0 && resumedAt < image.length, `resumed at image byte ${resumedAt}`);
    assert.equal(result.bytesSent, image.length - resumedAt);
    assert.match(formatResult(result), / of 256\.0 KB in [\d.]+ s \(the device held the rest\), [\d.]+ KB\/s, /);
  });

  it('a call that resumes a transfer the device then loses (a power loss) counts the whole image it sent again', async () => {
    const image = buildAppImage({ projectName: 'lamp', version: '2.0.0', size: 256 * KB, seed: 38 });
    const device = await radio.addDevice({ name: `dl-resume-lost-${++seq}`, restartDelayMs: 20 });
    await cancelHalfway(device.name, image);
    // The next call resumes; at its first stream packet the device loses power, and with it the suspended transfer.
    let cut = false;
    const cutPower = (address: string, uuid: string) => {
      if (cut || address !== device.address || uuid !== OTA_STREAM_UUID) return;
      cut = true;
      radio.bindings.dropLink(device);
      void device.powerCycle().catch(() => undefined);
    };
    const trace = airTrace(radio, device);
    radio.bindings.on('air-write', cutPower);
    let result: UpdateResult;
    try {
      result = await client.update({ target: { name: device.name }, image });
    } finally {
      radio.bindings.off('air-write', cutPower);
      trace.stop();
    }
    assert.ok(cut);
    const deflated = (trace.begins[0].flags & BeginFlag.DEFLATE) !== 0;
    const answered = trace.answers.map((a) => (deflated ? a.imageOffset! : a.offset!));
    assert.ok(answered[0] > 0, `the call's first BEGIN resumed (at image byte ${answered[0]})`);
    assert.equal(answered[answered.length - 1], 0, 'after the power loss the device started over');
    assert.equal(result.confirmed, true);
    assert.equal(result.bytesSent, image.length, 'the whole image went in this call');
  });

  it('the same build sent again to a device that runs it goes as a patch against itself', async () => {
    const pair = oneFunctionChanged(128 * KB, 34);
    const device = await deviceRunning(pair.old, `dl-again-${++seq}`);
    const before = (await device.state()).running;
    const result = await client.update({ target: { name: device.name }, image: pair.old, skipIfRunning: false });
    assert.deepEqual([result.delivery?.method, result.delivery?.baseSource, result.restarted], ['patch', 'image', true]);
    assert.ok(result.delivery!.bytesOverAir < encodedLength(pair.old) / 20, `${result.delivery!.bytesOverAir} bytes`);
    assert.notEqual((await device.state()).running, before, 'the copy runs, from the other slot');
    assert.ok(await runs(device, pair.old));
  });

  it('a cancel while the patch is being computed ends the update, with nothing sent, and stops the computation', async () => {
    const pair = oneFunctionChanged(1024 * KB, 35);
    const device = await deviceRunning(pair.old, `dl-cancel-${++seq}`);
    const controller = new AbortController();
    const trace = airTrace(radio, device);
    const before = { ...patchThreadCounts };
    // Once preparing is reported the patch is asked of the thread: the cancel finds it there.
    const onProgress = (p: { phase: string }) => p.phase === 'preparing' && setImmediate(() => controller.abort());
    try {
      await assert.rejects(
        client.update({ target: { name: device.name }, image: pair.new, baseImage: pair.old, signal: controller.signal, onProgress }),
        (err: BleOtaError) => err.code === 'CANCELLED',
      );
    } finally {
      trace.stop();
    }
    assert.deepEqual([trace.begins.length, trace.packets.length], [0, 0]);
    assert.ok(await runs(device, pair.old));
    // The computation was stopped (its thread ended), not left to finish for nobody ahead of the next patch.
    assert.equal(patchThreadCounts.terminated - before.terminated, 1);
    // The next update computes its patch on a fresh thread, and installs by patch.
    const threads = patchThreadCounts.threads;
    const again = await client.update({ target: { name: device.name }, image: pair.new, baseImage: pair.old });
    assert.deepEqual([again.delivery?.method, again.confirmed], ['patch', true]);
    assert.equal(patchThreadCounts.threads - threads, 1);
  });

  it('a device that does not apply patches gets the full image, and the result says so', async () => {
    const pair = oneFunctionChanged(64 * KB, 31);
    const file = join(dir, 'nodeflate.bin');
    writeFileSync(file, pair.old);
    const device = await radio.addDevice({ name: `dl-nodelta-${++seq}`, image: file, restartDelayMs: 20, deflate: false });
    const result = await client.update({ target: { name: device.name }, image: pair.new, baseImage: pair.old });
    assert.deepEqual([result.delivery?.method, result.delivery?.reason, result.confirmed], ['full', 'device-no-delta', true]);
    assert.equal(result.delivery?.bytesOverAir, pair.new.length, 'no DEFLATE either: the image as it is');
  });

  it('delta: false sends the full image', async () => {
    const pair = oneFunctionChanged(64 * KB, 32);
    const device = await deviceRunning(pair.old, `dl-off-${++seq}`);
    const result = await client.update({ target: { name: device.name }, image: pair.new, baseImage: pair.old, delta: false });
    assert.deepEqual([result.delivery?.method, result.delivery?.reason], ['full', 'delta-off']);
  });

  it('an image file with bytes after the app keeps the app it runs in the cache: the next update goes as a patch against it', async () => {
    const cache = new ImageCache({ dir: join(dir, 'cache-padded') });
    const old = buildAppImage({ projectName: 'lamp', version: '1.0.0', size: 200 * KB, seed: 38 });
    const app = buildAppImage({ projectName: 'lamp', version: '1.1.0', size: 200 * KB, seed: 38 });
    const device = await deviceRunning(old, `dl-padded-${++seq}`);
    // The .bin padded with erased flash up to a whole number of 4 KB sectors, and one more.
    const padded = Buffer.concat([app, Buffer.alloc(4096 - (app.length % 4096) + 4096, 0xff)]);
    const first = await client.update({ target: { name: device.name }, image: padded, cache });
    assert.deepEqual([first.confirmed, first.cache], [true, { stored: true }]);
    // What the device runs, and reports, is the app without the padding: that is the base kept.
    assert.deepEqual(
      (await cache.list()).map((e) => [e.sha256, e.size]),
      [[sha256(app).toString('hex'), app.length]],
    );
    const next = buildAppImage({ projectName: 'lamp', version: '1.2.0', size: 200 * KB, seed: 38 });
    const second = await client.update({ target: { name: device.name }, image: next, cache });
    assert.deepEqual([second.delivery?.method, second.delivery?.baseSource, second.delivery?.baseSha256], ['patch', 'cache', sha256(app).toString('hex')]);
    assert.ok(await runs(device, next));
  });

  it('an image the device reports running with another SHA-256 than the file or its start is not kept, and the result says why', async () => {
    const cache = new ImageCache({ dir: join(dir, 'cache-other') });
    const image = buildAppImage({ projectName: 'lamp', version: '1.0.0', size: 32 * KB, seed: 39 });
    const other = sha256(Buffer.from('another build'));
    const stored = await storeInstalled(cache, image, { confirmed: true, skipped: false, runningSha256: other, runningSize: 16 * KB });
    assert.equal(stored?.stored, false);
    assert.match(
      stored?.error ?? '',
      new RegExp(`^the device reports the image it runs with SHA-256 ${other.toString('hex').slice(0, 16)}… \\(16384 bytes\\), which is neither this file's nor that of its start`),
    );
    // Not confirmed: nothing to store, nothing said.
    assert.equal(await storeInstalled(cache, image, { confirmed: false, skipped: false, runningSha256: sha256(image), runningSize: image.length }), undefined);
    assert.deepEqual(await cache.list(), []);
  });

  it('a skip where the device runs another file of the build (signed again) that the cache holds: stored, no error', async () => {
    const cache = new ImageCache({ dir: join(dir, 'cache-skip') });
    const image = buildAppImage({ projectName: 'lamp', version: '1.0.0', size: 32 * KB, seed: 40 });
    const running = Buffer.concat([image, Buffer.alloc(4 * KB, 0xe7)]); // as the same build with another signature sector
    const skipped = { confirmed: true, skipped: true, runningSha256: sha256(running), runningSize: running.length };
    // Not held: the next update cannot send a patch, and the result says why.
    assert.equal((await storeInstalled(cache, image, skipped))?.stored, false);
    await cache.put(running);
    assert.deepEqual(await storeInstalled(cache, image, skipped), { stored: true });
    assert.deepEqual(
      (await cache.list()).map((e) => e.sha256),
      [sha256(running).toString('hex')],
      'the file the device runs, not this one',
    );
  });

  it('stores nothing in the cache when the update fails', async () => {
    const cache = new ImageCache({ dir: join(dir, 'cache-fail') });
    const device = await radio.addDevice({ name: `dl-fail-${++seq}`, restartDelayMs: 20 });
    const image = buildAppImage({ size: 32 * KB, projectName: 'virtual-esp32', version: '3.0.0', seed: 33 });
    await device.fault({ kind: 'flash-write-fail', after: 1 });
    await assert.rejects(client.update({ target: { name: device.name }, image, cache }), BleOtaError);
    assert.deepEqual(await cache.list(), []);
  });
});

describe('the delta patch thread', function () {
  this.timeout(120_000);
  const big = (seed: number) => oneFunctionChanged(2 * THREAD_FROM, seed);

  it('a patch abandoned on the thread ends the thread; a patch waiting behind it is computed on a fresh one', async () => {
    const [a, b] = [big(61), big(62)];
    // A thread at work first, whatever ran before (or its idle time ran out): the abandoned patch ends that one.
    await computePatchOffThread(a.old, a.new);
    const before = { ...patchThreadCounts };
    const cancel = new AbortController();
    const first = computePatchOffThread(a.old, a.new, cancel.signal);
    const second = computePatchOffThread(b.old, b.new);
    cancel.abort();
    await assert.rejects(first, { name: 'AbortError' });
    assert.deepEqual(await second, computePatch(b.old, b.new), "the other caller's patch, whole");
    assert.deepEqual(
      [patchThreadCounts.terminated - before.terminated, patchThreadCounts.withdrawn - before.withdrawn, patchThreadCounts.threads - before.threads],
      [1, 0, 1],
      'one thread ended, and a fresh one computed the waiting patch',
    );
  });

  it('a patch that cannot be handed to the thread fails alone; the ones after it are computed', async () => {
    const a = big(66);
    // A base whose memory was moved away (transferred): it cannot be copied to the thread.
    const gone = new Uint8Array(a.old);
    structuredClone(gone.buffer, { transfer: [gone.buffer] });
    await assert.rejects(computePatchOffThread(gone, a.new), /detached|could not be cloned/i);
    assert.deepEqual(await computePatchOffThread(a.old, a.new), computePatch(a.old, a.new));
  });

  it('a patch abandoned while it waits is withdrawn; the one on the thread goes on there', async () => {
    const [a, b, c] = [big(63), big(64), big(65)];
    const before = { ...patchThreadCounts };
    const cancel = new AbortController();
    const first = computePatchOffThread(a.old, a.new);
    const second = computePatchOffThread(b.old, b.new, cancel.signal);
    const third = computePatchOffThread(c.old, c.new);
    cancel.abort();
    await assert.rejects(second, { name: 'AbortError' });
    assert.deepEqual(await first, computePatch(a.old, a.new));
    assert.deepEqual(await third, computePatch(c.old, c.new));
    assert.deepEqual([patchThreadCounts.terminated - before.terminated, patchThreadCounts.withdrawn - before.withdrawn], [0, 1]);
    // An abort after the answer changes nothing.
    const done = new AbortController();
    const patch = await computePatchOffThread(a.old, a.new, done.signal);
    done.abort();
    assert.deepEqual(patch, computePatch(a.old, a.new));
    assert.equal(patchThreadCounts.terminated - before.terminated, 0);
  });
});

describe('delta updates from the command line', function () {
  this.timeout(120_000);
  const MAIN = join(__dirname, '..', 'lib', 'cli', 'main.js');
  let dir: string;
  let builtIn: Buffer;

  /** Runs the tool; resolves with its exit code and output. */
  function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
      child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ble-ota-delta-cli-'));
    // The image a virtual device runs when it starts: the base of what the tool's --virtual device runs.
    const radio = new VirtualRadio();
    try {
      const probe = await radio.addDevice({ name: 'builtin-probe' });
      const state = await probe.state();
      builtIn = await probe.readFlash(state.running, 0, state.slots[state.running].size);
    } finally {
      await radio.stopAll();
    }
    writeFileSync(join(dir, 'running.bin'), builtIn);
    // Its next version: the same bytes where the builder puts segment data, a new version string.
    writeFileSync(join(dir, 'next.bin'), buildAppImage({ projectName: 'virtual-esp32', version: '1.0.1', size: builtIn.length, fill: builtIn }));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('--base sends a patch and says so; --cache-dir keeps the installed image; --no-cache with --cache-dir is a usage error', async () => {
    const patched = await cli(['upload', join(dir, 'next.bin'), '--virtual', '--device', 'cli-delta', '--base', join(dir, 'running.bin')]);
    assert.equal(patched.code, 0, patched.stderr);
    assert.match(patched.stdout, /\n {2}protocol v2, [\d.]+ KB rebuilt from a patch in [\d.]+ s, [\d.]+ KB\/s of image, /);
    assert.match(
      patched.stdout,
      /\n {2}delta patch against the image the device ran \([0-9a-f]{12}…, from --base\): [\d.]+ (bytes|KB) over the air, (<0\.1|[\d.]+) % of the [\d.]+ (bytes|KB) the full image takes\n/,
    );

    const cacheDir = join(dir, 'cache');
    const json = await cli(['upload', join(dir, 'next.bin'), '--virtual', '--device', 'cli-delta', '--cache-dir', cacheDir, '--json']);
    assert.equal(json.code, 0, json.stderr);
    const result = JSON.parse(json.stdout) as { delivery: { method: string; reason?: string }; cache?: { stored: boolean } };
    assert.deepEqual([result.delivery.method, result.delivery.reason, result.cache?.stored], ['full', 'base-unknown', true]);
    const next = readFileSync(join(dir, 'next.bin'));
    assert.ok(existsSync(join(cacheDir, `${sha256(next).toString('hex')}.bin`)));

    const usage = await cli(['upload', join(dir, 'next.bin'), '--virtual', '--device', 'cli-delta', '--cache-dir', cacheDir, '--no-cache']);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--no-cache and --cache-dir contradict each other/);
  });

  it('a cache folder that cannot be written fails no update: a warning says what the next one loses', async () => {
    const notAFolder = join(dir, 'cache-file');
    writeFileSync(notAFolder, 'a file where the cache folder should be');
    const run = await cli(['upload', join(dir, 'next.bin'), '--virtual', '--device', 'cli-delta-3', '--cache-dir', notAFolder]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^updated cli-delta-3 /m);
    assert.match(run.stderr, /^warning: the image could not be stored in .*cache-file: .*; the next update of this device sends the full image$/m);
  });

  it("a damaged cache file of the running image is told on the delivery line, and in the JSON as 'base-damaged'", async () => {
    const cacheDir = join(dir, 'cache-damaged');
    mkdirSync(cacheDir);
    const file = join(cacheDir, `${sha256(builtIn).toString('hex')}.bin`);
    const damaged = Buffer.from(builtIn);
    damaged[100] ^= 1;
    writeFileSync(file, damaged);
    const run = await cli(['upload', join(dir, 'next.bin'), '--virtual', '--device', 'cli-delta-4', '--cache-dir', cacheDir]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(
      run.stdout,
      /\n {2}full image, [\d.]+ KB over the air: the image cache's file of the image the device runs was damaged .* and is removed: check the disk it is on\n/,
    );
    assert.equal(existsSync(file), false);

    writeFileSync(file, damaged);
    const json = await cli(['upload', join(dir, 'next.bin'), '--virtual', '--device', 'cli-delta-5', '--cache-dir', cacheDir, '--json']);
    assert.equal(json.code, 0, json.stderr);
    assert.equal((JSON.parse(json.stdout) as { delivery: { reason?: string } }).delivery.reason, 'base-damaged');
  });

  it("a FIFO in the cache under the running image's name holds nothing up: the full image goes, and a warning names it once", async () => {
    const cacheDir = join(dir, 'cache-fifo');
    mkdirSync(cacheDir);
    const fifo = join(cacheDir, `${sha256(builtIn).toString('hex')}.bin`);
    execFileSync('mkfifo', [fifo]);
    const run = await cli(['upload', join(dir, 'next.bin'), '--virtual', '--device', 'cli-delta-6', '--cache-dir', cacheDir]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^updated cli-delta-6 /m);
    const warnings = run.stderr.split('\n').filter((line) => line.startsWith('warning: '));
    assert.deepEqual(warnings, [
      `warning: the image cache's ${fifo} is a FIFO (named pipe), not an image file: it is not used as the base of a delta update (the full image goes); remove it`,
    ]);
    assert.ok(existsSync(join(cacheDir, `${sha256(readFileSync(join(dir, 'next.bin'))).toString('hex')}.bin`)), 'the installed image is kept');
  });

  it('a --base file that cannot be read fails before any radio work, naming it', async () => {
    const run = await cli(['upload', join(dir, 'next.bin'), '--virtual', '--device', 'cli-delta-2', '--base', join(dir, 'missing.bin')]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /cannot read .*missing\.bin: no such file/);
    assert.doesNotMatch(run.stdout, /virtual ESP32 .* started/);
    // Neither a device file (read without end), nor an empty file, nor one larger than any app partition.
    const empty = join(dir, 'empty.bin');
    writeFileSync(empty, '');
    const tooLarge = join(dir, 'too-large.bin');
    writeFileSync(tooLarge, Buffer.alloc(16 * 1024 * 1024 + 1));
    for (const [base, why] of [
      ['/dev/zero', /--base \/dev\/zero is a device or a socket, not a file or a pipe/],
      [empty, /--base .*empty\.bin is empty: give the image the device runs/],
      [tooLarge, /--base .*too-large\.bin is 16777217 bytes: no ESP32 app image is larger than the 16 MB/],
    ] as const) {
      const refused = await cli(['upload', join(dir, 'next.bin'), '--virtual', '--device', 'cli-delta-2', '--base', base]);
      assert.equal(refused.code, 1, refused.stderr);
      assert.match(refused.stderr, why);
      assert.doesNotMatch(refused.stdout, /virtual ESP32 .* started/);
    }
  });
});
