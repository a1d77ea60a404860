/*
 * libFuzzer harness of the OTA core: arbitrary sequences of what a GATT
 * layer can deliver (writes to OTA Control, Data, Command and Stream, reads,
 * disconnects, timer ticks, restarts and power cuts, flash write failures)
 * and power cuts during flash operations, on the host platform, under
 * AddressSanitizer and UndefinedBehaviorSanitizer.
 *
 * Besides the sanitizers, every input checks what must hold whatever a
 * client sends: the device always boots an image that passes validation
 * (the one it ran, or a complete new one), a new image only when a client
 * asked to restart into it (RESTART, or the seed's DONE), every slot the
 * OTA data calls bootable validates, OTA Info is always readable, and
 * notifications fit their characteristic.
 *
 *   make fuzz FUZZ_SECONDS=600        (clang, -fsanitize=fuzzer)
 *   build/fuzz/fuzz-replay FILE...    (any compiler: replays inputs, e.g. the
 *                                      seeds and regressions in fuzz_corpus/)
 *
 * Input: a sequence of operations, each an opcode byte and its arguments
 * (see fuzz_step). A few operations carry a valid image, so that the fuzzer
 * reaches END, RESTART and CONFIRM without having to guess a SHA-256; one
 * switches the device to another build: with a provisioned key, where those
 * operations open a session and seal their request (or, as the input says,
 * do not), and that takes only images signed with the owner's key.
 *
 * A device that takes only signed images must only ever select images
 * signed with the owner's key (the mutations a tampering attacker makes
 * included), besides the invariants above.
 *
 * BEGIN may carry PATCH (docs/DELTA.md): the stream is then a delta patch
 * from the first image to the valid update (maybe mutated), deflated, and
 * BEGIN names the first image or the update as its base. Whatever arrives,
 * the running slot is never written.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ble_ota_core.h"
#include "ble_ota_le.h"
#include "ble_ota_sha256.h"
#include "host_image.h"
#include "host_patch.h"
#include "host_port.h"
#include "host_session.h"
#include "host_signature.h"
#include "test_deflate.h"
#include "test_sign.h"

#define FUZZ_SLOT_SIZE  (64u * 1024u)
#define FUZZ_MAX_WRITE  600 /* beyond BLE_OTA_MAX_PACKET, as a broken GATT layer might pass */
#define FUZZ_NOTIFY_MAX (2 + 32 + BLE_OTA_AUTH_MAC_LEN) /* INFO's answer and its MAC, our longest */
#define FUZZ_IMAGE_CAP  (24u * 1024u)                   /* an image, padded, and its 4 KB signature sector */

typedef struct {
    host_dev_t dev;
    ble_ota_core_t core;
    ble_ota_config_t config;
    uint32_t clock_ms;
    bool initialised;
    uint8_t first[FUZZ_IMAGE_CAP]; /* what the device runs at power-on (1.0.0) */
    size_t first_len;
    uint8_t good[FUZZ_IMAGE_CAP]; /* a valid update (2.0.0) */
    size_t good_len;
    uint8_t img[FUZZ_IMAGE_CAP]; /* the image the helpers send: good, maybe mutated */
    size_t img_len;
    uint8_t enc[2 * FUZZ_IMAGE_CAP]; /* the good image as a DEFLATE stream (4 KB chunks) */
    size_t enc_len;
    uint8_t patch[2 * FUZZ_IMAGE_CAP]; /* the patch from first to good, maybe mutated */
    size_t patch_len;
    uint8_t good_patch[2 * FUZZ_IMAGE_CAP];
    size_t good_patch_len;
    uint8_t penc[3 * FUZZ_IMAGE_CAP]; /* the patch as a DEFLATE stream */
    size_t penc_len;
    bool penc_stale; /* the patch changed since it was encoded */
    /* The running slot's image when it booted: it must never change. */
    int running_slot;
    uint32_t running_len;
    uint8_t running_sha[32];
    uint32_t flash_ops_checked; /* writes and erases when the running image was last hashed */
    /* The state each slot had when last validated: a slot is only written
     * while it is empty, so a bootable one needs validating once. */
    host_slot_state_t verified[HOST_FLASH_SLOTS];
    host_session_t session; /* the client's, on the current link */
    uint32_t nonce_seed;
    test_sign_key_t *owner; /* the owner's signing key: the images are signed with it */
    uint8_t owner_digest[HOST_SIG_DIGEST_LEN];
    bool always_signed; /* every boot of this input required signatures */
    bool restart_asked; /* RESTART answered OK, or the seed's DONE_ACK, since the last boot */
} fuzz_t;

