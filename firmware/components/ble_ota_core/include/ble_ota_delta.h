/*
 * Delta patches (docs/DELTA.md): rebuilds a new image from the image the
 * device runs and a patch that arrives in pieces, in bounded static RAM.
 *
 * The applier reads the old image through a callback (the running slot;
 * never outside the size the patch's header declares, which may not exceed
 * old_limit), hands rebuilt bytes to another in order (never more than the
 * header's new size, which may not exceed new_limit), and checks every
 * instruction before it acts on it: a malformed patch stops it with an
 * error, and every call after that returns the same error.
 *
 * A patch is cut into 4 KB blocks (BLE_OTA_DELTA_BLOCK, one DEFLATE chunk of
 * the v2 stream), each starting at an instruction boundary with the
 * positions reached so far, so a transfer resumes at the start of any block:
 * ble_ota_delta_rewind() goes back to the start of the block in progress,
 * and the bytes it had emitted already are not emitted again.
 */
#ifndef BLE_OTA_DELTA_H
#define BLE_OTA_DELTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BLE_OTA_DELTA_BLOCK_SHIFT 12
#define BLE_OTA_DELTA_BLOCK       (1u << BLE_OTA_DELTA_BLOCK_SHIFT)
#define BLE_OTA_DELTA_VERSION     1
#define BLE_OTA_DELTA_HEADER_LEN  84
#define BLE_OTA_DELTA_CURSOR_LEN  8
/* Old bytes read (and rebuilt bytes emitted) per piece. */
#define BLE_OTA_DELTA_PIECE 256

/* Header field offsets. */
#define BLE_OTA_DELTA_OFF_MAGIC       0
#define BLE_OTA_DELTA_OFF_VERSION     4
#define BLE_OTA_DELTA_OFF_BLOCK_SHIFT 5
#define BLE_OTA_DELTA_OFF_RESERVED    6
#define BLE_OTA_DELTA_OFF_OLD_SIZE    8
#define BLE_OTA_DELTA_OFF_OLD_SHA256  12
#define BLE_OTA_DELTA_OFF_NEW_SIZE    44
#define BLE_OTA_DELTA_OFF_NEW_SHA256  48
#define BLE_OTA_DELTA_OFF_PATCH_SIZE  80

/* Opcodes: COPY, ADD and INSERT carry a length of 1-63 in their low 6 bits,
 * or 0 there and a varint v after the opcode for 64 + v. */
#define BLE_OTA_DELTA_OP_COPY      0x00u
#define BLE_OTA_DELTA_OP_ADD       0x40u
#define BLE_OTA_DELTA_OP_INSERT    0x80u
#define BLE_OTA_DELTA_OP_SEEK      0xC0u
#define BLE_OTA_DELTA_OP_END_BLOCK 0xFFu

/* What is wrong; the same names as lib/delta/format.ts's DeltaFault. */
typedef enum {
    BLE_OTA_DELTA_OK = 0,
    BLE_OTA_DELTA_ERR_HEADER,    /* not a patch of this version, or its header is inconsistent */
    BLE_OTA_DELTA_ERR_BASE,      /* made for another old image (larger than old_limit, or refused by check_header) */
    BLE_OTA_DELTA_ERR_TOO_LARGE, /* the new image is larger than new_limit */
    BLE_OTA_DELTA_ERR_OP,        /* a reserved opcode, a varint beyond 32 bits, a SEEK of 0 */
    BLE_OTA_DELTA_ERR_BLOCK,     /* an instruction runs past its block, a cursor disagrees, padding is not 0 */
    BLE_OTA_DELTA_ERR_OLD_RANGE, /* an instruction reads outside the old image */
    BLE_OTA_DELTA_ERR_NEW_RANGE, /* an instruction writes past the new image's size */
    BLE_OTA_DELTA_ERR_LENGTH,    /* bytes past the patch's size, or the patch ends early */
    BLE_OTA_DELTA_ERR_READ,      /* read_old failed */
    BLE_OTA_DELTA_ERR_EMIT,      /* emit failed */
} ble_ota_delta_err_t;

typedef struct {
    uint32_t old_size;
    uint8_t old_sha256[32];
    uint32_t new_size;
    uint8_t new_sha256[32];
    uint32_t patch_size;
} ble_ota_delta_header_t;

/* Reads len (<= BLE_OTA_DELTA_PIECE) bytes of the old image at offset into
 * out; false when it cannot. */
typedef bool (*ble_ota_delta_read_fn)(void *ctx, uint32_t offset, uint8_t *out, size_t len);
/* Takes the next len rebuilt bytes; false when they cannot be stored. */
typedef bool (*ble_ota_delta_emit_fn)(void *ctx, const uint8_t *data, size_t len);
/* Once the header is complete and within the limits, before anything is
 * read or emitted: false refuses the patch (BASE), e.g. when old_sha256
 * is not the running image's. May be NULL. */
typedef bool (*ble_ota_delta_check_fn)(void *ctx, const ble_ota_delta_header_t *header);

typedef struct {
    ble_ota_delta_read_fn read_old;
    ble_ota_delta_emit_fn emit;
    ble_ota_delta_check_fn check_header;
    void *ctx;
    uint32_t old_limit; /* bytes of the old image that may be read */
    uint32_t new_limit; /* bytes the new image may have */
} ble_ota_delta_config_t;

/* The applier's whole state: no allocation, nothing else kept. */
typedef struct {
    ble_ota_delta_config_t config;
    ble_ota_delta_header_t header;
    bool header_known; /* parsed once: a rewind into block 0 must send the same */
    uint8_t phase;
    uint8_t op;
    uint8_t var_bytes;
    uint8_t err;      /* ble_ota_delta_err_t; sticky */
    uint32_t fill;    /* bytes of the header or cursor gathered */
    uint32_t in_pos;  /* patch bytes taken */
    uint32_t new_pos; /* new image bytes the instructions reached */
    uint32_t old_pos;
    uint32_t emitted;   /* new image bytes emitted (never again after a rewind) */
    uint32_t block_new; /* the cursor at the start of the block in progress */
    uint32_t block_old;
    uint32_t remaining; /* data bytes left of the ADD or INSERT in progress */
    uint32_t var_value;
    uint32_t err_offset;
    uint8_t gather[BLE_OTA_DELTA_HEADER_LEN]; /* the header, or a cursor, as it arrives */
    uint8_t piece[BLE_OTA_DELTA_PIECE];
} ble_ota_delta_t;

void ble_ota_delta_init(ble_ota_delta_t *d, const ble_ota_delta_config_t *config);
/* Takes len patch bytes; returns OK or the patch's error. */
ble_ota_delta_err_t ble_ota_delta_feed(ble_ota_delta_t *d, const uint8_t *data, size_t len);
/* The patch is complete: OK only when all its bytes arrived and the whole
 * new image was emitted. */
ble_ota_delta_err_t ble_ota_delta_finish(ble_ota_delta_t *d);
/* Back to the start of the block in progress; returns the patch offset to
 * take bytes from again (a multiple of BLE_OTA_DELTA_BLOCK). */
uint32_t ble_ota_delta_rewind(ble_ota_delta_t *d);
/* The header once parsed (NULL before). */
const ble_ota_delta_header_t *ble_ota_delta_header(const ble_ota_delta_t *d);
/* The patch offset of the error's cause (valid after an error). */
uint32_t ble_ota_delta_error_offset(const ble_ota_delta_t *d);
/* "HEADER", "BASE", ... as lib/delta/format.ts names them; "OK". */
const char *ble_ota_delta_err_name(ble_ota_delta_err_t err);

#endif /* BLE_OTA_DELTA_H */
