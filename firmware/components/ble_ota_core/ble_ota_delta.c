/*
 * The delta patch applier (docs/DELTA.md, ble_ota_delta.h). A byte-driven
 * state machine: patch bytes may arrive in any pieces, instructions act as
 * soon as their lengths are known, and every bound is checked before the
 * old image is read or a byte is emitted. lib/delta/apply.ts is the same in
 * TypeScript and checks in the same order: the tests hold both to the same
 * verdict on damaged patches.
 */
#include "ble_ota_delta.h"

#include <string.h>

#include "ble_ota_le.h"

/* The whole state is the struct: a bound on the RAM it may ever take. */
_Static_assert(sizeof(ble_ota_delta_t) <= 512, "the applier's state stays within 512 bytes");

enum {
    PHASE_HEADER = 0,
    PHASE_CURSOR,
    PHASE_OPCODE,
    PHASE_LENGTH,
    PHASE_SEEK,
    PHASE_DATA,
    PHASE_PAD,
};

static const uint8_t k_magic[4] = { 'B', 'O', 'D', 'P' };

static ble_ota_delta_err_t
fail(ble_ota_delta_t *d, ble_ota_delta_err_t err, uint32_t offset)
{
    d->err = (uint8_t)err;
    d->err_offset = offset;
    return err;
}

void
ble_ota_delta_init(ble_ota_delta_t *d, const ble_ota_delta_config_t *config)
{
    memset(d, 0, sizeof(*d));
    d->config = *config;
    d->phase = PHASE_HEADER;
}

const ble_ota_delta_header_t *
ble_ota_delta_header(const ble_ota_delta_t *d)
{
    return d->header_known ? &d->header : NULL;
}

uint32_t
ble_ota_delta_error_offset(const ble_ota_delta_t *d)
{
    return d->err_offset;
}

const char *
ble_ota_delta_err_name(ble_ota_delta_err_t err)
{
    switch (err) {
    case BLE_OTA_DELTA_OK:
        return "OK";
    case BLE_OTA_DELTA_ERR_HEADER:
        return "HEADER";
    case BLE_OTA_DELTA_ERR_BASE:
        return "BASE";
    case BLE_OTA_DELTA_ERR_TOO_LARGE:
        return "TOO_LARGE";
    case BLE_OTA_DELTA_ERR_OP:
        return "OP";
    case BLE_OTA_DELTA_ERR_BLOCK:
        return "BLOCK";
    case BLE_OTA_DELTA_ERR_OLD_RANGE:
        return "OLD_RANGE";
    case BLE_OTA_DELTA_ERR_NEW_RANGE:
        return "NEW_RANGE";
    case BLE_OTA_DELTA_ERR_LENGTH:
        return "LENGTH";
    case BLE_OTA_DELTA_ERR_READ:
        return "READ";
    case BLE_OTA_DELTA_ERR_EMIT:
        return "EMIT";
    }
    return "?";
}

/* The end of the block that holds the last byte taken (the patch's end in
 * its last block). From what is left of the patch after the block's start,
 * so that in a last block past 2^32 - 4096 the end does not wrap to 0. */
static uint32_t
block_end(const ble_ota_delta_t *d)
{
    const uint32_t last = d->in_pos - 1u;
    const uint32_t start = last - last % BLE_OTA_DELTA_BLOCK;
    const uint32_t left = d->header.patch_size - start;
    return start + (left < BLE_OTA_DELTA_BLOCK ? left : BLE_OTA_DELTA_BLOCK);
}

/* Emits the bytes at new position `at` that were not emitted before. */
static ble_ota_delta_err_t
out(ble_ota_delta_t *d, uint32_t at, const uint8_t *bytes, uint32_t len)
{
    const uint32_t skip = d->emitted > at ? d->emitted - at : 0;

    if (skip >= len) {
        return BLE_OTA_DELTA_OK;
    }
    if (!d->config.emit(d->config.ctx, bytes + skip, len - skip)) {
        return fail(d, BLE_OTA_DELTA_ERR_EMIT, d->in_pos);
    }
    d->emitted = at + len;
    return BLE_OTA_DELTA_OK;
}

/* Reads len old bytes at old_pos into piece, unless all of them would be skipped. */
static ble_ota_delta_err_t
read_piece(ble_ota_delta_t *d, uint32_t len, bool *needed)
{
    *needed = d->new_pos + len > d->emitted;
    if (*needed && !d->config.read_old(d->config.ctx, d->old_pos, d->piece, len)) {
        return fail(d, BLE_OTA_DELTA_ERR_READ, d->in_pos);
    }
    return BLE_OTA_DELTA_OK;
}

