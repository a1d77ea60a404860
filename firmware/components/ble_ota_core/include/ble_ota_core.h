/*
 * Portable OTA core: the protocol state machine behind the OTA service.
 *
 * The GATT layer (NimBLE on the ESP32, the line protocol of the virtual
 * ESP32 on a host) only translates GATT events into these calls and maps the
 * returned status to an ATT error with ble_ota_status_to_att(). The core
 * holds no buffer of its own and allocates nothing.
 */
#ifndef BLE_OTA_CORE_H
#define BLE_OTA_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ble_ota_port.h"
#include "ble_ota_protocol.h"

typedef enum {
    BLE_OTA_STATE_IDLE = 0,   /* no transfer; Data takes the packet size */
    BLE_OTA_STATE_RECEIVING,  /* after REQUEST_ACK: Data takes firmware */
    BLE_OTA_STATE_RESTARTING, /* after DONE_ACK: restart scheduled */
} ble_ota_state_t;

/* Result of a GATT write handled by the core. */
typedef enum {
    BLE_OTA_OK = 0,
    BLE_OTA_ERR_LENGTH,        /* value length not allowed here */
    BLE_OTA_ERR_VALUE,         /* unknown control value, packet size out of range */
    BLE_OTA_ERR_NOT_RECEIVING, /* firmware data outside a transfer */
    BLE_OTA_ERR_FLASH,         /* the port failed to store the data */
    BLE_OTA_ERR_BUSY,          /* restart pending */
} ble_ota_status_t;

typedef struct {
    const ble_ota_port_t *port;
    ble_ota_state_t state;
    uint8_t control;      /* last control value, returned by a read */
    uint16_t packet_size; /* announced by the client, 0 until then */
    uint32_t received;    /* firmware bytes stored in this transfer */
    uint32_t packets;     /* firmware packets stored in this transfer */
} ble_ota_core_t;

void ble_ota_core_init(ble_ota_core_t *core, const ble_ota_port_t *port);

/* A client wrote len bytes to OTA Control. REQUEST and DONE answer with a
 * notification (REQUEST_ACK/NAK, DONE_ACK/NAK) through the port. */
ble_ota_status_t ble_ota_core_control_write(ble_ota_core_t *core, const uint8_t *data, size_t len);

/* Value returned by a read of OTA Control. */
uint8_t ble_ota_core_control_read(const ble_ota_core_t *core);

/* A client wrote len bytes to OTA Data. */
ble_ota_status_t ble_ota_core_data_write(ble_ota_core_t *core, const uint8_t *data, size_t len);

/* The client's link dropped: a transfer in progress is aborted, so the slot
 * is freed and the next REQUEST starts clean. */
void ble_ota_core_disconnected(ble_ota_core_t *core);

/* Called once at boot, after the application's self-test (BLE stack up and
 * the OTA service registered, on the ESP32). A new image that passed is
 * marked valid; one that failed is rolled back. Returns the state the
 * running image had before the call. */
ble_ota_img_state_t ble_ota_core_confirm_boot(const ble_ota_port_t *port, bool self_test_passed);

/* ATT error code a GATT layer returns for a status (0 for BLE_OTA_OK). */
uint8_t ble_ota_status_to_att(ble_ota_status_t status);

#endif /* BLE_OTA_CORE_H */
