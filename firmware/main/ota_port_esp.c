/*
 * ble_ota_port_t for ESP-IDF: esp_ota_* for the slot, esp_timer for the
 * delayed restart, ota_gap for notifications, esp_log for the core's log.
 *
 * Every call comes from the NimBLE host task, except running_state,
 * mark_valid and rollback, which app_main calls once at boot and which
 * touch none of the slot state below.
 */
#include "ota_port_esp.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esp_err.h"
#include "esp_log.h"
#include "esp_ota_ops.h"
#include "esp_partition.h"
#include "esp_system.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"

#include "ota_gap.h"

static const char *TAG = "ota_port";
static const char *CORE_TAG = "ota_core";

typedef struct {
    const esp_partition_t *slot; /* slot being written, NULL when none */
    esp_ota_handle_t handle;     /* valid while slot != NULL */
    uint32_t written;            /* bytes passed to esp_ota_write */
    const esp_partition_t *ended; /* slot that passed esp_ota_end */
    esp_timer_handle_t restart_timer;
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

static ble_ota_port_err_t
ota_port_esp_slot_begin(void *ctx, uint32_t image_size)
{
    ota_port_esp_t *st = ctx;
    const esp_partition_t *slot;
    esp_ota_handle_t handle = 0;
    esp_err_t err;

    if (st->slot != NULL) {
        /* The core should have closed it; never leak an esp_ota handle. */
        ESP_LOGW(TAG, "slot %s still open: aborting it", st->slot->label);
        err = esp_ota_abort(st->handle);
        if (err != ESP_OK) {
            ESP_LOGE(TAG, "esp_ota_abort failed: %s", esp_err_to_name(err));
        }
        st->slot = NULL;
    }
    st->ended = NULL;

    slot = esp_ota_get_next_update_partition(NULL);
    if (slot == NULL) {
        ESP_LOGE(TAG, "no OTA slot to write to (partition table has no ota_1?)");
        return BLE_OTA_PORT_ERR_NO_SLOT;
    }
    if (image_size > slot->size) {
        ESP_LOGE(TAG, "image of %lu bytes does not fit slot %s (%lu bytes)",
                 (unsigned long)image_size, slot->label, (unsigned long)slot->size);
        return BLE_OTA_PORT_ERR_TOO_LARGE;
    }

    /* Sequential writes erase sector by sector as data arrives, even when
     * the size is known: erasing up to 1.9 MB at once here would block the
     * host task for seconds and the link would time out. */
    err = esp_ota_begin(slot, OTA_WITH_SEQUENTIAL_WRITES, &handle);
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "esp_ota_begin(%s) failed: %s", slot->label, esp_err_to_name(err));
        if (err == ESP_ERR_OTA_ROLLBACK_INVALID_STATE) {
            ESP_LOGE(TAG, "the running image is not confirmed yet");
        }
        return ota_port_esp_map(err);
    }
    st->slot = slot;
    st->handle = handle;
    st->written = 0;
    ESP_LOGI(TAG, "writing to slot %s at 0x%08lx (%lu bytes)", slot->label,
             (unsigned long)slot->address, (unsigned long)slot->size);
    return BLE_OTA_PORT_OK;
}

static ble_ota_port_err_t
ota_port_esp_slot_write(void *ctx, const uint8_t *data, size_t len)
{
    ota_port_esp_t *st = ctx;
    esp_err_t err;

    if (st->slot == NULL) {
        ESP_LOGE(TAG, "write without an open slot");
        return BLE_OTA_PORT_ERR_STATE;
    }
    /* Checked here so the answer is "too large", not a flash error from
     * esp_partition_write past the end. */
    if (len > st->slot->size - st->written) {
        ESP_LOGE(TAG, "image exceeds slot %s (%lu bytes)", st->slot->label,
                 (unsigned long)st->slot->size);
        return BLE_OTA_PORT_ERR_TOO_LARGE;
    }
    err = esp_ota_write(st->handle, data, len);
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "esp_ota_write of %u bytes at offset %lu failed: %s",
                 (unsigned)len, (unsigned long)st->written, esp_err_to_name(err));
        if (err == ESP_ERR_OTA_VALIDATE_FAILED) {
            ESP_LOGE(TAG, "the data does not start with an ESP image header");
        }
        return err == ESP_ERR_OTA_VALIDATE_FAILED ? BLE_OTA_PORT_ERR_INVALID_IMAGE
                                                  : BLE_OTA_PORT_ERR_FLASH;
    }
    st->written += (uint32_t)len;
    return BLE_OTA_PORT_OK;
}