/* The device key of the keyed build (provisioned into its key partition). */
static const uint8_t k_fuzz_key[BLE_OTA_AUTH_KEY_LEN] = { 0x42, 0x4c, 0x45, 0x2d, 0x4f, 0x54, 0x41 };

static fuzz_t s_fz;

static void
fuzz_fail(const char *what)
{
    fprintf(stderr, "fuzz_core: invariant broken: %s\n", what);
    abort();
}

/* --- hooks ----------------------------------------------------------------------- */

static void
hook_notify(void *user, uint8_t value)
{
    /* The seed protocol restarts into its image after DONE_ACK. */
    if (value == BLE_OTA_CTRL_DONE_ACK) {
        ((fuzz_t *)user)->restart_asked = true;
    }
}

static void
hook_notify_command(void *user, const uint8_t *data, size_t len)
{
    if (data == NULL || len == 0 || len > FUZZ_NOTIFY_MAX) {
        fuzz_fail("OTA Command notification empty or too long");
    }
    /* Every answer and event starts at 0x80 (answers) or 0xC0 (events). */
    if ((data[0] & BLE_OTA_ANSWER) == 0) {
        fuzz_fail("OTA Command notification that is no answer and no event");
    }
    if (data[0] == (BLE_OTA_CMD_RESTART | BLE_OTA_ANSWER) && len >= 2 && data[1] == BLE_OTA_ST_OK) {
        ((fuzz_t *)user)->restart_asked = true;
    }
    if (data[0] == (BLE_OTA_CMD_HELLO | BLE_OTA_ANSWER)) {
        /* The session our client opened (or none, when refused). */
        ((fuzz_t *)user)->session.open = host_session_hello_answer(&((fuzz_t *)user)->session, data, len);
    }
}

static void
hook_disconnect(void *user)
{
    /* The firmware ends the link: the client's session ends with it. */
    ble_ota_core_disconnected(&((fuzz_t *)user)->core);
    ((fuzz_t *)user)->session.open = false;
}

/* Replays print the device's log with FUZZ_LOG=1 (to see what a seed reaches). */
static bool s_print_log;

static void
hook_log(void *user, ble_ota_log_level_t level, const char *msg)
{
    (void)user;
    if (msg == NULL || strlen(msg) >= 256) {
        fuzz_fail("log line");
    }
    if (s_print_log) {
        fprintf(stderr, "%c %s\n", "EWID"[level & 3], msg);
    }
}

static uint32_t
hook_now_ms(void *user)
{
    return ((fuzz_t *)user)->clock_ms;
}

/* --- device ---------------------------------------------------------------------- */

static size_t
build(uint8_t *out, const char *version, uint32_t payload, uint32_t seed)
{
    const host_image_spec_t spec = {
        .project = "fuzz",
        .version = version,
        .payload_len = payload,
        .seed = seed,
        .chip_id = HOST_IMAGE_CHIP_ESP32,
        .hash_appended = true,
        .compressible = true, /* so that its DEFLATE stream inflates, not just copies */
    };
    const size_t len = host_image_build(&spec, out, FUZZ_IMAGE_CAP);
    /* Signed as the owner signs: a device that requires it takes it. */
    return len == 0 ? 0 : test_sign_image(s_fz.owner, out, len, out, FUZZ_IMAGE_CAP);
}

