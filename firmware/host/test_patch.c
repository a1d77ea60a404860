/*
 * Delta updates through the core (docs/PROTOCOL.md, *Delta updates*;
 * docs/DELTA.md): the running image the device reports, BEGIN with PATCH
 * and its refusals, a patch applied into the other slot, resumed at any
 * chunk, cut by a power loss at every flash operation, and damaged.
 */
#include "test_patch.h"

#include <stdio.h>
#include <string.h>

#include <zlib.h>

#include "ble_ota_le.h"
#include "ble_ota_sha256.h"
#include "host_image.h"
#include "host_patch.h"
#include "test.h"
#include "test_deflate.h"
#include "test_fixture.h"
#include "test_notes.h"
#include "test_sign.h"

#define PKT     240
#define MAX_IMG (96u * 1024u)

static uint8_t s_old[MAX_IMG];
static size_t s_old_len;
static uint8_t s_new[MAX_IMG];
static size_t s_new_len;
static uint8_t s_patch[MAX_IMG];
static size_t s_patch_len;
static uint8_t s_stream[MAX_IMG + MAX_IMG / 8];
static size_t s_stream_len;

/* --- helpers ------------------------------------------------------------------ */

/* Images of compressible code (as real code is) or of random bytes. */
static bool s_compressible;

static size_t
image(uint8_t *out, const char *version, uint32_t payload)
{
    return build_image_of(out, MAX_IMG, version, payload, 11, s_compressible);
}

/* A device running 1.0.0 (payload old_payload), a 2.0.0 of new_payload
 * bytes that shares its start, the patch between them, deflated. */
static void
patch_setup(uint32_t old_payload, uint32_t new_payload)
{
    char why[120];

    CHECK_OK(fx_setup());
    s_old_len = image(s_old, "1.0.0", old_payload);
    CHECK(s_old_len > 0 && host_dev_install(&s_fx.dev, 0, s_old, s_old_len, why, sizeof(why)));
    CHECK_EQ(fx_reboot(true), 0);
    s_new_len = image(s_new, "2.0.0", new_payload);
    s_patch_len = host_patch_make(s_old, s_old_len, s_new, s_new_len, s_patch, sizeof(s_patch));
    CHECK(s_new_len > 0 && s_patch_len > 0);
    s_stream_len = test_deflate_chunks(s_patch, s_patch_len, 0, s_stream, sizeof(s_stream));
    CHECK(s_stream_len > 0);
}

static void
begin_patch_raw(const uint8_t *img, size_t len, uint16_t flags, const uint8_t base[32], size_t req_len)
{
    uint8_t req[BLE_OTA_BEGIN_PATCH_SIZE];

    req[0] = BLE_OTA_CMD_BEGIN;
    ble_ota_put_le32(req + 1, (uint32_t)len);
    ble_ota_sha256(img, len, req + 5);
    ble_ota_put_le16(req + 37, HOST_IMAGE_CHIP_ESP32);
    ble_ota_put_le16(req + 39, flags);
    memcpy(req + BLE_OTA_BEGIN_SIZE, base, 32);
    ble_ota_core_command_write(&s_fx.core, req, req_len);
}

/* BEGIN for s_new as a patch of the running image. */
static void
begin_patch(void)
{
    uint8_t base[32];

    ble_ota_sha256(s_old, s_old_len, base);
    begin_patch_raw(s_new, s_new_len, BLE_OTA_BEGIN_FLAG_DEFLATE | BLE_OTA_BEGIN_FLAG_PATCH, base,
                    BLE_OTA_BEGIN_PATCH_SIZE);
}

static bool
failed_with(uint8_t status)
{
    const cmd_note_t *n = last_note();
    return n != NULL && n->len == 6 && n->data[0] == BLE_OTA_EVT_FAILED && n->data[1] == status;
}

static ble_ota_status_t
op(uint8_t opcode)
{
    return ble_ota_core_command_write(&s_fx.core, &opcode, 1);
}

/* Streams bytes[from, to) of a stream numbered from `base`, in packets. */
static void
stream(const uint8_t *bytes, size_t from, size_t to, uint32_t base)
{
    static uint8_t pkt[BLE_OTA_STREAM_HEADER + PKT];

    for (size_t off = from; off < to; off += PKT) {
        const size_t n = to - off < PKT ? to - off : PKT;
        ble_ota_put_le32(pkt, (uint32_t)(base + off));
        memcpy(pkt + BLE_OTA_STREAM_HEADER, bytes + off, n);
        ble_ota_core_stream_write(&s_fx.core, pkt, BLE_OTA_STREAM_HEADER + n);
    }
}

