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
#define BLE_OTA_ATT_ERR_NOT_RECEIVING 0x80 /* firmware data written outside a transfer */
#define BLE_OTA_ATT_ERR_FLASH         0x81 /* the device could not write the data to flash */
#define BLE_OTA_ATT_ERR_BAD_VALUE     0x82 /* unknown control value or packet size out of range */
#define BLE_OTA_ATT_ERR_BUSY          0x83 /* restart pending: the transfer is over */

#endif /* BLE_OTA_PROTOCOL_H */
