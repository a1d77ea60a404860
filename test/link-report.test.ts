/**
 * The link in OTA Info (info_version 3): what the virtual ESP32's firmware
 * asks of its link and reports of it, what the client's result and the
 * CLI make of it, and an update from a device whose firmware predates it.
 */
import { strict as assert } from 'node:assert';
import { infoView, formatInfo, formatResult } from '../lib/cli/output';
import { BleOtaClient, Progress } from '../lib/client/ota-client';
import { buildAppImage } from '../lib/image/app-image-builder';
import { INFO_SIZE, INFO_SIZE_V2, InfoOffset, OTA_INFO_UUID } from '../lib/protocol/constants';
import { decodeInfo } from '../lib/protocol/v2-codec';
import { ESP32, FIRMWARE_LINK_REQUEST, LINUX_NOBLE, negotiate } from '../lib/virtual/link-model';
import { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { VirtualRadio } from '../lib/virtual/virtual-radio';

describe('the link in OTA Info', function () {
  this.timeout(60_000);
  let radio: VirtualRadio;

  before(() => {
    radio = new VirtualRadio();
  });
  after(() => radio.stopAll());

  it('the virtual ESP32 reports the link of its connection, records what its firmware asks, and reports what the central grants', async () => {
    const device = await radio.addDevice({ name: 'link-raw' });
    const mtu = await device.connect(247);
    // On connection the firmware asks for the largest data length and the 2M PHY, nothing of the interval yet.
    assert.deepEqual(device.linkRequests, { dataPath: { txOctets: 251, txTimeUs: 2120, phy: '2M' } });
    let info = decodeInfo(await device.read(OTA_INFO_UUID));
    assert.ok(info.infoVersion >= 3, `info_version ${info.infoVersion}`);
    assert.deepEqual(info.link, {
      intervalMs: 7.5,
      latency: 0,
      supervisionTimeoutMs: 420,
      phy: { toDevice: '1M', fromDevice: '1M' },
      dataLength: { toDevice: 27, fromDevice: 27 },
      mtu,
      requested: 'none',
    });
    // The central grants 2M and DLE (as an ESP32-S3 with a capable central would get).
    await device.setLink({ intervalMs: 15, latency: 0, supervisionTimeoutMs: 5000, phy: { toDevice: '2M', fromDevice: '2M' }, dataLength: { toDevice: 251, fromDevice: 251 } });
    info = decodeInfo(await device.read(OTA_INFO_UUID));
    // What the device reports, and --json shows the same.
    const granted = {
      intervalMs: 15,
      latency: 0,
      supervisionTimeoutMs: 5000,
      phy: { toDevice: '2M', fromDevice: '2M' },
      dataLength: { toDevice: 251, fromDevice: 251 },
      mtu,
      requested: 'none',
    };
    assert.deepEqual(info.link, granted);
    // info --json and its words.
    const view = infoView({ name: 'link-raw', address: device.address, rssi: -50, mtu, protocol: 'v2', firmwareRevision: '1.0.0', ota: info, authenticated: false });
    assert.deepEqual(view.link, granted);
    assert.match(formatInfo(view), /link +interval 15 ms, latency 0, supervision timeout 5 s, PHY 2M, data length 251 octets, MTU 247/);
    await device.disconnect();
  });

  it("an update's result reports the link the image went over: what the firmware asked for, as the central (noble on Linux) granted it", async () => {
    const device = await radio.addDevice({ name: 'link-update', restartDelayMs: 20 });
    const asked: string[] = [];
    let requestsAtBegin: VirtualEsp32['linkRequests'] | undefined;
    device.on('link-request', (r: VirtualEsp32['linkRequests']) => {
      if (r.connParams && asked[asked.length - 1] !== r.connParams.profile) asked.push(r.connParams.profile);
      if (r.connParams?.profile === 'transfer') requestsAtBegin ??= r;
    });
    const client = new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000, gattMs: 2000 } });
    const image = buildAppImage({ size: 64 * 1024, projectName: 'virtual-esp32', version: '2.0.0', seed: 3 });
    const progress: Progress[] = [];
    const result = await client.update({ target: { name: 'link-update' }, image, onProgress: (p) => progress.push(p) });
    assert.equal(result.confirmed, true);
    // Transfer parameters from BEGIN, kept through END and RESTART (the device restarts at once).
    assert.deepEqual(asked, ['transfer']);
    // The link model's figures rest on FIRMWARE_LINK_REQUEST: it is what the firmware's core asks.
    const { dataPath, connParams } = requestsAtBegin!;
    assert.equal(dataPath?.txOctets, FIRMWARE_LINK_REQUEST.dataLength);
    assert.equal(dataPath?.phy, FIRMWARE_LINK_REQUEST.phys[0]);
    assert.deepEqual(
      { min: connParams?.intervalMinMs, max: connParams?.intervalMaxMs, latency: connParams?.latency, timeout: connParams?.supervisionTimeoutMs },
      { ...FIRMWARE_LINK_REQUEST.intervalMs, latency: FIRMWARE_LINK_REQUEST.latency, timeout: FIRMWARE_LINK_REQUEST.supervisionTimeoutMs },
    );
    // The link the model's central grants the firmware's request: recomputed, not written down.
    const request = device.linkRequests.connParams ?? { intervalMinMs: 7.5, intervalMaxMs: 15, latency: 0, supervisionTimeoutMs: 5000 };
    const granted = negotiate(LINUX_NOBLE, ESP32, {
      ...FIRMWARE_LINK_REQUEST,
      mtu: result.mtu,
      phys: ['1M'],
      intervalMs: { min: request.intervalMinMs, max: request.intervalMaxMs },
      latency: request.latency,
      supervisionTimeoutMs: request.supervisionTimeoutMs,
    });
    assert.equal(result.link.mtu, result.mtu);
    assert.equal(result.link.intervalMs, granted.intervalMs);
    assert.equal(result.link.latency, granted.latency);
    assert.equal(result.link.supervisionTimeoutMs, granted.supervisionTimeoutMs);
    assert.deepEqual(result.link.phy, { toDevice: '1M', fromDevice: '1M' }, 'an ESP32 has no 2M PHY');
    assert.deepEqual(result.link.dataLength, { toDevice: 251, fromDevice: 251 });
    assert.match(
      formatResult(result),
      new RegExp(`\\n {2}link: interval ${granted.intervalMs} ms, latency 0, supervision timeout ${granted.supervisionTimeoutMs / 1000} s, PHY 1M, data length 251 octets`),
    );
    assert.deepEqual(JSON.parse(JSON.stringify(result)).link.dataLength, { toDevice: 251, fromDevice: 251 });
    // Progress shows the link as the device last reported it, so a slow transfer shows why while it runs.
    assert.ok(progress.filter((p) => p.phase === 'uploading').every((p) => p.link?.mtu === result.mtu));
    assert.equal(progress.find((p) => p.phase === 'restarting')?.link?.intervalMs, granted.intervalMs);
  });

  it('a device whose firmware predates the link fields (info_version 2) still updates; its result says only the MTU', async () => {
    const device = await radio.addDevice({ name: 'link-older', restartDelayMs: 20 });
    // OTA Info as firmware before info_version 3 served it: 260 bytes.
    const read = device.read.bind(device);
    device.read = async (uuid: string) => {
      const value = await read(uuid);
      if (uuid.replace(/-/g, '').toLowerCase() !== OTA_INFO_UUID.replace(/-/g, '')) return value;
      assert.equal(value.length, INFO_SIZE);
      const older = Buffer.from(value.subarray(0, INFO_SIZE_V2));
      older[InfoOffset.INFO_VERSION] = 2;
      return older;
    };
    const client = new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000, gattMs: 2000 } });
    const image = buildAppImage({ size: 32 * 1024, projectName: 'virtual-esp32', version: '2.0.0', seed: 4 });
    const result = await client.update({ target: { name: 'link-older' }, image });
    assert.equal(result.confirmed, true);
    assert.deepEqual(result.link, { mtu: result.mtu });
    assert.doesNotMatch(formatResult(result), /link:/);
    const connection = await client.connect({ name: 'link-older' });
    const info = await connection.info();
    await connection.close();
    assert.equal(info.ota?.infoVersion, 2);
    assert.equal(info.ota?.link, undefined);
    assert.match(formatInfo(infoView(info)), /link +\(not reported: firmware older than OTA Info version 3\)/);
  });
});