static void
info(uint8_t out[BLE_OTA_INFO_SIZE])
{
    memset(out, 0xAA, BLE_OTA_INFO_SIZE);
    ble_ota_core_info_read(&s_fx.core, out, BLE_OTA_INFO_SIZE);
}

/* The running image as OTA Info reports it is img. */
static bool
info_reports_running(const uint8_t *img, size_t len)
{
    uint8_t inf[BLE_OTA_INFO_SIZE];
    uint8_t sha[32];

    info(inf);
    ble_ota_sha256(img, len, sha);
    return ble_ota_get_le32(inf + BLE_OTA_INFO_OFF_RUNNING_SIZE) == len &&
           memcmp(inf + BLE_OTA_INFO_OFF_RUNNING_SHA256, sha, 32) == 0;
}

/* The device still runs 1.0.0 from ota_0, valid, and would boot it again. */
static void
old_image_intact(void)
{
    CHECK_EQ(s_fx.dev.running, 0);
    CHECK_EQ(s_fx.dev.flash.boot_slot, 0);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 0), HOST_SLOT_VALID);
    CHECK(memcmp(host_flash_slot(&s_fx.dev.flash, 0), s_old, s_old_len) == 0);
    CHECK(strcmp(running_version(), "1.0.0") == 0);
}

/* END, RESTART, reboot: the device runs s_new, and reports it. */
static void
finish_and_boot_new(void)
{
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered(BLE_OTA_CMD_END, BLE_OTA_ST_OK, 2));
    CHECK(memcmp(host_flash_slot(&s_fx.dev.flash, 1), s_new, s_new_len) == 0);
    CHECK_EQ(op(BLE_OTA_CMD_RESTART), BLE_OTA_OK);
    CHECK_EQ(fx_reboot(true), 1);
    CHECK(strcmp(running_version(), "2.0.0") == 0);
    CHECK(info_reports_running(s_new, s_new_len));
}

/* --- the running image ------------------------------------------------------------ */

static void
test_patch_running_image_reported(void)
{
    uint8_t inf[BLE_OTA_INFO_SIZE];

    CHECK_OK(patch_setup(30000, 30000));
    CHECK(info_reports_running(s_old, s_old_len));
    info(inf);
    CHECK(ble_ota_get_le16(inf + BLE_OTA_INFO_OFF_FEATURES) & BLE_OTA_FEATURE_DELTA);

    /* Whatever follows the image in the slot is not part of it: stale
     * bytes of an older, longer image there change nothing. */
    static uint8_t longer[MAX_IMG];
    const size_t longer_len = image(longer, "0.9.0", 60000);
    char why[120];
    CHECK(host_dev_install(&s_fx.dev, 0, longer, longer_len, why, sizeof(why)));
    CHECK_EQ(fx_reboot(true), 0);
    host_flash_t *f = &s_fx.dev.flash;
    for (uint32_t off = 0; off < (uint32_t)((longer_len + 4095) / 4096 * 4096); off += 4096) {
        CHECK_EQ(host_flash_erase_sector(f, 0, off), HOST_FLASH_OK);
    }
    CHECK_EQ(host_flash_write(f, 0, 0, longer, longer_len), HOST_FLASH_OK);
    /* The slot now holds 1.0.0 over the start of 0.9.0: erase what 1.0.0 covers and write it. */
    for (uint32_t off = 0; off < (uint32_t)((s_old_len + 4095) / 4096 * 4096); off += 4096) {
        CHECK_EQ(host_flash_erase_sector(f, 0, off), HOST_FLASH_OK);
    }
    CHECK_EQ(host_flash_write(f, 0, 0, s_old, s_old_len), HOST_FLASH_OK);
    f->slot[0].image_len = (uint32_t)s_old_len;
    CHECK_EQ(fx_reboot(true), 0);
    CHECK(info_reports_running(s_old, s_old_len));

    /* A platform that cannot read its running slot: nothing known, no DELTA. */
    s_fx.dev.port.running_read = NULL;
    ble_ota_core_init(&s_fx.core, &s_fx.dev.port, &s_config);
    info(inf);
    CHECK_EQ(ble_ota_get_le32(inf + BLE_OTA_INFO_OFF_RUNNING_SIZE), 0);
    for (int i = 0; i < 32; i++) {
        CHECK_EQ(inf[BLE_OTA_INFO_OFF_RUNNING_SHA256 + i], 0);
    }
    CHECK_EQ(ble_ota_get_le16(inf + BLE_OTA_INFO_OFF_FEATURES) & BLE_OTA_FEATURE_DELTA, 0);

    /* A read that fails at init: not known either (DELTA stays: BEGIN answers WRONG_BASE). */
    CHECK_OK(patch_setup(30000, 30000));
    s_fx.dev.running_read_fail_after = 2;
    ble_ota_core_init(&s_fx.core, &s_fx.dev.port, &s_config);
    info(inf);
    CHECK_EQ(ble_ota_get_le32(inf + BLE_OTA_INFO_OFF_RUNNING_SIZE), 0);
    begin_patch();
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_WRONG_BASE, 2));
}

