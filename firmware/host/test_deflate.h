/*
 * The client's side of protocol v2's DEFLATE mode (docs/PROTOCOL.md,
 * "Compression"), in C: the stream the unit tests and the fuzzer send. The
 * TypeScript client has the product's encoder (lib/protocol/deflate-chunks.ts);
 * this one follows the same text with the same zlib settings.
 */
#ifndef TEST_DEFLATE_H
#define TEST_DEFLATE_H

#include <stddef.h>
#include <stdint.h>

/* The image (len bytes) as a DEFLATE stream from chunk `first` on: per
 * BLE_OTA_DEFLATE_CHUNK bytes of image a u16 length, then raw deflate with
 * the previous chunk as dictionary, or the chunk itself when deflate does
 * not make it smaller. Returns the stream's length written to out, 0 when
 * cap is too small or zlib fails. */
size_t test_deflate_chunks(const uint8_t *img, size_t len, size_t first, uint8_t *out, size_t cap);

#endif /* TEST_DEFLATE_H */
