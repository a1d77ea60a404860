/*
 * The client's DEFLATE stream: see test_deflate.h.
 */
#include "test_deflate.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <zlib.h>

#include "ble_ota_le.h"
#include "ble_ota_protocol.h"

/* As the TypeScript client: level 9, and an 8 KB window (windowBits 13,
 * negative for raw deflate), which holds the dictionary and the chunk. */
#define DEFLATE_LEVEL       9
#define DEFLATE_WINDOW_BITS 13

size_t
test_deflate_chunks(const uint8_t *img, size_t len, size_t first, uint8_t *out, size_t cap)
{
    size_t used = 0;

    for (size_t at = first * BLE_OTA_DEFLATE_CHUNK; at < len; at += BLE_OTA_DEFLATE_CHUNK) {
        const size_t n = len - at < BLE_OTA_DEFLATE_CHUNK ? len - at : BLE_OTA_DEFLATE_CHUNK;
        uint8_t packed[2 * BLE_OTA_DEFLATE_CHUNK];
        z_stream z;
        memset(&z, 0, sizeof(z));
        if (deflateInit2(&z, DEFLATE_LEVEL, Z_DEFLATED, -DEFLATE_WINDOW_BITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
            return 0;
        }
        if (at > 0 && deflateSetDictionary(&z, img + at - BLE_OTA_DEFLATE_CHUNK, BLE_OTA_DEFLATE_CHUNK) != Z_OK) {
            deflateEnd(&z);
            return 0;
        }
        z.next_in = (Bytef *)(uintptr_t)(img + at); /* zlib's API is not const-correct; it only reads */
        z.avail_in = (uInt)n;
        z.next_out = packed;
        z.avail_out = sizeof(packed);
        const int rc = deflate(&z, Z_FINISH);
        const size_t packed_len = sizeof(packed) - z.avail_out;
        deflateEnd(&z);
        if (rc != Z_STREAM_END) {
            return 0;
        }
        const bool deflated = packed_len < n;
        const size_t body = deflated ? packed_len : n;
        if (used + 2 + body > cap) {
            return 0;
        }
        ble_ota_put_le16(out + used, (uint16_t)body);
        memcpy(out + used + 2, deflated ? packed : img + at, body);
        used += 2 + body;
    }
    return used;
}
