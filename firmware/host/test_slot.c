/*
 * The update slot's plan (ble_ota_slot.c): the decisions the ESP32 port
 * and the host platform take from it, checked on the plan alone. The host
 * port's use of it is covered through the core in test_v2.c (idle erase,
 * power loss, a platform without a pre-erased writer).
 */
#include "test_slot.h"

#include <string.h>

#include "ble_ota_slot.h"
#include "test.h"

#define KB 1024u
/* The firmware's partitions.csv: two 1.875 MB app slots. */
#define SLOT (1920u * KB)

/* Writes image_size bytes in 4 KB blocks as the core does, erasing what the
 * plan says; records which sectors were erased and how often. */
static unsigned s_erased[SLOT / BLE_OTA_SLOT_SECTOR];
static unsigned s_blocks;
static unsigned s_sectors;

static void
mark(const ble_ota_erase_t *e)
{
    for (uint32_t off = e->offset; off < e->offset + e->size; off += BLE_OTA_SLOT_SECTOR) {
        s_erased[off / BLE_OTA_SLOT_SECTOR]++;
    }
    if (e->size == BLE_OTA_SLOT_BLOCK) {
        s_blocks++;
    } else {
        s_sectors++;
    }
}

static void
reset_marks(void)
{
    memset(s_erased, 0, sizeof(s_erased));
    s_blocks = 0;
    s_sectors = 0;
}

static void
write_all(ble_ota_slot_t *slot, uint32_t image_size)
{
    ble_ota_erase_t e;

    for (uint32_t at = 0; at < image_size; at += 4 * KB) {
        const size_t len = image_size - at < 4 * KB ? image_size - at : 4 * KB;
        CHECK_EQ(ble_ota_slot_write_check(slot, len), BLE_OTA_PORT_OK);
        for (int guard = 0; ble_ota_slot_erase_next(slot, len, &e); guard++) {
            CHECK(guard < 32);
            CHECK(e.offset % BLE_OTA_SLOT_SECTOR == 0);
            CHECK(e.offset + e.size <= SLOT);
            mark(&e);
            ble_ota_slot_erased(slot, &e);
        }
        /* Everything the data lands on is erased before it is written. */
        for (uint32_t off = at; off < at + len; off += BLE_OTA_SLOT_SECTOR) {
            CHECK(s_erased[off / BLE_OTA_SLOT_SECTOR] > 0);
        }
        ble_ota_slot_written(slot, len);
    }
}

/* Idle steps until the plan says no more; returns the steps taken. */
static unsigned
idle_all(ble_ota_slot_t *slot, bool short_step)
{
    ble_ota_erase_t e;
    unsigned steps = 0;

    while (steps < 1000 && ble_ota_slot_prepare_next(slot, short_step, BLE_OTA_IMG_VALID, &e)) {
        mark(&e);
        steps++;
        if (!ble_ota_slot_prepared(slot, &e)) {
            break;
        }
    }
    return steps;
}

static void
test_slot_begin_refusals_change_nothing(void)
{
    ble_ota_slot_t slot;
    ble_ota_write_mode_t mode;

    ble_ota_slot_init(&slot, 0, true);
    CHECK_EQ(ble_ota_slot_begin(&slot, 1000, BLE_OTA_IMG_VALID, &mode), BLE_OTA_PORT_ERR_NO_SLOT);

    ble_ota_slot_init(&slot, SLOT, true);
    ble_ota_erase_t e;
    for (int i = 0; i < 3; i++) { /* three blocks erased while idle, then a transfer comes */
        CHECK(ble_ota_slot_prepare_next(&slot, false, BLE_OTA_IMG_VALID, &e));
        CHECK(ble_ota_slot_prepared(&slot, &e));
    }
    const uint32_t prepared = slot.prepared_to;
    CHECK_EQ(prepared, 3 * BLE_OTA_SLOT_BLOCK);
    /* The pending image's rollback goes to this slot (esp_ota_begin refuses it too). */
    CHECK_EQ(ble_ota_slot_begin(&slot, 1000, BLE_OTA_IMG_PENDING_VERIFY, &mode), BLE_OTA_PORT_ERR_STATE);
    CHECK_EQ(ble_ota_slot_begin(&slot, SLOT + 1, BLE_OTA_IMG_VALID, &mode), BLE_OTA_PORT_ERR_TOO_LARGE);
    CHECK(!slot.open);
    CHECK_EQ(slot.prepared_to, prepared);
    /* The largest image fits. */
    CHECK_EQ(ble_ota_slot_begin(&slot, SLOT, BLE_OTA_IMG_VALID, &mode), BLE_OTA_PORT_OK);
    CHECK(slot.open);
}

