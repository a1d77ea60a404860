/*
 * Signed images (host_signature.c) with the test signer (test_sign.c):
 * images signed with RSA-3072 and ECDSA verify against their key's digest,
 * and every way an image must fail does: unsigned, another key, a changed
 * byte of the image, its padding or the block, a bad CRC, a truncated
 * sector, a good block anywhere but block 0.
 *
 * The keys are generated once per run (RSA-3072 takes a while).
 */
#include <stdio.h>
#include <string.h>

#include <zlib.h>

#include "ble_ota_le.h"
#include "ble_ota_sha256.h"
#include "host_image.h"
#include "host_signature.h"
#include "test.h"
#include "test_fixture.h"
#include "test_sign.h"

#define BUF_LEN (32u * 1024u)

/* Offsets in a signature block, written out here on purpose: the tests
 * restate the format rather than share host_signature.c's constants. */
#define B_VERSION  1
#define B_SHA_VER  2
#define B_DIGEST   4
#define B_KEY      36
#define B_RSA_E    (36 + 384)
#define B_RSA_RINV (36 + 388)
#define B_RSA_SIG  812
#define B_EC_CURVE 36
#define B_EC_SIG   101
#define B_CRC      1196

static test_sign_key_t *s_rsa;
static test_sign_key_t *s_rsa_other;
static test_sign_key_t *s_ec256;
static test_sign_key_t *s_ec256_other;
static test_sign_key_t *s_ec192;

/* One signed synthetic image and what the tests need of it. */
typedef struct {
    uint8_t data[BUF_LEN];
    size_t len;         /* the whole signed file */
    uint32_t image_len; /* host_image_verify's */
    size_t sector;      /* where the signature sector starts */
    uint8_t trusted[32];
} signed_t;

static signed_t s_signed;

static void
fix_crc(uint8_t *block)
{
    ble_ota_put_le32(block + B_CRC, (uint32_t)crc32(0L, block, B_CRC));
}

/* Builds and signs an app into s_signed; trusted gets key's digest. */
static void
sign_app(const test_sign_key_t *key, uint32_t payload, uint32_t seed)
{
    static uint8_t app[BUF_LEN];
    host_image_info_t info;
    char why[120];

    CHECK(key != NULL);
    const size_t app_len = build_image(app, sizeof(app), "3.0.0", payload, seed);
    CHECK(app_len > 0);
    s_signed.len = test_sign_image(key, app, app_len, s_signed.data, sizeof(s_signed.data));
    CHECK(s_signed.len > 0);
    /* The signature sector is after the image: esp_image_verify ignores it. */
    CHECK_EQ(host_image_verify(s_signed.data, s_signed.len, HOST_IMAGE_CHIP_ESP32, &info, why, sizeof(why)),
             HOST_IMAGE_OK);
    CHECK_EQ(info.image_len, app_len);
    s_signed.image_len = info.image_len;
    s_signed.sector = s_signed.len - HOST_SIG_SECTOR_LEN;
    test_sign_key_digest(key, s_signed.trusted);
}

static uint8_t *
block0(void)
{
    return s_signed.data + s_signed.sector;
}

static host_sig_err_t
verify_signed(char *why, size_t why_len)
{
    return host_sig_verify(s_signed.data, s_signed.len, s_signed.image_len, s_signed.trusted, why, why_len);
}

/* --- good signatures ------------------------------------------------------- */

/* The file is the image, 0xFF to 4096, block 0 and 0xFF to the sector's end,
 * and it verifies against its key's digest. */
