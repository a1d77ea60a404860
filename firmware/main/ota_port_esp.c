/*
 * ble_ota_port_t for ESP-IDF: esp_ota_* for the slot (its validation checks
 * the signature where signed apps are on), esp_timer for the delayed
 * restart and the clock, ota_gap for notifications and ending a stranger's
 * link, NVS for the confirm flag, esp_log for the core's log. What to erase
 * when and how to open the slot is the slot plan's (ble_ota_slot.h, run by
 * the host tests and the virtual ESP32 too); this file only carries it out.
 *
 * Every call comes from the core, i.e. from whichever task holds the core
 * lock (ota_task.c): the OTA task for protocol v2, the NimBLE host task for
 * the seed protocol, app_main at boot. The lock serialises them, so the
 * state below needs no lock of its own.
 */
#include "ota_port_esp.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "esp_app_desc.h"
#include "esp_app_format.h"
#include "esp_chip_info.h"
#include "esp_err.h"
#include "esp_idf_version.h"
#include "esp_image_format.h"
#include "esp_log.h"
#include "esp_mac.h"
#include "esp_ota_ops.h"
#include "esp_partition.h"
#include "esp_random.h"
#include "esp_secure_boot.h"
#include "esp_system.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "miniz.h" /* esp_rom: the ROM's tinfl */
#include "nvs.h"
#include "sdkconfig.h"

#include "ble_ota_slot.h"
#include "ota_gap.h"
#include "ota_task.h"

static const char *TAG = "ota_port";
static const char *CORE_TAG = "ota_core";

/* NVS namespace and key of the "a client will confirm" flag (u8, 0 or 1). */
#define OTA_PORT_NVS_NAMESPACE   "ble_ota"
#define OTA_PORT_NVS_CONFIRM_KEY "confirm_req"

/*
 * ESP image chip id of this build, as esp_app_format.h's esp_chip_id_t
 * spells it. CONFIG_IDF_FIRMWARE_CHIP_ID is what the build writes into our
 * own image header and what esp_ota_end/the bootloader compare an image's
 * chip_id with (bootloader_common_check_chip_validity), so it is the value
 * a client must match; the per-target list below only cross-checks it.
 */
#if CONFIG_IDF_TARGET_ESP32
#define OTA_PORT_CHIP_ID ESP_CHIP_ID_ESP32
#elif CONFIG_IDF_TARGET_ESP32S2
#define OTA_PORT_CHIP_ID ESP_CHIP_ID_ESP32S2
#elif CONFIG_IDF_TARGET_ESP32C3
#define OTA_PORT_CHIP_ID ESP_CHIP_ID_ESP32C3
#elif CONFIG_IDF_TARGET_ESP32S3
#define OTA_PORT_CHIP_ID ESP_CHIP_ID_ESP32S3
#elif CONFIG_IDF_TARGET_ESP32C2
#define OTA_PORT_CHIP_ID ESP_CHIP_ID_ESP32C2
#elif CONFIG_IDF_TARGET_ESP32C6
#define OTA_PORT_CHIP_ID ESP_CHIP_ID_ESP32C6
#elif CONFIG_IDF_TARGET_ESP32H2
#define OTA_PORT_CHIP_ID ESP_CHIP_ID_ESP32H2
#elif CONFIG_IDF_TARGET_ESP32P4
#define OTA_PORT_CHIP_ID ESP_CHIP_ID_ESP32P4
#else
/* A newer target (C5, C61, ...): its Kconfig value is right by definition. */
#define OTA_PORT_CHIP_ID CONFIG_IDF_FIRMWARE_CHIP_ID
#endif
_Static_assert(OTA_PORT_CHIP_ID == CONFIG_IDF_FIRMWARE_CHIP_ID,
               "esp_chip_id_t and CONFIG_IDF_FIRMWARE_CHIP_ID disagree");

/*
 * How a transfer opens the slot (the slot plan, ble_ota_slot.h, decides
 * which): only documented esp_ota_* calls, every byte through esp_ota_write.
 *
 * esp_ota_resume() (ESP-IDF v5.3.3+, v5.4.2+, v5.5+) opens a slot without
 * erasing it ("Unlike esp_ota_begin(), this function does not erase the
 * partition", esp_ota_ops.h); with an erase size other than
 * OTA_WITH_SEQUENTIAL_WRITES its esp_ota_write erases nothing either, so
 * the port erases ahead of the data (esp_partition_erase_range) and a slot
 * erased while idle is written with page programs only. Without it the one
 * documented way to open a slot that erases nothing up front is
 * esp_ota_begin's sequential mode, whose esp_ota_write erases each sector
 * itself: there the plan chooses that mode for every transfer, and erases
 * nothing while idle (it would be erased again).
 */
#if ESP_IDF_VERSION >= ESP_IDF_VERSION_VAL(5, 5, 0) || \
    (ESP_IDF_VERSION >= ESP_IDF_VERSION_VAL(5, 4, 2) && ESP_IDF_VERSION < ESP_IDF_VERSION_VAL(5, 5, 0)) || \
    (ESP_IDF_VERSION >= ESP_IDF_VERSION_VAL(5, 3, 3) && ESP_IDF_VERSION < ESP_IDF_VERSION_VAL(5, 4, 0))
#define OTA_PORT_HAVE_OTA_RESUME 1
#else
#define OTA_PORT_HAVE_OTA_RESUME 0
#endif