static void
test_slot_v2_erases_ahead_in_blocks(void)
{
    ble_ota_slot_t slot;
    ble_ota_write_mode_t mode;
    const uint32_t image = 200 * KB + 100; /* 3 blocks, then 3 sectors (the last one for 100 bytes) */

    ble_ota_slot_init(&slot, SLOT, true);
    reset_marks();
    CHECK_EQ(ble_ota_slot_begin(&slot, image, BLE_OTA_IMG_VALID, &mode), BLE_OTA_PORT_OK);
    CHECK_EQ(mode, BLE_OTA_WRITE_PRE_ERASED);
    CHECK_OK(write_all(&slot, image));
    CHECK_EQ(s_blocks, 3u);
    CHECK_EQ(s_sectors, 3u);
    /* Each sector of the image once, nothing past its last sector. */
    const uint32_t sectors = (image + BLE_OTA_SLOT_SECTOR - 1) / BLE_OTA_SLOT_SECTOR;
    for (uint32_t i = 0; i < SLOT / BLE_OTA_SLOT_SECTOR; i++) {
        CHECK_EQ(s_erased[i], i < sectors ? 1u : 0u);
    }
    CHECK_EQ(slot.written, image);
    /* The slot's end: one byte more is too large, not a flash error. */
    CHECK_EQ(ble_ota_slot_write_check(&slot, SLOT - image), BLE_OTA_PORT_OK);
    CHECK_EQ(ble_ota_slot_write_check(&slot, SLOT - image + 1), BLE_OTA_PORT_ERR_TOO_LARGE);
    ble_ota_slot_end(&slot, true);
    CHECK(slot.complete);
    CHECK_EQ(ble_ota_slot_write_check(&slot, 1), BLE_OTA_PORT_ERR_STATE);
}

static void
test_slot_v2_takes_over_the_idle_erase(void)
{
    ble_ota_slot_t slot;
    ble_ota_write_mode_t mode;
    const uint32_t image = 300 * KB;

    /* Part of the slot erased while idle: the transfer erases only the rest. */
    ble_ota_slot_init(&slot, SLOT, true);
    reset_marks();
    ble_ota_erase_t e;
    for (int i = 0; i < 2; i++) {
        CHECK(ble_ota_slot_prepare_next(&slot, false, BLE_OTA_IMG_VALID, &e));
        CHECK_EQ(e.first, i == 0);
        mark(&e);
        CHECK(ble_ota_slot_prepared(&slot, &e));
    }
    CHECK_EQ(ble_ota_slot_begin(&slot, image, BLE_OTA_IMG_VALID, &mode), BLE_OTA_PORT_OK);
    CHECK_EQ(slot.erased_to, 2 * BLE_OTA_SLOT_BLOCK);
    CHECK_EQ(slot.prepared_to, 0u);
    CHECK_OK(write_all(&slot, image));
    for (uint32_t i = 0; i < image / BLE_OTA_SLOT_SECTOR; i++) {
        CHECK_EQ(s_erased[i], 1u);
    }

    /* The whole slot erased while idle: the transfer only writes. */
    ble_ota_slot_init(&slot, SLOT, true);
    reset_marks();
    CHECK_EQ(idle_all(&slot, false), SLOT / BLE_OTA_SLOT_BLOCK);
    CHECK(!ble_ota_slot_prepare_next(&slot, false, BLE_OTA_IMG_VALID, &e));
    CHECK_EQ(ble_ota_slot_begin(&slot, SLOT, BLE_OTA_IMG_VALID, &mode), BLE_OTA_PORT_OK);
    const unsigned blocks = s_blocks;
    const unsigned sectors = s_sectors;
    CHECK_OK(write_all(&slot, SLOT));
    CHECK_EQ(s_blocks, blocks);
    CHECK_EQ(s_sectors, sectors);
}

