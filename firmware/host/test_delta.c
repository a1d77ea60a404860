/*
 * The delta patch applier (ble_ota_delta.c, docs/DELTA.md): patches built
 * here instruction by instruction rebuild their image whatever pieces they
 * arrive in and wherever a transfer rewinds to a block's start; every kind
 * of malformed patch is refused with its error; and damaged patches, by
 * the thousand, never make it read outside the old image or emit more than
 * the new image's size.
 *
 * Usage: test-delta [FIXTURE_DIR]
 *
 * With FIXTURE_DIR (written by test/delta.test.ts), it also applies the
 * patches the TypeScript side computed: FIXTURE_DIR/manifest.txt names
 * them, each NAME with NAME.old, NAME.new and NAME.patch, and NAME.verdicts
 * lists damaged versions of the patch with the TypeScript applier's verdict
 * ("flip OFFSET XOR", "cut LENGTH" or "insert OFFSET BYTE", then the fault
 * name and the bytes it emitted); this applier must reach the same.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ble_ota_delta.h"
#include "ble_ota_le.h"
#include "patch_lengths.h"
#include "test.h"

#define MAX_IMAGE (256u * 1024u)
#define MAX_PATCH (512u * 1024u)
#define BLOCK     BLE_OTA_DELTA_BLOCK

/* --- the applier's surroundings: an old image, a sink that checks bounds ------ */

static uint8_t s_old[MAX_IMAGE];
static uint32_t s_old_len;
static uint8_t s_out[MAX_IMAGE];
static uint32_t s_out_len;
static uint32_t s_out_cap; /* the header's new size as the sink knows it */
static int s_fail_read_at; /* the read call that fails (0: none) */
static int s_fail_emit_at;
static int s_reads;
static int s_emits;
static int s_bound_violations;
static bool s_refuse_base;

static bool
sink_read(void *ctx, uint32_t offset, uint8_t *out, size_t len)
{
    (void)ctx;
    s_reads++;
    if (len == 0 || len > BLE_OTA_DELTA_PIECE || (uint64_t)offset + len > s_old_len) {
        s_bound_violations++;
        return false;
    }
    if (s_fail_read_at != 0 && s_reads == s_fail_read_at) {
        return false;
    }
    memcpy(out, s_old + offset, len);
    return true;
}

static bool
sink_emit(void *ctx, const uint8_t *data, size_t len)
{
    (void)ctx;
    s_emits++;
    if (len == 0 || (uint64_t)s_out_len + len > s_out_cap || (uint64_t)s_out_len + len > MAX_IMAGE) {
        s_bound_violations++;
        return false;
    }
    if (s_fail_emit_at != 0 && s_emits == s_fail_emit_at) {
        return false;
    }
    memcpy(s_out + s_out_len, data, len);
    s_out_len += (uint32_t)len;
    return true;
}

static bool
sink_check(void *ctx, const ble_ota_delta_header_t *h)
{
    (void)ctx;
    s_out_cap = h->new_size;
    return !s_refuse_base;
}

static void
sink_reset(void)
{
    s_out_len = 0;
    s_out_cap = 0;
    s_fail_read_at = 0;
    s_fail_emit_at = 0;
    s_reads = 0;
    s_emits = 0;
    s_refuse_base = false;
}

static void
applier_init(ble_ota_delta_t *d, uint32_t new_limit)
{
    const ble_ota_delta_config_t config = {
        .read_old = sink_read,
        .emit = sink_emit,
        .check_header = sink_check,
        .ctx = NULL,
        .old_limit = s_old_len,
        .new_limit = new_limit,
    };
    ble_ota_delta_init(d, &config);
}

/* Applies a patch in pieces of `step` bytes (0: all at once); returns the verdict. */
static ble_ota_delta_err_t
apply(const uint8_t *patch, uint32_t len, uint32_t step)
{
    static ble_ota_delta_t d;

    sink_reset();
    applier_init(&d, MAX_IMAGE);
    for (uint32_t at = 0; at < len;) {
        const uint32_t n = step == 0 || step > len - at ? len - at : step;
        const ble_ota_delta_err_t err = ble_ota_delta_feed(&d, patch + at, n);
        if (err != BLE_OTA_DELTA_OK) {
            return err;
        }
        at += n;
    }
    return ble_ota_delta_finish(&d);
}

/* --- building patches here --------------------------------------------------- */

static uint8_t s_patch[MAX_PATCH];
static uint8_t s_expect[MAX_IMAGE];

typedef struct {
    uint32_t pos;
    uint32_t block_end;
    uint32_t new_pos;
    uint32_t old_pos;
} writer_t;

static void
w_init(writer_t *w)
{
    memset(s_patch, 0, BLE_OTA_DELTA_HEADER_LEN);
    w->pos = BLE_OTA_DELTA_HEADER_LEN;
    w->block_end = BLOCK;
    w->new_pos = 0;
    w->old_pos = 0;
}

