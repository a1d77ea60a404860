/**
 * Delta updates on the air (test/support/delta-conformance.ts) through
 * noble and the virtual bindings, against two virtual ESP32s: one as the
 * tests make it, and an ESP32-C3 with a key that takes only signed images
 * (patches between signed images, BEGIN with PATCH in a session).
 */
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { BleOtaClient } from '../lib/client/ota-client';
import { CommandRefused } from '../lib/client/refusal';
import { buildAppImage } from '../lib/image/app-image-builder';
import { signImage } from '../lib/image/signature';
import { BeginFlag, Feature, Status } from '../lib/protocol/constants';
import { VirtualRadio } from '../lib/virtual/virtual-radio';
import { defineDeltaConformance } from './support/delta-conformance';
import { OWNER, ownedDevice } from './support/owner';
import { ConformanceTarget } from './support/v2-conformance';

const T = 2000;

/** One radio for the file, made on first use. */
let radio: VirtualRadio | undefined;
const theRadio = () => (radio ??= new VirtualRadio());
after(() => radio?.stopAll());

describe('the virtual ESP32: delta updates', function () {
  this.timeout(30_000);
  defineDeltaConformance(async (): Promise<ConformanceTarget> => {
    await theRadio().addDevice({ name: 'delta-conformance', window: 8192, restartDelayMs: 20 });
    return {
      client: new BleOtaClient({ noble: theRadio().noble, timeouts: { scanMs: 3000, gattMs: T } }),
      target: { name: 'delta-conformance' },
      requestMs: T,
      restartMs: 5000,
      image: ({ sign: _unsigned, ...options }) => buildAppImage(options),
      sign: (image) => image,
      bootable: () => undefined,
      noBootableReason: 'not needed',
    };
  });
});

describe('a virtual ESP32-C3 with a key, taking signed images only: delta updates', function () {
  this.timeout(30_000);
  const C3 = 5;
  defineDeltaConformance(async (): Promise<ConformanceTarget> => {
    await theRadio().addDevice(ownedDevice({ name: 'delta-c3', chipId: C3, restartDelayMs: 20 }));
    return {
      client: new BleOtaClient({ noble: theRadio().noble, timeouts: { scanMs: 3000, gattMs: T } }),
      target: { name: 'delta-c3' },
      secret: OWNER.secret,
      requestMs: T,
      restartMs: 5000,
      image: ({ sign, ...options }) => buildAppImage({ chipId: C3, ...options, signingKeys: sign === false ? undefined : OWNER.signingKey }),
      sign: (image) => signImage(image, OWNER.signingKey),
      bootable: () => undefined,
      noBootableReason: 'not needed',
    };
  });
});

describe('a virtual ESP32 that cannot read its running slot (--delta off)', function () {
  this.timeout(30_000);

  it('offers no DELTA, names no running image, and refuses BEGIN with PATCH (BAD_ARGUMENT)', async () => {
    await theRadio().addDevice({ name: 'no-delta', delta: false });
    const client = new BleOtaClient({ noble: theRadio().noble, timeouts: { scanMs: 3000, gattMs: T } });
    const conn = await client.connect({ name: 'no-delta' });
    try {
      const v2 = conn.v2;
      assert.ok(v2);
      await v2.subscribe();
      const info = await v2.readInfo();
      assert.equal(info.features & Feature.DELTA, 0);
      assert.equal(info.runningSha256, undefined);
      assert.equal(info.runningSize, undefined);
      const image = buildAppImage({ size: 20 * 1024, version: '9.0.0', seed: 90 });
      const sha256 = createHash('sha256').update(image).digest();
      await assert.rejects(
        v2.begin({ size: image.length, sha256, chipId: 0, flags: BeginFlag.DEFLATE | BeginFlag.PATCH, base: sha256 }, T),
        (err: unknown) => err instanceof CommandRefused && err.status === Status.BAD_ARGUMENT,
      );
    } finally {
      await conn.close();
    }
  });
});
