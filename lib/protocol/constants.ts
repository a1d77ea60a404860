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

// --- protocol v2 (docs/PROTOCOL.md) -----------------------------------------

export const OTA_INFO_UUID = 'c771fa01-c1a5-46d6-8529-795dac415ff6';
export const OTA_COMMAND_UUID = 'c771fa02-c1a5-46d6-8529-795dac415ff6';
export const OTA_STREAM_UUID = 'c771fa03-c1a5-46d6-8529-795dac415ff6';

export const PROTOCOL_VERSION = 2;
export const INFO_VERSION = 1;
export const INFO_SIZE = 220;

export const Feature = {
  RESUME: 0x0001,
  CLIENT_CONFIRM: 0x0002,
  SEED: 0x0004,
  DEFLATE: 0x0008,
  AUTH: 0x0010,
} as const;

export const RunningState = { VALID: 0, PENDING_VERIFY: 1, UNKNOWN: 2 } as const;
export const TransferState = { IDLE: 0, RECEIVING: 1, SUSPENDED: 2, COMPLETE: 3 } as const;
export const LAST_STATUS_NONE = 0xff;

export const Command = {
  BEGIN: 0x01,
  END: 0x02,
  RESTART: 0x03,
  ABORT: 0x04,
  CONFIRM: 0x05,
  CHALLENGE: 0x06,
} as const;
export const ANSWER = 0x80;
export const BEGIN_SIZE = 41;
export const BeginFlag = { CLIENT_CONFIRM: 0x0001, DEFLATE: 0x0002 } as const;
/** With DEFLATE: the image goes in chunks of this many bytes (the last one shorter). */
export const DEFLATE_CHUNK = 4096;

/** Authentication (Feature.AUTH): every request but CHALLENGE ends with a MAC. */
export const AUTH_KEY_LEN = 32;
export const AUTH_CHALLENGE_LEN = 16;
export const AUTH_MAC_LEN = 32;

export const Event = { ACK: 0xc0, RESYNC: 0xc1, FAILED: 0xc2 } as const;

export const STREAM_HEADER = 4;

export const Status = {
  OK: 0x00,
  UNKNOWN_COMMAND: 0x01,
  BAD_LENGTH: 0x02,
  BAD_ARGUMENT: 0x03,
  BAD_STATE: 0x04,
  TOO_LARGE: 0x05,
  WRONG_CHIP: 0x06,
  PENDING_CONFIRM: 0x07,
  FLASH_ERROR: 0x08,
  INCOMPLETE: 0x09,
  HASH_MISMATCH: 0x0a,
  INVALID_IMAGE: 0x0b,
  NOT_PENDING: 0x0c,
  NO_SLOT: 0x0d,
  AUTH_REQUIRED: 0x0e,
  AUTH_FAILED: 0x0f,
  AUTH_LOCKED: 0x10,
  BAD_DATA: 0x11,
} as const;

export type StatusName = keyof typeof Status;

export function statusName(status: number): string {
  const entry = Object.entries(Status).find(([, v]) => v === status);
  return entry ? entry[0] : `0x${status.toString(16).padStart(2, '0')}`;
}

export const RESTART_DELAY_MS = 500;
