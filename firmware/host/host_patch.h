/*
 * A client's delta patch (docs/DELTA.md), in C, for the tests and the
 * fuzzer: the simplest writer of the format, not a good differ. The old and
 * new images are compared at the same offsets: equal runs become COPY,
 * differing ones ADD, what the new image has beyond the old one INSERT
 * (lib/delta/diff.ts is the product's differ, which also follows code that
 * moved).
 */
#ifndef HOST_PATCH_H
#define HOST_PATCH_H

#include <stddef.h>
#include <stdint.h>

/* Writes the patch that rebuilds new_img from old into out; returns its
 * length, 0 when cap is too small. */
size_t host_patch_make(const uint8_t *old, size_t old_len, const uint8_t *new_img, size_t new_len, uint8_t *out,
                       size_t cap);

/* The same, with block 0 ending (END_BLOCK) once it rebuilt first_block_new
 * bytes (0: as full as it gets): a patch whose first chunk rebuilds little. */
size_t host_patch_make_split(const uint8_t *old, size_t old_len, const uint8_t *new_img, size_t new_len, uint8_t *out,
                             size_t cap, uint32_t first_block_new);

#endif /* HOST_PATCH_H */
