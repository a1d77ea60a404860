/*
 * The image check per chip: every chip the host knows validates the images
 * built for it, both the host's synthetic ones and ones laid out as
 * buildAppImage() (lib/image/app-image-builder.ts) and ESP-IDF lay out an
 * app (DROM, DRAM, IRAM, IROM segments), takes them through slot_end (the
 * END of an update) and boots them, and refuses images of another chip.
 *
 * Usage: test-image-chips [FIXTURES_DIR]
 */
#include <stdio.h>
#include <string.h>

#include "ble_ota_le.h"
#include "ble_ota_sha256.h"
#include "host_image.h"
#include "host_port.h"
#include "test.h"

#define PAGE        0x10000u
#define SLOT        (64u * 1024u)
#define IMAGE_MAX   (16u * 1024u)
#define FIXTURE_MAX (256u * 1024u)

static const char *s_fixtures;

/* Segment roles and lengths in the order buildAppImage() writes them. */
enum { ROLE_DROM, ROLE_DRAM, ROLE_IRAM, ROLE_IROM, ROLE_COUNT };
static const uint32_t k_role_len[ROLE_COUNT] = { 1024, 64, 1500, 2048 };

static size_t
data_offset_of(int role)
{
    size_t pos = HOST_IMAGE_HEADER_LEN;
    for (int r = 0; r < role; r++) {
        pos += HOST_IMAGE_SEG_HEADER_LEN + k_role_len[r];
    }
    return pos + HOST_IMAGE_SEG_HEADER_LEN;
}

static uint32_t
role_address(const host_chip_t *chip, int role)
{
    const uint32_t in_page = (uint32_t)(data_offset_of(role) % PAGE);
    switch (role) {
    case ROLE_DROM:
        return chip->drom_base + in_page;
    case ROLE_IROM:
        return chip->irom_base + in_page;
    case ROLE_DRAM:
        return chip->dram_base;
    default:
        return chip->iram_base;
    }
}

/* An app for chip_id laid out as buildAppImage() lays it out: four
 * segments, the flash-mapped ones at their data's offset within the page,
 * the RAM ones at the start of DRAM and IRAM, a hash appended. */
static size_t
build_sdk_layout(uint16_t chip_id, const char *version, uint32_t seed, uint8_t *out, size_t cap)
{
    const host_chip_t *chip = host_image_chip(chip_id);
    const size_t end = data_offset_of(ROLE_COUNT - 1) + k_role_len[ROLE_COUNT - 1];
    const size_t padded = (end + 1 + 15) & ~(size_t)15;
    const size_t total = padded + HOST_IMAGE_HASH_LEN;
    if (chip == NULL || cap < total) {
        return 0;
    }
    memset(out, 0, total);
    out[0] = HOST_IMAGE_MAGIC;
    out[1] = ROLE_COUNT;
    out[2] = 2;
    out[3] = 0x20;
    ble_ota_put_le32(out + 4, chip->iram_base);
    out[8] = 0xEE;
    ble_ota_put_le16(out + 12, chip_id);
    out[17] = 0x63; /* max chip revision v0.99 */
    out[23] = 1;

    uint32_t x = seed * 2654435761u + 1;
    uint8_t checksum = 0xEF;
    for (int role = 0; role < ROLE_COUNT; role++) {
        const size_t data = data_offset_of(role);
        ble_ota_put_le32(out + data - 8, role_address(chip, role));
        ble_ota_put_le32(out + data - 4, k_role_len[role]);
        for (uint32_t i = 0; i < k_role_len[role]; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            out[data + i] = (uint8_t)(x >> 8);
        }
        if (role == ROLE_DROM) {
            uint8_t *desc = out + data;
            memset(desc, 0, HOST_APP_DESC_LEN);
            ble_ota_put_le32(desc, HOST_APP_DESC_MAGIC);
            memcpy(desc + 16, version, strlen(version));
            memcpy(desc + 48, "chip-app", 8);
        }
        for (uint32_t i = 0; i < k_role_len[role]; i++) {
            checksum ^= out[data + i];
        }
    }
    out[padded - 1] = checksum;
    ble_ota_sha256(out, padded, out + padded);
    return total;
}

