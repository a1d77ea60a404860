/*
 * The queue in front of the core's task (ble_ota_queue.c): what the ESP32's
 * OTA task sizes its message buffer by, takes into it, and discards from
 * it, checked with a client that streams as the protocol allows.
 */
#include "test_queue.h"

#include <string.h>

#include "ble_ota_queue.h"
#include "test.h"

/* The ESP32's FreeRTOS message buffer stores a size_t before each item. */
#define ESP32_PREFIX 4u
/* The longest request a client sends: BEGIN with PATCH (its base) and the session MAC. */
#define LONGEST_REQUEST (BLE_OTA_BEGIN_PATCH_SIZE + BLE_OTA_AUTH_MAC_LEN)

/* A client streams `data` image bytes per packet while next - acked <
 * window, nothing acknowledged, into a queue of `bytes` bytes: how many
 * packets the queue refused, and the space left. */
static unsigned
stream_window(size_t prefix, size_t bytes, uint32_t window, uint32_t data, size_t *space)
{
    unsigned refused = 0;

    *space = bytes;
    for (uint32_t next = 0; next < window; next += data) {
        const size_t len = BLE_OTA_STREAM_HEADER + data;
        if (ble_ota_queue_admit(prefix, *space, BLE_OTA_QUEUE_STREAM, len)) {
            *space -= BLE_OTA_QUEUE_ITEM_COST(prefix, len);
        } else {
            refused++;
        }
    }
    return refused;
}

static void
test_queue_holds_a_full_window_at_every_packet_size(void)
{
    const size_t prefixes[] = { ESP32_PREFIX, 8u };

    for (size_t p = 0; p < sizeof(prefixes) / sizeof(prefixes[0]); p++) {
        const size_t prefix = prefixes[p];
        /* Kconfig BLE_OTA_WINDOW_KB: 4 to 32. */
        for (uint32_t window = 4096; window <= 32768; window += 4096) {
            const size_t bytes = BLE_OTA_QUEUE_BYTES(prefix, window);
            for (uint32_t data = BLE_OTA_QUEUE_FULL_WINDOW_MIN_DATA; data <= BLE_OTA_MAX_PACKET - BLE_OTA_STREAM_HEADER;
                 data++) {
                size_t space;
                if (stream_window(prefix, bytes, window, data, &space) != 0) {
                    test_failf(__FILE__, __LINE__, "window %u of %u-byte packets (prefix %zu) does not fit %zu bytes",
                               (unsigned)window, (unsigned)data, prefix, bytes);
                    return;
                }
                /* With the window queued, END and ABORT (and even two
                 * authenticated BEGINs of a patch) still get in. */
                CHECK(ble_ota_queue_admit(prefix, space, BLE_OTA_QUEUE_COMMAND, LONGEST_REQUEST));
                space -= BLE_OTA_QUEUE_ITEM_COST(prefix, LONGEST_REQUEST);
                CHECK(ble_ota_queue_admit(prefix, space, BLE_OTA_QUEUE_COMMAND, LONGEST_REQUEST));
            }
        }
    }
}

static void
test_queue_small_packets_never_take_the_reserve(void)
{
    /* ATT MTU 23: 16 image bytes per packet. A client that really fills the
     * window loses packets (RESYNC recovers them), never its requests. */
    const size_t bytes = BLE_OTA_QUEUE_BYTES(ESP32_PREFIX, 32768);
    size_t space;

    CHECK(stream_window(ESP32_PREFIX, bytes, 32768, 16, &space) > 0);
    CHECK(space >= BLE_OTA_QUEUE_COMMAND_RESERVE(ESP32_PREFIX));
    CHECK(!ble_ota_queue_admit(ESP32_PREFIX, space, BLE_OTA_QUEUE_STREAM, BLE_OTA_STREAM_HEADER + 16));
    CHECK(ble_ota_queue_admit(ESP32_PREFIX, space, BLE_OTA_QUEUE_COMMAND, LONGEST_REQUEST));
    space -= BLE_OTA_QUEUE_ITEM_COST(ESP32_PREFIX, LONGEST_REQUEST);
    CHECK(ble_ota_queue_admit(ESP32_PREFIX, space, BLE_OTA_QUEUE_COMMAND, LONGEST_REQUEST));
    /* Nothing longer than the largest value the GATT layer takes. */
    CHECK(!ble_ota_queue_admit(ESP32_PREFIX, bytes, BLE_OTA_QUEUE_COMMAND, BLE_OTA_MAX_PACKET + 1));
    CHECK(ble_ota_queue_admit(ESP32_PREFIX, bytes, BLE_OTA_QUEUE_COMMAND, BLE_OTA_MAX_PACKET));
}

