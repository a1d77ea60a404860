/*
 * Tests of the OTA core on the host platform: SHA-256, image validation,
 * the emulated flash, the protocol state machine, and boot with rollback.
 *
 * Usage: test-core [FIXTURES_DIR]
 * FIXTURES_DIR holds esptool's test images (../shared/fixtures/esptool-images
 * in the team's checkout); the tests that read them are skipped, with a
 * note, when it is absent.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ble_ota_core.h"
#include "ble_ota_sha256.h"
#include "host_image.h"
#include "host_port.h"
#include "test.h"
#include "test_fixture.h"
#include "test_auth.h"
#include "test_bt.h"
#include "test_sign.h"
#include "test_link.h"
#include "test_queue.h"
#include "test_slot.h"
#include "test_patch.h"
#include "test_v2.h"

static const char *s_fixtures;

static int
hex_digest_is(const uint8_t digest[32], const char *hex)
{
    char text[65];
    for (int i = 0; i < 32; i++) {
        snprintf(text + 2 * i, 3, "%02x", digest[i]);
    }
    return strcmp(text, hex) == 0;
}

/* Reads a whole fixture file; NULL when absent. Caller frees. */
static uint8_t *
read_fixture(const char *name, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", s_fixtures, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    uint8_t *buf = NULL;
    size_t cap = 0;
    *len = 0;
    for (;;) {
        if (*len == cap) {
            cap = cap ? cap * 2 : 4096;
            uint8_t *grown = realloc(buf, cap);
            if (grown == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = grown;
        }
        const size_t n = fread(buf + *len, 1, cap - *len, f);
        if (n == 0) {
            break;
        }
        *len += n;
    }
    fclose(f);
    return buf;
}

/* --- SHA-256 ---------------------------------------------------------------- */

static void
test_sha256_vectors(void)
{
    uint8_t d[32];

    ble_ota_sha256("", 0, d);
    CHECK(hex_digest_is(d, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    ble_ota_sha256("abc", 3, d);
    CHECK(hex_digest_is(d, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    const char *two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    ble_ota_sha256(two_blocks, strlen(two_blocks), d);
    CHECK(hex_digest_is(d, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
    const char *long_msg = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
                           "klmnopqrlmnopqrsmnopqrstnopqrstu";
    ble_ota_sha256(long_msg, strlen(long_msg), d);
    CHECK(hex_digest_is(d, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"));

    /* One million 'a', fed in uneven pieces to exercise buffering. */
    static uint8_t a[1000];
    memset(a, 'a', sizeof(a));
    ble_ota_sha256_ctx_t ctx;
    ble_ota_sha256_init(&ctx);
    size_t fed = 0;
    for (size_t step = 1; fed < 1000000; step = step % 991 + 7) {
        const size_t n = 1000000 - fed < step ? 1000000 - fed : step;
        ble_ota_sha256_update(&ctx, a, n);
        fed += n;
    }
    ble_ota_sha256_final(&ctx, d);
    CHECK(hex_digest_is(d, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"));
}

static void
test_sha256_block_boundaries(void)
{
    /* Every length around the padding boundaries (55, 56, 63, 64 ...) must
     * agree between one-shot and byte-by-byte hashing. */
    uint8_t msg[200];
    for (size_t i = 0; i < sizeof(msg); i++) {
        msg[i] = (uint8_t)(i * 31 + 7);
    }
    for (size_t len = 0; len <= sizeof(msg); len++) {
        uint8_t one[32], bytewise[32];
        ble_ota_sha256(msg, len, one);
        ble_ota_sha256_ctx_t ctx;
        ble_ota_sha256_init(&ctx);
        for (size_t i = 0; i < len; i++) {
            ble_ota_sha256_update(&ctx, msg + i, 1);
        }
        ble_ota_sha256_final(&ctx, bytewise);
        CHECK(memcmp(one, bytewise, 32) == 0);
    }
    /* 64 zero bytes: a full block of padding follows. */
    static const uint8_t zeros[64];
    uint8_t d[32];
    ble_ota_sha256(zeros, 64, d);
    CHECK(hex_digest_is(d, "f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a92759fb4b"));
}

/* --- image validation ---------------------------------------------------- */

static void
test_image_builder_valid(void)
{
    static uint8_t img[32 * 1024];
    host_image_info_t info;
    char why[120], version[33], project[33];

    const size_t len = build_image(img, sizeof(img), "1.2.3", 10001, 7);
    CHECK(len > 0);
    CHECK_EQ(len % 16, 0);
    CHECK_EQ(host_image_verify(img, len, 0, &info, why, sizeof(why)), HOST_IMAGE_OK);
    CHECK_EQ(info.image_len, len);
    CHECK_EQ(info.segment_count, 2);
    CHECK(info.hash_appended);
    CHECK(host_image_app_desc(img, len, version, project));
    CHECK(strcmp(version, "1.2.3") == 0);
    CHECK(strcmp(project, "virtual-esp32") == 0);

    /* Without the hash the image ends at the checksum block. */
    const host_image_spec_t spec = { .project = "p", .version = "v", .payload_len = 40 };
    const size_t plain = host_image_build(&spec, img, sizeof(img));
    CHECK_EQ(plain, host_image_build_size(&spec));
    CHECK_EQ(host_image_verify(img, plain, 0, &info, why, sizeof(why)), HOST_IMAGE_OK);
    CHECK(!info.hash_appended);
    CHECK_EQ(info.image_len, plain);
    CHECK_EQ(host_image_build(&spec, img, plain - 1), 0);
}

static void
test_image_trailing_bytes_ignored(void)
{
    static uint8_t img[8192];
    host_image_info_t info;

    const size_t len = build_image(img, sizeof(img), "1.0.0", 1000, 3);
    memset(img + len, 0xA5, 700); /* the seed's stale padding */
    CHECK_EQ(host_image_verify(img, len + 700, 0, &info, NULL, 0), HOST_IMAGE_OK);
    CHECK_EQ(info.image_len, len);
}

static void
test_image_bad_magic(void)
{
    static uint8_t img[8192];
    char why[120];

    const size_t len = build_image(img, sizeof(img), "1.0.0", 1000, 3);
    img[0] = 0xE8;
    CHECK_EQ(host_image_verify(img, len, 0, NULL, why, sizeof(why)), HOST_IMAGE_ERR_MAGIC);
    CHECK(strstr(why, "magic") != NULL);
    CHECK_EQ(host_image_verify(img, 0, 0, NULL, why, sizeof(why)), HOST_IMAGE_ERR_TRUNCATED);
}

static void
test_image_bad_checksum(void)
{
    static uint8_t img[8192];
    host_image_spec_t spec = { .project = "p", .version = "v", .payload_len = 999 };

    /* Without a hash only the checksum catches a flipped data byte. */
    size_t len = host_image_build(&spec, img, sizeof(img));
    img[400] ^= 0x01;
    CHECK_EQ(host_image_verify(img, len, 0, NULL, NULL, 0), HOST_IMAGE_ERR_CHECKSUM);
    /* With a hash too, the checksum is checked first (as esp_image_verify). */
    spec.hash_appended = true;
    len = host_image_build(&spec, img, sizeof(img));
    img[len - 33] ^= 0xFF; /* the checksum byte itself */
    CHECK_EQ(host_image_verify(img, len, 0, NULL, NULL, 0), HOST_IMAGE_ERR_CHECKSUM);
}

static void
test_image_bad_hash(void)
{
    static uint8_t img[8192];

    size_t len = build_image(img, sizeof(img), "1.0.0", 1000, 3);
    img[len - 1] ^= 0x80; /* in the hash */
    CHECK_EQ(host_image_verify(img, len, 0, NULL, NULL, 0), HOST_IMAGE_ERR_HASH);
    img[len - 1] ^= 0x80;
    /* Two flips that keep the XOR checksum: only the hash sees them. */
    img[300] ^= 0x10;
    img[301] ^= 0x10;
    CHECK_EQ(host_image_verify(img, len, 0, NULL, NULL, 0), HOST_IMAGE_ERR_HASH);
}

static void
test_image_truncated(void)
{
    static uint8_t img[4096];

    const size_t len = build_image(img, sizeof(img), "1.0.0", 500, 3);
    for (size_t cut = 0; cut < len; cut++) {
        const host_image_err_t err = host_image_verify(img, cut, 0, NULL, NULL, 0);
        if (err != HOST_IMAGE_ERR_TRUNCATED) {
            test_failf(__FILE__, __LINE__, "length %zu of %zu: %s", cut, len, host_image_err_name(err));
            return;
        }
    }
    CHECK_EQ(host_image_verify(img, len, 0, NULL, NULL, 0), HOST_IMAGE_OK);
}

static void
test_image_header_checks(void)
{
    static uint8_t img[4096];
    char why[120];

    size_t len = build_image(img, sizeof(img), "1.0.0", 500, 3);
    img[12] = 5; /* ESP32-C3 */
    CHECK_EQ(host_image_verify(img, len, 0, NULL, why, sizeof(why)), HOST_IMAGE_ERR_CHIP);
    CHECK(strstr(why, "chip") != NULL);

    len = build_image(img, sizeof(img), "1.0.0", 500, 3);
    img[1] = 17;
    CHECK_EQ(host_image_verify(img, len, 0, NULL, NULL, 0), HOST_IMAGE_ERR_SEGMENTS);

    /* A segment length that is not a multiple of 4. */
    len = build_image(img, sizeof(img), "1.0.0", 500, 3);
    img[24 + 4] = 0x01;
    CHECK_EQ(host_image_verify(img, len, 0, NULL, NULL, 0), HOST_IMAGE_ERR_SEGMENT);

    /* A flash-mapped segment whose offset in its 64 KiB page does not match. */
    len = build_image(img, sizeof(img), "1.0.0", 500, 3);
    img[24] = 0x40; /* load address 0x3F400040, data at 0x20 */
    CHECK_EQ(host_image_verify(img, len, 0, NULL, NULL, 0), HOST_IMAGE_ERR_SEGMENT);

    /* A huge segment length runs past the data. */
    len = build_image(img, sizeof(img), "1.0.0", 500, 3);
    img[24 + 4] = 0xFC;
    img[24 + 5] = 0xFF;
    img[24 + 6] = 0xFF;
    img[24 + 7] = 0x00;
    CHECK_EQ(host_image_verify(img, len, 0, NULL, NULL, 0), HOST_IMAGE_ERR_TRUNCATED);
}

static void
test_image_esptool_fixtures(void)
{
    size_t len = 0;
    uint8_t *img = read_fixture("esp_idf_blink_esp32s2.bin", &len);
    if (img == NULL) {
        printf("  note: %s/esp_idf_blink_esp32s2.bin not found, esptool fixtures skipped\n", s_fixtures);
        return;
    }
    host_image_info_t info;
    char why[120], version[33], project[33];
    /* A real ESP-IDF v5.0 app for the ESP32-S2 (chip id 2). */
    const host_image_err_t as_s2 = host_image_verify(img, len, 2, &info, why, sizeof(why));
    const host_image_err_t as_esp32 = host_image_verify(img, len, 0, NULL, NULL, 0);
    const bool desc = host_image_app_desc(img, len, version, project);
    free(img);
    CHECK_EQ(as_s2, HOST_IMAGE_OK);
    CHECK_EQ(info.segment_count, 6);
    CHECK_EQ(info.checksum, 0x18);
    CHECK(info.hash_appended);
    CHECK_EQ(as_esp32, HOST_IMAGE_ERR_CHIP);
    CHECK(desc);
    CHECK(strcmp(project, "blink") == 0);
    CHECK(strcmp(version, "qa-test-v5.0-20220830-4-g4532e6") == 0);

    /* Files that are not ESP32 apps. */
    static const char *const not_apps[] = {
        "one_kb.bin",
        "sector.bin",
        "not_4_byte_aligned.bin",
        "onebyte.bin",
        "zerolength.bin",
        "partitions_singleapp.bin",
        "esp8266_deepsleep.bin",
        "esp32s3_header.bin",
        "esp32c3_header_min_rev.bin",
        "helloworld-esp32c3.bin",
    };
    for (size_t i = 0; i < sizeof(not_apps) / sizeof(not_apps[0]); i++) {
        img = read_fixture(not_apps[i], &len);
        if (img == NULL) {
            if (strcmp(not_apps[i], "zerolength.bin") != 0) {
                test_failf(__FILE__, __LINE__, "fixture %s missing", not_apps[i]);
                return;
            }
            continue;
        }
        const host_image_err_t err = host_image_verify(img, len, 0, NULL, NULL, 0);
        free(img);
        if (err == HOST_IMAGE_OK) {
            test_failf(__FILE__, __LINE__, "%s accepted as an ESP32 app", not_apps[i]);
            return;
        }
    }
}

/* --- emulated flash ---------------------------------------------------------- */

static void
test_flash_strict(void)
{
    host_flash_t flash;
    const uint8_t data[4] = { 1, 2, 3, 4 };

    CHECK(host_flash_init(&flash, 10000)); /* last sector shorter */
    CHECK_EQ(host_flash_write(&flash, 0, 0, data, 4), HOST_FLASH_OK);
    CHECK_EQ(host_flash_write(&flash, 0, 2, data, 4), HOST_FLASH_ERR_NOT_ERASED);
    CHECK_EQ(host_flash_write(&flash, 1, 9998, data, 4), HOST_FLASH_ERR_RANGE);
    CHECK_EQ(host_flash_write(&flash, 2, 0, data, 4), HOST_FLASH_ERR_RANGE);
    CHECK_EQ(host_flash_erase_sector(&flash, 0, 100), HOST_FLASH_ERR_ALIGN);
    CHECK_EQ(host_flash_erase_sector(&flash, 0, 8192), HOST_FLASH_OK);
    CHECK_EQ(host_flash_erase_sector(&flash, 0, 12288), HOST_FLASH_ERR_RANGE);
    CHECK_EQ(host_flash_erase_sector(&flash, 0, 0), HOST_FLASH_OK);
    CHECK_EQ(host_flash_write(&flash, 0, 2, data, 4), HOST_FLASH_OK);
    CHECK_EQ(host_flash_slot(&flash, 0)[5], 4);
    CHECK_EQ(host_flash_slot(&flash, 1)[0], 0xFF); /* slots do not overlap */
    host_flash_fail_write_after(&flash, 2);
    CHECK_EQ(host_flash_write(&flash, 1, 0, data, 1), HOST_FLASH_OK);
    CHECK_EQ(host_flash_write(&flash, 1, 1, data, 1), HOST_FLASH_ERR_INJECTED);
    CHECK_EQ(host_flash_write(&flash, 1, 1, data, 1), HOST_FLASH_OK);
    host_flash_deinit(&flash);
}

/* --- protocol state machine -------------------------------------------------- */

static void
test_core_full_update(void)
{
    CHECK_OK(fx_setup());
    CHECK_OK(upload(s_image, s_image_len, 244));
    CHECK_EQ(s_fx.core.received, s_image_len);
    CHECK_EQ(s_fx.core.packets, (s_image_len + 243) / 244);
    CHECK_EQ(ble_ota_core_control_read(&s_fx.core), BLE_OTA_CTRL_DONE_ACK);
    CHECK(s_fx.dev.restart_pending);
    CHECK_EQ(s_fx.dev.restart_delay_ms, BLE_OTA_RESTART_DELAY_MS);
    CHECK_EQ(s_fx.dev.flash.boot_slot, 1);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_NEW);
    CHECK_EQ(s_fx.dev.flash.slot[1].image_len, s_image_len);
    CHECK_EQ(s_fx.notify_count, 2);
    CHECK_EQ(s_fx.errors, 0);
}

static void
test_core_last_packet_not_padded(void)
{
    CHECK_OK(fx_setup());
    /* 500-byte packets: the last one is short. */
    CHECK(s_image_len % 500 != 0);
    CHECK_OK(upload(s_image, s_image_len, 500));
    const uint8_t *slot = host_flash_slot(&s_fx.dev.flash, 1);
    CHECK(memcmp(slot, s_image, s_image_len) == 0);
    /* Nothing after the image: the rest of its last packet stayed erased. */
    const size_t packet_end = (s_image_len + 499) / 500 * 500;
    for (size_t i = s_image_len; i < packet_end; i++) {
        CHECK_EQ(slot[i], 0xFF);
    }
    CHECK_EQ(s_fx.dev.plan.written, s_image_len);
}

static void
test_core_control_write_checks(void)
{
    CHECK_OK(fx_setup());
    const uint8_t two[2] = { BLE_OTA_CTRL_REQUEST, 0 };
    CHECK_EQ(ble_ota_core_control_write(&s_fx.core, two, 0), BLE_OTA_ERR_LENGTH);
    CHECK_EQ(ble_ota_core_control_write(&s_fx.core, two, 2), BLE_OTA_ERR_LENGTH);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_NOP), BLE_OTA_OK);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST_ACK), BLE_OTA_ERR_VALUE);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_DONE_NAK), BLE_OTA_ERR_VALUE);
    CHECK_EQ(ctrl(0x07), BLE_OTA_ERR_VALUE);
    CHECK_EQ(ctrl(0xFF), BLE_OTA_ERR_VALUE);
    CHECK_EQ(s_fx.notify_count, 0);
    CHECK_EQ(s_fx.core.state, BLE_OTA_STATE_IDLE);
    CHECK_EQ(ble_ota_core_control_read(&s_fx.core), BLE_OTA_CTRL_NOP);
}

static void
test_core_packet_size_checks(void)
{
    CHECK_OK(fx_setup());
    CHECK_EQ(packet_size(0), BLE_OTA_ERR_VALUE);
    CHECK_EQ(packet_size(BLE_OTA_MAX_PACKET + 1), BLE_OTA_ERR_VALUE);
    CHECK_EQ(packet_size(0xFFFF), BLE_OTA_ERR_VALUE);
    CHECK_EQ(s_fx.core.packet_size, 0);
    CHECK_EQ(packet_size(1), BLE_OTA_OK);
    CHECK_EQ(packet_size(BLE_OTA_MAX_PACKET), BLE_OTA_OK);
    CHECK_EQ(s_fx.core.packet_size, BLE_OTA_MAX_PACKET);
    CHECK_EQ(packet_size(253), BLE_OTA_OK);
    CHECK_EQ(s_fx.core.packet_size, 253);

    /* In RECEIVING a packet is 1..514 bytes, whatever was announced. */
    static uint8_t big[BLE_OTA_MAX_PACKET + 1];
    memcpy(big, s_image, sizeof(big));
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
    CHECK_EQ(ble_ota_core_data_write(&s_fx.core, big, 0), BLE_OTA_ERR_LENGTH);
    CHECK_EQ(ble_ota_core_data_write(&s_fx.core, big, sizeof(big)), BLE_OTA_ERR_LENGTH);
    CHECK_EQ(s_fx.core.state, BLE_OTA_STATE_RECEIVING);
    CHECK_EQ(ble_ota_core_data_write(&s_fx.core, big, BLE_OTA_MAX_PACKET), BLE_OTA_OK);
    CHECK_EQ(s_fx.core.received, BLE_OTA_MAX_PACKET);
}

static void
test_core_data_before_request(void)
{
    CHECK_OK(fx_setup());
    const uint32_t writes = s_fx.dev.flash.writes;
    const uint32_t erases = s_fx.dev.flash.erases;
    CHECK_EQ(ble_ota_core_data_write(&s_fx.core, s_image, 244), BLE_OTA_ERR_NOT_RECEIVING);
    CHECK_EQ(ble_ota_core_data_write(&s_fx.core, s_image, 1), BLE_OTA_ERR_NOT_RECEIVING);
    CHECK_EQ(ble_ota_core_data_write(&s_fx.core, s_image, 3), BLE_OTA_ERR_NOT_RECEIVING);
    CHECK_EQ(s_fx.dev.flash.writes, writes);
    CHECK_EQ(s_fx.dev.flash.erases, erases);
    CHECK_EQ(host_flash_slot(&s_fx.dev.flash, 1)[0], 0xFF);
    CHECK_EQ(s_fx.core.received, 0);
    CHECK_EQ(ble_ota_status_to_att(BLE_OTA_ERR_NOT_RECEIVING), 0x80);
}

static void
test_core_done_without_data(void)
{
    CHECK_OK(fx_setup());
    /* DONE with no transfer at all. */
    CHECK_EQ(ctrl(BLE_OTA_CTRL_DONE), BLE_OTA_OK);
    CHECK_EQ(last_notify(), BLE_OTA_CTRL_DONE_NAK);
    CHECK_EQ(s_fx.core.state, BLE_OTA_STATE_IDLE);
    /* DONE right after REQUEST: the slot is dropped, never ended. */
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
    CHECK_EQ(s_fx.dev.open_slot, 1);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_DONE), BLE_OTA_OK);
    CHECK_EQ(last_notify(), BLE_OTA_CTRL_DONE_NAK);
    CHECK_EQ(ble_ota_core_control_read(&s_fx.core), BLE_OTA_CTRL_DONE_NAK);
    CHECK_EQ(s_fx.core.state, BLE_OTA_STATE_IDLE);
    CHECK_EQ(s_fx.dev.open_slot, -1);
    CHECK(!s_fx.dev.plan.complete);
    CHECK(!s_fx.dev.restart_pending);
    CHECK_EQ(s_fx.dev.flash.boot_slot, 0);
    /* And the next transfer works. */
    CHECK_OK(upload(s_image, s_image_len, 200));
}

static void
test_core_request_without_packet_size(void)
{
    CHECK_OK(fx_setup());
    const int warnings = s_fx.warnings;
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
    CHECK_EQ(last_notify(), BLE_OTA_CTRL_REQUEST_ACK);
    CHECK_EQ(s_fx.warnings, warnings + 1);
    CHECK_EQ(send_packets(s_image, s_image_len, 180), BLE_OTA_OK);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_DONE), BLE_OTA_OK);
    CHECK_EQ(last_notify(), BLE_OTA_CTRL_DONE_ACK);
}

