/*
 * The GATT table the OTA firmware serves (docs/PROTOCOL.md, The service):
 * its services and characteristics with their UUIDs and properties. The
 * ESP32 firmware builds its NimBLE service definitions from it
 * (main/ota_gatt.c) and the virtual ESP32 announces and enforces it
 * (host/virtual_esp32.c), so both serve the same table. A characteristic is
 * added here, then given its access callback in each of the two.
 */
#ifndef BLE_OTA_GATT_H
#define BLE_OTA_GATT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Characteristic properties, with the values of the Characteristic
 * Properties bit field (Core Specification, Vol 3, Part G, 3.3.1.1). */
#define BLE_OTA_PROP_READ         0x02
#define BLE_OTA_PROP_WRITE_NO_RSP 0x04
#define BLE_OTA_PROP_WRITE        0x08
#define BLE_OTA_PROP_NOTIFY       0x10

typedef enum {
    BLE_OTA_SVC_OTA,
    BLE_OTA_SVC_DEVICE_INFORMATION,
    BLE_OTA_SVC_COUNT,
} ble_ota_svc_t;

/* The characteristics, each service's in the order it serves them. */
typedef enum {
    BLE_OTA_CHR_CONTROL,
    BLE_OTA_CHR_DATA,
    BLE_OTA_CHR_INFO,
    BLE_OTA_CHR_COMMAND,
    BLE_OTA_CHR_STREAM,
    BLE_OTA_CHR_MANUFACTURER_NAME,
    BLE_OTA_CHR_MODEL_NUMBER,
    BLE_OTA_CHR_FIRMWARE_REVISION,
    BLE_OTA_CHR_COUNT,
} ble_ota_chr_t;

typedef struct {
    ble_ota_svc_t svc;
    const char *uuid; /* a BLE_OTA_*_UUID of ble_ota_protocol.h */
    uint8_t props;    /* BLE_OTA_PROP_* */
    bool seed;        /* the seed firmware serves it too */
} ble_ota_chr_def_t;

/* The services' UUIDs, by ble_ota_svc_t. */
extern const char *const ble_ota_gatt_svc_uuid[BLE_OTA_SVC_COUNT];

/* The characteristics, by ble_ota_chr_t. */
extern const ble_ota_chr_def_t ble_ota_gatt_chrs[BLE_OTA_CHR_COUNT];

/* Size of the longest UUID in bytes (128 bits). */
#define BLE_OTA_UUID_MAX_LEN 16

/**
 * A UUID as the table writes it, in the byte order of the air
 * (little-endian, the string read backwards byte by byte).
 *
 * @param text  4 hex digits (a 16-bit UUID), or a 128-bit UUID as
 *              8-4-4-4-12 hex digits
 * @param out   receives the bytes
 * @return 2 or 16, the UUID's length; 0 when text is neither form
 */
size_t ble_ota_uuid_parse(const char *text, uint8_t out[BLE_OTA_UUID_MAX_LEN]);

/* The value of a hex digit (either case), -1 when c is none. */
int ble_ota_hex_value(char c);

#endif /* BLE_OTA_GATT_H */
