import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  AUTH_FAILURES_MAX,
  AUTH_KEY_LEN,
  AUTH_LOCK_MIN_MS,
  AUTH_MAC_LEN,
  AUTH_NONCE_LEN,
  AUTH_TIMEOUT_MS,
  DEVICE_ID_LEN,
  DEVICE_KEY_LABEL,
  HELLO_SIZE,
  InfoOffset,
  KEY_MAGIC,
  KEY_RECORD_LEN,
  MAC_ANSWER,
  MAC_REQUEST,
  SESSION_LABEL,
  BEGIN_SIZE,
  BeginFlag,
  DEFLATE_CHUNK,
  Command,
  Control,
  Event,
  Feature,
  INFO_SIZE,
  INFO_VERSION,
  MAX_PACKET,
  OTA_COMMAND_UUID,
  OTA_CONTROL_UUID,
  OTA_DATA_UUID,
  OTA_INFO_UUID,
  OTA_SERVICE_UUID,
  OTA_STREAM_UUID,
  PROTOCOL_VERSION,
  RESTART_DELAY_MS,
  RunningState,
  Status,
  STREAM_HEADER,
  TransferState,
} from '../lib/protocol/constants';

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

  it('v2 UUIDs and layout', () => {
    assert.equal(define('BLE_OTA_INFO_UUID'), OTA_INFO_UUID);
    assert.equal(define('BLE_OTA_COMMAND_UUID'), OTA_COMMAND_UUID);
    assert.equal(define('BLE_OTA_STREAM_UUID'), OTA_STREAM_UUID);
    assert.equal(Number(define('BLE_OTA_PROTOCOL_VERSION')), PROTOCOL_VERSION);
    assert.equal(Number(define('BLE_OTA_INFO_VERSION')), INFO_VERSION);
    assert.equal(Number(define('BLE_OTA_INFO_SIZE')), INFO_SIZE);
    assert.equal(Number(define('BLE_OTA_BEGIN_SIZE')), BEGIN_SIZE);
    assert.equal(Number(define('BLE_OTA_STREAM_HEADER')), STREAM_HEADER);
    assert.equal(Number(define('BLE_OTA_RESTART_DELAY_MS')), RESTART_DELAY_MS);
    assert.equal(Number(define('BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM')), BeginFlag.CLIENT_CONFIRM);
    assert.equal(Number(define('BLE_OTA_BEGIN_FLAG_DEFLATE')), BeginFlag.DEFLATE);
    assert.equal(Number(define('BLE_OTA_DEFLATE_CHUNK')), DEFLATE_CHUNK);
    assert.equal(Number(define('BLE_OTA_AUTH_KEY_LEN')), AUTH_KEY_LEN);
    assert.equal(Number(define('BLE_OTA_AUTH_NONCE_LEN')), AUTH_NONCE_LEN);
    assert.equal(Number(define('BLE_OTA_AUTH_MAC_LEN')), AUTH_MAC_LEN);
  });

  it('authentication: sizes, labels, MAC directions, per-link limits, the key record', () => {
    assert.equal(HELLO_SIZE, 1 + AUTH_NONCE_LEN);
    assert.match(header, /#define\s+BLE_OTA_HELLO_SIZE\s+\(1 \+ BLE_OTA_AUTH_NONCE_LEN\)/);
    assert.equal(Number(define('BLE_OTA_DEVICE_ID_LEN')), DEVICE_ID_LEN);
    assert.equal(define('BLE_OTA_DEVICE_KEY_LABEL'), DEVICE_KEY_LABEL.split(' ')[0]); // the regex stops at a space
    assert.match(header, new RegExp(`#define\\s+BLE_OTA_DEVICE_KEY_LABEL\\s+"${DEVICE_KEY_LABEL}"`));
    assert.match(header, new RegExp(`#define\\s+BLE_OTA_SESSION_LABEL\\s+"${SESSION_LABEL}"`));
    assert.equal(Number(define('BLE_OTA_MAC_REQUEST')), MAC_REQUEST);
    assert.equal(Number(define('BLE_OTA_MAC_ANSWER')), MAC_ANSWER);
    assert.equal(Number(define('BLE_OTA_AUTH_FAILURES_MAX')), AUTH_FAILURES_MAX);
    assert.equal(Number(define('BLE_OTA_AUTH_TIMEOUT_MS')), AUTH_TIMEOUT_MS);
    assert.equal(Number(define('BLE_OTA_AUTH_LOCK_MIN_MS')), AUTH_LOCK_MIN_MS);
    const core = readFileSync(join(__dirname, '../../firmware/components/ble_ota_core/include/ble_ota_core.h'), 'utf8');
    assert.match(core, new RegExp(`#define\\s+BLE_OTA_KEY_RECORD_LEN\\s+${KEY_RECORD_LEN}\\b`));
    assert.match(core, new RegExp(`#define\\s+BLE_OTA_KEY_MAGIC\\s+"${KEY_MAGIC}"`));
  });

  it('OTA Info offsets, field by field', () => {
    for (const [name, value] of Object.entries(InfoOffset)) {
      assert.equal(Number(define(`BLE_OTA_INFO_OFF_${name}`)), value, name);
    }
    const inHeader = [...header.matchAll(/#define\s+BLE_OTA_INFO_OFF_(\w+)\s/g)].map((m) => m[1]);
    assert.deepEqual(inHeader.sort(), Object.keys(InfoOffset).sort(), 'the same fields on both sides');
  });

  const groups: Array<[string, Record<string, number>]> = [
    ['BLE_OTA_CMD_', Command],
    ['BLE_OTA_EVT_', Event],
    ['BLE_OTA_ST_', Status],
    ['BLE_OTA_FEATURE_', Feature],
    ['BLE_OTA_RUNNING_', RunningState],
    ['BLE_OTA_TRANSFER_', TransferState],
  ];
  for (const [prefix, values] of groups) {
    it(`${prefix}* values, both ways`, () => {
      for (const [name, value] of Object.entries(values)) {
        assert.equal(Number(define(`${prefix}${name}`)), value, name);
      }
      const inHeader = [...header.matchAll(new RegExp(`#define\\s+${prefix}(\\w+)\\s`, 'g'))].map((m) => m[1]);
      assert.deepEqual(inHeader.sort(), Object.keys(values).sort(), 'the same names on both sides');
    });
  }
});
