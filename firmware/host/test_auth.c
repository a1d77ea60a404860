/*
 * Authenticated protocol v2 (docs/PROTOCOL.md, "Authentication"): HMAC
 * vectors, a whole authenticated update, and every way a request without
 * the key must fail: no MAC, a wrong key, a replayed or moved MAC, a
 * challenge from an earlier link, too many tries; and the seed protocol,
 * which has no authentication, refused unless the build serves it.
 */
#include <stdio.h>
#include <string.h>

#include "ble_ota_core.h"
#include "ble_ota_sha256.h"
#include "host_image.h"
#include "host_port.h"
#include "test.h"
#include "test_auth.h"
#include "test_fixture.h"

#define CHUNK 240

static const uint8_t k_key[BLE_OTA_AUTH_KEY_LEN] = {
    0x6b, 0x65, 0x79, 0x2d, 0x6f, 0x66, 0x2d, 0x74, 0x68, 0x65, 0x2d, 0x66, 0x6c, 0x65, 0x65, 0x74,
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10,
};

/* A request with room for its MAC. */
typedef struct {
    uint8_t data[BLE_OTA_BEGIN_SIZE + BLE_OTA_AUTH_MAC_LEN];
    size_t len;
} request_t;

static void
keyed_setup(void)
{
    fx_setup();
    s_config.auth = true;
    memcpy(s_config.auth_key, k_key, sizeof(k_key));
    s_config.serve_seed = false;
    fx_reboot(true);
}

static ble_ota_status_t
command(const request_t *r)
{
    return ble_ota_core_command_write(&s_fx.core, r->data, r->len);
}

static const cmd_note_t *
last_note(void)
{
    return s_fx.cmd_count == 0 ? NULL : &s_fx.cmds[(s_fx.cmd_count - 1) % MAX_CMD_NOTES];
}

/* The last notification answers opcode with status. */
static bool
answered(uint8_t opcode, uint8_t status)
{
    const cmd_note_t *n = last_note();

    if (n != NULL && n->len >= 2 && n->data[0] == (opcode | BLE_OTA_ANSWER) && n->data[1] == status) {
        return true;
    }
    printf("  last notification:");
    for (size_t i = 0; n != NULL && i < n->len; i++) {
        printf(" %02x", n->data[i]);
    }
    printf("\n");
    return false;
}

/* Asks for a challenge; false when none came. */
static bool
challenge(uint8_t out[BLE_OTA_AUTH_CHALLENGE_LEN])
{
    const uint8_t req = BLE_OTA_CMD_CHALLENGE;

    ble_ota_core_command_write(&s_fx.core, &req, 1);
    const cmd_note_t *n = last_note();
    if (!answered(BLE_OTA_CMD_CHALLENGE, BLE_OTA_ST_OK) || n->len != 2 + BLE_OTA_AUTH_CHALLENGE_LEN) {
        return false;
    }
    memcpy(out, n->data + 2, BLE_OTA_AUTH_CHALLENGE_LEN);
    return true;
}

static void
sign(request_t *r, const uint8_t *key, const uint8_t chal[BLE_OTA_AUTH_CHALLENGE_LEN])
{
    ble_ota_hmac_sha256(key, BLE_OTA_AUTH_KEY_LEN, chal, BLE_OTA_AUTH_CHALLENGE_LEN, r->data, r->len,
                        r->data + r->len);
    r->len += BLE_OTA_AUTH_MAC_LEN;
}

