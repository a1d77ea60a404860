/*
 * Protocol v2 (docs/PROTOCOL.md): OTA Info, OTA Command, OTA Stream, and
 * the timers behind resume and safe commit.
 *
 * The stream goes through one 4 KB block in the core: flash is written in
 * whole sectors (fewer, larger esp_ota_write calls, and a block that is not
 * written yet survives a lost link), and the SHA-256 of the image is
 * computed here, as it arrives, so END can check it before the slot is
 * validated or selected. With PATCH (docs/DELTA.md) the stream is a delta
 * patch: each chunk goes through the applier, and its rebuilt bytes take
 * the path an image's would.
 */
#include <stddef.h>
#include <string.h>

#include "ble_ota_core.h"
#include "ble_ota_internal.h"
#include "ble_ota_bt.h"
#include "ble_ota_le.h"

/* DEFLATE: a chunk inflates into block with the previous chunk, in history,
 * as its dictionary; the inflater finds it right before its output. */
_Static_assert(BLE_OTA_DEFLATE_CHUNK == BLE_OTA_FLASH_BLOCK, "a chunk fills a flash block");
_Static_assert(offsetof(ble_ota_v2_t, block) == offsetof(ble_ota_v2_t, history) + BLE_OTA_DEFLATE_CHUNK,
               "history sits right before block");

/* Largest answer: INFO's (opcode, status, SHA-256) with its MAC. */
#define BLE_OTA_ANSWER_MAX (2 + BLE_OTA_SHA256_LEN + BLE_OTA_AUTH_MAC_LEN)

static bool
v2_active(const ble_ota_core_t *core)
{
    return core->v2.state == BLE_OTA_V2_RECEIVING || core->v2.state == BLE_OTA_V2_SUSPENDED;
}

/* The port's error as a v2 status. In slot_begin, STATE means esp_ota_begin
 * refused because the running image is not confirmed yet. */
static uint8_t
v2_status_of(ble_ota_port_err_t err, bool at_begin)
{
    switch (err) {
    case BLE_OTA_PORT_OK:
        return BLE_OTA_ST_OK;
    case BLE_OTA_PORT_ERR_NO_SLOT:
        return BLE_OTA_ST_NO_SLOT;
    case BLE_OTA_PORT_ERR_TOO_LARGE:
        return BLE_OTA_ST_TOO_LARGE;
    case BLE_OTA_PORT_ERR_INVALID_IMAGE:
        return BLE_OTA_ST_INVALID_IMAGE;
    case BLE_OTA_PORT_ERR_SIGNATURE:
        return BLE_OTA_ST_BAD_SIGNATURE;
    case BLE_OTA_PORT_ERR_STATE:
        return at_begin ? BLE_OTA_ST_PENDING_CONFIRM : BLE_OTA_ST_FLASH_ERROR;
    case BLE_OTA_PORT_ERR_FLASH:
    case BLE_OTA_PORT_ERR_OTHER:
    default:
        return BLE_OTA_ST_FLASH_ERROR;
    }
}

static void
v2_notify(ble_ota_core_t *core, const uint8_t *data, size_t len)
{
    core->port->notify_command(core->port->ctx, data, len);
}

/* Sends an answer (len bytes in a buffer of BLE_OTA_ANSWER_MAX), with the
 * session MAC when its request carried one: the client then knows the
 * device that holds the key said it. */
static void
v2_send_answer(ble_ota_core_t *core, uint8_t *answer, size_t len)
{
    v2_notify(core, answer, ble_ota_auth_seal(core, answer, len, BLE_OTA_ANSWER_MAX));
}

/* An answer without fields. BEGIN and END statuses are what OTA Info
 * reports as last_status. */
static void
v2_answer(ble_ota_core_t *core, uint8_t opcode, uint8_t status)
{
    uint8_t answer[BLE_OTA_ANSWER_MAX] = { (uint8_t)(opcode | BLE_OTA_ANSWER), status };

    if (opcode == BLE_OTA_CMD_BEGIN || opcode == BLE_OTA_CMD_END) {
        core->last_status = status;
    }
    v2_send_answer(core, answer, 2);
}

/* Refuses a request that did not authenticate: a plain answer. On a
 * device with authentication, OTA Info's last_status stays the owner's:
 * strangers' requests leave it. */
static void
v2_refuse(ble_ota_core_t *core, uint8_t opcode, uint8_t status)
{
    const uint8_t answer[2] = { (uint8_t)(opcode | BLE_OTA_ANSWER), status };

    if (!core->config.auth && (opcode == BLE_OTA_CMD_BEGIN || opcode == BLE_OTA_CMD_END)) {
        core->last_status = status;
    }
    v2_notify(core, answer, sizeof(answer));
}

static void
v2_event_offset(ble_ota_core_t *core, uint8_t event, uint32_t offset)
{
    uint8_t msg[5];

    msg[0] = event;
    ble_ota_put_le32(msg + 1, offset);
    v2_notify(core, msg, sizeof(msg));
}

/* Forgets the transfer; the caller has closed or aborted the slot. */
static void
v2_reset(ble_ota_core_t *core)
{
    ble_ota_v2_t *t = &core->v2;

    t->state = BLE_OTA_V2_IDLE;
    t->size = 0;
    memset(t->sha256, 0, sizeof(t->sha256));
    t->flags = 0;
    t->received = 0;
    t->stored = 0;
    t->deflate = false;
    t->chunk_start = 0;
    t->chunk_len = 0;
    t->chunk_fill = 0;
    t->acked = 0;
    t->resync_offset = 0;
    t->resync_sent = false;
    t->restart_requested = false;
    t->restart_scheduled = false;
    t->suspended_at_ms = 0;
    t->block_offset = 0;
    t->block_fill = 0;
    t->patch = false;
    memset(t->base_sha256, 0, sizeof(t->base_sha256));
    t->patch_in = 0;
    /* The hash state and the block keep stale bytes: both are reset when
     * the next transfer begins, and nothing reads them before. */
}

void
ble_ota_v2_abort(ble_ota_core_t *core, const char *why)
{
    if (core->v2.state == BLE_OTA_V2_COMPLETE && !core->v2.restart_requested) {
        /* Valid but never selected: its slot is closed, nothing to undo. */
        ble_ota_log(core->port, BLE_OTA_LOG_WARN, "%s: the complete image is dropped", why);
        v2_reset(core);
        return;
    }
    if (!v2_active(core)) {
        return;
    }
    ble_ota_log(core->port, BLE_OTA_LOG_WARN, "%s: v2 transfer aborted at %lu of %lu bytes", why,
                (unsigned long)core->v2.received, (unsigned long)core->v2.size);
    core->port->slot_abort(core->port->ctx);
    v2_reset(core);
}

