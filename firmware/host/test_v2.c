/*
 * Protocol v2 of the core on the host platform (docs/PROTOCOL.md): every
 * request and event, every status the core can produce, the windowed
 * stream (ACK spacing, gaps, duplicates), resume, safe commit with the
 * confirm window, and power loss at every step.
 *
 * The device's clock is the fixture's: tests move it by hand, starting just
 * below the 32-bit wrap so every timer crosses it.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ble_ota_core.h"
#include "ble_ota_le.h"
#include "ble_ota_sha256.h"
#include "host_image.h"
#include "host_port.h"
#include "host_signature.h"
#include "test.h"
#include "test_deflate.h"
#include "test_fixture.h"
#include "test_notes.h"
#include "test_sign.h"
#include "test_v2.h"

/* Stream data per packet in most tests: what an ATT MTU of 247 carries. */
#define CHUNK 240

/* --- helpers ------------------------------------------------------------------ */

static void
core_init(void)
{
    ble_ota_core_init(&s_fx.core, &s_fx.dev.port, &s_config);
}

static ble_ota_status_t
command(const uint8_t *data, size_t len)
{
    return ble_ota_core_command_write(&s_fx.core, data, len);
}

static ble_ota_status_t
op(uint8_t opcode)
{
    return command(&opcode, 1);
}

static void
begin_raw(uint32_t size, const uint8_t sha[32], uint16_t chip_id, uint16_t flags)
{
    uint8_t req[BLE_OTA_BEGIN_SIZE];

    req[0] = BLE_OTA_CMD_BEGIN;
    ble_ota_put_le32(req + 1, size);
    memcpy(req + 5, sha, 32);
    ble_ota_put_le16(req + 37, chip_id);
    ble_ota_put_le16(req + 39, flags);
    command(req, sizeof(req));
}

static void
begin_image(const uint8_t *img, size_t len, uint16_t flags)
{
    uint8_t sha[32];

    ble_ota_sha256(img, len, sha);
    begin_raw((uint32_t)len, sha, HOST_IMAGE_CHIP_ESP32, flags);
}

static bool
answered_plain(uint8_t opcode, uint8_t status)
{
    return answered(opcode, status, 2);
}

/* The last notification is event type with offset. */
static bool
evented(uint8_t type, uint32_t offset)
{
    const cmd_note_t *n = last_note();
    if (n != NULL && n->len == 5 && n->data[0] == type && ble_ota_get_le32(n->data + 1) == offset) {
        return true;
    }
    print_note("last notification", n);
    return false;
}

static bool
failed_with(uint8_t status, uint32_t offset)
{
    const cmd_note_t *n = last_note();
    if (n != NULL && n->len == 6 && n->data[0] == BLE_OTA_EVT_FAILED && n->data[1] == status &&
        ble_ota_get_le32(n->data + 2) == offset) {
        return true;
    }
    print_note("last notification", n);
    return false;
}

static int
count_notes(uint8_t type, int from)
{
    int count = 0;
    for (int i = from; i < s_fx.cmd_count && i < MAX_CMD_NOTES; i++) {
        count += s_fx.cmds[i].data[0] == type;
    }
    return count;
}

static void
stream_packet(uint32_t offset, const uint8_t *data, size_t n)
{
    static uint8_t pkt[BLE_OTA_STREAM_HEADER + 1024];

    ble_ota_put_le32(pkt, offset);
    memcpy(pkt + BLE_OTA_STREAM_HEADER, data, n);
    ble_ota_core_stream_write(&s_fx.core, pkt, BLE_OTA_STREAM_HEADER + n);
}

/* Streams img[from..to) in packets of chunk bytes. */
static void
stream(const uint8_t *img, size_t from, size_t to, size_t chunk)
{
    for (size_t off = from; off < to; off += chunk) {
        const size_t n = to - off < chunk ? to - off : chunk;
        stream_packet((uint32_t)off, img + off, n);
    }
}

/* BEGIN, the whole stream, END: each answer checked. The image is valid,
 * not selected yet. */
static void
v2_upload_to_end(const uint8_t *img, size_t len, uint16_t flags)
{
    begin_image(img, len, flags);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 10));
    CHECK_EQ(ble_ota_get_le32(last_note()->data + 2), 0);
    stream(img, 0, len, CHUNK);
    CHECK(evented(BLE_OTA_EVT_ACK, (uint32_t)len));
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_OK));
}

/* The whole update up to RESTART: the image is selected and the device's
 * restart scheduled (fx_reboot() carries it out). */
static void
v2_upload(const uint8_t *img, size_t len, uint16_t flags)
{
    v2_upload_to_end(img, len, flags);
    CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_RESTART, BLE_OTA_ST_OK));
}

static void
info(uint8_t out[BLE_OTA_INFO_SIZE])
{
    memset(out, 0xAA, BLE_OTA_INFO_SIZE);
    ble_ota_core_info_read(&s_fx.core, out, BLE_OTA_INFO_SIZE);
}

/* --- the happy path -------------------------------------------------------------- */

static void
test_v2_update_and_restart(void)
{
    CHECK_OK(fx_setup());
    begin_image(s_image, s_image_len, 0);
    /* BEGIN's answer: offset, window, max_packet. */
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 10));
    const cmd_note_t *a = last_note();
    CHECK_EQ(ble_ota_get_le32(a->data + 2), 0);
    CHECK_EQ(ble_ota_get_le16(a->data + 6), BLE_OTA_DEFAULT_WINDOW);
    CHECK_EQ(ble_ota_get_le16(a->data + 8), BLE_OTA_MAX_PACKET);
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_RECEIVING);
    CHECK_EQ(s_fx.dev.open_slot, 1);

    stream(s_image, 0, s_image_len, BLE_OTA_MAX_PACKET - BLE_OTA_STREAM_HEADER);
    CHECK(evented(BLE_OTA_EVT_ACK, (uint32_t)s_image_len));
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_OK));
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_COMPLETE);
    CHECK(memcmp(host_flash_slot(&s_fx.dev.flash, 1), s_image, s_image_len) == 0);
    /* END validated the image; RESTART selects it and restarts. */
    CHECK_EQ(s_fx.dev.flash.boot_slot, 0);
    CHECK(!s_fx.dev.restart_pending);

    CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_RESTART, BLE_OTA_ST_OK));
    CHECK_EQ(s_fx.dev.flash.boot_slot, 1);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_NEW);
    CHECK(!s_fx.dev.flash.confirm_required);
    CHECK(s_fx.dev.restart_pending);
    CHECK_EQ(s_fx.dev.restart_delay_ms, BLE_OTA_RESTART_DELAY_MS);
    /* Without CLIENT_CONFIRM the device confirms the image itself. */
    CHECK_EQ(fx_reboot(true), 1);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_VALID);
    CHECK(!s_fx.core.confirm_waiting);
    CHECK(strcmp(running_version(), "2.0.0") == 0);
    CHECK_EQ(s_fx.errors, 0);
}

static void
test_v2_flash_written_in_whole_blocks(void)
{
    CHECK_OK(fx_setup());
    /* Odd packet sizes: blocks are cut from the stream, not from packets. */
    const size_t sizes[] = { 1, 7, 100, 243, 510 };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        CHECK_OK(fx_setup());
        const uint32_t writes = s_fx.dev.flash.writes;
        begin_image(s_image, s_image_len, 0);
        stream(s_image, 0, s_image_len, sizes[i]);
        CHECK(evented(BLE_OTA_EVT_ACK, (uint32_t)s_image_len));
        /* Every write but the last is one whole 4 KB block. */
        CHECK_EQ(s_fx.dev.flash.writes - writes, (s_image_len + BLE_OTA_FLASH_BLOCK - 1) / BLE_OTA_FLASH_BLOCK);
        CHECK_EQ(s_fx.dev.plan.written, s_image_len);
        CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
        CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_OK));
        CHECK(memcmp(host_flash_slot(&s_fx.dev.flash, 1), s_image, s_image_len) == 0);
    }
}

static void
test_v2_ack_spacing(void)
{
    const uint16_t windows[] = { BLE_OTA_DEFAULT_WINDOW, 2000, 512, 3 };
    for (size_t w = 0; w < sizeof(windows) / sizeof(windows[0]); w++) {
        CHECK_OK(fx_setup());
        s_config.window = windows[w];
        core_init();
        const uint32_t step = windows[w] / BLE_OTA_ACKS_PER_WINDOW ? windows[w] / BLE_OTA_ACKS_PER_WINDOW : 1;
        begin_image(s_image, s_image_len, 0);
        CHECK_EQ(ble_ota_get_le16(last_note()->data + 6), windows[w]);
        const int first = s_fx.cmd_count;
        uint32_t last_ack = 0;
        for (size_t off = 0; off < s_image_len; off += CHUNK) {
            const size_t n = s_image_len - off < CHUNK ? s_image_len - off : CHUNK;
            const int before = s_fx.cmd_count;
            stream_packet((uint32_t)off, s_image + off, n);
            const uint32_t end = (uint32_t)(off + n);
            /* An ACK exactly when window/8 bytes (or the end) were reached. */
            const bool due = end - last_ack >= step || end == s_image_len;
            CHECK_EQ(s_fx.cmd_count - before, due ? 1 : 0);
            if (due) {
                CHECK(evented(BLE_OTA_EVT_ACK, end));
                last_ack = end;
            }
        }
        CHECK(count_notes(BLE_OTA_EVT_ACK, first) > 0);
        CHECK_EQ(count_notes(BLE_OTA_EVT_RESYNC, first), 0);
        /* So a client that stops at a full window always gets an ACK. */
        CHECK(step <= windows[w]);
    }
}

/* --- resume ------------------------------------------------------------------------ */

static void
test_v2_resume_same_image(void)
{
    uint8_t inf[BLE_OTA_INFO_SIZE], sha[32];

    CHECK_OK(fx_setup());
    ble_ota_sha256(s_image, s_image_len, sha);
    begin_image(s_image, s_image_len, BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM);
    /* 25 packets: 6000 bytes, 4096 of them in flash, the rest in the block. */
    stream(s_image, 0, 25 * CHUNK, CHUNK);
    ble_ota_core_disconnected(&s_fx.core);
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_SUSPENDED);
    CHECK_EQ(s_fx.dev.open_slot, 1);
    CHECK_EQ(s_fx.dev.plan.written, BLE_OTA_FLASH_BLOCK);
    info(inf);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_TRANSFER_STATE], BLE_OTA_TRANSFER_SUSPENDED);
    CHECK_EQ(ble_ota_get_le32(inf + BLE_OTA_INFO_OFF_TRANSFER_OFFSET), 25 * CHUNK);
    CHECK(memcmp(inf + BLE_OTA_INFO_OFF_TRANSFER_SHA256, sha, BLE_OTA_INFO_LEN_TRANSFER_SHA256) == 0);

    /* Packets after the link dropped go nowhere. */
    stream_packet(25 * CHUNK, s_image + 25 * CHUNK, CHUNK);
    CHECK_EQ(s_fx.core.v2.received, 25 * CHUNK);

    /* The next connection: the same BEGIN continues where the data stopped. */
    s_fx.clock_ms += 30000;
    ble_ota_core_tick(&s_fx.core);
    begin_image(s_image, s_image_len, BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 10));
    CHECK_EQ(ble_ota_get_le32(last_note()->data + 2), 25 * CHUNK);
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_RECEIVING);
    const int first = s_fx.cmd_count;
    stream(s_image, 25 * CHUNK, s_image_len, CHUNK);
    CHECK_EQ(count_notes(BLE_OTA_EVT_RESYNC, first), 0);
    CHECK(evented(BLE_OTA_EVT_ACK, (uint32_t)s_image_len));
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_OK));
    CHECK(memcmp(host_flash_slot(&s_fx.dev.flash, 1), s_image, s_image_len) == 0);
    CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
    CHECK(s_fx.dev.flash.confirm_required); /* the flag of the BEGIN that resumed */
}

static void
test_v2_resume_twice_and_at_the_end(void)
{
    CHECK_OK(fx_setup());
    begin_image(s_image, s_image_len, 0);
    /* Cut at an odd offset, inside a block, twice. */
    stream(s_image, 0, 3333, 101);
    const uint32_t at = s_fx.core.v2.received;
    CHECK_EQ(at, 3333);
    ble_ota_core_disconnected(&s_fx.core);
    begin_image(s_image, s_image_len, 0);
    CHECK_EQ(ble_ota_get_le32(last_note()->data + 2), at);
    stream(s_image, at, 9000, 500);
    ble_ota_core_disconnected(&s_fx.core);
    begin_image(s_image, s_image_len, 0);
    CHECK_EQ(ble_ota_get_le32(last_note()->data + 2), 9000);
    /* Everything arrived, then the link dropped before END. */
    stream(s_image, 9000, s_image_len, 500);
    ble_ota_core_disconnected(&s_fx.core);
    begin_image(s_image, s_image_len, 0);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 10));
    CHECK_EQ(ble_ota_get_le32(last_note()->data + 2), s_image_len);
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_OK));
    CHECK(memcmp(host_flash_slot(&s_fx.dev.flash, 1), s_image, s_image_len) == 0);
}

