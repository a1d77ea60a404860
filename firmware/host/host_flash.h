/*
 * Emulated flash of the virtual ESP32: two OTA slots (ota_0, ota_1), the
 * OTA data the bootloader reads (boot slot, per-slot image state and
 * validated length), with the firmware's confirm-required flag, and the key
 * partition (ble_ota_key: the device key, which no firmware image carries).
 *
 * Stricter than NOR flash, like MCUboot's simflash: erases are whole 4 KiB
 * sectors, writes stay inside one slot and only program erased (0xFF)
 * bytes, so a port that writes twice to the same place or forgets to erase
 * fails loudly instead of corrupting quietly.
 */
#ifndef HOST_FLASH_H
#define HOST_FLASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HOST_FLASH_SECTOR_SIZE 4096u
/* NOR flash programs at most one 256-byte page per operation. */
#define HOST_FLASH_PAGE_SIZE 256u
/* A block erase clears 64 KiB in one operation (faster per byte than 16 sector erases). */
#define HOST_FLASH_BLOCK_SIZE    65536u
#define HOST_FLASH_SLOTS         2
#define HOST_FLASH_MAX_SLOT      0x1000000u /* 16 MB, the largest app partition */
#define HOST_FLASH_KEY_PART_SIZE 4096u      /* the key partition: one sector */

typedef enum {
    HOST_SLOT_EMPTY = 0,      /* nothing bootable (erased, or an upload in progress) */
    HOST_SLOT_NEW,            /* validated and selected, never booted */
    HOST_SLOT_PENDING_VERIFY, /* booted once, not confirmed yet */
    HOST_SLOT_VALID,          /* confirmed */
    HOST_SLOT_INVALID,        /* rolled back by the app */
    HOST_SLOT_ABORTED,        /* booted twice unconfirmed: the bootloader gave up */
} host_slot_state_t;

typedef enum {
    HOST_FLASH_OK = 0,
    HOST_FLASH_ERR_RANGE,      /* outside the slot */
    HOST_FLASH_ERR_ALIGN,      /* erase not on a sector */
    HOST_FLASH_ERR_NOT_ERASED, /* write over programmed bytes */
    HOST_FLASH_ERR_INJECTED,   /* failure injected by a test */
    HOST_FLASH_ERR_POWER_LOST, /* the power was cut (injected): nothing is written until power-on */
} host_flash_err_t;

typedef struct {
    host_slot_state_t state;
    uint32_t image_len; /* length of the validated image, 0 when none */
} host_slot_info_t;

typedef struct {
    uint8_t *mem; /* both slots, slot_size bytes each */
    uint32_t slot_size;
    /* Written only over USB (host_flash_key_write), as esptool writes the
     * partition image; the OTA core never writes it. */
    uint8_t key_part[HOST_FLASH_KEY_PART_SIZE];
    /* OTA data */
    int boot_slot;
    host_slot_info_t slot[HOST_FLASH_SLOTS];
    /* The selected image waits for a client's CONFIRM (protocol v2). The
     * ESP32 keeps it in flash too (NVS), so restarts and power cuts keep it. */
    bool confirm_required;
    /* Fault injection: the write (data or OTA data) that brings this to 0
     * fails (0 = off). */
    uint32_t fail_countdown;
    /* Fault injection: the operation (erase, write, OTA data update) that
     * brings this to 0 is cut by a power loss (0 = off): a write programs
     * only the first half of its bytes, an erase or OTA data update does not
     * happen, and every operation after it fails until
     * host_flash_power_restored(). */
    uint32_t power_loss_countdown;
    bool power_lost;
    uint32_t writes;
    uint32_t erases;           /* sector erases */
    uint32_t block_erases;     /* 64 KiB block erases */
    uint32_t pages_programmed; /* page program operations a real flash would run for the writes */
    uint32_t otadata_writes;
    uint32_t injected; /* writes failed by fail_countdown */
} host_flash_t;

/* Allocates the slots (erased) once; false when out of memory or the size
 * is not in 1..HOST_FLASH_MAX_SLOT. */
bool host_flash_init(host_flash_t *flash, uint32_t slot_size);
void host_flash_deinit(host_flash_t *flash);

/* Erases the sector at offset (a multiple of the sector size); the last
 * sector of a slot whose size is not a multiple is shorter. */
host_flash_err_t host_flash_erase_sector(host_flash_t *flash, int slot, uint32_t offset);
/* Erases the 64 KiB block at offset (block-aligned, inside the slot) in one operation. */
host_flash_err_t host_flash_erase_block(host_flash_t *flash, int slot, uint32_t offset);
/* Programs len erased bytes at offset. */
host_flash_err_t host_flash_write(host_flash_t *flash, int slot, uint32_t offset, const uint8_t *data, size_t len);
/* Raw contents of a slot (slot_size bytes). */
const uint8_t *host_flash_slot(const host_flash_t *flash, int slot);
/* Flips the lowest bit of the byte at offset, outside any flash operation:
 * a cell that lost its charge (bit rot), which no firmware write caused.
 * False when the slot or offset is out of range. */
bool host_flash_rot(host_flash_t *flash, int slot, uint32_t offset);

/* Before the firmware changes the OTA data (boot slot, image state,
 * confirm flag), which the ESP32 keeps in flash: HOST_FLASH_OK when the
 * change may happen, else the injected failure or the power loss. The
 * bootloader's own updates at boot do not go through this. */
host_flash_err_t host_flash_otadata_write(host_flash_t *flash);

/* The next n-th write (data or OTA data) fails with HOST_FLASH_ERR_INJECTED
 * (1 = the next; 0: none). */
void host_flash_fail_write_after(host_flash_t *flash, uint32_t n);

/* The power is cut during the n-th next flash operation (1 = the next; 0:
 * none); see power_loss_countdown. */
void host_flash_power_loss_after(host_flash_t *flash, uint32_t n);

/* Power-on after a cut: operations work again (a countdown that has not
 * run out yet, at a restart, goes on). */
void host_flash_power_restored(host_flash_t *flash);

/* Writes the key partition as esptool would over USB: erased first, then
 * len bytes (at most HOST_FLASH_KEY_PART_SIZE) from its start. */
void host_flash_key_write(host_flash_t *flash, const uint8_t *data, size_t len);

const char *host_flash_err_name(host_flash_err_t err);
const char *host_slot_state_name(host_slot_state_t state);
/* "ota_0", "ota_1", or "none". */
const char *host_slot_name(int slot);
/* Slot number from "ota_0"/"ota_1", or -1. */
int host_slot_from_name(const char *name);

#endif /* HOST_FLASH_H */
