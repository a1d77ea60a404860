/*
 * The queue in front of the core's task: sizing, admission, framing, the
 * link count (ble_ota_queue.h).
 */
#include "ble_ota_queue.h"

#include <string.h>

#include "ble_ota_le.h"

bool
ble_ota_queue_admit(size_t prefix, size_t space, ble_ota_queue_kind_t kind, size_t len)
{
    if (len > BLE_OTA_MAX_PACKET) {
        return false;
    }
    const size_t needed = BLE_OTA_QUEUE_ITEM_COST(prefix, len) +
                          (kind == BLE_OTA_QUEUE_STREAM ? BLE_OTA_QUEUE_COMMAND_RESERVE(prefix) : 0u);
    return space >= needed;
}

size_t
ble_ota_queue_encode(uint8_t *item, ble_ota_queue_kind_t kind, uint16_t link, const uint8_t *value, size_t len)
{
    if (len > BLE_OTA_MAX_PACKET || (kind != BLE_OTA_QUEUE_STREAM && kind != BLE_OTA_QUEUE_COMMAND)) {
        return 0;
    }
    item[0] = (uint8_t)kind;
    item[1] = 0;
    ble_ota_put_le16(item + 2, link);
    if (len > 0) {
        memcpy(item + BLE_OTA_QUEUE_ITEM_HEADER, value, len);
    }
    return BLE_OTA_QUEUE_ITEM_HEADER + len;
}

bool
ble_ota_queue_decode(const uint8_t *item, size_t len, ble_ota_queue_item_t *out)
{
    if (len < BLE_OTA_QUEUE_ITEM_HEADER || len > BLE_OTA_QUEUE_ITEM_MAX ||
        (item[0] != BLE_OTA_QUEUE_STREAM && item[0] != BLE_OTA_QUEUE_COMMAND)) {
        return false;
    }
    out->kind = (ble_ota_queue_kind_t)item[0];
    out->link = ble_ota_get_le16(item + 2);
    out->value = item + BLE_OTA_QUEUE_ITEM_HEADER;
    out->len = len - BLE_OTA_QUEUE_ITEM_HEADER;
    return true;
}

bool
ble_ota_queue_fit_config(ble_ota_config_t *config, uint32_t window_max)
{
    bool changed = false;

    /* The window and packet size are promises to the client that the
     * queue must keep. */
    if (config->window == 0 || config->window > window_max) {
        config->window = (uint16_t)(window_max > UINT16_MAX ? UINT16_MAX : window_max);
        changed = true;
    }
    if (config->max_packet > BLE_OTA_MAX_PACKET || config->max_packet <= BLE_OTA_STREAM_HEADER) {
        config->max_packet = BLE_OTA_MAX_PACKET;
        changed = true;
    }
    return changed;
}

unsigned
ble_ota_link_count_next(unsigned count, bool up)
{
    const bool is_up = (count & 1u) != 0;

    return count + (is_up == up ? 2u : 1u);
}

ble_ota_link_catch_up_t
ble_ota_link_count_catch_up(unsigned applied, unsigned now)
{
    ble_ota_link_catch_up_t r = { false, false };

    if (now != applied) {
        r.disconnected = (applied & 1u) != 0;
        r.connected = (now & 1u) != 0;
    }
    return r;
}

uint16_t
ble_ota_link_count_stamp(unsigned count)
{
    return (uint16_t)(count & 0xFFFFu);
}

bool
ble_ota_link_count_current(unsigned applied, uint16_t stamp)
{
    return ble_ota_link_count_stamp(applied) == stamp;
}

uint32_t
ble_ota_queue_wait_ticks(uint32_t since, uint32_t period, bool idle_work)
{
    uint32_t wait = since >= period ? 0 : period - since;

    if (idle_work && wait > 1) {
        wait = 1;
    }
    return wait;
}