/* A malformed running image (a header whose segments run past 16 MB): not known. */
static void
test_patch_running_image_malformed(void)
{
    uint8_t inf[BLE_OTA_INFO_SIZE];

    CHECK_OK(patch_setup(30000, 30000));
    host_flash_t *f = &s_fx.dev.flash;
    /* Rewrite the first sector with the segment count at 0 (a programmed byte cannot go back to 1s). */
    static uint8_t sector[4096];
    memcpy(sector, host_flash_slot(f, 0), sizeof(sector));
    sector[1] = 0;
    CHECK_EQ(host_flash_erase_sector(f, 0, 0), HOST_FLASH_OK);
    CHECK_EQ(host_flash_write(f, 0, 0, sector, sizeof(sector)), HOST_FLASH_OK);
    ble_ota_core_init(&s_fx.core, &s_fx.dev.port, &s_config);
    info(inf);
    CHECK_EQ(ble_ota_get_le32(inf + BLE_OTA_INFO_OFF_RUNNING_SIZE), 0);
    sector[1] = 2;
    ble_ota_put_le32(sector + 24 + 4, 0xFFFFFF00u); /* the first segment: almost 4 GB */
    CHECK_EQ(host_flash_erase_sector(f, 0, 0), HOST_FLASH_OK);
    CHECK_EQ(host_flash_write(f, 0, 0, sector, sizeof(sector)), HOST_FLASH_OK);
    ble_ota_core_init(&s_fx.core, &s_fx.dev.port, &s_config);
    info(inf);
    CHECK_EQ(ble_ota_get_le32(inf + BLE_OTA_INFO_OFF_RUNNING_SIZE), 0);
}

/* --- updates ------------------------------------------------------------------------- */

static void
test_patch_update(void)
{
    /* 40 KB more code at the end: a patch of several chunks, mostly INSERT. */
    CHECK_OK(patch_setup(30000, 70000));
    CHECK(s_patch_len > 3 * BLE_OTA_DELTA_BLOCK);
    const uint32_t reads_before = s_fx.dev.running_reads;
    begin_patch();
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 14));
    CHECK_EQ(ble_ota_get_le32(last_note()->data + 2), 0);
    CHECK_EQ(ble_ota_get_le32(last_note()->data + 10), 0);
    stream(s_stream, 0, s_stream_len, 0);
    const cmd_note_t *n = last_note();
    CHECK(n->data[0] == BLE_OTA_EVT_ACK && ble_ota_get_le32(n->data + 1) == s_stream_len);
    CHECK(s_fx.dev.running_reads > reads_before); /* the old image was read, */
    CHECK_OK(old_image_intact());                 /* never written */
    CHECK_OK(finish_and_boot_new());
    CHECK_EQ(s_fx.errors, 0);

    /* A patch of one short chunk (compressible code added at the end), sent
     * deflated, and as it is (a client may leave any chunk undeflated). */
    s_compressible = true;
    for (int raw = 0; raw < 2; raw++) {
        CHECK_OK(patch_setup(30000, 31500));
        CHECK(s_patch_len < BLE_OTA_DELTA_BLOCK);
        if (raw) {
            ble_ota_put_le16(s_stream, (uint16_t)s_patch_len);
            memcpy(s_stream + 2, s_patch, s_patch_len);
            s_stream_len = 2 + s_patch_len;
        } else {
            CHECK(s_stream_len < 2 + s_patch_len);
        }
        begin_patch();
        CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 14));
        stream(s_stream, 0, s_stream_len, 0);
        CHECK_OK(finish_and_boot_new());
    }
    s_compressible = false;
}