static void
test_queue_ram_as_documented(void)
{
    /* firmware/README.md and Kconfig BLE_OTA_WINDOW_KB: about 39 KB of
     * queue for the 32 KB window, about 20 KB for 16 KB. */
    const size_t at32 = BLE_OTA_QUEUE_BYTES(ESP32_PREFIX, 32768);
    const size_t at16 = BLE_OTA_QUEUE_BYTES(ESP32_PREFIX, 16384);

    CHECK(at32 >= 38500 && at32 < 39500);
    CHECK(at16 >= 19500 && at16 < 20500);
}

static void
test_queue_items_round_trip(void)
{
    uint8_t value[BLE_OTA_MAX_PACKET + 1];
    uint8_t item[BLE_OTA_QUEUE_ITEM_MAX];
    ble_ota_queue_item_t out;

    for (size_t i = 0; i < sizeof(value); i++) {
        value[i] = (uint8_t)(i * 7u);
    }
    const size_t n = ble_ota_queue_encode(item, BLE_OTA_QUEUE_STREAM, 0xBEEF, value, BLE_OTA_MAX_PACKET);
    CHECK_EQ(n, BLE_OTA_QUEUE_ITEM_MAX);
    CHECK(ble_ota_queue_decode(item, n, &out));
    CHECK_EQ(out.kind, BLE_OTA_QUEUE_STREAM);
    CHECK_EQ(out.link, 0xBEEF);
    CHECK_EQ(out.len, BLE_OTA_MAX_PACKET);
    CHECK(memcmp(out.value, value, out.len) == 0);

    /* An empty request is queued too: the core answers it (the write
     * itself already failed). */
    const size_t empty = ble_ota_queue_encode(item, BLE_OTA_QUEUE_COMMAND, 3, value, 0);
    CHECK_EQ(empty, BLE_OTA_QUEUE_ITEM_HEADER);
    CHECK(ble_ota_queue_decode(item, empty, &out));
    CHECK_EQ(out.kind, BLE_OTA_QUEUE_COMMAND);
    CHECK_EQ(out.len, 0);

    CHECK_EQ(ble_ota_queue_encode(item, BLE_OTA_QUEUE_STREAM, 0, value, BLE_OTA_MAX_PACKET + 1), 0);
    CHECK_EQ(ble_ota_queue_encode(item, (ble_ota_queue_kind_t)3, 0, value, 1), 0);
    CHECK(!ble_ota_queue_decode(item, BLE_OTA_QUEUE_ITEM_HEADER - 1, &out));
    item[0] = 0;
    CHECK(!ble_ota_queue_decode(item, BLE_OTA_QUEUE_ITEM_HEADER, &out));
}

