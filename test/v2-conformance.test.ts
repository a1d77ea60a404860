/**
 * Protocol v2 conformance (test/support/v2-conformance.ts) through noble and
 * the virtual bindings, against two virtual ESP32s: one as the tests make it
 * (no authentication, unsigned images, the seed protocol served), and an
 * ESP32-C3 as our firmware's default build leaves it (an authenticated
 * session, signed images only), which is what `npm run test:hardware` meets
 * on a real device: the same cases, and the update that run adds, here.
 */
import { BleOtaClient } from '../lib/client/ota-client';
import { buildAppImage } from '../lib/image/app-image-builder';
import { signImage } from '../lib/image/signature';
import { VirtualRadio } from '../lib/virtual/virtual-radio';
import { OWNER, ownedDevice } from './support/owner';
import { ConformanceTarget, defineUpdate, defineV2Conformance } from './support/v2-conformance';

const T = 2000;

/** One radio for the file, made on first use. */
let radio: VirtualRadio | undefined;
const theRadio = () => (radio ??= new VirtualRadio());
after(() => radio?.stopAll());

/** Two versions the device can be updated between, whichever it runs. */
const nextVersion = (running: string, a: string, b: string) => (running === a ? b : a);

describe('the virtual ESP32 as the tests make it', function () {
  this.timeout(30_000);
  const WINDOW = 8192;
  defineV2Conformance(async (): Promise<ConformanceTarget> => {
    const device = await theRadio().addDevice({ name: 'conformance', window: WINDOW, restartDelayMs: 20 });
    return {
      client: new BleOtaClient({ noble: theRadio().noble, timeouts: { scanMs: 3000, gattMs: T } }),
      target: { name: 'conformance' },
      requestMs: T,
      restartMs: 5000,
      image: ({ sign: _unsigned, ...options }) => buildAppImage(options),
      sign: (image) => image, // it takes unsigned images
      bootable: (running) => buildAppImage({ size: 40 * 1024, version: nextVersion(running, '7.1.0', '7.2.0'), seed: 34 }),
      noBootableReason: '',
      virtual: {
        expect: { window: WINDOW, slotSize: 0x1e0000, chipId: 0, projectName: 'virtual-esp32', version: '1.0.0', seed: true },
        bootSlot: async () => (await device.state()).boot,
      },
    };
  });
});

describe("a virtual ESP32-C3 as our firmware's default build (what test:hardware meets)", function () {
  this.timeout(30_000);
  const C3 = 5;
  let made: Promise<ConformanceTarget> | undefined;
  const setup = () =>
    (made ??= (async (): Promise<ConformanceTarget> => {
      const device = await theRadio().addDevice(ownedDevice({ name: 'conformance-c3', chipId: C3, restartDelayMs: 20 }));
      const signed = (version: string, seed: number) => buildAppImage({ chipId: C3, size: 40 * 1024, version, seed, signingKeys: OWNER.signingKey });
      return {
        client: new BleOtaClient({ noble: theRadio().noble, timeouts: { scanMs: 3000, gattMs: T } }),
        target: { name: 'conformance-c3' },
        secret: OWNER.secret,
        requestMs: T,
        restartMs: 5000,
        image: ({ sign, ...options }) => buildAppImage({ chipId: C3, ...options, signingKeys: sign === false ? undefined : OWNER.signingKey }),
        sign: (image) => signImage(image, OWNER.signingKey),
        bootable: (running) => signed(nextVersion(running, '8.1.0', '8.2.0'), 35),
        noBootableReason: '',
        virtual: {
          expect: { window: 32768, slotSize: 0x1e0000, chipId: C3, projectName: 'virtual-esp32', version: '1.0.0', seed: false },
          bootSlot: async () => (await device.state()).boot,
        },
      };
    })());
  defineV2Conformance(setup);
  defineUpdate(setup);
});
