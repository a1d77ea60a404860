/*
 * A client's delta patch: see host_patch.h.
 */
#include "host_patch.h"

#include <string.h>

#include "ble_ota_delta.h"
#include "ble_ota_le.h"
#include "ble_ota_sha256.h"
#include "patch_lengths.h"

/* Equal bytes that end an ADD: fewer stay inside it (cheaper than a COPY). */
#define ADD_BREAK 8u

typedef struct {
    uint8_t *out;
    size_t cap;
    size_t pos;
    size_t block_end;
    uint32_t new_pos;
    uint32_t old_pos;
    int overflow;
} writer_t;

static void
put(writer_t *w, uint8_t b)
{
    if (w->pos >= w->cap) {
        w->overflow = 1;
        return;
    }
    w->out[w->pos++] = b;
}

/* Room for `need` bytes in this block, else END_BLOCK, zeros, and the next block's cursor. */
static void
room(writer_t *w, size_t need)
{
    if (w->block_end - w->pos >= need) {
        return;
    }
    if (w->pos < w->block_end) {
        put(w, BLE_OTA_DELTA_OP_END_BLOCK);
        while (w->pos < w->block_end && !w->overflow) {
            put(w, 0);
        }
    }
    uint8_t cursor[BLE_OTA_DELTA_CURSOR_LEN];
    ble_ota_put_le32(cursor, w->new_pos);
    ble_ota_put_le32(cursor + 4, w->old_pos);
    for (size_t i = 0; i < sizeof(cursor); i++) {
        put(w, cursor[i]);
    }
    w->block_end += BLE_OTA_DELTA_BLOCK;
}

static void
len_op(writer_t *w, uint8_t op, uint32_t n)
{
    if (n <= 63) {
        put(w, (uint8_t)(op | n));
        return;
    }
    put(w, op);
    uint32_t v = n - 64;
    while (v >= 0x80u) {
        put(w, (uint8_t)((v & 0x7Fu) | 0x80u));
        v >>= 7;
    }
    put(w, (uint8_t)v);
}

static void
copy(writer_t *w, uint32_t n)
{
    room(w, patch_len_header(n));
    len_op(w, BLE_OTA_DELTA_OP_COPY, n);
    w->new_pos += n;
    w->old_pos += n;
}

/* ADD (old != NULL: the differences to it) or INSERT, cut where blocks end. */
static void
data(writer_t *w, const uint8_t *bytes, const uint8_t *old, uint32_t n)
{
    const uint8_t op = old != NULL ? BLE_OTA_DELTA_OP_ADD : BLE_OTA_DELTA_OP_INSERT;

    while (n > 0 && !w->overflow) {
        room(w, 2);
        const size_t space = w->block_end - w->pos;
        uint32_t t = n < space - 1 ? n : (uint32_t)(space - 1);
        while (patch_len_header(t) + t > space) {
            t--;
        }
        len_op(w, op, t);
        for (uint32_t k = 0; k < t; k++) {
            put(w, old != NULL ? (uint8_t)(bytes[k] - old[k]) : bytes[k]);
        }
        w->new_pos += t;
        if (old != NULL) {
            w->old_pos += t;
            old += t;
        }
        bytes += t;
        n -= t;
    }
}

size_t
host_patch_make(const uint8_t *old, size_t old_len, const uint8_t *new_img, size_t new_len, uint8_t *out, size_t cap)
{
    return host_patch_make_split(old, old_len, new_img, new_len, out, cap, 0);
}

size_t
host_patch_make_split(const uint8_t *old, size_t old_len, const uint8_t *new_img, size_t new_len, uint8_t *out,
                      size_t cap, uint32_t first_block_new)
{
    writer_t w = { .out = out, .cap = cap, .pos = 0, .block_end = BLE_OTA_DELTA_BLOCK };

    if (cap < BLE_OTA_DELTA_HEADER_LEN) {
        return 0;
    }
    memset(out, 0, BLE_OTA_DELTA_HEADER_LEN);
    w.pos = BLE_OTA_DELTA_HEADER_LEN;
    size_t i = 0;
    while (i < new_len && !w.overflow) {
        /* Block 0 ends once it rebuilt first_block_new bytes. */
        size_t stop = new_len;
        if (first_block_new > 0 && w.block_end == BLE_OTA_DELTA_BLOCK) {
            if (i >= first_block_new) {
                room(&w, BLE_OTA_DELTA_BLOCK);
                continue;
            }
            stop = first_block_new;
        }
        if (i >= old_len) {
            data(&w, new_img + i, NULL, (uint32_t)(stop - i));
            i = stop;
            continue;
        }
        const size_t end = stop < old_len ? stop : old_len;
        size_t j = i;
        if (new_img[i] == old[i]) {
            while (j < end && new_img[j] == old[j]) {
                j++;
            }
            copy(&w, (uint32_t)(j - i));
        } else {
            /* Differing bytes up to ADD_BREAK equal ones in a row. */
            size_t equal = 0;
            while (j < end && equal < ADD_BREAK) {
                equal = new_img[j] == old[j] ? equal + 1 : 0;
                j++;
            }
            if (equal == ADD_BREAK) {
                j -= ADD_BREAK;
            }
            data(&w, new_img + i, old + i, (uint32_t)(j - i));
        }
        i = j;
    }
    if (w.overflow) {
        return 0;
    }
    memcpy(out, "BODP", 4);
    out[BLE_OTA_DELTA_OFF_VERSION] = BLE_OTA_DELTA_VERSION;
    out[BLE_OTA_DELTA_OFF_BLOCK_SHIFT] = BLE_OTA_DELTA_BLOCK_SHIFT;
    ble_ota_put_le32(out + BLE_OTA_DELTA_OFF_OLD_SIZE, (uint32_t)old_len);
    ble_ota_sha256(old, old_len, out + BLE_OTA_DELTA_OFF_OLD_SHA256);
    ble_ota_put_le32(out + BLE_OTA_DELTA_OFF_NEW_SIZE, (uint32_t)new_len);
    ble_ota_sha256(new_img, new_len, out + BLE_OTA_DELTA_OFF_NEW_SHA256);
    ble_ota_put_le32(out + BLE_OTA_DELTA_OFF_PATCH_SIZE, (uint32_t)w.pos);
    return w.pos;
}