static request_t
begin_request(const uint8_t *img, size_t len)
{
    request_t r;
    const uint32_t size = (uint32_t)len;

    memset(&r, 0, sizeof(r));
    r.data[0] = BLE_OTA_CMD_BEGIN;
    r.data[1] = (uint8_t)size;
    r.data[2] = (uint8_t)(size >> 8);
    r.data[3] = (uint8_t)(size >> 16);
    r.data[4] = (uint8_t)(size >> 24);
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

/* CHALLENGE, then the request with its MAC under key; returns the answer's status check. */
static bool
signed_command(request_t r, const uint8_t *key, uint8_t expected)
{
    uint8_t chal[BLE_OTA_AUTH_CHALLENGE_LEN];

    if (!challenge(chal)) {
        return false;
    }
    sign(&r, key, chal);
    command(&r);
    return answered(r.data[0], expected);
}

static void
stream_all(const uint8_t *img, size_t len)
{
    static uint8_t pkt[BLE_OTA_STREAM_HEADER + CHUNK];

    for (size_t off = 0; off < len; off += CHUNK) {
        const size_t n = len - off < CHUNK ? len - off : CHUNK;
        pkt[0] = (uint8_t)off;
        pkt[1] = (uint8_t)(off >> 8);
        pkt[2] = (uint8_t)(off >> 16);
        pkt[3] = (uint8_t)(off >> 24);
        memcpy(pkt + BLE_OTA_STREAM_HEADER, img + off, n);
        ble_ota_core_stream_write(&s_fx.core, pkt, BLE_OTA_STREAM_HEADER + n);
    }
}

static bool
slot_untouched(void)
{
    return host_dev_slot_state(&s_fx.dev, 1) == HOST_SLOT_EMPTY && s_fx.core.v2.state == BLE_OTA_V2_IDLE;
}

/* --- tests ------------------------------------------------------------------ */

/* RFC 4231 test cases 1 and 2. */
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
test_auth_key_from_hex(void)
{
    uint8_t key[BLE_OTA_AUTH_KEY_LEN];
    char hex[2 * BLE_OTA_AUTH_KEY_LEN + 2];

    for (size_t i = 0; i < BLE_OTA_AUTH_KEY_LEN; i++) {
        snprintf(hex + 2 * i, 3, "%02X", k_key[i]);
    }
    CHECK(ble_ota_auth_key_from_hex(hex, key));
    CHECK(memcmp(key, k_key, sizeof(key)) == 0);
    hex[5] = 'g';
    CHECK(!ble_ota_auth_key_from_hex(hex, key));
    CHECK(!ble_ota_auth_key_from_hex("", key));
    CHECK(!ble_ota_auth_key_from_hex("00", key));
    CHECK(!ble_ota_auth_key_from_hex(NULL, key));
}

static void
test_auth_update_with_key(void)
{
    uint8_t inf[BLE_OTA_INFO_SIZE];

    keyed_setup();
    CHECK_EQ(ble_ota_core_info_read(&s_fx.core, inf, sizeof(inf)), BLE_OTA_INFO_SIZE);
    CHECK_EQ(inf[2] | (inf[3] << 8),
             BLE_OTA_FEATURE_RESUME | BLE_OTA_FEATURE_CLIENT_CONFIRM | BLE_OTA_FEATURE_AUTH | BLE_OTA_FEATURE_DEFLATE);
    CHECK(signed_command(begin_request(s_image, s_image_len), k_key, BLE_OTA_ST_OK));
    stream_all(s_image, s_image_len);
    CHECK(signed_command(plain_request(BLE_OTA_CMD_END), k_key, BLE_OTA_ST_OK));
    CHECK(signed_command(plain_request(BLE_OTA_CMD_RESTART), k_key, BLE_OTA_ST_OK));
    ble_ota_core_disconnected(&s_fx.core);
    CHECK_EQ(fx_reboot(true), 1);
}

static void
test_auth_refusals_leave_slot_untouched(void)
{
    static const uint8_t k_wrong[BLE_OTA_AUTH_KEY_LEN] = { 1 };
    uint8_t chal[BLE_OTA_AUTH_CHALLENGE_LEN];

    keyed_setup();
    /* No MAC at all. */
    request_t r = begin_request(s_image, s_image_len);
    command(&r);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_AUTH_REQUIRED));
    r = plain_request(BLE_OTA_CMD_ABORT);
    command(&r);
    CHECK(answered(BLE_OTA_CMD_ABORT, BLE_OTA_ST_AUTH_REQUIRED));
    /* A MAC without a challenge, and a MAC under another key. */
    r = begin_request(s_image, s_image_len);
    memset(chal, 0, sizeof(chal));
    sign(&r, k_key, chal);
    command(&r);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_AUTH_FAILED));
    CHECK(signed_command(begin_request(s_image, s_image_len), k_wrong, BLE_OTA_ST_AUTH_FAILED));
    /* A MAC cut short. */
    CHECK(challenge(chal));
    r = begin_request(s_image, s_image_len);
    sign(&r, k_key, chal);
    r.len--;
    command(&r);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_BAD_LENGTH));
    CHECK(slot_untouched());
    CHECK_EQ(fx_reboot(true), 0);
}

static void
test_auth_replay_and_moved_mac_fail(void)
{
    uint8_t chal[BLE_OTA_AUTH_CHALLENGE_LEN];

    keyed_setup();
    CHECK(challenge(chal));
    request_t recorded = begin_request(s_image, s_image_len);
    sign(&recorded, k_key, chal);
    CHECK_EQ(command(&recorded), BLE_OTA_OK);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_OK));
    CHECK(signed_command(plain_request(BLE_OTA_CMD_ABORT), k_key, BLE_OTA_ST_OK));

    /* The same bytes again: the challenge they answer is used up... */
    command(&recorded);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_AUTH_FAILED));
    /* ...and a fresh challenge is not the one they answer. */
    CHECK(challenge(chal));
    command(&recorded);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_AUTH_FAILED));

    /* A valid MAC moved to other BEGIN fields (size, hash, flags). */
    CHECK(challenge(chal));
    request_t r = begin_request(s_image, s_image_len);
    sign(&r, k_key, chal);
    r.data[1] ^= 1;
    command(&r);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_AUTH_FAILED));
    CHECK(challenge(chal));
    r = begin_request(s_image, s_image_len);
    sign(&r, k_key, chal);
    r.data[39] = BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM;
    command(&r);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_AUTH_FAILED));

    /* A challenge from a link that dropped. */
    s_fx.clock_ms += 60000u; /* past the lock the failures above set */
    CHECK(challenge(chal));
    ble_ota_core_disconnected(&s_fx.core);
    r = begin_request(s_image, s_image_len);
    sign(&r, k_key, chal);
    command(&r);
    CHECK(answered(BLE_OTA_CMD_BEGIN, BLE_OTA_ST_AUTH_FAILED));
    CHECK(slot_untouched());
}

