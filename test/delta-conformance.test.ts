/**
 * Delta updates on the air (test/support/delta-conformance.ts) through
 * noble and the virtual bindings, against two virtual ESP32s: one as the
 * tests make it, and an ESP32-C3 with a key that takes only signed images
 * (patches between signed images, BEGIN with PATCH in a session).
 */
import { BleOtaClient } from '../lib/client/ota-client';
import { buildAppImage } from '../lib/image/app-image-builder';
import { signImage } from '../lib/image/signature';
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
