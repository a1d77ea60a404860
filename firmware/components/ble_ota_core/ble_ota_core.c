/*
 * Portable OTA core: the seed protocol's state machine, with the seed's
 * defects fixed (exact-length flash writes, flash errors reported to the
 * client, transfers aborted on disconnect, no slot_end without data), and
 * what both protocols share: initialisation, disconnect, boot confirmation.
 * Protocol v2 is in ble_ota_v2.c.
 *
 * No ESP-IDF header here: everything platform-specific goes through the
 * ble_ota_port_t given to ble_ota_core_init(). All members of the port must
 * be set; only log may be NULL.
 */
#include "ble_ota_core.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ble_ota_internal.h"
#include "ble_ota_le.h"

/* A progress line every 64 KiB: enough to follow a transfer in the log
 * without one line per packet. */
#define BLE_OTA_PROGRESS_STEP (64u * 1024u)

void
ble_ota_log(const ble_ota_port_t *port, ble_ota_log_level_t level, const char *fmt, ...)
{
    char line[BLE_OTA_LOG_LINE_MAX];
    va_list ap;

    if (port == NULL || port->log == NULL) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    port->log(port->ctx, level, line);
}

const char *
ble_ota_port_err_name(ble_ota_port_err_t err)
{
    switch (err) {
    case BLE_OTA_PORT_OK:
        return "ok";
    case BLE_OTA_PORT_ERR_NO_SLOT:
        return "no slot";
    case BLE_OTA_PORT_ERR_TOO_LARGE:
        return "too large";
    case BLE_OTA_PORT_ERR_FLASH:
        return "flash error";
    case BLE_OTA_PORT_ERR_INVALID_IMAGE:
        return "invalid image";
    case BLE_OTA_PORT_ERR_SIGNATURE:
        return "signature not trusted";
    case BLE_OTA_PORT_ERR_STATE:
        return "wrong state";
    case BLE_OTA_PORT_ERR_OTHER:
    default:
        return "error";
    }
}

/* --- the start of an image ------------------------------------------------ */

/* esp_image_header_t and esp_app_desc_t, as ESP-IDF lays them out. */
#define IMG_MAGIC                 0xE9
#define IMG_MAX_SEGMENTS          16
#define IMG_SPI_MODE_MAX          5 /* QIO, QOUT, DIO, DOUT, FAST_READ, SLOW_READ */
#define IMG_FLASH_SIZE_MAX        7 /* 1 MB ... 128 MB */
#define IMG_CHIP_ID_OFFSET        12
#define IMG_MIN_REV_OFFSET        15 /* min_chip_rev_full u16 */
#define IMG_HASH_FLAG_OFFSET      23
#define IMG_SEG0_LEN_OFFSET       28 /* first segment header: load address, length */
#define IMG_APP_DESC_OFFSET       32
#define IMG_APP_DESC_MAGIC        0xABCD5432u
#define IMG_SECURE_VERSION_OFFSET 36 /* esp_app_desc_t.secure_version */
#define IMG_APP_DESC_SIZE         256

