/*
 * The GATT table the OTA firmware serves (ble_ota_gatt.h).
 */
#include "ble_ota_gatt.h"

#include <string.h>

#include "ble_ota_protocol.h"

const char *const ble_ota_gatt_svc_uuid[BLE_OTA_SVC_COUNT] = {
    [BLE_OTA_SVC_OTA] = BLE_OTA_SERVICE_UUID,
    [BLE_OTA_SVC_DEVICE_INFORMATION] = BLE_OTA_DEVICE_INFORMATION_UUID,
};

const ble_ota_chr_def_t ble_ota_gatt_chrs[BLE_OTA_CHR_COUNT] = {
    /* The seed's characteristics and properties, so seed clients work unchanged. */
    [BLE_OTA_CHR_CONTROL] = { BLE_OTA_SVC_OTA, BLE_OTA_CONTROL_UUID,
                              BLE_OTA_PROP_READ | BLE_OTA_PROP_WRITE | BLE_OTA_PROP_NOTIFY, true },
    /* Write with response only, as in the seed: the response says whether
     * the packet is in flash. */
    [BLE_OTA_CHR_DATA] = { BLE_OTA_SVC_OTA, BLE_OTA_DATA_UUID, BLE_OTA_PROP_WRITE, true },
    /* Protocol v2. */
    [BLE_OTA_CHR_INFO] = { BLE_OTA_SVC_OTA, BLE_OTA_INFO_UUID, BLE_OTA_PROP_READ, false },
    /* Requests with response; answers and events as notifications. */
    [BLE_OTA_CHR_COMMAND] = { BLE_OTA_SVC_OTA, BLE_OTA_COMMAND_UUID, BLE_OTA_PROP_WRITE | BLE_OTA_PROP_NOTIFY, false },
    /* Write Commands carry the stream; a Write Request is taken the same way. */
    [BLE_OTA_CHR_STREAM] = { BLE_OTA_SVC_OTA, BLE_OTA_STREAM_UUID, BLE_OTA_PROP_WRITE_NO_RSP | BLE_OTA_PROP_WRITE,
                             false },
    /* Device Information; the seed's has no firmware revision. */
    [BLE_OTA_CHR_MANUFACTURER_NAME] = { BLE_OTA_SVC_DEVICE_INFORMATION, BLE_OTA_MANUFACTURER_NAME_UUID,
                                        BLE_OTA_PROP_READ, true },
    [BLE_OTA_CHR_MODEL_NUMBER] = { BLE_OTA_SVC_DEVICE_INFORMATION, BLE_OTA_MODEL_NUMBER_UUID, BLE_OTA_PROP_READ, true },
    [BLE_OTA_CHR_FIRMWARE_REVISION] = { BLE_OTA_SVC_DEVICE_INFORMATION, BLE_OTA_FIRMWARE_REVISION_UUID,
                                        BLE_OTA_PROP_READ, false },
};

int
ble_ota_hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

size_t
ble_ota_uuid_parse(const char *text, uint8_t out[BLE_OTA_UUID_MAX_LEN])
{
    uint8_t digits[2 * BLE_OTA_UUID_MAX_LEN];
    size_t n = 0;

    if (text == NULL) {
        return 0;
    }
    const size_t len = strlen(text);
    if (len != 4 && len != 36) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        if (len == 36 && (i == 8 || i == 13 || i == 18 || i == 23)) {
            if (text[i] != '-') {
                return 0;
            }
            continue;
        }
        const int d = ble_ota_hex_value(text[i]);
        if (d < 0) {
            return 0;
        }
        digits[n++] = (uint8_t)d;
    }
    /* The text is big-endian (most significant digit first); the air is not. */
    const size_t bytes = n / 2;
    for (size_t i = 0; i < bytes; i++) {
        const size_t at = 2 * (bytes - 1 - i);
        out[i] = (uint8_t)(digits[at] << 4 | digits[at + 1]);
    }
    return bytes;
}
