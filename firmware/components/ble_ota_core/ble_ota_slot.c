/*
 * What to erase when in the update slot, and who erases it (ble_ota_slot.h).
 *
 * Why erase ahead at all: while the ESP32's flash erases, its cache is off
 * and the BLE host cannot run; only the controller's small pool takes
 * packets, so an erase on a transfer's path stalls the link
 * (docs/PERFORMANCE.md). A 64 KB block takes about 150 ms where its 16
 * sectors take 16 x 45 ms; erasing the slot while idle leaves the transfer
 * page programs only. Nothing is erased at BEGIN: a whole image erased
 * there would hold the answer for seconds.
 */
#include "ble_ota_slot.h"

#include <string.h>

void
ble_ota_slot_init(ble_ota_slot_t *slot, uint32_t slot_size, bool can_write_pre_erased)
{
    memset(slot, 0, sizeof(*slot));
    slot->slot_size = slot_size;
    slot->can_write_pre_erased = can_write_pre_erased;
}

ble_ota_port_err_t
ble_ota_slot_begin(ble_ota_slot_t *slot, uint32_t image_size, ble_ota_img_state_t running, ble_ota_write_mode_t *mode)
{
    if (slot->slot_size == 0) {
        return BLE_OTA_PORT_ERR_NO_SLOT;
    }
    /* The pending image rolls back to this slot: it must stay as it is. */
    if (running == BLE_OTA_IMG_PENDING_VERIFY) {
        return BLE_OTA_PORT_ERR_STATE;
    }
    if (image_size > slot->slot_size) {
        return BLE_OTA_PORT_ERR_TOO_LARGE;
    }
    /* A size known up front (v2) lets the port erase ahead in blocks; the
     * seed's transfer ends when the client says so, and its writer erases
     * sector by sector as the data comes. */
    const bool pre_erased = image_size > 0 && slot->can_write_pre_erased;
    const uint32_t prepared = slot->prepared_to;

    slot->open = true;
    slot->mode = pre_erased ? BLE_OTA_WRITE_PRE_ERASED : BLE_OTA_WRITE_SEQUENTIAL;
    slot->image_size = image_size;
    slot->written = 0;
    slot->erased_to = pre_erased ? prepared : 0;
    slot->complete = false;
    /* The slot gets data either way: the idle erase starts over once it is free. */
    slot->prepared_to = 0;
    slot->prepare_failed = false;
    *mode = slot->mode;
    return BLE_OTA_PORT_OK;
}

ble_ota_port_err_t
ble_ota_slot_write_check(const ble_ota_slot_t *slot, size_t len)
{
    if (!slot->open) {
        return BLE_OTA_PORT_ERR_STATE;
    }
    /* "Too large" rather than the flash error a write past the end gives. */
    if (len > slot->slot_size - slot->written) {
        return BLE_OTA_PORT_ERR_TOO_LARGE;
    }
    return BLE_OTA_PORT_OK;
}

bool
ble_ota_slot_erase_next(const ble_ota_slot_t *slot, size_t len, ble_ota_erase_t *out)
{
    if (!slot->open || slot->mode != BLE_OTA_WRITE_PRE_ERASED || len == 0) {
        return false;
    }
    const uint32_t end = slot->written + (uint32_t)len;
    const uint32_t at = slot->erased_to;

    if (at >= end || at >= slot->slot_size) {
        return false;
    }
    /* A block where the image fills it (one command instead of 16), else a
     * sector: nothing past the image's last sector is erased. */
    const bool block = at % BLE_OTA_SLOT_BLOCK == 0 && slot->image_size >= at &&
                       slot->image_size - at >= BLE_OTA_SLOT_BLOCK && slot->slot_size - at >= BLE_OTA_SLOT_BLOCK;
    out->offset = at;
    out->size = block ? BLE_OTA_SLOT_BLOCK : BLE_OTA_SLOT_SECTOR;
    out->first = at == 0;
    return true;
}

void
ble_ota_slot_erased(ble_ota_slot_t *slot, const ble_ota_erase_t *erase)
{
    if (erase->offset + erase->size > slot->erased_to) {
        slot->erased_to = erase->offset + erase->size;
    }
}

void
ble_ota_slot_written(ble_ota_slot_t *slot, size_t len)
{
    slot->written += (uint32_t)len;
}

void
ble_ota_slot_end(ble_ota_slot_t *slot, bool valid)
{
    slot->open = false;
    slot->complete = valid;
}

void
ble_ota_slot_abort(ble_ota_slot_t *slot)
{
    slot->open = false;
    slot->complete = false;
}

ble_ota_port_err_t
ble_ota_slot_end_refusal(bool signatures_required, bool parses, bool signature_ok)
{
    return signatures_required && parses && !signature_ok ? BLE_OTA_PORT_ERR_SIGNATURE : BLE_OTA_PORT_ERR_INVALID_IMAGE;
}

bool
ble_ota_slot_prepare_next(const ble_ota_slot_t *slot, bool short_step, ble_ota_img_state_t running,
                          ble_ota_erase_t *out)
{
    /* Without a writer that erases nothing, every transfer erases each
     * sector again as its data comes: erasing ahead would only wear the
     * flash. */
    if (!slot->can_write_pre_erased || slot->open || slot->prepare_failed || running == BLE_OTA_IMG_PENDING_VERIFY) {
        return false;
    }
    const uint32_t at = slot->prepared_to;

    if (at >= slot->slot_size || slot->slot_size - at < BLE_OTA_SLOT_SECTOR) {
        return false;
    }
    /* With a client connected, a sector (45 ms typical, 400 ms at the
     * datasheet's maximum) rather than a block (150 ms, 2 s): a request
     * that arrives meanwhile waits for one step at most. */
    const bool block = !short_step && at % BLE_OTA_SLOT_BLOCK == 0 && slot->slot_size - at >= BLE_OTA_SLOT_BLOCK;
    out->offset = at;
    out->size = block ? BLE_OTA_SLOT_BLOCK : BLE_OTA_SLOT_SECTOR;
    out->first = at == 0;
    return true;
}

bool
ble_ota_slot_prepared(ble_ota_slot_t *slot, const ble_ota_erase_t *erase)
{
    /* A complete image nobody selected was there: it is gone. */
    slot->complete = false;
    if (erase->offset + erase->size > slot->prepared_to) {
        slot->prepared_to = erase->offset + erase->size;
    }
    return slot->slot_size - slot->prepared_to >= BLE_OTA_SLOT_SECTOR;
}

void
ble_ota_slot_prepare_stop(ble_ota_slot_t *slot)
{
    slot->prepare_failed = true;
}