static void
check_signed_verifies(const test_sign_key_t *key, uint8_t version)
{
    char why[120];

    CHECK_OK(sign_app(key, 5000, 11));
    CHECK(s_signed.image_len % HOST_SIG_SECTOR_LEN != 0);
    CHECK_EQ(s_signed.sector, (s_signed.image_len + 4095) / 4096 * 4096);
    CHECK_EQ(s_signed.len, s_signed.sector + HOST_SIG_SECTOR_LEN);
    for (size_t i = s_signed.image_len; i < s_signed.sector; i++) {
        CHECK_EQ(s_signed.data[i], 0xFF);
    }
    const uint8_t *b = block0();
    CHECK_EQ(b[0], 0xE7);
    CHECK_EQ(b[B_VERSION], version);
    CHECK_EQ(b[B_SHA_VER], 0);
    CHECK_EQ(b[3], 0);
    for (size_t i = B_CRC + 4; i < HOST_SIG_BLOCK_LEN; i++) {
        CHECK_EQ(b[i], 0);
    }
    for (size_t i = HOST_SIG_BLOCK_LEN; i < HOST_SIG_SECTOR_LEN; i++) {
        CHECK_EQ(b[i], 0xFF);
    }
    uint8_t digest[32];
    ble_ota_sha256(s_signed.data, s_signed.sector, digest);
    CHECK(memcmp(b + B_DIGEST, digest, 32) == 0);

    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_OK);
    CHECK(strcmp(why, "ok") == 0);
}

static void
test_sig_rsa_signed_verifies(void)
{
    check_signed_verifies(s_rsa, 0x02);
}

static void
test_sig_ecdsa256_signed_verifies(void)
{
    CHECK_OK(check_signed_verifies(s_ec256, 0x03));
    CHECK_EQ(block0()[B_EC_CURVE], 2);
    /* Zeros from r || s to the CRC. */
    for (size_t i = B_EC_SIG + 64; i < B_CRC; i++) {
        CHECK_EQ(block0()[i], 0);
    }
}

static void
test_sig_ecdsa192_signed_verifies(void)
{
    CHECK_OK(check_signed_verifies(s_ec192, 0x03));
    const uint8_t *b = block0();
    CHECK_EQ(b[B_EC_CURVE], 1);
    /* X || Y take 48 of the point's 64 bytes, r || s 48 of theirs. */
    for (size_t i = B_EC_CURVE + 1 + 48; i < B_EC_SIG; i++) {
        CHECK_EQ(b[i], 0);
    }
    for (size_t i = B_EC_SIG + 48; i < B_CRC; i++) {
        CHECK_EQ(b[i], 0);
    }
}

/* An image ending on a 4096-byte boundary gets no padding: the sector
 * follows it directly. */
static void
test_sig_aligned_image_not_padded(void)
{
    char why[120];

    /* 24 + 8 + 256 + 8 + 7848 bytes, the checksum block to 8160, the hash to 8192. */
    CHECK_OK(sign_app(s_ec256, 7848, 12));
    CHECK_EQ(s_signed.image_len, 8192);
    CHECK_EQ(s_signed.sector, 8192);
    CHECK_EQ(s_signed.len, 8192 + HOST_SIG_SECTOR_LEN);
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_OK);
}

/* A running image trusts the key of its own block 0: a second image signed
 * by the same key verifies against that. */
static void
test_sig_running_image_key_trusted(void)
{
    static uint8_t running[BUF_LEN], app[BUF_LEN];
    host_image_info_t info;
    char why[120];
    uint8_t trusted[32];
    const test_sign_key_t *keys[] = { s_rsa, s_ec256, s_ec192 };

    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        CHECK(keys[k] != NULL);
        const size_t app_len = build_image(app, sizeof(app), "1.0.0", 3000, 1);
        const size_t len = test_sign_image(keys[k], app, app_len, running, sizeof(running));
        CHECK(len > 0);
        CHECK_EQ(host_image_verify(running, len, HOST_IMAGE_CHIP_ESP32, &info, why, sizeof(why)), HOST_IMAGE_OK);
        CHECK(host_sig_image_key_digest(running, len, info.image_len, trusted));
        CHECK_OK(sign_app(keys[k], 9000, 5));
        CHECK_EQ(host_sig_verify(s_signed.data, s_signed.len, s_signed.image_len, trusted, why, sizeof(why)),
                 HOST_SIG_OK);
    }
}