/* From v5.5 esp_ota_begin invalidates the otadata entry of the image it is
 * about to overwrite (esp_ota_invalidate_inactive_ota_data_slot), so no
 * rollback can select a slot half rewritten; esp_ota_resume does not. The
 * port does it itself where it opens a slot with esp_ota_resume. */
#define OTA_PORT_HAVE_INVALIDATE_INACTIVE (ESP_IDF_VERSION >= ESP_IDF_VERSION_VAL(5, 5, 0))

typedef struct {
    /* The slot updates go to: "the other one", fixed while this image
     * runs, looked up once (the lookup allocates). NULL when none. */
    const esp_partition_t *next;
    /* Every decision about it: write mode, what to erase when, whether it
     * holds a validated image (ble_ota_slot.h). RAM only, as the erased
     * prefix must be (a restart forgets it and the idle erase starts over). */
    ble_ota_slot_t plan;
    esp_ota_handle_t handle; /* valid while plan.open */
    esp_timer_handle_t restart_timer;
    /* Filled once at init: the core reads them for every OTA Info value,
     * and the ESP-IDF calls behind them look up partitions (which
     * allocates) and read otadata from flash. Nothing changes them while
     * this image runs, except mark_valid (updates running). */
    ble_ota_device_info_t info;
    ble_ota_img_state_t running;
    /* The partition this image runs from (esp_ota_get_running_partition,
     * looked up once): read for the running image's size and SHA-256 at
     * init and as a delta patch's old image. NULL when not found. */
    const esp_partition_t *running_part;
    /* The signature block ESP-IDF trusts (the one after the running image)
     * does not sign this image: an older image left it. ESP-IDF would
     * install an image signed with its key, so the port refuses every image
     * itself (ota_port_esp_read_signing_key). */
    bool stale_signature;
} ota_port_esp_t;

static ota_port_esp_t s_state;

/** Port error for an esp_err_t from esp_ota_begin/esp_ota_end/... */
static ble_ota_port_err_t
ota_port_esp_map(esp_err_t err)
{
    /* esp_ota_* pass on esp_partition/esp_flash errors; all of them
     * (spi_flash_mmap.h, hal/esp_flash_err.h) sit just above this base. */
    if (err > ESP_ERR_FLASH_BASE && err < ESP_ERR_FLASH_BASE + 0x100) {
        return BLE_OTA_PORT_ERR_FLASH;
    }
    switch (err) {
    case ESP_OK:
        return BLE_OTA_PORT_OK;
    case ESP_ERR_OTA_VALIDATE_FAILED:
        return BLE_OTA_PORT_ERR_INVALID_IMAGE;
    case ESP_ERR_INVALID_SIZE:
        return BLE_OTA_PORT_ERR_TOO_LARGE;
    case ESP_ERR_OTA_ROLLBACK_INVALID_STATE:
    case ESP_ERR_OTA_PARTITION_CONFLICT:
        return BLE_OTA_PORT_ERR_STATE;
    default:
        return BLE_OTA_PORT_ERR_OTHER;
    }
}

/** Opens the slot as the plan says: esp_ota_resume (pre-erased) or esp_ota_begin (sequential). */
static esp_err_t
ota_port_esp_open(ota_port_esp_t *st, ble_ota_write_mode_t mode, uint32_t image_size)
{
    const esp_partition_t *slot = st->next;

    if (mode == BLE_OTA_WRITE_SEQUENTIAL) {
        return esp_ota_begin(slot, OTA_WITH_SEQUENTIAL_WRITES, &st->handle);
    }
#if OTA_PORT_HAVE_OTA_RESUME
    /* Offset 0: nothing written yet, so the first esp_ota_write checks the
     * image magic. The erase size is the image's, as for a slot erased in
     * bulk (not OTA_WITH_SEQUENTIAL_WRITES): the port erases. */
    const esp_err_t err = esp_ota_resume(slot, image_size, 0, &st->handle);
#if OTA_PORT_HAVE_INVALIDATE_INACTIVE
    if (err == ESP_OK) {
        /* ESP_FAIL: nothing to invalidate (no otadata entry names another
         * image); esp_ota_begin ignores the result altogether. */
        const esp_err_t inv = esp_ota_invalidate_inactive_ota_data_slot();
        if (inv != ESP_OK && inv != ESP_FAIL) {
            ESP_LOGW(TAG, "esp_ota_invalidate_inactive_ota_data_slot failed: %s", esp_err_to_name(inv));
        }
    }
#endif
    return err;
#else
    /* The plan never chooses it here (ble_ota_slot_init got false). */
    (void)image_size;
    return ESP_ERR_NOT_SUPPORTED;
#endif
}

/** Drops the open transfer's esp_ota handle, if any. */
static void
ota_port_esp_close(ota_port_esp_t *st)
{
    if (!st->plan.open) {
        return;
    }
    const esp_err_t err = esp_ota_abort(st->handle);
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "esp_ota_abort(%s) failed: %s", st->next->label, esp_err_to_name(err));
    } else {
        ESP_LOGI(TAG, "transfer to slot %s aborted after %lu bytes", st->next->label, (unsigned long)st->plan.written);
    }
    ble_ota_slot_abort(&st->plan);
}