static void
test_core_flash_write_error(void)
{
    CHECK_OK(fx_setup());
    CHECK_EQ(packet_size(256), BLE_OTA_OK);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
    CHECK_EQ(send_packets(s_image, 256 * 5, 256), BLE_OTA_OK);
    host_flash_fail_write_after(&s_fx.dev.flash, 1);
    CHECK_EQ(ble_ota_core_data_write(&s_fx.core, s_image + 256 * 5, 256), BLE_OTA_ERR_FLASH);
    CHECK_EQ(ble_ota_status_to_att(BLE_OTA_ERR_FLASH), 0x81);
    /* The client hears at once, the slot is freed. */
    CHECK_EQ(last_notify(), BLE_OTA_CTRL_DONE_NAK);
    CHECK_EQ(ble_ota_core_control_read(&s_fx.core), BLE_OTA_CTRL_DONE_NAK);
    CHECK_EQ(s_fx.core.state, BLE_OTA_STATE_IDLE);
    CHECK_EQ(s_fx.dev.open_slot, -1);
    CHECK(s_fx.errors > 0);
    /* Later packets of that transfer are refused, not written. */
    CHECK_EQ(ble_ota_core_data_write(&s_fx.core, s_image + 256 * 6, 256), BLE_OTA_ERR_NOT_RECEIVING);
    /* A retry from the start succeeds. */
    CHECK_OK(upload(s_image, s_image_len, 256));
    CHECK(memcmp(host_flash_slot(&s_fx.dev.flash, 1), s_image, s_image_len) == 0);
}

