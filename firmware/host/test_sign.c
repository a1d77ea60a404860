/*
 * The test-only signer (test_sign.h).
 *
 * It writes the block layout on its own rather than through
 * host_signature.c, and hashes with OpenSSL where host_signature.c uses the
 * core's SHA-256, so that the tests compare two implementations. Like
 * espsecure, it signs the padded contents with SHA-256 (EVP_DigestSign):
 * the same signature as one over the prehashed image digest, which is what
 * the device verifies.
 */
#include "test_sign.h"
#include "ble_ota_le.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <zlib.h>

#define SECTOR_LEN 4096u
#define BLOCK_LEN  1216u
#define DIGEST_LEN 32u

#define BLOCK_MAGIC   0xE7
#define VERSION_RSA   0x02
#define VERSION_ECDSA 0x03

#define OFF_DIGEST 4u
#define OFF_KEY    36u
#define OFF_CRC    1196u

#define RSA_BITS    3072
#define RSA_LEN     384u
#define RSA_KEY_LEN (RSA_LEN + 4u + RSA_LEN + 4u) /* n, e, rinv, M' */
#define EC_KEY_LEN  65u                           /* curve id, X || Y in 64 bytes */

struct test_sign_key {
    EVP_PKEY *pkey;
    uint8_t version;                /* VERSION_RSA or VERSION_ECDSA */
    size_t coord_len;               /* ECDSA: bytes per coordinate, r and s */
    uint8_t key_field[RSA_KEY_LEN]; /* the block's bytes from OFF_KEY on */
    size_t key_field_len;
};

/* -n^-1 mod 2^32 for odd n0 (the low word of n): Newton's iteration doubles
 * the correct low bits each step, from 3 (an odd x is its own inverse mod 8). */
static uint32_t
montgomery_m_prime(uint32_t n0)
{
    uint32_t x = n0;
    for (int i = 0; i < 4; i++) {
        x *= 2u - n0 * x;
    }
    return 0u - x;
}

/* n (LE), e, rinv = 2^(2*3072) mod n (LE), M': the RSA peripheral's form of
 * the public key, as espsecure writes it. */
static bool
rsa_key_field(test_sign_key_t *key)
{
    BIGNUM *n = NULL, *e = NULL;
    BIGNUM *rinv = BN_new();
    BN_CTX *ctx = BN_CTX_new();
    uint8_t *f = key->key_field;
    bool ok = rinv != NULL && ctx != NULL && EVP_PKEY_get_bn_param(key->pkey, OSSL_PKEY_PARAM_RSA_N, &n) &&
              EVP_PKEY_get_bn_param(key->pkey, OSSL_PKEY_PARAM_RSA_E, &e) && BN_num_bits(n) == RSA_BITS &&
              BN_set_bit(rinv, 2 * RSA_BITS) && BN_mod(rinv, rinv, n, ctx) &&
              BN_bn2lebinpad(n, f, RSA_LEN) == (int)RSA_LEN &&
              BN_bn2lebinpad(rinv, f + RSA_LEN + 4, RSA_LEN) == (int)RSA_LEN;

    if (ok) {
        ble_ota_put_le32(f + RSA_LEN, (uint32_t)BN_get_word(e));
        const uint32_t n0 = ble_ota_get_le32(f);
        ble_ota_put_le32(f + RSA_LEN + 4 + RSA_LEN, montgomery_m_prime(n0));
        key->key_field_len = RSA_KEY_LEN;
    }
    BN_free(n);
    BN_free(e);
    BN_free(rinv);
    BN_CTX_free(ctx);
    return ok;
}

/* Curve id, then X and Y little-endian in a 64-byte field (P-192: 24 bytes
 * each and 16 zero bytes). */
static bool
ec_key_field(test_sign_key_t *key, uint8_t curve_id)
{
    BIGNUM *x = NULL, *y = NULL;
    uint8_t *f = key->key_field;
    const int c = (int)key->coord_len;

    memset(f, 0, EC_KEY_LEN);
    f[0] = curve_id;
    const bool ok = EVP_PKEY_get_bn_param(key->pkey, OSSL_PKEY_PARAM_EC_PUB_X, &x) &&
                    EVP_PKEY_get_bn_param(key->pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &y) &&
                    BN_bn2lebinpad(x, f + 1, c) == c && BN_bn2lebinpad(y, f + 1 + c, c) == c;
    if (ok) {
        key->key_field_len = EC_KEY_LEN;
    }
    BN_free(x);
    BN_free(y);
    return ok;
}

test_sign_key_t *
test_sign_key_new(const char *scheme)
{
    test_sign_key_t *key = calloc(1, sizeof(*key));
    bool ok = false;

    if (key == NULL || scheme == NULL) {
        free(key);
        return NULL;
    }
    if (strcmp(scheme, "rsa3072") == 0) {
        key->version = VERSION_RSA;
        key->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)RSA_BITS);
        ok = key->pkey != NULL && rsa_key_field(key);
    } else if (strcmp(scheme, "ecdsa256") == 0 || strcmp(scheme, "ecdsa192") == 0) {
        const bool p256 = strcmp(scheme, "ecdsa256") == 0;
        key->version = VERSION_ECDSA;
        key->coord_len = p256 ? 32 : 24;
        key->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", p256 ? "P-256" : "P-192");
        ok = key->pkey != NULL && ec_key_field(key, p256 ? 2 : 1);
    }
    if (!ok) {
        test_sign_key_free(key);
        return NULL;
    }
    return key;
}