/* The signer writes in place too, and refuses a buffer too small. */
static void
test_sig_signer_in_place_and_cap(void)
{
    static uint8_t buf[BUF_LEN];
    host_image_info_t info;
    char why[120];
    uint8_t trusted[32];

    const size_t app_len = build_image(buf, sizeof(buf), "1.0.0", 3000, 1);
    CHECK_EQ(test_sign_size(app_len), 8192);
    CHECK_EQ(test_sign_image(s_ec256, buf, app_len, buf, 8191), 0);
    const size_t len = test_sign_image(s_ec256, buf, app_len, buf, sizeof(buf));
    CHECK_EQ(len, 8192);
    CHECK_EQ(host_image_verify(buf, len, HOST_IMAGE_CHIP_ESP32, &info, why, sizeof(why)), HOST_IMAGE_OK);
    test_sign_key_digest(s_ec256, trusted);
    CHECK_EQ(host_sig_verify(buf, len, info.image_len, trusted, why, sizeof(why)), HOST_SIG_OK);
    CHECK(test_sign_key_new("rsa1024") == NULL);
    CHECK(test_sign_key_new(NULL) == NULL);
}

/* --- key digests ------------------------------------------------------------ */

/* The digest a running image trusts is the signer's, SHA-256 of bytes 36..811
 * (RSA) or 36..100 (ECDSA) of block 0. */
static void
check_key_digest(const test_sign_key_t *key, size_t key_len)
{
    uint8_t from_image[32], from_block[32], expected[32];

    CHECK_OK(sign_app(key, 5000, 21));
    CHECK(host_sig_image_key_digest(s_signed.data, s_signed.len, s_signed.image_len, from_image));
    CHECK(memcmp(from_image, s_signed.trusted, 32) == 0);
    CHECK(host_sig_block_key_digest(block0(), from_block));
    CHECK(memcmp(from_block, s_signed.trusted, 32) == 0);
    ble_ota_sha256(block0() + B_KEY, key_len, expected);
    CHECK(memcmp(expected, s_signed.trusted, 32) == 0);
}

static void
test_sig_key_digest_is_signers(void)
{
    CHECK_OK(check_key_digest(s_rsa, 776));
    CHECK_OK(check_key_digest(s_ec256, 65));
    CHECK_OK(check_key_digest(s_ec192, 65));
}

static void
test_sig_key_digest_none(void)
{
    static uint8_t app[BUF_LEN];
    uint8_t digest[32] = { 0 };
    static const uint8_t zero[32];

    const size_t app_len = build_image(app, sizeof(app), "1.0.0", 3000, 1);
    memset(app + app_len, 0xFF, sizeof(app) - app_len);
    CHECK(!host_sig_image_key_digest(app, app_len, (uint32_t)app_len, digest));
    CHECK(!host_sig_image_key_digest(app, sizeof(app), (uint32_t)app_len, digest));
    CHECK(!host_sig_block_key_digest(app + 4096, digest));
    CHECK(!host_sig_image_key_digest(NULL, 0, 0, digest));
    CHECK(memcmp(digest, zero, 32) == 0);
}

/* --- refused images --------------------------------------------------------- */

static void
test_sig_unsigned_is_none(void)
{
    static uint8_t app[BUF_LEN];
    char why[120];
    uint8_t trusted[32];

    test_sign_key_digest(s_rsa, trusted);
    const size_t app_len = build_image(app, sizeof(app), "1.0.0", 3000, 1);
    CHECK_EQ(host_sig_verify(app, app_len, (uint32_t)app_len, trusted, why, sizeof(why)), HOST_SIG_NONE);
    CHECK(strstr(why, "no signature block") != NULL);
    /* Erased flash (0xFF) or zeros where the sector would be. */
    memset(app + app_len, 0xFF, sizeof(app) - app_len);
    CHECK_EQ(host_sig_verify(app, sizeof(app), (uint32_t)app_len, trusted, why, sizeof(why)), HOST_SIG_NONE);
    memset(app + app_len, 0x00, sizeof(app) - app_len);
    CHECK_EQ(host_sig_verify(app, sizeof(app), (uint32_t)app_len, trusted, why, sizeof(why)), HOST_SIG_NONE);
    CHECK(strstr(why, "no signature block") != NULL);
}

