/*
 * A test-only image signer: fresh keys and signed files in the format
 * `espsecure.py sign_data --version 2` writes (host_signature.h), for the
 * unit tests, the fuzzer and the smoke test. Never for real keys: the keys
 * live in memory only and are generated per run.
 */
#ifndef TEST_SIGN_H
#define TEST_SIGN_H

#include <stddef.h>
#include <stdint.h>

typedef struct test_sign_key test_sign_key_t; /* opaque; wraps an EVP_PKEY */

/* Generates a fresh key of scheme "rsa3072", "ecdsa256" or "ecdsa192";
 * NULL for another scheme or when OpenSSL fails. RSA-3072 generation can
 * take a second: generate a key once per run and reuse it. */
test_sign_key_t *test_sign_key_new(const char *scheme);

/* Frees key (NULL is fine). */
void test_sign_key_free(test_sign_key_t *key);

/* Writes image (len bytes) padded with 0xFF to the next 4096-byte boundary
 * (no padding when aligned), then a 4096-byte signature sector holding one
 * signature block by key and 0xFF, into out (which may be image itself).
 * Returns the total length, 0 when cap is too small or signing fails. */
size_t test_sign_image(const test_sign_key_t *key, const uint8_t *image, size_t len, uint8_t *out, size_t cap);

/* Size of what test_sign_image writes for an image of len bytes. */
size_t test_sign_size(size_t len);

/* The key digest a device running an image signed by key trusts
 * (host_sig_block_key_digest of its signature block). */
void test_sign_key_digest(const test_sign_key_t *key, uint8_t digest[32]);

/* The signature tests (test_signature.c), run by test-core. */
void test_signature_run_all(void);

#endif /* TEST_SIGN_H */