static ble_ota_port_err_t
ota_port_esp_slot_end(void *ctx)
{
    ota_port_esp_t *st = ctx;
    const esp_partition_t *slot = st->slot;
    esp_err_t err;

    if (slot == NULL) {
        ESP_LOGE(TAG, "end without an open slot");
        return BLE_OTA_PORT_ERR_STATE;
    }
    /* esp_ota_end frees the handle whatever it returns. */
    err = esp_ota_end(st->handle);
    st->slot = NULL;
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "esp_ota_end(%s) after %lu bytes failed: %s", slot->label,
                 (unsigned long)st->written, esp_err_to_name(err));
        /* INVALID_ARG: nothing was written, so there is no image. */
        if (err == ESP_ERR_OTA_VALIDATE_FAILED || err == ESP_ERR_INVALID_ARG) {
            return BLE_OTA_PORT_ERR_INVALID_IMAGE;
        }
        /* INVALID_STATE: final encrypted write failed (flash encryption). */
        return err == ESP_ERR_INVALID_STATE ? BLE_OTA_PORT_ERR_FLASH : ota_port_esp_map(err);
    }
    st->ended = slot;
    ESP_LOGI(TAG, "image of %lu bytes in slot %s is valid", (unsigned long)st->written,
             slot->label);
    return BLE_OTA_PORT_OK;
}

static void
ota_port_esp_slot_abort(void *ctx)
{
    ota_port_esp_t *st = ctx;
    esp_err_t err;

    if (st->slot == NULL) {
        return;
    }
    err = esp_ota_abort(st->handle);
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "esp_ota_abort(%s) failed: %s", st->slot->label, esp_err_to_name(err));
    } else {
        ESP_LOGI(TAG, "transfer to slot %s aborted after %lu bytes", st->slot->label,
                 (unsigned long)st->written);
    }
    st->slot = NULL;
}

static ble_ota_port_err_t
ota_port_esp_set_boot_slot(void *ctx)
{
    ota_port_esp_t *st = ctx;
    esp_err_t err;

    if (st->ended == NULL) {
        ESP_LOGE(TAG, "no validated slot to boot from");
        return BLE_OTA_PORT_ERR_STATE;
    }
    err = esp_ota_set_boot_partition(st->ended);
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "esp_ota_set_boot_partition(%s) failed: %s", st->ended->label,
                 esp_err_to_name(err));
        return ota_port_esp_map(err);
    }
    ESP_LOGI(TAG, "next boot from slot %s", st->ended->label);
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
     * the controller at once, so it can still go out while the host task
     * blocks here. */
    vTaskDelay(pdMS_TO_TICKS(delay_ms));
    esp_restart();
}

static void
ota_port_esp_notify_control(void *ctx, uint8_t value)
{
    (void)ctx;
    ota_gap_notify_control(value);
}

static ble_ota_img_state_t
ota_port_esp_running_state(void *ctx)
{
    (void)ctx;
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

static ble_ota_port_err_t
ota_port_esp_mark_valid(void *ctx)
{
    (void)ctx;
    const esp_err_t err = esp_ota_mark_app_valid_cancel_rollback();

    if (err != ESP_OK) {
        ESP_LOGE(TAG, "esp_ota_mark_app_valid_cancel_rollback failed: %s",
                 esp_err_to_name(err));
        return ota_port_esp_map(err);
    }
    return BLE_OTA_PORT_OK;
}

static void
ota_port_esp_rollback(void *ctx)
{
    (void)ctx;
    /* Returns only on failure, e.g. no other valid image to go back to. */
    const esp_err_t err = esp_ota_mark_app_invalid_rollback_and_reboot();

    ESP_LOGE(TAG, "esp_ota_mark_app_invalid_rollback_and_reboot failed: %s",
             esp_err_to_name(err));
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
    .log = ota_port_esp_log,
};

const ble_ota_port_t *
ota_port_esp_init(void)
{
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
