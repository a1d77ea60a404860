/*
 * The image in the running slot, as a file holds it: what a client sent (or
 * `idf.py build` wrote), which is what a delta patch is made from. Its size
 * and SHA-256 go into OTA Info (running_size, running_sha256); a client that
 * keeps the images it installed finds the one the device runs by them.
 *
 * The slot holds more than the image (erased or stale bytes after it), so
 * the image's end is found by walking its format (ESP-IDF Programming
 * Guide, "App Image Format"; esp_image_format.h): the 24-byte header, each
 * segment's 8-byte header and data, the checksum byte padded so the length
 * is a multiple of 16, the SHA-256 the header's hash_appended byte
 * announces, and, when the 4 KB-aligned sector after that holds a Secure
 * Boot v2 signature block (magic 0xE7, its own CRC-32 right), the padding
 * and that sector.
 */
#include <string.h>

#include "ble_ota_core.h"
#include "ble_ota_internal.h"
#include "ble_ota_le.h"

#define IMG_HEADER_LEN    24
#define IMG_MAGIC         0xE9u
#define IMG_MAX_SEGMENTS  16u /* ESP_IMAGE_MAX_SEGMENTS */
#define IMG_OFF_HASH_FLAG 23
#define SEG_HEADER_LEN    8
#define IMG_HASH_LEN      32
/* The largest app partition (16 MB): a walk that goes further is no image. */
#define IMG_MAX_LEN       0x1000000u
#define SIG_SECTOR        4096u
#define SIG_BLOCK_MAGIC   0xE7u
#define SIG_BLOCK_CRC_LEN 1196u /* bytes of a block the CRC-32 after them covers */

static bool
read_at(const ble_ota_port_t *port, uint32_t offset, uint8_t *out, size_t len)
{
    const ble_ota_port_err_t err = port->running_read(port->ctx, offset, out, len);

    if (err != BLE_OTA_PORT_OK) {
        ble_ota_log(port, BLE_OTA_LOG_WARN, "running image: %lu bytes at %lu not read (%s)", (unsigned long)len,
                    (unsigned long)offset, ble_ota_port_err_name(err));
        return false;
    }
    return true;
}

/* Where the image ends before any signature sector; 0 when malformed. */
static uint32_t
image_end(const ble_ota_port_t *port, uint8_t *buf)
{
    if (!read_at(port, 0, buf, IMG_HEADER_LEN)) {
        return 0;
    }
    const unsigned segments = buf[1];
    const uint8_t hash_flag = buf[IMG_OFF_HASH_FLAG];
    if (buf[0] != IMG_MAGIC || segments == 0 || segments > IMG_MAX_SEGMENTS || hash_flag > 1) {
        ble_ota_log(port, BLE_OTA_LOG_WARN, "running image: no ESP app image header");
        return 0;
    }
    uint32_t pos = IMG_HEADER_LEN;
    for (unsigned i = 0; i < segments; i++) {
        if (!read_at(port, pos, buf, SEG_HEADER_LEN)) {
            return 0;
        }
        const uint32_t len = ble_ota_get_le32(buf + 4);
        if (len > IMG_MAX_LEN || pos + SEG_HEADER_LEN + len > IMG_MAX_LEN) {
            ble_ota_log(port, BLE_OTA_LOG_WARN, "running image: segment %u of %lu bytes", i, (unsigned long)len);
            return 0;
        }
        pos += SEG_HEADER_LEN + len;
    }
    /* The checksum byte, then padding to 16 bytes, as esp_image_format.c counts it. */
    pos = (pos + 16u) & ~15u;
    return hash_flag == 1 ? pos + IMG_HASH_LEN : pos;
}

/* Hashes [from, to) of the running slot through buf. */
static bool
hash_range(const ble_ota_port_t *port, ble_ota_sha256_ctx_t *hash, uint32_t from, uint32_t to, uint8_t *buf,
           size_t buf_len)
{
    while (from < to) {
        const size_t n = to - from < buf_len ? to - from : buf_len;
        if (!read_at(port, from, buf, n)) {
            return false;
        }
        ble_ota_sha256_update(hash, buf, n);
        from += (uint32_t)n;
    }
    return true;
}

bool
ble_ota_running_image(const ble_ota_port_t *port, uint8_t *buf, size_t buf_len, uint32_t *size,
                      uint8_t sha256[BLE_OTA_SHA256_LEN])
{
    ble_ota_sha256_ctx_t hash;

    *size = 0;
    memset(sha256, 0, BLE_OTA_SHA256_LEN);
    if (port->running_read == NULL || buf_len < BLE_OTA_RUNNING_BUF_MIN) {
        return false;
    }
    uint32_t end = image_end(port, buf);
    if (end == 0) {
        return false;
    }
    ble_ota_sha256_init(&hash);
    if (!hash_range(port, &hash, 0, end, buf, buf_len)) {
        return false;
    }
    /* A signature sector after the image: block 0 with its magic and a right
     * CRC (stale bytes of an older image there would rarely pass both).
     * Outside the slot, or unreadable: no signature. */
    const uint32_t sector = (end + SIG_SECTOR - 1u) & ~(SIG_SECTOR - 1u);
    if (sector + SIG_SECTOR <= IMG_MAX_LEN &&
        port->running_read(port->ctx, sector, buf, SIG_BLOCK_CRC_LEN + 4u) == BLE_OTA_PORT_OK &&
        buf[0] == SIG_BLOCK_MAGIC &&
        ble_ota_crc32(buf, SIG_BLOCK_CRC_LEN) == ble_ota_get_le32(buf + SIG_BLOCK_CRC_LEN)) {
        if (!hash_range(port, &hash, end, sector + SIG_SECTOR, buf, buf_len)) {
            return false;
        }
        end = sector + SIG_SECTOR;
    }
    ble_ota_sha256_final(&hash, sha256);
    *size = end;
    return true;
}
