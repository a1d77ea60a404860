/*
 * On-air constants of the BLE OTA service: the seed protocol's UUIDs and
 * control values, exactly as seed devices put them on the air, and protocol
 * v2's (docs/PROTOCOL.md).
 *
 * The TypeScript client has its own definition in lib/protocol/constants.ts;
 * test/protocol-constants.test.ts compares every constant here with it (a
 * new one fails that test until the client has it too), and OTA Info's
 * layout field by field. The GATT table of these UUIDs is ble_ota_gatt.h.
 */
#ifndef BLE_OTA_PROTOCOL_H
#define BLE_OTA_PROTOCOL_H

/* OTA service d6f1d96d-594c-4c53-b1c6-144a1dfde6d8 (the value seed devices
 * advertise; the seed's source comment says ...244a..., which never reaches the air). */
#define BLE_OTA_SERVICE_UUID "d6f1d96d-594c-4c53-b1c6-144a1dfde6d8"
/* OTA Control: read, write (with response), notify. One byte, see below. */
#define BLE_OTA_CONTROL_UUID "7ad671aa-21c0-46a4-b722-270e3ae3d830"
/* OTA Data: write (with response). Before REQUEST it takes the packet size
 * (2 bytes, little-endian); after REQUEST, firmware packets. */
#define BLE_OTA_DATA_UUID "23408888-1f40-4cd8-9b89-ca8d45f8a5b0"

/* Device Information service 0x180A (Bluetooth SIG assigned numbers), with
 * the characteristics our firmware serves. */
#define BLE_OTA_DEVICE_INFORMATION_UUID "180a"
#define BLE_OTA_MANUFACTURER_NAME_UUID  "2a29"
#define BLE_OTA_MODEL_NUMBER_UUID       "2a24"
#define BLE_OTA_FIRMWARE_REVISION_UUID  "2a26"

/* Control values. */
#define BLE_OTA_CTRL_NOP         0x00
#define BLE_OTA_CTRL_REQUEST     0x01
#define BLE_OTA_CTRL_REQUEST_ACK 0x02
#define BLE_OTA_CTRL_REQUEST_NAK 0x03
#define BLE_OTA_CTRL_DONE        0x04
#define BLE_OTA_CTRL_DONE_ACK    0x05
#define BLE_OTA_CTRL_DONE_NAK    0x06

/* Largest firmware packet the device accepts: ATT_MTU 517 minus the 3-byte
 * write header. Clients should not write more than 512 bytes (the largest
 * attribute value the ATT specification allows), but a seed client at MTU 517
 * sends 514 and must not be cut off. */
#define BLE_OTA_MAX_PACKET 514

/* Delay between the DONE_ACK notification and the restart, so the
 * notification leaves the radio before the link drops. */
#define BLE_OTA_RESTART_DELAY_MS 500

/* Application ATT error codes (0x80-0x9F range) returned by the OTA
 * characteristics. Standard ATT codes are used where one fits. */
#define BLE_OTA_ATT_ERR_INVALID_LEN         0x0D /* ATT: Invalid Attribute Value Length */
#define BLE_OTA_ATT_ERR_UNLIKELY            0x0E /* ATT: Unlikely Error */
#define BLE_OTA_ATT_ERR_WRITE_NOT_PERMITTED 0x03 /* ATT: Write Not Permitted (seed protocol not served) */
#define BLE_OTA_ATT_ERR_NOT_RECEIVING       0x80 /* firmware data written outside a transfer */
#define BLE_OTA_ATT_ERR_FLASH               0x81 /* the device could not write the data to flash */
#define BLE_OTA_ATT_ERR_BAD_VALUE           0x82 /* unknown control value or packet size out of range */
#define BLE_OTA_ATT_ERR_BUSY                0x83 /* restart pending: the transfer is over */

/* ---------------------------------------------------------------------------
 * Protocol v2 (docs/PROTOCOL.md). Its characteristics live in the same
 * service; a client that finds OTA Info uses v2.
 */
#define BLE_OTA_INFO_UUID    "c771fa01-c1a5-46d6-8529-795dac415ff6" /* read */
#define BLE_OTA_COMMAND_UUID "c771fa02-c1a5-46d6-8529-795dac415ff6" /* write, notify */
#define BLE_OTA_STREAM_UUID  "c771fa03-c1a5-46d6-8529-795dac415ff6" /* write without response, write */

#define BLE_OTA_PROTOCOL_VERSION 2
#define BLE_OTA_INFO_VERSION     4
#define BLE_OTA_INFO_SIZE        312 /* info_version 4's; 1 to 3: BLE_OTA_INFO_SIZE_V1, _V2, _V3 */