uint8_t
ble_ota_image_head_check(const ble_ota_port_t *port, const uint8_t *head, size_t len, bool complete)
{
    ble_ota_device_info_t info;

    if (len < 1 || head[0] != IMG_MAGIC) {
        ble_ota_log(port, BLE_OTA_LOG_ERROR, "not an ESP app image (magic 0x%02x)", len < 1 ? 0u : head[0]);
        return BLE_OTA_ST_INVALID_IMAGE;
    }
    if (len >= 2 && (head[1] == 0 || head[1] > IMG_MAX_SEGMENTS)) {
        ble_ota_log(port, BLE_OTA_LOG_ERROR, "image header: %u segments (1..%u)", head[1], IMG_MAX_SEGMENTS);
        return BLE_OTA_ST_INVALID_IMAGE;
    }
    if (len >= 3 && head[2] > IMG_SPI_MODE_MAX) {
        ble_ota_log(port, BLE_OTA_LOG_ERROR, "image header: SPI mode %u (0..%u)", head[2], IMG_SPI_MODE_MAX);
        return BLE_OTA_ST_INVALID_IMAGE;
    }
    if (len >= 4 && (head[3] >> 4) > IMG_FLASH_SIZE_MAX) {
        ble_ota_log(port, BLE_OTA_LOG_ERROR, "image header: flash size code %u (0..%u)", head[3] >> 4,
                    IMG_FLASH_SIZE_MAX);
        return BLE_OTA_ST_INVALID_IMAGE;
    }
    if (len >= IMG_CHIP_ID_OFFSET + 2) {
        memset(&info, 0, sizeof(info));
        port->device_info(port->ctx, &info);
    }
    if (len >= IMG_CHIP_ID_OFFSET + 2) {
        const uint16_t chip_id = ble_ota_get_le16(head + IMG_CHIP_ID_OFFSET);
        if (chip_id != info.chip_id) {
            ble_ota_log(port, BLE_OTA_LOG_ERROR, "image for chip %u, device is chip %u", (unsigned)chip_id,
                        (unsigned)info.chip_id);
            return BLE_OTA_ST_WRONG_CHIP;
        }
    }
    if (len >= IMG_MIN_REV_OFFSET + 2) {
        const uint16_t min_rev = ble_ota_get_le16(head + IMG_MIN_REV_OFFSET);
        if (min_rev > info.chip_revision) {
            ble_ota_log(port, BLE_OTA_LOG_ERROR, "image needs chip revision %u.%u, device is %u.%u",
                        (unsigned)(min_rev / 100), (unsigned)(min_rev % 100), (unsigned)(info.chip_revision / 100),
                        (unsigned)(info.chip_revision % 100));
            return BLE_OTA_ST_WRONG_CHIP;
        }
    }
    if (len >= IMG_HASH_FLAG_OFFSET + 1 && head[IMG_HASH_FLAG_OFFSET] > 1) {
        ble_ota_log(port, BLE_OTA_LOG_ERROR, "image header: hash flag %u (0 or 1)", head[IMG_HASH_FLAG_OFFSET]);
        return BLE_OTA_ST_INVALID_IMAGE;
    }
    if (len >= IMG_SEG0_LEN_OFFSET + 4 && ble_ota_get_le32(head + IMG_SEG0_LEN_OFFSET) < IMG_APP_DESC_SIZE) {
        ble_ota_log(port, BLE_OTA_LOG_ERROR, "first segment of %lu bytes cannot hold an app descriptor",
                    (unsigned long)ble_ota_get_le32(head + IMG_SEG0_LEN_OFFSET));
        return BLE_OTA_ST_INVALID_IMAGE;
    }
    if (len >= IMG_APP_DESC_OFFSET + 4 && ble_ota_get_le32(head + IMG_APP_DESC_OFFSET) != IMG_APP_DESC_MAGIC) {
        /* A bootloader, a RAM-only program, or no ESP-IDF app at all. */
        ble_ota_log(port, BLE_OTA_LOG_ERROR, "no app descriptor at 0x%02x: not an ESP-IDF app", IMG_APP_DESC_OFFSET);
        return BLE_OTA_ST_INVALID_IMAGE;
    }
    if (len >= IMG_SECURE_VERSION_OFFSET + 4 &&
        ble_ota_get_le32(head + IMG_SECURE_VERSION_OFFSET) < info.secure_version) {
        /* Anti-rollback: an older image may be signed too, and have the
         * holes its successor fixed. */
        ble_ota_log(port, BLE_OTA_LOG_ERROR, "image secure_version %lu is below the running %lu",
                    (unsigned long)ble_ota_get_le32(head + IMG_SECURE_VERSION_OFFSET),
                    (unsigned long)info.secure_version);
        return BLE_OTA_ST_OLD_SECURE_VERSION;
    }
    if (complete && len < BLE_OTA_IMAGE_HEAD_LEN) {
        ble_ota_log(port, BLE_OTA_LOG_ERROR, "image of %lu bytes ends before its app descriptor", (unsigned long)len);
        return BLE_OTA_ST_INVALID_IMAGE;
    }
    return BLE_OTA_ST_OK;
}

