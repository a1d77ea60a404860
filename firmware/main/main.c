/*
 * BLE OTA firmware: entry point.
 *
 * Brings up NVS, reads the device key from its own partition (no firmware
 * image carries it), starts the OTA task (owner of the protocol core) and
 * NimBLE, registers the OTA service and advertises. Only once advertising runs does
 * it start the application (ble_ota_app.h) and judge the image: a new
 * image that cannot bring BLE up (and so could never be updated again) is
 * rolled back before its application starts; one whose application reports
 * a fault, or says nothing within CONFIG_BLE_OTA_APP_CHECK_TIMEOUT_S, is
 * rolled back too. A confirmed image has nothing to return to: it runs its
 * application whatever happened. The seed judged the image before
 * BLE even started. A new image whose update asked for a client's CONFIRM
 * then stays pending until a client sends it, within
 * CONFIG_BLE_OTA_CONFIRM_WINDOW_S (the core's tick, in the OTA task, rolls
 * it back when the window ends).
 */
#include <stdbool.h>

#include <string.h>

#include "esp_err.h"
#include "esp_idf_version.h"
#include "esp_log.h"
#include "esp_mac.h"
#include "esp_ota_ops.h"
#include "esp_partition.h"
#include "freertos/FreeRTOS.h"
#include "freertos/semphr.h"
#include "freertos/task.h"
#include "host/ble_gap.h"
#include "host/ble_hs.h"
#include "nimble/nimble_port.h"
#include "nimble/nimble_port_freertos.h"
#include "nvs_flash.h"
#include "sdkconfig.h"

#include "ble_ota_app.h"
#include "ble_ota_core.h"
#include "ota_gap.h"
#include "ota_gatt.h"
#include "ota_port_esp.h"
#include "ota_task.h"

/* The GAP module handles BLE_GAP_EVENT_DATA_LEN_CHG, which the NimBLE of
 * ESP-IDF v5.0 to v5.2 does not have; say so rather than fail on an
 * undeclared name. */
#if ESP_IDF_VERSION < ESP_IDF_VERSION_VAL(5, 3, 0)
#error "This firmware needs ESP-IDF v5.3 or later (README.md, docs/HARDWARE.md)."
#endif

static const char *TAG = "ble_ota";

/* Given by the GAP module each time advertising starts. Static storage:
 * nothing to allocate, nothing that can fail. */
static StaticSemaphore_t s_advertising_buf;
static SemaphoreHandle_t s_advertising;

/* The application's GATT services registered (ble_ota_app_gatt_init). */
static bool s_app_gatt_ok;

/* The application's verdict, from the task that asks for it. */
static StaticSemaphore_t s_app_checked_buf;
static SemaphoreHandle_t s_app_checked;
static volatile bool s_app_healthy;

/** Runs the NimBLE host until nimble_port_stop(); never returns otherwise. */
static void
ble_ota_host_task(void *param)
{
    (void)param;
    ESP_LOGI(TAG, "NimBLE host task started");
    nimble_port_run();
    nimble_port_freertos_deinit();
}

static void
ble_ota_on_advertising(void)
{
    /* Binary semaphore: extra gives after the first are harmless. */
    xSemaphoreGive(s_advertising);
}

/** nvs_flash_init, erasing and retrying when the partition is full or was
 * written by a newer NVS version (NimBLE keeps PHY calibration there). */
static esp_err_t
ble_ota_nvs_init(void)
{
    esp_err_t err = nvs_flash_init();

    if (err == ESP_ERR_NVS_NO_FREE_PAGES || err == ESP_ERR_NVS_NEW_VERSION_FOUND) {
        ESP_LOGW(TAG, "NVS unusable (%s): erasing it", esp_err_to_name(err));
        err = nvs_flash_erase();
        if (err != ESP_OK) {
            ESP_LOGE(TAG, "nvs_flash_erase failed: %s", esp_err_to_name(err));
            return err;
        }
        err = nvs_flash_init();
    }
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "nvs_flash_init failed: %s", esp_err_to_name(err));
    }
    return err;
}

/* The key partition (partitions.csv): an application-defined type, so no
 * ESP-IDF component ever takes it for its own. */
#define BLE_OTA_KEY_PARTITION_TYPE    0x40
#define BLE_OTA_KEY_PARTITION_SUBTYPE 0x00
#define BLE_OTA_KEY_PARTITION_LABEL   "ble_ota_key"

/** Reads the device key from the key partition into config->auth_key;
 * returns what the partition held (BLE_OTA_KEY_OK: a key for this device).
 * With flash encryption on, the partition is marked `encrypted` and
 * esp_partition_read decrypts it. */
