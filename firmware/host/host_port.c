/*
 * Host platform of the OTA core: see host_port.h.
 *
 * The port mirrors esp_ota_* as ESP-IDF 5 implements them with
 * CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE: begin refuses while the running
 * image awaits confirmation; in sequential mode (esp_ota_begin with
 * OTA_WITH_SEQUENTIAL_WRITES) each sector is erased as data reaches it, in
 * the pre-erased one (esp_ota_resume) the port erases ahead as the slot
 * plan says (ble_ota_slot.h, the same decisions the ESP32 port takes); the
 * first byte must be the image magic; end validates the image (with
 * CONFIG_SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT: its Secure Boot v2
 * signature too, against the running image's key); set_boot marks it new.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */

#include "host_port.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "host_image.h"
#include "host_signature.h"

static void dev_log(host_dev_t *dev, ble_ota_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
dev_log(host_dev_t *dev, ble_ota_log_level_t level, const char *fmt, ...)
{
    char line[160];
    va_list ap;

    if (dev->hooks.log == NULL) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    dev->hooks.log(dev->hooks.user, level, line);
}

static ble_ota_img_state_t port_running_state(void *ctx);

static void
dev_request_restart(host_dev_t *dev, uint32_t delay_ms)
{
    dev->restart_pending = true;
    dev->restart_delay_ms = delay_ms;
    if (dev->hooks.restart != NULL) {
        dev->hooks.restart(dev->hooks.user, delay_ms);
    }
}

/* --- ble_ota_port_t ------------------------------------------------------ */

/* Erases one planned step (a sector or a 64 KiB block) of the slot. */
static host_flash_err_t
dev_erase(host_dev_t *dev, int slot, const ble_ota_erase_t *e)
{
    return e->size == HOST_FLASH_BLOCK_SIZE ? host_flash_erase_block(&dev->flash, slot, e->offset)
                                            : host_flash_erase_sector(&dev->flash, slot, e->offset);
}

/* The slot is dropped: whatever it held is no image any more. */
static void
dev_close_slot(host_dev_t *dev)
{
    dev->flash.slot[dev->open_slot].state = HOST_SLOT_EMPTY;
    dev->flash.slot[dev->open_slot].image_len = 0;
    dev->open_slot = -1;
}

static ble_ota_port_err_t
port_slot_begin(void *ctx, uint32_t image_size)
{
    host_dev_t *dev = ctx;

    if (dev->running < 0) {
        return BLE_OTA_PORT_ERR_NO_SLOT;
    }
    if (dev->open_slot >= 0) {
        /* The core closes a transfer before it begins another; the ESP32
         * port drops a stale one all the same, and so does this one. */
        dev_log(dev, BLE_OTA_LOG_WARN, "slot_begin: %s still open, dropped", host_slot_name(dev->open_slot));
        ble_ota_slot_abort(&dev->plan);
        dev_close_slot(dev);
    }
    const int slot = 1 - dev->running;
    ble_ota_write_mode_t mode;
    const ble_ota_port_err_t err = ble_ota_slot_begin(&dev->plan, image_size, port_running_state(dev), &mode);
    if (err == BLE_OTA_PORT_ERR_STATE) {
        /* esp_ota_begin: ESP_ERR_OTA_ROLLBACK_INVALID_STATE */
        dev_log(dev, BLE_OTA_LOG_ERROR, "slot_begin: running image not confirmed yet");
        return err;
    }
    if (err != BLE_OTA_PORT_OK) {
        dev_log(dev, BLE_OTA_LOG_ERROR, "slot_begin: %lu bytes do not fit %s (%lu)", (unsigned long)image_size,
                host_slot_name(slot), (unsigned long)dev->flash.slot_size);
        return err;
    }
    /* Whatever the slot held (the previous firmware, usually) is gone. */
    dev->flash.slot[slot].state = HOST_SLOT_EMPTY;
    dev->flash.slot[slot].image_len = 0;
    if (dev->flash.boot_slot == slot) {
        dev->flash.boot_slot = dev->running;
    }
    dev->open_slot = slot;
    /* Either mode opens the slot without erasing anything (esp_ota_begin
     * with OTA_WITH_SEQUENTIAL_WRITES, esp_ota_resume), so BEGIN answers at
     * once whatever the size. */
    dev_log(dev, BLE_OTA_LOG_DEBUG, "slot_begin: writing %s (%s, %lu bytes erased ahead)", host_slot_name(slot),
            mode == BLE_OTA_WRITE_PRE_ERASED ? "erased ahead" : "sequential erase", (unsigned long)dev->plan.erased_to);
    return BLE_OTA_PORT_OK;
}

/*
 * esp_ota_write as ESP-IDF 5 implements it: the image magic checked on the
 * first byte; in sequential mode every sector whose start the data reaches
 * is erased first (esp_ota_begin with OTA_WITH_SEQUENTIAL_WRITES); then the
 * bytes are programmed.
 */
static ble_ota_port_err_t
dev_ota_write(host_dev_t *dev, int slot, const uint8_t *data, size_t len)
{
    const uint32_t at = dev->plan.written;

    if (at == 0 && len > 0 && data[0] != HOST_IMAGE_MAGIC) {
        /* ESP_ERR_OTA_VALIDATE_FAILED */
        dev_log(dev, BLE_OTA_LOG_ERROR, "OTA image has invalid magic byte (expected 0xE9, saw 0x%02x)", data[0]);
        return BLE_OTA_PORT_ERR_INVALID_IMAGE;
    }
    if (dev->plan.mode == BLE_OTA_WRITE_SEQUENTIAL) {
        uint32_t sector = (at + HOST_FLASH_SECTOR_SIZE - 1) / HOST_FLASH_SECTOR_SIZE * HOST_FLASH_SECTOR_SIZE;
        for (; sector < at + len; sector += HOST_FLASH_SECTOR_SIZE) {
            const host_flash_err_t err = host_flash_erase_sector(&dev->flash, slot, sector);
            if (err != HOST_FLASH_OK) {
                dev_log(dev, BLE_OTA_LOG_ERROR, "slot_write: erase at %lu failed (%s)", (unsigned long)sector,
                        host_flash_err_name(err));
                return BLE_OTA_PORT_ERR_FLASH;
            }
        }
    }
    const host_flash_err_t err = host_flash_write(&dev->flash, slot, at, data, len);
    if (err != HOST_FLASH_OK) {
        dev_log(dev, BLE_OTA_LOG_ERROR, "slot_write: flash write at %lu failed (%s)", (unsigned long)at,
                host_flash_err_name(err));
        return BLE_OTA_PORT_ERR_FLASH;
    }
    return BLE_OTA_PORT_OK;
}

static ble_ota_port_err_t
port_slot_write(void *ctx, const uint8_t *data, size_t len)
{
    host_dev_t *dev = ctx;
    const int slot = dev->open_slot;
    ble_ota_erase_t erase;

    const ble_ota_port_err_t check = slot < 0 ? BLE_OTA_PORT_ERR_STATE : ble_ota_slot_write_check(&dev->plan, len);
    if (check == BLE_OTA_PORT_ERR_STATE) {
        dev_log(dev, BLE_OTA_LOG_ERROR, "slot_write: no open slot");
        return check;
    }
    if (check != BLE_OTA_PORT_OK) {
        dev_log(dev, BLE_OTA_LOG_ERROR, "slot_write: %lu bytes at %lu exceed %s (%lu)", (unsigned long)len,
                (unsigned long)dev->plan.written, host_slot_name(slot), (unsigned long)dev->flash.slot_size);
        return check;
    }
    while (ble_ota_slot_erase_next(&dev->plan, len, &erase)) {
        const host_flash_err_t err = dev_erase(dev, slot, &erase);
        if (err != HOST_FLASH_OK) {
            dev_log(dev, BLE_OTA_LOG_ERROR, "slot_write: erase at %lu failed (%s)", (unsigned long)erase.offset,
                    host_flash_err_name(err));
            return BLE_OTA_PORT_ERR_FLASH;
        }
        ble_ota_slot_erased(&dev->plan, &erase);
    }
    const ble_ota_port_err_t err = dev_ota_write(dev, slot, data, len);
    if (err == BLE_OTA_PORT_OK) {
        ble_ota_slot_written(&dev->plan, len);
    }
    return err;
}

/* The slot erased ahead, one step per call (ble_ota_port.h, slot_prepare). */
static bool
port_slot_prepare(void *ctx, bool short_step)
{
    host_dev_t *dev = ctx;
    ble_ota_erase_t step;

    if (dev->running < 0 || !ble_ota_slot_prepare_next(&dev->plan, short_step, port_running_state(dev), &step)) {
        return false;
    }
    const int slot = 1 - dev->running;
    /* Once per pass, as the ESP32 port checks ESP-IDF's own view of the
     * slots: never the slot selected for the next boot (the core never
     * asks while it is). */
    if (step.first && dev->flash.boot_slot == slot) {
        dev_log(dev, BLE_OTA_LOG_WARN, "%s boots next: not erased", host_slot_name(slot));
        ble_ota_slot_prepare_stop(&dev->plan);
        return false;
    }
    const host_flash_err_t err = dev_erase(dev, slot, &step);
    if (err != HOST_FLASH_OK) {
        dev_log(dev, BLE_OTA_LOG_ERROR, "idle erase of %s at %lu failed (%s)", host_slot_name(slot),
                (unsigned long)step.offset, host_flash_err_name(err));
        ble_ota_slot_prepare_stop(&dev->plan);
        return false;
    }
    if (step.first) {
        dev_log(dev, BLE_OTA_LOG_DEBUG, "idle erase of %s started", host_slot_name(slot));
    }
    /* The image there is gone. A rolled-back one (INVALID, ABORTED) keeps
     * its state: OTA Info's update_slot tells of it until new data comes. */
    host_slot_info_t *info = &dev->flash.slot[slot];
    if (info->state == HOST_SLOT_NEW || info->state == HOST_SLOT_VALID) {
        info->state = HOST_SLOT_EMPTY;
        info->image_len = 0;
    }
    return ble_ota_slot_prepared(&dev->plan, &step);
}

static ble_ota_port_err_t
port_slot_end(void *ctx)
{
    host_dev_t *dev = ctx;
    const int slot = dev->open_slot;
    char why[120];

    if (slot < 0) {
        dev_log(dev, BLE_OTA_LOG_ERROR, "slot_end: no open slot");
        return BLE_OTA_PORT_ERR_STATE;
    }
    dev->open_slot = -1; /* closed whatever the result, as esp_ota_end */
    ble_ota_slot_end(&dev->plan, false);
    const uint32_t written = dev->plan.written;
    if (written == 0) {
        dev_log(dev, BLE_OTA_LOG_ERROR, "slot_end: nothing written");
        return BLE_OTA_PORT_ERR_INVALID_IMAGE;
    }
    /* Only the bytes written count: stale data after them must not
     * complete a truncated upload. */
    host_image_info_t info;
    const uint8_t *data = host_flash_slot(&dev->flash, slot);
    const host_image_err_t err = host_image_verify(data, written, dev->chip_id, &info, why, sizeof(why));
    /* As ESP-IDF validates it: the image and, where signatures are
     * required, its signature, which needs the image to parse (a checksum
     * or hash failure comes after its segments were walked). */
    const bool parses = err == HOST_IMAGE_OK || err == HOST_IMAGE_ERR_CHECKSUM || err == HOST_IMAGE_ERR_HASH;
    bool signature_ok = true;
    char sig_why[120] = "";
    if (dev->require_signature && parses) {
        if (!dev->running_signed) {
            /* ESP-IDF: "No signatures were found for the running app"; or
             * the block after it signs another image (the port refuses). */
            snprintf(sig_why, sizeof(sig_why), "the running app has no signature to trust");
            signature_ok = false;
        } else {
            signature_ok = host_sig_verify(data, written, info.image_len, dev->running_key_digest, sig_why,
                                           sizeof(sig_why)) == HOST_SIG_OK;
        }
    }
    if (err != HOST_IMAGE_OK || !signature_ok) {
        const ble_ota_port_err_t refusal = ble_ota_slot_end_refusal(dev->require_signature, parses, signature_ok);
        dev_log(dev, BLE_OTA_LOG_ERROR, "image in %s %s: %s", host_slot_name(slot),
                refusal == BLE_OTA_PORT_ERR_SIGNATURE ? "refused" : "invalid",
                refusal == BLE_OTA_PORT_ERR_SIGNATURE ? sig_why : why);
        return refusal;
    }
    uint32_t image_len = info.image_len;
    if (dev->require_signature) {
        /* As esp_image_verify counts it: through the signature sector. */
        image_len = ((info.image_len + HOST_SIG_SECTOR_LEN - 1) / HOST_SIG_SECTOR_LEN + 1) * HOST_SIG_SECTOR_LEN;
    }
    dev->flash.slot[slot].state = HOST_SLOT_NEW;
    dev->flash.slot[slot].image_len = image_len;
    ble_ota_slot_end(&dev->plan, true);
    dev_log(dev, BLE_OTA_LOG_INFO, "image in %s valid%s: %lu bytes (%lu written)", host_slot_name(slot),
            dev->require_signature ? " and signed" : "", (unsigned long)image_len, (unsigned long)written);
    return BLE_OTA_PORT_OK;
}

static void
port_slot_abort(void *ctx)
{
    host_dev_t *dev = ctx;

    if (dev->open_slot < 0) {
        return;
    }
    dev_log(dev, BLE_OTA_LOG_DEBUG, "slot_abort: %s dropped at %lu bytes", host_slot_name(dev->open_slot),
            (unsigned long)dev->plan.written);
    ble_ota_slot_abort(&dev->plan);
    dev_close_slot(dev);
}

static ble_ota_port_err_t
port_set_boot_slot(void *ctx)
{
    host_dev_t *dev = ctx;
    const int slot = dev->running < 0 ? -1 : 1 - dev->running;

    if (slot < 0 || !dev->plan.complete || dev->flash.slot[slot].state != HOST_SLOT_NEW) {
        dev_log(dev, BLE_OTA_LOG_ERROR, "set_boot_slot: no validated image");
        return BLE_OTA_PORT_ERR_STATE;
    }
    const host_flash_err_t err = host_flash_otadata_write(&dev->flash);
    if (err != HOST_FLASH_OK) {
        dev_log(dev, BLE_OTA_LOG_ERROR, "set_boot_slot: OTA data write failed (%s)", host_flash_err_name(err));
        return BLE_OTA_PORT_ERR_FLASH;
    }
    dev->flash.boot_slot = slot;
    dev_log(dev, BLE_OTA_LOG_INFO, "next boot: %s", host_slot_name(slot));
    return BLE_OTA_PORT_OK;
}

static void
port_restart(void *ctx, uint32_t delay_ms)
{
    dev_request_restart(ctx, delay_ms);
}

static void
port_notify_control(void *ctx, uint8_t value)
{
    host_dev_t *dev = ctx;

    if (dev->hooks.notify != NULL) {
        dev->hooks.notify(dev->hooks.user, value);
    }
}

static ble_ota_img_state_t
port_running_state(void *ctx)
{
    const host_dev_t *dev = ctx;

    if (dev->running < 0) {
        return BLE_OTA_IMG_UNKNOWN;
    }
    switch (dev->flash.slot[dev->running].state) {
    case HOST_SLOT_PENDING_VERIFY:
        return BLE_OTA_IMG_PENDING_VERIFY;
    case HOST_SLOT_VALID:
        return BLE_OTA_IMG_VALID;
    default:
        return BLE_OTA_IMG_UNKNOWN;
    }
}

static ble_ota_port_err_t
port_mark_valid(void *ctx)
{
    host_dev_t *dev = ctx;

    if (dev->running < 0) {
        return BLE_OTA_PORT_ERR_STATE;
    }
    host_slot_info_t *info = &dev->flash.slot[dev->running];
    if (info->state != HOST_SLOT_PENDING_VERIFY && info->state != HOST_SLOT_VALID) {
        return BLE_OTA_PORT_ERR_STATE;
    }
    if (info->state == HOST_SLOT_PENDING_VERIFY) {
        const host_flash_err_t err = host_flash_otadata_write(&dev->flash);
        if (err != HOST_FLASH_OK) {
            dev_log(dev, BLE_OTA_LOG_ERROR, "mark_valid: OTA data write failed (%s)", host_flash_err_name(err));
            return BLE_OTA_PORT_ERR_FLASH;
        }
    }
    info->state = HOST_SLOT_VALID;
    return BLE_OTA_PORT_OK;
}

static void
port_rollback(void *ctx)
{
    host_dev_t *dev = ctx;

    if (dev->running < 0) {
        return;
    }
    const int other = 1 - dev->running;
    if (dev->flash.slot[other].state != HOST_SLOT_VALID) {
        /* esp_ota_mark_app_invalid_rollback_and_reboot returns
         * ESP_ERR_OTA_ROLLBACK_FAILED and keeps running. */
        dev_log(dev, BLE_OTA_LOG_ERROR, "rollback failed: no valid image in %s", host_slot_name(other));
        return;
    }
    const host_flash_err_t err = host_flash_otadata_write(&dev->flash);
    if (err != HOST_FLASH_OK) {
        /* The image stays pending verify: the bootloader gives up on it at
         * the next boot, and that comes now. */
        dev_log(dev, BLE_OTA_LOG_ERROR, "rollback: OTA data write failed (%s), restarting", host_flash_err_name(err));
        dev_request_restart(dev, 0);
        return;
    }
    dev->flash.slot[dev->running].state = HOST_SLOT_INVALID;
    dev->flash.boot_slot = other;
    dev_log(dev, BLE_OTA_LOG_WARN, "rollback: %s invalid, next boot %s", host_slot_name(dev->running),
            host_slot_name(other));
    dev_request_restart(dev, 0);
}

static void
port_device_info(void *ctx, ble_ota_device_info_t *out)
{
    const host_dev_t *dev = ctx;
    host_app_desc_t desc;

    memset(out, 0, sizeof(*out));
    out->chip_id = dev->chip_id;
    out->chip_revision = dev->chip_revision;
    memcpy(out->device_id, dev->device_id, sizeof(out->device_id));
    out->signed_updates = dev->require_signature;
    out->no_trusted_key = dev->require_signature && !dev->running_signed;
    if (dev->require_signature && dev->running_signed) {
        memcpy(out->signing_key_digest, dev->running_key_digest, sizeof(out->signing_key_digest));
    }
    if (dev->running < 0) {
        return; /* nothing runs: no slot to update either */
    }
    /* Both slots have the same size; the next update goes to the other. */
    out->slot_size = dev->flash.slot_size;
    const host_slot_state_t other = dev->flash.slot[1 - dev->running].state;
    out->update_slot_rolled_back = other == HOST_SLOT_INVALID || other == HOST_SLOT_ABORTED;
    host_image_read_app_desc(host_flash_slot(&dev->flash, dev->running), dev->flash.slot_size, &desc);
    out->secure_version = desc.secure_version;
    /* The port's fields are one byte shorter than the descriptor's
     * NUL-terminated copies; snprintf cuts a full-length one cleanly. */
    snprintf(out->version, sizeof(out->version), "%.31s", desc.version);
    snprintf(out->project_name, sizeof(out->project_name), "%.31s", desc.project_name);
    snprintf(out->idf_version, sizeof(out->idf_version), "%.31s", desc.idf_version);
    snprintf(out->date, sizeof(out->date), "%.15s", desc.date);
    snprintf(out->time, sizeof(out->time), "%.15s", desc.time);
    memcpy(out->app_elf_sha256, desc.app_elf_sha256, sizeof(out->app_elf_sha256));
}

static uint32_t
port_now_ms(void *ctx)
{
    host_dev_t *dev = ctx;
    struct timespec ts;

    if (dev->hooks.now_ms != NULL) {
        return dev->hooks.now_ms(dev->hooks.user);
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    /* Truncated to 32 bits on purpose: the core only subtracts. */
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

static void
port_notify_command(void *ctx, const uint8_t *data, size_t len)
{
    host_dev_t *dev = ctx;

    if (dev->hooks.notify_command != NULL) {
        dev->hooks.notify_command(dev->hooks.user, data, len);
    }
}

static ble_ota_port_err_t
port_set_confirm_required(void *ctx, bool required)
{
    host_dev_t *dev = ctx;

    if (dev->flash.confirm_required != required) {
        const host_flash_err_t err = host_flash_otadata_write(&dev->flash);
        if (err != HOST_FLASH_OK) {
            dev_log(dev, BLE_OTA_LOG_ERROR, "set_confirm_required: write failed (%s)", host_flash_err_name(err));
            return BLE_OTA_PORT_ERR_FLASH;
        }
    }
    dev->flash.confirm_required = required;
    return BLE_OTA_PORT_OK;
}

static bool
port_confirm_required(void *ctx)
{
    const host_dev_t *dev = ctx;

    return dev->flash.confirm_required;
}

/* zlib's raw inflate, as the ESP32 port uses the ROM's tinfl: one whole
 * chunk in, at most *out_len bytes out, the `history` bytes before out as
 * its dictionary. The state is allocated once. */
static bool
port_inflate(void *ctx, const uint8_t *in, size_t in_len, uint8_t *out, size_t *out_len, size_t history)
{
    host_dev_t *dev = ctx;
    z_stream *z = &dev->inflater;

    if (!dev->inflater_ready) {
        memset(z, 0, sizeof(*z));
        if (inflateInit2(z, -MAX_WBITS) != Z_OK) {
            dev_log(dev, BLE_OTA_LOG_ERROR, "inflateInit2 failed");
            return false;
        }
        dev->inflater_ready = true;
    } else if (inflateReset(z) != Z_OK) {
        return false;
    }
    if (history > 0 && inflateSetDictionary(z, out - history, (uInt)history) != Z_OK) {
        return false;
    }
    z->next_in = (Bytef *)(uintptr_t)in; /* zlib's API is not const-correct; it only reads */
    z->avail_in = (uInt)in_len;
    z->next_out = out;
    z->avail_out = (uInt)*out_len;
    const int rc = inflate(z, Z_FINISH);
    if (rc != Z_STREAM_END || z->avail_in != 0) {
        return false;
    }
    *out_len -= z->avail_out;
    return true;
}

/* The running slot as esp_partition_read reads it: what the bootloader
 * booted, from the slot's start. */
static ble_ota_port_err_t
port_running_read(void *ctx, uint32_t offset, uint8_t *out, size_t len)
{
    host_dev_t *dev = ctx;

    if (dev->running < 0 || offset > dev->flash.slot_size || len > dev->flash.slot_size - offset) {
        return BLE_OTA_PORT_ERR_TOO_LARGE;
    }
    if (dev->running_read_fail_after > 0 && --dev->running_read_fail_after == 0) {
        dev_log(dev, BLE_OTA_LOG_ERROR, "running_read: %lu bytes at %lu failed (injected)", (unsigned long)len,
                (unsigned long)offset);
        return BLE_OTA_PORT_ERR_FLASH;
    }
    dev->running_reads++;
    memcpy(out, host_flash_slot(&dev->flash, dev->running) + offset, len);
    return BLE_OTA_PORT_OK;
}

static void
port_random(void *ctx, uint8_t *out, size_t len)
{
    host_dev_t *dev = ctx;
    size_t got = 0;

    if (dev->hooks.random != NULL) {
        dev->hooks.random(dev->hooks.user, out, len);
        return;
    }
    FILE *f = fopen("/dev/urandom", "rb");
    if (f != NULL) {
        got = fread(out, 1, len, f);
        fclose(f);
    }
    if (got != len) {
        /* No challenge may be predictable: better none (all zeros makes
         * every answer fail, as the log says) than a weak one. */
        memset(out, 0, len);
        dev_log(dev, BLE_OTA_LOG_ERROR, "no random bytes from /dev/urandom");
    }
}

static void
port_disconnect(void *ctx)
{
    host_dev_t *dev = ctx;

    if (dev->hooks.disconnect != NULL) {
        dev->hooks.disconnect(dev->hooks.user);
    }
}

static bool
port_link_data_path(void *ctx, uint16_t tx_octets, uint16_t tx_time_us, bool prefer_2m)
{
    host_dev_t *dev = ctx;

    dev->data_path_asks++;
    dev->asked_tx_octets = tx_octets;
    dev->asked_tx_time_us = tx_time_us;
    dev->asked_2m = prefer_2m;
    if (dev->hooks.link_data_path != NULL) {
        return dev->hooks.link_data_path(dev->hooks.user, tx_octets, tx_time_us, prefer_2m);
    }
    return true;
}

static bool
port_link_conn_params(void *ctx, ble_ota_link_profile_t profile, const ble_ota_conn_params_t *params)
{
    host_dev_t *dev = ctx;

    dev->conn_param_asks++;
    dev->asked_profile = profile;
    dev->asked_params = *params;
    if (dev->hooks.link_conn_params != NULL) {
        return dev->hooks.link_conn_params(dev->hooks.user, profile, params);
    }
    return true;
}

static void
port_link_info(void *ctx, ble_ota_link_info_t *out)
{
    const host_dev_t *dev = ctx;

    *out = dev->link;
}

static void
port_log(void *ctx, ble_ota_log_level_t level, const char *msg)
{
    host_dev_t *dev = ctx;

    if (dev->hooks.log != NULL) {
        dev->hooks.log(dev->hooks.user, level, msg);
    }
}

/* --- device --------------------------------------------------------------- */

static void
dev_reset_ram(host_dev_t *dev)
{
    dev->running = -1;
    dev->open_slot = -1;
    /* What the slot plan knows (erased prefix, an open transfer) is RAM:
     * a restart forgets it, as on the ESP32. */
    ble_ota_slot_init(&dev->plan, dev->flash.slot_size, dev->pre_erased_writes);
    dev->restart_pending = false;
    dev->restart_delay_ms = 0;
    dev->running_signed = false;
    memset(dev->running_key_digest, 0, sizeof(dev->running_key_digest));
}

bool
host_dev_init(host_dev_t *dev, uint32_t slot_size, const host_dev_hooks_t *hooks)
{
    memset(dev, 0, sizeof(*dev));
    if (!host_flash_init(&dev->flash, slot_size)) {
        return false;
    }
    if (hooks != NULL) {
        dev->hooks = *hooks;
    }
    dev->chip_id = HOST_IMAGE_CHIP_ESP32;
    dev->chip_revision = 300;
    dev->pre_erased_writes = true;
    /* An Espressif base MAC, as the virtual ESP32's default address. */
    const uint8_t id[BLE_OTA_DEVICE_ID_LEN] = { 0x24, 0x0a, 0xc4, 0x00, 0x00, 0x01 };
    memcpy(dev->device_id, id, sizeof(id));
    dev->port = (ble_ota_port_t){
        .ctx = dev,
        .slot_begin = port_slot_begin,
        .slot_write = port_slot_write,
        .slot_end = port_slot_end,
        .slot_abort = port_slot_abort,
        .set_boot_slot = port_set_boot_slot,
        .restart = port_restart,
        .notify_control = port_notify_control,
        .running_state = port_running_state,
        .mark_valid = port_mark_valid,
        .rollback = port_rollback,
        .device_info = port_device_info,
        .now_ms = port_now_ms,
        .notify_command = port_notify_command,
        .set_confirm_required = port_set_confirm_required,
        .confirm_required = port_confirm_required,
        .random = port_random,
        .inflate = port_inflate,
        .running_read = port_running_read,
        .disconnect = port_disconnect,
        .link_data_path = port_link_data_path,
        .link_conn_params = port_link_conn_params,
        .link_info = port_link_info,
        .slot_prepare = port_slot_prepare,
        .log = port_log,
    };
    dev_reset_ram(dev);
    return true;
}

void
host_dev_deinit(host_dev_t *dev)
{
    if (dev->inflater_ready) {
        inflateEnd(&dev->inflater);
        dev->inflater_ready = false;
    }
    host_flash_deinit(&dev->flash);
}

bool
host_dev_install(host_dev_t *dev, int slot, const uint8_t *image, size_t len, char *why, size_t why_len)
{
    if (slot < 0 || slot >= HOST_FLASH_SLOTS) {
        snprintf(why, why_len, "no slot %d", slot);
        return false;
    }
    if (len > dev->flash.slot_size) {
        snprintf(why, why_len, "image of %zu bytes does not fit the slot (%lu bytes)", len,
                 (unsigned long)dev->flash.slot_size);
        return false;
    }
    host_image_info_t info;
    if (host_image_verify(image, len, dev->chip_id, &info, why, why_len) != HOST_IMAGE_OK) {
        return false;
    }
    for (uint32_t off = 0; off < len; off += HOST_FLASH_SECTOR_SIZE) {
        host_flash_erase_sector(&dev->flash, slot, off);
    }
    const host_flash_err_t err = host_flash_write(&dev->flash, slot, 0, image, len);
    if (err != HOST_FLASH_OK) {
        snprintf(why, why_len, "flash write failed (%s)", host_flash_err_name(err));
        return false;
    }
    dev->flash.slot[slot].state = HOST_SLOT_VALID;
    dev->flash.slot[slot].image_len = info.image_len;
    dev->flash.boot_slot = slot;
    return true;
}

/* The bootloader's image check before it jumps to a slot; *image_len
 * gets the image's length without a signature sector. */
static bool
dev_slot_bootable(host_dev_t *dev, int slot, uint32_t *image_len)
{
    char why[120];
    host_image_info_t image;
    const host_slot_info_t *info = &dev->flash.slot[slot];

    switch (info->state) {
    case HOST_SLOT_NEW:
    case HOST_SLOT_PENDING_VERIFY:
    case HOST_SLOT_VALID:
        break;
    default:
        return false;
    }
    if (host_image_verify(host_flash_slot(&dev->flash, slot), dev->flash.slot_size, dev->chip_id, &image, why,
                          sizeof(why)) != HOST_IMAGE_OK) {
        dev_log(dev, BLE_OTA_LOG_ERROR, "bootloader: %s: %s", host_slot_name(slot), why);
        return false;
    }
    *image_len = image.image_len;
    return true;
}

int
host_dev_boot(host_dev_t *dev)
{
    dev_reset_ram(dev);

    const int order[HOST_FLASH_SLOTS] = { dev->flash.boot_slot, 1 - dev->flash.boot_slot };
    for (int i = 0; i < HOST_FLASH_SLOTS; i++) {
        const int slot = order[i];
        host_slot_info_t *info = &dev->flash.slot[slot];

        if (info->state == HOST_SLOT_PENDING_VERIFY) {
            /* Booted before and never confirmed: the app crashed or hung
             * before its self-test passed. */
            info->state = HOST_SLOT_ABORTED;
            dev_log(dev, BLE_OTA_LOG_WARN, "bootloader: %s not confirmed, marked aborted", host_slot_name(slot));
            continue;
        }
        uint32_t image_len = 0;
        if (!dev_slot_bootable(dev, slot, &image_len)) {
            continue;
        }
        if (info->state == HOST_SLOT_NEW) {
            info->state = HOST_SLOT_PENDING_VERIFY;
        }
        if (slot != dev->flash.boot_slot) {
            dev_log(dev, BLE_OTA_LOG_WARN, "bootloader: falling back to %s", host_slot_name(slot));
            dev->flash.boot_slot = slot;
        }
        dev->running = slot;
        /* What the app trusts for the next update: ESP-IDF reads it from the
         * block after the running image on its magic and CRC alone, which
         * may be one an older image left there; the firmware's port takes
         * it only if it signs the running image (ota_port_esp.c). */
        const uint8_t *running = host_flash_slot(&dev->flash, slot);
        const bool block = host_sig_image_key_digest(running, dev->flash.slot_size, image_len, dev->running_key_digest);
        dev->running_signed = block && host_sig_verify(running, dev->flash.slot_size, image_len,
                                                       dev->running_key_digest, NULL, 0) == HOST_SIG_OK;
        if (!dev->running_signed) {
            memset(dev->running_key_digest, 0, sizeof(dev->running_key_digest));
        }
        dev_log(dev, BLE_OTA_LOG_INFO, "bootloader: booting %s (%s%s)", host_slot_name(slot),
                host_slot_state_name(info->state),
                dev->running_signed ? ", signed"
                : block             ? ", a signature block that signs another image"
                                    : "");
        return slot;
    }
    dev_log(dev, BLE_OTA_LOG_ERROR, "bootloader: no bootable app");
    return -1;
}

host_slot_state_t
host_dev_slot_state(const host_dev_t *dev, int slot)
{
    return slot >= 0 && slot < HOST_FLASH_SLOTS ? dev->flash.slot[slot].state : HOST_SLOT_EMPTY;
}

ble_ota_key_status_t
host_dev_read_key(const host_dev_t *dev, uint8_t key[BLE_OTA_AUTH_KEY_LEN])
{
    return ble_ota_key_record_parse(dev->flash.key_part, sizeof(dev->flash.key_part), dev->device_id, key);
}

void
host_dev_running_version(const host_dev_t *dev, char version[33])
{
    char project[33];

    version[0] = '\0';
    if (dev->running >= 0) {
        host_image_app_desc(host_flash_slot(&dev->flash, dev->running), dev->flash.slot_size, version, project);
    }
}
