/*
 * The OTA task and the queue in front of it.
 *
 * Why a task: esp_ota_write erases a 4 KB sector (about 45 ms) each time the
 * image crosses into a new one, and esp_ota_end reads back and hashes the
 * whole image (hundreds of ms). Done on the NimBLE host task, as the seed
 * protocol does, that stalls every other ATT exchange and lets incoming
 * Write Commands pile up in the controller. Protocol v2 streams with Write
 * Commands, so the host task only copies each packet into a queue and the
 * OTA task does the flash work at its own pace; the window (OTA_TASK_WINDOW)
 * is what the queue guarantees to hold.
 *
 * Why a FreeRTOS message buffer and not a queue of fixed-size slots: a
 * packet's size follows the client's ATT MTU (20 to 514 bytes). Fixed
 * 518-byte slots would need 36 KB to hold a 16 KB window of 244-byte
 * packets (MTU 247) and far more at smaller MTUs; a message buffer stores
 * each packet with only a 4-byte length in front. One writer (the host
 * task) and one reader (this task), as message buffers require. Its
 * storage, and this task's stack, come from the heap once, at start-up:
 * nothing is allocated per packet, and on the original ESP32 about 47 KB
 * stays out of static DRAM, which the Bluetooth controller's reserve leaves
 * at about 122 KB for everything (the heap also spans the region the ROM
 * frees after boot).
 *
 * Why a mutex around the core: the core is entered from three tasks: this
 * one (OTA Stream, OTA Command, tick), the host task (the seed protocol,
 * whose writes stay synchronous because their ATT errors must be in the
 * write response) and app_main (confirm_boot at boot). Routing the seed
 * writes through this task as well would still make the host task wait for
 * the answer, i.e. for the same flash operation, so it would buy nothing and
 * add a reply channel. A mutex (with priority inheritance) is the simpler
 * correct choice. The host task takes it only for the seed protocol; for
 * protocol v2 it never does: v2 writes go through the queue, a lost link is
 * a counter the next core user applies (ota_task_link_event), and OTA Info
 * is served from a snapshot (ota_task_info). So the host task never waits
 * for a v2 flash operation.
 */
#include "ota_task.h"

#include <stdatomic.h>
#include <string.h>

#include "esp_heap_caps.h"
#include "esp_log.h"
#include "freertos/FreeRTOS.h"
#include "freertos/message_buffer.h"
#include "freertos/semphr.h"
#include "freertos/task.h"

#include "ble_ota_protocol.h"
#include "ble_ota_queue.h"

static const char *TAG = "ota_task";

/* Each item in the message buffer is stored after its length. */
#define OTA_TASK_MSG_LEN_BYTES sizeof(configMESSAGE_BUFFER_LENGTH_TYPE)

/* Sized for OTA_TASK_WINDOW by the portable rules (ble_ota_queue.h): a full
 * window of packets at any ATT MTU of 71 or more, plus two of the longest
 * requests. */
#define OTA_TASK_QUEUE_BYTES BLE_OTA_QUEUE_BYTES(OTA_TASK_MSG_LEN_BYTES, OTA_TASK_WINDOW)

_Static_assert(OTA_TASK_WINDOW <= UINT16_MAX, "window is a u16 on the air");

/* ble_ota_core_tick period ("every 100-1000 ms"): the abandon timeout and
 * the confirm window are counted in seconds, and the Info snapshot is
 * refreshed at least this often during a transfer. */
#define OTA_TASK_TICK_MS 200

/* esp_ota_end (image verification: segment walk, SHA-256, and a signature
 * check when secure boot is on), the core's own SHA-256 and ESP_LOG
 * formatting run on this stack; ESP-IDF's OTA examples use 8 KB for the
 * same calls. */
#define OTA_TASK_STACK_BYTES 8192

/* Below the NimBLE host task (configMAX_PRIORITIES - 4) and esp_timer, so
 * received packets are always queued before flash work resumes; above
 * app_main and idle. */
#define OTA_TASK_PRIORITY 5

static ble_ota_core_t s_core;
static ble_ota_config_t s_config; /* as validated for the queue */

static StaticSemaphore_t s_core_lock_buf;
static SemaphoreHandle_t s_core_lock;