static void
check_untrusted(const test_sign_key_t *signer, const test_sign_key_t *trusted_key)
{
    uint8_t trusted[32];
    char why[120];

    CHECK(trusted_key != NULL);
    CHECK_OK(sign_app(signer, 5000, 31));
    test_sign_key_digest(trusted_key, trusted);
    CHECK_EQ(host_sig_verify(s_signed.data, s_signed.len, s_signed.image_len, trusted, why, sizeof(why)),
             HOST_SIG_UNTRUSTED);
    CHECK(strstr(why, "signed with another key") != NULL);
}

static void
test_sig_other_key_is_untrusted(void)
{
    char why[120];

    CHECK_OK(check_untrusted(s_rsa_other, s_rsa));
    CHECK_OK(check_untrusted(s_ec256_other, s_ec256));
    CHECK_OK(check_untrusted(s_rsa, s_ec256));
    CHECK_OK(check_untrusted(s_ec256, s_rsa));
    CHECK_OK(check_untrusted(s_ec192, s_ec256));
    /* No trusted key at all. */
    CHECK_OK(sign_app(s_ec256, 5000, 31));
    CHECK_EQ(host_sig_verify(s_signed.data, s_signed.len, s_signed.image_len, NULL, why, sizeof(why)),
             HOST_SIG_UNTRUSTED);
}

/* Every key byte is part of the digest: a block with its key changed (and
 * the CRC fixed) is another key, even where verification ignores the bytes
 * (rinv, M', the P-192 point's zero padding). */
static void
test_sig_changed_key_is_untrusted(void)
{
    static const size_t rsa_offsets[] = { B_KEY, B_RSA_E, B_RSA_RINV + 7, B_RSA_SIG - 1 };
    char why[120];

    CHECK_OK(sign_app(s_rsa, 5000, 41));
    for (size_t i = 0; i < sizeof(rsa_offsets) / sizeof(rsa_offsets[0]); i++) {
        block0()[rsa_offsets[i]] ^= 0x01;
        fix_crc(block0());
        CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_UNTRUSTED);
        block0()[rsa_offsets[i]] ^= 0x01;
        fix_crc(block0());
        CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_OK);
    }
    CHECK_OK(sign_app(s_ec192, 5000, 42));
    block0()[B_EC_SIG - 1] ^= 0x01;
    fix_crc(block0());
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_UNTRUSTED);
}

/* A valid block of a scheme the device does not know has no trusted key. */
static void
test_sig_unknown_scheme_is_untrusted(void)
{
    uint8_t digest[32];
    char why[120];

    CHECK_OK(sign_app(s_ec256, 5000, 43));
    block0()[B_VERSION] = 0x04;
    fix_crc(block0());
    CHECK(!host_sig_block_key_digest(block0(), digest));
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_UNTRUSTED);
    CHECK(strstr(why, "unknown scheme") != NULL);

    block0()[B_VERSION] = 0x03;
    block0()[B_SHA_VER] = 0x01; /* SHA-384 (P-384): another layout */
    fix_crc(block0());
    CHECK(!host_sig_block_key_digest(block0(), digest));
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_UNTRUSTED);

    block0()[B_SHA_VER] = 0x00;
    block0()[B_EC_CURVE] = 3;
    fix_crc(block0());
    CHECK(!host_sig_block_key_digest(block0(), digest));
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_UNTRUSTED);
}

