/*
 * Authenticated protocol v2 (docs/PROTOCOL.md, "Authentication"): HMAC
 * vectors, the key record, a whole authenticated update whose answers the
 * client can check, and every way a stranger must fail: no MAC, another
 * key, a request replayed or moved to another device, a session from an
 * earlier link; per-link failures and timeouts that end the stranger's link
 * and never the owner's next one; a confirm window strangers cannot run
 * out; the seed protocol refused unless the build serves it.
 */
#include <stdio.h>
#include <string.h>

#include "ble_ota_core.h"
#include "ble_ota_le.h"
#include "ble_ota_sha256.h"
#include "host_image.h"
#include "host_port.h"
#include "host_session.h"
#include "test.h"
#include "test_auth.h"
#include "test_fixture.h"
#include "test_notes.h"

#define CHUNK 240

/* The owner's fleet secret; each device's key derives from it and the
 * device id (the fixture's device: host_dev_init's default id). */
static const uint8_t k_secret[BLE_OTA_AUTH_KEY_LEN] = {
    0x6b, 0x65, 0x79, 0x2d, 0x6f, 0x66, 0x2d, 0x74, 0x68, 0x65, 0x2d, 0x66, 0x6c, 0x65, 0x65, 0x74,
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10,
};
static uint8_t s_key[BLE_OTA_AUTH_KEY_LEN];

/* A request with room for its MAC. */
typedef struct {
    uint8_t data[BLE_OTA_BEGIN_SIZE + BLE_OTA_AUTH_MAC_LEN];
    size_t len;
} request_t;

static host_session_t s_session;
static uint32_t s_nonce_seed;

/* A device with a provisioned key, a client connected. */
static void
keyed_setup(void)
{
    fx_setup();
    host_session_device_key(k_secret, s_fx.dev.device_id, s_key);
    memcpy(s_config.auth_key, s_key, sizeof(s_key));
    s_config.auth = true;
    s_config.auth_key_set = true;
    s_config.serve_seed = false;
    fx_reboot(true);
}

static ble_ota_status_t
command(const request_t *r)
{
    return ble_ota_core_command_write(&s_fx.core, r->data, r->len);
}

/* HELLO with key: a new session on this link; false when the device refused. */
static bool
hello_with(const uint8_t key[BLE_OTA_AUTH_KEY_LEN])
{
    uint8_t req[BLE_OTA_HELLO_SIZE];

    host_session_begin(&s_session, key, s_fx.dev.device_id, ++s_nonce_seed, req);
    ble_ota_core_command_write(&s_fx.core, req, sizeof(req));
    const cmd_note_t *n = last_note();
    return n != NULL && host_session_hello_answer(&s_session, n->data, n->len);
}

static bool
hello(void)
{
    return hello_with(s_key);
}

static request_t
begin_request(const uint8_t *img, size_t len)
{
    request_t r;
    const uint32_t size = (uint32_t)len;

    memset(&r, 0, sizeof(r));
    r.data[0] = BLE_OTA_CMD_BEGIN;
    ble_ota_put_le32(r.data + 1, size);
    ble_ota_sha256(img, len, r.data + 5);
    r.data[37] = (uint8_t)HOST_IMAGE_CHIP_ESP32;
    r.len = BLE_OTA_BEGIN_SIZE;
    return r;
}

static request_t
plain_request(uint8_t opcode)
{
    request_t r;

    memset(&r, 0, sizeof(r));
    r.data[0] = opcode;
    r.len = 1;
    return r;
}

/* The request sealed in the current session; its answer must carry the
 * session's MAC and the expected status. */
static bool
sealed_command(request_t r, uint8_t expected)
{
    r.len = host_session_seal(&s_session, r.data, r.len);
    command(&r);
    const cmd_note_t *n = last_note();
    if (!answered(r.data[0], expected, ANY_LEN)) {
        return false;
    }
    if (!host_session_answer_ok(&s_session, n->data, n->len)) {
        printf("  the answer's MAC does not verify\n");
        return false;
    }
    return true;
}