static void
test_v2_begin_again_while_receiving(void)
{
    CHECK_OK(fx_setup());
    begin_image(s_image, s_image_len, 0);
    stream(s_image, 0, 10 * CHUNK, CHUNK);
    /* No disconnect seen (a client that restarted its session): the same
     * image goes on from what is stored. */
    begin_image(s_image, s_image_len, 0);
    CHECK_EQ(ble_ota_get_le32(last_note()->data + 2), 10 * CHUNK);
    stream(s_image, 10 * CHUNK, s_image_len, CHUNK);
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_OK));
}

static void
test_v2_other_image_starts_over(void)
{
    static uint8_t other[64 * 1024];

    CHECK_OK(fx_setup());
    begin_image(s_image, s_image_len, 0);
    stream(s_image, 0, 40 * CHUNK, CHUNK);
    ble_ota_core_disconnected(&s_fx.core);
    /* Same size, another hash: another image. */
    const size_t len = build_image(other, sizeof(other), "2.0.1", 20000, 77);
    CHECK_EQ(len, s_image_len);
    begin_image(other, len, 0);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 10));
    CHECK_EQ(ble_ota_get_le32(last_note()->data + 2), 0);
    CHECK_EQ(s_fx.dev.plan.written, 0);
    stream(other, 0, len, CHUNK);
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_OK));
    CHECK(memcmp(host_flash_slot(&s_fx.dev.flash, 1), other, len) == 0);
    CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
    CHECK_EQ(fx_reboot(true), 1);
    CHECK(strcmp(running_version(), "2.0.1") == 0);
}

static void
test_v2_abandon_timeout(void)
{
    CHECK_OK(fx_setup());
    s_config.abandon_timeout_ms = 60000;
    core_init();
    begin_image(s_image, s_image_len, 0);
    stream(s_image, 0, 20 * CHUNK, CHUNK);
    ble_ota_core_disconnected(&s_fx.core);
    s_fx.clock_ms += 59999;
    ble_ota_core_tick(&s_fx.core);
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_SUSPENDED);
    CHECK_EQ(s_fx.dev.open_slot, 1);
    s_fx.clock_ms += 1;
    ble_ota_core_tick(&s_fx.core);
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_IDLE);
    CHECK_EQ(s_fx.dev.open_slot, -1);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_EMPTY);
    /* The same BEGIN now starts at 0. */
    begin_image(s_image, s_image_len, 0);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 10));
    CHECK_EQ(ble_ota_get_le32(last_note()->data + 2), 0);
    /* A receiving transfer (link up) is never abandoned. */
    s_fx.clock_ms += 10u * 60000u;
    ble_ota_core_tick(&s_fx.core);
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_RECEIVING);
}

/* --- requests and statuses ------------------------------------------------------ */

static void
test_v2_unknown_and_bad_length(void)
{
    uint8_t buf[64];

    CHECK_OK(fx_setup());
    /* An empty value has no opcode to answer: the write itself fails. */
    CHECK_EQ(command(buf, 0), BLE_OTA_ERR_LENGTH);
    CHECK_EQ(s_fx.cmd_count, 0);
    const uint8_t unknown[] = { 0x00, 0x06, 0x20, 0x3F };
    for (size_t i = 0; i < sizeof(unknown); i++) {
        buf[0] = unknown[i];
        buf[1] = 0;
        CHECK_EQ(command(buf, 1 + i % 2), BLE_OTA_OK);
        CHECK(answered_plain(unknown[i], BLE_OTA_ST_UNKNOWN_COMMAND));
    }
    /* Above 0x3F the answer would look like an event (0x40 | 0x80 is ACK)
     * or like another answer: the write fails, nothing is notified. */
    const uint8_t not_requests[] = { 0x40, 0x7E, 0x80, 0x81, 0xC0, 0xFF };
    for (size_t i = 0; i < sizeof(not_requests); i++) {
        buf[0] = not_requests[i];
        CHECK_EQ(command(buf, 1), BLE_OTA_ERR_VALUE);
        CHECK_EQ(command(buf, 41), BLE_OTA_ERR_VALUE);
    }
    CHECK_EQ(s_fx.cmd_count, 4);
    /* BEGIN is 41 bytes, the others 1. */
    memset(buf, 0, sizeof(buf));
    buf[0] = BLE_OTA_CMD_BEGIN;
    CHECK_EQ(command(buf, 1), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_BAD_LENGTH));
    CHECK_EQ(command(buf, BLE_OTA_BEGIN_SIZE - 1), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_BAD_LENGTH));
    CHECK_EQ(command(buf, BLE_OTA_BEGIN_SIZE + 1), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_BAD_LENGTH));
    const uint8_t ones[] = { BLE_OTA_CMD_END, BLE_OTA_CMD_RESTART, BLE_OTA_CMD_ABORT, BLE_OTA_CMD_CONFIRM };
    for (size_t i = 0; i < sizeof(ones); i++) {
        buf[0] = ones[i];
        CHECK_EQ(command(buf, 2), BLE_OTA_OK);
        CHECK(answered_plain(ones[i], BLE_OTA_ST_BAD_LENGTH));
    }
    CHECK_EQ(s_fx.cmd_count, 4 + 3 + 4);
    /* BAD_LENGTH of BEGIN and END is an attempt's status too. */
    uint8_t inf[BLE_OTA_INFO_SIZE];
    info(inf);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_LAST_STATUS], BLE_OTA_ST_BAD_LENGTH);
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_IDLE);
    CHECK_EQ(s_fx.dev.open_slot, -1);
}

static void
test_v2_begin_refusals(void)
{
    uint8_t sha[32];

    CHECK_OK(fx_setup());
    const uint32_t erases = s_fx.dev.flash.erases;
    ble_ota_sha256(s_image, s_image_len, sha);
    begin_raw(0, sha, 0, 0);
    CHECK(answered_plain(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_BAD_ARGUMENT));
    /* PATCH (0x0004) makes BEGIN longer: test_delta_begin_refusals. */
    const uint16_t reserved[] = { 0x0008, 0x8000, 0xFFFB };
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
        begin_raw((uint32_t)s_image_len, sha, 0, reserved[i]);
        CHECK(answered_plain(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_BAD_ARGUMENT));
    }
    begin_raw(SLOT_SIZE + 1, sha, 0, 0);
    CHECK(answered_plain(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_TOO_LARGE));
    begin_raw(0xFFFFFFFFu, sha, 0, 0);
    CHECK(answered_plain(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_TOO_LARGE));
    begin_raw((uint32_t)s_image_len, sha, 5, 0);
    CHECK(answered_plain(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_WRONG_CHIP));
    CHECK_EQ(s_fx.dev.open_slot, -1);
    CHECK_EQ(s_fx.dev.flash.erases, erases);
    /* A slot-sized image fits. */
    begin_raw(SLOT_SIZE, sha, 0, 0);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 10));

    /* A refused BEGIN keeps a suspended transfer. */
    CHECK_OK(fx_setup());
    begin_image(s_image, s_image_len, 0);
    stream(s_image, 0, 20 * CHUNK, CHUNK);
    ble_ota_core_disconnected(&s_fx.core);
    begin_raw(SLOT_SIZE + 1, sha, 0, 0);
    CHECK(answered_plain(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_TOO_LARGE));
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_SUSPENDED);
    begin_image(s_image, s_image_len, 0);
    CHECK_EQ(ble_ota_get_le32(last_note()->data + 2), 20 * CHUNK);
}

static void
test_v2_no_slot(void)
{
    host_dev_t *dev = &s_fx.dev;
    uint8_t sha[32] = { 0 };

    CHECK_OK(fx_setup());
    /* Nothing bootable: no running app, no slot to update. */
    dev->flash.slot[0].state = HOST_SLOT_INVALID;
    CHECK_EQ(fx_reboot(true), -1);
    begin_raw(1000, sha, 0, 0);
    CHECK(answered_plain(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_NO_SLOT));
    uint8_t inf[BLE_OTA_INFO_SIZE];
    info(inf);
    CHECK_EQ(ble_ota_get_le32(inf + BLE_OTA_INFO_OFF_SLOT_SIZE), 0);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_RUNNING_STATE], BLE_OTA_RUNNING_UNKNOWN);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_LAST_STATUS], BLE_OTA_ST_NO_SLOT);
}

static void
test_v2_end_statuses(void)
{
    static uint8_t bad[64 * 1024];
    uint8_t sha[32];

    CHECK_OK(fx_setup());
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_BAD_STATE));

    /* INCOMPLETE: the transfer goes on. */
    begin_image(s_image, s_image_len, 0);
    stream(s_image, 0, s_image_len - 1, CHUNK);
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_INCOMPLETE));
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_RECEIVING);
    stream_packet((uint32_t)s_image_len - 1, s_image + s_image_len - 1, 1);
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_OK));
    /* END again (its answer lost with the link): still OK, nothing redone. */
    const uint32_t writes = s_fx.dev.flash.writes;
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_OK));
    CHECK_EQ(s_fx.dev.flash.writes, writes);

    /* HASH_MISMATCH: a valid image, but not the one BEGIN announced. */
    CHECK_OK(fx_setup());
    ble_ota_sha256(s_image, s_image_len, sha);
    sha[31] ^= 1;
    begin_raw((uint32_t)s_image_len, sha, 0, 0);
    stream(s_image, 0, s_image_len, CHUNK);
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_HASH_MISMATCH));
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_IDLE);
    CHECK_EQ(s_fx.dev.open_slot, -1);
    CHECK_EQ(s_fx.dev.flash.boot_slot, 0);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_EMPTY);
    CHECK(!s_fx.dev.restart_pending);
    CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_RESTART, BLE_OTA_ST_BAD_STATE));
    CHECK_EQ(fx_reboot(true), 0);
    CHECK(strcmp(running_version(), "1.0.0") == 0);

    /* INVALID_IMAGE: the hash matches what arrived, the image is broken. */
    CHECK_OK(fx_setup());
    memcpy(bad, s_image, s_image_len);
    bad[1000] ^= 0x40;
    begin_image(bad, s_image_len, 0);
    stream(bad, 0, s_image_len, CHUNK);
    CHECK(evented(BLE_OTA_EVT_ACK, (uint32_t)s_image_len));
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_INVALID_IMAGE));
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_IDLE);
    CHECK_EQ(s_fx.dev.open_slot, -1);
    CHECK_EQ(s_fx.dev.flash.boot_slot, 0);
    uint8_t inf[BLE_OTA_INFO_SIZE];
    info(inf);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_LAST_STATUS], BLE_OTA_ST_INVALID_IMAGE);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_TRANSFER_STATE], BLE_OTA_TRANSFER_IDLE);
    /* And the device takes the good one right after. */
    CHECK_OK(v2_upload(s_image, s_image_len, 0));
}

static void
test_v2_stream_failures(void)
{
    static uint8_t img[64 * 1024];

    /* Not an app image: FAILED at the first packet, not after the upload. */
    CHECK_OK(fx_setup());
    memcpy(img, s_image, s_image_len);
    img[0] = 'P';
    const uint32_t writes = s_fx.dev.flash.writes;
    begin_image(img, s_image_len, 0);
    stream_packet(0, img, CHUNK);
    CHECK(failed_with(BLE_OTA_ST_INVALID_IMAGE, 0));
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_IDLE);
    CHECK_EQ(s_fx.dev.open_slot, -1);
    CHECK_EQ(s_fx.dev.flash.writes, writes);
    /* What follows is outside a transfer: ignored, no more events. */
    const int notes = s_fx.cmd_count;
    stream(img, CHUNK, s_image_len, CHUNK);
    CHECK_EQ(s_fx.cmd_count, notes);
    uint8_t inf[BLE_OTA_INFO_SIZE];
    info(inf);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_LAST_STATUS], BLE_OTA_ST_INVALID_IMAGE);

    /* Built for the ESP32-C3 (chip id 5 in the header), announced as ESP32. */
    CHECK_OK(fx_setup());
    memcpy(img, s_image, s_image_len);
    img[12] = 5;
    begin_image(img, s_image_len, 0);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 10));
    /* The header check waits for byte 13, even in one-byte packets. */
    stream(img, 0, 13, 1);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 10));
    stream_packet(13, img + 13, 1);
    CHECK(failed_with(BLE_OTA_ST_WRONG_CHIP, 0));
    CHECK_EQ(s_fx.dev.open_slot, -1);

    /* An image shorter than a header. */
    CHECK_OK(fx_setup());
    begin_image(s_image, 10, 0);
    stream_packet(0, s_image, 10);
    CHECK(failed_with(BLE_OTA_ST_INVALID_IMAGE, 0));
}

/* A header field no ESP-IDF app build writes: the field, its value, and the
 * status FAILED carries. The appended SHA-256 is recomputed so that only the
 * field is wrong. */
typedef struct {
    const char *what;
    size_t offset;
    uint8_t value;
    size_t refused_at; /* the byte whose arrival completes the field */
    uint8_t status;
    const char *logged;
} head_case_t;