/* Keeps the first bytes of a seed transfer for the check at DONE. */
static void
ble_ota_keep_head(ble_ota_core_t *core, const uint8_t *data, size_t len)
{
    if (core->received >= BLE_OTA_IMAGE_HEAD_LEN) {
        return;
    }
    size_t n = BLE_OTA_IMAGE_HEAD_LEN - core->received;
    if (n > len) {
        n = len;
    }
    memcpy(core->head + core->received, data, n);
}

/* Sets the value a read returns, then tells a subscribed client. In this
 * order so that a client reading right after the notification sees it. */
static void
ble_ota_answer(ble_ota_core_t *core, uint8_t value)
{
    core->control = value;
    core->port->notify_control(core->port->ctx, value);
}

static void
ble_ota_reset_counters(ble_ota_core_t *core)
{
    core->received = 0;
    core->packets = 0;
}

void
ble_ota_config_default(ble_ota_config_t *config)
{
    memset(config, 0, sizeof(*config));
    config->window = BLE_OTA_DEFAULT_WINDOW;
    config->max_packet = BLE_OTA_MAX_PACKET;
    config->abandon_timeout_ms = BLE_OTA_ABANDON_TIMEOUT_MS;
    config->confirm_window_ms = BLE_OTA_DEFAULT_CONFIRM_WINDOW_MS;
    config->serve_seed = true;
    config->auth_timeout_ms = BLE_OTA_AUTH_TIMEOUT_MS;
}

void
ble_ota_config_key(ble_ota_config_t *config, ble_ota_key_status_t key, bool allow_unauthenticated)
{
    config->auth_key_set = key == BLE_OTA_KEY_OK;
    if (!config->auth_key_set) {
        memset(config->auth_key, 0, sizeof(config->auth_key));
    }
    config->auth = config->auth_key_set || !allow_unauthenticated;
}

void
ble_ota_core_init(ble_ota_core_t *core, const ble_ota_port_t *port, const ble_ota_config_t *config)
{
    memset(core, 0, sizeof(*core));
    core->port = port;
    ble_ota_config_default(&core->config);
    if (config != NULL) {
        core->config = *config;
        /* A zero would stall the client (no window, no packet) or abort a
         * suspended transfer at the first tick: take the defaults instead. */
        if (core->config.window == 0) {
            core->config.window = BLE_OTA_DEFAULT_WINDOW;
        }
        if (core->config.max_packet <= BLE_OTA_STREAM_HEADER || core->config.max_packet > BLE_OTA_MAX_PACKET) {
            core->config.max_packet = BLE_OTA_MAX_PACKET;
        }
        if (core->config.abandon_timeout_ms == 0) {
            core->config.abandon_timeout_ms = BLE_OTA_ABANDON_TIMEOUT_MS;
        }
        if (core->config.auth_timeout_ms == 0) {
            core->config.auth_timeout_ms = BLE_OTA_AUTH_TIMEOUT_MS;
        }
    }
    core->state = BLE_OTA_STATE_IDLE;
    core->control = BLE_OTA_CTRL_NOP;
    core->v2.state = BLE_OTA_V2_IDLE;
    core->last_status = BLE_OTA_LAST_STATUS_NONE;
    /* Once per boot: the running image cannot change until the next one.
     * The flash block is idle scratch until a transfer begins. */
    if (ble_ota_running_image(port, core->v2.block, sizeof(core->v2.block), &core->running_size,
                              core->running_sha256)) {
        ble_ota_log(port, BLE_OTA_LOG_INFO, "running image: %lu bytes, SHA-256 %02x%02x%02x%02x...",
                    (unsigned long)core->running_size, core->running_sha256[0], core->running_sha256[1],
                    core->running_sha256[2], core->running_sha256[3]);
    }
}

bool
ble_ota_restart_pending(const ble_ota_core_t *core)
{
    return core->state == BLE_OTA_STATE_RESTARTING || core->v2.restart_requested || core->rollback_requested;
}

