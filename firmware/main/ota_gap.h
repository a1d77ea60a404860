/*
 * GAP: advertising, connection and subscription tracking, notifications.
 */
#ifndef OTA_GAP_H
#define OTA_GAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Called on the host task each time advertising has started. */
typedef void ota_gap_advertising_fn(void);

/* Sets the device name and the host's sync/reset callbacks. Call after
 * nimble_port_init() and before the host task starts. A name the stack
 * rejects is logged and the stack's default name kept. */
void ota_gap_init(const char *device_name, ota_gap_advertising_fn *on_advertising);

/* Sends value as an OTA Control notification if a client is connected and
 * has enabled notifications; otherwise does nothing. */
void ota_gap_notify_control(uint8_t value);

/* Same for OTA Command (protocol v2 answers and events). Callable from any
 * task; from the OTA task it waits briefly for a free mbuf if none is left. */
void ota_gap_notify_command(const uint8_t *data, size_t len);

/* True while a client is connected. */
bool ota_gap_connected(void);

/* Ends the client's link, if any (a stranger that failed to authenticate);
 * returns at once. Callable from any task. */
void ota_gap_terminate(void);

#endif /* OTA_GAP_H */