/* Makes room for `need` bytes in the block, padding it (END_BLOCK, zeros) and starting the next. */
static void
w_room(writer_t *w, uint32_t need)
{
    if (w->block_end - w->pos >= need) {
        return;
    }
    if (w->pos < w->block_end) {
        s_patch[w->pos] = BLE_OTA_DELTA_OP_END_BLOCK;
        memset(s_patch + w->pos + 1, 0, w->block_end - w->pos - 1);
        w->pos = w->block_end;
    }
    ble_ota_put_le32(s_patch + w->pos, w->new_pos);
    ble_ota_put_le32(s_patch + w->pos + 4, w->old_pos);
    w->pos += BLE_OTA_DELTA_CURSOR_LEN;
    w->block_end += BLOCK;
}

static void
w_varint(writer_t *w, uint32_t v)
{
    while (v >= 0x80u) {
        s_patch[w->pos++] = (uint8_t)((v & 0x7Fu) | 0x80u);
        v >>= 7;
    }
    s_patch[w->pos++] = (uint8_t)v;
}

static void
w_len_op(writer_t *w, uint8_t op, uint32_t n)
{
    if (n <= 63) {
        s_patch[w->pos++] = (uint8_t)(op | n);
    } else {
        s_patch[w->pos++] = op;
        w_varint(w, n - 64);
    }
}

static void
w_copy(writer_t *w, uint32_t n)
{
    w_room(w, patch_len_header(n));
    w_len_op(w, BLE_OTA_DELTA_OP_COPY, n);
    memcpy(s_expect + w->new_pos, s_old + w->old_pos, n);
    w->new_pos += n;
    w->old_pos += n;
}

/* ADD (diff != NULL: the differences) or INSERT (the bytes), cut where blocks end. */
static void
w_data(writer_t *w, uint8_t op, const uint8_t *bytes, uint32_t n)
{
    while (n > 0) {
        w_room(w, 2);
        const uint32_t space = w->block_end - w->pos;
        uint32_t t = n < space - 1 ? n : space - 1;
        while (patch_len_header(t) + t > space) {
            t--;
        }
        w_len_op(w, op, t);
        memcpy(s_patch + w->pos, bytes, t);
        w->pos += t;
        for (uint32_t k = 0; k < t; k++) {
            s_expect[w->new_pos + k] = op == BLE_OTA_DELTA_OP_ADD ? (uint8_t)(s_old[w->old_pos + k] + bytes[k])
                                                                  : bytes[k];
        }
        w->new_pos += t;
        if (op == BLE_OTA_DELTA_OP_ADD) {
            w->old_pos += t;
        }
        bytes += t;
        n -= t;
    }
}

static void
w_seek(writer_t *w, uint32_t to)
{
    const int64_t delta = (int64_t)to - (int64_t)w->old_pos;
    const uint32_t v = delta >= 0 ? (uint32_t)(delta * 2) : (uint32_t)(-delta * 2 - 1);

    if (delta == 0) {
        return;
    }
    w_room(w, 1 + patch_varint_len(v));
    s_patch[w->pos++] = BLE_OTA_DELTA_OP_SEEK;
    w_varint(w, v);
    w->old_pos = to;
}

/* Writes the header; returns the patch's length. */
static uint32_t
w_finish(writer_t *w)
{
    memcpy(s_patch, "BODP", 4);
    s_patch[BLE_OTA_DELTA_OFF_VERSION] = BLE_OTA_DELTA_VERSION;
    s_patch[BLE_OTA_DELTA_OFF_BLOCK_SHIFT] = BLE_OTA_DELTA_BLOCK_SHIFT;
    ble_ota_put_le32(s_patch + BLE_OTA_DELTA_OFF_OLD_SIZE, s_old_len);
    ble_ota_put_le32(s_patch + BLE_OTA_DELTA_OFF_NEW_SIZE, w->new_pos);
    ble_ota_put_le32(s_patch + BLE_OTA_DELTA_OFF_PATCH_SIZE, w->pos);
    return w->pos;
}

/* xorshift32: the tests' choices, replayable from the seed printed on failure. */
static uint32_t s_rng = 1;

static uint32_t
rnd(void)
{
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 17;
    s_rng ^= s_rng << 5;
    return s_rng;
}

static uint32_t
below(uint32_t n)
{
    return n == 0 ? 0 : rnd() % n;
}

static void
random_old(uint32_t len)
{
    s_old_len = len;
    for (uint32_t i = 0; i < len; i++) {
        s_old[i] = (uint8_t)rnd();
    }
}

/* A random patch of up to `ops` instructions (every kind, lengths from 1 to
 * thousands, so instructions are cut at block ends); returns its length and
 * the image it builds is in s_expect[0, *new_len). */
static uint32_t
random_patch(uint32_t ops, uint32_t *new_len)
{
    writer_t w;
    uint8_t bytes[9000];

    w_init(&w);
    for (uint32_t i = 0; i < ops; i++) {
        const uint32_t kind = below(4);
        uint32_t n = below(8) == 0 ? 1 + below(8000) : 1 + below(100);
        if (w.new_pos + n > MAX_IMAGE / 2) {
            break;
        }
        if (kind == 3) {
            w_seek(&w, below(s_old_len + 1));
            continue;
        }
        if (kind != 2 && w.old_pos + n > s_old_len) {
            if (n > s_old_len) {
                continue;
            }
            w_seek(&w, below(s_old_len - n + 1));
        }
        for (uint32_t k = 0; k < n; k++) {
            bytes[k] = below(3) == 0 ? (uint8_t)rnd() : 0;
        }
        if (kind == 0) {
            w_copy(&w, n);
        } else {
            w_data(&w, kind == 1 ? BLE_OTA_DELTA_OP_ADD : BLE_OTA_DELTA_OP_INSERT, bytes, n);
        }
    }
    *new_len = w.new_pos;
    return w_finish(&w);
}