static void
test_core_disconnect_mid_transfer(void)
{
    CHECK_OK(fx_setup());
    CHECK_EQ(packet_size(244), BLE_OTA_OK);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
    CHECK_EQ(send_packets(s_image, 244 * 20, 244), BLE_OTA_OK);
    ble_ota_core_disconnected(&s_fx.core);
    CHECK_EQ(s_fx.core.state, BLE_OTA_STATE_IDLE);
    CHECK_EQ(ble_ota_core_control_read(&s_fx.core), BLE_OTA_CTRL_NOP);
    CHECK_EQ(s_fx.core.packet_size, 0);
    CHECK_EQ(s_fx.dev.open_slot, -1);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_EMPTY);
    /* The next client starts clean: another image, from offset 0. */
    static uint8_t other[64 * 1024];
    const size_t len = build_image(other, sizeof(other), "3.0.0", 15000, 9);
    CHECK_OK(upload(other, len, 185));
    CHECK_EQ(s_fx.core.received, len);
    CHECK(memcmp(host_flash_slot(&s_fx.dev.flash, 1), other, len) == 0);
    CHECK_EQ(s_fx.dev.flash.slot[1].image_len, len);
}

static void
test_core_request_twice(void)
{
    CHECK_OK(fx_setup());
    CHECK_EQ(packet_size(244), BLE_OTA_OK);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
    CHECK_EQ(send_packets(s_image, 244 * 10, 244), BLE_OTA_OK);
    /* A second REQUEST restarts the transfer from the beginning. */
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
    CHECK_EQ(last_notify(), BLE_OTA_CTRL_REQUEST_ACK);
    CHECK_EQ(s_fx.core.received, 0);
    CHECK_EQ(s_fx.dev.plan.written, 0);
    CHECK_EQ(send_packets(s_image, s_image_len, 244), BLE_OTA_OK);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_DONE), BLE_OTA_OK);
    CHECK_EQ(last_notify(), BLE_OTA_CTRL_DONE_ACK);
    CHECK_EQ(s_fx.dev.flash.slot[1].image_len, s_image_len);
    CHECK_EQ(s_fx.notify_count, 3);
}

