/*
 * SHA-256 (FIPS 180-4), portable: the core hashes the v2 stream with it, so
 * the ESP32 and the host compute the same digest the same way (and the host
 * uses it for the appended image hash that esp_ota_end checks).
 *
 * The context is a plain struct, so the core embeds it: nothing allocated.
 */
#ifndef BLE_OTA_SHA256_H
#define BLE_OTA_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define BLE_OTA_SHA256_LEN       32
#define BLE_OTA_SHA256_BLOCK_LEN 64

typedef struct {
    uint32_t h[8];
    uint64_t total;                          /* bytes hashed so far */
    uint8_t block[BLE_OTA_SHA256_BLOCK_LEN]; /* partial block */
    size_t used;                             /* bytes in block */
} ble_ota_sha256_ctx_t;

void ble_ota_sha256_init(ble_ota_sha256_ctx_t *ctx);
void ble_ota_sha256_update(ble_ota_sha256_ctx_t *ctx, const void *data, size_t len);
void ble_ota_sha256_final(ble_ota_sha256_ctx_t *ctx, uint8_t digest[BLE_OTA_SHA256_LEN]);

/* One-shot digest of len bytes. */
void ble_ota_sha256(const void *data, size_t len, uint8_t digest[BLE_OTA_SHA256_LEN]);

/* HMAC-SHA256 (RFC 2104) of a || b: the MAC of authenticated requests. */
void ble_ota_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *a, size_t a_len, const uint8_t *b,
                         size_t b_len, uint8_t mac[BLE_OTA_SHA256_LEN]);

#endif /* BLE_OTA_SHA256_H */
