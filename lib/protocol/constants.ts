/**
 * On-air constants of the OTA service, as in
 * firmware/components/ble_ota_core/include/ble_ota_protocol.h
 * (test/protocol-constants.test.ts checks that the two agree).
 */

export const OTA_SERVICE_UUID = 'd6f1d96d-594c-4c53-b1c6-144a1dfde6d8';
export const OTA_CONTROL_UUID = '7ad671aa-21c0-46a4-b722-270e3ae3d830';
export const OTA_DATA_UUID = '23408888-1f40-4cd8-9b89-ca8d45f8a5b0';

export const DEVICE_INFORMATION_UUID = '180a';
export const FIRMWARE_REVISION_UUID = '2a26';

export const Control = {
  NOP: 0x00,
  REQUEST: 0x01,
  REQUEST_ACK: 0x02,
  REQUEST_NAK: 0x03,
  DONE: 0x04,
  DONE_ACK: 0x05,
  DONE_NAK: 0x06,
} as const;

/** Largest packet the firmware accepts (ATT_MTU 517 - 3). */
export const MAX_PACKET = 514;
/** Largest attribute value the ATT specification allows: the client never writes more. */
export const MAX_ATTRIBUTE_VALUE = 512;

/** noble's form of a UUID: lowercase hex without dashes. */
export function nobleUuid(uuid: string): string {
  return uuid.replace(/-/g, '').toLowerCase();
}