static void
test_core_invalid_image_done_nak(void)
{
    CHECK_OK(fx_setup());
    static uint8_t bad[64 * 1024];
    memcpy(bad, s_image, s_image_len);
    bad[1000] ^= 0x40; /* checksum (and hash) no longer match */
    CHECK_EQ(packet_size(244), BLE_OTA_OK);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
    CHECK_EQ(send_packets(bad, s_image_len, 244), BLE_OTA_OK);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_DONE), BLE_OTA_OK);
    CHECK_EQ(last_notify(), BLE_OTA_CTRL_DONE_NAK);
    CHECK_EQ(s_fx.core.state, BLE_OTA_STATE_IDLE);
    CHECK_EQ(s_fx.dev.open_slot, -1);
    CHECK_EQ(s_fx.dev.flash.boot_slot, 0);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_EMPTY);
    CHECK(!s_fx.dev.restart_pending);

    /* A truncated upload fails the same way. */
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
    CHECK_EQ(send_packets(s_image, s_image_len - 40, 244), BLE_OTA_OK);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_DONE), BLE_OTA_OK);
    CHECK_EQ(last_notify(), BLE_OTA_CTRL_DONE_NAK);
    CHECK_EQ(s_fx.dev.flash.boot_slot, 0);
}

static void
test_core_bad_magic_first_packet(void)
{
    CHECK_OK(fx_setup());
    static uint8_t bad[1024];
    memcpy(bad, s_image, sizeof(bad));
    bad[0] = 'P';
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
    /* esp_ota_write refuses the first packet already. */
    CHECK_EQ(ble_ota_core_data_write(&s_fx.core, bad, 244), BLE_OTA_ERR_FLASH);
    CHECK_EQ(last_notify(), BLE_OTA_CTRL_DONE_NAK);
    CHECK_EQ(s_fx.core.state, BLE_OTA_STATE_IDLE);
    CHECK_EQ(host_flash_slot(&s_fx.dev.flash, 1)[0], 0xFF);
}

