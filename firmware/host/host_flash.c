/*
 * Emulated flash: see host_flash.h.
 */
#include "host_flash.h"

#include <stdlib.h>
#include <string.h>

bool
host_flash_init(host_flash_t *flash, uint32_t slot_size)
{
    memset(flash, 0, sizeof(*flash));
    if (slot_size == 0 || slot_size > HOST_FLASH_MAX_SLOT) {
        return false;
    }
    flash->mem = malloc((size_t)slot_size * HOST_FLASH_SLOTS);
    if (flash->mem == NULL) {
        return false;
    }
    memset(flash->mem, 0xFF, (size_t)slot_size * HOST_FLASH_SLOTS);
    memset(flash->key_part, 0xFF, sizeof(flash->key_part));
    flash->slot_size = slot_size;
    flash->boot_slot = 0;
    return true;
}

void
host_flash_deinit(host_flash_t *flash)
{
    free(flash->mem);
    memset(flash, 0, sizeof(*flash));
}

void
host_flash_key_write(host_flash_t *flash, const uint8_t *data, size_t len)
{
    memset(flash->key_part, 0xFF, sizeof(flash->key_part));
    if (len > sizeof(flash->key_part)) {
        len = sizeof(flash->key_part);
    }
    memcpy(flash->key_part, data, len);
}

static bool
slot_ok(const host_flash_t *flash, int slot)
{
    return flash->mem != NULL && slot >= 0 && slot < HOST_FLASH_SLOTS;
}

typedef enum {
    POWER_ON,
    POWER_CUT_NOW, /* this operation is the one the cut interrupts */
    POWER_OFF,
} power_t;

/* Counts one operation against the power-loss countdown. */
static power_t
power(host_flash_t *flash)
{
    if (flash->power_lost) {
        return POWER_OFF;
    }
    if (flash->power_loss_countdown > 0 && --flash->power_loss_countdown == 0) {
        flash->power_lost = true;
        return POWER_CUT_NOW;
    }
    return POWER_ON;
}

host_flash_err_t
host_flash_erase_sector(host_flash_t *flash, int slot, uint32_t offset)
{
    if (!slot_ok(flash, slot) || offset >= flash->slot_size) {
        return HOST_FLASH_ERR_RANGE;
    }
    if (offset % HOST_FLASH_SECTOR_SIZE != 0) {
        return HOST_FLASH_ERR_ALIGN;
    }
    if (power(flash) != POWER_ON) {
        return HOST_FLASH_ERR_POWER_LOST;
    }
    uint32_t len = flash->slot_size - offset;
    if (len > HOST_FLASH_SECTOR_SIZE) {
        len = HOST_FLASH_SECTOR_SIZE;
    }
    memset(flash->mem + (size_t)slot * flash->slot_size + offset, 0xFF, len);
    flash->erases++;
    return HOST_FLASH_OK;
}

host_flash_err_t
host_flash_erase_block(host_flash_t *flash, int slot, uint32_t offset)
{
    if (!slot_ok(flash, slot) || offset >= flash->slot_size || flash->slot_size - offset < HOST_FLASH_BLOCK_SIZE) {
        return HOST_FLASH_ERR_RANGE;
    }
    if (offset % HOST_FLASH_BLOCK_SIZE != 0) {
        return HOST_FLASH_ERR_ALIGN;
    }
    if (power(flash) != POWER_ON) {
        return HOST_FLASH_ERR_POWER_LOST;
    }
    memset(flash->mem + (size_t)slot * flash->slot_size + offset, 0xFF, HOST_FLASH_BLOCK_SIZE);
    flash->block_erases++;
    return HOST_FLASH_OK;
}

