/*
 * Signature check of new app images as esp_ota_end runs it with signed apps
 * and no secure boot (see host_signature.h for the format).
 *
 * The image digest uses the core's SHA-256 (as host_image.c does for the
 * appended hash); OpenSSL's libcrypto only does the public-key part. Every
 * length comes from the data, which an attacker sends: each offset is
 * checked against len before it is read, in 64-bit arithmetic so that no
 * image_len can wrap it.
 */
#include "host_signature.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <zlib.h>

#include "ble_ota_sha256.h"
#include "ble_ota_le.h"
#include "host_image.h"

#define SIG_MAGIC         0xE7
#define SIG_VERSION_RSA   0x02
#define SIG_VERSION_ECDSA 0x03
#define SIG_ECDSA_SHA256  0x00

#define OFF_MAGIC   0
#define OFF_VERSION 1
#define OFF_SHA_VER 2
#define OFF_DIGEST  4
#define OFF_KEY     36
#define OFF_CRC     1196

/* RSA-3072 block: n, e, rinv, M' form the key, then the signature. */
#define RSA_LEN         384
#define RSA_OFF_N       OFF_KEY
#define RSA_OFF_E       (RSA_OFF_N + RSA_LEN)
#define RSA_KEY_LEN     (RSA_LEN + 4 + RSA_LEN + 4)
#define RSA_OFF_SIG     (OFF_KEY + RSA_KEY_LEN)
#define RSA_PSS_SALTLEN 32

/* ECDSA block: curve id and a 64-byte point field form the key, then r || s. */
#define EC_OFF_CURVE  OFF_KEY
#define EC_OFF_POINT  (OFF_KEY + 1)
#define EC_FIELD_LEN  64
#define EC_KEY_LEN    (1 + EC_FIELD_LEN)
#define EC_OFF_SIG    (EC_OFF_POINT + EC_FIELD_LEN)
#define EC_MAX_COORD  32
#define EC_CURVE_P192 1
#define EC_CURVE_P256 2

#define SECTOR_ALIGN 4096u

typedef struct {
    uint8_t id;
    const char *group; /* OpenSSL's name of the curve */
    size_t coord_len;  /* bytes of each coordinate, r and s */
} ec_curve_t;

static const ec_curve_t k_curves[] = {
    { EC_CURVE_P192, "prime192v1", 24 },
    { EC_CURVE_P256, "prime256v1", 32 },
};

/* Copies n bytes reversed: the block stores big numbers little-endian,
 * OpenSSL's encodings are big-endian. */
static void
reverse_copy(uint8_t *out, const uint8_t *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        out[i] = in[n - 1 - i];
    }
}

const char *
host_sig_err_name(host_sig_err_t err)
{
    switch (err) {
    case HOST_SIG_OK:
        return "ok";
    case HOST_SIG_NONE:
        return "unsigned";
    case HOST_SIG_UNTRUSTED:
        return "untrusted key";
    case HOST_SIG_BAD:
        return "bad signature";
    default:
        return "invalid";
    }
}

uint64_t
host_sig_sector_offset(uint32_t image_len)
{
    return ((uint64_t)image_len + SECTOR_ALIGN - 1) & ~(uint64_t)(SECTOR_ALIGN - 1);
}

bool
host_sig_block_valid(const uint8_t block[HOST_SIG_BLOCK_LEN])
{
    if (block[OFF_MAGIC] != SIG_MAGIC) {
        return false;
    }
    /* ESP-IDF's esp_rom_crc32_le(0, ...) is zlib's crc32. */
    const uint32_t crc = (uint32_t)crc32(0L, block, OFF_CRC);
    return crc == ble_ota_get_le32(block + OFF_CRC);
}

/* The curve of an ECDSA block with SHA-256; NULL for any other. */
static const ec_curve_t *
ec_block_curve(const uint8_t block[HOST_SIG_BLOCK_LEN])
{
    if (block[OFF_SHA_VER] != SIG_ECDSA_SHA256) {
        return NULL;
    }
    for (size_t i = 0; i < sizeof(k_curves) / sizeof(k_curves[0]); i++) {
        if (k_curves[i].id == block[EC_OFF_CURVE]) {
            return &k_curves[i];
        }
    }
    return NULL;
}

/* Length of the key bytes at OFF_KEY that ESP-IDF digests; 0 for a block
 * of a scheme this host does not know. */