static void
test_core_restarting_is_busy(void)
{
    CHECK_OK(fx_setup());
    CHECK_OK(upload(s_image, s_image_len, 244));
    const int notified = s_fx.notify_count;
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_ERR_BUSY);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_NOP), BLE_OTA_ERR_BUSY);
    CHECK_EQ(ble_ota_core_control_write(&s_fx.core, s_image, 5), BLE_OTA_ERR_BUSY);
    CHECK_EQ(packet_size(244), BLE_OTA_ERR_BUSY);
    CHECK_EQ(ble_ota_core_data_write(&s_fx.core, s_image, 100), BLE_OTA_ERR_BUSY);
    CHECK_EQ(ble_ota_status_to_att(BLE_OTA_ERR_BUSY), 0x83);
    /* The client leaving does not stop the restart. */
    ble_ota_core_disconnected(&s_fx.core);
    CHECK_EQ(s_fx.core.state, BLE_OTA_STATE_RESTARTING);
    CHECK_EQ(ble_ota_core_control_read(&s_fx.core), BLE_OTA_CTRL_DONE_ACK);
    CHECK_EQ(s_fx.notify_count, notified);
    CHECK(s_fx.dev.restart_pending);
}

static void
test_core_image_too_large(void)
{
    CHECK_OK(fx_setup());
    static uint8_t big[SLOT_SIZE + 4096];
    const size_t len = build_image(big, sizeof(big), "9.9.9", SLOT_SIZE, 5);
    CHECK(len > SLOT_SIZE);
    CHECK_EQ(packet_size(512), BLE_OTA_OK);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
    CHECK_EQ(send_packets(big, len, 512), BLE_OTA_ERR_FLASH);
    CHECK_EQ(s_fx.core.received, SLOT_SIZE);
    CHECK_EQ(last_notify(), BLE_OTA_CTRL_DONE_NAK);
    CHECK_EQ(s_fx.core.state, BLE_OTA_STATE_IDLE);
}

