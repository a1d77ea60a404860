/*
 * The lengths of a delta patch's instructions (docs/DELTA.md,
 * *Instructions*), for the host's patch writers (host_patch.c and
 * test_delta.c's): an instruction must end inside its block, so a writer
 * counts its bytes before it writes them.
 */
#ifndef PATCH_LENGTHS_H
#define PATCH_LENGTHS_H

#include <stdint.h>

/* Bytes of the unsigned LEB128 varint of v: 7 bits a byte. */
static inline uint32_t
patch_varint_len(uint32_t v)
{
    uint32_t n = 1;
    while (v >= 0x80u) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Bytes of a COPY, ADD or INSERT of n bytes before its data: the opcode
 * with n in it (1 to 63), else the opcode and the varint of n - 64. */
static inline uint32_t
patch_len_header(uint32_t n)
{
    return n <= 63 ? 1 : 1 + patch_varint_len(n - 64);
}

#endif /* PATCH_LENGTHS_H */