static ble_ota_delta_err_t
header_done(ble_ota_delta_t *d)
{
    const uint8_t *g = d->gather;
    ble_ota_delta_header_t h;

    if (memcmp(g, k_magic, sizeof(k_magic)) != 0) {
        return fail(d, BLE_OTA_DELTA_ERR_HEADER, BLE_OTA_DELTA_OFF_MAGIC);
    }
    if (g[BLE_OTA_DELTA_OFF_VERSION] != BLE_OTA_DELTA_VERSION) {
        return fail(d, BLE_OTA_DELTA_ERR_HEADER, BLE_OTA_DELTA_OFF_VERSION);
    }
    if (g[BLE_OTA_DELTA_OFF_BLOCK_SHIFT] != BLE_OTA_DELTA_BLOCK_SHIFT) {
        return fail(d, BLE_OTA_DELTA_ERR_HEADER, BLE_OTA_DELTA_OFF_BLOCK_SHIFT);
    }
    if (ble_ota_get_le16(g + BLE_OTA_DELTA_OFF_RESERVED) != 0) {
        return fail(d, BLE_OTA_DELTA_ERR_HEADER, BLE_OTA_DELTA_OFF_RESERVED);
    }
    h.old_size = ble_ota_get_le32(g + BLE_OTA_DELTA_OFF_OLD_SIZE);
    memcpy(h.old_sha256, g + BLE_OTA_DELTA_OFF_OLD_SHA256, sizeof(h.old_sha256));
    h.new_size = ble_ota_get_le32(g + BLE_OTA_DELTA_OFF_NEW_SIZE);
    memcpy(h.new_sha256, g + BLE_OTA_DELTA_OFF_NEW_SHA256, sizeof(h.new_sha256));
    h.patch_size = ble_ota_get_le32(g + BLE_OTA_DELTA_OFF_PATCH_SIZE);
    if (h.patch_size < BLE_OTA_DELTA_HEADER_LEN) {
        return fail(d, BLE_OTA_DELTA_ERR_HEADER, BLE_OTA_DELTA_OFF_PATCH_SIZE);
    }
    if (d->header_known) {
        /* Block 0 sent again after a rewind: the same patch, or nothing. */
        if (memcmp(&h, &d->header, sizeof(h)) != 0) {
            return fail(d, BLE_OTA_DELTA_ERR_HEADER, 0);
        }
        d->phase = PHASE_OPCODE;
        return BLE_OTA_DELTA_OK;
    }
    if (h.old_size > d->config.old_limit) {
        return fail(d, BLE_OTA_DELTA_ERR_BASE, 0);
    }
    if (h.new_size > d->config.new_limit) {
        return fail(d, BLE_OTA_DELTA_ERR_TOO_LARGE, 0);
    }
    if (d->config.check_header != NULL && !d->config.check_header(d->config.ctx, &h)) {
        return fail(d, BLE_OTA_DELTA_ERR_BASE, 0);
    }
    d->header = h;
    d->header_known = true;
    d->phase = PHASE_OPCODE;
    return BLE_OTA_DELTA_OK;
}

static ble_ota_delta_err_t
copy(ble_ota_delta_t *d, uint32_t n)
{
    while (n > 0) {
        const uint32_t t = n < BLE_OTA_DELTA_PIECE ? n : BLE_OTA_DELTA_PIECE;
        bool needed;
        if (read_piece(d, t, &needed) != BLE_OTA_DELTA_OK) {
            return (ble_ota_delta_err_t)d->err;
        }
        if (needed && out(d, d->new_pos, d->piece, t) != BLE_OTA_DELTA_OK) {
            return (ble_ota_delta_err_t)d->err;
        }
        d->new_pos += t;
        d->old_pos += t;
        n -= t;
    }
    return BLE_OTA_DELTA_OK;
}

/* An instruction's length is known: check it, then COPY at once, or wait for ADD's or INSERT's data. */
static ble_ota_delta_err_t
length_known(ble_ota_delta_t *d, uint32_t n)
{
    const uint32_t at = d->in_pos - 1u;

    if (d->op != BLE_OTA_DELTA_OP_COPY && (uint64_t)d->in_pos + n > block_end(d)) {
        return fail(d, BLE_OTA_DELTA_ERR_BLOCK, at);
    }
    if ((uint64_t)d->new_pos + n > d->header.new_size) {
        return fail(d, BLE_OTA_DELTA_ERR_NEW_RANGE, at);
    }
    if (d->op != BLE_OTA_DELTA_OP_INSERT && (uint64_t)d->old_pos + n > d->header.old_size) {
        return fail(d, BLE_OTA_DELTA_ERR_OLD_RANGE, at);
    }
    if (d->op == BLE_OTA_DELTA_OP_COPY) {
        d->phase = PHASE_OPCODE;
        return copy(d, n);
    }
    d->remaining = n;
    d->phase = PHASE_DATA;
    return BLE_OTA_DELTA_OK;
}