static ble_ota_port_err_t
ota_port_esp_slot_begin(void *ctx, uint32_t image_size)
{
    ota_port_esp_t *st = ctx;
    ble_ota_write_mode_t mode;

    if (st->plan.open) {
        /* The core should have closed it; never leak an esp_ota handle. */
        ESP_LOGW(TAG, "slot %s still open: aborting it", st->next->label);
        ota_port_esp_close(st);
    }
    const ble_ota_port_err_t refused = ble_ota_slot_begin(&st->plan, image_size, st->running, &mode);
    switch (refused) {
    case BLE_OTA_PORT_OK:
        break;
    case BLE_OTA_PORT_ERR_NO_SLOT:
        ESP_LOGE(TAG, "no OTA slot to write to (partition table has no ota_1?)");
        return refused;
    case BLE_OTA_PORT_ERR_STATE:
        ESP_LOGE(TAG, "the running image is not confirmed yet");
        return refused;
    case BLE_OTA_PORT_ERR_TOO_LARGE:
    default:
        ESP_LOGE(TAG, "image of %lu bytes does not fit slot %s (%lu bytes)", (unsigned long)image_size, st->next->label,
                 (unsigned long)st->next->size);
        return refused;
    }

    const esp_err_t err = ota_port_esp_open(st, mode, image_size);
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "%s(%s) failed: %s", mode == BLE_OTA_WRITE_PRE_ERASED ? "esp_ota_resume" : "esp_ota_begin",
                 st->next->label, esp_err_to_name(err));
        if (err == ESP_ERR_OTA_ROLLBACK_INVALID_STATE) {
            ESP_LOGE(TAG, "the running image is not confirmed yet");
        }
        ble_ota_slot_abort(&st->plan);
        return ota_port_esp_map(err);
    }
    st->info.update_slot_rolled_back = false; /* the slot now holds the new image's bytes */
    ESP_LOGI(TAG, "writing to slot %s at 0x%08lx (%s, %lu bytes erased ahead)", st->next->label,
             (unsigned long)st->next->address,
             mode == BLE_OTA_WRITE_PRE_ERASED ? "erasing ahead" : "esp_ota_write erases",
             (unsigned long)st->plan.erased_to);
    return BLE_OTA_PORT_OK;
}

/** The idle erase: one step of the slot the next update goes to (ble_ota_port.h). */
static bool
ota_port_esp_slot_prepare(void *ctx, bool short_step)
{
    ota_port_esp_t *st = ctx;
    ble_ota_erase_t step;

    if (!ble_ota_slot_prepare_next(&st->plan, short_step, st->running, &step)) {
        return false;
    }
    if (step.first) {
        /* Once per pass (only a transfer, which ends the pass, changes
         * them): never the running image, never the slot the bootloader
         * starts next. */
        if (st->next == esp_ota_get_running_partition() || st->next == esp_ota_get_boot_partition()) {
            ESP_LOGW(TAG, "slot %s runs or boots next: not erased", st->next->label);
            ble_ota_slot_prepare_stop(&st->plan);
            return false;
        }
        ESP_LOGI(TAG, "erasing slot %s while idle", st->next->label);
#if OTA_PORT_HAVE_INVALIDATE_INACTIVE
        /* Its otadata entry goes first, as esp_ota_begin does before it
         * overwrites a slot: no rollback selects a slot being erased.
         * ESP_FAIL: no entry names it (or it names the running image). */
        const esp_err_t inv = esp_ota_invalidate_inactive_ota_data_slot();
        if (inv != ESP_OK && inv != ESP_FAIL) {
            ESP_LOGW(TAG, "esp_ota_invalidate_inactive_ota_data_slot failed: %s", esp_err_to_name(inv));
        }
#endif
    }
    const esp_err_t err = esp_partition_erase_range(st->next, step.offset, step.size);
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "idle erase of %lu bytes of %s at %lu failed: %s", (unsigned long)step.size, st->next->label,
                 (unsigned long)step.offset, esp_err_to_name(err));
        ble_ota_slot_prepare_stop(&st->plan);
        return false;
    }
    const bool more = ble_ota_slot_prepared(&st->plan, &step);
    if (!more) {
        ESP_LOGI(TAG, "slot %s erased", st->next->label);
    }
    return more;
}

static ble_ota_port_err_t
ota_port_esp_slot_write(void *ctx, const uint8_t *data, size_t len)
{
    ota_port_esp_t *st = ctx;
    ble_ota_erase_t erase;

    const ble_ota_port_err_t check = ble_ota_slot_write_check(&st->plan, len);
    if (check == BLE_OTA_PORT_ERR_STATE) {
        ESP_LOGE(TAG, "write without an open slot");
        return check;
    }
    if (check != BLE_OTA_PORT_OK) {
        ESP_LOGE(TAG, "image exceeds slot %s (%lu bytes)", st->next->label, (unsigned long)st->next->size);
        return check;
    }
    while (ble_ota_slot_erase_next(&st->plan, len, &erase)) {
        const esp_err_t err = esp_partition_erase_range(st->next, erase.offset, erase.size);
        if (err != ESP_OK) {
            ESP_LOGE(TAG, "erasing %lu bytes of %s at %lu failed: %s", (unsigned long)erase.size, st->next->label,
                     (unsigned long)erase.offset, esp_err_to_name(err));
            return BLE_OTA_PORT_ERR_FLASH;
        }
        ble_ota_slot_erased(&st->plan, &erase);
    }
    /* Every byte through esp_ota_write, in either mode: it checks the
     * image magic on the first byte, erases in sequential mode, and with
     * flash encryption keeps a partial 16-byte block for esp_ota_end. */
    const esp_err_t err = esp_ota_write(st->handle, data, len);
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "esp_ota_write of %u bytes at offset %lu failed: %s", (unsigned)len,
                 (unsigned long)st->plan.written, esp_err_to_name(err));
        if (err == ESP_ERR_OTA_VALIDATE_FAILED) {
            ESP_LOGE(TAG, "the data does not start with an ESP image header");
            return BLE_OTA_PORT_ERR_INVALID_IMAGE;
        }
        return BLE_OTA_PORT_ERR_FLASH;
    }
    ble_ota_slot_written(&st->plan, len);
    return BLE_OTA_PORT_OK;
}