/* Incremented by the host task each time a client connects and each time
 * its link drops, so it is odd while a link is up; only the host task
 * writes it. s_link_applied (guarded by s_core_lock) is the value the core
 * has seen: whoever locks the core and finds them different tells the core
 * first (ota_task_apply_link). Several events in a row fold into one
 * disconnect and one connect: nothing reached the core from the links in
 * between (their queued writes are discarded by the link check). */
static atomic_uint s_link;
static unsigned s_link_applied;

/* + 1: a FreeRTOS stream buffer keeps one byte free to tell full from empty. */
#define OTA_TASK_QUEUE_STORAGE_BYTES (OTA_TASK_QUEUE_BYTES + 1)

static StaticMessageBuffer_t s_queue_buf;
static uint8_t *s_queue_storage; /* OTA_TASK_QUEUE_STORAGE_BYTES, internal RAM */
static MessageBufferHandle_t s_queue;

/* Host task only: the item being queued, and the count of Stream packets
 * dropped in a row (logged once per burst, not once per packet). */
static uint8_t s_tx_item[BLE_OTA_QUEUE_ITEM_MAX];
static uint32_t s_dropped;

/* OTA task only: the item being processed. */
static uint8_t s_rx_item[BLE_OTA_QUEUE_ITEM_MAX];

/* The OTA Info snapshot. s_info_work is written under s_core_lock; s_info
 * is copied under s_info_lock, which is never held for more than a copy. */
static uint8_t s_info_work[BLE_OTA_INFO_SIZE];
static StaticSemaphore_t s_info_lock_buf;
static SemaphoreHandle_t s_info_lock;
static uint8_t s_info[BLE_OTA_INFO_SIZE];
static size_t s_info_len;

static TaskHandle_t s_task;

ble_ota_core_t *
ota_task_core_lock(void)
{
    /* Cannot time out: portMAX_DELAY blocks indefinitely in ESP-IDF
     * (INCLUDE_vTaskSuspend is 1). */
    (void)xSemaphoreTake(s_core_lock, portMAX_DELAY);

    const unsigned link = atomic_load(&s_link);
    const ble_ota_link_catch_up_t catch_up = ble_ota_link_count_catch_up(s_link_applied, link);
    if (catch_up.disconnected) {
        ble_ota_core_disconnected(&s_core);
    }
    if (catch_up.connected) {
        ble_ota_core_connected(&s_core);
    }
    s_link_applied = link;
    return &s_core;
}

/** Releases the core; with refresh, first renews the OTA Info snapshot. */
static void
ota_task_core_release(bool refresh)
{
    if (refresh) {
        const size_t len = ble_ota_core_info_read(&s_core, s_info_work, sizeof(s_info_work));
        if (len == 0) {
            ESP_LOGE(TAG, "OTA Info does not fit %u bytes", (unsigned)sizeof(s_info_work));
        } else {
            (void)xSemaphoreTake(s_info_lock, portMAX_DELAY);
            memcpy(s_info, s_info_work, len);
            s_info_len = len;
            (void)xSemaphoreGive(s_info_lock);
        }
    }
    (void)xSemaphoreGive(s_core_lock);
}

void
ota_task_core_unlock(void)
{
    /* Calls from other tasks (seed packets and controls, confirm_boot)
     * come at most one per ATT round trip and may change what Info shows:
     * refresh every time. */
    ota_task_core_release(true);
}

size_t
ota_task_info(uint8_t *out, size_t cap)
{
    size_t len = 0;

    if (s_info_lock == NULL) { /* before ota_task_start */
        return 0;
    }
    (void)xSemaphoreTake(s_info_lock, portMAX_DELAY);
    if (s_info_len <= cap) {
        memcpy(out, s_info, s_info_len);
        len = s_info_len;
    }
    (void)xSemaphoreGive(s_info_lock);
    return len;
}

ble_ota_img_state_t
ota_task_confirm_boot(bool self_test_passed)
{
    ble_ota_core_t *core = ota_task_core_lock();
    const ble_ota_img_state_t state = ble_ota_core_confirm_boot(core, self_test_passed);

    ota_task_core_unlock();
    return state;
}

