/*
 * ESP application image checks and a synthetic image builder.
 *
 * The checks follow what esp_ota_end runs (esp_image_verify in ESP-IDF's
 * bootloader_support): header magic, chip id, segment count, each segment
 * header inside the data with a length that is a multiple of 4, flash-mapped
 * segments aligned to their 64 KiB MMU page, the XOR checksum, then the
 * appended SHA-256. Chip revision and secure boot are out of scope.
 */
#include "host_image.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ble_ota_sha256.h"
#include "ble_ota_le.h"

#define CHECKSUM_INITIAL 0xEF
#define MMU_PAGE_SIZE    0x10000u
#define SIXTEEN_MB       0x1000000u

/*
 * Per-chip memory map: the address windows the flash cache maps (a segment
 * loaded there must sit at the same offset within a 64 KiB MMU page in the
 * image as in the address space), and where the synthetic builder puts its
 * segments. The same ranges as the package's lib/image/esp-chips.ts (which
 * test/esp-chips.test.ts checks field by field against this table), which
 * the TypeScript parser and buildAppImage() use; both follow ESP-IDF's
 * components/soc/<chip>/include/soc/soc.h, SOC_DROM_LOW..SOC_DROM_HIGH and
 * SOC_IROM_LOW..SOC_IROM_HIGH, which esp_image_format.c's should_map() tests
 * (https://github.com/espressif/esp-idf/tree/master/components/soc). On the
 * ESP32-C6 and -H2 SOC_IROM_HIGH is SOC_IROM_LOW + (CONFIG_MMU_PAGE_SIZE << 8):
 * 16 MiB with 64 KiB pages, one window shared by code and data.
 *
 * One chip's map cannot serve another: the ESP32's IROM window
 * (0x400D0000..0x40400000) holds the IRAM of the ESP32-C3 and -C2
 * (0x40380000) and of the ESP32-S3 (0x40378000).
 */
/* One chip per pair of lines, as test/esp-chips.test.ts reads the table. */
/* clang-format off */
static const host_chip_t k_chips[] = {
    /* id, name, flash-mapped windows, DROM, IROM, DRAM, IRAM bases */
    { 0, "ESP32", { { 0x3F400000u, 0x3F800000u }, { 0x400D0000u, 0x40400000u } },
      0x3F400000u, 0x400D0000u, 0x3FFB0000u, 0x40080000u },
    { 2, "ESP32-S2", { { 0x3F000000u, 0x3FF80000u }, { 0x40080000u, 0x40800000u } },
      0x3F000000u, 0x40080000u, 0x3FFB0000u, 0x40020000u },
    { 5, "ESP32-C3", { { 0x3C000000u, 0x3C800000u }, { 0x42000000u, 0x42800000u } },
      0x3C000000u, 0x42000000u, 0x3FC88000u, 0x40380000u },
    { 9, "ESP32-S3", { { 0x3C000000u, 0x3E000000u }, { 0x42000000u, 0x44000000u } },
      0x3C000000u, 0x42000000u, 0x3FC88000u, 0x40378000u },
    { 12, "ESP32-C2", { { 0x3C000000u, 0x3C400000u }, { 0x42000000u, 0x42400000u } },
      0x3C000000u, 0x42000000u, 0x3FCA0000u, 0x40380000u },
    { 13, "ESP32-C6", { { 0x42000000u, 0x43000000u }, { 0, 0 } },
      0x42800000u, 0x42000000u, 0x40808000u, 0x40800000u },
    { 16, "ESP32-H2", { { 0x42000000u, 0x43000000u }, { 0, 0 } },
      0x42800000u, 0x42000000u, 0x40808000u, 0x40800000u },
    /* The P4 also maps PSRAM segments (SOC_EXTRAM_LOW..SOC_EXTRAM_HIGH). */
    { 18, "ESP32-P4", { { 0x40000000u, 0x44000000u }, { 0x48000000u, 0x4C000000u } },
      0x40800000u, 0x40000000u, 0x4FF10000u, 0x4FF00000u },
    /* C61 and C5: SOC_IROM_HIGH is SOC_IROM_LOW + 32 MiB, DROM the same window. */
    { 20, "ESP32-C61", { { 0x42000000u, 0x44000000u }, { 0, 0 } },
      0x42800000u, 0x42000000u, 0x40808000u, 0x40800000u },
    { 23, "ESP32-C5", { { 0x42000000u, 0x44000000u }, { 0, 0 } },
      0x42800000u, 0x42000000u, 0x40808000u, 0x40800000u },
};
/* clang-format on */