static void
test_queue_link_count(void)
{
    unsigned count = 0;   /* the Bluetooth task's */
    unsigned applied = 0; /* what the core has seen */

    /* A client connects and writes; the core catches up before the write. */
    count = ble_ota_link_count_next(count, true);
    const uint16_t first = ble_ota_link_count_stamp(count);
    ble_ota_link_catch_up_t c = ble_ota_link_count_catch_up(applied, count);
    CHECK(!c.disconnected && c.connected);
    applied = count;
    CHECK(ble_ota_link_count_current(applied, first));

    /* It drops and another connects before the core runs again: one
     * disconnect and one connect, and the first link's queued writes are
     * discarded. */
    count = ble_ota_link_count_next(count, false);
    count = ble_ota_link_count_next(count, true);
    c = ble_ota_link_count_catch_up(applied, count);
    CHECK(c.disconnected && c.connected);
    applied = count;
    CHECK(!ble_ota_link_count_current(applied, first));
    CHECK(ble_ota_link_count_current(applied, ble_ota_link_count_stamp(count)));

    /* A connect reported twice (a disconnect lost): still a new link. */
    const unsigned before = count;
    count = ble_ota_link_count_next(count, true);
    CHECK((count & 1u) != 0);
    CHECK(count != before);
    c = ble_ota_link_count_catch_up(applied, count);
    CHECK(c.disconnected && c.connected);
    applied = count;

    /* A link that came and went while the core was busy: it never saw it. */
    count = ble_ota_link_count_next(count, false);
    c = ble_ota_link_count_catch_up(applied, count);
    CHECK(c.disconnected && !c.connected);
    applied = count;
    count = ble_ota_link_count_next(count, true);
    count = ble_ota_link_count_next(count, false);
    c = ble_ota_link_count_catch_up(applied, count);
    CHECK(!c.disconnected && !c.connected);
    c = ble_ota_link_count_catch_up(count, count);
    CHECK(!c.disconnected && !c.connected);
}

static void
test_queue_config_fit(void)
{
    ble_ota_config_t config;

    ble_ota_config_default(&config);
    config.window = 16384;
    CHECK(!ble_ota_queue_fit_config(&config, 32768));
    CHECK_EQ(config.window, 16384);
    CHECK_EQ(config.max_packet, BLE_OTA_MAX_PACKET);

    /* More than the queue can hold, or nothing: the queue's window. */
    config.window = 32768;
    CHECK(ble_ota_queue_fit_config(&config, 16384));
    CHECK_EQ(config.window, 16384);
    config.window = 0;
    CHECK(ble_ota_queue_fit_config(&config, 16384));
    CHECK_EQ(config.window, 16384);

    /* A packet without room for an image byte, or longer than the GATT
     * layer takes: the largest. */
    config.max_packet = BLE_OTA_STREAM_HEADER;
    CHECK(ble_ota_queue_fit_config(&config, 16384));
    CHECK_EQ(config.max_packet, BLE_OTA_MAX_PACKET);
    config.max_packet = BLE_OTA_MAX_PACKET + 1;
    CHECK(ble_ota_queue_fit_config(&config, 16384));
    CHECK_EQ(config.max_packet, BLE_OTA_MAX_PACKET);
    config.max_packet = BLE_OTA_STREAM_HEADER + 1;
    CHECK(!ble_ota_queue_fit_config(&config, 16384));
}

static void
test_queue_task_wait(void)
{
    /* Until the next tick is due, at most one tick while idle work is left. */
    CHECK_EQ(ble_ota_queue_wait_ticks(0, 20, false), 20);
    CHECK_EQ(ble_ota_queue_wait_ticks(15, 20, false), 5);
    CHECK_EQ(ble_ota_queue_wait_ticks(20, 20, false), 0);
    CHECK_EQ(ble_ota_queue_wait_ticks(25, 20, false), 0);
    CHECK_EQ(ble_ota_queue_wait_ticks(0, 20, true), 1);
    CHECK_EQ(ble_ota_queue_wait_ticks(20, 20, true), 0);
}

void
test_queue_run_all(void)
{
    RUN(test_queue_holds_a_full_window_at_every_packet_size);
    RUN(test_queue_small_packets_never_take_the_reserve);
    RUN(test_queue_ram_as_documented);
    RUN(test_queue_items_round_trip);
    RUN(test_queue_link_count);
    RUN(test_queue_config_fit);
    RUN(test_queue_task_wait);
}
