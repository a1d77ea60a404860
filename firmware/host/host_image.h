/*
 * ESP application images on the host: validation as esp_ota_end does it
 * (esp_image_verify), the app descriptor, and a synthetic image builder for
 * tests and the virtual ESP32's built-in first image.
 *
 * Image layout (little-endian):
 *   24-byte header: magic 0xE9, segment count, SPI mode/speed/size, entry
 *     address, ..., chip id (bytes 12-13), ..., hash_appended (byte 23);
 *   per segment: load address u32, data length u32, data;
 *   padding so that the checksum byte ends a 16-byte block; the checksum is
 *     0xEF XOR every byte of segment data;
 *   when hash_appended is 1, SHA-256 of everything before it.
 * Bytes after that are not part of the image and are ignored.
 */
#ifndef HOST_IMAGE_H
#define HOST_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HOST_IMAGE_MAGIC          0xE9
#define HOST_IMAGE_HEADER_LEN     24
#define HOST_IMAGE_SEG_HEADER_LEN 8
#define HOST_IMAGE_MAX_SEGMENTS   16
#define HOST_IMAGE_HASH_LEN       32
#define HOST_IMAGE_CHIP_ESP32     0

#define HOST_APP_DESC_OFFSET 0x20
#define HOST_APP_DESC_LEN    256
#define HOST_APP_DESC_MAGIC  0xABCD5432u

/* A chip's memory map, as far as the image check and the builder need it. */
#define HOST_CHIP_WINDOWS 2

typedef struct {
    uint32_t start; /* [start, end); end 0: no window */
    uint32_t end;
} host_addr_range_t;

typedef struct {
    uint16_t chip_id;                           /* the image header's chip id */
    const char *name;                           /* "ESP32-C3" */
    host_addr_range_t flash[HOST_CHIP_WINDOWS]; /* windows the flash cache maps (SOC_DROM_*, SOC_IROM_*) */
    uint32_t drom_base;                         /* where an app's flash-mapped read-only data starts */
    uint32_t irom_base;                         /* where an app's flash-mapped code starts */
    uint32_t dram_base;                         /* where an app's initialised data RAM starts */
    uint32_t iram_base;                         /* where an app's IRAM code starts */
} host_chip_t;

/* The chip of this header chip id (ESP32, -S2, -C3, -S3, -C2, -C6, -H2,
 * -P4, -C61, -C5, as lib/image/esp-chips.ts), or NULL. */
const host_chip_t *host_image_chip(uint16_t chip_id);

/* The index-th chip the table knows, NULL past the last. */
const host_chip_t *host_image_chip_at(size_t index);

/* Whether a segment loaded at addr is mapped from flash on chip (false for
 * a NULL chip: nothing is known to be mapped). */
bool host_image_flash_mapped(const host_chip_t *chip, uint32_t addr);

typedef enum {
    HOST_IMAGE_OK = 0,
    HOST_IMAGE_ERR_TRUNCATED, /* the data ends inside the image */
    HOST_IMAGE_ERR_MAGIC,
    HOST_IMAGE_ERR_CHIP,     /* built for another chip */
    HOST_IMAGE_ERR_SEGMENTS, /* too many segments */
    HOST_IMAGE_ERR_SEGMENT,  /* bad segment length or mapping */
    HOST_IMAGE_ERR_CHECKSUM,
    HOST_IMAGE_ERR_HASH,
} host_image_err_t;

typedef struct {
    uint32_t image_len; /* through the checksum block and the hash; set once the segments
                             * parse, also when the checksum or the hash then fails */
    uint8_t segment_count;
    uint16_t chip_id;
    bool hash_appended;
    uint8_t checksum;
} host_image_info_t;

/* Validates the image at the start of data[0..len) for the chip chip_id:
 * the header must name it, and segments in its flash-mapped windows must sit
 * at their address's offset within a 64 KiB page. On failure, why (if not
 * NULL) gets a one-line reason. */
host_image_err_t host_image_verify(const uint8_t *data, size_t len, uint16_t chip_id, host_image_info_t *info,
                                   char *why, size_t why_len);

const char *host_image_err_name(host_image_err_t err);

/* Writes a one-line reason into why (why_len bytes; nothing when why is
 * NULL): the host checks' way of saying what failed. */
void host_why(char *why, size_t why_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Version and project name from the app descriptor at 0x20, NUL-terminated
 * (each up to 32 characters). False when there is no descriptor. */
bool host_image_app_desc(const uint8_t *data, size_t len, char version[33], char project[33]);

/* The app descriptor's fields (esp_app_desc_t), strings NUL-terminated. */
typedef struct {
    uint32_t secure_version;
    char version[33];
    char project_name[33];
    char time[17];
    char date[17];
    char idf_version[33];
    uint8_t app_elf_sha256[32];
} host_app_desc_t;

/* All of the descriptor; false (and *desc zeroed) when there is none. */
bool host_image_read_app_desc(const uint8_t *data, size_t len, host_app_desc_t *desc);

/* A synthetic app for chip_id: a DROM segment holding the app descriptor,
 * and an IRAM segment of payload_len pseudo-random bytes (rounded up to 4)
 * derived from seed, at that chip's addresses (the ESP32's for a chip id
 * host_image_chip() does not know). */
typedef struct {
    const char *project;
    const char *version;
    uint32_t payload_len;
    uint32_t seed;
    uint16_t chip_id;
    bool hash_appended;
    bool compressible;       /* payload bytes of 4 random bits: deflates about 2:1, as app code does */
    uint32_t secure_version; /* the app descriptor's anti-rollback version */
} host_image_spec_t;

/* Size of the image host_image_build() makes. */
size_t host_image_build_size(const host_image_spec_t *spec);

/* Writes the image into out; returns its length, or 0 when cap is too small. */
size_t host_image_build(const host_image_spec_t *spec, uint8_t *out, size_t cap);

#endif /* HOST_IMAGE_H */