#define CHIP_COUNT (sizeof(k_chips) / sizeof(k_chips[0]))

/* Synthetic images for a chip this table does not know use the ESP32's
 * addresses; their segments are never checked as mapped. */
#define SYNTH_FALLBACK_CHIP (&k_chips[0])
#define SYNTH_ENTRY_OFFSET  0x400u

void
host_why(char *why, size_t why_len, const char *fmt, ...)
{
    va_list ap;

    if (why == NULL || why_len == 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
}

const host_chip_t *
host_image_chip(uint16_t chip_id)
{
    for (size_t i = 0; i < CHIP_COUNT; i++) {
        if (k_chips[i].chip_id == chip_id) {
            return &k_chips[i];
        }
    }
    return NULL;
}

const host_chip_t *
host_image_chip_at(size_t index)
{
    return index < CHIP_COUNT ? &k_chips[index] : NULL;
}

bool
host_image_flash_mapped(const host_chip_t *chip, uint32_t addr)
{
    if (chip == NULL) {
        return false;
    }
    for (size_t i = 0; i < HOST_CHIP_WINDOWS; i++) {
        if (addr >= chip->flash[i].start && addr < chip->flash[i].end) {
            return true;
        }
    }
    return false;
}

const char *
host_image_err_name(host_image_err_t err)
{
    switch (err) {
    case HOST_IMAGE_OK:
        return "ok";
    case HOST_IMAGE_ERR_TRUNCATED:
        return "truncated";
    case HOST_IMAGE_ERR_MAGIC:
        return "bad magic";
    case HOST_IMAGE_ERR_CHIP:
        return "wrong chip";
    case HOST_IMAGE_ERR_SEGMENTS:
        return "too many segments";
    case HOST_IMAGE_ERR_SEGMENT:
        return "bad segment";
    case HOST_IMAGE_ERR_CHECKSUM:
        return "bad checksum";
    case HOST_IMAGE_ERR_HASH:
        return "bad hash";
    default:
        return "invalid";
    }
}

host_image_err_t
host_image_verify(const uint8_t *data, size_t len, uint16_t chip_id, host_image_info_t *info, char *why, size_t why_len)
{
    host_image_info_t local;
    if (info == NULL) {
        info = &local;
    }
    memset(info, 0, sizeof(*info));
    host_why(why, why_len, "ok");

    if (len < 1) {
        host_why(why, why_len, "no data");
        return HOST_IMAGE_ERR_TRUNCATED;
    }
    if (data[0] != HOST_IMAGE_MAGIC) {
        host_why(why, why_len, "invalid magic byte 0x%02x", data[0]);
        return HOST_IMAGE_ERR_MAGIC;
    }
    if (len < HOST_IMAGE_HEADER_LEN) {
        host_why(why, why_len, "image header truncated (%zu of %d bytes)", len, HOST_IMAGE_HEADER_LEN);
        return HOST_IMAGE_ERR_TRUNCATED;
    }
    info->segment_count = data[1];
    info->chip_id = ble_ota_get_le16(data + 12);
    info->hash_appended = data[23] == 1;
    if (info->chip_id != chip_id) {
        host_why(why, why_len, "mismatch chip id, expected %u, found %u", (unsigned)chip_id, (unsigned)info->chip_id);
        return HOST_IMAGE_ERR_CHIP;
    }
    if (info->segment_count > HOST_IMAGE_MAX_SEGMENTS) {
        host_why(why, why_len, "segment count %u exceeds max %d", (unsigned)info->segment_count,
                 HOST_IMAGE_MAX_SEGMENTS);
        return HOST_IMAGE_ERR_SEGMENTS;
    }

    /* The device's chip: the header's chip id equals it from here on. An
     * unknown chip has no known windows, so (as the TypeScript parser) no
     * segment is taken to be mapped. */
    const host_chip_t *chip = host_image_chip(chip_id);

    /* size_t arithmetic: every length below is checked against len first,
     * and len and segment lengths (< 16 MB each, at most 16) cannot wrap. */
    size_t pos = HOST_IMAGE_HEADER_LEN;
    uint8_t checksum = CHECKSUM_INITIAL;
    for (unsigned i = 0; i < info->segment_count; i++) {
        if (len - pos < HOST_IMAGE_SEG_HEADER_LEN) {
            host_why(why, why_len, "segment %u header beyond the data (offset %zu)", i, pos);
            return HOST_IMAGE_ERR_TRUNCATED;
        }
        const uint32_t load_addr = ble_ota_get_le32(data + pos);
        const uint32_t seg_len = ble_ota_get_le32(data + pos + 4);
        pos += HOST_IMAGE_SEG_HEADER_LEN;
        if ((seg_len & 3) != 0 || seg_len >= SIXTEEN_MB) {
            host_why(why, why_len, "invalid segment %u length 0x%lx", i, (unsigned long)seg_len);
            return HOST_IMAGE_ERR_SEGMENT;
        }
        if (host_image_flash_mapped(chip, load_addr) && (pos % MMU_PAGE_SIZE) != (load_addr % MMU_PAGE_SIZE)) {
            host_why(why, why_len, "segment %u load address 0x%08lx does not match data 0x%08zx", i,
                     (unsigned long)load_addr, pos);
            return HOST_IMAGE_ERR_SEGMENT;
        }
        if (len - pos < seg_len) {
            host_why(why, why_len, "segment %u data beyond the data (offset %zu, length %lu)", i, pos,
                     (unsigned long)seg_len);
            return HOST_IMAGE_ERR_TRUNCATED;
        }
        for (uint32_t j = 0; j < seg_len; j++) {
            checksum ^= data[pos + j];
        }
        pos += seg_len;
    }

    /* The checksum byte ends the 16-byte block after the last segment. */
    const size_t padded = (pos + 1 + 15) & ~(size_t)15;
    if (padded > len) {
        host_why(why, why_len, "checksum beyond the data (offset %zu)", padded - 1);
        return HOST_IMAGE_ERR_TRUNCATED;
    }
    info->checksum = checksum;
    /* Known from here on, also when the checksum or the hash fails: the
     * image parses, and its signature sector can be found. */
    info->image_len = (uint32_t)padded + (info->hash_appended ? HOST_IMAGE_HASH_LEN : 0u);
    if (data[padded - 1] != checksum) {
        host_why(why, why_len, "checksum failed, calculated 0x%02x read 0x%02x", checksum, data[padded - 1]);
        return HOST_IMAGE_ERR_CHECKSUM;
    }
    if (info->hash_appended) {
        if (len - padded < HOST_IMAGE_HASH_LEN) {
            host_why(why, why_len, "appended hash beyond the data (offset %zu)", padded);
            return HOST_IMAGE_ERR_TRUNCATED;
        }
        uint8_t digest[BLE_OTA_SHA256_LEN];
        ble_ota_sha256(data, padded, digest);
        if (memcmp(digest, data + padded, HOST_IMAGE_HASH_LEN) != 0) {
            host_why(why, why_len, "image hash failed, image is corrupt");
            return HOST_IMAGE_ERR_HASH;
        }
    }
    return HOST_IMAGE_OK;
}

static void
copy_field(char *out, const uint8_t *field, size_t field_len)
{
    size_t n = 0;
    while (n < field_len && field[n] != '\0') {
        n++;
    }
    memcpy(out, field, n);
    out[n] = '\0';
}

bool
host_image_read_app_desc(const uint8_t *data, size_t len, host_app_desc_t *desc)
{
    memset(desc, 0, sizeof(*desc));
    if (len < HOST_APP_DESC_OFFSET + HOST_APP_DESC_LEN ||
        ble_ota_get_le32(data + HOST_APP_DESC_OFFSET) != HOST_APP_DESC_MAGIC) {
        return false;
    }
    /* esp_app_desc_t: magic, secure_version, reserved[2], version[32],
     * project_name[32], time[16], date[16], idf_ver[32], app_elf_sha256[32], ... */
    const uint8_t *d = data + HOST_APP_DESC_OFFSET;
    desc->secure_version = ble_ota_get_le32(d + 4);
    copy_field(desc->version, d + 16, 32);
    copy_field(desc->project_name, d + 48, 32);
    copy_field(desc->time, d + 80, 16);
    copy_field(desc->date, d + 96, 16);
    copy_field(desc->idf_version, d + 112, 32);
    memcpy(desc->app_elf_sha256, d + 144, 32);
    return true;
}

bool
host_image_app_desc(const uint8_t *data, size_t len, char version[33], char project[33])
{
    host_app_desc_t desc;
    const bool found = host_image_read_app_desc(data, len, &desc);

    memcpy(version, desc.version, sizeof(desc.version));
    memcpy(project, desc.project_name, sizeof(desc.project_name));
    return found;
}

static size_t
payload_len4(const host_image_spec_t *spec)
{
    return ((size_t)spec->payload_len + 3) & ~(size_t)3;
}

size_t
host_image_build_size(const host_image_spec_t *spec)
{
    const size_t unpadded = HOST_IMAGE_HEADER_LEN + HOST_IMAGE_SEG_HEADER_LEN + HOST_APP_DESC_LEN +
                            HOST_IMAGE_SEG_HEADER_LEN + payload_len4(spec);
    const size_t padded = (unpadded + 1 + 15) & ~(size_t)15;
    return padded + (spec->hash_appended ? HOST_IMAGE_HASH_LEN : 0);
}

static void
put_string(uint8_t *field, size_t field_len, const char *s)
{
    for (size_t i = 0; s != NULL && i < field_len && s[i] != '\0'; i++) {
        field[i] = (uint8_t)s[i];
    }
}

size_t
host_image_build(const host_image_spec_t *spec, uint8_t *out, size_t cap)
{
    const size_t total = host_image_build_size(spec);
    if (cap < total) {
        return 0;
    }
    memset(out, 0, total);
    const host_chip_t *chip = host_image_chip(spec->chip_id);
    if (chip == NULL) {
        chip = SYNTH_FALLBACK_CHIP;
    }
    /* The app descriptor in DROM at the page offset of its data (0x20), the
     * payload in IRAM, the entry point in IRAM: as buildAppImage() does. */
    const uint32_t drom_addr = chip->drom_base + HOST_APP_DESC_OFFSET;
    const uint32_t iram_addr = chip->iram_base;

    uint8_t *h = out;
    h[0] = HOST_IMAGE_MAGIC;
    h[1] = 2;    /* segments */
    h[2] = 2;    /* SPI mode DIO */
    h[3] = 0x20; /* 4 MB flash, 40 MHz */
    ble_ota_put_le32(h + 4, iram_addr + SYNTH_ENTRY_OFFSET);
    h[8] = 0xEE; /* WP pin: not used */
    ble_ota_put_le16(h + 12, spec->chip_id);
    h[23] = spec->hash_appended ? 1 : 0;

    /* Segment 0: the app descriptor, mapped at DROM + 0x20 like a real app. */
    uint8_t *s = out + HOST_IMAGE_HEADER_LEN;
    ble_ota_put_le32(s, drom_addr);
    ble_ota_put_le32(s + 4, HOST_APP_DESC_LEN);
    uint8_t *desc = s + HOST_IMAGE_SEG_HEADER_LEN;
    ble_ota_put_le32(desc, HOST_APP_DESC_MAGIC);
    ble_ota_put_le32(desc + 4, spec->secure_version);
    put_string(desc + 16, 32, spec->version);
    put_string(desc + 48, 32, spec->project);
    put_string(desc + 80, 16, "12:00:00");
    put_string(desc + 96, 16, "Jan  1 2025");
    put_string(desc + 112, 32, "v5.3-virtual");
    /* A stand-in for the ELF hash, so two versions differ there too. */
    ble_ota_sha256(spec->version == NULL ? "" : spec->version, spec->version == NULL ? 0 : strlen(spec->version),
                   desc + 144);

    /* Segment 1: payload from a xorshift generator, so images of different
     * seeds differ everywhere. */
    s = desc + HOST_APP_DESC_LEN;
    const size_t plen = payload_len4(spec);
    ble_ota_put_le32(s, iram_addr);
    ble_ota_put_le32(s + 4, (uint32_t)plen);
    uint8_t *payload = s + HOST_IMAGE_SEG_HEADER_LEN;
    uint32_t x = spec->seed * 2654435761u + 0x9E3779B9u;
    for (size_t i = 0; i < plen; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        payload[i] = spec->compressible ? (uint8_t)((x >> 8) & 0x0F) : (uint8_t)(x >> 8);
    }

    uint8_t checksum = CHECKSUM_INITIAL;
    for (size_t i = 0; i < HOST_APP_DESC_LEN; i++) {
        checksum ^= desc[i];
    }
    for (size_t i = 0; i < plen; i++) {
        checksum ^= payload[i];
    }
    const size_t padded = total - (spec->hash_appended ? HOST_IMAGE_HASH_LEN : 0);
    out[padded - 1] = checksum;
    if (spec->hash_appended) {
        ble_ota_sha256(out, padded, out + padded);
    }
    return total;
}