/**
 * What to report for an image esp_ota_end refused as invalid: the slot
 * plan's rule (ble_ota_slot_end_refusal), from whether the image parses
 * (esp_image_get_metadata, which walks header and segments without
 * validating them) and whether its signature block verifies against the key
 * the running app trusts. Lets the client say "not signed with your key"
 * instead of "invalid image".
 */
static ble_ota_port_err_t
ota_port_esp_refusal(const esp_partition_t *slot)
{
#if CONFIG_SECURE_SIGNED_ON_UPDATE
    const esp_partition_pos_t pos = { .offset = slot->address, .size = slot->size };
    esp_image_metadata_t meta;
    const bool parses = esp_image_get_metadata(&pos, &meta) == ESP_OK;
    bool signature_ok = false;

    if (parses) {
        const esp_err_t err = esp_secure_boot_verify_signature(slot->address, meta.image_len);
        signature_ok = err == ESP_OK;
        if (!signature_ok) {
            ESP_LOGE(TAG, "the image in %s is not signed with the key this app trusts: %s", slot->label,
                     esp_err_to_name(err));
        }
    }
    return ble_ota_slot_end_refusal(true, parses, signature_ok);
#else
    (void)slot;
    return ble_ota_slot_end_refusal(false, false, false);
#endif
}

static ble_ota_port_err_t
ota_port_esp_slot_end(void *ctx)
{
    ota_port_esp_t *st = ctx;
    const esp_partition_t *slot = st->next;

    if (!st->plan.open) {
        ESP_LOGE(TAG, "end without an open slot");
        return BLE_OTA_PORT_ERR_STATE;
    }
    /* esp_ota_end frees the handle whatever it returns. */
    const esp_err_t err = esp_ota_end(st->handle);
    if (err == ESP_OK && st->stale_signature) {
        /* ESP-IDF verified it against a key this app was never signed
         * with: no key is trusted, as for an app with no signature. */
        ble_ota_slot_end(&st->plan, false);
        ESP_LOGE(TAG, "the image in %s is refused: this app carries no signature of its own to trust", slot->label);
        return ble_ota_slot_end_refusal(true, true, false);
    }
    ble_ota_slot_end(&st->plan, err == ESP_OK);
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "esp_ota_end(%s) after %lu bytes failed: %s", slot->label, (unsigned long)st->plan.written,
                 esp_err_to_name(err));
        if (err == ESP_ERR_OTA_VALIDATE_FAILED) {
            return ota_port_esp_refusal(slot);
        }
        /* INVALID_ARG: nothing was written, so there is no image. */
        if (err == ESP_ERR_INVALID_ARG) {
            return BLE_OTA_PORT_ERR_INVALID_IMAGE;
        }
        /* INVALID_STATE: final encrypted write failed (flash encryption). */
        return err == ESP_ERR_INVALID_STATE ? BLE_OTA_PORT_ERR_FLASH : ota_port_esp_map(err);
    }
    ESP_LOGI(TAG, "image of %lu bytes in slot %s is valid", (unsigned long)st->plan.written, slot->label);
    return BLE_OTA_PORT_OK;
}

static void
ota_port_esp_slot_abort(void *ctx)
{
    ota_port_esp_close(ctx);
}

static ble_ota_port_err_t
ota_port_esp_set_boot_slot(void *ctx)
{
    ota_port_esp_t *st = ctx;

    if (!st->plan.complete) {
        ESP_LOGE(TAG, "no validated slot to boot from");
        return BLE_OTA_PORT_ERR_STATE;
    }
    const esp_err_t err = esp_ota_set_boot_partition(st->next);
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "esp_ota_set_boot_partition(%s) failed: %s", st->next->label, esp_err_to_name(err));
        return ota_port_esp_map(err);
    }
    ESP_LOGI(TAG, "next boot from slot %s", st->next->label);
    return BLE_OTA_PORT_OK;
}

static void
ota_port_esp_restart_cb(void *arg)
{
    (void)arg;
    ESP_LOGI(TAG, "restarting");
    esp_restart();
}

static void
ota_port_esp_restart(void *ctx, uint32_t delay_ms)
{
    ota_port_esp_t *st = ctx;
    esp_err_t err = ESP_FAIL;

    if (st->restart_timer != NULL) {
        err = esp_timer_start_once(st->restart_timer, (uint64_t)delay_ms * 1000U);
        if (err == ESP_OK) {
            ESP_LOGI(TAG, "restart in %lu ms", (unsigned long)delay_ms);
            return;
        }
        ESP_LOGE(TAG, "esp_timer_start_once failed: %s", esp_err_to_name(err));
    }
    /* Fallback: ble_gatts_notify_custom normally hands the notification to
     * the controller at once, so it can still go out while the calling
     * task (host or OTA task) blocks here. */
    vTaskDelay(pdMS_TO_TICKS(delay_ms));
    esp_restart();
}