static size_t
block_key_len(const uint8_t block[HOST_SIG_BLOCK_LEN])
{
    switch (block[OFF_VERSION]) {
    case SIG_VERSION_RSA:
        return RSA_KEY_LEN;
    case SIG_VERSION_ECDSA:
        return ec_block_curve(block) != NULL ? EC_KEY_LEN : 0;
    default:
        return 0;
    }
}

bool
host_sig_block_key_digest(const uint8_t block[HOST_SIG_BLOCK_LEN], uint8_t digest[HOST_SIG_DIGEST_LEN])
{
    if (!host_sig_block_valid(block)) {
        return false;
    }
    const size_t key_len = block_key_len(block);
    if (key_len == 0) {
        return false;
    }
    ble_ota_sha256(block + OFF_KEY, key_len, digest);
    return true;
}

/* Block 0 of the image's signature sector, or NULL when the data ends
 * before the end of the sector (esp_ota_end maps all of it). */
static const uint8_t *
sector_block0(const uint8_t *data, size_t len, uint32_t image_len)
{
    const uint64_t start = host_sig_sector_offset(image_len);
    if (data == NULL || start > (uint64_t)len || (uint64_t)len - start < HOST_SIG_SECTOR_LEN) {
        return NULL;
    }
    return data + start;
}

bool
host_sig_image_key_digest(const uint8_t *data, size_t len, uint32_t image_len, uint8_t digest[HOST_SIG_DIGEST_LEN])
{
    const uint8_t *block = sector_block0(data, len, image_len);
    return block != NULL && host_sig_block_key_digest(block, digest);
}

/* An EVP_PKEY of the given type from params; NULL on failure. */
static EVP_PKEY *
pkey_from_params(const char *type, OSSL_PARAM *params)
{
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);

    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
        pkey = NULL;
    }
    EVP_PKEY_CTX_free(ctx);
    return pkey;
}

/* The RSA public key (n, e) of an RSA block. */
static EVP_PKEY *
rsa_block_key(const uint8_t block[HOST_SIG_BLOCK_LEN])
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    BIGNUM *n = BN_lebin2bn(block + RSA_OFF_N, RSA_LEN, NULL);
    BIGNUM *e = BN_new();

    if (bld != NULL && n != NULL && e != NULL && BN_set_word(e, ble_ota_get_le32(block + RSA_OFF_E)) &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e)) {
        params = OSSL_PARAM_BLD_to_param(bld);
    }
    if (params != NULL) {
        pkey = pkey_from_params("RSA", params);
    }
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    return pkey;
}

/* The EC public key of an ECDSA block: uncompressed point 0x04 || X || Y,
 * big-endian. NULL when the point is not on the curve. */
static EVP_PKEY *
ec_block_key(const uint8_t block[HOST_SIG_BLOCK_LEN], const ec_curve_t *curve)
{
    uint8_t point[1 + 2 * EC_MAX_COORD];
    const size_t c = curve->coord_len;

    point[0] = 0x04;
    reverse_copy(point + 1, block + EC_OFF_POINT, c);
    reverse_copy(point + 1 + c, block + EC_OFF_POINT + c, c);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)curve->group, 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * c),
        OSSL_PARAM_construct_end(),
    };
    return pkey_from_params("EC", params);
}

/* DER of the ECDSA signature r || s of an ECDSA block; *der_len 0 on
 * failure. The caller frees *der with OPENSSL_free. */
static unsigned char *
ec_block_der_signature(const uint8_t block[HOST_SIG_BLOCK_LEN], const ec_curve_t *curve, size_t *der_len)
{
    unsigned char *der = NULL;
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_lebin2bn(block + EC_OFF_SIG, (int)curve->coord_len, NULL);
    BIGNUM *s = BN_lebin2bn(block + EC_OFF_SIG + curve->coord_len, (int)curve->coord_len, NULL);

    *der_len = 0;
    if (sig != NULL && r != NULL && s != NULL && ECDSA_SIG_set0(sig, r, s)) {
        r = NULL; /* sig owns them now */
        s = NULL;
        const int n = i2d_ECDSA_SIG(sig, &der);
        if (n > 0) {
            *der_len = (size_t)n;
        } else {
            der = NULL;
        }
    }
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return der;
}

/* Verifies sig over the SHA-256 digest (already hashed) with pkey; RSA
 * keys with PSS, MGF1-SHA-256 and a 32-byte salt, as espsecure signs. */