void
test_sign_key_free(test_sign_key_t *key)
{
    if (key != NULL) {
        EVP_PKEY_free(key->pkey);
        free(key);
    }
}

void
test_sign_key_digest(const test_sign_key_t *key, uint8_t digest[32])
{
    unsigned int n = 0;
    if (EVP_Digest(key->key_field, key->key_field_len, digest, &n, EVP_sha256(), NULL) != 1 || n != DIGEST_LEN) {
        memset(digest, 0, DIGEST_LEN);
    }
}

/* EVP_DigestSign of msg with SHA-256 (RSA: PSS, MGF1-SHA-256, salt 32)
 * into sig[0..*sig_len). */
static bool
digest_sign(const test_sign_key_t *key, const uint8_t *msg, size_t msg_len, uint8_t *sig, size_t *sig_len)
{
    EVP_PKEY_CTX *pctx = NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md != NULL && EVP_DigestSignInit(md, &pctx, EVP_sha256(), NULL, key->pkey) == 1;

    if (ok && key->version == VERSION_RSA) {
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) > 0 && EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) > 0;
    }
    ok = ok && EVP_DigestSign(md, sig, sig_len, msg, msg_len) == 1;
    EVP_MD_CTX_free(md); /* frees pctx too */
    return ok;
}

/* The RSA signature, big-endian from OpenSSL, reversed into the block. */
static bool
rsa_sign_into(const test_sign_key_t *key, const uint8_t *msg, size_t msg_len, uint8_t *field)
{
    uint8_t sig[RSA_LEN];
    size_t sig_len = sizeof(sig);

    if (!digest_sign(key, msg, msg_len, sig, &sig_len) || sig_len != RSA_LEN) {
        return false;
    }
    for (size_t i = 0; i < RSA_LEN; i++) {
        field[i] = sig[RSA_LEN - 1 - i];
    }
    return true;
}

/* r || s, each little-endian in coord_len bytes, from OpenSSL's DER. */
static bool
ec_sign_into(const test_sign_key_t *key, const uint8_t *msg, size_t msg_len, uint8_t *field)
{
    uint8_t der[160];
    size_t der_len = sizeof(der);

    if (!digest_sign(key, msg, msg_len, der, &der_len)) {
        return false;
    }
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    if (sig == NULL) {
        return false;
    }
    const BIGNUM *r = ECDSA_SIG_get0_r(sig);
    const BIGNUM *s = ECDSA_SIG_get0_s(sig);
    const int c = (int)key->coord_len;
    const bool ok = BN_bn2lebinpad(r, field, c) == c && BN_bn2lebinpad(s, field + c, c) == c;
    ECDSA_SIG_free(sig);
    return ok;
}

/* One signature block over contents[0..len), the padded image. */
static bool
sign_block(const test_sign_key_t *key, const uint8_t *contents, size_t len, uint8_t block[BLOCK_LEN])
{
    unsigned int digest_len = 0;

    memset(block, 0, BLOCK_LEN);
    block[0] = BLOCK_MAGIC;
    block[1] = key->version;
    block[2] = 0; /* RSA; ECDSA: SHA-256 */
    if (EVP_Digest(contents, len, block + OFF_DIGEST, &digest_len, EVP_sha256(), NULL) != 1 ||
        digest_len != DIGEST_LEN) {
        return false;
    }
    memcpy(block + OFF_KEY, key->key_field, key->key_field_len);
    uint8_t *sig = block + OFF_KEY + key->key_field_len;
    const bool ok = key->version == VERSION_RSA ? rsa_sign_into(key, contents, len, sig)
                                                : ec_sign_into(key, contents, len, sig);
    ble_ota_put_le32(block + OFF_CRC, (uint32_t)crc32(0L, block, OFF_CRC));
    return ok;
}

size_t
test_sign_size(size_t len)
{
    return (len + SECTOR_LEN - 1) / SECTOR_LEN * SECTOR_LEN + SECTOR_LEN;
}

size_t
test_sign_image(const test_sign_key_t *key, const uint8_t *image, size_t len, uint8_t *out, size_t cap)
{
    if (key == NULL || len > SIZE_MAX - 2 * SECTOR_LEN) {
        return 0;
    }
    const size_t total = test_sign_size(len);
    const size_t padded = total - SECTOR_LEN;
    if (cap < total) {
        return 0;
    }
    if (out != image && len > 0) {
        memmove(out, image, len);
    }
    memset(out + len, 0xFF, total - len);
    if (!sign_block(key, out, padded, out + padded)) {
        return 0;
    }
    return total;
}