static void
ota_port_esp_notify_control(void *ctx, uint8_t value)
{
    (void)ctx;
    ota_gap_notify_control(value);
}

static void
ota_port_esp_notify_command(void *ctx, const uint8_t *data, size_t len)
{
    (void)ctx;
    ota_gap_notify_command(data, len);
}

/** Reads the running image's OTA state from otadata (once, at init). */
static ble_ota_img_state_t
ota_port_esp_read_running_state(void)
{
    const esp_partition_t *running = esp_ota_get_running_partition();
    esp_ota_img_states_t state;
    esp_err_t err;

    if (running == NULL) {
        ESP_LOGE(TAG, "running partition unknown");
        return BLE_OTA_IMG_UNKNOWN;
    }
    err = esp_ota_get_state_partition(running, &state);
    if (err != ESP_OK) {
        /* NOT_FOUND: blank otadata, i.e. flashed over serial, never updated. */
        ESP_LOGI(TAG, "no OTA state for %s: %s", running->label, esp_err_to_name(err));
        return BLE_OTA_IMG_UNKNOWN;
    }
    switch (state) {
    case ESP_OTA_IMG_PENDING_VERIFY:
        return BLE_OTA_IMG_PENDING_VERIFY;
    case ESP_OTA_IMG_VALID:
    case ESP_OTA_IMG_UNDEFINED:
    case ESP_OTA_IMG_NEW: /* only seen with rollback disabled */
        return BLE_OTA_IMG_VALID;
    default:
        ESP_LOGW(TAG, "running %s in OTA state %lu", running->label, (unsigned long)state);
        return BLE_OTA_IMG_UNKNOWN;
    }
}

static ble_ota_img_state_t
ota_port_esp_running_state(void *ctx)
{
    const ota_port_esp_t *st = ctx;

    return st->running;
}

static ble_ota_port_err_t
ota_port_esp_mark_valid(void *ctx)
{
    ota_port_esp_t *st = ctx;
    const esp_err_t err = esp_ota_mark_app_valid_cancel_rollback();

    if (err != ESP_OK) {
        ESP_LOGE(TAG, "esp_ota_mark_app_valid_cancel_rollback failed: %s", esp_err_to_name(err));
        return ota_port_esp_map(err);
    }
    /* An UNKNOWN state (factory app, blank otadata) stays unknown: marking
     * it valid changes nothing the bootloader would act on. */
    if (st->running == BLE_OTA_IMG_PENDING_VERIFY) {
        st->running = BLE_OTA_IMG_VALID;
    }
    return BLE_OTA_PORT_OK;
}

static void
ota_port_esp_rollback(void *ctx)
{
    (void)ctx;
    /* Returns only on failure, e.g. no other valid image to go back to. */
    const esp_err_t err = esp_ota_mark_app_invalid_rollback_and_reboot();

    ESP_LOGE(TAG, "esp_ota_mark_app_invalid_rollback_and_reboot failed: %s", esp_err_to_name(err));
}

static void
ota_port_esp_device_info(void *ctx, ble_ota_device_info_t *out)
{
    const ota_port_esp_t *st = ctx;

    *out = st->info;
}

static uint32_t
ota_port_esp_now_ms(void *ctx)
{
    (void)ctx;
    /* Microseconds since boot, 64 bits; the core only subtracts, so the
     * 32-bit wrap after 49 days is harmless. */
    return (uint32_t)(esp_timer_get_time() / 1000);
}

static ble_ota_port_err_t
ota_port_esp_set_confirm_required(void *ctx, bool required)
{
    (void)ctx;
    nvs_handle_t nvs;
    esp_err_t err = nvs_open(OTA_PORT_NVS_NAMESPACE, NVS_READWRITE, &nvs);

    if (err != ESP_OK) {
        ESP_LOGE(TAG, "nvs_open(%s) failed: %s", OTA_PORT_NVS_NAMESPACE, esp_err_to_name(err));
        return BLE_OTA_PORT_ERR_OTHER;
    }
    err = nvs_set_u8(nvs, OTA_PORT_NVS_CONFIRM_KEY, required ? 1 : 0);
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "nvs_set_u8(%s) failed: %s", OTA_PORT_NVS_CONFIRM_KEY, esp_err_to_name(err));
    } else {
        /* Without the commit the value may not survive the restart that
         * follows: it is what the next boot must read. */
        err = nvs_commit(nvs);
        if (err != ESP_OK) {
            ESP_LOGE(TAG, "nvs_commit failed: %s", esp_err_to_name(err));
        }
    }
    nvs_close(nvs);
    if (err != ESP_OK) {
        return BLE_OTA_PORT_ERR_FLASH;
    }
    ESP_LOGI(TAG, "next image %s a client's CONFIRM", required ? "waits for" : "does not wait for");
    return BLE_OTA_PORT_OK;
}

