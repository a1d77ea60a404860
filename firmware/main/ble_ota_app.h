/*
 * The application's part of this firmware. An application builds into
 * this project (docs/HARDWARE.md): it starts in ble_ota_app_start() and
 * says in ble_ota_app_healthy() whether it works, which decides whether a
 * new image is kept. ble_ota_app.c holds the defaults (nothing to start,
 * always healthy): replace them with the application's own.
 */
#pragma once

#include <stdbool.h>

/**
 * Called once per boot from app_main, once the OTA service runs and the
 * device advertises (or a client is connected already). Start the
 * application's tasks here and return: a new image runs its application
 * before it is judged, so an application that crashes the chip, or hangs it
 * until a watchdog restarts it, is rolled back by the bootloader. A new
 * image whose OTA service failed is rolled back before this; a confirmed
 * one has nothing to return to and starts its application all the same.
 */
void ble_ota_app_start(void);

/**
 * Asked once per boot, after ble_ota_app_start() and once the firmware's
 * own checks passed, in a task of its own (the main task's stack size and
 * priority): whether the application works (its sensors answer, its
 * network is up). It may block while it finds out, up to
 * CONFIG_BLE_OTA_APP_CHECK_TIMEOUT_S (20 s by default; no answer by then
 * is a fault); meanwhile a new image runs pending verify and the device
 * refuses a client's CONFIRM (BAD_STATE), which the client sends again
 * until it passes or the client's verify timeout (30 s by default) ends.
 * False rolls a new image back to the previous one and restarts; a
 * confirmed image stays (it has nothing to return to).
 */
bool ble_ota_app_healthy(void);
