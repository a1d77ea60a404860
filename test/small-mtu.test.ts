/**
 * The smallest ATT MTU a central may use (23, the default when nothing is
 * exchanged): requests longer than a PDU go as long writes (Prepare Write,
 * Execute Write), as noble's HCI bindings send them, and the update works;
 * an authenticated session, whose answers cannot be split, says at once
 * that it needs a larger MTU instead of timing out.
 */
import { strict as assert } from 'node:assert';
import { BleOtaClient } from '../lib/client/ota-client';
import { AUTH_MIN_MTU } from '../lib/client/v2-session';
import { BleOtaError } from '../lib/errors';
import { buildAppImage } from '../lib/image/app-image-builder';
import { VirtualRadio } from '../lib/virtual/virtual-radio';
import { OWNER, ownedDevice, signedImage } from './support/owner';

describe('an ATT MTU of 23', function () {
  this.timeout(60_000);
  let radio: VirtualRadio;

  before(() => {
    radio = new VirtualRadio(23);
  });
  after(() => radio.stopAll());

  const client = () => new BleOtaClient({ noble: radio.noble, timeouts: { scanMs: 3000, gattMs: 2000 } });

  it('updates a device without authentication: BEGIN goes as a long write, 16-byte packets', async () => {
    await radio.addDevice({ name: 'mtu23', restartDelayMs: 20 });
    const r = await client().update({ target: { name: 'mtu23' }, image: buildAppImage({ size: 24 * 1024, version: '2.0.0', seed: 3 }) });
    assert.equal(r.mtu, 23);
    assert.equal(r.packetSize, 16);
    assert.equal(r.confirmed, true);
    assert.equal(r.runningVersion, '2.0.0');
  });

  it('an authenticated update says it needs a larger MTU (CONNECT_FAILED, not a GATT timeout), every time', async () => {
    await radio.addDevice(ownedDevice({ name: 'mtu23-owned', restartDelayMs: 20 }));
    for (let i = 0; i < 2; i++) {
      await assert.rejects(
        client().update({ target: { name: 'mtu23-owned' }, image: signedImage({ size: 24 * 1024, version: '2.0.0', seed: 4 }), secret: OWNER.secret }),
        (err: unknown) => {
          assert.ok(err instanceof BleOtaError);
          assert.equal(err.code, 'CONNECT_FAILED', err.message);
          assert.match(err.message, new RegExp(`ATT MTU is 23; authenticated updates need at least ${AUTH_MIN_MTU}`));
          return true;
        },
      );
    }
  });
});