/* The retry_ms of an AUTH_LOCKED answer. */
static uint32_t
retry_ms(const cmd_note_t *n)
{
    return n->len < 6 ? 0 : ble_ota_get_le32(n->data + 2);
}

static void
stream_all(const uint8_t *img, size_t len)
{
    static uint8_t pkt[BLE_OTA_STREAM_HEADER + CHUNK];

    for (size_t off = 0; off < len; off += CHUNK) {
        const size_t n = len - off < CHUNK ? len - off : CHUNK;
        ble_ota_put_le32(pkt, (uint32_t)off);
        memcpy(pkt + BLE_OTA_STREAM_HEADER, img + off, n);
        ble_ota_core_stream_write(&s_fx.core, pkt, BLE_OTA_STREAM_HEADER + n);
    }
}

static bool
slot_untouched(void)
{
    return host_dev_slot_state(&s_fx.dev, 1) == HOST_SLOT_EMPTY && s_fx.core.v2.state == BLE_OTA_V2_IDLE;
}

/* A stranger connects (the owner's link, if any, is gone) and fails three
 * times with junk: the firmware ends its link. */
static void
stranger_locks_itself_out(void)
{
    const uint8_t junk[3][2] = { { BLE_OTA_CMD_ABORT, 0 }, { 0x3e, 0 }, { BLE_OTA_CMD_END, 0x55 } };
    const int drops = s_fx.drops;

    fx_reconnect();
    for (int i = 0; i < 3; i++) {
        ble_ota_core_command_write(&s_fx.core, junk[i], i == 0 ? 1 : 2);
    }
    CHECK_EQ(s_fx.drops, drops + 1);
    /* Nothing more from that link counts, until it is gone. */
    request_t r = plain_request(BLE_OTA_CMD_ABORT);
    const int notes = s_fx.cmd_count;
    command(&r);
    CHECK_EQ(s_fx.cmd_count, notes);
}

/* --- tests ------------------------------------------------------------------ */

/* RFC 4231 test cases 1 and 2. */
/* Moves the clock on and runs the core's tick, as the OTA task does. */
static void
tick_after(uint32_t ms)
{
    s_fx.clock_ms += ms;
    ble_ota_core_tick(&s_fx.core);
}

/* The owner's update in its session (already open): BEGIN (the client
 * confirms), the image, END and RESTART; the link then ends with the
 * restart. */
static void
owner_update_to_restart(void)
{
    request_t begin = begin_request(s_image, s_image_len);
    begin.data[39] = BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM;
    CHECK(sealed_command(begin, BLE_OTA_ST_OK));
    stream_all(s_image, s_image_len);
    CHECK(sealed_command(plain_request(BLE_OTA_CMD_END), BLE_OTA_ST_OK));
    CHECK(sealed_command(plain_request(BLE_OTA_CMD_RESTART), BLE_OTA_ST_OK));
    ble_ota_core_disconnected(&s_fx.core);
}

static void
test_auth_hmac_vectors(void)
{
    static const uint8_t mac1[32] = {
        0xb0, 0x34, 0x4c, 0x61, 0xd8, 0xdb, 0x38, 0x53, 0x5c, 0xa8, 0xaf, 0xce, 0xaf, 0x0b, 0xf1, 0x2b,
        0x88, 0x1d, 0xc2, 0x00, 0xc9, 0x83, 0x3d, 0xa7, 0x26, 0xe9, 0x37, 0x6c, 0x2e, 0x32, 0xcf, 0xf7,
    };
    static const uint8_t mac2[32] = {
        0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95, 0x75, 0xc7,
        0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43,
    };
    uint8_t key1[20];
    uint8_t mac[32];

    memset(key1, 0x0b, sizeof(key1));
    ble_ota_hmac_sha256(key1, sizeof(key1), (const uint8_t *)"Hi ", 3, (const uint8_t *)"There", 5, mac);
    CHECK(memcmp(mac, mac1, 32) == 0);
    ble_ota_hmac_sha256((const uint8_t *)"Jefe", 4, (const uint8_t *)"what do ya want ", 16,
                        (const uint8_t *)"for nothing?", 12, mac);
    CHECK(memcmp(mac, mac2, 32) == 0);
}

