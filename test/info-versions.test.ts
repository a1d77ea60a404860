/**
 * OTA Info across versions: a client decodes the value of every info_version
 * deployed firmware sends with the fields that version had, and a newer
 * firmware's longer value with the fields it knows, so adding a field locks
 * no device out. Decoded alone, then through the client, the CLI's view and
 * the status node's, and an update.
 */
import { strict as assert } from 'node:assert';
import { formatInfo } from '../lib/cli/output';
import { deviceInfoView } from '../lib/device-info';
import { BleOtaClient } from '../lib/client/ota-client';
import { buildAppImage } from '../lib/image/app-image-builder';
import { INFO_SIZE, INFO_VERSION, InfoLayout, infoSize, OTA_INFO_UUID } from '../lib/protocol/constants';
import { decodeInfo, DeviceInfoV2 } from '../lib/protocol/v2-codec';
import { VirtualEsp32 } from '../lib/virtual/virtual-device';
import { VirtualRadio } from '../lib/virtual/virtual-radio';
import { OWNER } from './support/owner';

/** The value `current` as firmware of `version` sends it: its first fields, or more bytes after them. */
function asVersion(current: Buffer, version: number, extra = 0): Buffer {
  const size = Math.min(infoSize(version), current.length);
  const value = Buffer.concat([current.subarray(0, size), Buffer.alloc(extra, 0xa5)]);
  value[InfoLayout.INFO_VERSION.offset] = version;
  return value;
}

/** The info_version that added each optional field of DeviceInfoV2 (a field added later may join). */
const SINCE: Partial<Record<keyof DeviceInfoV2, number>> = { deviceId: 2, signingKeyDigest: 2, link: 3, runningSize: 4, runningSha256: 4 };

/**
 * An older version's decode: the current decode's value for every field it
 * has, and none of the fields added after its version.
 */
function assertOlder(info: DeviceInfoV2, current: DeviceInfoV2, version: number): void {
  assert.equal(info.infoVersion, version);
  for (const [key, value] of Object.entries(info)) {
    if (key !== 'infoVersion') assert.deepEqual(value, current[key as keyof DeviceInfoV2], key);
  }
  for (const [key, since] of Object.entries(SINCE)) {
    const has = info[key as keyof DeviceInfoV2] !== undefined;
    assert.equal(has, since! <= version, `${key} (info_version ${since}) ${has ? 'decoded' : 'missing'} in info_version ${version}`);
  }
}

/** Serves OTA Info as `transform` makes it, the rest as the device does. */
function serveInfo(device: VirtualEsp32, transform: (value: Buffer) => Buffer): void {
  const read = device.read.bind(device);
  device.read = async (uuid: string) => {
    const value = await read(uuid);
    return uuid.replace(/-/g, '').toLowerCase() === OTA_INFO_UUID.replace(/-/g, '') ? transform(value) : value;
  };
}