bool
ota_task_post(ota_task_kind_t kind, const uint8_t *data, size_t len)
{
    if (s_queue == NULL || len > BLE_OTA_MAX_PACKET) {
        return false;
    }
    /* Only this (host) task sends, so the free space can only grow between
     * this check and the send. */
    const size_t space = xMessageBufferSpacesAvailable(s_queue);

    if (!ble_ota_queue_admit(OTA_TASK_MSG_LEN_BYTES, space, (ble_ota_queue_kind_t)kind, len)) {
        if (kind == OTA_TASK_STREAM && s_dropped++ == 0) {
            ESP_LOGW(TAG, "queue full (%u bytes free): dropping Stream packets", (unsigned)space);
        }
        return false;
    }
    if (kind == OTA_TASK_STREAM && s_dropped != 0) {
        ESP_LOGW(TAG, "%lu Stream packets dropped", (unsigned long)s_dropped);
        s_dropped = 0;
    }

    const size_t item_len = ble_ota_queue_encode(s_tx_item, (ble_ota_queue_kind_t)kind,
                                                 ble_ota_link_count_stamp(atomic_load(&s_link)), data, len);
    if (item_len == 0 || xMessageBufferSend(s_queue, s_tx_item, item_len, 0) == 0) {
        /* Cannot happen after the check above; handled all the same. */
        ESP_LOGE(TAG, "queueing %u bytes failed", (unsigned)len);
        return false;
    }
    return true;
}

bool
ota_task_link_is_current(void)
{
    /* Called under the core lock (from the core, through the port), which
     * guards s_link_applied. */
    return atomic_load(&s_link) == s_link_applied;
}

void
ota_task_link_event(bool up)
{
    /* Single writer (the host task): a plain load and store suffice. The
     * parity is what matters; an event that would not change it (a lost
     * one) is made to. */
    atomic_store(&s_link, ble_ota_link_count_next(atomic_load(&s_link), up));
}

/** Feeds one queued write to the core. */
static void
ota_task_process(const uint8_t *data, size_t len)
{
    ble_ota_queue_item_t item;

    if (!ble_ota_queue_decode(data, len, &item)) {
        ESP_LOGE(TAG, "queue item of %u bytes", (unsigned)len);
        return;
    }
    /* Written on a link that has dropped since: its client cannot get the
     * answer, and an answer now could reach the next client. Checked under
     * the lock, against the link the core has been told of: a link that
     * drops while this task waits for the lock is seen here too. */
    ble_ota_core_t *core = ota_task_core_lock();
    if (!ble_ota_link_count_current(s_link_applied, item.link)) {
        ESP_LOGD(TAG, "discarding a write from a dropped link");
        ota_task_core_release(true); /* the lock may have applied link events: Info shows them */
        return;
    }
    if (item.kind == BLE_OTA_QUEUE_STREAM) {
        (void)ble_ota_core_stream_write(core, item.value, item.len);
        /* Refreshing Info after every packet would be wasted work during a
         * burst: do it once the burst is processed (and at every tick). */
        ota_task_core_release(xMessageBufferIsEmpty(s_queue) == pdTRUE);
    } else {
        /* The write response went out when the request was queued; the
         * core's answer is a notification, so its status is only logged. */
        const ble_ota_status_t status = ble_ota_core_command_write(core, item.value, item.len);
        if (status != BLE_OTA_OK) {
            ESP_LOGW(TAG, "OTA Command of %u bytes: status %d", (unsigned)item.len, (int)status);
        }
        ota_task_core_release(true);
    }
}

/*
 * The idle erase (ble_ota_core_idle): one erase step whenever the queue is
 * empty, so the next update's slot is erased before its data comes
 * (docs/PROTOCOL.md, *What is erased when*). A packet or request that
 * arrives meanwhile waits for one step at most (a 64 KB block, or a 4 KB
 * sector while a client is connected), then goes first. Between steps the
 * task blocks for a tick, so lower-priority tasks (and the idle task the
 * task watchdog checks) run during a long erase pass.
 */
static bool
ota_task_idle_step(void)
{
    const bool more = ble_ota_core_idle(ota_task_core_lock());

    ota_task_core_release(true); /* the lock may have applied link events */
    return more;
}