/* The transfer cannot go on: tell the client (FAILED) and free the slot. */
static void
v2_fail(ble_ota_core_t *core, uint8_t status, uint32_t offset)
{
    uint8_t msg[6];

    ble_ota_log(core->port, BLE_OTA_LOG_ERROR, "v2 transfer failed at %lu: status 0x%02x", (unsigned long)offset,
                status);
    core->port->slot_abort(core->port->ctx);
    v2_reset(core);
    core->last_status = status;
    msg[0] = BLE_OTA_EVT_FAILED;
    msg[1] = status;
    ble_ota_put_le32(msg + 2, offset);
    v2_notify(core, msg, sizeof(msg));
}

void
ble_ota_v2_disconnected(ble_ota_core_t *core)
{
    if (core->v2.state != BLE_OTA_V2_RECEIVING) {
        return;
    }
    /* Kept as it is (open slot, hash, unwritten block) for a BEGIN of the
     * same image; tick() aborts it if nobody comes back. */
    core->v2.state = BLE_OTA_V2_SUSPENDED;
    core->v2.suspended_at_ms = core->port->now_ms(core->port->ctx);
    ble_ota_log(core->port, BLE_OTA_LOG_INFO, "link lost: v2 transfer suspended at %lu of %lu bytes",
                (unsigned long)core->v2.received, (unsigned long)core->v2.size);
}

/* --- delta patches (docs/DELTA.md) ---------------------------------------- */

static bool v2_store(ble_ota_core_t *core, const uint8_t *bytes, uint32_t n, uint32_t offset);

/* The device applies patches: it reads its running slot and inflates. */
static bool
v2_delta_capable(const ble_ota_core_t *core)
{
    return core->port->running_read != NULL && core->port->inflate != NULL;
}

/* Every byte of the stream arrived: the image's, or with PATCH the patch's. */
static bool
v2_stream_done(const ble_ota_v2_t *t)
{
    if (t->patch) {
        const ble_ota_delta_header_t *h = ble_ota_delta_header(&t->delta);
        return h != NULL && t->patch_in == h->patch_size;
    }
    return t->stored == t->size;
}

/* The applier reads the running image. */
static bool
v2_patch_read(void *ctx, uint32_t offset, uint8_t *out, size_t len)
{
    const ble_ota_core_t *core = ctx;
    const ble_ota_port_err_t err = core->port->running_read(core->port->ctx, offset, out, len);

    if (err != BLE_OTA_PORT_OK) {
        ble_ota_log(core->port, BLE_OTA_LOG_ERROR, "patch: reading %lu bytes of the running image at %lu failed (%s)",
                    (unsigned long)len, (unsigned long)offset, ble_ota_port_err_name(err));
    }
    return err == BLE_OTA_PORT_OK;
}

/* Rebuilt bytes take an image's path: hash, image check, block, flash. On
 * a failure v2_store has ended the transfer and told the client. */
static bool
v2_patch_emit(void *ctx, const uint8_t *data, size_t len)
{
    ble_ota_core_t *core = ctx;

    return v2_store(core, data, (uint32_t)len, core->v2.chunk_start);
}

/* The patch's header must describe what BEGIN announced, before anything
 * is read or written: the running image as base, BEGIN's size and SHA-256
 * as the result. */
static bool
v2_patch_check(void *ctx, const ble_ota_delta_header_t *h)
{
    const ble_ota_core_t *core = ctx;
    const ble_ota_v2_t *t = &core->v2;
    const char *wrong = NULL;

    if (h->old_size != core->running_size || memcmp(h->old_sha256, t->base_sha256, BLE_OTA_SHA256_LEN) != 0) {
        wrong = "its base is not BEGIN's";
    } else if (h->new_size != t->size) {
        wrong = "its new size is not BEGIN's";
    } else if (memcmp(h->new_sha256, t->sha256, BLE_OTA_SHA256_LEN) != 0) {
        wrong = "its new SHA-256 is not BEGIN's";
    }
    if (wrong != NULL) {
        ble_ota_log(core->port, BLE_OTA_LOG_ERROR, "patch header refused: %s", wrong);
        return false;
    }
    return true;
}

static void
v2_patch_start(ble_ota_core_t *core)
{
    const ble_ota_delta_config_t config = {
        .read_old = v2_patch_read,
        .emit = v2_patch_emit,
        .check_header = v2_patch_check,
        .ctx = core,
        .old_limit = core->running_size,
        .new_limit = core->v2.size,
    };

    ble_ota_delta_init(&core->v2.delta, &config);
    core->v2.patch_in = 0;
}

/* --- OTA Command --------------------------------------------------------- */

static void
v2_answer_begin(ble_ota_core_t *core, uint32_t offset)
{
    uint8_t answer[BLE_OTA_ANSWER_MAX]; /* opcode, status, offset, window, max_packet[, image_offset] */

    answer[0] = BLE_OTA_CMD_BEGIN | BLE_OTA_ANSWER;
    answer[1] = BLE_OTA_ST_OK;
    ble_ota_put_le32(answer + 2, offset);
    ble_ota_put_le16(answer + 6, core->config.window);
    ble_ota_put_le16(answer + 8, core->config.max_packet);
    /* DEFLATE: the image offset of the chunk that starts at `offset`;
     * PATCH: its patch offset. */
    ble_ota_put_le32(answer + 10, core->v2.patch ? core->v2.patch_in : core->v2.stored);
    core->last_status = BLE_OTA_ST_OK;
    v2_send_answer(core, answer, core->v2.deflate ? 14 : 10);
}