static bool
ota_port_esp_confirm_required(void *ctx)
{
    (void)ctx;
    nvs_handle_t nvs;
    uint8_t value = 0;
    esp_err_t err = nvs_open(OTA_PORT_NVS_NAMESPACE, NVS_READONLY, &nvs);

    /* NOT_FOUND: the namespace was never written, i.e. no update asked for
     * a client's CONFIRM yet. */
    if (err == ESP_ERR_NVS_NOT_FOUND) {
        return false;
    }
    if (err != ESP_OK) {
        /* Fail safe: keep a new image pending (a client can still CONFIRM
         * it; otherwise the previous, proven image comes back) rather than
         * confirm it behind the back of a client that asked to. */
        ESP_LOGE(TAG, "nvs_open(%s) failed: %s; assuming a client confirms", OTA_PORT_NVS_NAMESPACE,
                 esp_err_to_name(err));
        return true;
    }
    err = nvs_get_u8(nvs, OTA_PORT_NVS_CONFIRM_KEY, &value);
    nvs_close(nvs);
    if (err == ESP_ERR_NVS_NOT_FOUND) {
        return false;
    }
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "nvs_get_u8(%s) failed: %s; assuming a client confirms", OTA_PORT_NVS_CONFIRM_KEY,
                 esp_err_to_name(err));
        return true;
    }
    return value != 0;
}

static void
ota_port_esp_log(void *ctx, ble_ota_log_level_t level, const char *msg)
{
    (void)ctx;
    switch (level) {
    case BLE_OTA_LOG_ERROR:
        ESP_LOGE(CORE_TAG, "%s", msg);
        break;
    case BLE_OTA_LOG_WARN:
        ESP_LOGW(CORE_TAG, "%s", msg);
        break;
    case BLE_OTA_LOG_INFO:
        ESP_LOGI(CORE_TAG, "%s", msg);
        break;
    default:
        ESP_LOGD(CORE_TAG, "%s", msg);
        break;
    }
}

/* The ROM's inflate state (about 11 KB): static, as no task stack could
 * hold it. Only the OTA task inflates, one chunk at a time. */
static tinfl_decompressor s_inflater;

/** DEFLATE chunks: raw deflate, all of it in memory, into at most *out_len
 * bytes. The output buffer starts `history` bytes before out: in the
 * non-wrapping mode tinfl lets back-references reach that far, which makes
 * the previous chunk the dictionary. */
static bool
ota_port_esp_inflate(void *ctx, const uint8_t *in, size_t in_len, uint8_t *out, size_t *out_len, size_t history)
{
    size_t in_bytes = in_len;
    size_t out_bytes = *out_len;

    (void)ctx;
    tinfl_init(&s_inflater);
    const tinfl_status status = tinfl_decompress(&s_inflater, in, &in_bytes, out - history, out, &out_bytes,
                                                 TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF);
    if (status != TINFL_STATUS_DONE || in_bytes != in_len) {
        return false;
    }
    *out_len = out_bytes;
    return true;
}

/** The running slot as the image was written: esp_partition_read decrypts
 * an encrypted partition (flash encryption), as esp_ota_write encrypted it,
 * so the bytes are the file's either way. One call per piece the core asks
 * for (at most 4 KB). */
static ble_ota_port_err_t
ota_port_esp_running_read(void *ctx, uint32_t offset, uint8_t *out, size_t len)
{
    const ota_port_esp_t *st = ctx;

    if (st->running_part == NULL) {
        return BLE_OTA_PORT_ERR_NO_SLOT;
    }
    if (offset > st->running_part->size || len > st->running_part->size - offset) {
        return BLE_OTA_PORT_ERR_TOO_LARGE;
    }
    const esp_err_t err = esp_partition_read(st->running_part, (size_t)offset, out, len);
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "reading %u bytes of %s at %lu failed: %s", (unsigned)len, st->running_part->label,
                 (unsigned long)offset, esp_err_to_name(err));
        return BLE_OTA_PORT_ERR_FLASH;
    }
    return BLE_OTA_PORT_OK;
}

/** Session nonces: the hardware RNG, a true random source while the
 * Bluetooth radio is on (which it is whenever a client can ask). */
static void
ota_port_esp_random(void *ctx, uint8_t *out, size_t len)
{
    (void)ctx;
    esp_fill_random(out, len);
}

/** Ends a stranger's link (ble_gap_terminate returns at once). */
static void
ota_port_esp_disconnect(void *ctx)
{
    (void)ctx;
    /* The core asks for the link it knows of. If the host task has seen a
     * disconnect (and maybe the next client's connect) since, that link is
     * gone already, and the connection handle now may be the next client's. */
    if (!ota_task_link_is_current()) {
        return;
    }
    ota_gap_terminate();
}

/* The link: the core decides what to ask and when (ble_ota_link.c); the
 * GAP layer asks NimBLE and keeps what its events report. A link the host
 * task has seen drop is not asked for anything (its handle may be the
 * next client's, which the core asks for itself once it sees it). */
static bool
ota_port_esp_link_data_path(void *ctx, uint16_t tx_octets, uint16_t tx_time_us, bool prefer_2m)
{
    (void)ctx;
    if (!ota_task_link_is_current()) {
        return true;
    }
    return ota_gap_request_data_path(tx_octets, tx_time_us, prefer_2m);
}

static bool
ota_port_esp_link_conn_params(void *ctx, ble_ota_link_profile_t profile, const ble_ota_conn_params_t *params)
{
    (void)ctx;
    if (!ota_task_link_is_current()) {
        return true;
    }
    return ota_gap_request_conn_params(params, profile == BLE_OTA_LINK_TRANSFER ? "transfer" : "idle");
}

static void
ota_port_esp_link_info(void *ctx, ble_ota_link_info_t *out)
{
    (void)ctx;
    ota_gap_link_info(out);
}