static const head_case_t k_head_cases[] = {
    { "no segments", 1, 0, 1, BLE_OTA_ST_INVALID_IMAGE, "0 segments" },
    { "17 segments", 1, 17, 1, BLE_OTA_ST_INVALID_IMAGE, "17 segments" },
    { "SPI mode 6", 2, 6, 2, BLE_OTA_ST_INVALID_IMAGE, "SPI mode 6" },
    { "flash size code 8", 3, 0x80, 3, BLE_OTA_ST_INVALID_IMAGE, "flash size code 8" },
    { "chip revision 5.12 needed (device 3.0)", 16, 0x02, 16, BLE_OTA_ST_WRONG_CHIP, "chip revision 5.12" },
    { "hash flag 2", 23, 2, 23, BLE_OTA_ST_INVALID_IMAGE, "hash flag 2" },
    { "first segment of 4 bytes", 29, 0, 31, BLE_OTA_ST_INVALID_IMAGE, "cannot hold an app descriptor" },
    { "no app descriptor", 32, 0x33, 35, BLE_OTA_ST_INVALID_IMAGE, "no app descriptor" },
};

static bool
logged(const char *text)
{
    for (int i = 0; i < LOG_RING && i < s_fx.log_count; i++) {
        if (strstr(s_fx.logs[(s_fx.log_count - 1 - i) % LOG_RING], text) != NULL) {
            return true;
        }
    }
    return false;
}

/* s_image with one byte changed, its appended SHA-256 made right again. */
static void
mutate_sealed(uint8_t *img, size_t offset, uint8_t value)
{
    memcpy(img, s_image, s_image_len);
    img[offset] = value;
    if (offset == 29) {
        img[28] = 4; /* first segment length 4 */
    }
    ble_ota_sha256(img, s_image_len - 32, img + s_image_len - 32);
}

static void
test_v2_header_fields_refused(void)
{
    static uint8_t img[64 * 1024];

    for (size_t i = 0; i < sizeof(k_head_cases) / sizeof(k_head_cases[0]); i++) {
        const head_case_t *c = &k_head_cases[i];
        CHECK_OK(fx_setup());
        mutate_sealed(img, c->offset, c->value);
        const uint32_t writes = s_fx.dev.flash.writes;
        begin_image(img, s_image_len, 0);
        CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 10));
        /* In one-byte packets: refused as soon as the field has arrived. */
        stream(img, 0, c->refused_at, 1);
        CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_RECEIVING);
        stream_packet((uint32_t)c->refused_at, img + c->refused_at, 1);
        if (!failed_with(c->status, 0) || !logged(c->logged)) {
            test_failf(__FILE__, __LINE__, "%s: not refused with status 0x%02x and '%s'", c->what, c->status,
                       c->logged);
            return;
        }
        CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_IDLE);
        CHECK_EQ(s_fx.dev.flash.writes, writes);
        CHECK_EQ(s_fx.dev.open_slot, -1);
        CHECK_EQ(fx_reboot(true), 0);
        CHECK(strcmp(running_version(), "1.0.0") == 0);
    }

    /* A whole image shorter than the app descriptor's magic word. */
    CHECK_OK(fx_setup());
    begin_image(s_image, 30, 0);
    stream(s_image, 0, 30, 7);
    CHECK(failed_with(BLE_OTA_ST_INVALID_IMAGE, 0));
    CHECK(logged("ends before its app descriptor"));
}

/* The seed protocol refuses the same images at DONE, before esp_ota_end. */
static void
test_seed_header_fields_refused(void)
{
    static uint8_t img[64 * 1024];

    for (size_t i = 0; i < sizeof(k_head_cases) / sizeof(k_head_cases[0]); i++) {
        const head_case_t *c = &k_head_cases[i];
        CHECK_OK(fx_setup());
        mutate_sealed(img, c->offset, c->value);
        CHECK_EQ(packet_size(244), BLE_OTA_OK);
        CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
        CHECK_EQ(last_notify(), BLE_OTA_CTRL_REQUEST_ACK);
        CHECK_EQ(send_packets(img, s_image_len, 20), BLE_OTA_OK);
        CHECK_EQ(ctrl(BLE_OTA_CTRL_DONE), BLE_OTA_OK);
        if (last_notify() != BLE_OTA_CTRL_DONE_NAK || !logged(c->logged)) {
            test_failf(__FILE__, __LINE__, "%s: no DONE_NAK with '%s'", c->what, c->logged);
            return;
        }
        CHECK_EQ(s_fx.dev.flash.boot_slot, 0);
        CHECK_EQ(s_fx.dev.open_slot, -1);
        CHECK_EQ(fx_reboot(true), 0);
        CHECK(strcmp(running_version(), "1.0.0") == 0);
    }
}

/* Found by fuzz_core: a BEGIN between a rollback and its restart opened the
 * slot the rollback returns to, erasing the only valid image. */
static void
test_v2_rollback_refuses_transfers(void)
{
    for (int way = 0; way < 2; way++) {
        CHECK_OK(fx_setup());
        CHECK_OK(v2_upload(s_image, s_image_len, way == 0 ? 0 : BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM));
        CHECK_EQ(fx_reboot(way != 0), 1);
        if (way == 0) {
            /* The new image's self-test fails. */
            CHECK(s_fx.core.rollback_requested);
        } else {
            /* It waits for a CONFIRM that never comes. */
            s_fx.clock_ms += s_config.confirm_window_ms;
            ble_ota_core_tick(&s_fx.core);
        }
        CHECK(s_fx.dev.restart_pending);
        CHECK_EQ(host_dev_slot_state(&s_fx.dev, 0), HOST_SLOT_VALID);
        /* The restart is not there yet: neither protocol may open ota_0. */
        begin_image(s_image, s_image_len, 0);
        CHECK(answered_plain(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_BAD_STATE));
        CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_ERR_BUSY);
        CHECK_EQ(packet_size(244), BLE_OTA_ERR_BUSY);
        CHECK_EQ(s_fx.dev.open_slot, -1);
        CHECK_EQ(host_dev_slot_state(&s_fx.dev, 0), HOST_SLOT_VALID);
        CHECK_EQ(fx_reboot(true), 0);
        CHECK(strcmp(running_version(), "1.0.0") == 0);
        /* After the restart, updates work again. */
        CHECK_OK(v2_upload(s_image, s_image_len, 0));
    }
}

static void
test_v2_flash_failure_at_every_write(void)
{
    const uint32_t blocks = (uint32_t)((s_image_len + BLE_OTA_FLASH_BLOCK - 1) / BLE_OTA_FLASH_BLOCK);
    for (uint32_t fail_at = 1; fail_at <= blocks; fail_at++) {
        CHECK_OK(fx_setup());
        begin_image(s_image, s_image_len, 0);
        host_flash_fail_write_after(&s_fx.dev.flash, fail_at);
        stream(s_image, 0, s_image_len, CHUNK);
        host_flash_fail_write_after(&s_fx.dev.flash, 0);
        /* FAILED names the packet that could not be taken. */
        const uint32_t block_end = fail_at * BLE_OTA_FLASH_BLOCK < s_image_len ? fail_at * BLE_OTA_FLASH_BLOCK
                                                                               : (uint32_t)s_image_len;
        const uint32_t packet = (block_end - 1) / CHUNK * CHUNK;
        CHECK(failed_with(BLE_OTA_ST_FLASH_ERROR, packet));
        CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_IDLE);
        CHECK_EQ(s_fx.dev.open_slot, -1);
        CHECK_EQ(count_notes(BLE_OTA_EVT_FAILED, 0), 1);
        CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
        CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_BAD_STATE));
        CHECK_EQ(s_fx.dev.flash.boot_slot, 0);
        /* The same BEGIN starts over, and succeeds. */
        CHECK_OK(v2_upload(s_image, s_image_len, 0));
    }
}

/* --- the stream --------------------------------------------------------------------- */

static void
test_v2_gaps_duplicates_resync_once(void)
{
    CHECK_OK(fx_setup());
    begin_image(s_image, s_image_len, 0);
    stream(s_image, 0, 3 * CHUNK, CHUNK);
    const int first = s_fx.cmd_count;
    /* Packet 3 is lost: 4, 5, 6 arrive. One RESYNC for offset 3 * CHUNK. */
    stream(s_image, 4 * CHUNK, 7 * CHUNK, CHUNK);
    CHECK_EQ(s_fx.cmd_count - first, 1);
    CHECK(evented(BLE_OTA_EVT_RESYNC, 3 * CHUNK));
    CHECK_EQ(s_fx.core.v2.received, 3 * CHUNK);
    /* Duplicates (the client rewinding to its last ACK) are ignored quietly. */
    stream(s_image, 0, 3 * CHUNK, CHUNK);
    stream_packet(CHUNK / 2, s_image + CHUNK / 2, CHUNK); /* overlapping, earlier start */
    CHECK_EQ(s_fx.cmd_count - first, 1);
    CHECK_EQ(s_fx.core.v2.received, 3 * CHUNK);
    /* Still the same gap: no second RESYNC. */
    stream_packet(9 * CHUNK, s_image + 9 * CHUNK, CHUNK);
    CHECK_EQ(s_fx.cmd_count - first, 1);
    /* The missing packet arrives; a new gap gets its own RESYNC. */
    stream(s_image, 3 * CHUNK, 5 * CHUNK, CHUNK);
    stream_packet(6 * CHUNK, s_image + 6 * CHUNK, CHUNK);
    CHECK_EQ(count_notes(BLE_OTA_EVT_RESYNC, first), 2);
    CHECK(evented(BLE_OTA_EVT_RESYNC, 5 * CHUNK));
    /* A resuming BEGIN allows one more for the same offset (the first may
     * have gone with the old link). */
    ble_ota_core_disconnected(&s_fx.core);
    begin_image(s_image, s_image_len, 0);
    CHECK_EQ(ble_ota_get_le32(last_note()->data + 2), 5 * CHUNK);
    stream_packet(6 * CHUNK, s_image + 6 * CHUNK, CHUNK);
    CHECK(evented(BLE_OTA_EVT_RESYNC, 5 * CHUNK));
    CHECK_EQ(count_notes(BLE_OTA_EVT_RESYNC, first), 3);
    /* In order from there: the image completes intact. */
    stream(s_image, 5 * CHUNK, s_image_len, CHUNK);
    CHECK(evented(BLE_OTA_EVT_ACK, (uint32_t)s_image_len));
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_OK));
    CHECK(memcmp(host_flash_slot(&s_fx.dev.flash, 1), s_image, s_image_len) == 0);
}

static void
test_v2_stream_ignored(void)
{
    static uint8_t big[BLE_OTA_MAX_PACKET + 8];

    CHECK_OK(fx_setup());
    /* Outside a transfer. */
    stream(s_image, 0, 4 * CHUNK, CHUNK);
    CHECK_EQ(s_fx.cmd_count, 0);
    CHECK_EQ(s_fx.dev.open_slot, -1);
    CHECK_EQ(ble_ota_core_stream_write(&s_fx.core, NULL, 0), BLE_OTA_OK);

    begin_image(s_image, s_image_len, 0);
    const int first = s_fx.cmd_count;
    /* Too short to carry a byte: a header alone, or less. */
    CHECK_EQ(ble_ota_core_stream_write(&s_fx.core, big, 0), BLE_OTA_OK);
    CHECK_EQ(ble_ota_core_stream_write(&s_fx.core, big, 3), BLE_OTA_OK);
    memset(big, 0, sizeof(big));
    CHECK_EQ(ble_ota_core_stream_write(&s_fx.core, big, BLE_OTA_STREAM_HEADER), BLE_OTA_OK);
    /* Longer than max_packet. */
    memcpy(big + BLE_OTA_STREAM_HEADER, s_image, sizeof(big) - BLE_OTA_STREAM_HEADER);
    CHECK_EQ(ble_ota_core_stream_write(&s_fx.core, big, BLE_OTA_MAX_PACKET + 1), BLE_OTA_OK);
    CHECK_EQ(s_fx.core.v2.received, 0);
    CHECK_EQ(ble_ota_core_stream_write(&s_fx.core, big, BLE_OTA_MAX_PACKET), BLE_OTA_OK);
    CHECK_EQ(s_fx.core.v2.received, BLE_OTA_MAX_PACKET - BLE_OTA_STREAM_HEADER);
    /* Past the image size, at the expected offset. */
    const uint32_t at = (uint32_t)s_image_len - 100;
    stream(s_image, s_fx.core.v2.received, at, CHUNK);
    stream_packet(at, s_image + at, 101);
    CHECK_EQ(s_fx.core.v2.received, at);
    CHECK_EQ(count_notes(BLE_OTA_EVT_RESYNC, first), 0);
    stream_packet(at, s_image + at, 100);
    CHECK(evented(BLE_OTA_EVT_ACK, (uint32_t)s_image_len));
    /* After the last byte: everything is a duplicate or past the end. */
    const int notes = s_fx.cmd_count;
    stream_packet((uint32_t)s_image_len, s_image, 1);
    stream_packet(0, s_image, CHUNK);
    CHECK_EQ(s_fx.cmd_count, notes);
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_OK));
    /* After END OK too. */
    stream_packet(0, s_image, CHUNK);
    CHECK_EQ(s_fx.cmd_count, notes + 1);
}