static void
test_core_status_to_att(void)
{
    CHECK_EQ(ble_ota_status_to_att(BLE_OTA_OK), 0);
    CHECK_EQ(ble_ota_status_to_att(BLE_OTA_ERR_LENGTH), 0x0D);
    CHECK_EQ(ble_ota_status_to_att(BLE_OTA_ERR_VALUE), 0x82);
    CHECK_EQ(ble_ota_status_to_att(BLE_OTA_ERR_NOT_RECEIVING), 0x80);
    CHECK_EQ(ble_ota_status_to_att(BLE_OTA_ERR_FLASH), 0x81);
    CHECK_EQ(ble_ota_status_to_att(BLE_OTA_ERR_BUSY), 0x83);
}

/* --- boot and rollback ------------------------------------------------------- */

static void
test_boot_new_image_confirmed(void)
{
    CHECK_OK(fx_setup());
    CHECK_OK(upload(s_image, s_image_len, 244));
    CHECK_EQ(host_dev_boot(&s_fx.dev), 1);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_PENDING_VERIFY);
    /* Before confirmation esp_ota_begin refuses another upload. */
    ble_ota_core_init(&s_fx.core, &s_fx.dev.port, &s_config);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
    CHECK_EQ(last_notify(), BLE_OTA_CTRL_REQUEST_NAK);
    CHECK_EQ(s_fx.core.state, BLE_OTA_STATE_IDLE);

    CHECK_EQ(ble_ota_core_confirm_boot(&s_fx.core, true), BLE_OTA_IMG_PENDING_VERIFY);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_VALID);
    CHECK_EQ(ble_ota_core_confirm_boot(&s_fx.core, true), BLE_OTA_IMG_VALID);
    char version[33];
    host_dev_running_version(&s_fx.dev, version);
    CHECK(strcmp(version, "2.0.0") == 0);
    /* A confirmed image boots as it is, again and again. */
    CHECK_EQ(fx_reboot(true), 1);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_VALID);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 0), HOST_SLOT_VALID);
    /* The next update goes to the other slot: ota_0. */
    static uint8_t third[64 * 1024];
    const size_t len = build_image(third, sizeof(third), "3.0.0", 5000, 11);
    CHECK_OK(upload(third, len, 244));
    CHECK_EQ(s_fx.dev.flash.boot_slot, 0);
    CHECK_EQ(fx_reboot(true), 0);
    host_dev_running_version(&s_fx.dev, version);
    CHECK(strcmp(version, "3.0.0") == 0);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 0), HOST_SLOT_VALID);
}