static void
v2_begin(ble_ota_core_t *core, const uint8_t *data, size_t len)
{
    const ble_ota_port_t *port = core->port;
    ble_ota_v2_t *t = &core->v2;
    ble_ota_device_info_t info;

    /* Before anything else: a request without the key learns nothing. Its
     * length depends on the PATCH flag (base_sha256 follows flags). */
    const uint16_t flags = len >= BLE_OTA_BEGIN_SIZE ? ble_ota_get_le16(data + 39) : 0;
    const bool patch = (flags & BLE_OTA_BEGIN_FLAG_PATCH) != 0;
    const uint8_t auth = ble_ota_auth_check(core, data, len, patch ? BLE_OTA_BEGIN_PATCH_SIZE : BLE_OTA_BEGIN_SIZE);
    if (auth != BLE_OTA_ST_OK) {
        v2_refuse(core, BLE_OTA_CMD_BEGIN, auth);
        return;
    }
    const uint32_t size = ble_ota_get_le32(data + 1);
    const uint8_t *sha256 = data + 5;
    const uint16_t chip_id = ble_ota_get_le16(data + 37);
    const uint8_t *base = data + BLE_OTA_BEGIN_SIZE; /* PATCH only */

    /* The selected slot must boot as it is: a new transfer would erase it. */
    if (ble_ota_restart_pending(core)) {
        v2_answer(core, BLE_OTA_CMD_BEGIN, BLE_OTA_ST_BAD_STATE);
        return;
    }
    const uint16_t known = BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM |
                           (port->inflate != NULL ? BLE_OTA_BEGIN_FLAG_DEFLATE : 0) |
                           (v2_delta_capable(core) ? BLE_OTA_BEGIN_FLAG_PATCH : 0);
    const bool deflate = (flags & BLE_OTA_BEGIN_FLAG_DEFLATE) != 0;
    if (size == 0 || (flags & ~known) != 0 || (patch && !deflate)) {
        v2_answer(core, BLE_OTA_CMD_BEGIN, BLE_OTA_ST_BAD_ARGUMENT);
        return;
    }
    memset(&info, 0, sizeof(info));
    port->device_info(port->ctx, &info);
    if (info.slot_size == 0) {
        v2_answer(core, BLE_OTA_CMD_BEGIN, BLE_OTA_ST_NO_SLOT);
        return;
    }
    if (size > info.slot_size) {
        v2_answer(core, BLE_OTA_CMD_BEGIN, BLE_OTA_ST_TOO_LARGE);
        return;
    }
    if (chip_id != info.chip_id) {
        v2_answer(core, BLE_OTA_CMD_BEGIN, BLE_OTA_ST_WRONG_CHIP);
        return;
    }
    /* No image can pass slot_end's signature check: say so before the
     * client sends it (END would answer the same after the whole image). */
    if (info.signed_updates && info.no_trusted_key) {
        ble_ota_log(port, BLE_OTA_LOG_ERROR,
                    "BEGIN refused: this app carries no signature that signs it, so no signing key is trusted; "
                    "flash a signed app over USB");
        v2_answer(core, BLE_OTA_CMD_BEGIN, BLE_OTA_ST_BAD_SIGNATURE);
        return;
    }
    /* Checked here too (slot_begin refuses it as well) so that a refused
     * BEGIN never costs the transfer a client may still resume. */
    if (port->running_state(port->ctx) == BLE_OTA_IMG_PENDING_VERIFY) {
        v2_answer(core, BLE_OTA_CMD_BEGIN, BLE_OTA_ST_PENDING_CONFIRM);
        return;
    }
    /* A patch rebuilds one image from one other: the running one, as the
     * device found it at start. Refused before anything changes. */
    if (patch && (core->running_size == 0 || memcmp(base, core->running_sha256, BLE_OTA_SHA256_LEN) != 0)) {
        ble_ota_log(port, BLE_OTA_LOG_WARN, "BEGIN: the patch is for another image than the running one%s",
                    core->running_size == 0 ? " (not known)" : "");
        v2_answer(core, BLE_OTA_CMD_BEGIN, BLE_OTA_ST_WRONG_BASE);
        return;
    }

    /* The same image in the same form (plain, deflated, or a patch of the
     * same base): the offsets the device holds count the stream the client
     * sends. In another form they would not, and it starts over. */
    const bool same = t->size == size && memcmp(t->sha256, sha256, BLE_OTA_SHA256_LEN) == 0 && t->deflate == deflate &&
                      t->patch == patch && (!patch || memcmp(t->base_sha256, base, BLE_OTA_SHA256_LEN) == 0);
    if (t->state == BLE_OTA_V2_COMPLETE && same) {
        /* Received and valid already (END's answer, or the link, was
         * lost): nothing to send; END answers OK again. */
        t->flags = flags;
        ble_ota_log(port, BLE_OTA_LOG_INFO, "BEGIN: image complete already");
        v2_answer_begin(core, t->received);
        return;
    }
    if (v2_active(core) && same) {
        /* The same image: go on from what is stored. Every byte below
         * received is in flash or in the block, so that is the offset,
         * even if its ACK never reached the client. With DEFLATE, a chunk
         * only partly received is dropped: the client encodes again from
         * the chunk at image_offset (its encoding may differ, the image not). */
        t->state = BLE_OTA_V2_RECEIVING;
        t->flags = flags;
        if (deflate) {
            t->received = t->chunk_start;
            t->chunk_len = 0;
            t->chunk_fill = 0;
        }
        if (patch && !v2_stream_done(t)) {
            /* Only whole chunks reach the applier: it stands at the start
             * of the block the next chunk carries (after the last one, the
             * patch is complete and stays so). */
            t->patch_in = ble_ota_delta_rewind(&t->delta);
        }
        t->acked = t->received;
        t->resync_sent = false; /* an earlier RESYNC may have gone with the old link */
        ble_ota_log(port, BLE_OTA_LOG_INFO, "BEGIN: resuming at %lu of %lu bytes", (unsigned long)t->received,
                    (unsigned long)size);
        v2_answer_begin(core, t->received);
        return;
    }

    ble_ota_v2_abort(core, "BEGIN for another image or form");
    ble_ota_seed_abort(core, "BEGIN");
    const ble_ota_port_err_t err = port->slot_begin(port->ctx, size);
    if (err != BLE_OTA_PORT_OK) {
        ble_ota_log(port, BLE_OTA_LOG_ERROR, "BEGIN refused: %s", ble_ota_port_err_name(err));
        v2_answer(core, BLE_OTA_CMD_BEGIN, v2_status_of(err, true));
        return;
    }
    v2_reset(core);
    t->state = BLE_OTA_V2_RECEIVING;
    t->size = size;
    memcpy(t->sha256, sha256, BLE_OTA_SHA256_LEN);
    t->flags = flags;
    t->deflate = deflate;
    ble_ota_sha256_init(&t->hash);
    if (patch) {
        t->patch = true;
        memcpy(t->base_sha256, base, BLE_OTA_SHA256_LEN);
        v2_patch_start(core);
    }
    ble_ota_log(port, BLE_OTA_LOG_INFO, "BEGIN: %lu bytes%s%s", (unsigned long)size,
                (flags & BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM) ? ", client confirms" : "",
                patch     ? ", delta patch"
                : deflate ? ", deflated"
                          : "");
    v2_answer_begin(core, 0);
}