describe('OTA Info versions', function () {
  this.timeout(60_000);
  let radio: VirtualRadio;
  let current: Buffer;
  let decoded: DeviceInfoV2;

  before(async function () {
    this.timeout(120_000);
    radio = new VirtualRadio();
    // A device that names its signing key, so that every field has a value.
    const device = await radio.addDevice({ name: 'info-now', signingKey: OWNER.signingKey });
    await device.connect(247);
    current = await device.read(OTA_INFO_UUID);
    await device.disconnect();
    decoded = decodeInfo(current);
  });
  after(() => radio.stopAll());

  describe('decoding', () => {
    it(`the current firmware sends info_version ${INFO_VERSION}, ${INFO_SIZE} bytes, with every field`, () => {
      assert.equal(current.length, INFO_SIZE);
      assert.equal(decoded.infoVersion, INFO_VERSION);
      assert.equal(decoded.deviceId?.length, 6);
      assert.ok(decoded.link?.mtu, 'the link fields');
      assert.equal(decoded.signingKeyDigest?.length, 32);
      assert.equal(decoded.app.projectName, 'virtual-esp32');
      assert.ok(decoded.runningSize && decoded.runningSize > 0, "the running image's size");
      assert.equal(decoded.runningSha256?.length, 32);
    });

    for (let version = 1; version < INFO_VERSION; version++) {
      it(`info_version ${version} (${infoSize(version)} bytes) decodes with the fields it had, the later ones undefined`, () => {
        assertOlder(decodeInfo(asVersion(current, version)), decoded, version);
      });

      it(`info_version ${version} with more bytes than it has fields: the fields of its version only`, () => {
        const value = asVersion(current, version, INFO_SIZE - infoSize(version) + 8);
        assert.deepEqual(decodeInfo(value), decodeInfo(asVersion(current, version)));
      });
    }

    it("info_version 4: the running image's size and SHA-256, undefined when the device cannot tell (zeros)", () => {
      const value = Buffer.from(current);
      value.writeUInt32LE(0x2f3e0, InfoLayout.RUNNING_SIZE.offset);
      value.fill(0xc3, InfoLayout.RUNNING_SHA256.offset, InfoLayout.RUNNING_SHA256.offset + 32);
      const info = decodeInfo(value);
      assert.equal(info.runningSize, 0x2f3e0);
      assert.deepEqual(info.runningSha256, Buffer.alloc(32, 0xc3));
      value.fill(0, InfoLayout.RUNNING_SIZE.offset, INFO_SIZE);
      const unknown = decodeInfo(value);
      assert.equal(unknown.runningSize, undefined);
      assert.equal(unknown.runningSha256, undefined);
    });

    it('a newer info_version, longer: the fields this client knows, the rest ignored', () => {
      for (const extra of [1, 24, 512 - INFO_SIZE]) {
        const info = decodeInfo(asVersion(Buffer.concat([current, Buffer.alloc(extra, 0x5a)]), INFO_VERSION + 1));
        assert.deepEqual(info, { ...decoded, infoVersion: INFO_VERSION + 1 });
      }
      // Any later version number decodes the same.
      assert.equal(decodeInfo(asVersion(Buffer.concat([current, Buffer.alloc(4)]), 255)).infoVersion, 255);
    });

    it('a value shorter than its version says is refused with its size and the size expected', () => {
      assert.throws(() => decodeInfo(current.subarray(0, infoSize(INFO_VERSION - 1))), {
        name: 'RangeError',
        message: `OTA Info of info_version ${INFO_VERSION} is ${infoSize(INFO_VERSION - 1)} bytes, expected at least ${INFO_SIZE}`,
      });
      // A newer version has at least the fields this client knows.
      assert.throws(() => decodeInfo(asVersion(current, INFO_VERSION + 1).subarray(0, INFO_SIZE - 1)), {
        message: `OTA Info of info_version ${INFO_VERSION + 1} is ${INFO_SIZE - 1} bytes, expected at least ${INFO_SIZE}`,
      });
      assert.throws(() => decodeInfo(current.subarray(0, infoSize(1) - 1)), {
        message: `OTA Info is ${infoSize(1) - 1} bytes, shorter than the ${infoSize(1)} of its first version`,
      });
    });
  });

  describe('through the client and its views', () => {
    const cases: Array<{ title: string; version: number; extra: number }> = [
      { title: `a newer firmware (info_version ${INFO_VERSION + 1}, 40 bytes more)`, version: INFO_VERSION + 1, extra: 40 },
      ...Array.from({ length: INFO_VERSION - 1 }, (_, i) => ({ title: `firmware of info_version ${i + 1}`, version: i + 1, extra: 0 })),
    ];
    for (const c of cases) {
      it(`${c.title}: its information reads and shows, and it updates`, async () => {
        const name = `info-v${c.version}`;
        const device = await radio.addDevice({ name, restartDelayMs: 20 });
        serveInfo(device, (value) => asVersion(Buffer.concat([value, Buffer.alloc(c.extra, 0x5a)]), c.version));
        const client = new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000, gattMs: 2000 } });

        const connection = await client.connect({ name });
        const info = await connection.info();
        await connection.close();
        assert.equal(info.ota?.infoVersion, c.version);
        assert.equal(info.ota?.app.projectName, 'virtual-esp32');
        // One view: info --json prints it, the status node sends it.
        const view = deviceInfoView(info);
        assert.equal(view.version, '1.0.0');
        assert.equal(view.project, 'virtual-esp32');
        if (c.version >= 2) {
          assert.match(view.deviceId ?? '', /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
        } else {
          assert.equal(view.deviceId, null);
          assert.match(formatInfo(view), /device id +\(not reported\)/);
        }
        if (c.version >= 3) assert.ok(view.link?.mtu);
        else assert.match(formatInfo(view), /link +\(not reported: firmware older than OTA Info version 3\)/);

        const image = buildAppImage({ size: 24 * 1024, projectName: 'virtual-esp32', version: '2.0.0', seed: 40 + c.version });
        const result = await client.update({ target: { name }, image });
        assert.equal(result.confirmed, true);
        assert.equal(result.runningVersion, '2.0.0');
        assert.equal(result.previousVersion, '1.0.0');
      });
    }
  });
});
