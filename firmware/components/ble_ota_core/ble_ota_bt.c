/*
 * What the Bluetooth glue decides (ble_ota_bt.h).
 */
#include "ble_ota_bt.h"

uint8_t
ble_ota_bt_write_check(size_t len)
{
    return len > BLE_OTA_MAX_PACKET ? BLE_OTA_ATT_ERR_INVALID_LEN : 0;
}

ble_ota_status_t
ble_ota_bt_command_check(const uint8_t *value, size_t len)
{
    if (len == 0 || value == NULL) {
        return BLE_OTA_ERR_LENGTH; /* no opcode to answer */
    }
    /* Its answer (opcode | 0x80) would read as an event (0xC0 and up) or
     * as another request's answer: refuse the write instead. */
    if (value[0] > BLE_OTA_OPCODE_MAX) {
        return BLE_OTA_ERR_VALUE;
    }
    return BLE_OTA_OK;
}

ble_ota_notify_result_t
ble_ota_bt_notify(const ble_ota_notifier_t *n, bool may_wait, unsigned *attempts)
{
    const unsigned max = may_wait ? BLE_OTA_NOTIFY_ATTEMPTS : 1u;
    ble_ota_notify_result_t r = BLE_OTA_NOTIFY_NO_BUFFER;
    unsigned made = 0;

    while (made < max) {
        if (made > 0) {
            n->wait_ms(n->ctx, BLE_OTA_NOTIFY_RETRY_MS);
        }
        r = n->send(n->ctx);
        made++;
        if (r != BLE_OTA_NOTIFY_NO_BUFFER) {
            break;
        }
    }
    if (attempts != NULL) {
        *attempts = made;
    }
    return r;
}

size_t
ble_ota_bt_adv_name_len(size_t name_len, bool *complete)
{
    *complete = name_len <= BLE_OTA_ADV_NAME_MAX;
    return *complete ? name_len : BLE_OTA_ADV_NAME_MAX;
}