/* The bootloader's choice, then the firmware's boot-time confirmation. */
static void
fuzz_boot(bool self_test)
{
    const int before = s_fz.dev.running;
    const int slot = host_dev_boot(&s_fz.dev);
    if (slot < 0) {
        fuzz_fail("no slot boots: the device is bricked");
    }
    /* A new image starts only when a client asked for it: RESTART (or the
     * seed's DONE), never on a reboot of another kind. */
    if (slot != before && host_dev_slot_state(&s_fz.dev, slot) == HOST_SLOT_PENDING_VERIFY && !s_fz.restart_asked) {
        fuzz_fail("a new image booted that no client restarted into");
    }
    s_fz.restart_asked = false;
    s_fz.running_slot = slot;
    s_fz.running_len = s_fz.dev.flash.slot[slot].image_len;
    ble_ota_sha256(host_flash_slot(&s_fz.dev.flash, slot), s_fz.running_len, s_fz.running_sha);
    s_fz.flash_ops_checked = s_fz.dev.flash.writes + s_fz.dev.flash.erases + s_fz.dev.flash.block_erases;
    if (!s_fz.dev.require_signature) {
        s_fz.always_signed = false;
    }
    ble_ota_core_init(&s_fz.core, &s_fz.dev.port, &s_fz.config);
    ble_ota_core_confirm_boot(&s_fz.core, self_test);
    /* A client is there at once: the link the timers and strangers act on. */
    s_fz.session.open = false;
    ble_ota_core_connected(&s_fz.core);
}

/* Power-on with the first image in ota_0 and a clock just below its wrap. */
static void
fuzz_reset(void)
{
    char why[120];

    if (!s_fz.initialised) {
        const host_dev_hooks_t hooks = {
            .notify = hook_notify,
            .log = hook_log,
            .notify_command = hook_notify_command,
            .now_ms = hook_now_ms,
            .disconnect = hook_disconnect,
            .user = &s_fz,
        };
        if (!host_dev_init(&s_fz.dev, FUZZ_SLOT_SIZE, &hooks)) {
            fuzz_fail("host_dev_init");
        }
        /* ECDSA: a key per process in no time. */
        s_fz.owner = test_sign_key_new("ecdsa256");
        if (s_fz.owner == NULL) {
            fuzz_fail("test_sign_key_new");
        }
        test_sign_key_digest(s_fz.owner, s_fz.owner_digest);
        s_fz.first_len = build(s_fz.first, "1.0.0", 2000, 1);
        s_fz.good_len = build(s_fz.good, "2.0.0", 9000, 2);
        s_fz.enc_len = test_deflate_chunks(s_fz.good, s_fz.good_len, 0, s_fz.enc, sizeof(s_fz.enc));
        s_fz.good_patch_len = host_patch_make(s_fz.first, s_fz.first_len, s_fz.good, s_fz.good_len, s_fz.good_patch,
                                              sizeof(s_fz.good_patch));
        if (s_fz.first_len == 0 || s_fz.good_len == 0 || s_fz.enc_len == 0 || s_fz.good_patch_len == 0) {
            fuzz_fail("building the images");
        }
        s_fz.initialised = true;
    }
    /* Erased flash and OTA data, as a factory-fresh chip. */
    memset(s_fz.dev.flash.mem, 0xFF, (size_t)FUZZ_SLOT_SIZE * HOST_FLASH_SLOTS);
    memset(s_fz.dev.flash.slot, 0, sizeof(s_fz.dev.flash.slot));
    s_fz.dev.flash.boot_slot = 0;
    s_fz.dev.flash.confirm_required = false;
    s_fz.dev.flash.fail_countdown = 0;
    host_flash_power_loss_after(&s_fz.dev.flash, 0);
    if (!host_dev_install(&s_fz.dev, 0, s_fz.first, s_fz.first_len, why, sizeof(why))) {
        fuzz_fail(why);
    }
    s_fz.clock_ms = 0xFFFFF000u;
    s_fz.dev.require_signature = false;
    s_fz.always_signed = false;
    ble_ota_config_default(&s_fz.config);
    s_fz.config.window = 4096;
    s_fz.config.abandon_timeout_ms = 5000;
    s_fz.config.confirm_window_ms = 8000;
    memcpy(s_fz.img, s_fz.good, s_fz.good_len);
    s_fz.img_len = s_fz.good_len;
    memcpy(s_fz.patch, s_fz.good_patch, s_fz.good_patch_len);
    s_fz.patch_len = s_fz.good_patch_len;
    s_fz.penc_stale = true;
    memset(s_fz.verified, 0, sizeof(s_fz.verified));
    fuzz_boot(true);
}