static void
test_auth_key_record(void)
{
    static const uint8_t id[BLE_OTA_DEVICE_ID_LEN] = { 0x24, 0x0a, 0xc4, 0x12, 0x34, 0x56 };
    static const uint8_t other[BLE_OTA_DEVICE_ID_LEN] = { 0x24, 0x0a, 0xc4, 0x12, 0x34, 0x57 };
    uint8_t part[HOST_FLASH_KEY_PART_SIZE];
    uint8_t key[BLE_OTA_AUTH_KEY_LEN];
    uint8_t got[BLE_OTA_AUTH_KEY_LEN];

    host_session_device_key(k_secret, id, key);
    memset(part, 0xFF, sizeof(part));
    CHECK_EQ(ble_ota_key_record_parse(part, sizeof(part), id, got), BLE_OTA_KEY_EMPTY);
    host_session_key_record(key, id, part);
    CHECK_EQ(ble_ota_key_record_parse(part, sizeof(part), id, got), BLE_OTA_KEY_OK);
    CHECK(memcmp(got, key, sizeof(key)) == 0);
    CHECK_EQ(ble_ota_key_record_parse(part, BLE_OTA_KEY_RECORD_LEN - 1, id, got), BLE_OTA_KEY_CORRUPT);
    /* Copied to another device: refused, not used with the wrong id. */
    CHECK_EQ(ble_ota_key_record_parse(part, sizeof(part), other, got), BLE_OTA_KEY_OTHER_DEVICE);
    part[20] ^= 1;
    CHECK_EQ(ble_ota_key_record_parse(part, sizeof(part), id, got), BLE_OTA_KEY_CORRUPT);
    /* Keys derived for two ids differ in every way that matters. */
    uint8_t key2[BLE_OTA_AUTH_KEY_LEN];
    host_session_device_key(k_secret, other, key2);
    CHECK(memcmp(key, key2, sizeof(key)) != 0);
}

static void
test_auth_update_with_key(void)
{
    uint8_t inf[BLE_OTA_INFO_SIZE];
    uint8_t digest[BLE_OTA_SHA256_LEN];

    keyed_setup();
    CHECK_EQ(ble_ota_core_info_read(&s_fx.core, inf, sizeof(inf)), BLE_OTA_INFO_SIZE);
    CHECK_EQ(ble_ota_get_le16(inf + BLE_OTA_INFO_OFF_FEATURES),
             BLE_OTA_FEATURE_RESUME | BLE_OTA_FEATURE_CLIENT_CONFIRM | BLE_OTA_FEATURE_AUTH | BLE_OTA_FEATURE_DEFLATE |
                 BLE_OTA_FEATURE_DELTA);
    CHECK(memcmp(inf + BLE_OTA_INFO_OFF_DEVICE_ID, s_fx.dev.device_id, BLE_OTA_DEVICE_ID_LEN) == 0);
    CHECK(hello());
    /* INFO: the device proves the value a client read. */
    CHECK(sealed_command(plain_request(BLE_OTA_CMD_INFO), BLE_OTA_ST_OK));
    ble_ota_sha256(inf, sizeof(inf), digest);
    CHECK(memcmp(last_note()->data + 2, digest, sizeof(digest)) == 0);
    owner_update_to_restart();
    CHECK_EQ(fx_reboot(true), 1);
    CHECK(hello());
    CHECK(sealed_command(plain_request(BLE_OTA_CMD_CONFIRM), BLE_OTA_ST_OK));
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_VALID);
    CHECK_EQ(s_fx.drops, 0);
}

