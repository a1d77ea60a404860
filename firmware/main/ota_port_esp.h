/*
 * ESP-IDF implementation of ble_ota_port_t (esp_ota_*, esp_timer, NimBLE
 * notifications through ota_gap).
 */
#ifndef OTA_PORT_ESP_H
#define OTA_PORT_ESP_H

#include "ble_ota_port.h"

/* Prepares the port (creates the restart timer). Never fails: when the
 * timer cannot be created, restart() falls back to a blocking delay.
 * The returned port lives for the whole program. */
const ble_ota_port_t *ota_port_esp_init(void);

#endif /* OTA_PORT_ESP_H */