void
ble_ota_rollback(ble_ota_core_t *core)
{
    /* The running image is marked invalid: the next transfer would open the
     * other slot, the image the rollback returns to. A port whose restart is
     * not immediate (or that failed to roll back) must not let a client
     * erase it, so everything is refused until the restart. */
    core->rollback_requested = true;
    core->port->rollback(core->port->ctx);
}

void
ble_ota_seed_abort(ble_ota_core_t *core, const char *why)
{
    if (core->state != BLE_OTA_STATE_RECEIVING) {
        return;
    }
    ble_ota_log(core->port, BLE_OTA_LOG_WARN, "%s: seed transfer aborted at %lu bytes", why,
                (unsigned long)core->received);
    core->port->slot_abort(core->port->ctx);
    core->state = BLE_OTA_STATE_IDLE;
    ble_ota_reset_counters(core);
}

static void
ble_ota_handle_request(ble_ota_core_t *core)
{
    const ble_ota_port_t *port = core->port;
    ble_ota_device_info_t info;

    /* No image can pass slot_end's signature check: refused before the
     * slot is opened or a byte sent, as v2's BEGIN is (DONE would refuse
     * the image only after all of it). Nothing else changes. */
    memset(&info, 0, sizeof(info));
    port->device_info(port->ctx, &info);
    if (info.signed_updates && info.no_trusted_key) {
        ble_ota_log(port, BLE_OTA_LOG_ERROR,
                    "OTA request refused: this app carries no signature that signs it, so no signing key is "
                    "trusted; flash a signed app over USB");
        ble_ota_answer(core, BLE_OTA_CTRL_REQUEST_NAK);
        return;
    }
    /* One slot, one transfer: a seed client takes over from a v2 one. */
    ble_ota_v2_abort(core, "OTA request");
    if (core->state == BLE_OTA_STATE_RECEIVING) {
        /* A client that lost track (or a second client) starts over: drop
         * what was written so far rather than append to it. */
        ble_ota_log(port, BLE_OTA_LOG_WARN, "OTA request during transfer: aborting %lu bytes",
                    (unsigned long)core->received);
        port->slot_abort(port->ctx);
        core->state = BLE_OTA_STATE_IDLE;
    }
    if (core->packet_size == 0) {
        /* The size is only advisory (writes carry their own length), so a
         * client that skipped it is served anyway. */
        ble_ota_log(port, BLE_OTA_LOG_WARN, "OTA request: packet size not announced");
    }
    ble_ota_reset_counters(core);

    const ble_ota_port_err_t err = port->slot_begin(port->ctx, 0);
    if (err != BLE_OTA_PORT_OK) {
        ble_ota_log(port, BLE_OTA_LOG_ERROR, "OTA request refused: %s", ble_ota_port_err_name(err));
        ble_ota_answer(core, BLE_OTA_CTRL_REQUEST_NAK);
        return;
    }
    core->state = BLE_OTA_STATE_RECEIVING;
    ble_ota_log(port, BLE_OTA_LOG_INFO, "OTA request: slot open");
    ble_ota_answer(core, BLE_OTA_CTRL_REQUEST_ACK);
}