host_flash_err_t
host_flash_write(host_flash_t *flash, int slot, uint32_t offset, const uint8_t *data, size_t len)
{
    if (!slot_ok(flash, slot) || offset > flash->slot_size || len > flash->slot_size - offset) {
        return HOST_FLASH_ERR_RANGE;
    }
    uint8_t *dst = flash->mem + (size_t)slot * flash->slot_size + offset;
    const power_t p = power(flash);
    if (p == POWER_CUT_NOW) {
        /* Torn: the cut comes halfway through programming (NOR flash only
         * clears bits). */
        for (size_t i = 0; i < len / 2; i++) {
            dst[i] &= data[i];
        }
    }
    if (p != POWER_ON) {
        return HOST_FLASH_ERR_POWER_LOST;
    }
    if (flash->fail_countdown > 0 && --flash->fail_countdown == 0) {
        flash->injected++;
        return HOST_FLASH_ERR_INJECTED;
    }
    for (size_t i = 0; i < len; i++) {
        if (dst[i] != 0xFF) {
            return HOST_FLASH_ERR_NOT_ERASED;
        }
    }
    memcpy(dst, data, len);
    flash->writes++;
    if (len > 0) {
        flash->pages_programmed +=
            (uint32_t)((offset + len - 1) / HOST_FLASH_PAGE_SIZE - offset / HOST_FLASH_PAGE_SIZE + 1);
    }
    return HOST_FLASH_OK;
}

const uint8_t *
host_flash_slot(const host_flash_t *flash, int slot)
{
    return slot_ok(flash, slot) ? flash->mem + (size_t)slot * flash->slot_size : NULL;
}

bool
host_flash_rot(host_flash_t *flash, int slot, uint32_t offset)
{
    if (!slot_ok(flash, slot) || offset >= flash->slot_size) {
        return false;
    }
    flash->mem[(size_t)slot * flash->slot_size + offset] ^= 0x01u;
    return true;
}

host_flash_err_t
host_flash_otadata_write(host_flash_t *flash)
{
    if (power(flash) != POWER_ON) {
        return HOST_FLASH_ERR_POWER_LOST;
    }
    if (flash->fail_countdown > 0 && --flash->fail_countdown == 0) {
        flash->injected++;
        return HOST_FLASH_ERR_INJECTED;
    }
    flash->otadata_writes++;
    return HOST_FLASH_OK;
}

void
host_flash_fail_write_after(host_flash_t *flash, uint32_t n)
{
    flash->fail_countdown = n;
}

void
host_flash_power_loss_after(host_flash_t *flash, uint32_t n)
{
    flash->power_loss_countdown = n;
    flash->power_lost = false;
}

void
host_flash_power_restored(host_flash_t *flash)
{
    /* A countdown still running (a restart, not a cut) goes on. */
    flash->power_lost = false;
}

const char *
host_flash_err_name(host_flash_err_t err)
{
    switch (err) {
    case HOST_FLASH_OK:
        return "ok";
    case HOST_FLASH_ERR_RANGE:
        return "out of range";
    case HOST_FLASH_ERR_ALIGN:
        return "unaligned erase";
    case HOST_FLASH_ERR_NOT_ERASED:
        return "write over programmed bytes";
    case HOST_FLASH_ERR_INJECTED:
        return "injected failure";
    case HOST_FLASH_ERR_POWER_LOST:
        return "power lost";
    default:
        return "error";
    }
}

const char *
host_slot_state_name(host_slot_state_t state)
{
    switch (state) {
    case HOST_SLOT_EMPTY:
        return "empty";
    case HOST_SLOT_NEW:
        return "new";
    case HOST_SLOT_PENDING_VERIFY:
        return "pending-verify";
    case HOST_SLOT_VALID:
        return "valid";
    case HOST_SLOT_INVALID:
        return "invalid";
    case HOST_SLOT_ABORTED:
        return "aborted";
    default:
        return "unknown";
    }
}

const char *
host_slot_name(int slot)
{
    switch (slot) {
    case 0:
        return "ota_0";
    case 1:
        return "ota_1";
    default:
        return "none";
    }
}

int
host_slot_from_name(const char *name)
{
    if (strcmp(name, "ota_0") == 0) {
        return 0;
    }
    if (strcmp(name, "ota_1") == 0) {
        return 1;
    }
    return -1;
}
