/*
 * The OTA core's RAM as a platform allocates it: one ble_ota_core_t, in a
 * static (the ESP32 port's OTA task does the same). `make sizes` runs
 * `size` on this object and the core's own: the bss here is the core state,
 * the core objects' data and bss are its other statics.
 */
#include "ble_ota_core.h"

ble_ota_core_t g_ble_ota_core;