static void
ble_ota_handle_done(ble_ota_core_t *core)
{
    const ble_ota_port_t *port = core->port;

    if (core->state != BLE_OTA_STATE_RECEIVING || core->received == 0) {
        /* esp_ota_end refuses an empty slot, so never ask it. */
        if (core->state == BLE_OTA_STATE_RECEIVING) {
            port->slot_abort(port->ctx);
            ble_ota_log(port, BLE_OTA_LOG_WARN, "OTA done: no data received");
        } else {
            ble_ota_log(port, BLE_OTA_LOG_WARN, "OTA done: no transfer in progress");
        }
        core->state = BLE_OTA_STATE_IDLE;
        ble_ota_answer(core, BLE_OTA_CTRL_DONE_NAK);
        return;
    }

    /* What esp_ota_end lets through but no ESP-IDF app build writes. */
    const size_t head_len = core->received < BLE_OTA_IMAGE_HEAD_LEN ? core->received : BLE_OTA_IMAGE_HEAD_LEN;
    if (ble_ota_image_head_check(port, core->head, head_len, true) != BLE_OTA_ST_OK) {
        port->slot_abort(port->ctx);
        core->state = BLE_OTA_STATE_IDLE;
        ble_ota_answer(core, BLE_OTA_CTRL_DONE_NAK);
        return;
    }
    /* slot_end closes the slot whatever it returns: nothing to abort after. */
    ble_ota_port_err_t err = port->slot_end(port->ctx);
    if (err != BLE_OTA_PORT_OK) {
        ble_ota_log(port, BLE_OTA_LOG_ERROR, "OTA done: %lu bytes in %lu packets, image rejected (%s)",
                    (unsigned long)core->received, (unsigned long)core->packets, ble_ota_port_err_name(err));
        core->state = BLE_OTA_STATE_IDLE;
        ble_ota_answer(core, BLE_OTA_CTRL_DONE_NAK);
        return;
    }
    /* A seed client never sends CONFIRM: clear what a v2 update may have
     * left, or the new image would wait for one and be rolled back. */
    err = port->set_confirm_required(port->ctx, false);
    if (err == BLE_OTA_PORT_OK) {
        err = port->set_boot_slot(port->ctx);
    }
    if (err != BLE_OTA_PORT_OK) {
        ble_ota_log(port, BLE_OTA_LOG_ERROR, "OTA done: boot slot not set (%s)", ble_ota_port_err_name(err));
        core->state = BLE_OTA_STATE_IDLE;
        ble_ota_answer(core, BLE_OTA_CTRL_DONE_NAK);
        return;
    }
    ble_ota_log(port, BLE_OTA_LOG_INFO, "OTA done: %lu bytes in %lu packets, image valid",
                (unsigned long)core->received, (unsigned long)core->packets);
    core->state = BLE_OTA_STATE_RESTARTING;
    ble_ota_answer(core, BLE_OTA_CTRL_DONE_ACK);
    /* The delay lets the DONE_ACK notification leave before the link drops. */
    port->restart(port->ctx, BLE_OTA_RESTART_DELAY_MS);
}

/* The seed protocol has no authentication: a build that does not serve it
 * refuses its writes, so its characteristics open no way around the key. */
static ble_ota_status_t
ble_ota_seed_not_served(ble_ota_core_t *core)
{
    ble_ota_log(core->port, BLE_OTA_LOG_WARN, "seed protocol write refused: not enabled in this build");
    if (!core->auth.authenticated) {
        ble_ota_auth_failed(core, "seed protocol write");
    }
    return BLE_OTA_ERR_NOT_SERVED;
}

static ble_ota_status_t
seed_control_write(ble_ota_core_t *core, const uint8_t *data, size_t len)
{
    if (!core->config.serve_seed) {
        return ble_ota_seed_not_served(core);
    }
    if (ble_ota_restart_pending(core)) {
        return BLE_OTA_ERR_BUSY;
    }
    if (len != 1 || data == NULL) {
        return BLE_OTA_ERR_LENGTH;
    }
    switch (data[0]) {
    case BLE_OTA_CTRL_NOP:
        return BLE_OTA_OK;
    case BLE_OTA_CTRL_REQUEST:
        ble_ota_handle_request(core);
        return BLE_OTA_OK; /* the answer is the notification */
    case BLE_OTA_CTRL_DONE:
        ble_ota_handle_done(core);
        return BLE_OTA_OK;
    default:
        ble_ota_log(core->port, BLE_OTA_LOG_WARN, "control value 0x%02x refused", data[0]);
        return BLE_OTA_ERR_VALUE;
    }
}

uint8_t
ble_ota_core_control_read(const ble_ota_core_t *core)
{
    return core->control;
}

