/**
 * The link in OTA Info (info_version 3): what the virtual ESP32's firmware
 * asks of its link and reports of it, what the client's result and the
 * CLI make of it, and an update from a device whose firmware predates it.
 */
import { strict as assert } from 'node:assert';
import { infoView, formatInfo, formatResult } from '../lib/cli/output';
import { BleOtaClient } from '../lib/client/ota-client';
import { buildAppImage } from '../lib/image/app-image-builder';
import { INFO_SIZE, INFO_SIZE_V2, InfoOffset, OTA_INFO_UUID } from '../lib/protocol/constants';
import { decodeInfo } from '../lib/protocol/v2-codec';
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
    assert.equal(info.infoVersion, 3);
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
    assert.deepEqual(view.ota?.link, granted);
    assert.match(formatInfo(view), /link +interval 15 ms, latency 0, supervision timeout 5 s, PHY 2M, data length 251 octets, MTU 247/);
    await device.disconnect();
  });

  it("an update's result reports the link the image went over; the firmware asked for transfer parameters, then idle ones", async () => {
    const device = await radio.addDevice({ name: 'link-update', restartDelayMs: 20 });
    const asked: string[] = [];
    device.on('link-request', (r: VirtualEsp32['linkRequests']) => {
      if (r.connParams && asked[asked.length - 1] !== r.connParams.profile) asked.push(r.connParams.profile);
    });
    const client = new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000, gattMs: 2000 } });
    const image = buildAppImage({ size: 64 * 1024, projectName: 'virtual-esp32', version: '2.0.0', seed: 3 });
    const result = await client.update({ target: { name: 'link-update' }, image });
    assert.equal(result.confirmed, true);
    assert.deepEqual(asked.slice(0, 2), ['transfer', 'idle']);
    assert.equal(result.link.mtu, result.mtu);
    assert.equal(result.link.intervalMs, 7.5);
    assert.equal(result.link.latency, 0);
    assert.equal(result.link.supervisionTimeoutMs, 420);
    assert.deepEqual(result.link.phy, { toDevice: '1M', fromDevice: '1M' });
    assert.deepEqual(result.link.dataLength, { toDevice: 27, fromDevice: 27 });
    assert.match(formatResult(result), /\n {2}link: interval 7\.5 ms, latency 0, supervision timeout 0\.42 s, PHY 1M, data length 27 octets\n/);
    assert.deepEqual(JSON.parse(JSON.stringify(result)).link.dataLength, { toDevice: 27, fromDevice: 27 });
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
