/**
 * On-air constants of the OTA service, as in
 * firmware/components/ble_ota_core/include/ble_ota_protocol.h
 * (test/protocol-constants.test.ts checks that the two agree).
 */

export const OTA_SERVICE_UUID = 'd6f1d96d-594c-4c53-b1c6-144a1dfde6d8';
export const OTA_CONTROL_UUID = '7ad671aa-21c0-46a4-b722-270e3ae3d830';
export const OTA_DATA_UUID = '23408888-1f40-4cd8-9b89-ca8d45f8a5b0';

/** Device Information (Bluetooth SIG 16-bit UUIDs): the firmware serves manufacturer, model and firmware revision. */
export const DEVICE_INFORMATION_UUID = '180a';
export const MANUFACTURER_NAME_UUID = '2a29';
export const MODEL_NUMBER_UUID = '2a24';
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

/**
 * ATT error codes of the OTA characteristics' writes: standard ones where one
 * fits (Core Specification Vol 3, Part F, 3.4.1.1), the rest from the
 * application range 0x80-0x9F.
 */
export const AttErrorCode = {
  WRITE_NOT_PERMITTED: 0x03,
  INVALID_LEN: 0x0d,
  UNLIKELY: 0x0e,
  NOT_RECEIVING: 0x80,
  FLASH: 0x81,
  BAD_VALUE: 0x82,
  BUSY: 0x83,
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
export const INFO_VERSION = 4;

/** How an OTA Info field is stored: a little-endian integer, bytes, or NUL-padded UTF-8 text. */
export type InfoFieldType = 'u8' | 'u16' | 'u32' | 'bytes' | 'text';

export interface InfoField {
  offset: number;
  size: number;
  type: InfoFieldType;
  /** The info_version that added the field: a value of an older version does not have it. */
  since: number;
}

/**
 * OTA Info's layout (docs/PROTOCOL.md, OTA Info), the client's one definition
 * of it: each field's offset, size and the info_version that added it, named
 * as BLE_OTA_INFO_OFF_* in the C header (test/protocol-constants.test.ts
 * compares the two field by field). A new info_version only appends fields,
 * so an older client reads a newer value's fields it knows where they were.
 */
export const InfoLayout = {
  INFO_VERSION: { offset: 0, size: 1, type: 'u8', since: 1 },
  PROTOCOL: { offset: 1, size: 1, type: 'u8', since: 1 },
  FEATURES: { offset: 2, size: 2, type: 'u16', since: 1 },
  CHIP_ID: { offset: 4, size: 2, type: 'u16', since: 1 },
  CHIP_REVISION: { offset: 6, size: 2, type: 'u16', since: 1 },
  SLOT_SIZE: { offset: 8, size: 4, type: 'u32', since: 1 },
  MAX_PACKET: { offset: 12, size: 2, type: 'u16', since: 1 },
  WINDOW: { offset: 14, size: 2, type: 'u16', since: 1 },
  RUNNING_STATE: { offset: 16, size: 1, type: 'u8', since: 1 },
  LAST_STATUS: { offset: 17, size: 1, type: 'u8', since: 1 },
  TRANSFER_STATE: { offset: 18, size: 1, type: 'u8', since: 1 },
  UPDATE_SLOT: { offset: 19, size: 1, type: 'u8', since: 1 },
  TRANSFER_OFFSET: { offset: 20, size: 4, type: 'u32', since: 1 },
  TRANSFER_SHA256: { offset: 24, size: 32, type: 'bytes', since: 1 },
  SECURE_VERSION: { offset: 56, size: 4, type: 'u32', since: 1 },
  VERSION: { offset: 60, size: 32, type: 'text', since: 1 },
  PROJECT_NAME: { offset: 92, size: 32, type: 'text', since: 1 },
  IDF_VERSION: { offset: 124, size: 32, type: 'text', since: 1 },
  DATE: { offset: 156, size: 16, type: 'text', since: 1 },
  TIME: { offset: 172, size: 16, type: 'text', since: 1 },
  APP_ELF_SHA256: { offset: 188, size: 32, type: 'bytes', since: 1 },
  DEVICE_ID: { offset: 220, size: 6, type: 'bytes', since: 2 },
  // 226, 2 bytes: reserved (InfoReserved)
  SIGNING_KEY: { offset: 228, size: 32, type: 'bytes', since: 2 },
  // The link as the device sees it, in the controller's units (0: not known).
  CONN_INTERVAL: { offset: 260, size: 2, type: 'u16', since: 3 },
  CONN_LATENCY: { offset: 262, size: 2, type: 'u16', since: 3 },
  SUPERVISION_TIMEOUT: { offset: 264, size: 2, type: 'u16', since: 3 },
  TX_PHY: { offset: 266, size: 1, type: 'u8', since: 3 },
  RX_PHY: { offset: 267, size: 1, type: 'u8', since: 3 },
  TX_OCTETS: { offset: 268, size: 2, type: 'u16', since: 3 },
  RX_OCTETS: { offset: 270, size: 2, type: 'u16', since: 3 },
  ATT_MTU: { offset: 272, size: 2, type: 'u16', since: 3 },
  LINK_REQUEST: { offset: 274, size: 1, type: 'u8', since: 3 },
  // 275, 1 byte: reserved
  // The image in the running slot as a file holds it (0 and zeros: not known), the base a patch applies to.
  RUNNING_SIZE: { offset: 276, size: 4, type: 'u32', since: 4 },
  RUNNING_SHA256: { offset: 280, size: 32, type: 'bytes', since: 4 },
} as const satisfies Record<string, InfoField>;

export type InfoFieldName = keyof typeof InfoLayout;

/** OTA Info's reserved bytes (0 on the air), which the layout's fields leave out. */
export const InfoReserved: ReadonlyArray<{ offset: number; size: number; since: number }> = [
  { offset: 226, size: 2, since: 2 },
  { offset: 275, size: 1, since: 3 },
];

/** The size of an OTA Info value of info_version `version`: where its last field or reserved byte ends. */
export function infoSize(version: number): number {
  let end = 0;
  for (const f of [...Object.values(InfoLayout), ...InfoReserved]) {
    if (f.since <= version) end = Math.max(end, f.offset + f.size);
  }
  return end;
}

/** OTA Info of this client's info_version. */
export const INFO_SIZE = infoSize(INFO_VERSION);
/** OTA Info of info_version 3 (before the running image's size and SHA-256). */
export const INFO_SIZE_V3 = infoSize(3);
/** OTA Info of info_version 2 (before the link fields). */
export const INFO_SIZE_V2 = infoSize(2);
/** OTA Info of info_version 1 (before the device id and the signing key). */
export const INFO_SIZE_V1 = infoSize(1);

/** OTA Info field offsets (BLE_OTA_INFO_OFF_* in the C header), from InfoLayout. */
export const InfoOffset = Object.fromEntries(Object.entries(InfoLayout).map(([name, f]) => [name, f.offset])) as {
  readonly [K in InfoFieldName]: (typeof InfoLayout)[K]['offset'];
};

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
  /** The device applies delta patches (docs/DELTA.md): BEGIN may carry BeginFlag.PATCH. */
  DELTA: 0x0040,
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
/** Highest request opcode: answers (0x80-0xBF) never read as events; a write above it fails with ATT BAD_VALUE. */
export const OPCODE_MAX = 0x3f;
export const BEGIN_SIZE = 41;
/** BEGIN with BeginFlag.PATCH: the same fields, then the SHA-256 of the image the patch applies to. */
export const BEGIN_PATCH_SIZE = BEGIN_SIZE + 32;
/** PATCH: the stream is a delta patch (docs/DELTA.md), deflated; only with DEFLATE, on a device with Feature.DELTA. */
export const BeginFlag = { CLIENT_CONFIRM: 0x0001, DEFLATE: 0x0002, PATCH: 0x0004 } as const;
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
  /** BEGIN with PATCH: the patch's base is not the image the device runs (nothing changed on the device). */
  WRONG_BASE: 0x15,
} as const;

export type StatusName = keyof typeof Status;

export function statusName(status: number): string {
  const entry = Object.entries(Status).find(([, v]) => v === status);
  return entry ? entry[0] : `0x${status.toString(16).padStart(2, '0')}`;
}

export const RESTART_DELAY_MS = 500;
/** A suspended v2 transfer nobody resumes is aborted after this long. */
export const ABANDON_TIMEOUT_MS = 60_000;