/* One byte of what is signed changed: a segment byte, the appended hash,
 * the padding before the sector. */
static void
check_image_byte_changed(const test_sign_key_t *key)
{
    char why[120];

    CHECK_OK(sign_app(key, 5000, 51));
    const size_t offsets[] = {
        HOST_IMAGE_HEADER_LEN + HOST_IMAGE_SEG_HEADER_LEN + 100, /* segment 0 data */
        s_signed.image_len - 1,                                  /* appended hash */
        s_signed.image_len + 5,                                  /* padding */
        s_signed.sector - 1,                                     /* last padding byte */
    };
    CHECK(offsets[2] < s_signed.sector);
    for (size_t i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
        s_signed.data[offsets[i]] ^= 0x20;
        CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_BAD);
        CHECK(strstr(why, "digest does not match") != NULL);
        s_signed.data[offsets[i]] ^= 0x20;
    }
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_OK);
}

static void
test_sig_image_byte_changed_is_bad(void)
{
    CHECK_OK(check_image_byte_changed(s_rsa));
    CHECK_OK(check_image_byte_changed(s_ec256));
}

/* The block's digest changed to the changed image's, CRC fixed: the digest
 * matches, the signature does not. And the stored digest alone changed. */
static void
check_stored_digest_changed(const test_sign_key_t *key)
{
    char why[120];

    CHECK_OK(sign_app(key, 5000, 61));
    block0()[B_DIGEST + 9] ^= 0x01;
    fix_crc(block0());
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_BAD);
    CHECK(strstr(why, "digest does not match") != NULL);
    block0()[B_DIGEST + 9] ^= 0x01;

    s_signed.data[HOST_IMAGE_HEADER_LEN + HOST_IMAGE_SEG_HEADER_LEN + 100] ^= 0x20;
    ble_ota_sha256(s_signed.data, s_signed.sector, block0() + B_DIGEST);
    fix_crc(block0());
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_BAD);
    CHECK(strstr(why, "signature does not verify") != NULL);
}

static void
test_sig_stored_digest_changed_is_bad(void)
{
    CHECK_OK(check_stored_digest_changed(s_rsa));
    CHECK_OK(check_stored_digest_changed(s_ec256));
    CHECK_OK(check_stored_digest_changed(s_ec192));
}

static void
check_signature_byte_changed(const test_sign_key_t *key, size_t offset)
{
    char why[120];

    CHECK_OK(sign_app(key, 5000, 71));
    block0()[offset] ^= 0x01;
    fix_crc(block0());
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_BAD);
    CHECK(strstr(why, "signature does not verify") != NULL);
}

static void
test_sig_signature_byte_changed_is_bad(void)
{
    CHECK_OK(check_signature_byte_changed(s_rsa, B_RSA_SIG));
    CHECK_OK(check_signature_byte_changed(s_rsa, B_RSA_SIG + 200));
    CHECK_OK(check_signature_byte_changed(s_rsa, B_RSA_SIG + 383));
    CHECK_OK(check_signature_byte_changed(s_ec256, B_EC_SIG));      /* r */
    CHECK_OK(check_signature_byte_changed(s_ec256, B_EC_SIG + 63)); /* s */
    CHECK_OK(check_signature_byte_changed(s_ec192, B_EC_SIG + 30)); /* s */
}

/* Degenerate signatures: r zero, r and s all 0xFF (above the curve order),
 * an RSA signature above n or zero. */
static void
test_sig_degenerate_signature_is_bad(void)
{
    char why[120];

    CHECK_OK(sign_app(s_ec256, 5000, 72));
    memset(block0() + B_EC_SIG, 0, 32);
    fix_crc(block0());
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_BAD);
    memset(block0() + B_EC_SIG, 0xFF, 64);
    fix_crc(block0());
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_BAD);

    CHECK_OK(sign_app(s_rsa, 5000, 73));
    memset(block0() + B_RSA_SIG, 0xFF, 384); /* larger than n */
    fix_crc(block0());
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_BAD);
    memset(block0() + B_RSA_SIG, 0x00, 384);
    fix_crc(block0());
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_BAD);
}

