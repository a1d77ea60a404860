/*
 * GATT server: the OTA service (seed UUIDs) and Device Information.
 *
 * Owns the protocol core instance. Access callbacks only translate GATT
 * events into ble_ota_core_* calls; all protocol decisions are the core's.
 */
#ifndef OTA_GATT_H
#define OTA_GATT_H

#include <stdbool.h>
#include <stdint.h>

#include "ble_ota_port.h"
#include "host/ble_uuid.h"

/* Registers the GAP, GATT, OTA and Device Information services with the
 * NimBLE host and initialises the core with port. Call after
 * nimble_port_init() and before the host task starts.
 * Returns 0 or a NimBLE BLE_HS_* error. */
int ota_gatt_init(const ble_ota_port_t *port);

/* The client's link dropped (called from the GAP event handler). */
void ota_gatt_on_disconnect(void);

/* Attribute handle of the OTA Control value; 0 until the host has started
 * the GATT server. */
uint16_t ota_gatt_control_handle(void);

/* True when both OTA characteristics have handles and their UUIDs match the
 * strings in ble_ota_protocol.h (part of the boot self-test). */
bool ota_gatt_check(void);

/* The OTA service UUID, advertised in the scan response. */
extern const ble_uuid128_t ota_gatt_service_uuid;

#endif /* OTA_GATT_H */
