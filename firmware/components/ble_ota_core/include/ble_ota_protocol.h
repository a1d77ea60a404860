/*
 * On-air constants of the BLE OTA service.
 *
 * The seed protocol's UUIDs and control values, exactly as seed devices put
 * them on the air. The TypeScript client has its own copy in
 * lib/protocol/constants.ts; test/protocol-constants.test.ts proves the two agree.
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
#define BLE_OTA_ATT_ERR_INVALID_LEN   0x0D /* ATT: Invalid Attribute Value Length */
#define BLE_OTA_ATT_ERR_UNLIKELY      0x0E /* ATT: Unlikely Error */
#define BLE_OTA_ATT_ERR_WRITE_NOT_PERMITTED 0x03 /* ATT: Write Not Permitted (seed protocol not served) */
#define BLE_OTA_ATT_ERR_NOT_RECEIVING 0x80 /* firmware data written outside a transfer */
#define BLE_OTA_ATT_ERR_FLASH         0x81 /* the device could not write the data to flash */
#define BLE_OTA_ATT_ERR_BAD_VALUE     0x82 /* unknown control value or packet size out of range */
#define BLE_OTA_ATT_ERR_BUSY          0x83 /* restart pending: the transfer is over */

/* ---------------------------------------------------------------------------
 * Protocol v2 (docs/PROTOCOL.md). Its characteristics live in the same
 * service; a client that finds OTA Info uses v2.
 */
#define BLE_OTA_INFO_UUID    "c771fa01-c1a5-46d6-8529-795dac415ff6" /* read */
#define BLE_OTA_COMMAND_UUID "c771fa02-c1a5-46d6-8529-795dac415ff6" /* write, notify */
#define BLE_OTA_STREAM_UUID  "c771fa03-c1a5-46d6-8529-795dac415ff6" /* write without response, write */

#define BLE_OTA_PROTOCOL_VERSION 2
#define BLE_OTA_INFO_VERSION     1
#define BLE_OTA_INFO_SIZE        220

/* OTA Info features. */
#define BLE_OTA_FEATURE_RESUME         0x0001
#define BLE_OTA_FEATURE_CLIENT_CONFIRM 0x0002
#define BLE_OTA_FEATURE_SEED           0x0004
#define BLE_OTA_FEATURE_DEFLATE        0x0008 /* the stream may carry deflated 4 KB chunks */
#define BLE_OTA_FEATURE_AUTH           0x0010 /* requests need a MAC (CHALLENGE first) */

/* OTA Info running_state. */
#define BLE_OTA_RUNNING_VALID          0
#define BLE_OTA_RUNNING_PENDING_VERIFY 1
#define BLE_OTA_RUNNING_UNKNOWN        2

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
#define BLE_OTA_CMD_CHALLENGE 0x06 /* answer: challenge[16], or AUTH_LOCKED and retry_ms u32 */
#define BLE_OTA_ANSWER      0x80
/* Request opcodes are 0x00-0x3F, so answers (0x80-0xBF) never read as
 * events (0xC0-0xFF); a write above it fails with BLE_OTA_ATT_ERR_BAD_VALUE. */
#define BLE_OTA_OPCODE_MAX  0x3F

#define BLE_OTA_BEGIN_SIZE        41 /* opcode, size u32, sha256[32], chip_id u16, flags u16 */
#define BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM 0x0001
#define BLE_OTA_BEGIN_FLAG_DEFLATE        0x0002 /* the stream is the image in deflated chunks */

/* With DEFLATE, the stream is the image cut into chunks of this many bytes
 * (the last one shorter), each sent as a u16 length and either that many
 * raw deflate bytes, or, when the length equals the chunk's size, the
 * chunk itself. The BEGIN answer then also tells `image_offset` u32. */
#define BLE_OTA_DEFLATE_CHUNK 4096

/* Authentication (FEATURE_AUTH): every request but CHALLENGE ends with
 * HMAC-SHA256(key, challenge || request without the MAC). */
#define BLE_OTA_AUTH_KEY_LEN       32
#define BLE_OTA_AUTH_CHALLENGE_LEN 16
#define BLE_OTA_AUTH_MAC_LEN       32

/* OTA Command events, sent by the device on its own. */
#define BLE_OTA_EVT_ACK    0xC0 /* offset u32 */
#define BLE_OTA_EVT_RESYNC 0xC1 /* offset u32 */
#define BLE_OTA_EVT_FAILED 0xC2 /* status u8, offset u32 */

/* OTA Stream: offset u32, then firmware bytes. */
#define BLE_OTA_STREAM_HEADER 4

/* Statuses of v2 answers and events, and OTA Info last_status. */
#define BLE_OTA_ST_OK              0x00
#define BLE_OTA_ST_UNKNOWN_COMMAND 0x01
#define BLE_OTA_ST_BAD_LENGTH      0x02
#define BLE_OTA_ST_BAD_ARGUMENT    0x03
#define BLE_OTA_ST_BAD_STATE       0x04
#define BLE_OTA_ST_TOO_LARGE       0x05
#define BLE_OTA_ST_WRONG_CHIP      0x06
#define BLE_OTA_ST_PENDING_CONFIRM 0x07
#define BLE_OTA_ST_FLASH_ERROR     0x08
#define BLE_OTA_ST_INCOMPLETE      0x09
#define BLE_OTA_ST_HASH_MISMATCH   0x0A
#define BLE_OTA_ST_INVALID_IMAGE   0x0B
#define BLE_OTA_ST_NOT_PENDING     0x0C
#define BLE_OTA_ST_NO_SLOT         0x0D
#define BLE_OTA_ST_AUTH_REQUIRED   0x0E
#define BLE_OTA_ST_AUTH_FAILED     0x0F
#define BLE_OTA_ST_AUTH_LOCKED     0x10
#define BLE_OTA_ST_BAD_DATA        0x11 /* a deflated chunk is malformed or not its size */

/* Flash is written in blocks of this size (one 4 KB sector). */
#define BLE_OTA_FLASH_BLOCK 4096

/* A suspended v2 transfer nobody resumes is aborted after this long. */
#define BLE_OTA_ABANDON_TIMEOUT_MS 60000

#endif /* BLE_OTA_PROTOCOL_H */
