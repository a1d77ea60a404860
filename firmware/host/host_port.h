/*
 * Host platform of the OTA core: ble_ota_port_t on the emulated flash, and
 * the boot logic of the ESP-IDF bootloader with app rollback enabled.
 *
 * Used by the tests and by the virtual ESP32. The device keeps what the
 * ESP32 keeps across a restart (flash, OTA data) apart from what it loses
 * (the open slot, a pending restart, the running slot until the next boot).
 */
#ifndef HOST_PORT_H
#define HOST_PORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <zlib.h>

#include "ble_ota_core.h"
#include "ble_ota_port.h"
#include "ble_ota_slot.h"
#include "host_flash.h"

/* What the device tells its surroundings. Any hook may be NULL. */
typedef struct {
    /* OTA Control notification (the caller decides whether anyone is subscribed). */
    void (*notify)(void *user, uint8_t value);
    /* One log line, from the core or the platform. */
    void (*log)(void *user, ble_ota_log_level_t level, const char *msg);
    /* The firmware asked for a restart after delay_ms. */
    void (*restart)(void *user, uint32_t delay_ms);
    /* OTA Command notification (protocol v2). */
    void (*notify_command)(void *user, const uint8_t *data, size_t len);
    /* Milliseconds for the core's timers; NULL: CLOCK_MONOTONIC. Tests pass
     * a clock they move by hand. */
    uint32_t (*now_ms)(void *user);
    /* Random bytes for session nonces; NULL: /dev/urandom. */
    void (*random)(void *user, uint8_t *out, size_t len);
    /* The firmware ends the client's link (port disconnect()). */
    void (*disconnect)(void *user);
    /* The firmware asked the central for a data length and PHY, or for
     * connection parameters (ble_ota_link.h); after host_dev_t recorded it.
     * Returns what the port returns (false: busy, ask again); NULL: true. */
    bool (*link_data_path)(void *user, uint16_t tx_octets, uint16_t tx_time_us, bool prefer_2m);
    bool (*link_conn_params)(void *user, ble_ota_link_profile_t profile, const ble_ota_conn_params_t *params);
    void *user;
} host_dev_hooks_t;

typedef struct {
    host_flash_t flash;
    ble_ota_port_t port;
    host_dev_hooks_t hooks;
    uint16_t chip_id;                         /* chip the device accepts images for (0, ESP32) */
    uint16_t chip_revision;                   /* OTA Info chip_revision (major * 100 + minor) */
    uint8_t device_id[BLE_OTA_DEVICE_ID_LEN]; /* base MAC: identity, key derivation */
    /* Images must be signed with the key of the running image's signature
     * block, as ESP-IDF checks with CONFIG_SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT. */
    bool require_signature;
    /* The platform can open a slot without erasing it (esp_ota_resume,
     * ESP-IDF 5.3.3+, 5.4.2+, 5.5+; default true). false: an ESP-IDF
     * without it, whose every transfer erases sector by sector as its data
     * comes (and no idle erase). Read at each boot. */
    bool pre_erased_writes;

    /* RAM state, reset by every boot */
    int running;   /* booted slot, -1 when none */
    int open_slot; /* slot between slot_begin and slot_end/abort, -1 */
    /* The update slot's plan (ble_ota_slot.h): the open transfer's mode,
     * bytes written and erased, whether its image passed slot_end, and
     * the idle erase's progress, as far as this boot knows. */
    ble_ota_slot_t plan;
    z_stream inflater; /* raw inflate for DEFLATE chunks: set up once, reset per chunk */
    bool inflater_ready;
    bool running_signed; /* the running image's signature block 0 is valid and signs it */
    /* Fault injection: the running_read that brings this to 0 fails (0 = off). */
    uint32_t running_read_fail_after;
    uint32_t running_reads;         /* running_read calls that read */
    uint8_t running_key_digest[32]; /* its key digest: the key updates must be signed with; zeros when none */
    bool restart_pending;
    uint32_t restart_delay_ms;

    /* The link: what the central granted, as port link_info() reports it
     * (set by the tests and the virtual ESP32, as NimBLE's events set it
     * on the ESP32), and what the firmware asked for on it. */
    ble_ota_link_info_t link;
    unsigned data_path_asks; /* link_data_path calls */
    uint16_t asked_tx_octets;
    uint16_t asked_tx_time_us;
    bool asked_2m;
    unsigned conn_param_asks; /* link_conn_params calls */
    ble_ota_link_profile_t asked_profile;
    ble_ota_conn_params_t asked_params;
} host_dev_t;

/* Sets up the device with erased slots of slot_size bytes, an ESP32
 * (chip id 0, revision 3.0); set chip_id before installing an image to
 * emulate another chip. */
bool host_dev_init(host_dev_t *dev, uint32_t slot_size, const host_dev_hooks_t *hooks);
void host_dev_deinit(host_dev_t *dev);

/* Flashes an image into a slot the way esptool and a factory setup would:
 * validated, selected for boot, state valid. Returns false (with why) when
 * the image is invalid or too large. */
bool host_dev_install(host_dev_t *dev, int slot, const uint8_t *image, size_t len, char *why, size_t why_len);

/* Restart or power-on: RAM state is lost, the bootloader picks a slot.
 * Returns the running slot, or -1 when nothing can boot. Run
 * ble_ota_core_confirm_boot() afterwards, as the firmware does. */
int host_dev_boot(host_dev_t *dev);

/* State of a slot as the OTA data records it. */
host_slot_state_t host_dev_slot_state(const host_dev_t *dev, int slot);

/* The device key from the key partition, for this device's id. */
ble_ota_key_status_t host_dev_read_key(const host_dev_t *dev, uint8_t key[BLE_OTA_AUTH_KEY_LEN]);

/* Version from the running image's app descriptor ("" when none). */
void host_dev_running_version(const host_dev_t *dev, char version[33]);

#endif /* HOST_PORT_H */
