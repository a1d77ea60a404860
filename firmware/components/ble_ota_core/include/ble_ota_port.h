/*
 * What the OTA core needs from the platform it runs on.
 *
 * The core (ble_ota_core.c) includes no ESP-IDF or NimBLE header. Each
 * platform fills one ble_ota_port_t: the ESP-IDF adapter
 * (firmware/main/ota_port_esp.c) with esp_ota_* calls, the host platform
 * (firmware/host/host_port.c) with emulated flash for tests and the virtual
 * ESP32. The core calls the port only from its own calls, so the port runs
 * in whatever task calls the core: on the ESP32 several tasks (the OTA
 * task, NimBLE's host task for the seed protocol's writes, the main task at
 * boot), one at a time under the core's lock (firmware/main/ota_task.c).
 * None may block longer than one flash operation.
 */
#ifndef BLE_OTA_PORT_H
#define BLE_OTA_PORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ble_ota_link.h"

/* Outcome of a port operation. The port logs the platform's own error
 * (esp_err_t name, ...) before returning; the core only needs the kind. */
typedef enum {
    BLE_OTA_PORT_OK = 0,
    BLE_OTA_PORT_ERR_NO_SLOT,       /* no OTA slot to write into */
    BLE_OTA_PORT_ERR_TOO_LARGE,     /* the data does not fit the slot */
    BLE_OTA_PORT_ERR_FLASH,         /* erase or write failed */
    BLE_OTA_PORT_ERR_INVALID_IMAGE, /* image validation failed at end */
    BLE_OTA_PORT_ERR_SIGNATURE,     /* at end: not signed with the key the device trusts */
    BLE_OTA_PORT_ERR_STATE,         /* refused in this state (e.g. rollback pending) */
    BLE_OTA_PORT_ERR_OTHER,
} ble_ota_port_err_t;

/* OTA state of the running image, as the bootloader keeps it. */
typedef enum {
    BLE_OTA_IMG_VALID = 0,      /* confirmed, or rollback not in use */
    BLE_OTA_IMG_PENDING_VERIFY, /* first boot of a new image: must be confirmed */
    BLE_OTA_IMG_UNKNOWN,        /* factory image or state not readable */
} ble_ota_img_state_t;

typedef enum {
    BLE_OTA_LOG_ERROR = 0,
    BLE_OTA_LOG_WARN,
    BLE_OTA_LOG_INFO,
    BLE_OTA_LOG_DEBUG,
} ble_ota_log_level_t;

/* What the device is and runs, for OTA Info. Strings are NUL-terminated
 * unless they fill their field (as esp_app_desc_t allows): the core reads at
 * most the field's size. */
typedef struct {
    uint16_t chip_id;       /* ESP image chip id (0 ESP32, 5 ESP32-C3, 9 ESP32-S3, ...) */
    uint16_t chip_revision; /* major * 100 + minor */
    uint32_t slot_size;     /* bytes of the slot the next update goes to, 0 when none */
    uint32_t secure_version;
    char version[32];
    char project_name[32];
    char idf_version[32];
    char date[16];
    char time[16];
    uint8_t app_elf_sha256[32]; /* the running build's identity */
    uint8_t device_id[6];       /* the chip's base MAC address (BLE_OTA_DEVICE_ID_LEN) */
    /* slot_end accepts only images signed with the key whose digest
     * (Secure Boot v2: SHA-256 of the block's public key) this is: the
     * key of the running image's signature block. */
    bool signed_updates;
    uint8_t signing_key_digest[32];
    /* With signed_updates: the port trusts no key (the running app carries
     * no signature block that signs it), so slot_end would refuse every
     * image. BEGIN refuses at once, before a byte is sent or erased. */
    bool no_trusted_key;
    /* The image last written to the update slot was rolled back (it ran
     * pending verify and did not become valid); nothing was written to
     * the slot since. */
    bool update_slot_rolled_back;
} ble_ota_device_info_t;

/* The slot erased ahead of a transfer (slot_prepare below). What the port
 * believes is erased lives in its RAM only: a restart forgets it and the
 * idle erase starts over, so nothing in flash ever claims a sector is blank
 * (an erase cut by a power loss may leave one that reads blank and is not
 * reliably erased). */