/*
 * OTA Info's layout (docs/PROTOCOL.md, OTA Info): each field's offset, and
 * its type (u8, u16, u32: little-endian) or its length in bytes. A new
 * info_version only appends fields (a client reads those it knows and
 * ignores the rest), and the value stays within one attribute value (512
 * bytes). Adding a field (a new info_version): its offset (and length)
 * here after the last one, the previous version's size as
 * BLE_OTA_INFO_SIZE_V<n>, BLE_OTA_INFO_VERSION and BLE_OTA_INFO_SIZE; the
 * same in InfoLayout (lib/protocol/constants.ts) with the version that adds
 * it; its value in ble_ota_core_info_read; on the client, a DeviceInfoV2
 * field decodeInfo reads by name, and where Info is shown.
 * test/protocol-constants.test.ts holds both layouts and docs/PROTOCOL.md's
 * table together.
 */
#define BLE_OTA_INFO_OFF_INFO_VERSION    0  /* u8 */
#define BLE_OTA_INFO_OFF_PROTOCOL        1  /* u8 */
#define BLE_OTA_INFO_OFF_FEATURES        2  /* u16 */
#define BLE_OTA_INFO_OFF_CHIP_ID         4  /* u16 */
#define BLE_OTA_INFO_OFF_CHIP_REVISION   6  /* u16 */
#define BLE_OTA_INFO_OFF_SLOT_SIZE       8  /* u32 */
#define BLE_OTA_INFO_OFF_MAX_PACKET      12 /* u16 */
#define BLE_OTA_INFO_OFF_WINDOW          14 /* u16 */
#define BLE_OTA_INFO_OFF_RUNNING_STATE   16 /* u8 */
#define BLE_OTA_INFO_OFF_LAST_STATUS     17 /* u8 */
#define BLE_OTA_INFO_OFF_TRANSFER_STATE  18 /* u8 */
#define BLE_OTA_INFO_OFF_UPDATE_SLOT     19 /* u8: BLE_OTA_UPDATE_SLOT_* */
#define BLE_OTA_INFO_OFF_TRANSFER_OFFSET 20 /* u32 */
#define BLE_OTA_INFO_OFF_TRANSFER_SHA256 24
#define BLE_OTA_INFO_LEN_TRANSFER_SHA256 32
#define BLE_OTA_INFO_OFF_SECURE_VERSION  56 /* u32 */
#define BLE_OTA_INFO_OFF_VERSION         60 /* text, NUL-padded (as the other text fields) */
#define BLE_OTA_INFO_LEN_VERSION         32
#define BLE_OTA_INFO_OFF_PROJECT_NAME    92 /* text */
#define BLE_OTA_INFO_LEN_PROJECT_NAME    32
#define BLE_OTA_INFO_OFF_IDF_VERSION     124 /* text */
#define BLE_OTA_INFO_LEN_IDF_VERSION     32
#define BLE_OTA_INFO_OFF_DATE            156 /* text */
#define BLE_OTA_INFO_LEN_DATE            16
#define BLE_OTA_INFO_OFF_TIME            172 /* text */
#define BLE_OTA_INFO_LEN_TIME            16
#define BLE_OTA_INFO_OFF_APP_ELF_SHA256  188
#define BLE_OTA_INFO_LEN_APP_ELF_SHA256  32
#define BLE_OTA_INFO_SIZE_V1             220
/* info_version 2: */
#define BLE_OTA_INFO_OFF_DEVICE_ID   220 /* then 2 reserved bytes */
#define BLE_OTA_INFO_LEN_DEVICE_ID   BLE_OTA_DEVICE_ID_LEN
#define BLE_OTA_INFO_OFF_SIGNING_KEY 228 /* digest of the key updates must be signed with */
#define BLE_OTA_INFO_LEN_SIGNING_KEY 32
#define BLE_OTA_INFO_SIZE_V2         260
/* info_version 3: the link as the device sees it (0: not known), in the
 * controller's units (ble_ota_link.h). */