static void
test_auth_refusals_leave_slot_untouched(void)
{
    static const uint8_t k_wrong[BLE_OTA_AUTH_KEY_LEN] = { 1 };

    keyed_setup();
    /* No MAC at all. */
    request_t r = begin_request(s_image, s_image_len);
    command(&r);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_AUTH_REQUIRED, ANY_LEN));
    /* A MAC without HELLO on this link. */
    fx_reconnect();
    r = begin_request(s_image, s_image_len);
    r.len += BLE_OTA_AUTH_MAC_LEN;
    command(&r);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_AUTH_FAILED, ANY_LEN));
    /* A session under another key: the request fails, and an impostor's
     * answer would not verify under ours. */
    fx_reconnect();
    CHECK(hello_with(k_wrong));
    r = begin_request(s_image, s_image_len);
    r.len = host_session_seal(&s_session, r.data, r.len);
    command(&r);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_AUTH_FAILED, ANY_LEN));
    CHECK(!host_session_answer_ok(&s_session, last_note()->data, last_note()->len));
    /* A MAC cut short. */
    fx_reconnect();
    CHECK(hello());
    r = begin_request(s_image, s_image_len);
    r.len = host_session_seal(&s_session, r.data, r.len) - 1;
    command(&r);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_BAD_LENGTH, ANY_LEN));
    CHECK(slot_untouched());
    /* last_status is the owner's: strangers' refusals leave it. */
    uint8_t inf[BLE_OTA_INFO_SIZE];
    ble_ota_core_info_read(&s_fx.core, inf, sizeof(inf));
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_LAST_STATUS], BLE_OTA_LAST_STATUS_NONE);
    CHECK_EQ(fx_reboot(true), 0);
}

static void
test_auth_replay_and_relay_fail(void)
{
    keyed_setup();
    CHECK(hello());
    request_t recorded = begin_request(s_image, s_image_len);
    recorded.len = host_session_seal(&s_session, recorded.data, recorded.len);
    CHECK_EQ(command(&recorded), BLE_OTA_OK);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK, ANY_LEN));
    CHECK(sealed_command(plain_request(BLE_OTA_CMD_ABORT), BLE_OTA_ST_OK));

    /* The same bytes again in the session: their sequence number is used up. */
    command(&recorded);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_AUTH_FAILED, ANY_LEN));
    /* In a new session on a new link: another session key. */
    fx_reconnect();
    CHECK(hello());
    command(&recorded);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_AUTH_FAILED, ANY_LEN));

    /* A valid MAC moved to other BEGIN fields (size, flags). */
    fx_reconnect();
    CHECK(hello());
    request_t r = begin_request(s_image, s_image_len);
    r.len = host_session_seal(&s_session, r.data, r.len);
    r.data[1] ^= 1;
    command(&r);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_AUTH_FAILED, ANY_LEN));

    /* Relayed: a session and request made for another device id, under
     * the same key (a fleet that shares one), fail on this device. */
    fx_reconnect();
    static const uint8_t other_id[BLE_OTA_DEVICE_ID_LEN] = { 0x24, 0x0a, 0xc4, 0x99, 0x99, 0x99 };
    uint8_t req[BLE_OTA_HELLO_SIZE];
    host_session_begin(&s_session, s_key, other_id, ++s_nonce_seed, req);
    ble_ota_core_command_write(&s_fx.core, req, sizeof(req));
    CHECK(host_session_hello_answer(&s_session, last_note()->data, last_note()->len));
    r = begin_request(s_image, s_image_len);
    r.len = host_session_seal(&s_session, r.data, r.len);
    command(&r);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_AUTH_FAILED, ANY_LEN));
    CHECK(slot_untouched());

    /* An answer is bound to its request: checked against another sequence
     * number it fails. */
    fx_reconnect();
    CHECK(hello());
    CHECK(sealed_command(plain_request(BLE_OTA_CMD_INFO), BLE_OTA_ST_OK));
    s_session.last_seq++;
    CHECK(!host_session_answer_ok(&s_session, last_note()->data, last_note()->len));
}