/* A wrong CRC or magic makes block 0 invalid; the bytes after the CRC and
 * the rest of the sector are not checked (as on the ESP32). */
static void
test_sig_block_crc_and_magic(void)
{
    char why[120];

    CHECK_OK(sign_app(s_rsa, 5000, 81));
    block0()[B_CRC] ^= 0x01;
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_NONE);
    CHECK(strstr(why, "no signature block") != NULL);
    block0()[B_CRC] ^= 0x01;
    block0()[B_RSA_SIG + 5] ^= 0x01; /* CRC not fixed */
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_NONE);
    block0()[B_RSA_SIG + 5] ^= 0x01;
    block0()[0] = 0xE9;
    fix_crc(block0());
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_NONE);
    block0()[0] = 0xE7;
    fix_crc(block0());
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_OK);

    block0()[B_CRC + 4 + 3] = 0x55;
    block0()[HOST_SIG_BLOCK_LEN + 17] = 0x00;
    s_signed.data[s_signed.len - 1] = 0x00;
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_OK);
}

/* The data ends anywhere before the sector's end: no signature. */
static void
test_sig_truncated_is_none(void)
{
    char why[120];

    CHECK_OK(sign_app(s_ec256, 5000, 91));
    for (size_t len = 0; len < s_signed.len; len++) {
        if (host_sig_verify(s_signed.data, len, s_signed.image_len, s_signed.trusted, why, sizeof(why)) !=
            HOST_SIG_NONE) {
            test_failf(__FILE__, __LINE__, "truncated to %zu of %zu bytes: %s", len, s_signed.len, why);
            return;
        }
    }
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_OK);
    CHECK_EQ(host_sig_verify(NULL, 0, 0, s_signed.trusted, why, sizeof(why)), HOST_SIG_NONE);
    /* An image_len whose sector would end past 4 GiB, or past the data. */
    CHECK_EQ(host_sig_verify(s_signed.data, s_signed.len, 0xFFFFFFFFu, s_signed.trusted, why, sizeof(why)),
             HOST_SIG_NONE);
    CHECK_EQ(host_sig_verify(s_signed.data, s_signed.len, (uint32_t)s_signed.len, s_signed.trusted, why, sizeof(why)),
             HOST_SIG_NONE);
    /* why may be NULL or short. */
    CHECK_EQ(host_sig_verify(s_signed.data, 5, s_signed.image_len, s_signed.trusted, NULL, 0), HOST_SIG_NONE);
    CHECK_EQ(host_sig_verify(s_signed.data, 5, s_signed.image_len, s_signed.trusted, why, 4), HOST_SIG_NONE);
    CHECK_EQ(strlen(why), 3);
}

/* Only block 0 counts: a good block 1 behind a garbage block 0 is no
 * signature. */
static void
test_sig_only_block0_counts(void)
{
    char why[120];

    CHECK_OK(sign_app(s_rsa, 5000, 101));
    memcpy(block0() + HOST_SIG_BLOCK_LEN, block0(), HOST_SIG_BLOCK_LEN);
    uint32_t x = 0x12345678u;
    for (size_t i = 0; i < HOST_SIG_BLOCK_LEN; i++) {
        x = x * 1103515245u + 12345u;
        block0()[i] = (uint8_t)(x >> 16);
    }
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_NONE);
    memset(block0(), 0xFF, HOST_SIG_BLOCK_LEN);
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_NONE);
    /* The same with a magic byte but no valid CRC. */
    block0()[0] = 0xE7;
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_NONE);
    uint8_t digest[32];
    CHECK(!host_sig_image_key_digest(s_signed.data, s_signed.len, s_signed.image_len, digest));
}