static void
test_v2_config_defaults(void)
{
    CHECK_OK(fx_setup());
    memset(&s_config, 0, sizeof(s_config));
    core_init();
    CHECK_EQ(s_fx.core.config.window, BLE_OTA_DEFAULT_WINDOW);
    CHECK_EQ(s_fx.core.config.max_packet, BLE_OTA_MAX_PACKET);
    CHECK_EQ(s_fx.core.config.abandon_timeout_ms, BLE_OTA_ABANDON_TIMEOUT_MS);
    CHECK_EQ(s_fx.core.config.confirm_window_ms, 0); /* 0 is a choice: no limit */
    CHECK(!s_fx.core.config.serve_seed);
    s_config.max_packet = 1000;
    core_init();
    CHECK_EQ(s_fx.core.config.max_packet, BLE_OTA_MAX_PACKET);
    s_config.max_packet = 100;
    core_init();
    CHECK_EQ(s_fx.core.config.max_packet, 100);
    ble_ota_core_init(&s_fx.core, &s_fx.dev.port, NULL);
    CHECK_EQ(s_fx.core.config.window, BLE_OTA_DEFAULT_WINDOW);
    CHECK_EQ(s_fx.core.config.confirm_window_ms, BLE_OTA_DEFAULT_CONFIRM_WINDOW_MS);
    CHECK(s_fx.core.config.serve_seed);
    /* A smaller max_packet is what BEGIN announces, and what is taken. */
    s_config.max_packet = 100;
    core_init();
    begin_image(s_image, s_image_len, 0);
    CHECK_EQ(ble_ota_get_le16(last_note()->data + 8), 100);
    stream_packet(0, s_image, 97);
    CHECK_EQ(s_fx.core.v2.received, 0);
    stream(s_image, 0, s_image_len, 96);
    CHECK(evented(BLE_OTA_EVT_ACK, (uint32_t)s_image_len));
}

/* --- RESTART, ABORT, CONFIRM ------------------------------------------------------------ */

static void
test_v2_restart_and_abort(void)
{
    CHECK_OK(fx_setup());
    CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_RESTART, BLE_OTA_ST_BAD_STATE));
    /* Nothing to abort: still OK. */
    CHECK_EQ(op(BLE_OTA_CMD_ABORT), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_ABORT, BLE_OTA_ST_OK));

    /* ABORT while receiving, and while suspended. */
    begin_image(s_image, s_image_len, 0);
    stream(s_image, 0, 30 * CHUNK, CHUNK);
    CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_RESTART, BLE_OTA_ST_BAD_STATE));
    CHECK_EQ(op(BLE_OTA_CMD_ABORT), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_ABORT, BLE_OTA_ST_OK));
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_IDLE);
    CHECK_EQ(s_fx.dev.open_slot, -1);
    begin_image(s_image, s_image_len, 0);
    CHECK_EQ(ble_ota_get_le32(last_note()->data + 2), 0);
    stream(s_image, 0, 30 * CHUNK, CHUNK);
    ble_ota_core_disconnected(&s_fx.core);
    CHECK_EQ(op(BLE_OTA_CMD_ABORT), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_ABORT, BLE_OTA_ST_OK));
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_IDLE);
    CHECK_EQ(s_fx.dev.open_slot, -1);

    /* After END OK: the image is valid, not selected; nothing but RESTART selects it. */
    v2_upload_to_end(s_image, s_image_len, 0);
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_COMPLETE);
    CHECK_EQ(s_fx.dev.flash.boot_slot, 0);
    /* A BEGIN of the same image (END's answer was lost): nothing to send. */
    begin_image(s_image, s_image_len, 0);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 10));
    CHECK_EQ(ble_ota_get_le32(last_note()->data + 2), s_image_len);
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_OK));
    /* The link drops before RESTART: the next connection sends it. */
    ble_ota_core_disconnected(&s_fx.core);
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_COMPLETE);
    uint8_t inf[BLE_OTA_INFO_SIZE];
    info(inf);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_TRANSFER_STATE], BLE_OTA_TRANSFER_COMPLETE);
    CHECK_EQ(ble_ota_get_le32(inf + BLE_OTA_INFO_OFF_TRANSFER_OFFSET), s_image_len);
    CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_RESTART, BLE_OTA_ST_OK));
    CHECK(s_fx.dev.restart_pending);
    CHECK_EQ(s_fx.dev.flash.boot_slot, 1);
    /* Selected now: no ABORT, no other BEGIN undoes it. */
    CHECK_EQ(op(BLE_OTA_CMD_ABORT), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_ABORT, BLE_OTA_ST_BAD_STATE));
    begin_image(s_image, s_image_len, 0);
    CHECK(answered_plain(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_BAD_STATE));
    /* A second RESTART: OK, the restart is not scheduled again. */
    s_fx.dev.restart_pending = false;
    CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_RESTART, BLE_OTA_ST_OK));
    CHECK(!s_fx.dev.restart_pending);
    CHECK_EQ(fx_reboot(true), 1);

    /* Before RESTART, ABORT and a BEGIN of another image drop the complete image. */
    CHECK_OK(fx_setup());
    v2_upload_to_end(s_image, s_image_len, 0);
    CHECK_EQ(op(BLE_OTA_CMD_ABORT), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_ABORT, BLE_OTA_ST_OK));
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_IDLE);
    CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_RESTART, BLE_OTA_ST_BAD_STATE));
    CHECK_EQ(fx_reboot(true), 0);
}

/* An image complete but never restarted: no other reboot starts it, and
 * the device drops it after the abandon timeout. */
static void
test_v2_complete_image_waits_for_restart_only(void)
{
    CHECK_OK(fx_setup());
    v2_upload_to_end(s_image, s_image_len, BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM);
    /* A power cut, a crash, the app's own restart: the old image boots. */
    CHECK_EQ(fx_reboot(true), 0);
    CHECK(strcmp(running_version(), "1.0.0") == 0);
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_IDLE);

    CHECK_OK(fx_setup());
    v2_upload_to_end(s_image, s_image_len, 0);
    s_fx.clock_ms += s_config.abandon_timeout_ms - 1;
    ble_ota_core_tick(&s_fx.core);
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_COMPLETE);
    s_fx.clock_ms += 1;
    ble_ota_core_tick(&s_fx.core);
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_IDLE);
    CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_RESTART, BLE_OTA_ST_BAD_STATE));
    CHECK(!s_fx.dev.restart_pending);
    CHECK_EQ(fx_reboot(true), 0);
    /* The next update goes through from the start. */
    v2_upload(s_image, s_image_len, 0);
    CHECK_EQ(fx_reboot(true), 1);
}

static void
test_v2_confirm_by_client(void)
{
    uint8_t inf[BLE_OTA_INFO_SIZE];

    CHECK_OK(fx_setup());
    CHECK_EQ(op(BLE_OTA_CMD_CONFIRM), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_CONFIRM, BLE_OTA_ST_NOT_PENDING));

    CHECK_OK(v2_upload(s_image, s_image_len, BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM));
    CHECK(s_fx.dev.flash.confirm_required);
    CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
    /* The self-test passes, but the image waits for the client. */
    CHECK_EQ(fx_reboot(true), 1);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_PENDING_VERIFY);
    CHECK(s_fx.core.confirm_waiting);
    info(inf);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_RUNNING_STATE], BLE_OTA_RUNNING_PENDING_VERIFY);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_LAST_STATUS], BLE_OTA_LAST_STATUS_NONE); /* since boot */
    CHECK(memcmp(inf + BLE_OTA_INFO_OFF_VERSION, "2.0.0\0", 6) == 0);
    /* Meanwhile no update: neither v2 nor seed. */
    begin_image(s_image, s_image_len, 0);
    CHECK(answered_plain(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_PENDING_CONFIRM));
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
    CHECK_EQ(last_notify(), BLE_OTA_CTRL_REQUEST_NAK);
    /* Within the window, CONFIRM makes it valid, and the window stops. */
    s_fx.clock_ms += BLE_OTA_DEFAULT_CONFIRM_WINDOW_MS - 1;
    ble_ota_core_tick(&s_fx.core);
    CHECK(!s_fx.dev.restart_pending);
    CHECK_EQ(op(BLE_OTA_CMD_CONFIRM), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_CONFIRM, BLE_OTA_ST_OK));
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_VALID);
    CHECK(!s_fx.core.confirm_waiting);
    s_fx.clock_ms += 10u * BLE_OTA_DEFAULT_CONFIRM_WINDOW_MS;
    ble_ota_core_tick(&s_fx.core);
    CHECK(!s_fx.dev.restart_pending);
    info(inf);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_RUNNING_STATE], BLE_OTA_RUNNING_VALID);
    CHECK_EQ(op(BLE_OTA_CMD_CONFIRM), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_CONFIRM, BLE_OTA_ST_NOT_PENDING));
    /* It stays, restart after restart. */
    CHECK_EQ(fx_reboot(true), 1);
    CHECK_EQ(fx_reboot(true), 1);
    CHECK(strcmp(running_version(), "2.0.0") == 0);
    CHECK(!s_fx.core.confirm_waiting);
}

static void
test_v2_confirm_window_expires(void)
{
    CHECK_OK(fx_setup());
    s_config.confirm_window_ms = 5000;
    core_init();
    CHECK_OK(v2_upload(s_image, s_image_len, BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM));
    CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
    CHECK_EQ(fx_reboot(true), 1);
    CHECK(s_fx.core.confirm_waiting);
    s_fx.clock_ms += 4999;
    ble_ota_core_tick(&s_fx.core);
    CHECK(!s_fx.dev.restart_pending);
    s_fx.clock_ms += 1;
    ble_ota_core_tick(&s_fx.core);
    /* Rolled back: marked invalid, the old slot selected, restart now. */
    CHECK(s_fx.dev.restart_pending);
    CHECK_EQ(s_fx.dev.restart_delay_ms, 0);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_INVALID);
    CHECK(!s_fx.core.confirm_waiting);
    CHECK_EQ(fx_reboot(true), 0);
    CHECK(strcmp(running_version(), "1.0.0") == 0);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 0), HOST_SLOT_VALID);
    CHECK(!s_fx.core.confirm_waiting);
    /* The old image takes the next update. */
    CHECK_OK(v2_upload(s_image, s_image_len, 0));

    /* Window 0: no limit. */
    CHECK_OK(fx_setup());
    s_config.confirm_window_ms = 0;
    core_init();
    CHECK_OK(v2_upload(s_image, s_image_len, BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM));
    CHECK_EQ(fx_reboot(true), 1);
    s_fx.clock_ms += 0x7FFFFFFFu;
    ble_ota_core_tick(&s_fx.core);
    CHECK(!s_fx.dev.restart_pending);
    CHECK(s_fx.core.confirm_waiting);
}

/* CONFIRM is taken only once the new image's self-test passed; then also
 * for an image the device meant to confirm itself and could not. */
static void
test_v2_confirm_only_after_self_test(void)
{
    CHECK_OK(fx_setup());
    v2_upload(s_image, s_image_len, BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM);
    CHECK_EQ(host_dev_boot(&s_fx.dev), 1);
    core_init(); /* booted; the self-test has not reported yet */
    CHECK_EQ(op(BLE_OTA_CMD_CONFIRM), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_CONFIRM, BLE_OTA_ST_BAD_STATE));
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_PENDING_VERIFY);
    CHECK_EQ(ble_ota_core_confirm_boot(&s_fx.core, true), BLE_OTA_IMG_PENDING_VERIFY);
    CHECK_EQ(op(BLE_OTA_CMD_CONFIRM), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_CONFIRM, BLE_OTA_ST_OK));
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_VALID);

    /* The device confirms itself, and its mark_valid fails: a client may finish it. */
    CHECK_OK(fx_setup());
    v2_upload(s_image, s_image_len, 0);
    CHECK_EQ(host_dev_boot(&s_fx.dev), 1);
    core_init();
    host_flash_fail_write_after(&s_fx.dev.flash, 1);
    CHECK_EQ(ble_ota_core_confirm_boot(&s_fx.core, true), BLE_OTA_IMG_PENDING_VERIFY);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_PENDING_VERIFY);
    CHECK_EQ(op(BLE_OTA_CMD_CONFIRM), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_CONFIRM, BLE_OTA_ST_OK));
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_VALID);
}

static void
test_v2_restart_before_confirm_rolls_back(void)
{
    CHECK_OK(fx_setup());
    CHECK_OK(v2_upload(s_image, s_image_len, BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM));
    CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
    CHECK_EQ(fx_reboot(true), 1);
    CHECK(s_fx.core.confirm_waiting);
    uint8_t inf[BLE_OTA_INFO_SIZE];
    info(inf);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_UPDATE_SLOT], BLE_OTA_UPDATE_SLOT_NOTHING);
    /* A restart (or power cut) before CONFIRM: the bootloader gives up on it. */
    CHECK_EQ(fx_reboot(true), 0);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_ABORTED);
    CHECK(strcmp(running_version(), "1.0.0") == 0);
    /* OTA Info says so, until something new is written to that slot. */
    info(inf);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_UPDATE_SLOT], BLE_OTA_UPDATE_SLOT_ROLLED_BACK);
    begin_image(s_image, s_image_len, 0);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 10));
    info(inf);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_UPDATE_SLOT], BLE_OTA_UPDATE_SLOT_NOTHING);
    CHECK_EQ(op(BLE_OTA_CMD_ABORT), BLE_OTA_OK);
    CHECK(!s_fx.core.confirm_waiting);
    CHECK_EQ(op(BLE_OTA_CMD_CONFIRM), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_CONFIRM, BLE_OTA_ST_NOT_PENDING));

    /* A failing self-test rolls back at once, whatever the client wanted. */
    CHECK_OK(v2_upload(s_image, s_image_len, BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM));
    CHECK_EQ(host_dev_boot(&s_fx.dev), 1);
    core_init();
    CHECK_EQ(ble_ota_core_confirm_boot(&s_fx.core, false), BLE_OTA_IMG_PENDING_VERIFY);
    CHECK(!s_fx.core.confirm_waiting);
    CHECK(s_fx.dev.restart_pending);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_INVALID);
    CHECK_EQ(fx_reboot(true), 0);
}