static void
test_boot_unconfirmed_rolled_back(void)
{
    CHECK_OK(fx_setup());
    CHECK_OK(upload(s_image, s_image_len, 244));
    /* First boot of the new image; it hangs before confirming. */
    CHECK_EQ(host_dev_boot(&s_fx.dev), 1);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_PENDING_VERIFY);
    /* Second boot: the bootloader gives up on it. */
    CHECK_EQ(fx_reboot(true), 0);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_ABORTED);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 0), HOST_SLOT_VALID);
    CHECK_EQ(s_fx.dev.flash.boot_slot, 0);
    char version[33];
    host_dev_running_version(&s_fx.dev, version);
    CHECK(strcmp(version, "1.0.0") == 0);
    /* And stays there. */
    CHECK_EQ(fx_reboot(true), 0);
    /* The old firmware can take an update again. */
    CHECK_OK(upload(s_image, s_image_len, 244));
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_NEW);
}

static void
test_boot_self_test_failed_rolls_back(void)
{
    CHECK_OK(fx_setup());
    CHECK_OK(upload(s_image, s_image_len, 244));
    CHECK_EQ(host_dev_boot(&s_fx.dev), 1);
    CHECK_EQ(ble_ota_core_confirm_boot(&s_fx.core, false), BLE_OTA_IMG_PENDING_VERIFY);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_INVALID);
    CHECK(s_fx.dev.restart_pending);
    CHECK_EQ(s_fx.dev.restart_delay_ms, 0);
    CHECK_EQ(fx_reboot(true), 0);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_INVALID);
    /* A failing self-test on a confirmed image changes nothing. */
    CHECK_EQ(ble_ota_core_confirm_boot(&s_fx.core, false), BLE_OTA_IMG_VALID);
    CHECK(!s_fx.dev.restart_pending);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 0), HOST_SLOT_VALID);
}

static void
test_boot_power_loss_mid_transfer(void)
{
    CHECK_OK(fx_setup());
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
    CHECK_EQ(send_packets(s_image, 244 * 30, 244), BLE_OTA_OK);
    /* Power cut: no disconnect callback, RAM lost. */
    CHECK_EQ(fx_reboot(true), 0);
    CHECK_EQ(s_fx.dev.open_slot, -1);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_EMPTY);
    /* The half-written sectors are programmed; the port erases them again. */
    CHECK_OK(upload(s_image, s_image_len, 244));
    CHECK(memcmp(host_flash_slot(&s_fx.dev.flash, 1), s_image, s_image_len) == 0);
}

/* Runs the first `steps` operations of a seed upload of s_image (packet
 * size, REQUEST, packets, DONE); returns how many it ran. */
static int
partial_upload(int steps, size_t packet)
{
    int done = 0;
    if (done == steps) {
        return done;
    }
    packet_size((uint16_t)packet);
    if (++done == steps) {
        return done;
    }
    ctrl(BLE_OTA_CTRL_REQUEST);
    for (size_t off = 0; off < s_image_len; off += packet) {
        if (++done == steps) {
            return done;
        }
        const size_t n = s_image_len - off < packet ? s_image_len - off : packet;
        ble_ota_core_data_write(&s_fx.core, s_image + off, n);
    }
    if (++done == steps) {
        return done;
    }
    ctrl(BLE_OTA_CTRL_DONE);
    return ++done;
}

static void
test_power_loss_at_every_step(void)
{
    char version[33];

    for (int steps = 0;; steps++) {
        CHECK_OK(fx_setup());
        s_image_len = build_image(s_image, sizeof(s_image), "2.0.0", 3000, 2);
        const int ran = partial_upload(steps, 244);
        const bool finished = ran < steps;
        const bool done_acked = last_notify() == BLE_OTA_CTRL_DONE_ACK;
        /* Power cut (no disconnect, no delayed restart), then boot. */
        const int slot = fx_reboot(true);
        host_dev_running_version(&s_fx.dev, version);
        if (done_acked) {
            CHECK_EQ(slot, 1);
            CHECK(strcmp(version, "2.0.0") == 0);
        } else {
            CHECK_EQ(slot, 0);
            CHECK(strcmp(version, "1.0.0") == 0);
            CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_EMPTY);
        }
        CHECK_EQ(host_dev_slot_state(&s_fx.dev, slot), HOST_SLOT_VALID);
        /* Whatever happened, the next update goes through. */
        static uint8_t next[8192];
        const size_t len = build_image(next, sizeof(next), "3.0.0", 2000, 3);
        CHECK_OK(upload(next, len, 200));
        CHECK_EQ(fx_reboot(true), 1 - slot);
        host_dev_running_version(&s_fx.dev, version);
        CHECK(strcmp(version, "3.0.0") == 0);
        if (finished) {
            CHECK(done_acked);
            break;
        }
    }
}