static void
ota_task_main(void *arg)
{
    (void)arg;
    const TickType_t period = pdMS_TO_TICKS(OTA_TASK_TICK_MS) > 0 ? pdMS_TO_TICKS(OTA_TASK_TICK_MS) : 1;
    TickType_t last_tick = xTaskGetTickCount();
    /* Idle work may be left: asked at every tick (a transfer may have
     * ended), then step after step while the core says more is left. */
    bool idle_more = true;

    /* The free internal RAM, for a first run on a new board or configuration
     * (docs/HARDWARE.md): NimBLE and the controller take theirs as it runs. */
    ESP_LOGI(TAG, "OTA task started: window %u bytes, queue %u bytes; internal RAM free %u, least free so far %u",
             (unsigned)s_config.window, (unsigned)OTA_TASK_QUEUE_STORAGE_BYTES,
             (unsigned)heap_caps_get_free_size(MALLOC_CAP_INTERNAL),
             (unsigned)heap_caps_get_minimum_free_size(MALLOC_CAP_INTERNAL));
    for (;;) {
        /* The queue's receive timeout doubles as the core's tick timer, so
         * the tick runs in the task that owns the flash work. */
        const TickType_t wait = (TickType_t)ble_ota_queue_wait_ticks((uint32_t)(xTaskGetTickCount() - last_tick),
                                                                     (uint32_t)period, idle_more);
        const size_t len = xMessageBufferReceive(s_queue, s_rx_item, sizeof(s_rx_item), wait);

        if (len > 0) {
            ota_task_process(s_rx_item, len);
        }
        if (xTaskGetTickCount() - last_tick >= period) {
            last_tick = xTaskGetTickCount();
            ble_ota_core_tick(ota_task_core_lock());
            ota_task_core_release(true);
            idle_more = true;
        }
        if (len == 0 && idle_more && xMessageBufferIsEmpty(s_queue) == pdTRUE) {
            idle_more = ota_task_idle_step();
        }
    }
}

/** The queue, its storage and the locks: what start-up allocates once. */
static bool
ota_task_alloc(void)
{
    /* Internal RAM: the host task writes it, and PSRAM is out of reach
     * while the flash cache is off. */
    s_queue_storage = heap_caps_malloc(OTA_TASK_QUEUE_STORAGE_BYTES, MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT);
    if (s_queue_storage == NULL) {
        ESP_LOGE(TAG, "no %u bytes of internal RAM for the queue (largest free block %u)",
                 (unsigned)OTA_TASK_QUEUE_STORAGE_BYTES,
                 (unsigned)heap_caps_get_largest_free_block(MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT));
        return false;
    }
    s_core_lock = xSemaphoreCreateMutexStatic(&s_core_lock_buf);
    s_info_lock = xSemaphoreCreateMutexStatic(&s_info_lock_buf);
    s_queue = xMessageBufferCreateStatic(OTA_TASK_QUEUE_STORAGE_BYTES, s_queue_storage, &s_queue_buf);
    if (s_core_lock == NULL || s_info_lock == NULL || s_queue == NULL) {
        ESP_LOGE(TAG, "static mutex or message buffer creation failed");
        return false;
    }
    return true;
}

bool
ota_task_start(const ble_ota_port_t *port, const ble_ota_config_t *config)
{
    /* RAM first: a start-up that fails here must not leave a copy of the
     * device key behind (s_config holds one until the core has its own). */
    if (!ota_task_alloc()) {
        return false;
    }
    s_config = *config;
    /* The window and packet size are promises to the client that the
     * queue must keep. */
    if (ble_ota_queue_fit_config(&s_config, OTA_TASK_WINDOW)) {
        ESP_LOGW(TAG, "window %u / max_packet %u out of range: using %u / %u", (unsigned)config->window,
                 (unsigned)config->max_packet, (unsigned)s_config.window, (unsigned)s_config.max_packet);
    }

    ble_ota_core_init(&s_core, port, &s_config);
    /* The core keeps the device key; no second copy stays in RAM. */
    memset(s_config.auth_key, 0, sizeof(s_config.auth_key));
    /* A first Info value, so a client that reads before anything happened
     * gets one. */
    (void)ota_task_core_lock();
    ota_task_core_unlock();

    /* ESP-IDF's FreeRTOS counts stack depth in bytes; the stack comes from internal RAM. */
    if (xTaskCreate(ota_task_main, "ble_ota", OTA_TASK_STACK_BYTES, NULL, OTA_TASK_PRIORITY, &s_task) != pdPASS) {
        ESP_LOGE(TAG, "OTA task creation failed: no %u bytes of internal RAM for its stack",
                 (unsigned)OTA_TASK_STACK_BYTES);
        s_task = NULL;
        return false;
    }
    return true;
}

bool
ota_task_running(void)
{
    return s_task != NULL;
}

bool
ota_task_is_current(void)
{
    return s_task != NULL && xTaskGetCurrentTaskHandle() == s_task;
}