static void
test_auth_rate_limited(void)
{
    static const uint8_t k_wrong[BLE_OTA_AUTH_KEY_LEN] = { 2 };
    const uint8_t req = BLE_OTA_CMD_CHALLENGE;

    keyed_setup();
    for (int i = 0; i < 3; i++) {
        CHECK(signed_command(plain_request(BLE_OTA_CMD_ABORT), k_wrong, BLE_OTA_ST_AUTH_FAILED));
    }
    /* The fourth failure locks for 1 s, the next for 2 s, ... */
    uint32_t expected = 1000;
    for (int i = 0; i < 8; i++) {
        CHECK(signed_command(plain_request(BLE_OTA_CMD_ABORT), k_wrong, BLE_OTA_ST_AUTH_FAILED));
        ble_ota_core_command_write(&s_fx.core, &req, 1);
        const cmd_note_t *n = last_note();
        CHECK(answered(BLE_OTA_CMD_CHALLENGE, BLE_OTA_ST_AUTH_LOCKED));
        CHECK_EQ(n->len, 6);
        const uint32_t retry = (uint32_t)n->data[2] | ((uint32_t)n->data[3] << 8) | ((uint32_t)n->data[4] << 16) |
                               ((uint32_t)n->data[5] << 24);
        CHECK_EQ(retry, expected);
        /* Even the right key waits. */
        request_t r = plain_request(BLE_OTA_CMD_ABORT);
        r.len += BLE_OTA_AUTH_MAC_LEN;
        command(&r);
        CHECK(answered(BLE_OTA_CMD_ABORT, BLE_OTA_ST_AUTH_LOCKED));
        s_fx.clock_ms += retry - 1;
        ble_ota_core_command_write(&s_fx.core, &req, 1);
        CHECK(answered(BLE_OTA_CMD_CHALLENGE, BLE_OTA_ST_AUTH_LOCKED));
        s_fx.clock_ms += 1;
        expected = expected * 2 > BLE_OTA_AUTH_LOCK_MAX_MS ? BLE_OTA_AUTH_LOCK_MAX_MS : expected * 2;
    }
    CHECK_EQ(expected, BLE_OTA_AUTH_LOCK_MAX_MS);
    /* A success clears the count: three free tries again. */
    CHECK(signed_command(plain_request(BLE_OTA_CMD_ABORT), k_key, BLE_OTA_ST_OK));
    for (int i = 0; i < 3; i++) {
        CHECK(signed_command(plain_request(BLE_OTA_CMD_ABORT), k_wrong, BLE_OTA_ST_AUTH_FAILED));
    }
    uint8_t chal[BLE_OTA_AUTH_CHALLENGE_LEN];
    CHECK(challenge(chal));
}

static void
test_auth_seed_protocol_not_served(void)
{
    keyed_setup();
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_ERR_NOT_SERVED);
    CHECK_EQ(packet_size(244), BLE_OTA_ERR_NOT_SERVED);
    CHECK_EQ(ble_ota_status_to_att(BLE_OTA_ERR_NOT_SERVED), BLE_OTA_ATT_ERR_WRITE_NOT_PERMITTED);
    CHECK_EQ(ble_ota_core_data_write(&s_fx.core, s_image, 244), BLE_OTA_ERR_NOT_SERVED);
    CHECK(slot_untouched());
    CHECK_EQ(s_fx.notify_count, 0);
}

static void
test_auth_keyless_device(void)
{
    const uint8_t req = BLE_OTA_CMD_CHALLENGE;

    fx_setup();
    fx_reboot(true);
    /* CHALLENGE is unknown, as on devices from before authentication... */
    ble_ota_core_command_write(&s_fx.core, &req, 1);
    CHECK(answered(BLE_OTA_CMD_CHALLENGE, BLE_OTA_ST_UNKNOWN_COMMAND));
    /* ...and a request with a MAC has the wrong length. */
    request_t r = plain_request(BLE_OTA_CMD_ABORT);
    r.len += BLE_OTA_AUTH_MAC_LEN;
    command(&r);
    CHECK(answered(BLE_OTA_CMD_ABORT, BLE_OTA_ST_BAD_LENGTH));
}

void
test_auth_run_all(void)
{
    RUN(test_auth_hmac_vectors);
    RUN(test_auth_key_from_hex);
    RUN(test_auth_update_with_key);
    RUN(test_auth_refusals_leave_slot_untouched);
    RUN(test_auth_replay_and_moved_mac_fail);
    RUN(test_auth_rate_limited);
    RUN(test_auth_seed_protocol_not_served);
    RUN(test_auth_keyless_device);
}
