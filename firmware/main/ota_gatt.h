/*
 * GATT server: the OTA service (seed and protocol v2 characteristics) and
 * Device Information.
 *
 * Access callbacks only translate GATT events into core calls (seed, under
 * the core lock) or OTA task requests (v2); all protocol decisions are the
 * core's, which the OTA task owns (ota_task.h).
 */
#ifndef OTA_GATT_H
#define OTA_GATT_H

#include <stdbool.h>
#include <stdint.h>

#include "host/ble_uuid.h"

/* Registers the GAP, GATT, OTA and Device Information services with the
 * NimBLE host. Call after ota_task_start() and nimble_port_init(), and
 * before the host task starts. Returns 0 or a NimBLE BLE_HS_* error. */
int ota_gatt_init(void);

/* A client connected, or its link dropped (called from the GAP event handler). */
void ota_gatt_on_connect(void);
void ota_gatt_on_disconnect(void);

/* Attribute handles of the OTA Control and OTA Command values; 0 until the
 * host has started the GATT server. */
uint16_t ota_gatt_control_handle(void);
uint16_t ota_gatt_command_handle(void);

/* True when every characteristic of the table (ble_ota_gatt.h) has a
 * handle, NimBLE prints its UUID as ble_ota_protocol.h writes it, and the
 * OTA Info value is there (part of the boot self-test). */
bool ota_gatt_check(void);

/* The OTA service UUID, advertised in the scan response; set by
 * ota_gatt_init(). */
extern ble_uuid128_t ota_gatt_service_uuid;

#endif /* OTA_GATT_H */