static void
test_patch_begin_refusals(void)
{
    uint8_t base[32];
    uint8_t other[32];

    CHECK_OK(patch_setup(30000, 30000));
    ble_ota_sha256(s_old, s_old_len, base);
    memset(other, 0x5A, sizeof(other));
    const uint16_t both = BLE_OTA_BEGIN_FLAG_DEFLATE | BLE_OTA_BEGIN_FLAG_PATCH;
    /* PATCH without its base: the length is wrong. */
    begin_patch_raw(s_new, s_new_len, both, base, BLE_OTA_BEGIN_SIZE);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_BAD_LENGTH, 2));
    /* PATCH without DEFLATE. */
    begin_patch_raw(s_new, s_new_len, BLE_OTA_BEGIN_FLAG_PATCH, base, BLE_OTA_BEGIN_PATCH_SIZE);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_BAD_ARGUMENT, 2));

    /* A suspended transfer of another image, then a patch for the wrong base:
     * WRONG_BASE, nothing written, and the transfer still resumes. */
    static uint8_t full[MAX_IMG];
    const size_t full_len = image(full, "3.0.0", 20000);
    uint8_t sha[32];
    ble_ota_sha256(full, full_len, sha);
    uint8_t req[BLE_OTA_BEGIN_SIZE] = { BLE_OTA_CMD_BEGIN };
    ble_ota_put_le32(req + 1, (uint32_t)full_len);
    memcpy(req + 5, sha, 32);
    ble_ota_put_le16(req + 37, HOST_IMAGE_CHIP_ESP32);
    ble_ota_core_command_write(&s_fx.core, req, sizeof(req));
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 10));
    stream(full, 0, 9000, 0);
    ble_ota_core_disconnected(&s_fx.core);
    ble_ota_core_connected(&s_fx.core);
    const uint32_t writes = s_fx.dev.flash.writes;
    const uint32_t erases = s_fx.dev.flash.erases;
    begin_patch_raw(s_new, s_new_len, both, other, BLE_OTA_BEGIN_PATCH_SIZE);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_WRONG_BASE, 2));
    CHECK_EQ(s_fx.dev.flash.writes, writes);
    CHECK_EQ(s_fx.dev.flash.erases, erases);
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_SUSPENDED);
    CHECK_EQ(s_fx.core.last_status, BLE_OTA_ST_WRONG_BASE);
    ble_ota_core_command_write(&s_fx.core, req, sizeof(req));
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 10));
    const uint32_t at = ble_ota_get_le32(last_note()->data + 2);
    CHECK(at > 0 && at <= 9000);
    stream(full, at, full_len, 0);
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered(BLE_OTA_CMD_END, BLE_OTA_ST_OK, 2));

    /* A device that cannot read its running slot takes no PATCH flag. */
    CHECK_OK(patch_setup(30000, 30000));
    s_fx.dev.port.running_read = NULL;
    ble_ota_core_init(&s_fx.core, &s_fx.dev.port, &s_config);
    begin_patch();
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_BAD_ARGUMENT, 2));
}

/* The patch's header disagrees with BEGIN: refused before a byte is written. */
static void
test_patch_header_disagrees_with_begin(void)
{
    static const size_t fields[] = { BLE_OTA_DELTA_OFF_OLD_SIZE, BLE_OTA_DELTA_OFF_OLD_SHA256 + 5,
                                     BLE_OTA_DELTA_OFF_NEW_SIZE, BLE_OTA_DELTA_OFF_NEW_SHA256 + 31 };

    for (size_t k = 0; k < sizeof(fields) / sizeof(fields[0]); k++) {
        CHECK_OK(patch_setup(30000, 70000));
        s_patch[fields[k]] ^= 0x01;
        s_stream_len = test_deflate_chunks(s_patch, s_patch_len, 0, s_stream, sizeof(s_stream));
        const uint32_t writes = s_fx.dev.flash.writes;
        begin_patch();
        CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 14));
        stream(s_stream, 0, s_stream_len, 0);
        CHECK(failed_with(BLE_OTA_ST_BAD_DATA));
        CHECK_EQ(s_fx.dev.flash.writes, writes);
        CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_IDLE);
        CHECK_EQ(fx_reboot(true), 0);
        CHECK_OK(old_image_intact());
    }
}

/* Resumed at every chunk, the link lost anywhere in the stream (within a
 * chunk, at its end), and again and again in one transfer. */
