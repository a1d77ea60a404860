/*
 * The slot the next update goes to: what to erase when, and who erases it.
 *
 * A port helper, not part of the core's protocol logic: the ESP-IDF port
 * (firmware/main/ota_port_esp.c) and the host platform (firmware/host,
 * tests and the virtual ESP32) keep one ble_ota_slot_t each and ask it
 * every decision, then carry it out with their own flash calls. What it
 * decides (docs/PROTOCOL.md, *What is erased when*):
 *
 * - the write mode of a transfer. SEQUENTIAL: the platform's writer erases
 *   each sector as the data reaches it (ESP-IDF: esp_ota_begin with
 *   OTA_WITH_SEQUENTIAL_WRITES, then esp_ota_write). PRE_ERASED: the port
 *   erases ahead of the data as this plan says and the writer erases
 *   nothing (ESP-IDF: esp_ota_resume at offset 0, then esp_ota_write). A v2
 *   transfer (size known) is PRE_ERASED where the platform has such a
 *   writer; the seed's (size unknown) is always SEQUENTIAL.
 * - in PRE_ERASED mode, the next erase before a write: a 64 KB block where
 *   the image fills it, else a 4 KB sector, never what is erased already.
 * - the idle erase: one step at a time from the slot's start, a block, or
 *   a sector when a client waits for answers; never while a transfer holds
 *   the slot, after a failed step, or while the running image awaits
 *   confirmation (its rollback goes to this slot). A PRE_ERASED transfer
 *   takes over what the idle erase did; any transfer ends the pass.
 *
 * What is erased lives in RAM only (a restart forgets it): an erase cut by
 * a power loss can leave a sector that reads blank and is not reliably
 * erased, so nothing in flash may claim a sector is blank.
 */
#ifndef BLE_OTA_SLOT_H
#define BLE_OTA_SLOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ble_ota_port.h"

/* Flash erase granularity: a sector, and the block one command erases. */
#define BLE_OTA_SLOT_SECTOR 4096u
#define BLE_OTA_SLOT_BLOCK  65536u

typedef enum {
    BLE_OTA_WRITE_SEQUENTIAL = 0, /* the writer erases each sector as data reaches it */
    BLE_OTA_WRITE_PRE_ERASED,     /* the port erases ahead (ble_ota_slot_erase_next); the writer erases nothing */
} ble_ota_write_mode_t;

/* One erase: offset from the slot's start and length, both sector-aligned. */
typedef struct {
    uint32_t offset;
    uint32_t size;
    bool first; /* idle erase: the pass's first step (the port checks the slot once per pass) */
} ble_ota_erase_t;

typedef struct {
    /* Fixed by ble_ota_slot_init. */
    uint32_t slot_size;        /* bytes of the slot, 0 when there is none */
    bool can_write_pre_erased; /* the platform has a writer that erases nothing */

    /* The transfer, between begin and end/abort. */
    bool open;
    ble_ota_write_mode_t mode;
    uint32_t image_size; /* 0: not known (seed) */
    uint32_t written;    /* bytes written so far */
    uint32_t erased_to;  /* PRE_ERASED: bytes from the slot's start known erased */

    /* A transfer's image passed the platform's validation (end) and nothing
     * erased or wrote the slot since: the one image that may be selected. */
    bool complete;

    /* The idle erase. */
    uint32_t prepared_to; /* bytes from the slot's start erased while idle */
    bool prepare_failed;  /* a step failed: none until the next begin or restart */
} ble_ota_slot_t;

/* A slot of slot_size bytes (0: none); can_write_pre_erased: the platform
 * can open the slot for writing without erasing it (ESP-IDF: esp_ota_resume,
 * in v5.3.3+, v5.4.2+ and v5.5+). Also what a restart leaves: nothing open,
 * nothing known erased. */
void ble_ota_slot_init(ble_ota_slot_t *slot, uint32_t slot_size, bool can_write_pre_erased);

/* A transfer of image_size bytes (0: not known) starts. Refuses (without
 * changing anything) a running image that awaits confirmation (STATE, as
 * esp_ota_begin does with rollback on), a missing slot (NO_SLOT) and an
 * image larger than the slot (TOO_LARGE). On OK *mode says how the port
 * opens the slot; the idle erase's prefix becomes the transfer's (PRE_ERASED)
 * or is dropped (SEQUENTIAL: the writer erases every sector itself), and
 * the slot's image is no longer complete. A transfer still open is replaced:
 * the port releases its own handle for it first (ble_ota_slot_abort). */
ble_ota_port_err_t ble_ota_slot_begin(ble_ota_slot_t *slot, uint32_t image_size, ble_ota_img_state_t running,
                                      ble_ota_write_mode_t *mode);

/* Before writing len bytes: TOO_LARGE when they would pass the slot's end,
 * STATE without an open transfer, else OK. */
ble_ota_port_err_t ble_ota_slot_write_check(const ble_ota_slot_t *slot, size_t len);

/* PRE_ERASED: the next erase the port must do before writing len bytes;
 * false when none is left (always false in SEQUENTIAL mode). Call until
 * false, with ble_ota_slot_erased after each successful erase. */
bool ble_ota_slot_erase_next(const ble_ota_slot_t *slot, size_t len, ble_ota_erase_t *out);
void ble_ota_slot_erased(ble_ota_slot_t *slot, const ble_ota_erase_t *erase);

/* len bytes were written. */
void ble_ota_slot_written(ble_ota_slot_t *slot, size_t len);

/* The transfer ended: valid says whether the platform's validation passed
 * (the slot is closed either way). */
void ble_ota_slot_end(ble_ota_slot_t *slot, bool valid);

/* The transfer was dropped; what it wrote is no image. */
void ble_ota_slot_abort(ble_ota_slot_t *slot);

/* What end reports for an image the platform's validation refused.
 * SIGNATURE where signatures are required, the image parses far enough to
 * find its signature block (its header and segments can be walked) and
 * that does not verify against the key the running image trusts, whatever
 * else is wrong with it: ESP-IDF's validation checks the signature with
 * the rest, so the ESP32 cannot tell a tampered image from an unsigned one
 * any other way. INVALID_IMAGE otherwise. */
ble_ota_port_err_t ble_ota_slot_end_refusal(bool signatures_required, bool parses, bool signature_ok);

/* The idle erase's next step, false when there is none: the slot is
 * erased, a transfer holds it, a step failed, the platform has no writer
 * that could use it, or the running image awaits confirmation. short_step:
 * a sector instead of a block (a client waits for answers). */
bool ble_ota_slot_prepare_next(const ble_ota_slot_t *slot, bool short_step, ble_ota_img_state_t running,
                               ble_ota_erase_t *out);

/* The step was erased: whatever image the slot held is gone. Returns true
 * while more is left to erase. */
bool ble_ota_slot_prepared(ble_ota_slot_t *slot, const ble_ota_erase_t *erase);

/* The step failed, or the port found the slot may not be erased: no idle
 * erase until the next begin or restart. */
void ble_ota_slot_prepare_stop(ble_ota_slot_t *slot);

#endif /* BLE_OTA_SLOT_H */