static ble_ota_delta_err_t
opcode(ble_ota_delta_t *d, uint8_t b)
{
    if (b == BLE_OTA_DELTA_OP_END_BLOCK) {
        d->phase = PHASE_PAD;
        return BLE_OTA_DELTA_OK;
    }
    if (b > BLE_OTA_DELTA_OP_SEEK) {
        return fail(d, BLE_OTA_DELTA_ERR_OP, d->in_pos - 1u);
    }
    d->op = b == BLE_OTA_DELTA_OP_SEEK ? BLE_OTA_DELTA_OP_SEEK : (uint8_t)(b & 0xC0u);
    d->var_value = 0;
    d->var_bytes = 0;
    if (b == BLE_OTA_DELTA_OP_SEEK) {
        d->phase = PHASE_SEEK;
        return BLE_OTA_DELTA_OK;
    }
    if ((b & 0x3Fu) == 0) {
        d->phase = PHASE_LENGTH;
        return BLE_OTA_DELTA_OK;
    }
    return length_known(d, b & 0x3Fu);
}

static ble_ota_delta_err_t
var_byte(ble_ota_delta_t *d, uint8_t b)
{
    const uint32_t at = d->in_pos - 1u;

    if (d->var_bytes == 4 && b > 0x0Fu) {
        return fail(d, BLE_OTA_DELTA_ERR_OP, at);
    }
    d->var_value |= (uint32_t)(b & 0x7Fu) << (7u * d->var_bytes);
    d->var_bytes++;
    if ((b & 0x80u) != 0) {
        return BLE_OTA_DELTA_OK;
    }
    if (d->phase == PHASE_SEEK) {
        const uint32_t v = d->var_value;
        /* zigzag: even values are 0, 1, 2, ..., odd ones -1, -2, ... */
        const int64_t delta = (v & 1u) != 0 ? -(int64_t)(v >> 1) - 1 : (int64_t)(v >> 1);
        const int64_t to = (int64_t)d->old_pos + delta;
        if (delta == 0) {
            return fail(d, BLE_OTA_DELTA_ERR_OP, at);
        }
        if (to < 0 || to > (int64_t)d->header.old_size) {
            return fail(d, BLE_OTA_DELTA_ERR_OLD_RANGE, at);
        }
        d->old_pos = (uint32_t)to;
        d->phase = PHASE_OPCODE;
        return BLE_OTA_DELTA_OK;
    }
    if (d->var_value > UINT32_MAX - 64u) {
        return fail(d, BLE_OTA_DELTA_ERR_OP, at);
    }
    return length_known(d, 64u + d->var_value);
}

/* ADD or INSERT data: n bytes, all within the instruction. */
static ble_ota_delta_err_t
data(ble_ota_delta_t *d, const uint8_t *bytes, uint32_t n)
{
    if (d->op == BLE_OTA_DELTA_OP_INSERT) {
        if (out(d, d->new_pos, bytes, n) != BLE_OTA_DELTA_OK) {
            return (ble_ota_delta_err_t)d->err;
        }
        d->new_pos += n;
        return BLE_OTA_DELTA_OK;
    }
    while (n > 0) {
        const uint32_t t = n < BLE_OTA_DELTA_PIECE ? n : BLE_OTA_DELTA_PIECE;
        bool needed;
        if (read_piece(d, t, &needed) != BLE_OTA_DELTA_OK) {
            return (ble_ota_delta_err_t)d->err;
        }
        if (needed) {
            for (uint32_t k = 0; k < t; k++) {
                d->piece[k] = (uint8_t)(d->piece[k] + bytes[k]);
            }
            if (out(d, d->new_pos, d->piece, t) != BLE_OTA_DELTA_OK) {
                return (ble_ota_delta_err_t)d->err;
            }
        }
        d->new_pos += t;
        d->old_pos += t;
        bytes += t;
        n -= t;
    }
    return BLE_OTA_DELTA_OK;
}