static void
test_patch_resume_mid_patch(void)
{
    static uint8_t rest[MAX_IMG + MAX_IMG / 8];

    CHECK_OK(patch_setup(30000, 70000));
    const size_t total = s_stream_len;
    int resumes = 0;
    for (size_t cut = 100; cut < total; cut += 997) {
        CHECK_OK(patch_setup(30000, 70000));
        begin_patch();
        stream(s_stream, 0, cut, 0);
        ble_ota_core_disconnected(&s_fx.core);
        ble_ota_core_connected(&s_fx.core);
        begin_patch();
        CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 14));
        const uint32_t offset = ble_ota_get_le32(last_note()->data + 2);
        const uint32_t patch_offset = ble_ota_get_le32(last_note()->data + 10);
        CHECK(offset <= cut);
        CHECK_EQ(patch_offset % BLE_OTA_DELTA_BLOCK, 0);
        /* The client deflates the patch again from that block, numbered from offset. */
        const size_t rest_len = test_deflate_chunks(s_patch, s_patch_len, patch_offset / BLE_OTA_DELTA_BLOCK, rest,
                                                    sizeof(rest));
        stream(rest, 0, rest_len, offset);
        CHECK_OK(old_image_intact());
        CHECK_OK(finish_and_boot_new());
        resumes++;
    }
    CHECK(resumes >= 10);

    /* Suspended after every chunk of one transfer. */
    CHECK_OK(patch_setup(30000, 70000));
    begin_patch();
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 14));
    uint32_t offset = 0;
    uint32_t patch_offset = 0;
    int rounds = 0;
    while (patch_offset < s_patch_len) {
        const size_t rest_len = test_deflate_chunks(s_patch, s_patch_len, patch_offset / BLE_OTA_DELTA_BLOCK, rest,
                                                    sizeof(rest));
        /* One chunk and a half of the next (or what is left). */
        const size_t first = 2u + ble_ota_get_le16(rest);
        const size_t send = first + (rest_len > first ? (rest_len - first) / 2 : 0);
        stream(rest, 0, send, offset);
        ble_ota_core_disconnected(&s_fx.core);
        ble_ota_core_connected(&s_fx.core);
        begin_patch();
        CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 14));
        const uint32_t next = ble_ota_get_le32(last_note()->data + 10);
        if (!(next > patch_offset || next == s_patch_len)) {
            printf("  next %lu, patch_offset %lu, patch %lu, sent %lu of %lu\n", (unsigned long)next,
                   (unsigned long)patch_offset, (unsigned long)s_patch_len, (unsigned long)send,
                   (unsigned long)rest_len);
        }
        CHECK(next > patch_offset || next == s_patch_len);
        patch_offset = next;
        offset = ble_ota_get_le32(last_note()->data + 2);
        rounds++;
        CHECK(rounds < 100);
    }
    CHECK(rounds >= 3);
    CHECK_OK(finish_and_boot_new());
}

/* The power cut at every flash operation of a patched update: the old
 * image runs after it, untouched, and the new one only once RESTART
 * selected it; the next update goes through. */
static void
test_patch_power_loss_while_applying(void)
{
    CHECK_OK(patch_setup(30000, 70000));
    for (uint32_t n = 1;; n++) {
        CHECK_OK(patch_setup(30000, 70000));
        host_flash_power_loss_after(&s_fx.dev.flash, n);
        begin_patch();
        stream(s_stream, 0, s_stream_len, 0);
        op(BLE_OTA_CMD_END);
        op(BLE_OTA_CMD_RESTART);
        const bool cut = s_fx.dev.flash.power_lost;
        const bool selected = s_fx.dev.flash.boot_slot == 1;
        host_flash_power_restored(&s_fx.dev.flash);
        const int slot = fx_reboot(true);
        if (!selected) {
            CHECK_EQ(slot, 0);
            CHECK_OK(old_image_intact());
            CHECK(info_reports_running(s_old, s_old_len));
        } else {
            CHECK_EQ(slot, 1);
            CHECK(strcmp(running_version(), "2.0.0") == 0);
        }
        if (!cut) {
            CHECK(selected);
            break;
        }
        if (!selected) {
            /* The same patch again goes through. */
            begin_patch();
            CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 14));
            stream(s_stream, 0, s_stream_len, 0);
            CHECK_OK(finish_and_boot_new());
        }
        CHECK(n < 400);
    }
}

/* Damaged patch blocks: refused (BAD_DATA) or caught by END's SHA-256; never
 * selected, the old image intact. A failed read of the old image: FLASH_ERROR. */