/* --- tests ------------------------------------------------------------------- */

static void
test_delta_state_is_bounded(void)
{
    printf("  applier state: %zu bytes (no allocation)\n", sizeof(ble_ota_delta_t));
    CHECK(sizeof(ble_ota_delta_t) <= 512);
}

static void
test_delta_every_instruction(void)
{
    writer_t w;
    uint8_t diff[300];

    random_old(20000);
    w_init(&w);
    for (uint32_t i = 0; i < sizeof(diff); i++) {
        diff[i] = (uint8_t)(i % 7 == 0 ? 4 : 0);
    }
    w_copy(&w, 10);   /* short length */
    w_copy(&w, 5000); /* varint length */
    w_data(&w, BLE_OTA_DELTA_OP_ADD, diff, 63);
    w_data(&w, BLE_OTA_DELTA_OP_ADD, diff, 300);
    w_data(&w, BLE_OTA_DELTA_OP_INSERT, (const uint8_t *)"a new string", 12);
    w_seek(&w, 100);   /* backwards */
    w_copy(&w, 64);    /* the first varint length: v = 0 */
    w_seek(&w, 19000); /* forwards */
    w_copy(&w, 1000);  /* up to the old image's end */
    const uint32_t len = w_finish(&w);
    const uint32_t new_len = w.new_pos;

    CHECK_EQ(apply(s_patch, len, 0), BLE_OTA_DELTA_OK);
    CHECK_EQ(s_out_len, new_len);
    CHECK(memcmp(s_out, s_expect, new_len) == 0);
    CHECK_EQ(s_bound_violations, 0);
}

/* Whatever pieces the patch arrives in, the image is the same. */
static void
test_delta_any_pieces(void)
{
    static const uint32_t steps[] = { 1, 2, 3, 7, 84, 85, 240, 509, 4095, 4096, 4097, 0 };

    s_rng = 0x5eed0001u;
    random_old(64 * 1024);
    uint32_t new_len;
    const uint32_t len = random_patch(400, &new_len);
    CHECK(len > 3 * BLOCK); /* several blocks, instructions cut at their ends */
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        const ble_ota_delta_err_t err = apply(s_patch, len, steps[i]);
        if (err != BLE_OTA_DELTA_OK) {
            test_failf(__FILE__, __LINE__, "pieces of %u: %s", steps[i], ble_ota_delta_err_name(err));
            return;
        }
        CHECK_EQ(s_out_len, new_len);
        CHECK(memcmp(s_out, s_expect, new_len) == 0);
    }
    CHECK_EQ(s_bound_violations, 0);
}

/* A transfer that resumes sends the block in progress again: the applier
 * goes back to its start, and the image comes out once, whole and in order. */
static void
test_delta_rewind_at_any_point(void)
{
    static ble_ota_delta_t d;

    s_rng = 0x5eed0002u;
    random_old(64 * 1024);
    uint32_t new_len;
    const uint32_t len = random_patch(300, &new_len);
    for (int round = 0; round < 200; round++) {
        sink_reset();
        applier_init(&d, MAX_IMAGE);
        uint32_t at = 0;
        int rewinds = 0;
        while (at < len) {
            const uint32_t want = 1 + below(700);
            const uint32_t n = want < len - at ? want : len - at;
            CHECK_EQ(ble_ota_delta_feed(&d, s_patch + at, n), BLE_OTA_DELTA_OK);
            at += n;
            if (at < len && below(3) == 0) {
                const uint32_t back = ble_ota_delta_rewind(&d);
                CHECK_EQ(back % BLOCK, 0);
                CHECK(back <= at && at - back < BLOCK);
                at = back;
                rewinds++;
            }
        }
        CHECK_EQ(ble_ota_delta_finish(&d), BLE_OTA_DELTA_OK);
        CHECK_EQ(s_out_len, new_len);
        CHECK(memcmp(s_out, s_expect, new_len) == 0);
        CHECK(rewinds > 0 || len < 2 * BLOCK);
    }
    CHECK_EQ(s_bound_violations, 0);
}