static void
v2_end(ble_ota_core_t *core)
{
    const ble_ota_port_t *port = core->port;
    ble_ota_v2_t *t = &core->v2;
    uint8_t digest[BLE_OTA_SHA256_LEN];

    if (t->state == BLE_OTA_V2_COMPLETE) {
        /* A client whose answer was lost with the link asks again. */
        v2_answer(core, BLE_OTA_CMD_END, BLE_OTA_ST_OK);
        return;
    }
    if (t->state != BLE_OTA_V2_RECEIVING || ble_ota_restart_pending(core)) {
        v2_answer(core, BLE_OTA_CMD_END, BLE_OTA_ST_BAD_STATE);
        return;
    }
    if (!v2_stream_done(t)) {
        /* The transfer stays: the client may send the rest and END again. */
        ble_ota_log(port, BLE_OTA_LOG_WARN, "END at %lu of %lu bytes", (unsigned long)t->stored,
                    (unsigned long)t->size);
        v2_answer(core, BLE_OTA_CMD_END, BLE_OTA_ST_INCOMPLETE);
        return;
    }
    /* The last block was written when the last byte arrived. */
    ble_ota_sha256_final(&t->hash, digest);
    if (memcmp(digest, t->sha256, sizeof(digest)) != 0) {
        /* Never validated nor selected: what arrived is not what the
         * client meant to send, even if it happens to be a valid image. */
        ble_ota_log(port, BLE_OTA_LOG_ERROR, "END: SHA-256 of %lu bytes differs from BEGIN's",
                    (unsigned long)t->stored);
        port->slot_abort(port->ctx);
        v2_reset(core);
        v2_answer(core, BLE_OTA_CMD_END, BLE_OTA_ST_HASH_MISMATCH);
        return;
    }
    /* slot_end closes the slot whatever it returns. */
    ble_ota_port_err_t err = port->slot_end(port->ctx);
    if (err != BLE_OTA_PORT_OK) {
        ble_ota_log(port, BLE_OTA_LOG_ERROR, "END: image rejected (%s)", ble_ota_port_err_name(err));
        v2_reset(core);
        v2_answer(core, BLE_OTA_CMD_END, v2_status_of(err, false));
        return;
    }
    /* Valid, and not selected: only RESTART selects it, so no reboot of
     * any other kind (a power cut, a crash, the app's own restart) starts
     * an image the client has not asked for. Unrestarted, it is dropped
     * after the abandon timeout (ble_ota_core_tick). */
    t->state = BLE_OTA_V2_COMPLETE;
    t->suspended_at_ms = port->now_ms(port->ctx);
    ble_ota_log(port, BLE_OTA_LOG_INFO, "END: %lu bytes, image valid; RESTART boots it", (unsigned long)t->size);
    v2_answer(core, BLE_OTA_CMD_END, BLE_OTA_ST_OK);
}

static void
v2_restart(ble_ota_core_t *core)
{
    const ble_ota_port_t *port = core->port;
    ble_ota_v2_t *t = &core->v2;

    if (t->state != BLE_OTA_V2_COMPLETE) {
        v2_answer(core, BLE_OTA_CMD_RESTART, BLE_OTA_ST_BAD_STATE);
        return;
    }
    if (!t->restart_requested) {
        /* The flag first: a power loss before set_boot_slot leaves the old
         * image running, and the flag only matters to a pending-verify image. */
        ble_ota_port_err_t err = port->set_confirm_required(port->ctx,
                                                            (t->flags & BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM) != 0);
        if (err == BLE_OTA_PORT_OK) {
            err = port->set_boot_slot(port->ctx);
        }
        if (err == BLE_OTA_PORT_ERR_FLASH) {
            /* Still COMPLETE: the client may ask again. */
            ble_ota_log(port, BLE_OTA_LOG_ERROR, "RESTART: boot slot not set (%s)", ble_ota_port_err_name(err));
            v2_answer(core, BLE_OTA_CMD_RESTART, BLE_OTA_ST_FLASH_ERROR);
            return;
        }
        if (err != BLE_OTA_PORT_OK) {
            /* Refused for good (esp_ota_set_boot_partition validates the image
             * again, and checks anti-rollback): the image is dropped. */
            ble_ota_log(port, BLE_OTA_LOG_ERROR, "RESTART: image refused (%s)", ble_ota_port_err_name(err));
            v2_reset(core);
            v2_answer(core, BLE_OTA_CMD_RESTART, v2_status_of(err, false));
            return;
        }
        t->restart_requested = true;
        ble_ota_log(port, BLE_OTA_LOG_INFO, "RESTART: new image selected for the next boot");
    }
    /* Answer first: the delay lets the notification leave before the link
     * drops. A RESTART asked again (its answer lost) schedules nothing more. */
    v2_answer(core, BLE_OTA_CMD_RESTART, BLE_OTA_ST_OK);
    if (t->restart_requested && !t->restart_scheduled) {
        t->restart_scheduled = true;
        port->restart(port->ctx, BLE_OTA_RESTART_DELAY_MS);
    }
}

static void
v2_abort_command(ble_ota_core_t *core)
{
    if (ble_ota_restart_pending(core)) {
        /* The new slot is selected already; no port call undoes that. */
        v2_answer(core, BLE_OTA_CMD_ABORT, BLE_OTA_ST_BAD_STATE);
        return;
    }
    ble_ota_v2_abort(core, "ABORT");
    ble_ota_seed_abort(core, "ABORT");
    v2_answer(core, BLE_OTA_CMD_ABORT, BLE_OTA_ST_OK);
}

static void
v2_confirm(ble_ota_core_t *core)
{
    const ble_ota_port_t *port = core->port;

    if (port->running_state(port->ctx) != BLE_OTA_IMG_PENDING_VERIFY) {
        v2_answer(core, BLE_OTA_CMD_CONFIRM, BLE_OTA_ST_NOT_PENDING);
        return;
    }
    /* Never before the self-test passed: a client's CONFIRM proves the link,
     * the self-test what the app checks at boot. After it, also an image
     * the device meant to confirm itself (its own mark_valid failed). */
    if (!core->self_test_passed) {
        v2_answer(core, BLE_OTA_CMD_CONFIRM, BLE_OTA_ST_BAD_STATE);
        return;
    }
    const ble_ota_port_err_t err = port->mark_valid(port->ctx);
    if (err != BLE_OTA_PORT_OK) {
        /* Still pending: the confirm window keeps running. */
        ble_ota_log(port, BLE_OTA_LOG_ERROR, "CONFIRM: marking the image valid failed (%s)",
                    ble_ota_port_err_name(err));
        v2_answer(core, BLE_OTA_CMD_CONFIRM, BLE_OTA_ST_FLASH_ERROR);
        return;
    }
    core->confirm_waiting = false;
    ble_ota_log(port, BLE_OTA_LOG_INFO, "CONFIRM: new image confirmed by the client");
    v2_answer(core, BLE_OTA_CMD_CONFIRM, BLE_OTA_ST_OK);
}

/* INFO: the SHA-256 of the OTA Info value as a read returns it now, in an
 * answer the session MAC proves; a client compares it with what it read. */
static void
v2_info(ble_ota_core_t *core)
{
    uint8_t info[BLE_OTA_INFO_SIZE];
    uint8_t answer[BLE_OTA_ANSWER_MAX] = { BLE_OTA_CMD_INFO | BLE_OTA_ANSWER, BLE_OTA_ST_OK };

    ble_ota_core_info_read(core, info, sizeof(info));
    ble_ota_sha256(info, sizeof(info), answer + 2);
    v2_send_answer(core, answer, 2 + BLE_OTA_SHA256_LEN);
}