/* --- DEFLATE ------------------------------------------------------------------------ */

/* An image that deflates about 2:1, as ESP-IDF apps do. */
static size_t
compressible_image(uint8_t *out, size_t cap)
{
    return build_image_of(out, cap, "3.0.0", 20000, 7, true);
}

static void
test_v2_deflate_update(void)
{
    static uint8_t img[64 * 1024];
    static uint8_t enc[80 * 1024];

    CHECK_OK(fx_setup());
    const size_t len = compressible_image(img, sizeof(img));
    CHECK(len > 2 * BLE_OTA_DEFLATE_CHUNK);
    const size_t enc_len = test_deflate_chunks(img, len, 0, enc, sizeof(enc));
    CHECK(enc_len > 0 && enc_len < len * 2 / 3); /* deflated, not stored */
    begin_image(img, len, BLE_OTA_BEGIN_FLAG_DEFLATE);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 14));
    CHECK_EQ(ble_ota_get_le32(last_note()->data + 2), 0);
    CHECK_EQ(ble_ota_get_le32(last_note()->data + 10), 0);
    stream(enc, 0, enc_len, CHUNK);
    CHECK(evented(BLE_OTA_EVT_ACK, (uint32_t)enc_len));
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_OK));
    CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
    CHECK_EQ(fx_reboot(true), 1);
    CHECK(strcmp(running_version(), "3.0.0") == 0);
    CHECK(memcmp(host_flash_slot(&s_fx.dev.flash, 1), img, len) == 0);
}

static void
test_v2_deflate_bad_chunks(void)
{
    static uint8_t img[64 * 1024];
    static uint8_t enc[80 * 1024];
    const size_t len = compressible_image(img, sizeof(img));
    const size_t enc_len = test_deflate_chunks(img, len, 0, enc, sizeof(enc));

    /* A corrupt deflate stream, a length of 0, a length above the chunk.
     * (Other damage may inflate to the right size: END's SHA-256 catches it.) */
    for (int k = 0; k < 3; k++) {
        static uint8_t bad[80 * 1024];
        CHECK_OK(fx_setup());
        memcpy(bad, enc, enc_len);
        if (k == 0) {
            bad[2] = 0xFF; /* block type 3, which deflate reserves */
        } else {
            const uint16_t l = k == 1 ? 0 : BLE_OTA_DEFLATE_CHUNK + 1;
            ble_ota_put_le16(bad, l);
        }
        begin_image(img, len, BLE_OTA_BEGIN_FLAG_DEFLATE);
        CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 14));
        stream(bad, 0, enc_len, CHUNK);
        CHECK_EQ(count_notes(BLE_OTA_EVT_FAILED, 0), 1);
        CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_IDLE);
        CHECK_EQ(s_fx.core.last_status, BLE_OTA_ST_BAD_DATA);
        CHECK_EQ(fx_reboot(true), 0);
    }

    /* A whole image, then bytes after its last chunk. */
    CHECK_OK(fx_setup());
    begin_image(img, len, BLE_OTA_BEGIN_FLAG_DEFLATE);
    stream(enc, 0, enc_len, CHUNK);
    CHECK(evented(BLE_OTA_EVT_ACK, (uint32_t)enc_len));
    /* After the last chunk, the stream is over: one byte more fails it. */
    const uint8_t extra[] = { 1, 0, 0, 0, 0x01, 0x00, 0xAA };
    stream_packet((uint32_t)enc_len, extra + 4, 3);
    CHECK_EQ(s_fx.core.last_status, BLE_OTA_ST_BAD_DATA);
    CHECK_EQ(fx_reboot(true), 0);

    /* DEFLATE asked of a platform that cannot inflate. */
    CHECK_OK(fx_setup());
    s_fx.dev.port.inflate = NULL;
    core_init();
    begin_image(img, len, BLE_OTA_BEGIN_FLAG_DEFLATE);
    CHECK(answered_plain(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_BAD_ARGUMENT));
    uint8_t inf[BLE_OTA_INFO_SIZE];
    info(inf);
    CHECK_EQ(ble_ota_get_le16(inf + BLE_OTA_INFO_OFF_FEATURES) & BLE_OTA_FEATURE_DEFLATE, 0);
    CHECK_OK(fx_setup()); /* the port again as it was */
}

static void
test_v2_deflate_resume(void)
{
    static uint8_t img[64 * 1024];
    static uint8_t enc[80 * 1024];
    static uint8_t rest[80 * 1024];

    CHECK_OK(fx_setup());
    const size_t len = compressible_image(img, sizeof(img));
    const size_t enc_len = test_deflate_chunks(img, len, 0, enc, sizeof(enc));
    begin_image(img, len, BLE_OTA_BEGIN_FLAG_DEFLATE);
    /* Cut in the middle of the stream, most likely inside a chunk. */
    const size_t cut = enc_len / 2 + 7;
    stream(enc, 0, cut, CHUNK);
    ble_ota_core_disconnected(&s_fx.core);
    begin_image(img, len, BLE_OTA_BEGIN_FLAG_DEFLATE);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 14));
    const uint32_t offset = ble_ota_get_le32(last_note()->data + 2);
    const uint32_t image_offset = ble_ota_get_le32(last_note()->data + 10);
    /* At a chunk boundary, before the cut, after what was stored. */
    CHECK_EQ(image_offset % BLE_OTA_DEFLATE_CHUNK, 0);
    CHECK(offset <= cut && image_offset > 0);
    /* The client encodes again from that chunk and numbers it from offset. */
    const size_t rest_len = test_deflate_chunks(img, len, image_offset / BLE_OTA_DEFLATE_CHUNK, rest, sizeof(rest));
    for (size_t at = 0; at < rest_len; at += CHUNK) {
        const size_t n = rest_len - at < CHUNK ? rest_len - at : CHUNK;
        stream_packet((uint32_t)(offset + at), rest + at, n);
    }
    CHECK(evented(BLE_OTA_EVT_ACK, (uint32_t)(offset + rest_len)));
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_OK));
    CHECK(memcmp(host_flash_slot(&s_fx.dev.flash, 1), img, len) == 0);

    /* The same image without DEFLATE is another transfer: it starts over. */
    CHECK_OK(fx_setup());
    begin_image(img, len, BLE_OTA_BEGIN_FLAG_DEFLATE);
    stream(enc, 0, cut, CHUNK);
    ble_ota_core_disconnected(&s_fx.core);
    begin_image(img, len, 0);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 10));
    CHECK_EQ(ble_ota_get_le32(last_note()->data + 2), 0);
}

/* --- OTA Info ------------------------------------------------------------------------- */

static void
test_v2_info_layout(void)
{
    uint8_t inf[BLE_OTA_INFO_SIZE + 8];
    uint8_t sha[32];

    CHECK_OK(fx_setup());
    CHECK_EQ(ble_ota_core_info_read(&s_fx.core, inf, BLE_OTA_INFO_SIZE - 1), 0);
    CHECK_EQ(ble_ota_core_info_read(&s_fx.core, NULL, BLE_OTA_INFO_SIZE), 0);
    memset(inf, 0xAA, sizeof(inf));
    CHECK_EQ(ble_ota_core_info_read(&s_fx.core, inf, sizeof(inf)), BLE_OTA_INFO_SIZE);
    CHECK_EQ(inf[BLE_OTA_INFO_SIZE], 0xAA); /* nothing written beyond */
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_INFO_VERSION], BLE_OTA_INFO_VERSION);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_PROTOCOL], BLE_OTA_PROTOCOL_VERSION);
    CHECK_EQ(ble_ota_get_le16(inf + BLE_OTA_INFO_OFF_FEATURES),
             BLE_OTA_FEATURE_RESUME | BLE_OTA_FEATURE_CLIENT_CONFIRM | BLE_OTA_FEATURE_SEED | BLE_OTA_FEATURE_DEFLATE |
                 BLE_OTA_FEATURE_DELTA);
    CHECK_EQ(ble_ota_get_le16(inf + BLE_OTA_INFO_OFF_CHIP_ID), 0);
    CHECK_EQ(ble_ota_get_le16(inf + BLE_OTA_INFO_OFF_CHIP_REVISION), 300);
    CHECK_EQ(ble_ota_get_le32(inf + BLE_OTA_INFO_OFF_SLOT_SIZE), SLOT_SIZE);
    CHECK_EQ(ble_ota_get_le16(inf + BLE_OTA_INFO_OFF_MAX_PACKET), BLE_OTA_MAX_PACKET);
    CHECK_EQ(ble_ota_get_le16(inf + BLE_OTA_INFO_OFF_WINDOW), BLE_OTA_DEFAULT_WINDOW);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_RUNNING_STATE], BLE_OTA_RUNNING_VALID);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_LAST_STATUS], BLE_OTA_LAST_STATUS_NONE);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_TRANSFER_STATE], BLE_OTA_TRANSFER_IDLE);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_UPDATE_SLOT], 0);
    CHECK_EQ(ble_ota_get_le32(inf + BLE_OTA_INFO_OFF_TRANSFER_OFFSET), 0);
    for (int i = BLE_OTA_INFO_OFF_TRANSFER_SHA256;
         i < BLE_OTA_INFO_OFF_TRANSFER_SHA256 + BLE_OTA_INFO_LEN_TRANSFER_SHA256; i++) {
        CHECK_EQ(inf[i], 0);
    }
    CHECK_EQ(ble_ota_get_le32(inf + BLE_OTA_INFO_OFF_SECURE_VERSION), 0);
    /* The device id, reserved bytes, no signing key (unsigned images taken);
     * the link fields: test_link.c. */
    CHECK(memcmp(inf + BLE_OTA_INFO_OFF_DEVICE_ID, s_fx.dev.device_id, BLE_OTA_INFO_LEN_DEVICE_ID) == 0);
    for (int i = BLE_OTA_INFO_OFF_DEVICE_ID + BLE_OTA_INFO_LEN_DEVICE_ID;
         i < BLE_OTA_INFO_OFF_SIGNING_KEY + BLE_OTA_INFO_LEN_SIGNING_KEY; i++) {
        CHECK_EQ(inf[i], 0);
    }
    /* Strings NUL-padded to their field. */
    static const struct {
        int offset, len;
        const char *text;
    } fields[] = {
        { BLE_OTA_INFO_OFF_VERSION, BLE_OTA_INFO_LEN_VERSION, "1.0.0" },
        { BLE_OTA_INFO_OFF_PROJECT_NAME, BLE_OTA_INFO_LEN_PROJECT_NAME, "virtual-esp32" },
        { BLE_OTA_INFO_OFF_IDF_VERSION, BLE_OTA_INFO_LEN_IDF_VERSION, "v5.3-virtual" },
        { BLE_OTA_INFO_OFF_DATE, BLE_OTA_INFO_LEN_DATE, "Jan  1 2025" },
        { BLE_OTA_INFO_OFF_TIME, BLE_OTA_INFO_LEN_TIME, "12:00:00" },
    };
    for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
        const size_t n = strlen(fields[f].text);
        CHECK(memcmp(inf + fields[f].offset, fields[f].text, n) == 0);
        for (int i = (int)n; i < fields[f].len; i++) {
            CHECK_EQ(inf[fields[f].offset + i], 0);
        }
    }

    /* Chip, window, seed feature from the device and the config. */
    s_fx.dev.chip_id = 9;
    s_config.window = 1234;
    s_config.serve_seed = false;
    core_init();
    info(inf);
    CHECK_EQ(ble_ota_get_le16(inf + BLE_OTA_INFO_OFF_FEATURES),
             BLE_OTA_FEATURE_RESUME | BLE_OTA_FEATURE_CLIENT_CONFIRM | BLE_OTA_FEATURE_DEFLATE | BLE_OTA_FEATURE_DELTA);
    CHECK_EQ(ble_ota_get_le16(inf + BLE_OTA_INFO_OFF_CHIP_ID), 9);
    CHECK_EQ(ble_ota_get_le16(inf + BLE_OTA_INFO_OFF_WINDOW), 1234);
    s_fx.dev.chip_id = 0;
    s_config.serve_seed = true;
    core_init();

    /* During a transfer: state, offset, SHA-256; last_status follows
     * BEGIN, END and FAILED. */
    ble_ota_sha256(s_image, s_image_len, sha);
    begin_image(s_image, s_image_len, 0);
    stream(s_image, 0, 7 * CHUNK, CHUNK);
    info(inf);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_LAST_STATUS], BLE_OTA_ST_OK);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_TRANSFER_STATE], BLE_OTA_TRANSFER_RECEIVING);
    CHECK_EQ(ble_ota_get_le32(inf + BLE_OTA_INFO_OFF_TRANSFER_OFFSET), 7 * CHUNK);
    CHECK(memcmp(inf + BLE_OTA_INFO_OFF_TRANSFER_SHA256, sha, BLE_OTA_INFO_LEN_TRANSFER_SHA256) == 0);
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    info(inf);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_LAST_STATUS], BLE_OTA_ST_INCOMPLETE);
    host_flash_fail_write_after(&s_fx.dev.flash, 1);
    stream(s_image, 7 * CHUNK, 20 * CHUNK, CHUNK);
    host_flash_fail_write_after(&s_fx.dev.flash, 0);
    info(inf);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_LAST_STATUS], BLE_OTA_ST_FLASH_ERROR);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_TRANSFER_STATE], BLE_OTA_TRANSFER_IDLE);
    CHECK_EQ(ble_ota_get_le32(inf + BLE_OTA_INFO_OFF_TRANSFER_OFFSET), 0);
    for (int i = BLE_OTA_INFO_OFF_TRANSFER_SHA256;
         i < BLE_OTA_INFO_OFF_TRANSFER_SHA256 + BLE_OTA_INFO_LEN_TRANSFER_SHA256; i++) {
        CHECK_EQ(inf[i], 0);
    }
    /* ABORT, CONFIRM, RESTART do not count as attempts. */
    CHECK_EQ(op(BLE_OTA_CMD_CONFIRM), BLE_OTA_OK);
    CHECK_EQ(op(BLE_OTA_CMD_ABORT), BLE_OTA_OK);
    info(inf);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_LAST_STATUS], BLE_OTA_ST_FLASH_ERROR);

    /* A seed transfer shows too, without a hash. */
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
    CHECK_EQ(send_packets(s_image, 3 * 244, 244), BLE_OTA_OK);
    info(inf);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_TRANSFER_STATE], BLE_OTA_TRANSFER_RECEIVING);
    CHECK_EQ(ble_ota_get_le32(inf + BLE_OTA_INFO_OFF_TRANSFER_OFFSET), 3 * 244);
    for (int i = BLE_OTA_INFO_OFF_TRANSFER_SHA256;
         i < BLE_OTA_INFO_OFF_TRANSFER_SHA256 + BLE_OTA_INFO_LEN_TRANSFER_SHA256; i++) {
        CHECK_EQ(inf[i], 0);
    }
}

