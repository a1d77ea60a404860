/**
 * The protocol conformance cases (test/support/v2-conformance.ts) and one
 * update, against the real ESP32 the environment names, through noble's
 * HCI bindings: run by `npm run test:hardware` (test/hardware/run.ts), never
 * by `npm test` (its name is no *.test.js). Synthetic images are built for
 * the device's chip and signed with BLE_OTA_HW_SIGNING_KEY where it takes
 * only signed ones; the cases that restart the device into a new image use
 * the builds BLE_OTA_HW_IMAGES names.
 */
import { BleOtaClient } from '../../lib/client/ota-client';
import { buildAppImage } from '../../lib/image/app-image-builder';
import { signImage } from '../../lib/image/signature';
import { releaseSystemBluetooth } from '../../lib/noble-loader';
import { Feature } from '../../lib/protocol/constants';
import { ConformanceTarget, defineUpdate, defineV2Conformance, TargetSkipped } from '../support/v2-conformance';
import { HW_ENV, hardwareSetup } from './config';

let made: Promise<ConformanceTarget> | undefined;

async function realDevice(): Promise<ConformanceTarget> {
  const setup = hardwareSetup(process.env);
  if (setup.kind === 'skip') throw new TargetSkipped(setup.message);
  if (setup.kind === 'error') throw new Error(setup.message);
  const c = setup.config;
  process.env.NOBLE_HCI_DEVICE_ID = String(c.adapter);
  const client = new BleOtaClient({ timeouts: { scanMs: 15_000, gattMs: 10_000 } });
  const conn = await client.connect(c.target, { secret: c.secret });
  const info = await conn.v2?.readInfo();
  await conn.close();
  if (!info) throw new Error(`${c.device} does not speak protocol v2: flash this package's firmware first (docs/HARDWARE.md).`);
  if (info.features & Feature.AUTH && c.secret === undefined) {
    throw new Error(`${c.device} takes requests only from its owner: set ${HW_ENV.secretFile} to the fleet secret file its update key was derived from.`);
  }
  const foreign = c.images.filter((i) => i.chipId !== info.chipId);
  if (foreign.length > 0) {
    throw new Error(`${HW_ENV.images}: ${foreign.map((i) => i.path).join(', ')} is built for chip id ${foreign[0].chipId}, the device is chip id ${info.chipId}.`);
  }
  return {
    client,
    target: c.target,
    secret: c.secret,
    requestMs: 15_000,
    restartMs: 60_000,
    image: ({ sign, ...options }) => buildAppImage({ chipId: info.chipId, ...options, signingKeys: sign !== false && c.signingKey ? c.signingKey : undefined }),
    sign: (image) => (c.signingKey ? signImage(image, c.signingKey) : undefined),
    bootable: (running) => c.images.find((i) => i.version !== running)?.data,
    noBootableReason:
      c.images.length === 0
        ? `set ${HW_ENV.images} to two builds of this firmware with different versions (docs/HARDWARE.md)`
        : `${HW_ENV.images} has no build of another version than the one the device runs`,
  };
}

describe('a real ESP32 (npm run test:hardware)', function () {
  this.timeout(180_000);
  const setup = () => (made ??= realDevice());
  defineV2Conformance(setup);
  defineUpdate(setup);
  after(() => releaseSystemBluetooth());
});