static size_t
build_synthetic(uint16_t chip_id, const char *version, uint8_t *out, size_t cap)
{
    const host_image_spec_t spec = {
        .project = "chip-app",
        .version = version,
        .payload_len = 3000,
        .seed = chip_id + 1u,
        .chip_id = chip_id,
        .hash_appended = true,
    };
    return host_image_build(&spec, out, cap);
}

/* --- the table ---------------------------------------------------------------- */

static void
test_chip_table(void)
{
    size_t count = 0;
    for (const host_chip_t *c; (c = host_image_chip_at(count)) != NULL; count++) {
        CHECK(host_image_chip(c->chip_id) == c);
        CHECK(c->flash[0].end > c->flash[0].start);
        for (size_t w = 0; w < HOST_CHIP_WINDOWS; w++) {
            const host_addr_range_t r = c->flash[w];
            if (r.end == 0) {
                continue;
            }
            CHECK_EQ(r.start % PAGE, 0);
            CHECK_EQ(r.end % PAGE, 0);
            CHECK(host_image_flash_mapped(c, r.start));
            CHECK(host_image_flash_mapped(c, r.end - 1));
        }
        /* Apps' flash data and code are mapped, their RAM is not. */
        CHECK(host_image_flash_mapped(c, c->drom_base));
        CHECK(host_image_flash_mapped(c, c->irom_base));
        CHECK(!host_image_flash_mapped(c, c->dram_base));
        CHECK(!host_image_flash_mapped(c, c->iram_base));
    }
    CHECK_EQ(count, 10);
    static const uint16_t ids[] = { 0, 2, 5, 9, 12, 13, 16, 18, 20, 23 };
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        CHECK(host_image_chip(ids[i]) != NULL);
    }
    CHECK(strcmp(host_image_chip(5)->name, "ESP32-C3") == 0);
    CHECK(strcmp(host_image_chip(9)->name, "ESP32-S3") == 0);
    CHECK(host_image_chip(1) == NULL);
    CHECK(host_image_chip(77) == NULL);
    CHECK(!host_image_flash_mapped(NULL, 0x400D0000u));

    /* Why one map cannot serve all: the IRAM of the C3 and S3 lies in the
     * ESP32's IROM window. */
    const host_chip_t *esp32 = host_image_chip(0);
    CHECK(host_image_flash_mapped(esp32, host_image_chip(5)->iram_base));
    CHECK(host_image_flash_mapped(esp32, host_image_chip(9)->iram_base));
    /* Window edges of the ESP32-C3 and -S3 (soc.h). */
    const host_chip_t *c3 = host_image_chip(5);
    const host_chip_t *s3 = host_image_chip(9);
    CHECK(!host_image_flash_mapped(c3, 0x3C800000u));
    CHECK(!host_image_flash_mapped(c3, 0x42800000u));
    CHECK(host_image_flash_mapped(s3, 0x3DFFFFFCu));
    CHECK(host_image_flash_mapped(s3, 0x43FFFFFCu));
    CHECK(!host_image_flash_mapped(s3, 0x44000000u));
}

/* --- images per chip ---------------------------------------------------------- */