typedef struct ble_ota_port {
    void *ctx; /* passed back as the first argument of every call */

    /* Open the next OTA slot for sequential writes. image_size is 0 when the
     * protocol does not tell it (the seed's); the slot is then erased as
     * data arrives. */
    ble_ota_port_err_t (*slot_begin)(void *ctx, uint32_t image_size);
    /* Append len bytes to the open slot. */
    ble_ota_port_err_t (*slot_write)(void *ctx, const uint8_t *data, size_t len);
    /* Close the slot and validate the image in it (esp_ota_end), its
     * signature included where the device requires one (SIGNATURE when that
     * alone fails). The slot is closed whatever the result. */
    ble_ota_port_err_t (*slot_end)(void *ctx);
    /* Drop the open slot, if any, and free what it holds. */
    void (*slot_abort)(void *ctx);
    /* Select the slot last ended successfully for the next boot. */
    ble_ota_port_err_t (*set_boot_slot)(void *ctx);
    /* Restart the device after delay_ms; returns at once. */
    void (*restart)(void *ctx, uint32_t delay_ms);

    /* Notify the connected client of the OTA Control value (no-op when no
     * client is subscribed). */
    void (*notify_control)(void *ctx, uint8_t value);

    /* Boot-time confirmation of a new image. */
    ble_ota_img_state_t (*running_state)(void *ctx);
    ble_ota_port_err_t (*mark_valid)(void *ctx);
    /* Mark the running image invalid and restart into the previous one. */
    void (*rollback)(void *ctx);

    /* --- protocol v2 --- */

    /* Fill *out with the device and its running app. */
    void (*device_info)(void *ctx, ble_ota_device_info_t *out);
    /* Monotonic milliseconds (wrapping is fine: the core only subtracts). */
    uint32_t (*now_ms)(void *ctx);
    /* Notify the connected client on OTA Command (no-op when not subscribed). */
    void (*notify_command)(void *ctx, const uint8_t *data, size_t len);
    /* Remember, across restarts, whether the image selected by set_boot_slot
     * waits for a client's CONFIRM; read back at boot by confirm_required.
     * The core calls it before every set_boot_slot (seed updates: false), so
     * a power loss between the two leaves the old image running with a flag
     * that only a pending-verify image would read. */
    ble_ota_port_err_t (*set_confirm_required)(void *ctx, bool required);
    bool (*confirm_required)(void *ctx);
    /* Fills out with bytes from a cryptographically secure generator (the
     * hardware RNG on the ESP32): the device's session nonces. */
    void (*random)(void *ctx, uint8_t *out, size_t len);
    /* Inflates in_len bytes of raw deflate (RFC 1951) into out, which has
     * room for *out_len bytes; true only when all in_len bytes are one
     * complete stream that fits, and then *out_len is the bytes it made.
     * The `history` bytes right before out are its dictionary:
     * back-references may reach into them. NULL: the platform cannot, and
     * OTA Info does not offer DEFLATE. */
    bool (*inflate)(void *ctx, const uint8_t *in, size_t in_len, uint8_t *out, size_t *out_len, size_t history);

    /* Reads len bytes at offset of the running slot (the partition the
     * running image booted from, from its start) into out: the image walk
     * at init (its size and SHA-256 for OTA Info) and the old image of a
     * delta patch. Never blocks longer than one flash read of len bytes
     * (at most 4 KB). BLE_OTA_PORT_ERR_TOO_LARGE when the range leaves the
     * slot, FLASH when the read fails. NULL: the running image is not
     * known, and OTA Info does not offer DELTA. */
    ble_ota_port_err_t (*running_read)(void *ctx, uint32_t offset, uint8_t *out, size_t len);

    /* Ends the client's link (a stranger's that failed or did not
     * authenticate in time); returns at once, the link's end comes later
     * as a disconnect (ble_ota_core_disconnected). */
    void (*disconnect)(void *ctx);

    /* --- the link (ble_ota_link.h); each may be NULL (nothing asked, nothing known) --- */

    /* Ask the central for a data length of tx_octets / tx_time_us and,
     * with prefer_2m, for the LE 2M PHY both ways where the chip has it
     * (the port knows which). Called once per link, soon after it is up.
     * Returns false only when the platform cannot issue it now and it is
     * worth asking again (the core does, at its next tick); a request the
     * platform refused for good is logged and returns true. */
    bool (*link_data_path)(void *ctx, uint16_t tx_octets, uint16_t tx_time_us, bool prefer_2m);
    /* Ask the central for these connection parameters (profile says why).
     * Returns as link_data_path does (false: a procedure is under way). */
    bool (*link_conn_params)(void *ctx, ble_ota_link_profile_t profile, const ble_ota_conn_params_t *params);
    /* Fill *out with the link as the device sees it now (0: not known). */
    void (*link_info)(void *ctx, ble_ota_link_info_t *out);

    /* --- the slot erased ahead (ble_ota_prepare.c); may be NULL --- */

    /* Erases the next step of the slot the next update goes to, from its
     * start up: one 64 KB block, or one 4 KB sector with short_step (a
     * client is connected and waits for answers). Never the running slot,
     * the boot slot, or a slot an open transfer holds. slot_begin of a v2
     * transfer (image_size > 0) takes the erased prefix over instead of
     * erasing it again; any slot_begin ends it (the slot gets data).
     * Returns true while more is left to erase; false when the slot is
     * erased, when nothing may be, or after a failed erase (logged; the
     * port tries again after the next slot_begin or restart). */
    bool (*slot_prepare)(void *ctx, bool short_step);

    /* One log line, without trailing newline. */
    void (*log)(void *ctx, ble_ota_log_level_t level, const char *msg);
} ble_ota_port_t;

#endif /* BLE_OTA_PORT_H */