static const ble_ota_port_t s_port = {
    .ctx = &s_state,
    .slot_begin = ota_port_esp_slot_begin,
    .slot_write = ota_port_esp_slot_write,
    .slot_end = ota_port_esp_slot_end,
    .slot_abort = ota_port_esp_slot_abort,
    .set_boot_slot = ota_port_esp_set_boot_slot,
    .restart = ota_port_esp_restart,
    .notify_control = ota_port_esp_notify_control,
    .running_state = ota_port_esp_running_state,
    .mark_valid = ota_port_esp_mark_valid,
    .rollback = ota_port_esp_rollback,
    .device_info = ota_port_esp_device_info,
    .now_ms = ota_port_esp_now_ms,
    .notify_command = ota_port_esp_notify_command,
    .set_confirm_required = ota_port_esp_set_confirm_required,
    .confirm_required = ota_port_esp_confirm_required,
    .random = ota_port_esp_random,
    .inflate = ota_port_esp_inflate,
    .running_read = ota_port_esp_running_read,
    .disconnect = ota_port_esp_disconnect,
    .link_data_path = ota_port_esp_link_data_path,
    .link_conn_params = ota_port_esp_link_conn_params,
    .link_info = ota_port_esp_link_info,
    .slot_prepare = ota_port_esp_slot_prepare,
    .log = ota_port_esp_log,
};

/** Copies a char[src_cap] field of esp_app_desc_t into dst[dst_cap],
 * NUL-padded. A value that fills dst keeps no terminator, as in
 * esp_app_desc_t: the core reads at most the field's size (ble_ota_port.h),
 * so a 32-character version reaches OTA Info whole. */
static void
ota_port_esp_copy_field(char *dst, size_t dst_cap, const char *src, size_t src_cap)
{
    const char *end = memchr(src, '\0', src_cap);
    size_t len = end != NULL ? (size_t)(end - src) : src_cap;

    if (len > dst_cap) {
        len = dst_cap;
    }
    memset(dst, 0, dst_cap);
    memcpy(dst, src, len);
}

#if !CONFIG_SECURE_BOOT_V2_ENABLED && CONFIG_SECURE_SIGNED_ON_UPDATE && \
    (CONFIG_SECURE_SIGNED_APPS_RSA_SCHEME || CONFIG_SECURE_SIGNED_APPS_ECDSA_V2_SCHEME)
/**
 * Whether the signature block after the running image signs it. Without
 * hardware secure boot, ESP-IDF takes the key it verifies updates with from
 * the first block in the 4 KB sector after the running image, on its magic
 * and CRC alone (esp_secure_boot_get_signature_blocks_for_running_app
 * "doesn't verify that the signatures are valid"), and its bootloader
 * checks no app signature with these schemes. A slot is erased only as far
 * as an image needs: an unsigned image flashed over USB (or installed by a
 * build that checks no signature) where a signed one ended in the same
 * sector finds that image's block there, and ESP-IDF would install
 * whatever is signed with its key. esp_secure_boot_verify_signature hashes
 * the running image up to that sector and checks the block against it:
 * ESP_ERR_IMAGE_INVALID when the block signs another image, another error
 * when the check could not run (a flash read).
 */
static esp_err_t
ota_port_esp_check_running_signature(void)
{
    static esp_image_metadata_t meta; /* static: 300 bytes off the app_main stack */
    const esp_partition_t *running = esp_ota_get_running_partition();

    if (running == NULL) {
        return ESP_ERR_NOT_FOUND;
    }
    const esp_partition_pos_t pos = { .offset = running->address, .size = running->size };
    const esp_err_t err = esp_image_get_metadata(&pos, &meta);
    if (err != ESP_OK) {
        return err;
    }
    return esp_secure_boot_verify_signature(running->address, meta.image_len);
}
#endif

/** Whether esp_ota_end checks signatures, and the digest of the key it
 * trusts: the running app's first signature block, which ESP-IDF takes
 * without hardware secure boot, if that block signs the running app.
 * Returns true when it does not: an older image left it, and the port must
 * refuse what ESP-IDF would take. */
static bool
ota_port_esp_read_signing_key(ble_ota_device_info_t *info)
{
#if CONFIG_SECURE_BOOT_V2_ENABLED
    /* Hardware secure boot: ESP-IDF checks an update against the key
     * digests in eFuse (up to three, any not revoked), not the running
     * app's block, and the bootloader verified this app. Naming that
     * block's key would make a client refuse an image signed with another
     * trusted key (a key rotation): no key is named, the device checks. */
    info->signed_updates = true;
#elif CONFIG_SECURE_SIGNED_ON_UPDATE && \
    (CONFIG_SECURE_SIGNED_APPS_RSA_SCHEME || CONFIG_SECURE_SIGNED_APPS_ECDSA_V2_SCHEME)
    static esp_image_sig_public_key_digests_t digests; /* static: 100+ bytes off the app_main stack */

    info->signed_updates = true;
    const esp_err_t err = esp_secure_boot_get_signature_blocks_for_running_app(true, &digests);
    if (err != ESP_OK || digests.num_digests == 0) {
        /* Every update would fail: ESP-IDF has no key to check it with. */
        ESP_LOGE(TAG, "this app carries no signature: no update can be verified (%s); flash a signed app over USB",
                 esp_err_to_name(err));
        info->no_trusted_key = true;
        return false;
    }
    const esp_err_t check = ota_port_esp_check_running_signature();
    if (check != ESP_OK) {
        /* Either way no key is trusted (a key the check could not confirm is not taken). */
        if (check == ESP_ERR_IMAGE_INVALID) {
            ESP_LOGE(TAG, "this app carries no signature: the signature block after it signs another image (left by "
                          "an older one); no update can be verified; flash a signed app over USB");
        } else {
            ESP_LOGE(TAG,
                     "the signature of this app could not be checked (%s): no update is taken until a restart "
                     "checks it again",
                     esp_err_to_name(check));
        }
        info->no_trusted_key = true;
        return true;
    }
    memcpy(info->signing_key_digest, digests.key_digests[0], sizeof(info->signing_key_digest));
#elif CONFIG_SECURE_SIGNED_ON_UPDATE
    /* Secure Boot v1 (ECDSA, original ESP32 before v3.0): checked, but not
     * with a Secure Boot v2 key a client can compare. */
    info->signed_updates = true;
#else
    info->signed_updates = false;
#endif
    return false;
}