/* Failures lock the link for a while, and end it at the third; the next
 * link starts clean, so a stranger never locks out the owner. */
static void
test_auth_failures_are_per_link(void)
{
    static const uint8_t k_wrong[BLE_OTA_AUTH_KEY_LEN] = { 2 };
    uint8_t req[BLE_OTA_HELLO_SIZE];

    keyed_setup();
    CHECK(hello_with(k_wrong));
    request_t r = plain_request(BLE_OTA_CMD_ABORT);
    r.len = host_session_seal(&s_session, r.data, r.len);
    command(&r);
    CHECK(answered(BLE_OTA_CMD_ABORT, BLE_OTA_ST_AUTH_FAILED, ANY_LEN));
    /* Locked for 1 s: HELLO and requests alike, even with the right key. */
    host_session_begin(&s_session, s_key, s_fx.dev.device_id, ++s_nonce_seed, req);
    ble_ota_core_command_write(&s_fx.core, req, sizeof(req));
    CHECK(answered(BLE_OTA_CMD_HELLO, BLE_OTA_ST_AUTH_LOCKED, ANY_LEN));
    CHECK_EQ(retry_ms(last_note()), BLE_OTA_AUTH_LOCK_MIN_MS);
    s_fx.clock_ms += BLE_OTA_AUTH_LOCK_MIN_MS;
    CHECK(hello_with(k_wrong));
    r = plain_request(BLE_OTA_CMD_ABORT);
    r.len = host_session_seal(&s_session, r.data, r.len);
    command(&r);
    CHECK(answered(BLE_OTA_CMD_ABORT, BLE_OTA_ST_AUTH_FAILED, ANY_LEN));
    ble_ota_core_command_write(&s_fx.core, req, sizeof(req));
    CHECK(answered(BLE_OTA_CMD_HELLO, BLE_OTA_ST_AUTH_LOCKED, ANY_LEN));
    CHECK_EQ(retry_ms(last_note()), 2 * BLE_OTA_AUTH_LOCK_MIN_MS);
    CHECK_EQ(s_fx.drops, 0);
    s_fx.clock_ms += 2 * BLE_OTA_AUTH_LOCK_MIN_MS;
    CHECK(hello_with(k_wrong));
    r = plain_request(BLE_OTA_CMD_ABORT);
    r.len = host_session_seal(&s_session, r.data, r.len);
    command(&r);
    /* The third failure ends the link. */
    CHECK_EQ(s_fx.drops, 1);

    /* Junk writes on a fresh link end it too, however often strangers come
     * back; the owner's link right after works at once. */
    for (int i = 0; i < 5; i++) {
        CHECK_OK(stranger_locks_itself_out());
    }
    fx_reconnect();
    CHECK(hello());
    CHECK(sealed_command(begin_request(s_image, s_image_len), BLE_OTA_ST_OK));
    stream_all(s_image, s_image_len);
    CHECK(sealed_command(plain_request(BLE_OTA_CMD_END), BLE_OTA_ST_OK));
}

/* A link must authenticate within the timeout; the owner's stays. */
static void
test_auth_timeout_ends_idle_strangers(void)
{
    keyed_setup();
    tick_after(BLE_OTA_AUTH_TIMEOUT_MS - 1);
    CHECK_EQ(s_fx.drops, 0);
    tick_after(1);
    CHECK_EQ(s_fx.drops, 1);
    /* HELLO alone is no proof: only a request with a valid MAC is. */
    fx_reconnect();
    CHECK(hello());
    tick_after(BLE_OTA_AUTH_TIMEOUT_MS);
    CHECK_EQ(s_fx.drops, 2);
    fx_reconnect();
    CHECK(hello());
    CHECK(sealed_command(plain_request(BLE_OTA_CMD_INFO), BLE_OTA_ST_OK));
    tick_after(10 * BLE_OTA_AUTH_TIMEOUT_MS);
    CHECK_EQ(s_fx.drops, 2);
}

