/*
 * The OTA task: owner of the protocol core, and the queue that keeps flash
 * work off the NimBLE host task.
 *
 * The host task only copies protocol v2 writes (OTA Stream packets and OTA
 * Command requests, in arrival order) into a statically allocated message
 * buffer and returns; the OTA task feeds them to the core, which writes
 * flash (esp_ota_write, sector erases, esp_ota_end) and answers with
 * notifications. See ota_task.c for why the core is guarded by a mutex.
 */
#ifndef OTA_TASK_H
#define OTA_TASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ble_ota_core.h"
#include "ble_ota_queue.h"
#include "sdkconfig.h"

/* Bytes a v2 client may stream beyond the last ACK (config.window), from
 * menuconfig (BLE_OTA_WINDOW_KB). The default, 32 KB, keeps the radio busy
 * through a 64 KB block erase (about 150 ms) and the ACK after it; the queue
 * that must hold a window costs about 1.2 bytes of RAM per window byte
 * (BLE_OTA_QUEUE_BYTES: about 39 KB for 32 KB, 20 KB for 16 KB). */
#define OTA_TASK_WINDOW ((uint32_t)CONFIG_BLE_OTA_WINDOW_KB * 1024u)

typedef enum {
    OTA_TASK_STREAM = BLE_OTA_QUEUE_STREAM,   /* an OTA Stream packet */
    OTA_TASK_COMMAND = BLE_OTA_QUEUE_COMMAND, /* an OTA Command request */
} ota_task_kind_t;

/* Initialises the core with port and config and starts the OTA task. Call
 * once, before the NimBLE host starts. Everything is statically allocated;
 * returns false only if FreeRTOS refuses the static objects. */
bool ota_task_start(const ble_ota_port_t *port, const ble_ota_config_t *config);

/* True once ota_task_start succeeded (part of the boot self-test). */
bool ota_task_running(void);

/* Host task only: queues a v2 write of len bytes (at most
 * BLE_OTA_MAX_PACKET) for the OTA task, behind everything queued before it.
 * Returns false when there is no room: a Stream packet is then dropped (the
 * core's RESYNC gets it sent again), a Command fails its ATT write. */
bool ota_task_post(ota_task_kind_t kind, const uint8_t *data, size_t len);

/* Host task only: a client connected (up) or its link dropped. The core
 * learns it before anything else enters it, and what is still queued from
 * an earlier link is discarded. Never blocks. */
void ota_task_link_event(bool up);

/* Under the core lock: true while the link the core knows of is still the
 * host's current one (no connect or disconnect since the core was told). */
bool ota_task_link_is_current(void);

/* Exclusive access to the core for a synchronous call from another task
 * (the seed protocol's GATT callbacks, app_main). May wait while the OTA
 * task finishes one core call (one flash operation). Every lock must be
 * followed by ota_task_core_unlock(). */
ble_ota_core_t *ota_task_core_lock(void);
void ota_task_core_unlock(void);

/* The last OTA Info value the core produced (refreshed after every request,
 * at every tick and whenever the queue runs empty, so during a transfer it
 * may lag by up to one tick). Never waits for flash. Returns its length, 0
 * when cap is too small or none was produced yet. */
size_t ota_task_info(uint8_t *out, size_t cap);

/* ble_ota_core_confirm_boot() under the core lock. */
ble_ota_img_state_t ota_task_confirm_boot(bool self_test_passed);

/* True when called from the OTA task itself. */
bool ota_task_is_current(void);

#endif /* OTA_TASK_H */