static bool
verify_prehashed(EVP_PKEY *pkey, bool rsa_pss, const unsigned char *sig, size_t sig_len,
                 const uint8_t digest[HOST_SIG_DIGEST_LEN])
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    bool ok = ctx != NULL && EVP_PKEY_verify_init(ctx) > 0 && EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) > 0;

    if (ok && rsa_pss) {
        ok = EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) > 0 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, RSA_PSS_SALTLEN) > 0 &&
             EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) > 0;
    }
    ok = ok && EVP_PKEY_verify(ctx, sig, sig_len, digest, HOST_SIG_DIGEST_LEN) == 1;
    EVP_PKEY_CTX_free(ctx);
    return ok;
}

static bool
rsa_block_verify(const uint8_t block[HOST_SIG_BLOCK_LEN], const uint8_t digest[HOST_SIG_DIGEST_LEN])
{
    uint8_t sig[RSA_LEN];
    EVP_PKEY *pkey = rsa_block_key(block);

    reverse_copy(sig, block + RSA_OFF_SIG, RSA_LEN);
    const bool ok = pkey != NULL && verify_prehashed(pkey, true, sig, sizeof(sig), digest);
    EVP_PKEY_free(pkey);
    return ok;
}

static bool
ec_block_verify(const uint8_t block[HOST_SIG_BLOCK_LEN], const uint8_t digest[HOST_SIG_DIGEST_LEN])
{
    const ec_curve_t *curve = ec_block_curve(block);
    if (curve == NULL) {
        return false;
    }
    size_t der_len;
    unsigned char *der = ec_block_der_signature(block, curve, &der_len);
    EVP_PKEY *pkey = ec_block_key(block, curve);
    const bool ok = der != NULL && pkey != NULL && verify_prehashed(pkey, false, der, der_len, digest);
    EVP_PKEY_free(pkey);
    OPENSSL_free(der);
    return ok;
}

/* The signature of a block whose key digest is trusted (so its version and
 * curve are known) over digest. */
static bool
block_signature_verifies(const uint8_t block[HOST_SIG_BLOCK_LEN], const uint8_t digest[HOST_SIG_DIGEST_LEN])
{
    const bool ok = block[OFF_VERSION] == SIG_VERSION_RSA ? rsa_block_verify(block, digest)
                                                          : ec_block_verify(block, digest);
    /* A failed verification leaves errors in OpenSSL's queue: drop them, so
     * they never show up under a later, unrelated call. */
    ERR_clear_error();
    return ok;
}

host_sig_err_t
host_sig_verify(const uint8_t *data, size_t len, uint32_t image_len, const uint8_t trusted[HOST_SIG_DIGEST_LEN],
                char *why, size_t why_len)
{
    host_why(why, why_len, "ok");
    const uint8_t *block = sector_block0(data, len, image_len);
    if (block == NULL) {
        host_why(why, why_len, "no signature block: the data ends before the signature sector at 0x%llx ends",
                 (unsigned long long)host_sig_sector_offset(image_len));
        return HOST_SIG_NONE;
    }
    if (!host_sig_block_valid(block)) {
        host_why(why, why_len, "no signature block: block 0 at 0x%llx has no magic or a bad CRC",
                 (unsigned long long)host_sig_sector_offset(image_len));
        return HOST_SIG_NONE;
    }

    uint8_t key_digest[HOST_SIG_DIGEST_LEN];
    if (!host_sig_block_key_digest(block, key_digest)) {
        host_why(why, why_len, "signed with another key: unknown scheme (version 0x%02x, 0x%02x, curve %u)",
                 block[OFF_VERSION], block[OFF_SHA_VER], (unsigned)block[EC_OFF_CURVE]);
        return HOST_SIG_UNTRUSTED;
    }
    if (trusted == NULL || memcmp(key_digest, trusted, HOST_SIG_DIGEST_LEN) != 0) {
        host_why(why, why_len, "signed with another key");
        return HOST_SIG_UNTRUSTED;
    }

    /* The digest covers the 0xFF padding up to the sector as it is in the data. */
    uint8_t image_digest[HOST_SIG_DIGEST_LEN];
    ble_ota_sha256(data, (size_t)host_sig_sector_offset(image_len), image_digest);
    if (memcmp(image_digest, block + OFF_DIGEST, HOST_SIG_DIGEST_LEN) != 0) {
        host_why(why, why_len, "image digest does not match the signature block");
        return HOST_SIG_BAD;
    }
    if (!block_signature_verifies(block, image_digest)) {
        host_why(why, why_len, "signature does not verify");
        return HOST_SIG_BAD;
    }
    return HOST_SIG_OK;
}