/* What must hold after every step. */
static void
fuzz_check(void)
{
    uint8_t info[BLE_OTA_INFO_SIZE];
    char why[120];

    if (ble_ota_core_info_read(&s_fz.core, info, sizeof(info)) != BLE_OTA_INFO_SIZE) {
        fuzz_fail("OTA Info not readable");
    }
    if (info[BLE_OTA_INFO_OFF_INFO_VERSION] != BLE_OTA_INFO_VERSION ||
        info[BLE_OTA_INFO_OFF_PROTOCOL] != BLE_OTA_PROTOCOL_VERSION ||
        info[BLE_OTA_INFO_OFF_TRANSFER_STATE] > BLE_OTA_TRANSFER_COMPLETE) {
        fuzz_fail("OTA Info fields");
    }
    for (int slot = 0; slot < HOST_FLASH_SLOTS; slot++) {
        const host_slot_state_t st = host_dev_slot_state(&s_fz.dev, slot);
        if (st != HOST_SLOT_NEW && st != HOST_SLOT_PENDING_VERIFY && st != HOST_SLOT_VALID) {
            s_fz.verified[slot] = HOST_SLOT_EMPTY;
            continue;
        }
        if (s_fz.verified[slot] == st) {
            continue;
        }
        s_fz.verified[slot] = st;
        host_image_info_t image;
        const uint8_t *data = host_flash_slot(&s_fz.dev.flash, slot);
        if (host_image_verify(data, FUZZ_SLOT_SIZE, HOST_IMAGE_CHIP_ESP32, &image, why, sizeof(why)) != HOST_IMAGE_OK) {
            fuzz_fail("a slot the OTA data calls bootable does not validate");
        }
        if (s_fz.always_signed && host_sig_verify(data, FUZZ_SLOT_SIZE, image.image_len, s_fz.owner_digest, why,
                                                  sizeof(why)) != HOST_SIG_OK) {
            fuzz_fail("a device that takes only signed images selected one the owner did not sign");
        }
    }
    if (s_fz.dev.running < 0) {
        fuzz_fail("nothing runs");
    }
    /* Hashed again only after flash operations: nothing else changes flash. */
    const uint32_t ops = s_fz.dev.flash.writes + s_fz.dev.flash.erases + s_fz.dev.flash.block_erases;
    if (ops != s_fz.flash_ops_checked) {
        uint8_t sha[32];
        s_fz.flash_ops_checked = ops;
        ble_ota_sha256(host_flash_slot(&s_fz.dev.flash, s_fz.running_slot), s_fz.running_len, sha);
        if (memcmp(sha, s_fz.running_sha, sizeof(sha)) != 0) {
            fuzz_fail("the running image changed in flash");
        }
    }
}

/* --- input ----------------------------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t left;
} reader_t;

static uint8_t
take8(reader_t *r)
{
    if (r->left == 0) {
        return 0;
    }
    r->left--;
    return *r->p++;
}

static uint16_t
take16(reader_t *r)
{
    const uint16_t lo = take8(r);
    return (uint16_t)(lo | (take8(r) << 8));
}

static uint32_t
take32(reader_t *r)
{
    const uint32_t lo = take16(r);
    return lo | ((uint32_t)take16(r) << 16);
}

/* Up to max bytes of the input, as many as the length prefix asks and the input has. */
static size_t
take_bytes(reader_t *r, size_t want, size_t max, const uint8_t **out)
{
    if (want > max) {
        want = max;
    }
    if (want > r->left) {
        want = r->left;
    }
    *out = r->p;
    r->p += want;
    r->left -= want;
    return want;
}

/* A GATT layer hands the core a copy; so does the harness, so that ASan sees
 * exactly len bytes (a read past them is a bug). */
static uint8_t *
copy_of(const uint8_t *data, size_t len)
{
    uint8_t *buf = malloc(len == 0 ? 1 : len);
    if (buf == NULL) {
        fuzz_fail("out of memory");
    }
    if (len > 0) {
        memcpy(buf, data, len);
    }
    return buf;
}

/* Writes a request to OTA Command; on a keyed device, when sign says so,
 * in a session (opened first when the link has none) with its MAC. */