/** Fills s_state.info: chip, revision, slot size and the running app. */
static void
ota_port_esp_read_device_info(ble_ota_device_info_t *info)
{
    esp_chip_info_t chip;
    const esp_app_desc_t *app = esp_app_get_description();
    const esp_partition_t *next = esp_ota_get_next_update_partition(NULL);

    memset(info, 0, sizeof(*info));
    esp_chip_info(&chip);
    info->chip_id = (uint16_t)OTA_PORT_CHIP_ID;
    /* esp_chip_info's revision is already major * 100 + minor ("MXX"). */
    info->chip_revision = chip.revision;
    /* The slot the next update goes to; it is fixed while this image runs
     * (it is "the other one"). */
    info->slot_size = next != NULL ? (uint32_t)next->size : 0;
    /* The image last written there ran pending verify and was rolled back
     * (the bootloader marks it ABORTED, the app INVALID). NOT_FOUND: the
     * slot has no otadata entry, i.e. it was never selected. */
    if (next != NULL) {
        esp_ota_img_states_t state;
        const esp_err_t state_err = esp_ota_get_state_partition(next, &state);
        if (state_err == ESP_OK) {
            info->update_slot_rolled_back = state == ESP_OTA_IMG_INVALID || state == ESP_OTA_IMG_ABORTED;
        } else if (state_err != ESP_ERR_NOT_FOUND) {
            ESP_LOGW(TAG, "esp_ota_get_state_partition(%s) failed: %s", next->label, esp_err_to_name(state_err));
        }
    }
    info->secure_version = app->secure_version;
    ota_port_esp_copy_field(info->version, sizeof(info->version), app->version, sizeof(app->version));
    ota_port_esp_copy_field(info->project_name, sizeof(info->project_name), app->project_name,
                            sizeof(app->project_name));
    ota_port_esp_copy_field(info->idf_version, sizeof(info->idf_version), app->idf_ver, sizeof(app->idf_ver));
    ota_port_esp_copy_field(info->date, sizeof(info->date), app->date, sizeof(app->date));
    ota_port_esp_copy_field(info->time, sizeof(info->time), app->time, sizeof(app->time));
    memcpy(info->app_elf_sha256, app->app_elf_sha256, sizeof(info->app_elf_sha256));
    /* The identity device keys derive from: the factory MAC (6 bytes on
     * every chip; esp_efuse_mac_get_default writes 8 on 802.15.4 chips). */
    const esp_err_t mac_err = esp_read_mac(info->device_id, ESP_MAC_EFUSE_FACTORY);
    if (mac_err != ESP_OK) {
        ESP_LOGE(TAG, "esp_read_mac failed: %s; the device id is all zeros", esp_err_to_name(mac_err));
        memset(info->device_id, 0, sizeof(info->device_id));
    }
    ESP_LOGI(TAG, "chip id %u rev %u, %.*s %.*s, next slot %s (%lu bytes)", (unsigned)info->chip_id,
             (unsigned)info->chip_revision, (int)sizeof(info->project_name), info->project_name,
             (int)sizeof(info->version), info->version, next != NULL ? next->label : "none",
             (unsigned long)info->slot_size);
}

const ble_ota_port_t *
ota_port_esp_init(void)
{
    ota_port_esp_read_device_info(&s_state.info);
    s_state.stale_signature = ota_port_esp_read_signing_key(&s_state.info);
    /* Fixed while this image runs ("the other one"); looked up once, as
     * the lookup allocates. */
    s_state.next = esp_ota_get_next_update_partition(NULL);
    ble_ota_slot_init(&s_state.plan, s_state.next != NULL ? (uint32_t)s_state.next->size : 0,
                      OTA_PORT_HAVE_OTA_RESUME != 0);
    s_state.running = ota_port_esp_read_running_state();
    s_state.running_part = esp_ota_get_running_partition();
    if (s_state.running_part == NULL) {
        ESP_LOGE(TAG, "running partition not found: no delta updates");
    }

    const esp_timer_create_args_t args = {
        .callback = ota_port_esp_restart_cb,
        .arg = NULL,
        .dispatch_method = ESP_TIMER_TASK,
        .name = "ota_restart",
    };
    const esp_err_t err = esp_timer_create(&args, &s_state.restart_timer);

    if (err != ESP_OK) {
        ESP_LOGE(TAG, "esp_timer_create failed: %s; restarts will block", esp_err_to_name(err));
        s_state.restart_timer = NULL;
    }
    return &s_port;
}