/* --- the two protocols side by side ---------------------------------------------------- */

static void
test_v2_and_seed_take_over_from_each_other(void)
{
    CHECK_OK(fx_setup());
    /* A seed REQUEST aborts a v2 transfer, receiving or suspended. */
    begin_image(s_image, s_image_len, 0);
    stream(s_image, 0, 20 * CHUNK, CHUNK);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
    CHECK_EQ(last_notify(), BLE_OTA_CTRL_REQUEST_ACK);
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_IDLE);
    CHECK_EQ(s_fx.dev.plan.written, 0);
    CHECK_EQ(send_packets(s_image, 10 * 244, 244), BLE_OTA_OK);
    /* A v2 BEGIN aborts the seed transfer. */
    begin_image(s_image, s_image_len, 0);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 10));
    CHECK_EQ(ble_ota_get_le32(last_note()->data + 2), 0);
    CHECK_EQ(s_fx.core.state, BLE_OTA_STATE_IDLE);
    CHECK_EQ(ble_ota_core_data_write(&s_fx.core, s_image, 244), BLE_OTA_ERR_NOT_RECEIVING);
    stream(s_image, 0, 20 * CHUNK, CHUNK);
    ble_ota_core_disconnected(&s_fx.core);
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_SUSPENDED);
    CHECK_OK(upload(s_image, s_image_len, 244));
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_IDLE);
    /* After the seed's DONE_ACK, v2 BEGIN is refused. */
    begin_image(s_image, s_image_len, 0);
    CHECK(answered_plain(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_BAD_STATE));
    CHECK_EQ(op(BLE_OTA_CMD_ABORT), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_ABORT, BLE_OTA_ST_BAD_STATE));
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_BAD_STATE));

    /* After v2 END OK the seed characteristics say "restart pending". */
    CHECK_OK(fx_setup());
    CHECK_OK(v2_upload(s_image, s_image_len, 0));
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_ERR_BUSY);
    CHECK_EQ(packet_size(244), BLE_OTA_ERR_BUSY);
    CHECK_EQ(s_fx.dev.flash.boot_slot, 1);
}

static void
test_v2_seed_update_clears_confirm_flag(void)
{
    static uint8_t third[64 * 1024];

    CHECK_OK(fx_setup());
    CHECK_OK(v2_upload(s_image, s_image_len, BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM));
    CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
    CHECK_EQ(fx_reboot(true), 1);
    CHECK_EQ(op(BLE_OTA_CMD_CONFIRM), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_CONFIRM, BLE_OTA_ST_OK));
    /* A seed client never confirms: its image must not wait for it. */
    const size_t len = build_image(third, sizeof(third), "3.0.0", 5000, 3);
    CHECK_OK(upload(third, len, 244));
    CHECK(!s_fx.dev.flash.confirm_required);
    CHECK_EQ(fx_reboot(true), 0);
    CHECK(!s_fx.core.confirm_waiting);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 0), HOST_SLOT_VALID);
    CHECK(strcmp(running_version(), "3.0.0") == 0);
}

/* --- power loss ------------------------------------------------------------------------ */

/* Runs the first `steps` operations of a v2 update (BEGIN, each packet,
 * END, RESTART); returns how many it ran. */
static int
partial_v2_upload(int steps, uint16_t flags)
{
    int done = 0;
    if (done == steps) {
        return done;
    }
    begin_image(s_image, s_image_len, flags);
    for (size_t off = 0; off < s_image_len; off += 500) {
        if (++done == steps) {
            return done;
        }
        const size_t n = s_image_len - off < 500 ? s_image_len - off : 500;
        stream_packet((uint32_t)off, s_image + off, n);
    }
    if (++done == steps) {
        return done;
    }
    op(BLE_OTA_CMD_END);
    if (++done == steps) {
        return done;
    }
    op(BLE_OTA_CMD_RESTART);
    return ++done;
}

static void
test_v2_power_loss_at_every_step(void)
{
    const uint16_t flag_sets[] = { 0, BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM };
    for (size_t f = 0; f < 2; f++) {
        const uint16_t flags = flag_sets[f];
        for (int steps = 0;; steps++) {
            CHECK_OK(fx_setup());
            s_image_len = build_image(s_image, sizeof(s_image), "2.0.0", 9000, 2);
            const int ran = partial_v2_upload(steps, flags);
            const bool finished = ran < steps;
            const bool selected = s_fx.dev.flash.boot_slot == 1;
            /* Power cut: no disconnect, no delayed restart; then boot. */
            int slot = fx_reboot(true);
            if (selected) {
                CHECK_EQ(slot, 1);
                CHECK(strcmp(running_version(), "2.0.0") == 0);
                CHECK_EQ(s_fx.core.confirm_waiting, flags != 0);
                if (flags != 0) {
                    /* Unconfirmed, a second power cut rolls it back; confirmed, it stays. */
                    if (steps % 2 == 0) {
                        slot = fx_reboot(true);
                        CHECK_EQ(slot, 0);
                        CHECK(strcmp(running_version(), "1.0.0") == 0);
                    } else {
                        CHECK_EQ(op(BLE_OTA_CMD_CONFIRM), BLE_OTA_OK);
                        CHECK(answered_plain(BLE_OTA_CMD_CONFIRM, BLE_OTA_ST_OK));
                    }
                }
            } else {
                /* Only RESTART selects: before it, whatever the other slot
                 * holds (nothing, part of the image, the whole valid image),
                 * the old image boots. */
                CHECK_EQ(slot, 0);
                CHECK(strcmp(running_version(), "1.0.0") == 0);
            }
            CHECK_EQ(host_dev_slot_state(&s_fx.dev, slot), HOST_SLOT_VALID);
            /* RAM is gone: no transfer to resume, the same BEGIN starts at 0. */
            CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_IDLE);
            /* Whatever happened, the next update goes through. */
            static uint8_t next[16384];
            const size_t len = build_image(next, sizeof(next), "3.0.0", 2000, 3);
            CHECK_OK(v2_upload(next, len, flags));
            CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
            CHECK_EQ(fx_reboot(true), 1 - slot);
            CHECK(strcmp(running_version(), "3.0.0") == 0);
            if (finished) {
                CHECK(selected);
                break;
            }
        }
    }
}

/* --- port errors ------------------------------------------------------------------------ */

/* The host port with one call made to fail: what each port error becomes. */
static ble_ota_port_t s_faulty;
static ble_ota_port_err_t s_fault = BLE_OTA_PORT_ERR_FLASH;

static ble_ota_port_err_t
faulty_slot_begin(void *ctx, uint32_t size)
{
    (void)ctx;
    (void)size;
    return s_fault;
}

static ble_ota_port_err_t
faulty_flag(void *ctx, bool required)
{
    (void)ctx;
    (void)required;
    return s_fault;
}

static ble_ota_port_err_t
faulty_call(void *ctx)
{
    (void)ctx;
    return s_fault;
}

static void
faulty_core(void)
{
    s_faulty = s_fx.dev.port;
    ble_ota_core_init(&s_fx.core, &s_faulty, &s_config);
}

static void
test_v2_port_errors(void)
{
    static const struct {
        ble_ota_port_err_t err;
        uint8_t status;
    } begin_map[] = {
        { BLE_OTA_PORT_ERR_FLASH, BLE_OTA_ST_FLASH_ERROR },
        { BLE_OTA_PORT_ERR_OTHER, BLE_OTA_ST_FLASH_ERROR },
        { BLE_OTA_PORT_ERR_NO_SLOT, BLE_OTA_ST_NO_SLOT },
        { BLE_OTA_PORT_ERR_TOO_LARGE, BLE_OTA_ST_TOO_LARGE },
        /* esp_ota_begin's refusal while the running image is unconfirmed */
        { BLE_OTA_PORT_ERR_STATE, BLE_OTA_ST_PENDING_CONFIRM },
    };
    for (size_t i = 0; i < sizeof(begin_map) / sizeof(begin_map[0]); i++) {
        CHECK_OK(fx_setup());
        faulty_core();
        s_faulty.slot_begin = faulty_slot_begin;
        s_fault = begin_map[i].err;
        begin_image(s_image, s_image_len, 0);
        CHECK(answered_plain(BLE_OTA_CMD_BEGIN, begin_map[i].status));
        CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_IDLE);
    }

    /* RESTART: the flag or the boot slot cannot be written. The image stays
     * complete and unselected: RESTART may be asked again. */
    for (int which = 0; which < 2; which++) {
        CHECK_OK(fx_setup());
        faulty_core();
        s_fault = BLE_OTA_PORT_ERR_FLASH;
        if (which == 0) {
            s_faulty.set_confirm_required = faulty_flag;
        } else {
            s_faulty.set_boot_slot = faulty_call;
        }
        begin_image(s_image, s_image_len, BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM);
        stream(s_image, 0, s_image_len, CHUNK);
        CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
        CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_OK));
        CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
        CHECK(answered_plain(BLE_OTA_CMD_RESTART, BLE_OTA_ST_FLASH_ERROR));
        CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_COMPLETE);
        CHECK_EQ(s_fx.dev.flash.boot_slot, 0);
        CHECK(!s_fx.dev.restart_pending);
        s_faulty = s_fx.dev.port; /* the flash works again */
        CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
        CHECK(answered_plain(BLE_OTA_CMD_RESTART, BLE_OTA_ST_OK));
        CHECK_EQ(s_fx.dev.flash.boot_slot, 1);
        CHECK(s_fx.dev.restart_pending);
    }
    /* RESTART refused for good (the boot selection validates the image
     * again): the image is dropped, and a new BEGIN starts over. */
    CHECK_OK(fx_setup());
    faulty_core();
    s_fault = BLE_OTA_PORT_ERR_INVALID_IMAGE;
    s_faulty.set_boot_slot = faulty_call;
    v2_upload_to_end(s_image, s_image_len, 0);
    CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_RESTART, BLE_OTA_ST_INVALID_IMAGE));
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_IDLE);
    CHECK_EQ(s_fx.dev.flash.boot_slot, 0);
    CHECK(!s_fx.dev.restart_pending);

    /* The seed's DONE fails the same way when the flag cannot be cleared. */
    CHECK_OK(fx_setup());
    faulty_core();
    s_faulty.set_confirm_required = faulty_flag;
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
    CHECK_EQ(send_packets(s_image, s_image_len, 244), BLE_OTA_OK);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_DONE), BLE_OTA_OK);
    CHECK_EQ(last_notify(), BLE_OTA_CTRL_DONE_NAK);
    CHECK_EQ(s_fx.dev.flash.boot_slot, 0);

    /* CONFIRM that cannot mark the image valid: FLASH_ERROR, and the
     * window keeps running. */
    CHECK_OK(fx_setup());
    CHECK_OK(v2_upload(s_image, s_image_len, BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM));
    CHECK_EQ(host_dev_boot(&s_fx.dev), 1);
    faulty_core();
    ble_ota_core_confirm_boot(&s_fx.core, true);
    s_faulty.mark_valid = faulty_call;
    CHECK_EQ(op(BLE_OTA_CMD_CONFIRM), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_CONFIRM, BLE_OTA_ST_FLASH_ERROR));
    CHECK(s_fx.core.confirm_waiting);
    s_faulty.mark_valid = s_fx.dev.port.mark_valid;
    CHECK_EQ(op(BLE_OTA_CMD_CONFIRM), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_CONFIRM, BLE_OTA_ST_OK));
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_VALID);
}

