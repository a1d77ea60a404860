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
 * Boot v2 signature block made over this image, the padding and that
 * sector.
 *
 * Made over this image, not just well formed: a slot is erased only as far
 * as an update needs, so an older signed image whose end fell in the same
 * 4 KB sector as a newer unsigned one leaves its signature sector where
 * the newer image's would be, magic and CRC right. Counting it would
 * report an image no client holds (and no patch made from the file it
 * sent would apply); the image digest the block stores tells it apart.
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
#define SIG_VERSION_ECDSA 0x03u
#define SIG_OFF_VERSION   1
#define SIG_OFF_SHA_VER   2 /* ECDSA: 0 SHA-256, 1 SHA-384 */
#define SIG_OFF_DIGEST    4
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

/* Whether the sector at `sector` holds a signature block 0 made over the
 * image: magic and CRC right, and the digest it stores the SHA-256 of
 * everything before the sector (the image, hashed in `image` up to `end`,
 * then the padding). A SHA-384 block (ECDSA P-384) cannot be checked
 * without SHA-384: its magic and CRC decide. *signs: the answer; returns
 * false when a read failed. scratch: 32 bytes. */
static bool
signature_sector(const ble_ota_port_t *port, const ble_ota_sha256_ctx_t *image, uint32_t end, uint32_t sector,
                 uint8_t *buf, size_t buf_len, uint8_t scratch[BLE_OTA_SHA256_LEN], bool *signs)
{
    *signs = false;
    /* Outside the slot, or unreadable: no signature. */
    if (sector + SIG_SECTOR > IMG_MAX_LEN ||
        port->running_read(port->ctx, sector, buf, SIG_BLOCK_CRC_LEN + 4u) != BLE_OTA_PORT_OK ||
        buf[0] != SIG_BLOCK_MAGIC ||
        ble_ota_crc32(buf, SIG_BLOCK_CRC_LEN) != ble_ota_get_le32(buf + SIG_BLOCK_CRC_LEN)) {
        return true;
    }
    if (buf[SIG_OFF_VERSION] == SIG_VERSION_ECDSA && buf[SIG_OFF_SHA_VER] != 0) {
        *signs = true;
        return true;
    }
    memcpy(scratch, buf + SIG_OFF_DIGEST, BLE_OTA_SHA256_LEN);
    ble_ota_sha256_ctx_t padded = *image;
    if (!hash_range(port, &padded, end, sector, buf, buf_len)) {
        return false;
    }
    ble_ota_sha256_final(&padded, buf);
    *signs = memcmp(buf, scratch, BLE_OTA_SHA256_LEN) == 0;
    if (!*signs) {
        ble_ota_log(port, BLE_OTA_LOG_INFO, "running image: the signature sector after it signs another image");
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
    /* sha256 is scratch until the end. */
    const uint32_t sector = (end + SIG_SECTOR - 1u) & ~(SIG_SECTOR - 1u);
    bool signs;
    if (!signature_sector(port, &hash, end, sector, buf, buf_len, sha256, &signs)) {
        memset(sha256, 0, BLE_OTA_SHA256_LEN);
        return false;
    }
    if (signs) {
        if (!hash_range(port, &hash, end, sector + SIG_SECTOR, buf, buf_len)) {
            memset(sha256, 0, BLE_OTA_SHA256_LEN);
            return false;
        }
        end = sector + SIG_SECTOR;
    }
    ble_ota_sha256_final(&hash, sha256);
    *size = end;
    return true;
}