static void
test_patch_damaged(void)
{
    static uint8_t good[MAX_IMG];
    int refused = 0;
    int caught = 0;

    CHECK_OK(patch_setup(30000, 70000));
    memcpy(good, s_patch, s_patch_len);
    const size_t len = s_patch_len;
    /* Every 301st byte (mostly INSERT data), and where instructions and
     * cursors are: the first opcode, each block's cursor and first opcode. */
    size_t places[512];
    size_t count = 0;
    for (size_t at = BLE_OTA_DELTA_HEADER_LEN; at < len && count < 400; at += 301) {
        places[count++] = at;
    }
    for (size_t block = 0; block * BLE_OTA_DELTA_BLOCK < len && count < 500; block++) {
        const size_t start = block * BLE_OTA_DELTA_BLOCK;
        places[count++] = block == 0 ? BLE_OTA_DELTA_HEADER_LEN : start + BLE_OTA_DELTA_CURSOR_LEN;
        if (block > 0) {
            places[count++] = start;     /* the cursor's new position */
            places[count++] = start + 4; /* its old position */
        }
    }
    for (size_t p = 0; p < count; p++) {
        const size_t at = places[p];
        if (at >= len) {
            continue;
        }
        CHECK_OK(patch_setup(30000, 70000));
        memcpy(s_patch, good, len);
        s_patch[at] ^= (uint8_t)(0x41 + at % 7);
        s_stream_len = test_deflate_chunks(s_patch, len, 0, s_stream, sizeof(s_stream));
        begin_patch();
        stream(s_stream, 0, s_stream_len, 0);
        if (last_note()->data[0] == BLE_OTA_EVT_FAILED) {
            refused++; /* BAD_DATA, or the rebuilt image's start refused (INVALID_IMAGE) */
        } else {
            CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
            CHECK(answered(BLE_OTA_CMD_END, BLE_OTA_ST_HASH_MISMATCH, 2));
            caught++;
        }
        CHECK_EQ(s_fx.dev.flash.boot_slot, 0);
        CHECK_EQ(fx_reboot(true), 0);
        CHECK_OK(old_image_intact());
    }
    printf("  damaged patches: %d refused while applying, %d at END\n", refused, caught);
    CHECK(refused > 0 && caught > 0);

    /* The running slot cannot be read mid-patch. */
    CHECK_OK(patch_setup(30000, 70000));
    begin_patch();
    s_fx.dev.running_read_fail_after = 3;
    stream(s_stream, 0, s_stream_len, 0);
    CHECK(failed_with(BLE_OTA_ST_FLASH_ERROR));
    CHECK_EQ(s_fx.core.last_status, BLE_OTA_ST_FLASH_ERROR);
    CHECK_EQ(fx_reboot(true), 0);
    CHECK_OK(old_image_intact());
}

/* A first chunk that rebuilds fewer bytes than the image check needs: they
 * wait for the next chunk, across a lost link too; nothing is written before
 * the check has its 40 bytes. */
static void
test_patch_first_chunk_rebuilds_little(void)
{
    static const uint32_t firsts[] = { 1, 10, 39, 40, 41 };
    static uint8_t rest[MAX_IMG + MAX_IMG / 8];

    for (size_t k = 0; k < sizeof(firsts) / sizeof(firsts[0]); k++) {
        for (int resume = 0; resume < 2; resume++) {
            CHECK_OK(patch_setup(30000, 70000));
            s_patch_len = host_patch_make_split(s_old, s_old_len, s_new, s_new_len, s_patch, sizeof(s_patch),
                                                firsts[k]);
            CHECK(s_patch_len > 2 * BLE_OTA_DELTA_BLOCK);
            s_stream_len = test_deflate_chunks(s_patch, s_patch_len, 0, s_stream, sizeof(s_stream));
            const uint32_t writes = s_fx.dev.flash.writes;
            begin_patch();
            CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 14));
            const size_t first = 2u + ble_ota_get_le16(s_stream);
            stream(s_stream, 0, first, 0);
            CHECK_EQ(s_fx.core.v2.stored, firsts[k]);
            CHECK_EQ(s_fx.dev.flash.writes > writes, firsts[k] >= BLE_OTA_IMAGE_HEAD_LEN);
            size_t from = first;
            if (resume) {
                ble_ota_core_disconnected(&s_fx.core);
                ble_ota_core_connected(&s_fx.core);
                begin_patch();
                CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 14));
                CHECK_EQ(ble_ota_get_le32(last_note()->data + 2), first);
                CHECK_EQ(ble_ota_get_le32(last_note()->data + 10), BLE_OTA_DELTA_BLOCK);
                const size_t rest_len = test_deflate_chunks(s_patch, s_patch_len, 1, rest, sizeof(rest));
                stream(rest, 0, rest_len, (uint32_t)first);
            } else {
                stream(s_stream, from, s_stream_len, 0);
            }
            CHECK_OK(finish_and_boot_new());
        }
    }

    /* Those few bytes are refused as soon as they show they are no image. */
    CHECK_OK(patch_setup(30000, 70000));
    s_new[0] ^= 0xFF; /* not the image magic */
    s_patch_len = host_patch_make_split(s_old, s_old_len, s_new, s_new_len, s_patch, sizeof(s_patch), 10);
    s_stream_len = test_deflate_chunks(s_patch, s_patch_len, 0, s_stream, sizeof(s_stream));
    const uint32_t writes = s_fx.dev.flash.writes;
    begin_patch();
    stream(s_stream, 0, s_stream_len, 0);
    CHECK(failed_with(BLE_OTA_ST_INVALID_IMAGE));
    CHECK_EQ(s_fx.dev.flash.writes, writes);
}

