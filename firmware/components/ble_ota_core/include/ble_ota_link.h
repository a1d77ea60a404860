/*
 * The link the device asks for, and the link it got.
 *
 * The core decides what to ask for and when (ble_ota_link.c); the port
 * only carries the requests out (NimBLE on the ESP32, a record of them on
 * the host) and reports what the link became. Units are the Core
 * Specification's, as the controller reports them (Vol 4, Part E, 7.7.65:
 * LE Connection Complete, LE Connection Update Complete, LE Data Length
 * Change, LE PHY Update Complete), so OTA Info carries them unconverted.
 */
#ifndef BLE_OTA_LINK_H
#define BLE_OTA_LINK_H

#include <stdbool.h>
#include <stdint.h>

/* What the device last asked of the central's connection parameters. */
typedef enum {
    BLE_OTA_LINK_NONE = 0,     /* nothing on this link yet: the central's choice */
    BLE_OTA_LINK_TRANSFER = 1, /* a transfer runs: short interval, no latency */
    BLE_OTA_LINK_IDLE = 2,     /* a transfer ended or stalled: power-friendly */
} ble_ota_link_profile_t;

/* Connection parameters to request (struct ble_gap_upd_params in NimBLE). */
typedef struct {
    uint16_t itvl_min;            /* 1.25 ms units */
    uint16_t itvl_max;            /* 1.25 ms units */
    uint16_t latency;             /* connection events the device may skip */
    uint16_t supervision_timeout; /* 10 ms units */
} ble_ota_conn_params_t;

/* PHY values as the controller reports them (0: not known). */
#define BLE_OTA_PHY_UNKNOWN 0
#define BLE_OTA_PHY_1M      1
#define BLE_OTA_PHY_2M      2
#define BLE_OTA_PHY_CODED   3

/* The link as the device sees it; 0 in a field: not known. */
typedef struct {
    uint16_t conn_itvl; /* 1.25 ms units */
    uint16_t conn_latency;
    uint16_t supervision_timeout; /* 10 ms units */
    uint8_t tx_phy;               /* BLE_OTA_PHY_*: device to central */
    uint8_t rx_phy;               /* central to device (the stream) */
    uint16_t tx_octets;           /* LL payload octets per PDU, device to central */
    uint16_t rx_octets;           /* central to device */
    uint16_t att_mtu;
} ble_ota_link_info_t;

/* Data length asked for on every connection: the largest LL payload
 * (Core Vol 6, Part B, 4.5.10: 27 to 251 octets) and the time 251 octets
 * take on the LE 1M PHY, (251 + 14) * 8 us, the largest value a controller
 * without LE Coded takes (HCI LE Set Data Length: 0x0148 to 0x0848 there). */
#define BLE_OTA_LINK_TX_OCTETS  251
#define BLE_OTA_LINK_TX_TIME_US 2120

/* A link with no transfer data for this long has its idle parameters
 * requested, even while a transfer is open (a client that stalled). */
#define BLE_OTA_LINK_IDLE_AFTER_MS 5000u

/* The parameters to request for a profile (NULL for BLE_OTA_LINK_NONE).
 * The one definition: the ESP port and the host platform take them from
 * here, the host tests check them against the Core Specification's rules.
 *   TRANSFER: 7.5-15 ms, latency 0, supervision timeout 5 s (longer than
 *             the worst flash stall: a 64 KB block erase takes up to 2 s
 *             on a W25Q32JV at its datasheet maximum);
 *   IDLE:     30-50 ms, latency 4 (the device listens at least every
 *             250 ms), supervision timeout 5 s. */
const ble_ota_conn_params_t *ble_ota_link_params(ble_ota_link_profile_t profile);

/* True when params satisfy the Core Specification (Vol 6, Part B, 4.5.2;
 * HCI LE Connection Update ranges): interval 7.5 ms to 4 s, min <= max,
 * latency <= 499, timeout 100 ms to 32 s and longer than
 * (1 + latency) * interval max * 2. NimBLE refuses anything else. */
bool ble_ota_link_params_valid(const ble_ota_conn_params_t *params);

/* The connection event length to hint with a request (HCI LE Connection
 * Update's Max_CE_Length, 0.625 ms units; the minimum hint is 0): the
 * whole longest interval, so a controller that honours the hint never ends
 * an event that still has packets to carry. */
uint16_t ble_ota_link_max_ce_len(const ble_ota_conn_params_t *params);

/* The core's record of what it asked for on the current link. */
typedef struct {
    bool data_path_pending;         /* data length and PHY still to ask for on this link */
    ble_ota_link_profile_t profile; /* last connection parameters the port took */
    ble_ota_link_profile_t busy;    /* a profile the port could not issue yet: retried at tick */
    bool receiving;                 /* a transfer was receiving at the last update */
    bool active;                    /* transfer data arrived since the last tick */
    uint32_t active_at_ms;          /* when data last arrived, as seen by the tick */
} ble_ota_link_t;

#endif /* BLE_OTA_LINK_H */