/* A write that is no request of this device's: on a device with
 * authentication, a stranger's probing, which counts against its link. */
static void
v2_junk(ble_ota_core_t *core, const char *what)
{
    if (!core->auth.authenticated) {
        ble_ota_auth_failed(core, what);
    }
}

static ble_ota_status_t
v2_command_write(ble_ota_core_t *core, const uint8_t *data, size_t len)
{
    if (core->auth.dropping) {
        return BLE_OTA_OK; /* the link is ending: nothing it says counts */
    }
    core->auth.answer_signed = false;
    /* The write fails (no answer could be told from an event): the same
     * check a GATT layer that answers the write before the core sees the
     * request makes (ble_ota_bt.h). */
    const ble_ota_status_t refused = ble_ota_bt_command_check(data, len);
    if (refused == BLE_OTA_ERR_LENGTH) {
        v2_junk(core, "empty command");
        return refused;
    }
    if (refused != BLE_OTA_OK) {
        ble_ota_log(core->port, BLE_OTA_LOG_WARN, "OTA Command 0x%02x is no request", data[0]);
        v2_junk(core, "no request");
        return refused;
    }
    const uint8_t opcode = data[0];
    if (opcode == BLE_OTA_CMD_BEGIN) {
        v2_begin(core, data, len);
        return BLE_OTA_OK;
    }
    if (core->config.auth && opcode == BLE_OTA_CMD_HELLO) {
        uint8_t answer[BLE_OTA_ANSWER_MAX];
        v2_notify(core, answer, ble_ota_auth_hello(core, data, len, answer, sizeof(answer)));
        return BLE_OTA_OK;
    }
    const bool known = (opcode >= BLE_OTA_CMD_END && opcode <= BLE_OTA_CMD_CONFIRM) ||
                       (core->config.auth && opcode == BLE_OTA_CMD_INFO);
    if (!known) {
        ble_ota_log(core->port, BLE_OTA_LOG_WARN, "OTA Command 0x%02x unknown", opcode);
        v2_junk(core, "unknown command");
        v2_refuse(core, opcode, BLE_OTA_ST_UNKNOWN_COMMAND);
        return BLE_OTA_OK;
    }
    const uint8_t auth = ble_ota_auth_check(core, data, len, 1);
    if (auth != BLE_OTA_ST_OK) {
        v2_refuse(core, opcode, auth);
        return BLE_OTA_OK;
    }
    switch (opcode) {
    case BLE_OTA_CMD_END:
        v2_end(core);
        break;
    case BLE_OTA_CMD_RESTART:
        v2_restart(core);
        break;
    case BLE_OTA_CMD_ABORT:
        v2_abort_command(core);
        break;
    case BLE_OTA_CMD_INFO:
        v2_info(core);
        break;
    case BLE_OTA_CMD_CONFIRM:
    default:
        v2_confirm(core);
        break;
    }
    return BLE_OTA_OK;
}

/* --- OTA Stream ----------------------------------------------------------- */

/* Writes the block to the slot; false (transfer failed) on error. */
static bool
v2_flush(ble_ota_core_t *core, uint32_t packet_offset)
{
    ble_ota_v2_t *t = &core->v2;

    if (t->block_fill == 0) {
        return true;
    }
    const ble_ota_port_err_t err = core->port->slot_write(core->port->ctx, t->block, t->block_fill);
    if (err != BLE_OTA_PORT_OK) {
        ble_ota_log(core->port, BLE_OTA_LOG_ERROR, "flash write of %lu bytes at %lu failed (%s)",
                    (unsigned long)t->block_fill, (unsigned long)t->block_offset, ble_ota_port_err_name(err));
        v2_fail(core, v2_status_of(err, false), packet_offset);
        return false;
    }
    t->block_offset += t->block_fill;
    t->block_fill = 0;
    return true;
}

/* Checks the start of the image while it arrives, from its first byte on
 * (it stays in the block until the first 4 KB are complete): a wrong file
 * fails at once instead of after the whole upload. */
static bool
v2_check_header(ble_ota_core_t *core)
{
    const ble_ota_v2_t *t = &core->v2;
    const size_t len = t->stored < BLE_OTA_IMAGE_HEAD_LEN ? t->stored : BLE_OTA_IMAGE_HEAD_LEN;
    const uint8_t status = ble_ota_image_head_check(core->port, t->block, len, t->stored == t->size);

    if (status != BLE_OTA_ST_OK) {
        v2_fail(core, status, 0);
        return false;
    }
    return true;
}

/* Stores image bytes (hash, header check, block, flash); false when the
 * transfer failed. `offset`: the stream offset of the packet, for FAILED. */
static bool
v2_store(ble_ota_core_t *core, const uint8_t *bytes, uint32_t n, uint32_t offset)
{
    ble_ota_v2_t *t = &core->v2;

    ble_ota_sha256_update(&t->hash, bytes, n);
    while (n > 0) {
        uint32_t room = BLE_OTA_FLASH_BLOCK - t->block_fill;
        if (room > n) {
            room = n;
        }
        const uint32_t before = t->stored;
        if (bytes != t->block + t->block_fill) { /* an inflated chunk is in place already */
            memcpy(t->block + t->block_fill, bytes, room);
        }
        t->block_fill += room;
        t->stored += room;
        bytes += room;
        n -= room;
        /* Before the first block leaves for flash. */
        if (t->block_offset == 0 && before < BLE_OTA_IMAGE_HEAD_LEN && !v2_check_header(core)) {
            return false;
        }
        if (t->block_fill == BLE_OTA_FLASH_BLOCK && !v2_flush(core, offset)) {
            return false;
        }
    }
    /* The last block is partial: write it now, so that the final ACK means
     * "in flash" and a write error still comes as FAILED, not at END. */
    return t->stored != t->size || v2_flush(core, offset);
}

/* PATCH: a whole patch block (psize bytes in block) goes through the
 * applier; false when the transfer failed. */