static void
test_flash_failure_at_every_write(void)
{
    for (uint32_t fail_at = 1;; fail_at++) {
        CHECK_OK(fx_setup());
        s_image_len = build_image(s_image, sizeof(s_image), "2.0.0", 3000, 2);
        CHECK_EQ(packet_size(244), BLE_OTA_OK);
        CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
        host_flash_fail_write_after(&s_fx.dev.flash, fail_at);
        const ble_ota_status_t st = send_packets(s_image, s_image_len, 244);
        host_flash_fail_write_after(&s_fx.dev.flash, 0);
        if (st == BLE_OTA_OK) {
            /* Past the last write: nothing failed, the upload completes. */
            CHECK_EQ(fail_at, (s_image_len + 243) / 244 + 1);
            CHECK_EQ(ctrl(BLE_OTA_CTRL_DONE), BLE_OTA_OK);
            CHECK_EQ(last_notify(), BLE_OTA_CTRL_DONE_ACK);
            break;
        }
        CHECK_EQ(st, BLE_OTA_ERR_FLASH);
        CHECK_EQ(s_fx.core.received, (fail_at - 1) * 244);
        CHECK_EQ(last_notify(), BLE_OTA_CTRL_DONE_NAK);
        CHECK_EQ(s_fx.core.state, BLE_OTA_STATE_IDLE);
        CHECK_EQ(s_fx.dev.open_slot, -1);
        /* DONE after the failure is refused without touching the slot. */
        CHECK_EQ(ctrl(BLE_OTA_CTRL_DONE), BLE_OTA_OK);
        CHECK_EQ(last_notify(), BLE_OTA_CTRL_DONE_NAK);
        CHECK_EQ(s_fx.dev.flash.boot_slot, 0);
        CHECK_OK(upload(s_image, s_image_len, 244));
    }
}

static void
test_boot_install_rejects_bad_image(void)
{
    host_dev_t dev;
    char why[120];
    static uint8_t img[16384];

    CHECK(host_dev_init(&dev, 8192, NULL));
    size_t len = build_image(img, sizeof(img), "1.0.0", 100, 1);
    img[len - 1] ^= 1;
    const bool bad_ok = host_dev_install(&dev, 0, img, len, why, sizeof(why));
    len = build_image(img, sizeof(img), "1.0.0", 9000, 1);
    const bool big_ok = host_dev_install(&dev, 0, img, len, why, sizeof(why));
    /* Nothing installed: nothing boots. */
    const int booted = host_dev_boot(&dev);
    const ble_ota_img_state_t st = dev.port.running_state(dev.port.ctx);
    const ble_ota_port_err_t begin = dev.port.slot_begin(dev.port.ctx, 0);
    host_dev_deinit(&dev);
    CHECK(!bad_ok);
    CHECK(!big_ok);
    CHECK(strstr(why, "fit") != NULL);
    CHECK_EQ(booted, -1);
    CHECK_EQ(st, BLE_OTA_IMG_UNKNOWN);
    CHECK_EQ(begin, BLE_OTA_PORT_ERR_NO_SLOT);
}

int
main(int argc, char **argv)
{
    s_fixtures = argc > 1 ? argv[1] : "../../../shared/fixtures/esptool-images";
    test_on_failure = fx_print_logs;

    RUN(test_sha256_vectors);
    RUN(test_sha256_block_boundaries);
    RUN(test_image_builder_valid);
    RUN(test_image_trailing_bytes_ignored);
    RUN(test_image_bad_magic);
    RUN(test_image_bad_checksum);
    RUN(test_image_bad_hash);
    RUN(test_image_truncated);
    RUN(test_image_header_checks);
    RUN(test_image_esptool_fixtures);
    RUN(test_flash_strict);
    RUN(test_core_full_update);
    RUN(test_core_last_packet_not_padded);
    RUN(test_core_control_write_checks);
    RUN(test_core_packet_size_checks);
    RUN(test_core_data_before_request);
    RUN(test_core_done_without_data);
    RUN(test_core_request_without_packet_size);
    RUN(test_core_flash_write_error);
    RUN(test_core_disconnect_mid_transfer);
    RUN(test_core_request_twice);
    RUN(test_core_invalid_image_done_nak);
    RUN(test_core_bad_magic_first_packet);
    RUN(test_core_restarting_is_busy);
    RUN(test_core_image_too_large);
    RUN(test_core_status_to_att);
    RUN(test_boot_new_image_confirmed);
    RUN(test_boot_unconfirmed_rolled_back);
    RUN(test_boot_self_test_failed_rolls_back);
    RUN(test_boot_power_loss_mid_transfer);
    RUN(test_boot_install_rejects_bad_image);
    RUN(test_power_loss_at_every_step);
    RUN(test_flash_failure_at_every_write);
    test_v2_run_all();
    test_patch_run_all();
    test_auth_run_all();
    test_signature_run_all();
    test_link_run_all();
    test_slot_run_all();
    test_queue_run_all();
    test_bt_run_all();

    host_dev_deinit(&s_fx.dev);
    return test_summary("core");
}
