/*
 * ESP-IDF implementation of ble_ota_port_t: esp_ota_* for the slot,
 * esp_timer for the clock and the delayed restart, NimBLE notifications
 * through ota_gap, NVS (namespace "ble_ota") for the confirm flag.
 */
#ifndef OTA_PORT_ESP_H
#define OTA_PORT_ESP_H

#include "ble_ota_port.h"

/* Prepares the port: reads the device information and the running image's
 * OTA state once, creates the restart timer. Never fails: when the timer
 * cannot be created, restart() falls back to a blocking delay. Call before
 * ota_task_start(); NVS is only used later, by the core. The returned port
 * lives for the whole program. */
const ble_ota_port_t *ota_port_esp_init(void);

#endif /* OTA_PORT_ESP_H */
