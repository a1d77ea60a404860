import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Control, MAX_PACKET, OTA_CONTROL_UUID, OTA_DATA_UUID, OTA_SERVICE_UUID } from '../lib/protocol/constants';

// The firmware and the client each keep the on-air constants; they must agree.
const header = readFileSync(
  join(__dirname, '../../firmware/components/ble_ota_core/include/ble_ota_protocol.h'),
  'utf8',
);

function define(name: string): string {
  const m = new RegExp(`#define\\s+${name}\\s+(\\S+)`).exec(header);
  assert.ok(m, `${name} is defined in ble_ota_protocol.h`);
  return m[1].replace(/"/g, '');
}

describe('protocol constants: C header and TypeScript agree', () => {
  it('UUIDs', () => {
    assert.equal(define('BLE_OTA_SERVICE_UUID'), OTA_SERVICE_UUID);
    assert.equal(define('BLE_OTA_CONTROL_UUID'), OTA_CONTROL_UUID);
    assert.equal(define('BLE_OTA_DATA_UUID'), OTA_DATA_UUID);
  });

  it('control values', () => {
    for (const [name, value] of Object.entries(Control)) {
      assert.equal(Number(define(`BLE_OTA_CTRL_${name}`)), value, name);
    }
  });

  it('largest packet', () => {
    assert.equal(Number(define('BLE_OTA_MAX_PACKET')), MAX_PACKET);
  });
});