/* The block sent again after a rewind must be the same patch's. */
static void
test_delta_rewind_to_another_patch(void)
{
    static ble_ota_delta_t d;

    s_rng = 0x5eed0003u;
    random_old(64 * 1024);
    uint32_t new_len;
    const uint32_t len = random_patch(300, &new_len);
    CHECK(len > 2 * BLOCK + 100);

    /* In block 2: its cursor, sent again, says another position. */
    sink_reset();
    applier_init(&d, MAX_IMAGE);
    CHECK_EQ(ble_ota_delta_feed(&d, s_patch, 2 * BLOCK + 100), BLE_OTA_DELTA_OK);
    CHECK_EQ(ble_ota_delta_rewind(&d), 2 * BLOCK);
    uint8_t block[BLOCK];
    memcpy(block, s_patch + 2 * BLOCK, BLOCK);
    block[0] ^= 1; /* the cursor's new position */
    CHECK_EQ(ble_ota_delta_feed(&d, block, BLOCK), BLE_OTA_DELTA_ERR_BLOCK);

    /* In block 0: another header. */
    sink_reset();
    applier_init(&d, MAX_IMAGE);
    CHECK_EQ(ble_ota_delta_feed(&d, s_patch, 200), BLE_OTA_DELTA_OK);
    CHECK_EQ(ble_ota_delta_rewind(&d), 0);
    memcpy(block, s_patch, BLOCK);
    block[BLE_OTA_DELTA_OFF_NEW_SHA256] ^= 1;
    CHECK_EQ(ble_ota_delta_feed(&d, block, BLOCK), BLE_OTA_DELTA_ERR_HEADER);
}

/*
 * In a test that has the patch in s_patch (len bytes) and a buffer p: a copy
 * of the patch changed by `what` (which may set plen, the length applied)
 * must end with `expected`, reading and writing nothing out of bounds.
 */
#define VARIANT(what, expected) \
    do { \
        memcpy(p, s_patch, len); \
        uint32_t plen = len; \
        what; \
        const ble_ota_delta_err_t got = apply(p, plen, 0); \
        if (got != (expected) || s_bound_violations != 0) { \
            test_failf(__FILE__, __LINE__, "%s: %s, expected %s", #what, ble_ota_delta_err_name(got), \
                       ble_ota_delta_err_name(expected)); \
            return; \
        } \
    } while (0)

/* One malformed patch per error, each refused before it reads or writes out of bounds. */
static void
test_delta_malformed(void)
{
    writer_t w;
    uint8_t p[2 * BLOCK];
    uint32_t len;

    random_old(10000);
    w_init(&w);
    w_copy(&w, 100);
    w_data(&w, BLE_OTA_DELTA_OP_INSERT, (const uint8_t *)"xyz", 3);
    len = w_finish(&w); /* header, COPY 100 at 84 (00 24), INSERT 3 at 86 (83 'xyz'): 90 bytes */
    CHECK_EQ(len, 90);
    CHECK_EQ(apply(s_patch, len, 0), BLE_OTA_DELTA_OK);


    VARIANT(p[0] = 'X', BLE_OTA_DELTA_ERR_HEADER);
    VARIANT(p[BLE_OTA_DELTA_OFF_VERSION] = 2, BLE_OTA_DELTA_ERR_HEADER);
    VARIANT(p[BLE_OTA_DELTA_OFF_BLOCK_SHIFT] = 13, BLE_OTA_DELTA_ERR_HEADER);
    VARIANT(p[BLE_OTA_DELTA_OFF_RESERVED] = 1, BLE_OTA_DELTA_ERR_HEADER);
    VARIANT(ble_ota_put_le32(p + BLE_OTA_DELTA_OFF_PATCH_SIZE, 83), BLE_OTA_DELTA_ERR_HEADER);
    VARIANT(ble_ota_put_le32(p + BLE_OTA_DELTA_OFF_OLD_SIZE, s_old_len + 1), BLE_OTA_DELTA_ERR_BASE);
    VARIANT(ble_ota_put_le32(p + BLE_OTA_DELTA_OFF_NEW_SIZE, MAX_IMAGE + 1), BLE_OTA_DELTA_ERR_TOO_LARGE);
    VARIANT(p[84] = 0xC5, BLE_OTA_DELTA_ERR_OP);                      /* reserved opcode */
    VARIANT(p[84] = 0xC0; p[85] = 0, BLE_OTA_DELTA_ERR_OP);           /* SEEK of 0 */
    VARIANT(p[84] = 0xC0; p[85] = 0x01, BLE_OTA_DELTA_ERR_OLD_RANGE); /* SEEK to -1 */
    VARIANT(p[84] = 0x00; p[85] = 0xFF; p[86] = 0xFF; p[87] = 0xFF; p[88] = 0xFF; p[89] = 0x1F;
            plen = 90, BLE_OTA_DELTA_ERR_OP); /* varint beyond 32 bits */
    VARIANT(p[84] = 0x00; p[85] = 0xFF; p[86] = 0xFF; p[87] = 0xFF; p[88] = 0xFF; p[89] = 0x0F;
            plen = 90, BLE_OTA_DELTA_ERR_OP); /* length 64 + 2^32 - 1 */
    VARIANT(p[85] = 0xD1; p[86] = 0x4D;
            ble_ota_put_le32(p + BLE_OTA_DELTA_OFF_NEW_SIZE, 20000),
            BLE_OTA_DELTA_ERR_OLD_RANGE); /* COPY 64 + 9937: one byte more than the old image */
    VARIANT(ble_ota_put_le32(p + BLE_OTA_DELTA_OFF_NEW_SIZE, 102), BLE_OTA_DELTA_ERR_NEW_RANGE);
    VARIANT(p[84] = 0x3F; ble_ota_put_le32(p + BLE_OTA_DELTA_OFF_NEW_SIZE, 62), BLE_OTA_DELTA_ERR_NEW_RANGE);
    VARIANT(p[86] = 0x84, BLE_OTA_DELTA_ERR_BLOCK);            /* INSERT 4: runs past the patch's end */
    VARIANT(p[86] = 0xFF; p[87] = 1, BLE_OTA_DELTA_ERR_BLOCK); /* padding not zero */
    VARIANT(p[86] = 0xFF; p[87] = 0; p[88] = 0; p[89] = 0, BLE_OTA_DELTA_ERR_LENGTH); /* padded: short image */
    VARIANT(p[len] = 0; plen = len + 1, BLE_OTA_DELTA_ERR_LENGTH);                    /* a byte past the patch */
    VARIANT(plen = len - 1, BLE_OTA_DELTA_ERR_LENGTH);                                /* cut inside INSERT's data */
    VARIANT(plen = 50, BLE_OTA_DELTA_ERR_LENGTH);                                     /* cut inside the header */
    VARIANT(ble_ota_put_le32(p + BLE_OTA_DELTA_OFF_PATCH_SIZE, len + 5), BLE_OTA_DELTA_ERR_LENGTH);

    /* The caller's base check refuses the patch before anything is read or emitted. */
    static ble_ota_delta_t d;
    sink_reset();
    s_refuse_base = true;
    applier_init(&d, MAX_IMAGE);
    CHECK_EQ(ble_ota_delta_feed(&d, s_patch, len), BLE_OTA_DELTA_ERR_BASE);
    CHECK_EQ(s_reads, 0);
    CHECK_EQ(s_emits, 0);
    CHECK(ble_ota_delta_header(&d) == NULL);
    /* Every later call says the same. */
    CHECK_EQ(ble_ota_delta_feed(&d, s_patch, 1), BLE_OTA_DELTA_ERR_BASE);
    CHECK_EQ(ble_ota_delta_finish(&d), BLE_OTA_DELTA_ERR_BASE);

    /* The old image cannot be read, the new one cannot be stored. */
    sink_reset();
    s_fail_read_at = 1;
    applier_init(&d, MAX_IMAGE);
    CHECK_EQ(ble_ota_delta_feed(&d, s_patch, len), BLE_OTA_DELTA_ERR_READ);
    sink_reset();
    s_fail_emit_at = 1;
    applier_init(&d, MAX_IMAGE);
    CHECK_EQ(ble_ota_delta_feed(&d, s_patch, len), BLE_OTA_DELTA_ERR_EMIT);
    CHECK_EQ(s_bound_violations, 0);
}