static void
test_chip_images_valid_for_their_chip_only(void)
{
    static uint8_t img[IMAGE_MAX];
    char why[160];
    host_image_info_t info;

    for (size_t i = 0; host_image_chip_at(i) != NULL; i++) {
        const host_chip_t *chip = host_image_chip_at(i);
        for (int kind = 0; kind < 2; kind++) {
            const size_t len = kind == 0 ? build_synthetic(chip->chip_id, "2.0.0", img, sizeof(img))
                                         : build_sdk_layout(chip->chip_id, "2.0.0", 7, img, sizeof(img));
            CHECK(len > 0);
            const host_image_err_t err = host_image_verify(img, len, chip->chip_id, &info, why, sizeof(why));
            if (err != HOST_IMAGE_OK) {
                test_failf(__FILE__, __LINE__, "%s %s image refused: %s", chip->name,
                           kind == 0 ? "synthetic" : "SDK-layout", why);
                return;
            }
            CHECK_EQ(info.image_len, len);
            CHECK_EQ(info.chip_id, chip->chip_id);
            CHECK_EQ(info.segment_count, kind == 0 ? 2 : ROLE_COUNT);
            /* The builder's segments: descriptor mapped, payload in RAM. */
            if (kind == 0) {
                CHECK(host_image_flash_mapped(chip, ble_ota_get_le32(img + HOST_IMAGE_HEADER_LEN)));
                const size_t seg1 = HOST_IMAGE_HEADER_LEN + HOST_IMAGE_SEG_HEADER_LEN + HOST_APP_DESC_LEN;
                CHECK(!host_image_flash_mapped(chip, ble_ota_get_le32(img + seg1)));
            }
            for (size_t j = 0; host_image_chip_at(j) != NULL; j++) {
                const uint16_t other = host_image_chip_at(j)->chip_id;
                if (other != chip->chip_id) {
                    CHECK_EQ(host_image_verify(img, len, other, NULL, why, sizeof(why)), HOST_IMAGE_ERR_CHIP);
                }
            }
        }
    }
}

/* Each chip's own windows are enforced: a flash-mapped segment moved off
 * its page offset is refused, a RAM segment anywhere in RAM is not. */
static void
test_chip_mapped_segments_checked(void)
{
    static uint8_t img[IMAGE_MAX];
    char why[160];

    for (size_t i = 0; host_image_chip_at(i) != NULL; i++) {
        const host_chip_t *chip = host_image_chip_at(i);
        for (int role = 0; role < ROLE_COUNT; role++) {
            const size_t len = build_sdk_layout(chip->chip_id, "2.0.0", 9, img, sizeof(img));
            CHECK(len > 0);
            uint8_t *addr = img + data_offset_of(role) - HOST_IMAGE_SEG_HEADER_LEN;
            ble_ota_put_le32(addr, ble_ota_get_le32(addr) + 0x100);
            const host_image_err_t err = host_image_verify(img, len, chip->chip_id, NULL, why, sizeof(why));
            const bool mapped = role == ROLE_DROM || role == ROLE_IROM;
            /* The hash covers the header: a RAM segment moved fails only there. */
            if (err != (mapped ? HOST_IMAGE_ERR_SEGMENT : HOST_IMAGE_ERR_HASH)) {
                test_failf(__FILE__, __LINE__, "%s segment %d moved: %s (%s)", chip->name, role,
                           host_image_err_name(err), why);
                return;
            }
        }
    }
}

/* A real ESP-IDF app for the ESP32-S2 (esptool's test image): its mapped
 * segments are now checked against the S2's windows, and pass. */
static void
test_chip_esptool_s2_app(void)
{
    static uint8_t img[FIXTURE_MAX];
    char path[512], why[160];

    snprintf(path, sizeof(path), "%s/esp_idf_blink_esp32s2.bin", s_fixtures);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        printf("  note: %s not found, skipped\n", path);
        return;
    }
    const size_t len = fread(img, 1, sizeof(img), f);
    fclose(f);
    CHECK(len > HOST_IMAGE_HEADER_LEN && len < sizeof(img));

    const host_chip_t *s2 = host_image_chip(2);
    unsigned mapped = 0;
    size_t pos = HOST_IMAGE_HEADER_LEN;
    for (unsigned s = 0; s < img[1]; s++) {
        const uint32_t addr = ble_ota_get_le32(img + pos);
        const uint32_t seg_len = ble_ota_get_le32(img + pos + 4);
        pos += HOST_IMAGE_SEG_HEADER_LEN;
        if (host_image_flash_mapped(s2, addr)) {
            CHECK_EQ(pos % PAGE, addr % PAGE);
            mapped++;
        }
        pos += seg_len;
        CHECK(pos <= len);
    }
    CHECK(mapped >= 2); /* DROM and IROM */
    CHECK_EQ(host_image_verify(img, len, 2, NULL, why, sizeof(why)), HOST_IMAGE_OK);
}