static ble_ota_key_status_t
ble_ota_read_key(ble_ota_config_t *config)
{
    uint8_t record[BLE_OTA_KEY_RECORD_LEN];
    uint8_t id[BLE_OTA_DEVICE_ID_LEN];

    const esp_partition_t *part = esp_partition_find_first((esp_partition_type_t)BLE_OTA_KEY_PARTITION_TYPE,
                                                           (esp_partition_subtype_t)BLE_OTA_KEY_PARTITION_SUBTYPE,
                                                           BLE_OTA_KEY_PARTITION_LABEL);
    if (part == NULL) {
        ESP_LOGE(TAG, "no \"%s\" partition: use the partition table of firmware/partitions.csv",
                 BLE_OTA_KEY_PARTITION_LABEL);
        return BLE_OTA_KEY_CORRUPT;
    }
    esp_err_t err = esp_read_mac(id, ESP_MAC_EFUSE_FACTORY);
    if (err == ESP_OK) {
        err = esp_partition_read(part, 0, record, sizeof(record));
    }
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "reading the key partition failed: %s", esp_err_to_name(err));
        return BLE_OTA_KEY_CORRUPT;
    }
    const ble_ota_key_status_t st = ble_ota_key_record_parse(record, sizeof(record), id, config->auth_key);
    memset(record, 0, sizeof(record)); /* no copy of the key left on the stack */
    switch (st) {
    case BLE_OTA_KEY_OK:
        break;
    case BLE_OTA_KEY_EMPTY:
        ESP_LOGW(TAG, "no update key provisioned yet (esp32-ble-ota provision; docs/SECURITY.md)");
        break;
    case BLE_OTA_KEY_OTHER_DEVICE:
        ESP_LOGE(TAG, "the key partition was made for another device: provision this one's");
        break;
    case BLE_OTA_KEY_CORRUPT:
    default:
        ESP_LOGE(TAG, "the key partition holds no valid key record");
        break;
    }
    return st;
}

/** The core's settings: Kconfig values, the device key, and what the OTA
 * task can queue. */
static void
ble_ota_config(ble_ota_config_t *config)
{
    ble_ota_config_default(config);
    /* The queue in front of the OTA task is sized for this window
     * (ota_task.c); every packet of it may be BLE_OTA_MAX_PACKET long. */
    config->window = OTA_TASK_WINDOW;
    config->max_packet = BLE_OTA_MAX_PACKET;
    config->abandon_timeout_ms = (uint32_t)CONFIG_BLE_OTA_ABANDON_TIMEOUT_S * 1000U;
    config->confirm_window_ms = (uint32_t)CONFIG_BLE_OTA_CONFIRM_WINDOW_S * 1000U;
    config->auth_timeout_ms = (uint32_t)CONFIG_BLE_OTA_AUTH_TIMEOUT_S * 1000U;
#if defined(CONFIG_BLE_OTA_ALLOW_UNAUTHENTICATED)
    const bool allow_unauthenticated = true; /* a development build */
#else
    const bool allow_unauthenticated = false;
#endif
    ble_ota_config_key(config, ble_ota_read_key(config), allow_unauthenticated);
    if (!config->auth) {
        ESP_LOGW(TAG, "no update key: anyone in Bluetooth range can update this device");
    }
#if defined(CONFIG_BLE_OTA_SEED_PROTOCOL)
    /* Seed clients keep working, with no authentication (Kconfig help). */
    config->serve_seed = true;
#else
    config->serve_seed = false;
#endif
}

/** Starts the controller, the host and the GATT server. */
static bool
ble_ota_ble_start(void)
{
    esp_err_t err;
    int rc;

    err = nimble_port_init();
    if (err != ESP_OK) {
        ESP_LOGE(TAG, "nimble_port_init failed: %s", esp_err_to_name(err));
        return false;
    }
    rc = ota_gatt_init();
    if (rc != 0) {
        return false;
    }
    /* The application's services: a failure fails the self-test (a new
     * image rolls back) but leaves the OTA service up, so a confirmed image
     * can still be updated. */
    rc = ble_ota_app_gatt_init();
    s_app_gatt_ok = rc == 0;
    if (!s_app_gatt_ok) {
        ESP_LOGE(TAG, "ble_ota_app_gatt_init failed: %d", rc);
    }
    ota_gap_init(CONFIG_BLE_OTA_DEVICE_NAME, ble_ota_on_advertising);
    nimble_port_freertos_init(ble_ota_host_task);
    return true;
}

/**
 * Checks that this image can take the next update: the host is synced, the
 * OTA service is registered with the protocol's UUIDs and serves an OTA
 * Info value, the OTA task runs, the device advertises (or a client already
 * connected), a slot is free, and the application's GATT services were
 * registered.
 */