/* A link the stack did not end when asked (the request lost, or refused)
 * is asked again each second until it ends: it cannot hold the device. */
static void
test_auth_drop_asked_again_until_link_ends(void)
{
    keyed_setup();
    tick_after(BLE_OTA_AUTH_TIMEOUT_MS);
    CHECK_EQ(s_fx.drops, 1);
    /* The link stays up: every request on it is ignored meanwhile. */
    const request_t info = plain_request(BLE_OTA_CMD_INFO);
    CHECK_EQ(ble_ota_core_command_write(&s_fx.core, info.data, info.len), BLE_OTA_OK);
    CHECK_EQ(s_fx.cmd_count, 0);
    tick_after(BLE_OTA_AUTH_DROP_RETRY_MS - 1);
    CHECK_EQ(s_fx.drops, 1);
    tick_after(1);
    CHECK_EQ(s_fx.drops, 2);
    tick_after(BLE_OTA_AUTH_DROP_RETRY_MS);
    CHECK_EQ(s_fx.drops, 3);
    /* Once it ends, nothing more is asked, and the next link starts afresh. */
    fx_reconnect();
    tick_after(BLE_OTA_AUTH_TIMEOUT_MS - 1);
    CHECK_EQ(s_fx.drops, 3);
}

/* Strangers holding the device (one link at a time) cannot run out the
 * confirm window of a fresh update: it counts only while they do not. */
static void
test_auth_confirm_window_outlasts_strangers(void)
{
    keyed_setup();
    s_config.confirm_window_ms = 30000;
    fx_reboot(true);
    CHECK(hello());
    owner_update_to_restart();
    CHECK_EQ(fx_reboot(true), 1); /* a stranger got the first link after the restart */
    CHECK(s_fx.core.confirm_waiting);
    /* Ten minutes of strangers, each dropped at the timeout and back at once. */
    for (int i = 0; i < 60; i++) {
        tick_after(BLE_OTA_AUTH_TIMEOUT_MS);
        fx_reconnect();
    }
    CHECK(s_fx.core.confirm_waiting);
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_PENDING_VERIFY);
    /* The owner's link: its time counts, and it confirms within the window. */
    CHECK(hello());
    CHECK(sealed_command(plain_request(BLE_OTA_CMD_INFO), BLE_OTA_ST_OK));
    tick_after(20000);
    CHECK(s_fx.core.confirm_waiting);
    CHECK(sealed_command(plain_request(BLE_OTA_CMD_CONFIRM), BLE_OTA_ST_OK));
    CHECK_EQ(host_dev_slot_state(&s_fx.dev, 1), HOST_SLOT_VALID);
}

static void
test_auth_not_provisioned(void)
{
    fx_setup();
    s_config.auth = true;
    s_config.auth_key_set = false;
    s_config.serve_seed = false;
    fx_reboot(true);
    uint8_t req[BLE_OTA_HELLO_SIZE];
    host_session_begin(&s_session, s_key, s_fx.dev.device_id, ++s_nonce_seed, req);
    ble_ota_core_command_write(&s_fx.core, req, sizeof(req));
    CHECK(answered(BLE_OTA_CMD_HELLO, BLE_OTA_ST_NOT_PROVISIONED, ANY_LEN));
    request_t r = begin_request(s_image, s_image_len);
    command(&r);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_AUTH_REQUIRED, ANY_LEN));
    CHECK(slot_untouched());
}