/* --- a device per chip: install, update through slot_end, boot ------------------ */

static void
upload(host_dev_t *dev, const uint8_t *img, size_t len, ble_ota_port_err_t expected)
{
    CHECK_EQ(dev->port.slot_begin(dev->port.ctx, (uint32_t)len), BLE_OTA_PORT_OK);
    for (size_t off = 0; off < len; off += 500) {
        const size_t n = len - off < 500 ? len - off : 500;
        CHECK_EQ(dev->port.slot_write(dev->port.ctx, img + off, n), BLE_OTA_PORT_OK);
    }
    CHECK_EQ(dev->port.slot_end(dev->port.ctx), expected);
}

static void
chip_device_update(const host_chip_t *chip, host_dev_t *dev)
{
    static uint8_t img[IMAGE_MAX];
    char why[160], version[33];

    dev->chip_id = chip->chip_id;
    dev->require_signature = false;
    size_t len = build_synthetic(chip->chip_id, "1.0.0", img, sizeof(img));
    if (!host_dev_install(dev, 0, img, len, why, sizeof(why))) {
        test_failf(__FILE__, __LINE__, "%s: first image refused: %s", chip->name, why);
        return;
    }
    CHECK_EQ(host_dev_boot(dev), 0);

    /* An update laid out as buildAppImage() makes it: END takes it, it boots. */
    len = build_sdk_layout(chip->chip_id, "2.0.0", chip->chip_id + 3u, img, sizeof(img));
    CHECK_OK(upload(dev, img, len, BLE_OTA_PORT_OK));
    CHECK_EQ(dev->port.set_boot_slot(dev->port.ctx), BLE_OTA_PORT_OK);
    CHECK_EQ(host_dev_boot(dev), 1);
    host_dev_running_version(dev, version);
    CHECK(strcmp(version, "2.0.0") == 0);
    CHECK_EQ(dev->port.mark_valid(dev->port.ctx), BLE_OTA_PORT_OK);

    /* The same for another chip: refused at END, 2.0.0 still boots. */
    const uint16_t other = chip->chip_id == 5 ? 9 : 5;
    len = build_sdk_layout(other, "3.0.0", 11, img, sizeof(img));
    CHECK_OK(upload(dev, img, len, BLE_OTA_PORT_ERR_INVALID_IMAGE));
    CHECK_EQ(host_dev_boot(dev), 1);
    host_dev_running_version(dev, version);
    CHECK(strcmp(version, "2.0.0") == 0);
}

static void
test_chip_device_updates(void)
{
    static host_dev_t dev;

    for (size_t i = 0; host_image_chip_at(i) != NULL; i++) {
        const host_chip_t *chip = host_image_chip_at(i);
        CHECK(host_dev_init(&dev, SLOT, NULL));
        chip_device_update(chip, &dev);
        host_dev_deinit(&dev);
        if (test_has_failed()) {
            printf("  (chip %s)\n", chip->name);
            return;
        }
    }
}

int
main(int argc, char **argv)
{
    s_fixtures = argc > 1 ? argv[1] : "../../../shared/fixtures/esptool-images";

    RUN(test_chip_table);
    RUN(test_chip_images_valid_for_their_chip_only);
    RUN(test_chip_mapped_segments_checked);
    RUN(test_chip_esptool_s2_app);
    RUN(test_chip_device_updates);
    return test_summary("image chips");
}