static void
test_slot_seed_and_older_platforms_are_sequential(void)
{
    ble_ota_slot_t slot;
    ble_ota_write_mode_t mode;
    ble_ota_erase_t e;

    /* The seed's transfer: size unknown, its writer erases sector by
     * sector; what the idle erase did is not taken over (the writer
     * erases every sector again) and the pass starts over afterwards. */
    ble_ota_slot_init(&slot, SLOT, true);
    reset_marks();
    CHECK_EQ(idle_all(&slot, true), SLOT / BLE_OTA_SLOT_SECTOR);
    CHECK_EQ(ble_ota_slot_begin(&slot, 0, BLE_OTA_IMG_VALID, &mode), BLE_OTA_PORT_OK);
    CHECK_EQ(mode, BLE_OTA_WRITE_SEQUENTIAL);
    CHECK_EQ(slot.erased_to, 0u);
    CHECK(!ble_ota_slot_erase_next(&slot, 4 * KB, &e));
    CHECK(!ble_ota_slot_prepare_next(&slot, false, BLE_OTA_IMG_VALID, &e)); /* the transfer holds it */
    ble_ota_slot_abort(&slot);
    CHECK(ble_ota_slot_prepare_next(&slot, false, BLE_OTA_IMG_VALID, &e));
    CHECK_EQ(e.offset, 0u);
    CHECK(e.first);

    /* No writer that erases nothing (ESP-IDF without esp_ota_resume): v2
     * too, and nothing is erased while idle. */
    ble_ota_slot_init(&slot, SLOT, false);
    CHECK(!ble_ota_slot_prepare_next(&slot, false, BLE_OTA_IMG_VALID, &e));
    CHECK_EQ(ble_ota_slot_begin(&slot, 100 * KB, BLE_OTA_IMG_VALID, &mode), BLE_OTA_PORT_OK);
    CHECK_EQ(mode, BLE_OTA_WRITE_SEQUENTIAL);
    CHECK(!ble_ota_slot_erase_next(&slot, 4 * KB, &e));
}

static void
test_slot_idle_erase_steps(void)
{
    ble_ota_slot_t slot;
    ble_ota_write_mode_t mode;
    ble_ota_erase_t e;

    /* A client connected: sectors; once it goes, blocks again from the next block boundary. */
    ble_ota_slot_init(&slot, SLOT, true);
    CHECK(ble_ota_slot_prepare_next(&slot, true, BLE_OTA_IMG_VALID, &e));
    CHECK_EQ(e.size, BLE_OTA_SLOT_SECTOR);
    CHECK(ble_ota_slot_prepared(&slot, &e));
    CHECK(ble_ota_slot_prepare_next(&slot, false, BLE_OTA_IMG_VALID, &e));
    CHECK_EQ(e.offset, BLE_OTA_SLOT_SECTOR);
    CHECK_EQ(e.size, BLE_OTA_SLOT_SECTOR); /* not aligned to a block */
    CHECK(!e.first);
    while (slot.prepared_to < BLE_OTA_SLOT_BLOCK) {
        CHECK(ble_ota_slot_prepare_next(&slot, false, BLE_OTA_IMG_VALID, &e));
        CHECK_EQ(e.size, BLE_OTA_SLOT_SECTOR);
        CHECK(ble_ota_slot_prepared(&slot, &e));
    }
    CHECK(ble_ota_slot_prepare_next(&slot, false, BLE_OTA_IMG_VALID, &e));
    CHECK_EQ(e.size, BLE_OTA_SLOT_BLOCK);

    /* Never while the running image awaits confirmation. */
    CHECK(!ble_ota_slot_prepare_next(&slot, false, BLE_OTA_IMG_PENDING_VERIFY, &e));

    /* A slot that is no whole number of blocks ends in sectors, and the
     * last step says nothing is left. */
    ble_ota_slot_init(&slot, BLE_OTA_SLOT_BLOCK + 2 * BLE_OTA_SLOT_SECTOR, true);
    reset_marks();
    CHECK_EQ(idle_all(&slot, false), 3u);
    CHECK_EQ(s_blocks, 1u);
    CHECK_EQ(s_sectors, 2u);
    CHECK(!ble_ota_slot_prepare_next(&slot, false, BLE_OTA_IMG_VALID, &e));

    /* A failed step stops the pass until the next transfer. */
    ble_ota_slot_init(&slot, SLOT, true);
    CHECK(ble_ota_slot_prepare_next(&slot, false, BLE_OTA_IMG_VALID, &e));
    ble_ota_slot_prepare_stop(&slot);
    CHECK(!ble_ota_slot_prepare_next(&slot, false, BLE_OTA_IMG_VALID, &e));
    CHECK_EQ(ble_ota_slot_begin(&slot, 0, BLE_OTA_IMG_VALID, &mode), BLE_OTA_PORT_OK);
    ble_ota_slot_end(&slot, false);
    CHECK(ble_ota_slot_prepare_next(&slot, false, BLE_OTA_IMG_VALID, &e));
}