#define BLE_OTA_INFO_OFF_CONN_INTERVAL       260 /* u16, 1.25 ms units */
#define BLE_OTA_INFO_OFF_CONN_LATENCY        262 /* u16, connection events */
#define BLE_OTA_INFO_OFF_SUPERVISION_TIMEOUT 264 /* u16, 10 ms units */
#define BLE_OTA_INFO_OFF_TX_PHY              266 /* u8: 1 LE 1M, 2 LE 2M, 3 LE Coded; device to central */
#define BLE_OTA_INFO_OFF_RX_PHY              267 /* u8: central to device */
#define BLE_OTA_INFO_OFF_TX_OCTETS           268 /* u16: LL payload octets per PDU, device to central */
#define BLE_OTA_INFO_OFF_RX_OCTETS           270 /* u16: central to device */
#define BLE_OTA_INFO_OFF_ATT_MTU             272 /* u16 */
#define BLE_OTA_INFO_OFF_LINK_REQUEST        274 /* u8: ble_ota_link_profile_t last asked for; 1 reserved byte follows */
#define BLE_OTA_INFO_SIZE_V3                 276
/* info_version 4: the image in the running slot as a file holds it (the
 * base of a delta patch), found at start; 0 and zeros: not known. */
#define BLE_OTA_INFO_OFF_RUNNING_SIZE   276 /* u32 */
#define BLE_OTA_INFO_OFF_RUNNING_SHA256 280
#define BLE_OTA_INFO_LEN_RUNNING_SHA256 32

/* OTA Info features. */
#define BLE_OTA_FEATURE_RESUME         0x0001
#define BLE_OTA_FEATURE_CLIENT_CONFIRM 0x0002
#define BLE_OTA_FEATURE_SEED           0x0004
#define BLE_OTA_FEATURE_DEFLATE        0x0008 /* the stream may carry deflated 4 KB chunks */
#define BLE_OTA_FEATURE_AUTH           0x0010 /* requests need a MAC of an authenticated session (HELLO first) */
#define BLE_OTA_FEATURE_SIGNED         0x0020 /* images must be signed with the key OTA Info names */
#define BLE_OTA_FEATURE_DELTA          0x0040 /* BEGIN may carry a delta patch (BEGIN_FLAG_PATCH) */

/* OTA Info running_state. */
#define BLE_OTA_RUNNING_VALID          0
#define BLE_OTA_RUNNING_PENDING_VERIFY 1
#define BLE_OTA_RUNNING_UNKNOWN        2

/* OTA Info update_slot: what the slot updates go to says of the last
 * image written there. ROLLED_BACK: it ran pending verify and did not
 * become valid (its self-test failed, no CONFIRM came in time, or the
 * device restarted before); nothing was written there since. */
#define BLE_OTA_UPDATE_SLOT_NOTHING     0
#define BLE_OTA_UPDATE_SLOT_ROLLED_BACK 1

/* OTA Info transfer_state. */
#define BLE_OTA_TRANSFER_IDLE      0
#define BLE_OTA_TRANSFER_RECEIVING 1
#define BLE_OTA_TRANSFER_SUSPENDED 2
#define BLE_OTA_TRANSFER_COMPLETE  3

/* OTA Info last_status when no update was tried since boot. */
#define BLE_OTA_LAST_STATUS_NONE 0xFF

/* OTA Command requests; the answer's opcode is request | BLE_OTA_ANSWER. */
#define BLE_OTA_CMD_BEGIN   0x01
#define BLE_OTA_CMD_END     0x02
#define BLE_OTA_CMD_RESTART 0x03
#define BLE_OTA_CMD_ABORT   0x04
#define BLE_OTA_CMD_CONFIRM 0x05
#define BLE_OTA_CMD_HELLO   0x06 /* client_nonce[16]; answer: device_nonce[16], or AUTH_LOCKED and retry_ms u32 */
#define BLE_OTA_CMD_INFO    0x07 /* answer: SHA-256 of the OTA Info value, proven by the answer's MAC */
#define BLE_OTA_ANSWER      0x80
/* Request opcodes are 0x00-0x3F, so answers (0x80-0xBF) never read as
 * events (0xC0-0xFF); a write above it fails with BLE_OTA_ATT_ERR_BAD_VALUE. */
#define BLE_OTA_OPCODE_MAX 0x3F

#define BLE_OTA_BEGIN_SIZE                41 /* opcode, size u32, sha256[32], chip_id u16, flags u16 */
#define BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM 0x0001
#define BLE_OTA_BEGIN_FLAG_DEFLATE        0x0002 /* the stream is the image in deflated chunks */
/* The stream is a delta patch (docs/DELTA.md) that rebuilds the image from
 * the running one; only with DEFLATE, on a device with FEATURE_DELTA. BEGIN
 * then carries base_sha256[32] after flags: the running image it applies to. */
#define BLE_OTA_BEGIN_FLAG_PATCH 0x0004
#define BLE_OTA_BEGIN_PATCH_SIZE (BLE_OTA_BEGIN_SIZE + 32)