static void
test_auth_seed_protocol_not_served(void)
{
    keyed_setup();
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_ERR_NOT_SERVED);
    CHECK_EQ(packet_size(244), BLE_OTA_ERR_NOT_SERVED);
    CHECK_EQ(ble_ota_status_to_att(BLE_OTA_ERR_NOT_SERVED), BLE_OTA_ATT_ERR_WRITE_NOT_PERMITTED);
    CHECK(slot_untouched());
    CHECK_EQ(s_fx.notify_count, 0);
    /* Poking at it counts against the link like any junk. */
    CHECK_EQ(ble_ota_core_data_write(&s_fx.core, s_image, 244), BLE_OTA_ERR_NOT_SERVED);
    CHECK_EQ(s_fx.drops, 1);
}

static void
test_auth_keyless_device(void)
{
    uint8_t req[BLE_OTA_HELLO_SIZE];

    fx_setup();
    fx_reboot(true);
    /* HELLO and INFO are unknown where there is no authentication... */
    host_session_begin(&s_session, s_key, s_fx.dev.device_id, ++s_nonce_seed, req);
    ble_ota_core_command_write(&s_fx.core, req, sizeof(req));
    CHECK(answered(BLE_OTA_CMD_HELLO, BLE_OTA_ST_UNKNOWN_COMMAND, ANY_LEN));
    request_t r = plain_request(BLE_OTA_CMD_INFO);
    command(&r);
    CHECK(answered(BLE_OTA_CMD_INFO, BLE_OTA_ST_UNKNOWN_COMMAND, ANY_LEN));
    /* ...a request with a MAC has the wrong length, and nothing ends the link. */
    r = plain_request(BLE_OTA_CMD_ABORT);
    r.len += BLE_OTA_AUTH_MAC_LEN;
    command(&r);
    CHECK(answered(BLE_OTA_CMD_ABORT, BLE_OTA_ST_BAD_LENGTH, ANY_LEN));
    tick_after(10 * BLE_OTA_AUTH_TIMEOUT_MS);
    CHECK_EQ(s_fx.drops, 0);
}

/* What a device boots with, by its key partition and its build (the ESP32
 * firmware's main.c and the virtual ESP32 both take it from here). */
static void
test_auth_config_from_key(void)
{
    ble_ota_config_t c;
    const ble_ota_key_status_t none[] = { BLE_OTA_KEY_EMPTY, BLE_OTA_KEY_CORRUPT, BLE_OTA_KEY_OTHER_DEVICE };

    /* A key: a session always, whatever the build. */
    for (int allow = 0; allow <= 1; allow++) {
        ble_ota_config_default(&c);
        memset(c.auth_key, 0x5A, sizeof(c.auth_key));
        ble_ota_config_key(&c, BLE_OTA_KEY_OK, allow != 0);
        CHECK(c.auth && c.auth_key_set);
        CHECK_EQ(c.auth_key[0], 0x5A);
    }
    /* No usable key: nobody (NOT_PROVISIONED), or anyone on a build that
     * opted out; no stale key bytes kept either way. */
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
        ble_ota_config_default(&c);
        memset(c.auth_key, 0x5A, sizeof(c.auth_key));
        ble_ota_config_key(&c, none[i], false);
        CHECK(c.auth && !c.auth_key_set);
        CHECK_EQ(c.auth_key[0], 0);
        ble_ota_config_key(&c, none[i], true);
        CHECK(!c.auth && !c.auth_key_set);
    }
}

void
test_auth_run_all(void)
{
    RUN(test_auth_hmac_vectors);
    RUN(test_auth_key_record);
    RUN(test_auth_config_from_key);
    RUN(test_auth_update_with_key);
    RUN(test_auth_refusals_leave_slot_untouched);
    RUN(test_auth_replay_and_relay_fail);
    RUN(test_auth_failures_are_per_link);
    RUN(test_auth_timeout_ends_idle_strangers);
    RUN(test_auth_drop_asked_again_until_link_ends);
    RUN(test_auth_confirm_window_outlasts_strangers);
    RUN(test_auth_not_provisioned);
    RUN(test_auth_seed_protocol_not_served);
    RUN(test_auth_keyless_device);
}