/* The signature sector of another image (same key) appended to this one:
 * its digest is the other image's. */
static void
test_sig_sector_of_other_image_is_bad(void)
{
    static uint8_t sector[HOST_SIG_SECTOR_LEN];
    char why[120];

    CHECK_OK(sign_app(s_ec256, 5000, 111));
    memcpy(sector, block0(), sizeof(sector));
    CHECK_OK(sign_app(s_ec256, 5000, 112));
    memcpy(block0(), sector, sizeof(sector));
    CHECK_EQ(verify_signed(why, sizeof(why)), HOST_SIG_BAD);
}

static void
test_sig_err_names(void)
{
    CHECK(strcmp(host_sig_err_name(HOST_SIG_OK), "ok") == 0);
    CHECK(strcmp(host_sig_err_name(HOST_SIG_NONE), "unsigned") == 0);
    CHECK(strcmp(host_sig_err_name(HOST_SIG_UNTRUSTED), "untrusted key") == 0);
    CHECK(strcmp(host_sig_err_name(HOST_SIG_BAD), "bad signature") == 0);
    CHECK(strcmp(host_sig_err_name((host_sig_err_t)99), "invalid") == 0);
    CHECK_EQ(host_sig_sector_offset(0), 0);
    CHECK_EQ(host_sig_sector_offset(1), 4096);
    CHECK_EQ(host_sig_sector_offset(4096), 4096);
    CHECK_EQ(host_sig_sector_offset(0xFFFFFFFFu), 0x100000000ll);
}

static void
test_sig_keys_generated(void)
{
    CHECK(s_rsa != NULL);
    CHECK(s_rsa_other != NULL);
    CHECK(s_ec256 != NULL);
    CHECK(s_ec256_other != NULL);
    CHECK(s_ec192 != NULL);
}

void
test_signature_run_all(void)
{
    s_rsa = test_sign_key_new("rsa3072");
    s_rsa_other = test_sign_key_new("rsa3072");
    s_ec256 = test_sign_key_new("ecdsa256");
    s_ec256_other = test_sign_key_new("ecdsa256");
    s_ec192 = test_sign_key_new("ecdsa192");

    RUN(test_sig_keys_generated);
    if (s_rsa != NULL && s_rsa_other != NULL && s_ec256 != NULL && s_ec256_other != NULL && s_ec192 != NULL) {
        RUN(test_sig_rsa_signed_verifies);
        RUN(test_sig_ecdsa256_signed_verifies);
        RUN(test_sig_ecdsa192_signed_verifies);
        RUN(test_sig_aligned_image_not_padded);
        RUN(test_sig_running_image_key_trusted);
        RUN(test_sig_signer_in_place_and_cap);
        RUN(test_sig_key_digest_is_signers);
        RUN(test_sig_key_digest_none);
        RUN(test_sig_unsigned_is_none);
        RUN(test_sig_other_key_is_untrusted);
        RUN(test_sig_changed_key_is_untrusted);
        RUN(test_sig_unknown_scheme_is_untrusted);
        RUN(test_sig_image_byte_changed_is_bad);
        RUN(test_sig_stored_digest_changed_is_bad);
        RUN(test_sig_signature_byte_changed_is_bad);
        RUN(test_sig_degenerate_signature_is_bad);
        RUN(test_sig_block_crc_and_magic);
        RUN(test_sig_truncated_is_none);
        RUN(test_sig_only_block0_counts);
        RUN(test_sig_sector_of_other_image_is_bad);
        RUN(test_sig_err_names);
    }

    test_sign_key_free(s_rsa);
    test_sign_key_free(s_rsa_other);
    test_sign_key_free(s_ec256);
    test_sign_key_free(s_ec256_other);
    test_sign_key_free(s_ec192);
    s_rsa = s_rsa_other = s_ec256 = s_ec256_other = s_ec192 = NULL;
}
