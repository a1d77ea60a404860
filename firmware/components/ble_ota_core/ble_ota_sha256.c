/*
 * SHA-256 as specified in FIPS 180-4, written for this project.
 */
#include "ble_ota_sha256.h"

#include <string.h>

/* First 32 bits of the fractional parts of the cube roots of the first 64
 * primes (FIPS 180-4, 4.2.2). */
static const uint32_t k_round[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t
rotr(uint32_t x, unsigned n)
{
    return (x >> n) | (x << (32 - n));
}

static void
ble_ota_sha256_block(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++) {
        w[i] = ((uint32_t)p[4 * i] << 24) | ((uint32_t)p[4 * i + 1] << 16) | ((uint32_t)p[4 * i + 2] << 8) |
               (uint32_t)p[4 * i + 3];
    }
    for (int i = 16; i < 64; i++) {
        const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }

    uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
    uint32_t e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        const uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k_round[i] + w[i];
        const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
}

void
ble_ota_sha256_init(ble_ota_sha256_ctx_t *ctx)
{
    /* First 32 bits of the fractional parts of the square roots of the
     * first 8 primes (FIPS 180-4, 5.3.3). */
    static const uint32_t h0[8] = {
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    };
    memcpy(ctx->h, h0, sizeof(h0));
    ctx->total = 0;
    ctx->used = 0;
}

void
ble_ota_sha256_update(ble_ota_sha256_ctx_t *ctx, const void *data, size_t len)
{
    const uint8_t *p = data;

    ctx->total += len;
    if (ctx->used > 0) {
        size_t take = BLE_OTA_SHA256_BLOCK_LEN - ctx->used;
        if (take > len) {
            take = len;
        }
        memcpy(ctx->block + ctx->used, p, take);
        ctx->used += take;
        p += take;
        len -= take;
        if (ctx->used < BLE_OTA_SHA256_BLOCK_LEN) {
            return;
        }
        ble_ota_sha256_block(ctx->h, ctx->block);
        ctx->used = 0;
    }
    while (len >= BLE_OTA_SHA256_BLOCK_LEN) {
        ble_ota_sha256_block(ctx->h, p);
        p += BLE_OTA_SHA256_BLOCK_LEN;
        len -= BLE_OTA_SHA256_BLOCK_LEN;
    }
    if (len > 0) {
        memcpy(ctx->block, p, len);
        ctx->used = len;
    }
}

void
ble_ota_sha256_final(ble_ota_sha256_ctx_t *ctx, uint8_t digest[BLE_OTA_SHA256_LEN])
{
    const uint64_t bits = ctx->total * 8;

    /* Padding: 0x80, zeros up to 56 mod 64, then the bit length big-endian. */
    ctx->block[ctx->used++] = 0x80;
    if (ctx->used > 56) {
        memset(ctx->block + ctx->used, 0, BLE_OTA_SHA256_BLOCK_LEN - ctx->used);
        ble_ota_sha256_block(ctx->h, ctx->block);
        ctx->used = 0;
    }
    memset(ctx->block + ctx->used, 0, 56 - ctx->used);
    for (int i = 0; i < 8; i++) {
        ctx->block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    }
    ble_ota_sha256_block(ctx->h, ctx->block);

    for (int i = 0; i < 8; i++) {
        digest[4 * i] = (uint8_t)(ctx->h[i] >> 24);
        digest[4 * i + 1] = (uint8_t)(ctx->h[i] >> 16);
        digest[4 * i + 2] = (uint8_t)(ctx->h[i] >> 8);
        digest[4 * i + 3] = (uint8_t)ctx->h[i];
    }
    memset(ctx, 0, sizeof(*ctx));
}

void
ble_ota_sha256(const void *data, size_t len, uint8_t digest[BLE_OTA_SHA256_LEN])
{
    ble_ota_sha256_ctx_t ctx;

    ble_ota_sha256_init(&ctx);
    ble_ota_sha256_update(&ctx, data, len);
    ble_ota_sha256_final(&ctx, digest);
}

/* Clears memory even where the compiler sees no later read (a plain memset
 * of a dying local may be optimised away). */
static void
wipe(void *p, size_t len)
{
    volatile uint8_t *v = p;

    while (len-- > 0) {
        *v++ = 0;
    }
}

void
ble_ota_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len,
                    uint8_t mac[BLE_OTA_SHA256_LEN])
{
    uint8_t k0[BLE_OTA_SHA256_BLOCK_LEN];
    uint8_t pad[BLE_OTA_SHA256_BLOCK_LEN];
    uint8_t inner[BLE_OTA_SHA256_LEN];
    ble_ota_sha256_ctx_t ctx;

    memset(k0, 0, sizeof(k0));
    if (key_len > sizeof(k0)) {
        ble_ota_sha256(key, key_len, k0);
    } else {
        memcpy(k0, key, key_len);
    }
    for (size_t i = 0; i < sizeof(pad); i++) {
        pad[i] = (uint8_t)(k0[i] ^ 0x36);
    }
    ble_ota_sha256_init(&ctx);
    ble_ota_sha256_update(&ctx, pad, sizeof(pad));
    ble_ota_sha256_update(&ctx, a, a_len);
    ble_ota_sha256_update(&ctx, b, b_len);
    ble_ota_sha256_final(&ctx, inner);
    for (size_t i = 0; i < sizeof(pad); i++) {
        pad[i] = (uint8_t)(k0[i] ^ 0x5c);
    }
    ble_ota_sha256_init(&ctx);
    ble_ota_sha256_update(&ctx, pad, sizeof(pad));
    ble_ota_sha256_update(&ctx, inner, sizeof(inner));
    ble_ota_sha256_final(&ctx, mac);
    /* The key's traces do not outlive the call. */
    wipe(k0, sizeof(k0));
    wipe(pad, sizeof(pad));
    wipe(&ctx, sizeof(ctx));
}