/* The image arrived whole (END OK) and the client, its answer lost, sends
 * BEGIN again for the same image but in another form (a patch after the
 * full image, or the other way round): the offsets the device holds count
 * another stream, so it starts over rather than send the client somewhere
 * in a stream it is not sending; the update then goes through. */
static void
test_patch_complete_image_other_form(void)
{
    uint8_t base[32];
    static uint8_t full[MAX_IMG + MAX_IMG / 8];

    for (int first_patch = 0; first_patch < 2; first_patch++) {
        CHECK_OK(patch_setup(30000, 70000));
        ble_ota_sha256(s_old, s_old_len, base);
        const size_t full_len = test_deflate_chunks(s_new, s_new_len, 0, full, sizeof(full));
        if (first_patch) {
            begin_patch();
            stream(s_stream, 0, s_stream_len, 0);
        } else {
            begin_patch_raw(s_new, s_new_len, BLE_OTA_BEGIN_FLAG_DEFLATE, base, BLE_OTA_BEGIN_SIZE);
            stream(full, 0, full_len, 0);
        }
        CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
        CHECK(answered(BLE_OTA_CMD_END, BLE_OTA_ST_OK, 2));
        ble_ota_core_disconnected(&s_fx.core);
        ble_ota_core_connected(&s_fx.core);

        if (first_patch) {
            begin_patch_raw(s_new, s_new_len, BLE_OTA_BEGIN_FLAG_DEFLATE, base, BLE_OTA_BEGIN_SIZE);
        } else {
            begin_patch();
        }
        CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 14));
        CHECK_EQ(ble_ota_get_le32(last_note()->data + 2), 0);
        CHECK_EQ(ble_ota_get_le32(last_note()->data + 10), 0);
        if (first_patch) {
            stream(full, 0, full_len, 0);
        } else {
            stream(s_stream, 0, s_stream_len, 0);
        }
        CHECK_OK(finish_and_boot_new());
    }

    /* The same form again: complete already, nothing left to send. */
    CHECK_OK(patch_setup(30000, 70000));
    begin_patch();
    stream(s_stream, 0, s_stream_len, 0);
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    ble_ota_core_disconnected(&s_fx.core);
    ble_ota_core_connected(&s_fx.core);
    const uint32_t writes = s_fx.dev.flash.writes;
    begin_patch();
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 14));
    CHECK_EQ(ble_ota_get_le32(last_note()->data + 2), s_stream_len);
    CHECK_EQ(ble_ota_get_le32(last_note()->data + 10), s_patch_len);
    CHECK_EQ(s_fx.dev.flash.writes, writes);
    CHECK_OK(finish_and_boot_new());
}

/* The key the tests that sign images sign with, made once. */
static test_sign_key_t *
signing_key(void)
{
    static test_sign_key_t *key;

    if (key == NULL) {
        key = test_sign_key_new("ecdsa256");
    }
    return key;
}

/* Signed images: the running image's size and SHA-256 take its signature
 * sector in (as the file that was sent), and a patch between two signed
 * images installs on a device that takes only signed images. */
static void
test_patch_signed_images(void)
{
    test_sign_key_t *key = signing_key();
    static uint8_t unsigned_img[MAX_IMG];
    char why[120];

    CHECK(key != NULL);
    CHECK_OK(patch_setup(30000, 70000));
    memcpy(unsigned_img, s_old, s_old_len);
    s_old_len = test_sign_image(key, unsigned_img, s_old_len, s_old, sizeof(s_old));
    CHECK(s_old_len % 4096 == 0);
    CHECK(host_dev_install(&s_fx.dev, 0, s_old, s_old_len, why, sizeof(why)));
    s_fx.dev.require_signature = true;
    CHECK_EQ(fx_reboot(true), 0);
    CHECK(info_reports_running(s_old, s_old_len));
    memcpy(unsigned_img, s_new, s_new_len);
    s_new_len = test_sign_image(key, unsigned_img, s_new_len, s_new, sizeof(s_new));
    s_patch_len = host_patch_make(s_old, s_old_len, s_new, s_new_len, s_patch, sizeof(s_patch));
    s_stream_len = test_deflate_chunks(s_patch, s_patch_len, 0, s_stream, sizeof(s_stream));
    begin_patch();
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 14));
    stream(s_stream, 0, s_stream_len, 0);
    CHECK_OK(finish_and_boot_new());

    /* A block after the image that only starts like a signature block (its CRC wrong): not one. */
    CHECK_OK(patch_setup(30000, 30000));
    host_flash_t *f = &s_fx.dev.flash;
    const uint32_t sector = (uint32_t)((s_old_len + 4095) / 4096 * 4096);
    static uint8_t fake[1200];
    memset(fake, 0x5A, sizeof(fake));
    fake[0] = 0xE7;
    CHECK_EQ(host_flash_write(f, 0, sector, fake, sizeof(fake)), HOST_FLASH_OK);
    ble_ota_core_init(&s_fx.core, &s_fx.dev.port, &s_config);
    CHECK(info_reports_running(s_old, s_old_len));

    /* A block that stores a SHA-384 (ECDSA P-384: version 3, byte 2 = 1) is
     * counted on its magic and CRC: the device has no SHA-384 to check it. */
    static uint8_t with_sector[MAX_IMG];
    CHECK_OK(patch_setup(30000, 30000));
    memset(with_sector, 0xFF, sizeof(with_sector));
    memcpy(with_sector, s_old, s_old_len);
    uint8_t *block = with_sector + sector;
    memset(block, 0x5A, 1200);
    block[0] = 0xE7;
    block[1] = 0x03;
    block[2] = 0x01;
    ble_ota_put_le32(block + 1196, (uint32_t)crc32(0L, block, 1196));
    CHECK_EQ(host_flash_write(f, 0, sector, block, 1200), HOST_FLASH_OK);
    ble_ota_core_init(&s_fx.core, &s_fx.dev.port, &s_config);
    CHECK(info_reports_running(with_sector, sector + 4096));
}

