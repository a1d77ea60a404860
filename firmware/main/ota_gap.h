/*
 * GAP: advertising, connection and subscription tracking, notifications.
 */
#ifndef OTA_GAP_H
#define OTA_GAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ble_ota_link.h"

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

/* The link as NimBLE's events reported it (connect, connection update,
 * PHY update, data length change, MTU); zeros without a link. Callable
 * from any task. */
void ota_gap_link_info(ble_ota_link_info_t *out);

/* Asks the central for this data length and, with prefer_2m on a chip
 * with the LE 2M PHY, for 2M both ways; logs what NimBLE refuses. Returns
 * true (nothing to ask again). Callable from any task. */
bool ota_gap_request_data_path(uint16_t tx_octets, uint16_t tx_time_us, bool prefer_2m);

/* Asks the central for these connection parameters (what says why, for
 * the log). False while an update procedure is under way (ask again
 * later); true otherwise, failures logged. Callable from any task. */
bool ota_gap_request_conn_params(const ble_ota_conn_params_t *params, const char *what);

#endif /* OTA_GAP_H */