/* --- signed images and anti-rollback -------------------------------------------- */

/* The owner's signing key, made once per run (ECDSA P-256: fast). */
static test_sign_key_t *
owner_key(void)
{
    static test_sign_key_t *key;

    if (key == NULL) {
        key = test_sign_key_new("ecdsa256");
    }
    return key;
}

/* fx_setup, but the device runs 1.0.0 signed by key and takes only images
 * signed with the same key (CONFIG_SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT). */
static void
signed_setup(const test_sign_key_t *key)
{
    static uint8_t first[16 * 1024];
    char why[120];

    CHECK_OK(fx_setup());
    const size_t len = build_image(first, sizeof(first), "1.0.0", 3000, 1);
    const size_t signed_len = test_sign_image(key, first, len, first, sizeof(first));
    CHECK(signed_len > len);
    CHECK(host_dev_install(&s_fx.dev, 0, first, signed_len, why, sizeof(why)));
    s_fx.dev.require_signature = true;
    CHECK_EQ(fx_reboot(true), 0);
}

static void
test_v2_signed_updates(void)
{
    static uint8_t img[sizeof(s_image) + 8192];
    uint8_t inf[BLE_OTA_INFO_SIZE];
    uint8_t digest[HOST_SIG_DIGEST_LEN];
    test_sign_key_t *stranger = test_sign_key_new("ecdsa256");

    CHECK(owner_key() != NULL && stranger != NULL);
    CHECK_OK(signed_setup(owner_key()));
    /* OTA Info names the key updates must be signed with. */
    info(inf);
    CHECK_EQ(ble_ota_get_le16(inf + BLE_OTA_INFO_OFF_FEATURES) & BLE_OTA_FEATURE_SIGNED, BLE_OTA_FEATURE_SIGNED);
    test_sign_key_digest(owner_key(), digest);
    CHECK(memcmp(inf + BLE_OTA_INFO_OFF_SIGNING_KEY, digest, sizeof(digest)) == 0);

    /* Unsigned, signed by a stranger, tampered after signing: each goes
     * through the stream, and END refuses it before it can be selected. */
    const size_t signed_len = test_sign_image(owner_key(), s_image, s_image_len, img, sizeof(img));
    CHECK(signed_len > 0);
    const struct {
        const char *what;
        int kind;
    } cases[] = { { "unsigned", 0 },
                  { "a stranger's signature", 1 },
                  { "a byte changed after signing", 2 },
                  { "damaged, then signed by the owner", 3 } };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        size_t len = s_image_len;
        memcpy(img, s_image, s_image_len);
        if (cases[c].kind == 1) {
            len = test_sign_image(stranger, s_image, s_image_len, img, sizeof(img));
        } else if (cases[c].kind == 2) {
            /* Its checksum and hash fail too (a tamperer who fixes them: the
             * next test), but ESP-IDF checks the signature with them, so the
             * ESP32 says what it can: not signed with the trusted key. */
            len = test_sign_image(owner_key(), s_image, s_image_len, img, sizeof(img));
            img[s_image_len / 2] ^= 0x01;
        } else if (cases[c].kind == 3) {
            /* The signature holds: what is wrong is the image itself. */
            img[s_image_len / 2] ^= 0x01;
            len = test_sign_image(owner_key(), img, s_image_len, img, sizeof(img));
        }
        begin_image(img, len, 0);
        CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 10));
        stream(img, 0, len, CHUNK);
        CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
        const uint8_t expected = cases[c].kind == 3 ? BLE_OTA_ST_INVALID_IMAGE : BLE_OTA_ST_BAD_SIGNATURE;
        if (!answered_plain(BLE_OTA_CMD_END, expected)) {
            test_failf(__FILE__, __LINE__, "%s: not refused with status 0x%02x", cases[c].what, expected);
            test_sign_key_free(stranger);
            return;
        }
        CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_EMPTY);
        CHECK_EQ(s_fx.dev.flash.boot_slot, 0);
    }
    test_sign_key_free(stranger);

    /* The owner's signed image is taken, and boots. */
    v2_upload(img, test_sign_image(owner_key(), s_image, s_image_len, img, sizeof(img)), 0);
    CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
    CHECK_EQ(fx_reboot(true), 1);
    CHECK(strcmp(running_version(), "2.0.0") == 0);
}

/* A tamperer who also fixes the checksum and the appended hash still
 * fails: the signature covers every byte. */
static void
test_v2_signed_update_tampered_consistently(void)
{
    static uint8_t img[sizeof(s_image) + 8192];
    static uint8_t other[sizeof(s_image)];

    CHECK_OK(signed_setup(owner_key()));
    /* A different valid image of the same size, under the owner's signature sector. */
    const size_t signed_len = test_sign_image(owner_key(), s_image, s_image_len, img, sizeof(img));
    const size_t other_len = build_image(other, sizeof(other), "6.6.6", 20000, 99);
    CHECK_EQ(other_len, s_image_len);
    memcpy(img, other, other_len);
    CHECK(host_image_verify(img, signed_len, 0, NULL, NULL, 0) == HOST_IMAGE_OK);
    begin_image(img, signed_len, 0);
    stream(img, 0, signed_len, CHUNK);
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_BAD_SIGNATURE));
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_EMPTY);
}

/* A device that trusts no key: the owner's signed image is refused at
 * BEGIN with BAD_SIGNATURE, before a byte is sent, and nothing is erased. */
static void
check_signed_image_refused_at_begin(void)
{
    static uint8_t img[sizeof(s_image) + 8192];

    const size_t signed_len = test_sign_image(owner_key(), s_image, s_image_len, img, sizeof(img));
    CHECK(signed_len > 0);
    const uint32_t erases = s_fx.dev.flash.erases + s_fx.dev.flash.block_erases;
    begin_image(img, signed_len, 0);
    CHECK(answered_plain(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_BAD_SIGNATURE));
    CHECK_EQ(s_fx.dev.flash.erases + s_fx.dev.flash.block_erases, erases);
}

/* A signature sector an older image left: the owner's signed 1.0.0 ran in
 * ota_0, and an unsigned 1.0.1 of the same length was flashed over it over
 * USB (esptool erases only what it writes), so 1.0.0's signature sector is
 * where 1.0.1's would be. ESP-IDF takes the trusted key from that block on
 * its magic and CRC alone, and would install an image signed with it. The
 * firmware trusts only a block that signs the image it runs: 1.0.1 names no
 * key, and an image signed with the key of that leftover block is refused. */
static void
test_v2_stale_signature_sector_trusts_no_key(void)
{
    static uint8_t unsigned_img[16 * 1024];
    static const uint8_t no_key[HOST_SIG_DIGEST_LEN];
    uint8_t inf[BLE_OTA_INFO_SIZE];
    uint8_t digest[HOST_SIG_DIGEST_LEN];
    uint8_t left[HOST_SIG_DIGEST_LEN];
    char why[120];

    CHECK_OK(signed_setup(owner_key()));
    const uint32_t signed_image_len = s_fx.dev.flash.slot[0].image_len;
    const size_t len = build_image(unsigned_img, sizeof(unsigned_img), "1.0.1", 3000, 2);
    CHECK_EQ(host_sig_sector_offset((uint32_t)len), host_sig_sector_offset(signed_image_len));
    CHECK(host_dev_install(&s_fx.dev, 0, unsigned_img, len, why, sizeof(why)));
    CHECK_EQ(fx_reboot(true), 0);
    CHECK(strcmp(running_version(), "1.0.1") == 0);
    /* The leftover block is there, and names the owner's key. */
    test_sign_key_digest(owner_key(), digest);
    CHECK(
        host_sig_image_key_digest(host_flash_slot(&s_fx.dev.flash, 0), s_fx.dev.flash.slot_size, (uint32_t)len, left));
    CHECK(memcmp(left, digest, sizeof(digest)) == 0);

    info(inf);
    CHECK_EQ(ble_ota_get_le16(inf + BLE_OTA_INFO_OFF_FEATURES) & BLE_OTA_FEATURE_SIGNED, BLE_OTA_FEATURE_SIGNED);
    CHECK(memcmp(inf + BLE_OTA_INFO_OFF_SIGNING_KEY, no_key, sizeof(no_key)) == 0);

    check_signed_image_refused_at_begin();
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_EMPTY);
    CHECK_EQ(s_fx.dev.flash.boot_slot, 0);
}

/* An unsigned app flashed over USB to a device whose build verifies
 * signatures, on an erased slot: no signature block at all. It trusts no
 * key, so BEGIN refuses every image at once, and changes nothing. */
static void
test_v2_unsigned_running_app_refuses_at_begin(void)
{
    static uint8_t unsigned_img[16 * 1024];
    uint8_t inf[BLE_OTA_INFO_SIZE];
    char why[120];

    CHECK_OK(signed_setup(owner_key()));
    /* The whole slot erased first (esptool --erase-all, or a new board). */
    for (uint32_t at = 0; at < s_fx.dev.flash.slot_size; at += HOST_FLASH_SECTOR_SIZE) {
        CHECK_EQ(host_flash_erase_sector(&s_fx.dev.flash, 0, at), HOST_FLASH_OK);
    }
    const size_t len = build_image(unsigned_img, sizeof(unsigned_img), "1.0.1", 3000, 2);
    CHECK(host_dev_install(&s_fx.dev, 0, unsigned_img, len, why, sizeof(why)));
    CHECK_EQ(fx_reboot(true), 0);
    info(inf);
    CHECK_EQ(ble_ota_get_le16(inf + BLE_OTA_INFO_OFF_FEATURES) & BLE_OTA_FEATURE_SIGNED, BLE_OTA_FEATURE_SIGNED);

    const uint32_t erases = s_fx.dev.flash.erases + s_fx.dev.flash.block_erases;
    check_signed_image_refused_at_begin();
    /* The seed protocol's REQUEST as well: NAK at once, no slot opened, so
     * not a byte of the image is taken (DONE would refuse it after all). */
    CHECK(s_fx.core.config.serve_seed);
    CHECK_EQ(packet_size(CHUNK), BLE_OTA_OK);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
    CHECK_EQ(last_notify(), BLE_OTA_CTRL_REQUEST_NAK);
    CHECK(!s_fx.dev.plan.open);
    CHECK_EQ(ble_ota_core_data_write(&s_fx.core, s_image, CHUNK), BLE_OTA_ERR_NOT_RECEIVING);
    CHECK_EQ(s_fx.dev.flash.erases + s_fx.dev.flash.block_erases, erases);
    CHECK(strcmp(running_version(), "1.0.1") == 0);
}

/* Anti-rollback: an image whose secure_version is below the running one's
 * fails at its first packet, in both protocols; equal or higher is taken. */
static void
test_v2_old_secure_version_refused(void)
{
    static uint8_t img[sizeof(s_image)];
    const host_image_spec_t base = {
        .project = "virtual-esp32",
        .payload_len = 20000,
        .seed = 7,
        .hash_appended = true,
    };
    host_image_spec_t spec = base;
    char why[120];

    CHECK_OK(fx_setup());
    /* The device runs secure_version 3. */
    spec.version = "3.0.0";
    spec.secure_version = 3;
    size_t len = host_image_build(&spec, img, sizeof(img));
    CHECK(host_dev_install(&s_fx.dev, 0, img, len, why, sizeof(why)));
    CHECK_EQ(fx_reboot(true), 0);
    uint8_t inf[BLE_OTA_INFO_SIZE];
    info(inf);
    CHECK_EQ(ble_ota_get_le32(inf + BLE_OTA_INFO_OFF_SECURE_VERSION), 3);

    spec.version = "2.9.0";
    spec.secure_version = 2;
    len = host_image_build(&spec, img, sizeof(img));
    begin_image(img, len, 0);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 10));
    stream(img, 0, len, CHUNK);
    CHECK(failed_with(BLE_OTA_ST_OLD_SECURE_VERSION, 0));
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_IDLE);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_EMPTY);
    /* The seed protocol: refused at DONE. */
    CHECK_EQ(packet_size(CHUNK), BLE_OTA_OK);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
    CHECK_EQ(send_packets(img, len, CHUNK), BLE_OTA_OK);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_DONE), BLE_OTA_OK);
    CHECK_EQ(last_notify(), BLE_OTA_CTRL_DONE_NAK);
    CHECK_EQ(s_fx.dev.flash.boot_slot, 0);

    /* The same secure_version is no rollback. */
    spec.version = "3.0.1";
    spec.secure_version = 3;
    len = host_image_build(&spec, img, sizeof(img));
    v2_upload(img, len, 0);
}

/* --- the slot erased while idle (ble_ota_core_idle) ---------------------------------- */