/* With DEFLATE, the stream is the image cut into chunks of this many bytes
 * (the last one shorter), each sent as a u16 length and either that many
 * raw deflate bytes, or, when the length equals the chunk's size, the
 * chunk itself. The BEGIN answer then also tells `image_offset` u32. */
#define BLE_OTA_DEFLATE_CHUNK 4096

/* Authentication (FEATURE_AUTH, docs/PROTOCOL.md): HELLO exchanges nonces
 * and both sides derive a session key from the device key; every later
 * request ends with HMAC-SHA256(session key, 'C' || seq u32 || request),
 * and its answer with HMAC-SHA256(session key, 'D' || seq u32 || answer). */
#define BLE_OTA_AUTH_KEY_LEN   32
#define BLE_OTA_AUTH_NONCE_LEN 16
#define BLE_OTA_AUTH_MAC_LEN   32
#define BLE_OTA_HELLO_SIZE     (1 + BLE_OTA_AUTH_NONCE_LEN)
/* The device's identity: its base MAC address, as `esptool.py read_mac`
 * prints it. Device keys are derived from it, and session keys bind it. */
#define BLE_OTA_DEVICE_ID_LEN 6
/* Domain labels of the key derivations (ASCII, no NUL):
 *   device key  = HMAC-SHA256(fleet secret, "BLE-OTA device key" || device id)
 *   session key = HMAC-SHA256(device key, "BLE-OTA session" || device id ||
 *                             client nonce || device nonce) */
#define BLE_OTA_DEVICE_KEY_LABEL "BLE-OTA device key"
#define BLE_OTA_SESSION_LABEL    "BLE-OTA session"
#define BLE_OTA_MAC_REQUEST      0x43 /* 'C': the client's requests */
#define BLE_OTA_MAC_ANSWER       0x44 /* 'D': the device's answers */
/* Per link: failures in a row before the device drops the link, and how
 * long a new link may take to authenticate. */
#define BLE_OTA_AUTH_FAILURES_MAX 3
#define BLE_OTA_AUTH_TIMEOUT_MS   10000
#define BLE_OTA_AUTH_LOCK_MIN_MS  1000

/* OTA Command events, sent by the device on its own. */
#define BLE_OTA_EVT_ACK    0xC0 /* offset u32 */
#define BLE_OTA_EVT_RESYNC 0xC1 /* offset u32 */
#define BLE_OTA_EVT_FAILED 0xC2 /* status u8, offset u32 */

/* OTA Stream: offset u32, then firmware bytes. */
#define BLE_OTA_STREAM_HEADER 4

/* Statuses of v2 answers and events, and OTA Info last_status. */
#define BLE_OTA_ST_OK                 0x00
#define BLE_OTA_ST_UNKNOWN_COMMAND    0x01
#define BLE_OTA_ST_BAD_LENGTH         0x02
#define BLE_OTA_ST_BAD_ARGUMENT       0x03
#define BLE_OTA_ST_BAD_STATE          0x04
#define BLE_OTA_ST_TOO_LARGE          0x05
#define BLE_OTA_ST_WRONG_CHIP         0x06
#define BLE_OTA_ST_PENDING_CONFIRM    0x07
#define BLE_OTA_ST_FLASH_ERROR        0x08
#define BLE_OTA_ST_INCOMPLETE         0x09
#define BLE_OTA_ST_HASH_MISMATCH      0x0A
#define BLE_OTA_ST_INVALID_IMAGE      0x0B
#define BLE_OTA_ST_NOT_PENDING        0x0C
#define BLE_OTA_ST_NO_SLOT            0x0D
#define BLE_OTA_ST_AUTH_REQUIRED      0x0E
#define BLE_OTA_ST_AUTH_FAILED        0x0F
#define BLE_OTA_ST_AUTH_LOCKED        0x10
#define BLE_OTA_ST_BAD_DATA           0x11 /* a deflated chunk is malformed or not its size */
#define BLE_OTA_ST_NOT_PROVISIONED    0x12 /* the device requires authentication but has no key yet */
#define BLE_OTA_ST_BAD_SIGNATURE      0x13 /* the image is not signed with the key the device trusts */
#define BLE_OTA_ST_OLD_SECURE_VERSION 0x14 /* the image's secure_version is below the running one's */
#define BLE_OTA_ST_WRONG_BASE         0x15 /* BEGIN PATCH: base_sha256 is not the running image's */

/* Flash is written in blocks of this size (one 4 KB sector). */
#define BLE_OTA_FLASH_BLOCK 4096

/* A suspended v2 transfer nobody resumes is aborted after this long. */
#define BLE_OTA_ABANDON_TIMEOUT_MS 60000

#endif /* BLE_OTA_PROTOCOL_H */