static void
send_request(uint8_t *req, size_t len, bool sign)
{
    uint8_t signed_req[BLE_OTA_BEGIN_PATCH_SIZE + BLE_OTA_AUTH_MAC_LEN];

    if (s_fz.config.auth && sign && len <= BLE_OTA_BEGIN_PATCH_SIZE) {
        if (!s_fz.session.open) {
            uint8_t hello[BLE_OTA_HELLO_SIZE];
            uint8_t device_id[BLE_OTA_DEVICE_ID_LEN];
            memcpy(device_id, s_fz.dev.device_id, sizeof(device_id));
            host_session_begin(&s_fz.session, k_fuzz_key, device_id, ++s_fz.nonce_seed, hello);
            ble_ota_core_command_write(&s_fz.core, hello, sizeof(hello)); /* the hook opens the session */
        }
        memcpy(signed_req, req, len);
        if (s_fz.session.open) {
            len = host_session_seal(&s_fz.session, signed_req, len);
        }
        req = signed_req;
    }
    uint8_t *buf = copy_of(req, len);
    ble_ota_core_command_write(&s_fz.core, buf, len);
    free(buf);
}

/* BEGIN; with PATCH, base_sha256 follows: the first image's (the patch's
 * base) or, with other_base, the update's. */
static void
begin_for(const uint8_t *img, uint32_t size, uint16_t flags, uint16_t chip, bool sign, bool other_base)
{
    uint8_t req[BLE_OTA_BEGIN_PATCH_SIZE];
    const bool patch = (flags & BLE_OTA_BEGIN_FLAG_PATCH) != 0;

    req[0] = BLE_OTA_CMD_BEGIN;
    ble_ota_put_le32(req + 1, size);
    ble_ota_sha256(img, size <= s_fz.img_len ? size : s_fz.img_len, req + 5);
    ble_ota_put_le16(req + 37, chip);
    ble_ota_put_le16(req + 39, flags);
    if (patch) {
        ble_ota_sha256(other_base ? s_fz.good : s_fz.first, other_base ? s_fz.good_len : s_fz.first_len,
                       req + BLE_OTA_BEGIN_SIZE);
    }
    send_request(req, patch ? BLE_OTA_BEGIN_PATCH_SIZE : BLE_OTA_BEGIN_SIZE, sign);
}

/* One packet of what a client streams at offset, n bytes of it (fewer at
 * its end): the image, or its DEFLATE stream when the transfer is deflated. */
static void
stream_image(uint32_t offset, size_t n)
{
    uint8_t pkt[BLE_OTA_STREAM_HEADER + FUZZ_MAX_WRITE];

    if (s_fz.core.v2.patch && s_fz.penc_stale) {
        s_fz.penc_len = test_deflate_chunks(s_fz.patch, s_fz.patch_len, 0, s_fz.penc, sizeof(s_fz.penc));
        s_fz.penc_stale = false;
    }
    const uint8_t *src = s_fz.core.v2.patch ? s_fz.penc : s_fz.core.v2.deflate ? s_fz.enc : s_fz.img;
    const size_t src_len = s_fz.core.v2.patch ? s_fz.penc_len : s_fz.core.v2.deflate ? s_fz.enc_len : s_fz.img_len;

    if (offset > src_len) {
        offset = (uint32_t)src_len;
    }
    if (n > src_len - offset) {
        n = src_len - offset;
    }
    if (n > FUZZ_MAX_WRITE) {
        n = FUZZ_MAX_WRITE;
    }
    ble_ota_put_le32(pkt, offset);
    memcpy(pkt + BLE_OTA_STREAM_HEADER, src + offset, n);
    uint8_t *buf = copy_of(pkt, BLE_OTA_STREAM_HEADER + n);
    ble_ota_core_stream_write(&s_fz.core, buf, BLE_OTA_STREAM_HEADER + n);
    free(buf);
}

static void
write_raw(ble_ota_status_t (*fn)(ble_ota_core_t *, const uint8_t *, size_t), reader_t *r, size_t want)
{
    const uint8_t *bytes;
    const size_t n = take_bytes(r, want, FUZZ_MAX_WRITE, &bytes);
    uint8_t *buf = copy_of(bytes, n);
    const ble_ota_status_t st = fn(&s_fz.core, n == 0 ? NULL : buf, n);
    free(buf);
    if (ble_ota_status_to_att(st) == BLE_OTA_ATT_ERR_UNLIKELY) {
        fuzz_fail("a status without its ATT error");
    }
}

