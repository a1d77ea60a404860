/*
 * What the core's source files share and nobody else uses: logging, port
 * error names, and the calls one protocol makes into the other (a seed
 * REQUEST aborts a v2 transfer, a v2 BEGIN a seed transfer).
 */
#ifndef BLE_OTA_INTERNAL_H
#define BLE_OTA_INTERNAL_H

#include "ble_ota_core.h"

/* Long enough for every line of the core; longer text is cut, never overflows. */
#define BLE_OTA_LOG_LINE_MAX 96

void ble_ota_log(const ble_ota_port_t *port, ble_ota_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

const char *ble_ota_port_err_name(ble_ota_port_err_t err);

/* Checks the start of an image: what its first len bytes allow (all of it
 * from BLE_OTA_IMAGE_HEAD_LEN on). complete: the image has no more bytes,
 * so one shorter than BLE_OTA_IMAGE_HEAD_LEN is refused. Refuses what no
 * ESP-IDF app build writes, and images for another chip or a later chip
 * revision than the device's. Returns BLE_OTA_ST_OK, BLE_OTA_ST_INVALID_IMAGE
 * or BLE_OTA_ST_WRONG_CHIP; logs the reason. */
uint8_t ble_ota_image_head_check(const ble_ota_port_t *port, const uint8_t *head, size_t len, bool complete);

/* A restart is scheduled or due (seed DONE_ACK, v2 END OK): no transfer
 * may start, the selected slot must stay as it is. */
bool ble_ota_restart_pending(const ble_ota_core_t *core);

/* Rolls the running image back (port rollback()); from then on, until the
 * restart, no transfer may start. */
void ble_ota_rollback(ble_ota_core_t *core);

/* Drops a seed transfer in progress (slot aborted), if any. */
void ble_ota_seed_abort(ble_ota_core_t *core, const char *why);

/* Drops a v2 transfer being received or suspended (slot aborted), if any. */
void ble_ota_v2_abort(ble_ota_core_t *core, const char *why);

/* The link dropped: a v2 transfer being received becomes suspended. */
void ble_ota_v2_disconnected(ble_ota_core_t *core);

/* --- authentication (ble_ota_auth.c) --- */

/* CRC-32 (IEEE 802.3, reflected, as zlib's crc32). */
uint32_t ble_ota_crc32(const uint8_t *p, size_t len);

/* The image in the running slot as a file holds it (docs/PROTOCOL.md, OTA
 * Info running_size), read through port running_read with buf (buf_len
 * bytes, at least BLE_OTA_RUNNING_BUF_MIN) as scratch: its size and
 * SHA-256, or false (and zeros) when there is no read function, no image
 * or a malformed one, or a read fails. */
#define BLE_OTA_RUNNING_BUF_MIN 1200
bool ble_ota_running_image(const ble_ota_port_t *port, uint8_t *buf, size_t buf_len, uint32_t *size,
                           uint8_t sha256[BLE_OTA_SHA256_LEN]);

/* Compares in a time that does not depend on the contents. */
bool ble_ota_equal_ct(const uint8_t *a, const uint8_t *b, size_t len);

/* Answers HELLO (request: opcode and client nonce, len bytes): a fresh
 * device nonce and a new session on this link, or NOT_PROVISIONED,
 * AUTH_LOCKED with the milliseconds left, BAD_LENGTH. Returns the answer's
 * length, 0 when cap is too small. */
size_t ble_ota_auth_hello(ble_ota_core_t *core, const uint8_t *request, size_t len, uint8_t *answer, size_t cap);

/* Checks a request of len bytes whose own fields take base_len: without
 * authentication it must be base_len long; with it, base_len plus the
 * session MAC of the next sequence number, which it uses up. Returns
 * BLE_OTA_ST_OK or the status to answer (BAD_LENGTH, AUTH_REQUIRED,
 * AUTH_FAILED, AUTH_LOCKED); failures count against the link. */
uint8_t ble_ota_auth_check(ble_ota_core_t *core, const uint8_t *request, size_t len, size_t base_len);

/* Appends the answer MAC when the request being answered carried a valid
 * one (once per request); returns the answer's new length. */
size_t ble_ota_auth_seal(ble_ota_core_t *core, uint8_t *answer, size_t len, size_t cap);

/* A failure on this link (no-op without authentication): locks it for a
 * while, ends it at BLE_OTA_AUTH_FAILURES_MAX. */
void ble_ota_auth_failed(ble_ota_core_t *core, const char *why);

/* Asks the port to end the link (once). */
void ble_ota_auth_drop(ble_ota_core_t *core, const char *why);

/* A link that has not authenticated holds the device. */
bool ble_ota_auth_held_by_stranger(const ble_ota_core_t *core);

void ble_ota_auth_connected(ble_ota_core_t *core);
/* The link dropped: its session, failures and lock end with it. */
void ble_ota_auth_disconnected(ble_ota_core_t *core);
/* Ends a link that has not authenticated within the timeout. */
void ble_ota_auth_tick(ble_ota_core_t *core, uint32_t now);

/* Brings the confirm window's count up to now (ble_ota_v2.c); call before
 * the link changes hands (connect, first authenticated request, disconnect). */
void ble_ota_confirm_account(ble_ota_core_t *core);

/* --- the link (ble_ota_link.c) --- */

/* A link came up: its data length and PHY are to be asked for. */
void ble_ota_link_connected(ble_ota_core_t *core);
/* The link dropped: nothing asked of it counts any more. */
void ble_ota_link_disconnected(ble_ota_core_t *core);
/* Transfer data arrived (either protocol): no clock read, a flag. */
static inline void
ble_ota_link_active(ble_ota_core_t *core)
{
    core->link.active = true;
}
/* After each call into the core: asks the port for what the core's state
 * wants of the link, if that changed. from_tick: also asks again what the
 * port could not issue before. */
void ble_ota_link_update(ble_ota_core_t *core, bool from_tick);

#endif /* BLE_OTA_INTERNAL_H */
