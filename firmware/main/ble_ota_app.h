/*
 * The application's part of this firmware. An application builds into
 * this project (firmware/README.md, "Your application"): it starts in
 * ble_ota_app_start() and says in ble_ota_app_healthy() whether it works,
 * which decides whether a new image is kept. ble_ota_app.c holds the
 * defaults (nothing to start, always healthy): replace them with the
 * application's own. app_main stays the firmware's (main.c): it is what
 * keeps or rolls back each new image.
 */
#pragma once

#include <stdbool.h>

/**
 * Called once per boot while the BLE host is set up: after the OTA service
 * is registered, before the host starts. Register the application's own
 * GATT services here (ble_gatts_count_cfg, then ble_gatts_add_svcs): they
 * are served beside the OTA service, on the same connections. Return 0, or
 * the NimBLE error. An error fails the self-test, so a new image rolls back;
 * a confirmed one keeps running with the OTA service alone, still
 * updatable.
 */
int ble_ota_app_gatt_init(void);

/**
 * Called once per boot from app_main, on the main task (priority 1, stack
 * CONFIG_ESP_MAIN_TASK_STACK_SIZE), once the OTA service runs, the device
 * advertises (or a client is connected already) and the firmware's own
 * self-test passed. Create the application's tasks here and return: the
 * health check below comes only after this returns, so a start that never
 * returns (the loop an app_main would run) leaves a new image pending
 * verify, refusing every update and CONFIRM, until a reset rolls it back.
 *
 * Until a new image is confirmed, any reset rolls it back (the bootloader,
 * at the next boot). A crash resets the chip (ESP-IDF's panic handler
 * restarts by default); a hang does only through a watchdog that resets.
 * ESP-IDF's task watchdog watches only the idle tasks and by default only
 * logs: an application that relies on it turns on its panic (menuconfig
 * "Invoke panic handler on Task Watchdog timeout") and subscribes its
 * tasks (esp_task_wdt_add, esp_task_wdt_reset), or restarts the chip from
 * a watchdog of its own (esp_restart). Application tasks that never block,
 * above priority 1, starve the health check and its time limit too.
 *
 * A new image whose start-up or self-test failed is rolled back before
 * this; a confirmed one has nothing to return to and calls it all the same,
 * without the OTA service.
 */
void ble_ota_app_start(void);

/**
 * Asked once per boot, after ble_ota_app_start() returned and the
 * firmware's own checks passed, in a task of its own (the main task's stack
 * size and priority): whether the application works (its sensors answer,
 * its network is up). It may block while it finds out, up to
 * CONFIG_BLE_OTA_APP_CHECK_TIMEOUT_S (20 s by default; no answer by then
 * is a fault, and the task is left to finish). Meanwhile a new image runs
 * pending verify: the device answers BEGIN with PENDING_CONFIRM and a
 * client's CONFIRM with BAD_STATE, which the client sends again until it
 * passes or the client's verify timeout (30 s by default) ends.
 * True keeps a new image: the device marks it valid, or, when the update
 * asked for the client's CONFIRM (the nodes' default), waits for it up to
 * CONFIG_BLE_OTA_CONFIRM_WINDOW_S. False rolls it back to the previous one
 * and restarts; a confirmed image stays (it has nothing to return to).
 */
bool ble_ota_app_healthy(void);