/* Lengths and moves near 2^32, after instructions that moved the positions
 * off 0: a sum that wrapped in 32 bits would pass the bounds it is checked
 * against (the ESP32 is a 32-bit machine); each is refused instead. */
static void
test_delta_lengths_near_4gb(void)
{
    writer_t w;
    uint8_t p[2 * BLOCK];

    random_old(10000);
    w_init(&w);
    w_copy(&w, 10);
    w_data(&w, BLE_OTA_DELTA_OP_INSERT, (const uint8_t *)"0123456789", 10);
    const uint32_t len = w_finish(&w); /* COPY 10 at 84, INSERT 10 at 85: 96 bytes, 20 rebuilt */
    CHECK_EQ(len, 96);
    CHECK_EQ(apply(s_patch, len, 0), BLE_OTA_DELTA_OK);
    /* Opcode at 84, then the varint 0xFFFFFFBF (64 + it: the longest length, 2^32 - 1). */
    static const uint8_t longest[5] = { 0xBF, 0xFF, 0xFF, 0xFF, 0x0F };


    /* COPY 2^32 - 1 after COPY 10: new_pos + n is 9 in 32 bits. */
    VARIANT(p[85] = BLE_OTA_DELTA_OP_COPY; memcpy(p + 86, longest, 5); plen = 91;
            ble_ota_put_le32(p + BLE_OTA_DELTA_OFF_PATCH_SIZE, plen), BLE_OTA_DELTA_ERR_NEW_RANGE);
    /* ADD and INSERT of 2^32 - 1: their data would run past the block (in_pos + n wraps). */
    VARIANT(p[85] = BLE_OTA_DELTA_OP_ADD; memcpy(p + 86, longest, 5); plen = 91;
            ble_ota_put_le32(p + BLE_OTA_DELTA_OFF_PATCH_SIZE, plen), BLE_OTA_DELTA_ERR_BLOCK);
    VARIANT(p[85] = BLE_OTA_DELTA_OP_INSERT; memcpy(p + 86, longest, 5); plen = 91;
            ble_ota_put_le32(p + BLE_OTA_DELTA_OFF_PATCH_SIZE, plen), BLE_OTA_DELTA_ERR_BLOCK);
    /* SEEK +(2^31 - 1) and -2^31 from old position 10: outside the old image, not wrapped into it. */
    VARIANT(p[85] = BLE_OTA_DELTA_OP_SEEK; p[86] = 0xFE; p[87] = 0xFF; p[88] = 0xFF; p[89] = 0xFF; p[90] = 0x0F;
            plen = 91; ble_ota_put_le32(p + BLE_OTA_DELTA_OFF_PATCH_SIZE, plen), BLE_OTA_DELTA_ERR_OLD_RANGE);
    VARIANT(p[85] = BLE_OTA_DELTA_OP_SEEK; p[86] = 0xFF; p[87] = 0xFF; p[88] = 0xFF; p[89] = 0xFF; p[90] = 0x0F;
            plen = 91; ble_ota_put_le32(p + BLE_OTA_DELTA_OFF_PATCH_SIZE, plen), BLE_OTA_DELTA_ERR_OLD_RANGE);
    /* SEEK to the old image's end is allowed; a COPY from there is not. */
    VARIANT(p[85] = BLE_OTA_DELTA_OP_SEEK; p[86] = 0x8C; p[87] = 0x9C; p[88] = 0x01; p[89] = 0x01; plen = 90;
            ble_ota_put_le32(p + BLE_OTA_DELTA_OFF_PATCH_SIZE, plen), BLE_OTA_DELTA_ERR_OLD_RANGE);
    /* A varint's fifth byte with its continuation bit: no sixth byte is read. */
    VARIANT(p[85] = BLE_OTA_DELTA_OP_COPY; memcpy(p + 86, longest, 5); p[90] = 0x80; plen = 91;
            ble_ota_put_le32(p + BLE_OTA_DELTA_OFF_PATCH_SIZE, plen), BLE_OTA_DELTA_ERR_OP);
    /* A patch that declares 4 GB and stops: LENGTH at the end, nothing past what arrived. */
    VARIANT(ble_ota_put_le32(p + BLE_OTA_DELTA_OFF_PATCH_SIZE, UINT32_MAX), BLE_OTA_DELTA_ERR_LENGTH);
    /* Zero-length everything: a header alone rebuilds an empty image; one more instruction is too many. */
    VARIANT(plen = BLE_OTA_DELTA_HEADER_LEN; ble_ota_put_le32(p + BLE_OTA_DELTA_OFF_PATCH_SIZE, plen);
            ble_ota_put_le32(p + BLE_OTA_DELTA_OFF_NEW_SIZE, 0), BLE_OTA_DELTA_OK);
    VARIANT(ble_ota_put_le32(p + BLE_OTA_DELTA_OFF_NEW_SIZE, 0), BLE_OTA_DELTA_ERR_NEW_RANGE);
    VARIANT(plen = BLE_OTA_DELTA_HEADER_LEN;
            ble_ota_put_le32(p + BLE_OTA_DELTA_OFF_PATCH_SIZE, plen), BLE_OTA_DELTA_ERR_LENGTH);
    VARIANT(plen = 0, BLE_OTA_DELTA_ERR_LENGTH);
    /* A block cursor that goes back (block 1 of a patch padded after its first instruction). */
    VARIANT(p[85] = BLE_OTA_DELTA_OP_END_BLOCK; memset(p + 86, 0, BLOCK - 86); ble_ota_put_le32(p + BLOCK, 9);
            ble_ota_put_le32(p + BLOCK + 4, 10); p[BLOCK + 8] = 0x8A; memcpy(p + BLOCK + 9, "0123456789", 10);
            plen = BLOCK + 19; ble_ota_put_le32(p + BLE_OTA_DELTA_OFF_PATCH_SIZE, plen), BLE_OTA_DELTA_ERR_BLOCK);
    VARIANT(p[85] = BLE_OTA_DELTA_OP_END_BLOCK; memset(p + 86, 0, BLOCK - 86); ble_ota_put_le32(p + BLOCK, 10);
            ble_ota_put_le32(p + BLOCK + 4, 10); p[BLOCK + 8] = 0x8A; memcpy(p + BLOCK + 9, "0123456789", 10);
            plen = BLOCK + 19; ble_ota_put_le32(p + BLE_OTA_DELTA_OFF_PATCH_SIZE, plen), BLE_OTA_DELTA_OK);
}