static bool
v2_patch_chunk(ble_ota_core_t *core, uint32_t psize)
{
    ble_ota_v2_t *t = &core->v2;
    const bool first = t->patch_in == 0;

    /* The block moves to history: the applier's input now, the next
     * chunk's dictionary then. block takes the rebuilt bytes, after those
     * held back at the last chunk's end. */
    memcpy(t->history, t->block, psize);
    if (t->block_fill > 0) {
        memcpy(t->block, t->head_hold, t->block_fill);
    }
    ble_ota_delta_err_t err = ble_ota_delta_feed(&t->delta, t->history, psize);
    if (t->state != BLE_OTA_V2_RECEIVING) {
        return false; /* v2_store failed and said so */
    }
    const ble_ota_delta_header_t *h = ble_ota_delta_header(&t->delta);
    if (err == BLE_OTA_DELTA_OK) {
        t->patch_in += psize;
        /* The first chunk's size came from the chunk (the patch's size was
         * not known yet): its header must agree. */
        if (h == NULL ||
            (first && psize != (h->patch_size < BLE_OTA_DEFLATE_CHUNK ? h->patch_size : BLE_OTA_DEFLATE_CHUNK))) {
            ble_ota_log(core->port, BLE_OTA_LOG_ERROR, "patch: a first chunk of %lu bytes for a patch of %lu",
                        (unsigned long)psize, h == NULL ? 0ul : (unsigned long)h->patch_size);
            v2_fail(core, BLE_OTA_ST_BAD_DATA, t->chunk_start);
            return false;
        }
        if (t->patch_in == h->patch_size) {
            err = ble_ota_delta_finish(&t->delta);
        }
    }
    if (err != BLE_OTA_DELTA_OK) {
        ble_ota_log(core->port, BLE_OTA_LOG_ERROR, "patch refused: %s at patch offset %lu", ble_ota_delta_err_name(err),
                    (unsigned long)ble_ota_delta_error_offset(&t->delta));
        v2_fail(core, err == BLE_OTA_DELTA_ERR_READ ? BLE_OTA_ST_FLASH_ERROR : BLE_OTA_ST_BAD_DATA, t->chunk_start);
        return false;
    }
    /* The next chunk inflates into block: what it holds goes to flash now,
     * unless it is the image's first bytes and fewer than the image check
     * needs (they wait in head_hold; the final flush came with the last byte). */
    if (t->block_offset == 0 && t->stored < BLE_OTA_IMAGE_HEAD_LEN && t->stored < t->size) {
        memcpy(t->head_hold, t->block, t->block_fill);
        return true;
    }
    return v2_flush(core, t->chunk_start);
}

/* DEFLATE: takes stream bytes into the chunk being assembled, and stores
 * each chunk once it is whole; false when the transfer failed. */
static bool
v2_take_chunks(ble_ota_core_t *core, const uint8_t *bytes, uint32_t n, uint32_t offset)
{
    ble_ota_v2_t *t = &core->v2;

    while (n > 0) {
        /* The chunk's size: the rest of the image (or patch) up to 4 KB. A
         * patch's first chunk tells its own (the patch's size is in it):
         * 4096 bytes as they are, or fewer, deflated when they inflate to
         * more, else as they are. */
        const ble_ota_delta_header_t *h = t->patch ? ble_ota_delta_header(&t->delta) : NULL;
        const bool size_unknown = t->patch && h == NULL;
        const uint32_t left = size_unknown ? BLE_OTA_DEFLATE_CHUNK
                              : t->patch   ? h->patch_size - t->patch_in
                                           : t->size - t->stored;
        const uint32_t size = left < BLE_OTA_DEFLATE_CHUNK ? left : BLE_OTA_DEFLATE_CHUNK;
        if (size == 0) {
            ble_ota_log(core->port, BLE_OTA_LOG_ERROR, "stream goes on after the last chunk");
            v2_fail(core, BLE_OTA_ST_BAD_DATA, offset);
            return false;
        }
        uint32_t room = t->chunk_fill < 2 ? 2 - t->chunk_fill : 2u + t->chunk_len - t->chunk_fill;
        if (room > n) {
            room = n;
        }
        memcpy(t->chunk + t->chunk_fill, bytes, room);
        t->chunk_fill += room;
        t->received += room;
        bytes += room;
        n -= room;
        if (t->chunk_fill == 2 && t->chunk_len == 0) {
            t->chunk_len = ble_ota_get_le16(t->chunk);
            if (t->chunk_len == 0 || t->chunk_len > size) {
                ble_ota_log(core->port, BLE_OTA_LOG_ERROR, "chunk at %lu: length %u for %lu bytes",
                            (unsigned long)t->chunk_start, (unsigned)t->chunk_len, (unsigned long)size);
                v2_fail(core, BLE_OTA_ST_BAD_DATA, t->chunk_start);
                return false;
            }
            continue;
        }
        if (t->chunk_fill < 2 || t->chunk_fill < 2u + t->chunk_len) {
            continue;
        }
        /* A whole chunk: a whole block (the last one may be shorter), into
         * the block buffer, which is empty at every chunk boundary (but for
         * a patch's held first bytes). Its dictionary is the previous chunk,
         * in history (kept while a transfer is suspended, so a resume has it
         * too). */
        const size_t history = (t->patch ? t->patch_in : t->stored) == 0 ? 0 : BLE_OTA_DEFLATE_CHUNK;
        size_t made = size;
        if (t->chunk_len == size) {
            memcpy(t->block, t->chunk + 2, size);
        } else if (core->port->inflate(core->port->ctx, t->chunk + 2, t->chunk_len, t->block, &made, history) &&
                   (size_unknown ? made > t->chunk_len : made == size)) {
            /* deflated */
        } else if (size_unknown) {
            made = t->chunk_len; /* a patch shorter than a chunk, as it is */
            memcpy(t->block, t->chunk + 2, made);
        } else {
            ble_ota_log(core->port, BLE_OTA_LOG_ERROR, "chunk at %lu does not inflate to %lu bytes",
                        (unsigned long)t->chunk_start, (unsigned long)size);
            v2_fail(core, BLE_OTA_ST_BAD_DATA, t->chunk_start);
            return false;
        }
        if (t->patch) {
            if (!v2_patch_chunk(core, (uint32_t)made)) {
                return false;
            }
        } else {
            if (!v2_store(core, t->block, size, t->chunk_start)) {
                return false;
            }
            memcpy(t->history, t->block, size); /* only the last chunk is shorter, and nothing follows it */
        }
        t->chunk_start = t->received;
        t->chunk_len = 0;
        t->chunk_fill = 0;
    }
    return true;
}

/* Takes a packet at the expected offset. */
static void
v2_take(ble_ota_core_t *core, const uint8_t *bytes, uint32_t n)
{
    ble_ota_v2_t *t = &core->v2;
    const uint32_t offset = t->received;

    if (t->deflate) {
        if (!v2_take_chunks(core, bytes, n, offset)) {
            return;
        }
    } else {
        t->received += n;
        if (!v2_store(core, bytes, n, offset)) {
            return;
        }
    }
    uint32_t step = core->config.window / BLE_OTA_ACKS_PER_WINDOW;
    if (step == 0) {
        step = 1;
    }
    if (v2_stream_done(t) || t->received - t->acked >= step) {
        t->acked = t->received;
        v2_event_offset(core, BLE_OTA_EVT_ACK, t->received);
    }
}