/* Before REQUEST, OTA Data takes the packet size (the seed's handshake). */
static ble_ota_status_t
ble_ota_packet_size_write(ble_ota_core_t *core, const uint8_t *data, size_t len)
{
    if (len != 2 || data == NULL) {
        /* Firmware bytes with no open slot: refuse them so the client
         * learns it skipped REQUEST, and keep them away from flash. */
        ble_ota_log(core->port, BLE_OTA_LOG_WARN, "data written outside a transfer (%lu bytes)", (unsigned long)len);
        return BLE_OTA_ERR_NOT_RECEIVING;
    }
    const uint16_t size = ble_ota_get_le16(data);
    if (size == 0 || size > BLE_OTA_MAX_PACKET) {
        ble_ota_log(core->port, BLE_OTA_LOG_WARN, "packet size %u refused (1..%u)", (unsigned)size,
                    (unsigned)BLE_OTA_MAX_PACKET);
        return BLE_OTA_ERR_VALUE;
    }
    core->packet_size = size;
    ble_ota_log(core->port, BLE_OTA_LOG_INFO, "OTA packet size %u", (unsigned)size);
    return BLE_OTA_OK;
}

static ble_ota_status_t
seed_data_write(ble_ota_core_t *core, const uint8_t *data, size_t len)
{
    const ble_ota_port_t *port = core->port;

    if (!core->config.serve_seed) {
        return ble_ota_seed_not_served(core);
    }
    if (ble_ota_restart_pending(core)) {
        return BLE_OTA_ERR_BUSY;
    }
    switch (core->state) {
    case BLE_OTA_STATE_IDLE:
        return ble_ota_packet_size_write(core, data, len);
    case BLE_OTA_STATE_RECEIVING:
    default:
        break;
    }

    if (len == 0 || len > BLE_OTA_MAX_PACKET || data == NULL) {
        return BLE_OTA_ERR_LENGTH;
    }
    /* Exactly len bytes: the seed wrote packet_size bytes, padding the last
     * packet with stale buffer contents. */
    const ble_ota_port_err_t err = port->slot_write(port->ctx, data, len);
    if (err != BLE_OTA_PORT_OK) {
        ble_ota_log(port, BLE_OTA_LOG_ERROR, "write failed at offset %lu (%s)", (unsigned long)core->received,
                    ble_ota_port_err_name(err));
        port->slot_abort(port->ctx);
        core->state = BLE_OTA_STATE_IDLE;
        /* Besides the ATT error, DONE_NAK tells a client that ignores write
         * errors (as seed clients may) that the transfer is over. */
        ble_ota_answer(core, BLE_OTA_CTRL_DONE_NAK);
        return BLE_OTA_ERR_FLASH;
    }
    ble_ota_keep_head(core, data, len);
    const uint32_t before = core->received;
    core->received += (uint32_t)len;
    core->packets++;
    if (before / BLE_OTA_PROGRESS_STEP != core->received / BLE_OTA_PROGRESS_STEP) {
        ble_ota_log(port, BLE_OTA_LOG_DEBUG, "OTA progress: %lu bytes", (unsigned long)core->received);
    }
    return BLE_OTA_OK;
}

ble_ota_status_t
ble_ota_core_control_write(ble_ota_core_t *core, const uint8_t *data, size_t len)
{
    const ble_ota_status_t status = seed_control_write(core, data, len);

    ble_ota_link_update(core, false);
    return status;
}

ble_ota_status_t
ble_ota_core_data_write(ble_ota_core_t *core, const uint8_t *data, size_t len)
{
    if (core->state == BLE_OTA_STATE_RECEIVING) {
        ble_ota_link_active(core);
    }
    const ble_ota_status_t status = seed_data_write(core, data, len);

    ble_ota_link_update(core, false);
    return status;
}

void
ble_ota_core_connected(ble_ota_core_t *core)
{
    ble_ota_confirm_account(core);
    ble_ota_auth_connected(core);
    ble_ota_link_connected(core);
    ble_ota_link_update(core, false);
}