static void
test_slot_complete_image_until_erased_or_replaced(void)
{
    ble_ota_slot_t slot;
    ble_ota_write_mode_t mode;
    ble_ota_erase_t e;

    ble_ota_slot_init(&slot, SLOT, true);
    CHECK_EQ(ble_ota_slot_begin(&slot, 8 * KB, BLE_OTA_IMG_VALID, &mode), BLE_OTA_PORT_OK);
    ble_ota_slot_end(&slot, false);
    CHECK(!slot.complete); /* refused at end: nothing to select */
    CHECK_EQ(ble_ota_slot_begin(&slot, 8 * KB, BLE_OTA_IMG_VALID, &mode), BLE_OTA_PORT_OK);
    ble_ota_slot_end(&slot, true);
    CHECK(slot.complete);
    /* The idle erase's first step removes it (the core only erases a slot
     * nobody is to restart into, but the port must not select a slot it erased). */
    CHECK(ble_ota_slot_prepare_next(&slot, false, BLE_OTA_IMG_VALID, &e));
    CHECK(ble_ota_slot_prepared(&slot, &e));
    CHECK(!slot.complete);
    /* A new transfer replaces it, and so does one that is dropped. */
    CHECK_EQ(ble_ota_slot_begin(&slot, 8 * KB, BLE_OTA_IMG_VALID, &mode), BLE_OTA_PORT_OK);
    ble_ota_slot_end(&slot, true);
    CHECK_EQ(ble_ota_slot_begin(&slot, 8 * KB, BLE_OTA_IMG_VALID, &mode), BLE_OTA_PORT_OK);
    CHECK(!slot.complete);
    ble_ota_slot_abort(&slot);
    CHECK(!slot.complete);
    CHECK(!slot.open);
}

static void
test_slot_end_refusal(void)
{
    /* Where signatures are required and the image parses, a signature that
     * does not verify is what the ESP32 can tell, whatever else is wrong. */
    CHECK_EQ(ble_ota_slot_end_refusal(true, true, false), BLE_OTA_PORT_ERR_SIGNATURE);
    CHECK_EQ(ble_ota_slot_end_refusal(true, true, true), BLE_OTA_PORT_ERR_INVALID_IMAGE);
    CHECK_EQ(ble_ota_slot_end_refusal(true, false, false), BLE_OTA_PORT_ERR_INVALID_IMAGE);
    CHECK_EQ(ble_ota_slot_end_refusal(false, true, false), BLE_OTA_PORT_ERR_INVALID_IMAGE);
}

void
test_slot_run_all(void)
{
    RUN(test_slot_begin_refusals_change_nothing);
    RUN(test_slot_v2_erases_ahead_in_blocks);
    RUN(test_slot_v2_takes_over_the_idle_erase);
    RUN(test_slot_seed_and_older_platforms_are_sequential);
    RUN(test_slot_idle_erase_steps);
    RUN(test_slot_complete_image_until_erased_or_replaced);
    RUN(test_slot_end_refusal);
}
