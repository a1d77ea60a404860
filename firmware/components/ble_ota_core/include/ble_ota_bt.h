/*
 * What the Bluetooth glue decides, so that the ESP32 firmware's NimBLE glue
 * (firmware/main/ota_gatt.c, ota_gap.c) and the virtual ESP32 decide it the
 * same way, and the host tests check it:
 *
 * - which written values fail their ATT write before the core sees them
 *   (too long for the device's buffer; an OTA Command without an opcode or
 *   outside the request range, answered by the write response because the
 *   core only sees a queued request after it went);
 * - how a notification that finds no buffer is tried again;
 * - how much of the device name fits the advertising data.
 */
#ifndef BLE_OTA_BT_H
#define BLE_OTA_BT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ble_ota_core.h"

/* ATT error (0: none) for a written value of len bytes: longer than
 * BLE_OTA_MAX_PACKET fails with Invalid Attribute Value Length. NimBLE
 * hands the callback any value that fits the link's ATT MTU (up to 524
 * bytes with BLE_ATT_MTU_MAX 527); a seed client at MTU 517 writes 514. */
uint8_t ble_ota_bt_write_check(size_t len);

/* The status ble_ota_core_command_write fails a write of this value with
 * before it looks further: an empty value (BLE_OTA_ERR_LENGTH), a first
 * byte above BLE_OTA_OPCODE_MAX, whose answer would read as an event
 * (BLE_OTA_ERR_VALUE); BLE_OTA_OK otherwise. A GATT layer that answers the
 * write before the core sees the request answers with this, and still
 * hands the request over (on a device with authentication a stranger's
 * junk counts against its link). */
ble_ota_status_t ble_ota_bt_command_check(const uint8_t *value, size_t len);

/* --- notifications --- */

/* A notification that finds no buffer (NimBLE: no free mbuf) is tried up to
 * BLE_OTA_NOTIFY_ATTEMPTS times, BLE_OTA_NOTIFY_RETRY_MS apart, by a task
 * that may wait while the host frees buffers (the ESP32's OTA task); the
 * Bluetooth host's own task tries once, as it would wait for buffers only
 * it frees. 40 ms of retries span more than two connection events of the
 * transfer's longest interval (15 ms): an ACK that never went out would
 * stall a client with a full window until its timeout. */
#define BLE_OTA_NOTIFY_ATTEMPTS 5u
#define BLE_OTA_NOTIFY_RETRY_MS 10u

typedef enum {
    BLE_OTA_NOTIFY_SENT = 0,
    BLE_OTA_NOTIFY_NO_BUFFER, /* try again later */
    BLE_OTA_NOTIFY_FAILED,    /* for good (no link, no subscriber, stack error) */
} ble_ota_notify_result_t;

typedef struct {
    /* One attempt to hand the notification to the stack. */
    ble_ota_notify_result_t (*send)(void *ctx);
    /* Blocks the calling task for ms milliseconds. */
    void (*wait_ms)(void *ctx, uint32_t ms);
    void *ctx;
} ble_ota_notifier_t;

/* Sends through n, trying again as above while it finds no buffer;
 * may_wait: the calling task may block. Returns the last attempt's result;
 * *attempts (may be NULL) gets the number of attempts made. */
ble_ota_notify_result_t ble_ota_bt_notify(const ble_ota_notifier_t *n, bool may_wait, unsigned *attempts);

/* --- advertising --- */

/* The name's room in a legacy advertisement of 31 bytes beside the flags
 * (3 bytes) and the TX power level (3), less its own length and type (2). */
#define BLE_OTA_ADV_NAME_MAX 23u

/* How many bytes of a name of name_len bytes go into the advertisement;
 * *complete: all of it (Complete Local Name), else Shortened Local Name.
 * The full name stays readable in the GAP Device Name characteristic. */
size_t ble_ota_bt_adv_name_len(size_t name_len, bool *complete);

#endif /* BLE_OTA_BT_H */
