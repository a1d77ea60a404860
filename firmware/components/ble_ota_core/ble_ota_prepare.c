/*
 * The slot erased before a transfer needs it (docs/PROTOCOL.md, *What is
 * erased when*).
 *
 * While the ESP32's flash erases, its cache is off and the BLE host cannot
 * run: only the controller's small pool takes packets, so an erase on a
 * transfer's path stalls the link (docs/PERFORMANCE.md). Erasing the slot
 * while the device is idle leaves the transfer only page programs. The core
 * decides when the slot may be touched; the port erases one step at a time
 * and keeps, in RAM only, how far it got.
 */
#include "ble_ota_core.h"

#include "ble_ota_internal.h"

/* Whether the slot the next update goes to may be erased now. */
static bool
prepare_allowed(const ble_ota_core_t *core)
{
    const ble_ota_port_t *port = core->port;

    /* A transfer holds the slot: receiving, suspended (its bytes are what a
     * resume continues from), or complete (RESTART may still select it). */
    if (core->state != BLE_OTA_STATE_IDLE || core->v2.state != BLE_OTA_V2_IDLE) {
        return false;
    }
    /* The slot is selected for the next boot, or a rollback is under way. */
    if (ble_ota_restart_pending(core)) {
        return false;
    }
    /* A pending-verify image rolls back to the other slot: keep it. */
    if (core->confirm_waiting || port->running_state(port->ctx) == BLE_OTA_IMG_PENDING_VERIFY) {
        return false;
    }
    return true;
}

bool
ble_ota_core_idle(ble_ota_core_t *core)
{
    const ble_ota_port_t *port = core->port;

    if (port->slot_prepare == NULL || !prepare_allowed(core)) {
        return false;
    }
    /* With a client connected, a sector (45 ms typical, 400 ms at the
     * datasheet's maximum) rather than a block (150 ms, 2 s): a BEGIN that
     * arrives meanwhile waits for at most one step. */
    return port->slot_prepare(port->ctx, core->auth.connected);
}