/* The last block of a patch of almost 4 GB: its end, at patch_size, is
 * past 2^32 - 4096, where a block's end computed as start + 4096 wraps to 0
 * and would refuse every ADD or INSERT there. The positions the blocks of
 * padding before it would leave are set directly (feeding 4 GB takes too long). */
static void
test_delta_last_block_below_4gb(void)
{
    static ble_ota_delta_t d;
    uint8_t head[BLE_OTA_DELTA_HEADER_LEN] = { 'B', 'O', 'D', 'P', BLE_OTA_DELTA_VERSION, BLE_OTA_DELTA_BLOCK_SHIFT };
    const uint8_t last[] = { 0, 0, 0, 0, 0, 0, 0, 0, BLE_OTA_DELTA_OP_INSERT | 2, 'h', 'i', BLE_OTA_DELTA_OP_END_BLOCK,
                             0 };

    random_old(100);
    ble_ota_put_le32(head + BLE_OTA_DELTA_OFF_OLD_SIZE, s_old_len);
    ble_ota_put_le32(head + BLE_OTA_DELTA_OFF_NEW_SIZE, 2);
    ble_ota_put_le32(head + BLE_OTA_DELTA_OFF_PATCH_SIZE, UINT32_MAX);
    sink_reset();
    applier_init(&d, MAX_IMAGE);
    CHECK_EQ(ble_ota_delta_feed(&d, head, sizeof(head)), BLE_OTA_DELTA_OK);
    d.in_pos = UINT32_MAX - UINT32_MAX % BLOCK; /* the last block's start: 2^20 - 1 blocks of padding before */
    CHECK_EQ(ble_ota_delta_feed(&d, last, sizeof(last)), BLE_OTA_DELTA_OK);
    CHECK_EQ(s_out_len, 2);
    CHECK(memcmp(s_out, "hi", 2) == 0);
    CHECK_EQ(s_bound_violations, 0);
}

