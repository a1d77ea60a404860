/*
 * Signed app images on the host: the check esp_ota_end runs on a new image
 * when ESP-IDF is built with CONFIG_SECURE_SIGNED_APPS_NO_SECURE_BOOT and
 * CONFIG_SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT (Secure Boot v2 signature
 * format, RSA-3072-PSS or ECDSA P-256/P-192, no eFuses): the new image must
 * be signed with the key of the running app's signature block 0.
 *
 * Signed file layout (what `espsecure.py sign_data --version 2` writes):
 *   the app image, image_len bytes (host_image_verify's info.image_len);
 *   0xFF up to the next 4096-byte boundary, padded_end (none when aligned);
 *   a 4096-byte signature sector: up to 3 blocks of 1216 bytes, then 0xFF.
 * The image digest is SHA-256 of data[0 .. padded_end), padding included.
 *
 * Signature block (little-endian):
 *   0     magic 0xE7
 *   1     version: 2 RSA-PSS, 3 ECDSA
 *   2     ECDSA: SHA version (0 = SHA-256); RSA: 0
 *   3     0
 *   4     image digest, 32 bytes
 *   RSA:   36 n (384, LE), 420 e (u32), 424 rinv = 2^6144 mod n (384, LE),
 *          808 M' = -n^-1 mod 2^32 (u32), 812 RSA-PSS signature (384, LE)
 *   ECDSA: 36 curve id (1 P-192, 2 P-256), 37 X || Y (each 32 bytes LE;
 *          P-192: 24 each, zero-padded to 64), 101 r || s (same layout),
 *          then zeros
 *   1196  CRC-32 (zlib's) of bytes 0..1195
 *   1200  16 zero bytes
 * A block is valid when its magic and CRC are right. Its key digest, the
 * value a running app trusts, is SHA-256 of bytes 36..811 (RSA) or 36..100
 * (ECDSA).
 */
#ifndef HOST_SIGNATURE_H
#define HOST_SIGNATURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HOST_SIG_SECTOR_LEN 4096
#define HOST_SIG_BLOCK_LEN  1216
#define HOST_SIG_DIGEST_LEN 32

typedef enum {
    HOST_SIG_OK = 0,
    HOST_SIG_NONE,      /* no valid signature block 0 where the sector must be (or the data ends before it) */
    HOST_SIG_UNTRUSTED, /* block 0 is valid but its key is not the trusted one */
    HOST_SIG_BAD,       /* trusted key, but the digest or the signature does not verify */
} host_sig_err_t;

/* A short name of err ("ok", "unsigned", "untrusted key", "bad signature"). */
const char *host_sig_err_name(host_sig_err_t err);

/* Where the signature sector of an image of image_len bytes starts:
 * image_len rounded up to 4096. */
uint64_t host_sig_sector_offset(uint32_t image_len);

/* True when block has the magic byte and its CRC matches. */
bool host_sig_block_valid(const uint8_t block[HOST_SIG_BLOCK_LEN]);

/* SHA-256 of a valid block's key (RSA: bytes 36..811; ECDSA with SHA-256:
 * bytes 36..100), as ESP-IDF computes the trusted digest. False (digest
 * untouched) when the block is not valid or of an unknown version, SHA
 * version or curve. */
bool host_sig_block_key_digest(const uint8_t block[HOST_SIG_BLOCK_LEN], uint8_t digest[HOST_SIG_DIGEST_LEN]);

/* The key digest of block 0 of the signature sector of the image at
 * data[0..len), image_len from host_image_verify. False when the data ends
 * before the end of the sector or block 0 has no key (see above). This is
 * the digest a running image trusts. */
bool host_sig_image_key_digest(const uint8_t *data, size_t len, uint32_t image_len,
                               uint8_t digest[HOST_SIG_DIGEST_LEN]);

/* esp_ota_end's signature check of the image at data[0..len), image_len
 * from host_image_verify, against the trusted key digest (NULL trusts no
 * key). Only block 0 counts. In order: the whole sector must be inside the
 * data and block 0 valid (else NONE), its key digest must be trusted (else
 * UNTRUSTED), its stored digest must be the image's and its signature must
 * verify with its key (else BAD). why (if not NULL) gets a one-line reason. */
host_sig_err_t host_sig_verify(const uint8_t *data, size_t len, uint32_t image_len,
                               const uint8_t trusted[HOST_SIG_DIGEST_LEN], char *why, size_t why_len);

#endif /* HOST_SIGNATURE_H */