static bool
ble_ota_self_test(void)
{
    bool ok = true;

    if (!ble_hs_synced()) {
        ESP_LOGE(TAG, "self-test: NimBLE host not synced");
        ok = false;
    }
    if (!ota_gatt_check()) {
        ESP_LOGE(TAG, "self-test: OTA service not ready");
        ok = false;
    }
    if (!ota_task_running()) {
        ESP_LOGE(TAG, "self-test: OTA task not running");
        ok = false;
    }
    if (!ble_gap_adv_active() && !ota_gap_connected()) {
        ESP_LOGE(TAG, "self-test: neither advertising nor connected");
        ok = false;
    }
    if (esp_ota_get_next_update_partition(NULL) == NULL) {
        ESP_LOGE(TAG, "self-test: no OTA slot for the next update");
        ok = false;
    }
    if (!s_app_gatt_ok) {
        ESP_LOGE(TAG, "self-test: the application's GATT services are not registered");
        ok = false;
    }
    return ok;
}

static void
ble_ota_app_check_task(void *param)
{
    (void)param;
    s_app_healthy = ble_ota_app_healthy();
    (void)xSemaphoreGive(s_app_checked);
    vTaskDelete(NULL);
}

/**
 * The application's verdict (ble_ota_app_healthy), asked in a task of its
 * own: a check that never returns would otherwise keep a new image pending
 * verify, refusing every update and every CONFIRM, until someone restarts
 * the device. No verdict within CONFIG_BLE_OTA_APP_CHECK_TIMEOUT_S is a
 * fault; the task is left to finish.
 */
static bool
ble_ota_app_check(void)
{
    s_app_checked = xSemaphoreCreateBinaryStatic(&s_app_checked_buf);
    /* The main task's stack and priority: where the check would run otherwise. */
    if (xTaskCreate(ble_ota_app_check_task, "ble_ota_app", CONFIG_ESP_MAIN_TASK_STACK_SIZE, NULL,
                    uxTaskPriorityGet(NULL), NULL) != pdPASS) {
        ESP_LOGE(TAG, "self-test: no memory for the application's health check");
        return false;
    }
    const TickType_t allowed = pdMS_TO_TICKS((uint32_t)CONFIG_BLE_OTA_APP_CHECK_TIMEOUT_S * 1000U);
    if (xSemaphoreTake(s_app_checked, allowed) != pdTRUE) {
        ESP_LOGE(TAG, "self-test: the application gave no verdict within %d s (ble_ota_app_healthy)",
                 CONFIG_BLE_OTA_APP_CHECK_TIMEOUT_S);
        return false;
    }
    if (!s_app_healthy) {
        ESP_LOGE(TAG, "self-test: the application reports a fault (ble_ota_app_healthy)");
    }
    return s_app_healthy;
}

void
app_main(void)
{
    const ble_ota_port_t *port = ota_port_esp_init();
    ble_ota_config_t config;
    bool passed = false;

    s_advertising = xSemaphoreCreateBinaryStatic(&s_advertising_buf);

    /* NVS first: the core reads the confirm flag from it. */
    const bool nvs_ok = ble_ota_nvs_init() == ESP_OK;

    /* The OTA task before NimBLE: the GATT callbacks hand it their writes. */
    ble_ota_config(&config);
    const bool task_ok = ota_task_start(port, &config);
    memset(config.auth_key, 0, sizeof(config.auth_key)); /* the core keeps its own copy */

    if (!nvs_ok || !task_ok || !ble_ota_ble_start()) {
        /* A new image rolls back; a confirmed one has nothing to go back
         * to and can only report the failure. If the OTA task did not
         * start, the core may not be initialised: do what
         * confirm_boot(false) does, through the port. */
        ESP_LOGE(TAG, "start-up failed (NVS %s, OTA task %s)", nvs_ok ? "ok" : "failed", task_ok ? "ok" : "failed");
        if (task_ok) {
            (void)ota_task_confirm_boot(false);
        } else if (port->running_state(port->ctx) == BLE_OTA_IMG_PENDING_VERIFY) {
            port->rollback(port->ctx);
        }
        /* Still here: a confirmed image (or a rollback that failed), which
         * runs its application without updates. */
        ble_ota_app_start();
        return;
    }

    if (xSemaphoreTake(s_advertising, pdMS_TO_TICKS(CONFIG_BLE_OTA_SELF_TEST_TIMEOUT_MS)) == pdTRUE) {
        passed = ble_ota_self_test();
    } else {
        ESP_LOGE(TAG, "self-test: not advertising after %d ms", CONFIG_BLE_OTA_SELF_TEST_TIMEOUT_MS);
    }
    if (!passed) {
        /* A new image that could not take the next update rolls back before
         * its application starts; a confirmed one still runs it. */
        ESP_LOGE(TAG, "self-test FAILED");
        (void)ota_task_confirm_boot(false);
        ble_ota_app_start();
        return;
    }
    /* The application runs before the image is judged, and has its say. */
    ble_ota_app_start();
    passed = ble_ota_app_check();
    ESP_LOGI(TAG, "self-test %s", passed ? "passed" : "FAILED");
    /* Marks a new image valid, rolls it back, or (CLIENT_CONFIRM) leaves it
     * pending for the client; the confirm window is counted from here. */
    (void)ota_task_confirm_boot(passed);
}