/* Instructions cut by a block's end, and cursors that disagree. */
static void
test_delta_blocks(void)
{
    s_rng = 0x5eed0004u;
    random_old(64 * 1024);
    uint32_t new_len;
    const uint32_t len = random_patch(300, &new_len);
    CHECK(len > 2 * BLOCK + 16);
    CHECK_EQ(apply(s_patch, len, 0), BLE_OTA_DELTA_OK);

    static uint8_t p[MAX_PATCH];
    memcpy(p, s_patch, len);
    ble_ota_put_le32(p + BLOCK, ble_ota_get_le32(s_patch + BLOCK) + 1);
    CHECK_EQ(apply(p, len, 0), BLE_OTA_DELTA_ERR_BLOCK); /* block 1 says another new position */
    memcpy(p, s_patch, len);
    ble_ota_put_le32(p + BLOCK + 4, ble_ota_get_le32(s_patch + BLOCK + 4) + 1);
    CHECK_EQ(apply(p, len, 0), BLE_OTA_DELTA_ERR_BLOCK); /* another old position */

    /* An INSERT whose data would run into the next block. */
    writer_t w;
    uint8_t bytes[200];
    memset(bytes, 7, sizeof(bytes));
    w_init(&w);
    static uint8_t fill[BLOCK];
    memset(fill, 7, sizeof(fill));
    w_data(&w, BLE_OTA_DELTA_OP_INSERT, fill, BLOCK - BLE_OTA_DELTA_HEADER_LEN - 4); /* 3-byte opcode: 1 byte left */
    w_data(&w, BLE_OTA_DELTA_OP_INSERT, bytes, 100);                                 /* into block 1 */
    const uint32_t len2 = w_finish(&w);
    CHECK_EQ(apply(s_patch, len2, 0), BLE_OTA_DELTA_OK);
    CHECK_EQ(s_patch[BLOCK - 1], BLE_OTA_DELTA_OP_END_BLOCK);   /* the writer padded the last byte */
    s_patch[BLOCK - 1] = 0x81;                                  /* INSERT 1 there instead... */
    CHECK_EQ(apply(s_patch, len2, 0), BLE_OTA_DELTA_ERR_BLOCK); /* ...runs past the block */
    s_patch[BLOCK - 1] = 0x80; /* a long INSERT whose varint would be in the next block */
    CHECK_EQ(apply(s_patch, len2, 0), BLE_OTA_DELTA_ERR_BLOCK);
}

/* Damaged patches by the thousand: whatever the verdict, never a read
 * outside the old image, never more bytes than the header's new size, and
 * the same verdict whatever pieces the bytes come in. */
static void
test_delta_damaged_patches(void)
{
    static uint8_t p[MAX_PATCH + 16];
    int refused = 0;
    int accepted = 0;

    s_rng = 0x5eed0005u;
    random_old(32 * 1024);
    uint32_t new_len;
    const uint32_t len = random_patch(120, &new_len);
    for (int round = 0; round < 3000; round++) {
        uint32_t plen = len;
        memcpy(p, s_patch, len);
        const int flips = 1 + (int)below(4);
        for (int f = 0; f < flips; f++) {
            switch (below(5)) {
            case 0: /* a header or cursor byte */
                if (plen > 0) {
                    const uint32_t at = below(2) == 0 ? below(BLE_OTA_DELTA_HEADER_LEN)
                                                      : below(len / BLOCK + 1) * BLOCK + below(8);
                    p[at % plen] ^= (uint8_t)(1u << below(8));
                }
                break;
            case 1:
                plen = below(plen + 1);
                break;
            case 2:
                if (plen < MAX_PATCH) {
                    const uint32_t at = below(plen + 1);
                    memmove(p + at + 1, p + at, plen - at);
                    p[at] = (uint8_t)rnd();
                    plen++;
                }
                break;
            default:
                if (plen > 0) {
                    p[below(plen)] = (uint8_t)rnd();
                }
                break;
            }
        }
        s_bound_violations = 0;
        const ble_ota_delta_err_t whole = apply(p, plen, 0);
        if (s_bound_violations != 0) {
            test_failf(__FILE__, __LINE__, "round %d: read or wrote out of bounds", round);
            return;
        }
        const uint32_t out_whole = s_out_len;
        const ble_ota_delta_err_t pieces = apply(p, plen, 1 + below(300));
        if (pieces != whole || s_out_len != out_whole || s_bound_violations != 0) {
            test_failf(__FILE__, __LINE__, "round %d: %s (%u bytes) whole, %s (%u bytes) in pieces", round,
                       ble_ota_delta_err_name(whole), out_whole, ble_ota_delta_err_name(pieces), s_out_len);
            return;
        }
        if (whole == BLE_OTA_DELTA_OK) {
            accepted++;
        } else {
            refused++;
        }
    }
    printf("  3000 damaged patches: %d refused, %d accepted (END's SHA-256 catches those)\n", refused, accepted);
    CHECK(refused > 2000);
}