static ble_ota_status_t
v2_stream_write(ble_ota_core_t *core, const uint8_t *data, size_t len)
{
    ble_ota_v2_t *t = &core->v2;

    /* Stream values come as Write Commands: an error would reach nobody,
     * so whatever is wrong is ignored, logged, or told by an event. */
    if (t->state != BLE_OTA_V2_RECEIVING || data == NULL || len <= BLE_OTA_STREAM_HEADER) {
        return BLE_OTA_OK;
    }
    if (len > core->config.max_packet) {
        ble_ota_log(core->port, BLE_OTA_LOG_WARN, "stream packet of %lu bytes ignored (max %u)", (unsigned long)len,
                    (unsigned)core->config.max_packet);
        return BLE_OTA_OK;
    }
    const uint32_t offset = ble_ota_get_le32(data);
    const uint32_t n = (uint32_t)(len - BLE_OTA_STREAM_HEADER);
    if (offset < t->received) {
        return BLE_OTA_OK; /* a duplicate: already stored */
    }
    if (offset > t->received) {
        /* A packet was lost. Once per expected offset: every packet after
         * the gap would otherwise ask again, flooding the link. */
        if (!t->resync_sent || t->resync_offset != t->received) {
            t->resync_sent = true;
            t->resync_offset = t->received;
            ble_ota_log(core->port, BLE_OTA_LOG_DEBUG, "stream gap: got %lu, RESYNC %lu", (unsigned long)offset,
                        (unsigned long)t->received);
            v2_event_offset(core, BLE_OTA_EVT_RESYNC, t->received);
        }
        return BLE_OTA_OK;
    }
    if (!t->deflate && n > t->size - t->received) {
        ble_ota_log(core->port, BLE_OTA_LOG_WARN, "stream packet at %lu runs past the image (%lu bytes)",
                    (unsigned long)offset, (unsigned long)t->size);
        return BLE_OTA_OK;
    }
    v2_take(core, data + BLE_OTA_STREAM_HEADER, n);
    return BLE_OTA_OK;
}

ble_ota_status_t
ble_ota_core_command_write(ble_ota_core_t *core, const uint8_t *data, size_t len)
{
    const ble_ota_status_t status = v2_command_write(core, data, len);

    ble_ota_link_update(core, false);
    return status;
}

ble_ota_status_t
ble_ota_core_stream_write(ble_ota_core_t *core, const uint8_t *data, size_t len)
{
    if (core->v2.state == BLE_OTA_V2_RECEIVING) {
        ble_ota_link_active(core);
    }
    const ble_ota_status_t status = v2_stream_write(core, data, len);

    ble_ota_link_update(core, false);
    return status;
}

/* --- OTA Info ----------------------------------------------------------------- */

/* A NUL-padded field from a string that may fill its source without a NUL. */
static void
put_field(uint8_t *out, size_t out_len, const char *src, size_t src_len)
{
    size_t n = 0;

    while (n < src_len && n < out_len && src[n] != '\0') {
        n++;
    }
    memcpy(out, src, n);
}

/* The port's fields and the transfer's hash are copied whole into their
 * OTA Info fields; the value fits one attribute value (ATT: 512 bytes). */
_Static_assert(sizeof(((ble_ota_device_info_t *)0)->app_elf_sha256) == BLE_OTA_INFO_LEN_APP_ELF_SHA256,
               "app_elf_sha256 fills its OTA Info field");
_Static_assert(sizeof(((ble_ota_device_info_t *)0)->device_id) == BLE_OTA_INFO_LEN_DEVICE_ID,
               "device_id fills its OTA Info field");
_Static_assert(sizeof(((ble_ota_device_info_t *)0)->signing_key_digest) == BLE_OTA_INFO_LEN_SIGNING_KEY,
               "signing_key_digest fills its OTA Info field");
_Static_assert(BLE_OTA_SHA256_LEN == BLE_OTA_INFO_LEN_TRANSFER_SHA256, "the transfer's SHA-256 fills its field");
_Static_assert(BLE_OTA_SHA256_LEN == BLE_OTA_INFO_LEN_RUNNING_SHA256, "the running image's SHA-256 fills its field");
_Static_assert(BLE_OTA_INFO_OFF_RUNNING_SHA256 + BLE_OTA_INFO_LEN_RUNNING_SHA256 == BLE_OTA_INFO_SIZE,
               "OTA Info ends after running_sha256");
_Static_assert(BLE_OTA_INFO_SIZE <= 512, "OTA Info fits one attribute value");