/* A signature sector an older image left: ota_1 held a signed 1.5.0 whose
 * image ended in the same 4 KB sector as the unsigned 2.0.0 an update now
 * writes there. The update erases no further than 2.0.0's last sector (the
 * idle erase had not come so far), so 1.5.0's signature sector stays where
 * 2.0.0's would be, magic and CRC right. It signs 1.5.0, not 2.0.0: the
 * running image is 2.0.0 as it was sent, and a patch made from it installs. */
static void
test_patch_stale_signature_sector(void)
{
    static uint8_t unsigned_img[MAX_IMG];
    static uint8_t older[MAX_IMG];

    CHECK(signing_key() != NULL);
    CHECK_OK(patch_setup(30000, 30000));
    const size_t unsigned_len = image(unsigned_img, "1.5.0", 30000);
    const size_t older_len = test_sign_image(signing_key(), unsigned_img, unsigned_len, older, sizeof(older));
    const uint32_t sector = (uint32_t)((s_new_len + 4095) / 4096 * 4096);
    CHECK(older_len > 0 && s_new_len % 4096 != 0);
    CHECK_EQ(older_len, sector + 4096); /* 1.5.0's signature sector is where 2.0.0's would be */
    host_flash_t *f = &s_fx.dev.flash;
    for (uint32_t off = 0; off < older_len; off += 4096) {
        CHECK_EQ(host_flash_erase_sector(f, 1, off), HOST_FLASH_OK);
    }
    CHECK_EQ(host_flash_write(f, 1, 0, older, older_len), HOST_FLASH_OK);

    begin_patch();
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 14));
    stream(s_stream, 0, s_stream_len, 0);
    CHECK_OK(finish_and_boot_new());
    CHECK_EQ(s_fx.dev.running, 1);
    CHECK(memcmp(host_flash_slot(f, 1) + sector, older + sector, 4096) == 0); /* the stale sector is there */

    /* The next update is a patch of 2.0.0 as the client has it. */
    memcpy(s_old, s_new, s_new_len);
    s_old_len = s_new_len;
    s_new_len = image(s_new, "3.0.0", 40000);
    s_patch_len = host_patch_make(s_old, s_old_len, s_new, s_new_len, s_patch, sizeof(s_patch));
    s_stream_len = test_deflate_chunks(s_patch, s_patch_len, 0, s_stream, sizeof(s_stream));
    CHECK(s_patch_len > 0 && s_stream_len > 0);
    begin_patch();
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, 14));
    stream(s_stream, 0, s_stream_len, 0);
    CHECK_EQ(op(BLE_OTA_CMD_END), BLE_OTA_OK);
    CHECK(answered(BLE_OTA_CMD_END, BLE_OTA_ST_OK, 2));
    CHECK(memcmp(host_flash_slot(f, 0), s_new, s_new_len) == 0);
}

void
test_patch_run_all(void)
{
    RUN(test_patch_running_image_reported);
    RUN(test_patch_running_image_malformed);
    RUN(test_patch_update);
    RUN(test_patch_first_chunk_rebuilds_little);
    RUN(test_patch_begin_refusals);
    RUN(test_patch_header_disagrees_with_begin);
    RUN(test_patch_resume_mid_patch);
    RUN(test_patch_power_loss_while_applying);
    RUN(test_patch_damaged);
    RUN(test_patch_complete_image_other_form);
    RUN(test_patch_signed_images);
    RUN(test_patch_stale_signature_sector);
}