/* One operation; false when the input is used up. */
static bool
fuzz_step(reader_t *r)
{
    if (r->left == 0) {
        return false;
    }
    const uint8_t op = take8(r);
    switch (op % 16) {
    case 0: /* OTA Control write */
        write_raw(ble_ota_core_control_write, r, take8(r) % 4);
        break;
    case 1: /* OTA Data write, any length */
        write_raw(ble_ota_core_data_write, r, take16(r));
        break;
    case 2: /* OTA Command write */
        write_raw(ble_ota_core_command_write, r, take8(r));
        break;
    case 3: /* OTA Stream write, any bytes */
        write_raw(ble_ota_core_stream_write, r, take16(r));
        break;
    case 4: { /* reads */
        uint8_t info[BLE_OTA_INFO_SIZE + 8];
        (void)ble_ota_core_control_read(&s_fz.core);
        (void)ble_ota_core_info_read(&s_fz.core, info, take8(r) % 2 ? sizeof(info) : BLE_OTA_INFO_SIZE - 1);
        break;
    }
    case 5: /* the link drops; a client (maybe another) connects */
        ble_ota_core_disconnected(&s_fz.core);
        s_fz.session.open = false;
        ble_ota_core_connected(&s_fz.core);
        break;
    case 6: /* time passes, then the timers run */
        s_fz.clock_ms += (uint32_t)take16(r) * 4u;
        ble_ota_core_tick(&s_fz.core);
        break;
    case 7: { /* a restart the firmware asked for falls due, or the power is cut */
        /* Arguments are read into locals, in input order: C leaves the order
         * of evaluation of function arguments open, and a replay built by
         * another compiler must read the same input the same way. */
        const bool cut = (take8(r) & 1) != 0;
        const bool self_test = (take8(r) & 3) != 0;
        if (s_fz.dev.restart_pending || cut) {
            fuzz_boot(self_test);
        }
        break;
    }
    case 8: { /* BEGIN for the image (or a prefix of it), its real SHA-256 */
        const uint8_t how = take8(r);
        const bool prefix = how % 8 == 0;
        const uint32_t size = prefix ? take16(r) : (uint32_t)s_fz.img_len;
        const uint16_t flags = take8(r) & 7; /* CLIENT_CONFIRM, DEFLATE, PATCH */
        const uint16_t chip = take8(r) % 16 == 0 ? 5 : HOST_IMAGE_CHIP_ESP32;
        begin_for(s_fz.img, size, flags, chip, (how & 0x40) == 0, (how & 0x20) != 0);
        break;
    }
    case 9: { /* the next packets of the image where the device expects them */
        const size_t n = 1 + take16(r) % FUZZ_MAX_WRITE;
        const unsigned count = 1 + take8(r) % 32;
        for (unsigned i = 0; i < count; i++) {
            stream_image(s_fz.core.v2.received, n);
        }
        break;
    }
    case 10: { /* a packet of the image at any offset */
        const uint32_t offset = take32(r) % (uint32_t)(s_fz.img_len + 1);
        const size_t n = take16(r);
        stream_image(offset, n);
        break;
    }
    case 11: { /* the seed protocol: packet size, REQUEST, the image in packets */
        const uint16_t size = (uint16_t)(1 + take16(r) % BLE_OTA_MAX_PACKET);
        uint8_t le[2];
        ble_ota_put_le16(le, size);
        const uint8_t request = BLE_OTA_CTRL_REQUEST;
        ble_ota_core_data_write(&s_fz.core, le, 2);
        ble_ota_core_control_write(&s_fz.core, &request, 1);
        const size_t upto = take8(r) % 4 == 0 ? take16(r) % (s_fz.img_len + 1) : s_fz.img_len;
        for (size_t off = 0; off < upto; off += size) {
            const size_t n = upto - off < size ? upto - off : size;
            uint8_t *buf = copy_of(s_fz.img + off, n);
            const ble_ota_status_t st = ble_ota_core_data_write(&s_fz.core, buf, n);
            free(buf);
            if (st != BLE_OTA_OK) {
                break;
            }
        }
        break;
    }
    case 12: { /* a one-byte request: END, RESTART, ABORT, CONFIRM, INFO, DONE, ... */
        static const uint8_t k_ops[] = { BLE_OTA_CMD_END, BLE_OTA_CMD_RESTART, BLE_OTA_CMD_ABORT, BLE_OTA_CMD_CONFIRM,
                                         BLE_OTA_CMD_INFO };
        const uint8_t which = take8(r);
        if (which & 0x80) {
            const uint8_t done = BLE_OTA_CTRL_DONE;
            ble_ota_core_control_write(&s_fz.core, &done, 1);
        } else {
            uint8_t req = k_ops[which % 5];
            send_request(&req, 1, (which & 0x40) == 0);
        }
        break;
    }
    case 13: { /* a flash write fails, or the power is cut during a flash operation: the n-th next one */
        const uint8_t arg = take8(r);
        if (arg & 0x80) {
            host_flash_power_loss_after(&s_fz.dev.flash, 1 + (arg & 0x3F));
        } else {
            host_flash_fail_write_after(&s_fz.dev.flash, arg % 8);
        }
        break;
    }
    case 14: { /* the image changes: a byte, or its length; or the patch: a byte, or its length */
        const uint16_t at = take16(r);
        const uint8_t value = take8(r);
        if (at & 0x8000) {
            const uint16_t where = at & 0x7FFF;
            if (value == 0) {
                s_fz.patch_len = 1 + where % s_fz.good_patch_len;
            } else {
                s_fz.patch[where % s_fz.patch_len] ^= value;
            }
            s_fz.penc_stale = true;
        } else if (value == 0 && at % 2 == 0) {
            s_fz.img_len = 1 + at % s_fz.good_len;
        } else if (s_fz.img_len > 0) {
            s_fz.img[at % s_fz.img_len] ^= value;
        }
        break;
    }
    case 15: /* back to the valid image; or power-on as the other build (keyed and signed, or open) */
    default:
        if (op & 0x80) {
            s_fz.config.auth = !s_fz.config.auth;
            s_fz.config.auth_key_set = s_fz.config.auth;
            memcpy(s_fz.config.auth_key, k_fuzz_key, sizeof(k_fuzz_key));
            s_fz.config.serve_seed = !s_fz.config.auth;
            s_fz.dev.require_signature = s_fz.config.auth;
            fuzz_boot(true);
            break;
        }
        memcpy(s_fz.img, s_fz.good, s_fz.good_len);
        s_fz.img_len = s_fz.good_len;
        memcpy(s_fz.patch, s_fz.good_patch, s_fz.good_patch_len);
        s_fz.patch_len = s_fz.good_patch_len;
        s_fz.penc_stale = true;
        break;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reader_t r = { data, size };

    fuzz_reset();
    /* A first byte with the top bit set: the whole input on the keyed,
     * signed build (the seeds' way to start there). */
    if (size > 0 && (data[0] & 0x80) != 0 && (data[0] % 16) == 15) {
        s_fz.config.auth = true;
        s_fz.config.auth_key_set = true;
        memcpy(s_fz.config.auth_key, k_fuzz_key, sizeof(k_fuzz_key));
        s_fz.config.serve_seed = false;
        s_fz.dev.require_signature = true;
        fuzz_boot(true);
        s_fz.always_signed = true;
        r.p++;
        r.left--;
    }
    while (fuzz_step(&r)) {
        if (s_fz.dev.flash.power_lost) {
            /* The cut came during that step: the device powers on again. */
            host_flash_power_restored(&s_fz.dev.flash);
            fuzz_boot(true);
        }
        fuzz_check();
    }
    /* Whatever happened, a power cut leaves a device that boots. */
    host_flash_fail_write_after(&s_fz.dev.flash, 0);
    host_flash_power_loss_after(&s_fz.dev.flash, 0);
    fuzz_boot(true);
    fuzz_check();
    return 0;
}

#ifdef FUZZ_REPLAY
/* Without libFuzzer: runs each file given as an input (seeds, regressions). */
int
main(int argc, char **argv)
{
    static uint8_t buf[1 << 20];
    int ran = 0;

    s_print_log = getenv("FUZZ_LOG") != NULL && strcmp(getenv("FUZZ_LOG"), "1") == 0;
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (f == NULL) {
            perror(argv[i]);
            return 1;
        }
        const size_t n = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n);
        ran++;
    }
    printf("fuzz-replay: %d input%s replayed, every invariant held\n", ran, ran == 1 ? "" : "s");
    return 0;
}
#endif