/* Idle steps until the core has nothing left to erase; returns the calls that said more was left. */
static int
idle_all(void)
{
    int more = 0;
    while (ble_ota_core_idle(&s_fx.core) && more < 10000) {
        more++;
    }
    return more;
}

static bool
slot_blank(int slot, uint32_t from, uint32_t to)
{
    const uint8_t *mem = host_flash_slot(&s_fx.dev.flash, slot);
    for (uint32_t i = from; i < to; i++) {
        if (mem[i] != 0xFF) {
            return false;
        }
    }
    return true;
}

/* Erases since the counters were last taken: sectors and blocks. */
static uint32_t s_erases_at, s_blocks_at;

static void
mark_erases(void)
{
    s_erases_at = s_fx.dev.flash.erases;
    s_blocks_at = s_fx.dev.flash.block_erases;
}

static uint32_t
erases_since(void)
{
    return (s_fx.dev.flash.erases - s_erases_at) + (s_fx.dev.flash.block_erases - s_blocks_at);
}

static void
test_v2_idle_erase_leaves_only_page_programs(void)
{
    CHECK_OK(fx_setup());
    /* No client: a 64 KB block per step. */
    ble_ota_core_disconnected(&s_fx.core);
    mark_erases();
    CHECK_EQ(idle_all(), SLOT_SIZE / HOST_FLASH_BLOCK_SIZE - 1);
    CHECK_EQ(s_fx.dev.flash.block_erases - s_blocks_at, SLOT_SIZE / HOST_FLASH_BLOCK_SIZE);
    CHECK_EQ(s_fx.dev.flash.erases - s_erases_at, 0);
    CHECK(slot_blank(1, 0, SLOT_SIZE));
    /* Done: more idle calls erase nothing. */
    CHECK(!ble_ota_core_idle(&s_fx.core));
    CHECK_EQ(erases_since(), SLOT_SIZE / HOST_FLASH_BLOCK_SIZE);
    /* The running image is untouched. */
    CHECK(strcmp(running_version(), "1.0.0") == 0);

    ble_ota_core_connected(&s_fx.core);
    mark_erases();
    const uint32_t pages = s_fx.dev.flash.pages_programmed;
    CHECK_OK(v2_upload(s_image, s_image_len, 0));
    /* BEGIN and the stream erased nothing: only pages were programmed. */
    CHECK_EQ(erases_since(), 0);
    CHECK_EQ(s_fx.dev.flash.pages_programmed - pages, (s_image_len + HOST_FLASH_PAGE_SIZE - 1) / HOST_FLASH_PAGE_SIZE);
    CHECK_EQ(fx_reboot(true), 1);
    CHECK(strcmp(running_version(), "2.0.0") == 0);
    CHECK_EQ(s_fx.errors, 0);
}

static void
test_v2_update_arrives_during_idle_erase(void)
{
    CHECK_OK(fx_setup());
    /* A client is connected: a 4 KB sector per step. Three steps, then BEGIN. */
    mark_erases();
    for (int i = 0; i < 3; i++) {
        CHECK(ble_ota_core_idle(&s_fx.core));
    }
    CHECK_EQ(s_fx.dev.flash.erases - s_erases_at, 3);
    CHECK_EQ(s_fx.dev.flash.block_erases - s_blocks_at, 0);
    begin_image(s_image, s_image_len, 0);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 10));
    /* The transfer holds the slot: no idle step while it runs. */
    mark_erases();
    CHECK(!ble_ota_core_idle(&s_fx.core));
    CHECK_EQ(erases_since(), 0);
    /* The transfer erases what the idle steps had not, and nothing twice. */
    stream(s_image, 0, s_image_len, CHUNK);
    CHECK(evented(BLE_OTA_EVT_ACK, (uint32_t)s_image_len));
    CHECK_EQ(erases_since(),
             (s_image_len - 3 * HOST_FLASH_SECTOR_SIZE + HOST_FLASH_SECTOR_SIZE - 1) / HOST_FLASH_SECTOR_SIZE);
    CHECK(!ble_ota_core_idle(&s_fx.core));
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_OK));
    CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
    CHECK_EQ(fx_reboot(true), 1);
    CHECK(strcmp(running_version(), "2.0.0") == 0);
    CHECK_EQ(s_fx.errors, 0);
}

static void
test_v2_idle_erase_spares_held_slots(void)
{
    static uint8_t before[SLOT_SIZE];

    CHECK_OK(fx_setup());
    /* A suspended transfer: its bytes stay until it is resumed or abandoned. */
    begin_image(s_image, s_image_len, 0);
    stream(s_image, 0, 20000, CHUNK);
    ble_ota_core_disconnected(&s_fx.core);
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_SUSPENDED);
    memcpy(before, host_flash_slot(&s_fx.dev.flash, 1), SLOT_SIZE);
    mark_erases();
    CHECK(!ble_ota_core_idle(&s_fx.core));
    CHECK_EQ(erases_since(), 0);
    CHECK(memcmp(before, host_flash_slot(&s_fx.dev.flash, 1), SLOT_SIZE) == 0);
    ble_ota_core_connected(&s_fx.core);
    begin_image(s_image, s_image_len, 0);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 10));
    const uint32_t resume_at = ble_ota_get_le32(last_note()->data + 2);
    CHECK(resume_at > 0);
    stream(s_image, resume_at, s_image_len, CHUNK);
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_END, BLE_OTA_ST_OK));
    /* Complete, waiting for RESTART; then selected, the restart pending. */
    mark_erases();
    CHECK(!ble_ota_core_idle(&s_fx.core));
    CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
    CHECK(!ble_ota_core_idle(&s_fx.core));
    CHECK_EQ(erases_since(), 0);
    CHECK(memcmp(host_flash_slot(&s_fx.dev.flash, 1), s_image, s_image_len) == 0);

    /* A client confirms: until then the old image is the rollback's, and stays. */
    static uint8_t next[16384];
    const size_t next_len = build_image(next, sizeof(next), "3.0.0", 2000, 3);
    CHECK_EQ(fx_reboot(true), 1);
    CHECK_OK(v2_upload(next, next_len, BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM));
    CHECK_EQ(fx_reboot(true), 0);
    CHECK(s_fx.core.confirm_waiting);
    memcpy(before, host_flash_slot(&s_fx.dev.flash, 1), SLOT_SIZE);
    mark_erases();
    CHECK(!ble_ota_core_idle(&s_fx.core));
    CHECK_EQ(erases_since(), 0);
    CHECK(memcmp(before, host_flash_slot(&s_fx.dev.flash, 1), SLOT_SIZE) == 0);
    CHECK_EQ(op(BLE_OTA_CMD_CONFIRM), BLE_OTA_OK);
    CHECK(answered_plain(BLE_OTA_CMD_CONFIRM, BLE_OTA_ST_OK));
    /* Confirmed: the other slot (2.0.0) goes; the running one and the boot selection stay. */
    idle_all();
    CHECK(slot_blank(1, 0, SLOT_SIZE));
    CHECK(memcmp(host_flash_slot(&s_fx.dev.flash, 0), next, next_len) == 0);
    CHECK_EQ(s_fx.dev.flash.boot_slot, 0);
    CHECK_EQ(fx_reboot(true), 0);
    CHECK(strcmp(running_version(), "3.0.0") == 0);

    /* An abandoned transfer: its slot is erased again from the start. */
    CHECK_OK(fx_setup());
    s_config.abandon_timeout_ms = 60000;
    core_init();
    ble_ota_core_connected(&s_fx.core);
    begin_image(s_image, s_image_len, 0);
    stream(s_image, 0, 20000, CHUNK);
    ble_ota_core_disconnected(&s_fx.core);
    s_fx.clock_ms += 60000;
    ble_ota_core_tick(&s_fx.core);
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_IDLE);
    mark_erases();
    idle_all();
    CHECK_EQ(erases_since(), SLOT_SIZE / HOST_FLASH_BLOCK_SIZE);
    CHECK(slot_blank(1, 0, SLOT_SIZE));
    CHECK_EQ(s_fx.errors, 0);
}

static void
test_v2_power_loss_during_idle_erase(void)
{
    /* Cut at each erase step, and at the first flash operations of a
     * transfer into the erased slot. */
    for (uint32_t cut = 1; cut <= SLOT_SIZE / HOST_FLASH_BLOCK_SIZE + 3; cut++) {
        CHECK_OK(fx_setup());
        ble_ota_core_disconnected(&s_fx.core);
        host_flash_power_loss_after(&s_fx.dev.flash, cut);
        idle_all();
        if (!s_fx.dev.flash.power_lost) {
            ble_ota_core_connected(&s_fx.core);
            begin_image(s_image, s_image_len, 0);
            stream(s_image, 0, s_image_len, CHUNK);
        }
        CHECK(s_fx.dev.flash.power_lost);
        host_flash_power_restored(&s_fx.dev.flash);
        /* Power on: the current image boots, confirmed, and nothing of the
         * erase survives in RAM. */
        CHECK_EQ(fx_reboot(true), 0);
        CHECK(strcmp(running_version(), "1.0.0") == 0);
        CHECK_EQ(host_dev_slot_state(&s_fx.dev, 0), HOST_SLOT_VALID);
        CHECK_EQ(s_fx.dev.plan.prepared_to, 0);
        /* The next update goes through, with the erase redone while idle
         * (odd cuts) or by the transfer itself (even): an erase the cut
         * stopped is never taken for done. */
        if (cut % 2 != 0) {
            idle_all();
        }
        CHECK_OK(v2_upload(s_image, s_image_len, 0));
        CHECK_EQ(fx_reboot(true), 1);
        CHECK(strcmp(running_version(), "2.0.0") == 0);
    }
}

/* A platform that cannot open a slot without erasing it (ESP-IDF before
 * esp_ota_resume: 5.3.0-5.3.2, 5.4.0-5.4.1): every transfer erases sector
 * by sector as its data comes, each sector once, and nothing is erased
 * while idle (the transfer would erase it again). */
static void
test_v2_sequential_writer_without_pre_erase(void)
{
    CHECK_OK(fx_setup());
    s_fx.dev.pre_erased_writes = false;
    CHECK_EQ(fx_reboot(true), 0);
    ble_ota_core_disconnected(&s_fx.core);
    mark_erases();
    CHECK_EQ(idle_all(), 0);
    CHECK_EQ(erases_since(), 0);
    ble_ota_core_connected(&s_fx.core);
    const uint32_t blocks_before = s_fx.dev.flash.block_erases;
    CHECK_OK(v2_upload(s_image, s_image_len, 0));
    CHECK_EQ(s_fx.dev.flash.block_erases, blocks_before);
    CHECK_EQ(erases_since(), (s_image_len + HOST_FLASH_SECTOR_SIZE - 1) / HOST_FLASH_SECTOR_SIZE);
    CHECK_EQ(fx_reboot(true), 1);
    CHECK(strcmp(running_version(), "2.0.0") == 0);
    CHECK_EQ(s_fx.errors, 0);
}

void
test_v2_run_all(void)
{
    RUN(test_v2_update_and_restart);
    RUN(test_v2_flash_written_in_whole_blocks);
    RUN(test_v2_ack_spacing);
    RUN(test_v2_resume_same_image);
    RUN(test_v2_resume_twice_and_at_the_end);
    RUN(test_v2_begin_again_while_receiving);
    RUN(test_v2_other_image_starts_over);
    RUN(test_v2_abandon_timeout);
    RUN(test_v2_unknown_and_bad_length);
    RUN(test_v2_begin_refusals);
    RUN(test_v2_no_slot);
    RUN(test_v2_end_statuses);
    RUN(test_v2_stream_failures);
    RUN(test_v2_header_fields_refused);
    RUN(test_seed_header_fields_refused);
    RUN(test_v2_rollback_refuses_transfers);
    RUN(test_v2_flash_failure_at_every_write);
    RUN(test_v2_gaps_duplicates_resync_once);
    RUN(test_v2_stream_ignored);
    RUN(test_v2_config_defaults);
    RUN(test_v2_restart_and_abort);
    RUN(test_v2_confirm_only_after_self_test);
    RUN(test_v2_complete_image_waits_for_restart_only);
    RUN(test_v2_confirm_by_client);
    RUN(test_v2_confirm_window_expires);
    RUN(test_v2_restart_before_confirm_rolls_back);
    RUN(test_v2_info_layout);
    RUN(test_v2_and_seed_take_over_from_each_other);
    RUN(test_v2_seed_update_clears_confirm_flag);
    RUN(test_v2_port_errors);
    RUN(test_v2_power_loss_at_every_step);
    RUN(test_v2_deflate_update);
    RUN(test_v2_deflate_bad_chunks);
    RUN(test_v2_deflate_resume);
    RUN(test_v2_signed_updates);
    RUN(test_v2_signed_update_tampered_consistently);
    RUN(test_v2_stale_signature_sector_trusts_no_key);
    RUN(test_v2_unsigned_running_app_refuses_at_begin);
    RUN(test_v2_old_secure_version_refused);
    RUN(test_v2_idle_erase_leaves_only_page_programs);
    RUN(test_v2_update_arrives_during_idle_erase);
    RUN(test_v2_idle_erase_spares_held_slots);
    RUN(test_v2_power_loss_during_idle_erase);
    RUN(test_v2_sequential_writer_without_pre_erase);
}
