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
export const INFO_VERSION = 3;
export const INFO_SIZE = 276;
/** OTA Info of info_version 2 (before the link fields). */
export const INFO_SIZE_V2 = 260;
/** OTA Info of info_version 1 (before the device id and the signing key). */
export const INFO_SIZE_V1 = 220;

/** OTA Info field offsets (BLE_OTA_INFO_OFF_* in the C header). */
export const InfoOffset = {
  INFO_VERSION: 0,
  PROTOCOL: 1,
  FEATURES: 2,
  CHIP_ID: 4,
  CHIP_REVISION: 6,
  SLOT_SIZE: 8,
  MAX_PACKET: 12,
  WINDOW: 14,
  RUNNING_STATE: 16,
  LAST_STATUS: 17,
  TRANSFER_STATE: 18,
  UPDATE_SLOT: 19,
  TRANSFER_OFFSET: 20,
  TRANSFER_SHA256: 24,
  SECURE_VERSION: 56,
  VERSION: 60,
  PROJECT_NAME: 92,
  IDF_VERSION: 124,
  DATE: 156,
  TIME: 172,
  APP_ELF_SHA256: 188,
  DEVICE_ID: 220,
  SIGNING_KEY: 228,
  // info_version 3: the link as the device sees it, in the controller's units (0: not known).
  CONN_INTERVAL: 260,
  CONN_LATENCY: 262,
  SUPERVISION_TIMEOUT: 264,
  TX_PHY: 266,
  RX_PHY: 267,
  TX_OCTETS: 268,
  RX_OCTETS: 270,
  ATT_MTU: 272,
  LINK_REQUEST: 274,
} as const;

/** OTA Info tx_phy / rx_phy (the controller's PHY values; 0: not known). */
export const Phy = { UNKNOWN: 0, LE_1M: 1, LE_2M: 2, LE_CODED: 3 } as const;
/** OTA Info link_request: the connection parameters the device last asked for. */
export const LinkRequest = { NONE: 0, TRANSFER: 1, IDLE: 2 } as const;

export const Feature = {
  RESUME: 0x0001,
  CLIENT_CONFIRM: 0x0002,
  SEED: 0x0004,
  DEFLATE: 0x0008,
  AUTH: 0x0010,
  SIGNED: 0x0020,
} as const;

export const RunningState = { VALID: 0, PENDING_VERIFY: 1, UNKNOWN: 2 } as const;
export const TransferState = { IDLE: 0, RECEIVING: 1, SUSPENDED: 2, COMPLETE: 3 } as const;
/** OTA Info update_slot: ROLLED_BACK, the image last written to the update slot ran and was rolled back. */
export const UpdateSlot = { NOTHING: 0, ROLLED_BACK: 1 } as const;
export const LAST_STATUS_NONE = 0xff;

export const Command = {
  BEGIN: 0x01,
  END: 0x02,
  RESTART: 0x03,
  ABORT: 0x04,
  CONFIRM: 0x05,
  HELLO: 0x06,
  INFO: 0x07,
} as const;
export const ANSWER = 0x80;
export const BEGIN_SIZE = 41;
export const BeginFlag = { CLIENT_CONFIRM: 0x0001, DEFLATE: 0x0002 } as const;
/** With DEFLATE: the image goes in chunks of this many bytes (the last one shorter). */
export const DEFLATE_CHUNK = 4096;

/**
 * Authentication (Feature.AUTH, docs/PROTOCOL.md): HELLO swaps nonces, both
 * sides derive a session key from the device key, and every later request
 * and its answer end with a MAC.
 */
export const AUTH_KEY_LEN = 32;
export const AUTH_NONCE_LEN = 16;
export const AUTH_MAC_LEN = 32;
export const HELLO_SIZE = 1 + AUTH_NONCE_LEN;
/** The device's identity: its factory MAC address. */
export const DEVICE_ID_LEN = 6;
export const DEVICE_KEY_LABEL = 'BLE-OTA device key';
export const SESSION_LABEL = 'BLE-OTA session';
export const MAC_REQUEST = 0x43;
export const MAC_ANSWER = 0x44;
export const AUTH_FAILURES_MAX = 3;
export const AUTH_TIMEOUT_MS = 10_000;
export const AUTH_LOCK_MIN_MS = 1000;

/** The key partition record (ble_ota_core.h), written over USB by `provision`. */
export const KEY_RECORD_LEN = 52;
export const KEY_MAGIC = 'BLEOTAK1';
export const KEY_PARTITION_SIZE = 4096;
/** Where firmware/partitions.csv puts the key partition ("ble_ota_key"). */
export const KEY_PARTITION_OFFSET = 0x3d0000;

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
  NOT_PROVISIONED: 0x12,
  BAD_SIGNATURE: 0x13,
  OLD_SECURE_VERSION: 0x14,
} as const;

export type StatusName = keyof typeof Status;

export function statusName(status: number): string {
  const entry = Object.entries(Status).find(([, v]) => v === status);
  return entry ? entry[0] : `0x${status.toString(16).padStart(2, '0')}`;
}

export const RESTART_DELAY_MS = 500;