void
ble_ota_core_disconnected(ble_ota_core_t *core)
{
    const ble_ota_port_t *port = core->port;

    ble_ota_v2_disconnected(core);
    ble_ota_confirm_account(core);
    ble_ota_auth_disconnected(core);
    ble_ota_link_disconnected(core);
    switch (core->state) {
    case BLE_OTA_STATE_RESTARTING:
        /* The new image is selected; the restart goes on without the client. */
        return;
    case BLE_OTA_STATE_RECEIVING:
        /* No resume in this protocol: free the slot so the next REQUEST
         * starts clean (the seed left the slot open). */
        ble_ota_log(port, BLE_OTA_LOG_WARN, "disconnected during transfer: aborted at %lu bytes",
                    (unsigned long)core->received);
        port->slot_abort(port->ctx);
        core->state = BLE_OTA_STATE_IDLE;
        break;
    case BLE_OTA_STATE_IDLE:
    default:
        break;
    }
    /* The next client starts from scratch: its MTU, hence its packet size,
     * may differ, and a stale ACK/NAK would only mislead it. */
    core->control = BLE_OTA_CTRL_NOP;
    core->packet_size = 0;
    ble_ota_reset_counters(core);
}

ble_ota_img_state_t
ble_ota_core_confirm_boot(ble_ota_core_t *core, bool self_test_passed)
{
    const ble_ota_port_t *port = core->port;
    const ble_ota_img_state_t state = port->running_state(port->ctx);

    core->confirm_waiting = false;
    core->self_test_passed = self_test_passed;
    if (state != BLE_OTA_IMG_PENDING_VERIFY) {
        if (!self_test_passed) {
            /* Nothing to roll back to: a confirmed image stays. */
            ble_ota_log(port, BLE_OTA_LOG_WARN, "boot: self-test failed, image already confirmed");
        }
        return state;
    }
    if (self_test_passed && port->confirm_required(port->ctx)) {
        /* The client asked to confirm it (BEGIN flag CLIENT_CONFIRM): the
         * self-test only proves the BLE stack runs, the client proves it
         * can reach the device. Until then the image stays pending, so a
         * restart rolls it back; tick() rolls back when the window ends. */
        core->confirm_waiting = true;
        core->confirm_elapsed_ms = 0;
        core->confirm_counted_at_ms = port->now_ms(port->ctx);
        ble_ota_log(port, BLE_OTA_LOG_INFO, "boot: new image waits for a client's CONFIRM (%lu ms)",
                    (unsigned long)core->config.confirm_window_ms);
    } else if (self_test_passed) {
        const ble_ota_port_err_t err = port->mark_valid(port->ctx);
        if (err == BLE_OTA_PORT_OK) {
            ble_ota_log(port, BLE_OTA_LOG_INFO, "boot: new image confirmed");
        } else {
            /* Left pending: the bootloader rolls back at the next boot. */
            ble_ota_log(port, BLE_OTA_LOG_ERROR, "boot: confirming new image failed (%s)", ble_ota_port_err_name(err));
        }
    } else {
        ble_ota_log(port, BLE_OTA_LOG_ERROR, "boot: self-test failed, rolling back");
        ble_ota_rollback(core);
    }
    return state;
}

uint8_t
ble_ota_status_to_att(ble_ota_status_t status)
{
    switch (status) {
    case BLE_OTA_OK:
        return 0;
    case BLE_OTA_ERR_LENGTH:
        return BLE_OTA_ATT_ERR_INVALID_LEN;
    case BLE_OTA_ERR_VALUE:
        return BLE_OTA_ATT_ERR_BAD_VALUE;
    case BLE_OTA_ERR_NOT_RECEIVING:
        return BLE_OTA_ATT_ERR_NOT_RECEIVING;
    case BLE_OTA_ERR_FLASH:
        return BLE_OTA_ATT_ERR_FLASH;
    case BLE_OTA_ERR_BUSY:
        return BLE_OTA_ATT_ERR_BUSY;
    case BLE_OTA_ERR_NOT_SERVED:
        return BLE_OTA_ATT_ERR_WRITE_NOT_PERMITTED;
    default:
        return BLE_OTA_ATT_ERR_UNLIKELY;
    }
}