size_t
ble_ota_core_info_read(ble_ota_core_t *core, uint8_t *out, size_t cap)
{
    const ble_ota_port_t *port = core->port;
    const ble_ota_v2_t *t = &core->v2;
    ble_ota_device_info_t info;

    if (out == NULL || cap < BLE_OTA_INFO_SIZE) {
        return 0;
    }
    memset(&info, 0, sizeof(info));
    port->device_info(port->ctx, &info);
    memset(out, 0, BLE_OTA_INFO_SIZE);

    uint16_t features = BLE_OTA_FEATURE_RESUME | BLE_OTA_FEATURE_CLIENT_CONFIRM;
    if (core->config.serve_seed) {
        features |= BLE_OTA_FEATURE_SEED;
    }
    if (core->config.auth) {
        features |= BLE_OTA_FEATURE_AUTH;
    }
    if (port->inflate != NULL) {
        features |= BLE_OTA_FEATURE_DEFLATE;
    }
    if (v2_delta_capable(core)) {
        features |= BLE_OTA_FEATURE_DELTA;
    }
    uint8_t running;
    switch (port->running_state(port->ctx)) {
    case BLE_OTA_IMG_VALID:
        running = BLE_OTA_RUNNING_VALID;
        break;
    case BLE_OTA_IMG_PENDING_VERIFY:
        running = BLE_OTA_RUNNING_PENDING_VERIFY;
        break;
    case BLE_OTA_IMG_UNKNOWN:
    default:
        running = BLE_OTA_RUNNING_UNKNOWN;
        break;
    }
    /* A seed transfer shows too, so a v2 client sees the slot is busy; its
     * SHA-256 is unknown (zeros), so no BEGIN will mistake it for its own. */
    uint8_t transfer = (uint8_t)t->state;
    uint32_t offset = t->received;
    if (t->state == BLE_OTA_V2_IDLE && core->state == BLE_OTA_STATE_RECEIVING) {
        transfer = BLE_OTA_TRANSFER_RECEIVING;
        offset = core->received;
    } else if (t->state == BLE_OTA_V2_IDLE && core->state == BLE_OTA_STATE_RESTARTING) {
        transfer = BLE_OTA_TRANSFER_COMPLETE;
        offset = core->received;
    }

    if (info.signed_updates) {
        features |= BLE_OTA_FEATURE_SIGNED;
    }
    out[BLE_OTA_INFO_OFF_UPDATE_SLOT] = info.update_slot_rolled_back ? BLE_OTA_UPDATE_SLOT_ROLLED_BACK
                                                                     : BLE_OTA_UPDATE_SLOT_NOTHING;
    out[BLE_OTA_INFO_OFF_INFO_VERSION] = BLE_OTA_INFO_VERSION;
    out[BLE_OTA_INFO_OFF_PROTOCOL] = BLE_OTA_PROTOCOL_VERSION;
    ble_ota_put_le16(out + BLE_OTA_INFO_OFF_FEATURES, features);
    ble_ota_put_le16(out + BLE_OTA_INFO_OFF_CHIP_ID, info.chip_id);
    ble_ota_put_le16(out + BLE_OTA_INFO_OFF_CHIP_REVISION, info.chip_revision);
    ble_ota_put_le32(out + BLE_OTA_INFO_OFF_SLOT_SIZE, info.slot_size);
    ble_ota_put_le16(out + BLE_OTA_INFO_OFF_MAX_PACKET, core->config.max_packet);
    ble_ota_put_le16(out + BLE_OTA_INFO_OFF_WINDOW, core->config.window);
    out[BLE_OTA_INFO_OFF_RUNNING_STATE] = running;
    out[BLE_OTA_INFO_OFF_LAST_STATUS] = core->last_status;
    out[BLE_OTA_INFO_OFF_TRANSFER_STATE] = transfer;
    ble_ota_put_le32(out + BLE_OTA_INFO_OFF_TRANSFER_OFFSET, offset);
    if (t->state != BLE_OTA_V2_IDLE) {
        memcpy(out + BLE_OTA_INFO_OFF_TRANSFER_SHA256, t->sha256, BLE_OTA_SHA256_LEN);
    }
    ble_ota_put_le32(out + BLE_OTA_INFO_OFF_SECURE_VERSION, info.secure_version);
    put_field(out + BLE_OTA_INFO_OFF_VERSION, BLE_OTA_INFO_LEN_VERSION, info.version, sizeof(info.version));
    put_field(out + BLE_OTA_INFO_OFF_PROJECT_NAME, BLE_OTA_INFO_LEN_PROJECT_NAME, info.project_name,
              sizeof(info.project_name));
    put_field(out + BLE_OTA_INFO_OFF_IDF_VERSION, BLE_OTA_INFO_LEN_IDF_VERSION, info.idf_version,
              sizeof(info.idf_version));
    put_field(out + BLE_OTA_INFO_OFF_DATE, BLE_OTA_INFO_LEN_DATE, info.date, sizeof(info.date));
    put_field(out + BLE_OTA_INFO_OFF_TIME, BLE_OTA_INFO_LEN_TIME, info.time, sizeof(info.time));
    memcpy(out + BLE_OTA_INFO_OFF_APP_ELF_SHA256, info.app_elf_sha256, BLE_OTA_INFO_LEN_APP_ELF_SHA256);
    memcpy(out + BLE_OTA_INFO_OFF_DEVICE_ID, info.device_id, BLE_OTA_INFO_LEN_DEVICE_ID);
    if (info.signed_updates) {
        memcpy(out + BLE_OTA_INFO_OFF_SIGNING_KEY, info.signing_key_digest, BLE_OTA_INFO_LEN_SIGNING_KEY);
    }
    /* info_version 3: the link, as the device sees it (zeros: not known). */
    ble_ota_link_info_t link;
    memset(&link, 0, sizeof(link));
    if (port->link_info != NULL) {
        port->link_info(port->ctx, &link);
    }
    ble_ota_put_le16(out + BLE_OTA_INFO_OFF_CONN_INTERVAL, link.conn_itvl);
    ble_ota_put_le16(out + BLE_OTA_INFO_OFF_CONN_LATENCY, link.conn_latency);
    ble_ota_put_le16(out + BLE_OTA_INFO_OFF_SUPERVISION_TIMEOUT, link.supervision_timeout);
    out[BLE_OTA_INFO_OFF_TX_PHY] = link.tx_phy;
    out[BLE_OTA_INFO_OFF_RX_PHY] = link.rx_phy;
    ble_ota_put_le16(out + BLE_OTA_INFO_OFF_TX_OCTETS, link.tx_octets);
    ble_ota_put_le16(out + BLE_OTA_INFO_OFF_RX_OCTETS, link.rx_octets);
    ble_ota_put_le16(out + BLE_OTA_INFO_OFF_ATT_MTU, link.att_mtu);
    out[BLE_OTA_INFO_OFF_LINK_REQUEST] = (uint8_t)core->link.profile;
    /* info_version 4: the running image, as found at init (zeros: not known). */
    ble_ota_put_le32(out + BLE_OTA_INFO_OFF_RUNNING_SIZE, core->running_size);
    memcpy(out + BLE_OTA_INFO_OFF_RUNNING_SHA256, core->running_sha256, BLE_OTA_INFO_LEN_RUNNING_SHA256);
    return BLE_OTA_INFO_SIZE;
}

/* --- timers ------------------------------------------------------------------- */

void
ble_ota_confirm_account(ble_ota_core_t *core)
{
    const uint32_t now = core->port->now_ms(core->port->ctx);

    /* Unsigned differences: right across a wrap of the millisecond counter. */
    if (core->confirm_waiting && !ble_ota_auth_held_by_stranger(core)) {
        core->confirm_elapsed_ms += now - core->confirm_counted_at_ms;
    }
    core->confirm_counted_at_ms = now;
}

void
ble_ota_core_tick(ble_ota_core_t *core)
{
    const ble_ota_port_t *port = core->port;
    const uint32_t now = port->now_ms(port->ctx);

    /* Unsigned differences: right across a wrap of the millisecond counter. */
    if (core->v2.state == BLE_OTA_V2_SUSPENDED && now - core->v2.suspended_at_ms >= core->config.abandon_timeout_ms) {
        ble_ota_v2_abort(core, "nobody resumed");
    }
    if (core->v2.state == BLE_OTA_V2_COMPLETE && !core->v2.restart_requested &&
        now - core->v2.suspended_at_ms >= core->config.abandon_timeout_ms) {
        ble_ota_v2_abort(core, "nobody asked for RESTART"); /* never selected: the device goes on with what it runs */
    }
    ble_ota_auth_tick(core, now);
    ble_ota_confirm_account(core);
    if (core->confirm_waiting && core->config.confirm_window_ms != 0 &&
        core->confirm_elapsed_ms >= core->config.confirm_window_ms) {
        core->confirm_waiting = false;
        ble_ota_log(port, BLE_OTA_LOG_ERROR, "no CONFIRM within %lu ms: rolling back",
                    (unsigned long)core->config.confirm_window_ms);
        ble_ota_rollback(core);
    }
    ble_ota_link_update(core, true);
}