ble_ota_delta_err_t
ble_ota_delta_feed(ble_ota_delta_t *d, const uint8_t *bytes, size_t len)
{
    size_t i = 0;

    if (d->err != BLE_OTA_DELTA_OK) {
        return (ble_ota_delta_err_t)d->err;
    }
    while (i < len) {
        if (d->header_known && d->in_pos >= d->header.patch_size) {
            return fail(d, BLE_OTA_DELTA_ERR_LENGTH, d->in_pos);
        }
        if (d->in_pos > 0 && d->in_pos % BLE_OTA_DELTA_BLOCK == 0 && d->phase != PHASE_CURSOR) {
            /* A new block: the last one ended between instructions, this one starts with its cursor. */
            if (d->phase != PHASE_OPCODE && d->phase != PHASE_PAD) {
                return fail(d, BLE_OTA_DELTA_ERR_BLOCK, d->in_pos);
            }
            d->phase = PHASE_CURSOR;
            d->fill = 0;
            d->block_new = d->new_pos;
            d->block_old = d->old_pos;
        }
        ble_ota_delta_err_t err = BLE_OTA_DELTA_OK;
        switch (d->phase) {
        case PHASE_HEADER:
        case PHASE_CURSOR: {
            const uint32_t want = d->phase == PHASE_HEADER ? BLE_OTA_DELTA_HEADER_LEN : BLE_OTA_DELTA_CURSOR_LEN;
            size_t n = want - d->fill;
            if (n > len - i) {
                n = len - i;
            }
            memcpy(d->gather + d->fill, bytes + i, n);
            d->fill += (uint32_t)n;
            d->in_pos += (uint32_t)n;
            i += n;
            if (d->fill < want) {
                break;
            }
            if (d->phase == PHASE_HEADER) {
                err = header_done(d);
            } else if (ble_ota_get_le32(d->gather) != d->new_pos || ble_ota_get_le32(d->gather + 4) != d->old_pos) {
                err = fail(d, BLE_OTA_DELTA_ERR_BLOCK, d->in_pos - BLE_OTA_DELTA_CURSOR_LEN);
            } else {
                d->phase = PHASE_OPCODE;
            }
            break;
        }
        case PHASE_OPCODE:
            d->in_pos++;
            err = opcode(d, bytes[i++]);
            break;
        case PHASE_LENGTH:
        case PHASE_SEEK:
            d->in_pos++;
            err = var_byte(d, bytes[i++]);
            break;
        case PHASE_DATA: {
            uint32_t n = d->remaining;
            if (n > len - i) {
                n = (uint32_t)(len - i);
            }
            err = data(d, bytes + i, n);
            i += n;
            d->in_pos += n;
            d->remaining -= n;
            if (d->remaining == 0) {
                d->phase = PHASE_OPCODE;
            }
            break;
        }
        case PHASE_PAD: {
            const uint32_t end = block_end(d);
            size_t n = end - d->in_pos;
            if (n > len - i) {
                n = len - i;
            }
            for (size_t k = 0; k < n; k++) {
                if (bytes[i + k] != 0) {
                    return fail(d, BLE_OTA_DELTA_ERR_BLOCK, d->in_pos + (uint32_t)k);
                }
            }
            i += n;
            d->in_pos += (uint32_t)n;
            break;
        }
        default:
            err = fail(d, BLE_OTA_DELTA_ERR_HEADER, d->in_pos);
            break;
        }
        if (err != BLE_OTA_DELTA_OK) {
            return err;
        }
    }
    return BLE_OTA_DELTA_OK;
}

ble_ota_delta_err_t
ble_ota_delta_finish(ble_ota_delta_t *d)
{
    if (d->err != BLE_OTA_DELTA_OK) {
        return (ble_ota_delta_err_t)d->err;
    }
    if (!d->header_known || d->phase == PHASE_HEADER || d->in_pos != d->header.patch_size ||
        (d->phase != PHASE_OPCODE && d->phase != PHASE_PAD) || d->new_pos != d->header.new_size) {
        return fail(d, BLE_OTA_DELTA_ERR_LENGTH, d->in_pos);
    }
    return BLE_OTA_DELTA_OK;
}

uint32_t
ble_ota_delta_rewind(ble_ota_delta_t *d)
{
    const uint32_t within = d->in_pos % BLE_OTA_DELTA_BLOCK;

    if (d->err != BLE_OTA_DELTA_OK || within == 0) {
        return d->in_pos;
    }
    d->in_pos -= within;
    if (d->in_pos == 0) {
        d->phase = PHASE_HEADER;
        d->fill = 0;
        d->new_pos = 0;
        d->old_pos = 0;
    } else {
        /* The next byte starts the block: the boundary check takes the cursor from there. */
        d->phase = PHASE_OPCODE;
        d->new_pos = d->block_new;
        d->old_pos = d->block_old;
    }
    return d->in_pos;
}