/* --- patches the TypeScript side computed --------------------------------------- */

static uint8_t *
read_file(const char *dir, const char *name, const char *ext, uint32_t *len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s.%s", dir, name, ext);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    const long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(size > 0 ? (size_t)size + 16 : 16);
    if (buf != NULL && fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (uint32_t)size;
    return buf;
}

static const char *s_fixtures;

static void
check_fixture(const char *name)
{
    uint32_t old_len, new_len, patch_len, verdicts_len;
    uint8_t *old = read_file(s_fixtures, name, "old", &old_len);
    uint8_t *nw = read_file(s_fixtures, name, "new", &new_len);
    uint8_t *patch = read_file(s_fixtures, name, "patch", &patch_len);
    uint8_t *verdicts = read_file(s_fixtures, name, "verdicts", &verdicts_len);
    static uint8_t p[MAX_PATCH + 16];

    if (old == NULL || nw == NULL || patch == NULL || old_len > MAX_IMAGE || new_len > MAX_IMAGE ||
        patch_len > MAX_PATCH) {
        test_failf(__FILE__, __LINE__, "%s: fixture missing or larger than this test takes", name);
        goto out;
    }
    memcpy(s_old, old, old_len);
    s_old_len = old_len;
    const ble_ota_delta_err_t err = apply(patch, patch_len, 509);
    if (err != BLE_OTA_DELTA_OK || s_out_len != new_len || memcmp(s_out, nw, new_len) != 0) {
        test_failf(__FILE__, __LINE__, "%s: %s, %u of %u bytes rebuilt", name, ble_ota_delta_err_name(err), s_out_len,
                   new_len);
        goto out;
    }
    int checked = 0;
    if (verdicts != NULL) {
        verdicts[verdicts_len] = 0;
        char *next = NULL;
        for (char *line = (char *)verdicts; *line != 0; line = next) {
            next = strchr(line, '\n');
            if (next == NULL) {
                next = line + strlen(line);
            } else {
                *next++ = 0;
            }
            char fault[16];
            unsigned a = 0, b = 0, produced = 0;
            uint32_t plen = patch_len;
            memcpy(p, patch, patch_len);
            if (sscanf(line, "flip %u %u %15s %u", &a, &b, fault, &produced) == 4) {
                p[a] ^= (uint8_t)b;
            } else if (sscanf(line, "cut %u %15s %u", &a, fault, &produced) == 3) {
                plen = a;
            } else if (sscanf(line, "insert %u %u %15s %u", &a, &b, fault, &produced) == 4) {
                memmove(p + a + 1, p + a, plen - a);
                p[a] = (uint8_t)b;
                plen++;
            } else {
                test_failf(__FILE__, __LINE__, "%s: verdict line not understood: %s", name, line);
                goto out;
            }
            s_bound_violations = 0;
            const ble_ota_delta_err_t got = apply(p, plen, 1 + (a % 700));
            if (strcmp(ble_ota_delta_err_name(got), fault) != 0 || s_out_len != produced || s_bound_violations != 0) {
                test_failf(__FILE__, __LINE__, "%s: %s: C says %s after %u bytes", name, line,
                           ble_ota_delta_err_name(got), s_out_len);
                goto out;
            }
            checked++;
        }
    }
    printf("  %s: %u-byte patch rebuilds %u bytes; %d damaged versions, same verdicts as TypeScript\n", name, patch_len,
           new_len, checked);
out:
    free(old);
    free(nw);
    free(patch);
    free(verdicts);
}

static void
test_delta_typescript_patches(void)
{
    char path[1024];
    char name[256];

    snprintf(path, sizeof(path), "%s/manifest.txt", s_fixtures);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        test_failf(__FILE__, __LINE__, "no %s", path);
        return;
    }
    int count = 0;
    while (fgets(name, sizeof(name), f) != NULL) {
        name[strcspn(name, "\r\n")] = 0;
        if (name[0] == 0) {
            continue;
        }
        check_fixture(name);
        count++;
        if (test_has_failed()) {
            break;
        }
    }
    fclose(f);
    CHECK(count > 0);
}

int
main(int argc, char **argv)
{
    RUN(test_delta_state_is_bounded);
    RUN(test_delta_every_instruction);
    RUN(test_delta_any_pieces);
    RUN(test_delta_rewind_at_any_point);
    RUN(test_delta_rewind_to_another_patch);
    RUN(test_delta_malformed);
    RUN(test_delta_lengths_near_4gb);
    RUN(test_delta_last_block_below_4gb);
    RUN(test_delta_blocks);
    RUN(test_delta_damaged_patches);
    if (argc > 1) {
        s_fixtures = argv[1];
        RUN(test_delta_typescript_patches);
    }
    return test_summary("delta");
}
