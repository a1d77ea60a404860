/*
 * Authenticated v2 commands (docs/PROTOCOL.md, "Authentication").
 *
 * HELLO swaps a client nonce for a device nonce; both sides then derive a
 * session key from the device key, the device id and both nonces. Every
 * later request carries HMAC-SHA256(session key, 'C' || seq || request) and
 * every answer to it HMAC-SHA256(session key, 'D' || seq || answer), seq
 * counting the session's requests: the client knows its answers come from
 * the device that holds the key (and no other device: the id is in the
 * key), and a recorded request or answer never fits another place.
 *
 * Everything is per link. Failures lock the link for a while, the third
 * ends it, and so does a link that has not authenticated within the
 * timeout: whatever a stranger does ends with the stranger's link, and the
 * owner's next link starts clean.
 *
 * The key record (ble_ota_core.h) is parsed here too: the firmware and the
 * virtual ESP32 read it from their key partition at boot.
 */
#include <string.h>

#include "ble_ota_core.h"
#include "ble_ota_internal.h"
#include "ble_ota_le.h"

bool
ble_ota_equal_ct(const uint8_t *a, const uint8_t *b, size_t len)
{
    /* Every byte is looked at whatever differs: the time says nothing about
     * where the first wrong byte is. */
    volatile uint8_t diff = 0;

    for (size_t i = 0; i < len; i++) {
        diff |= (uint8_t)(a[i] ^ b[i]);
    }
    return diff == 0;
}

/* --- the key record -------------------------------------------------------- */

/* Bit by bit: it runs once per boot, over the key record's 48 bytes and a
 * signature block's 1196. */
uint32_t
ble_ota_crc32(const uint8_t *p, size_t len)
{
    uint32_t crc = 0xFFFFFFFFu;

    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc & 1u) ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
        }
    }
    return ~crc;
}

ble_ota_key_status_t
ble_ota_key_record_parse(const uint8_t *record, size_t len, const uint8_t device_id[BLE_OTA_DEVICE_ID_LEN],
                         uint8_t key[BLE_OTA_AUTH_KEY_LEN])
{
    static const uint8_t erased[8] = { 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF };

    if (record == NULL || len < BLE_OTA_KEY_RECORD_LEN) {
        return BLE_OTA_KEY_CORRUPT;
    }
    if (memcmp(record, erased, sizeof(erased)) == 0) {
        return BLE_OTA_KEY_EMPTY;
    }
    if (memcmp(record, BLE_OTA_KEY_MAGIC, 8) != 0 || ble_ota_crc32(record, 48) != ble_ota_get_le32(record + 48)) {
        return BLE_OTA_KEY_CORRUPT;
    }
    /* A record copied from another device would make this one answer with
     * a key its owner derives for that other device. */
    if (memcmp(record + 8, device_id, BLE_OTA_DEVICE_ID_LEN) != 0) {
        return BLE_OTA_KEY_OTHER_DEVICE;
    }
    memcpy(key, record + 16, BLE_OTA_AUTH_KEY_LEN);
    return BLE_OTA_KEY_OK;
}

/* --- the link ------------------------------------------------------------------ */

/* Milliseconds the link's lock still lasts, 0 when there is none. */
static uint32_t
auth_lock_left(ble_ota_core_t *core)
{
    ble_ota_auth_t *a = &core->auth;

    if (a->lock_ms == 0) {
        return 0;
    }
    const uint32_t elapsed = core->port->now_ms(core->port->ctx) - a->locked_at_ms;
    if (elapsed >= a->lock_ms) {
        a->lock_ms = 0; /* failures stay counted: the next one locks for longer */
        return 0;
    }
    return a->lock_ms - elapsed;
}

void
ble_ota_auth_drop(ble_ota_core_t *core, const char *why)
{
    ble_ota_auth_t *a = &core->auth;

    if (!a->connected || a->dropping) {
        return;
    }
    a->dropping = true;
    a->dropped_at_ms = core->port->now_ms(core->port->ctx);
    a->drop_asked_ms = a->dropped_at_ms;
    ble_ota_log(core->port, BLE_OTA_LOG_WARN, "ending the link: %s", why);
    core->port->disconnect(core->port->ctx);
}

void
ble_ota_auth_failed(ble_ota_core_t *core, const char *why)
{
    ble_ota_auth_t *a = &core->auth;

    if (!core->config.auth) {
        return;
    }
    if (a->failures < UINT8_MAX) {
        a->failures++;
    }
    ble_ota_log(core->port, BLE_OTA_LOG_WARN, "authentication failed on this link (%s), %u of %u", why,
                (unsigned)a->failures, (unsigned)BLE_OTA_AUTH_FAILURES_MAX);
    if (a->failures >= BLE_OTA_AUTH_FAILURES_MAX) {
        ble_ota_auth_drop(core, "too many authentication failures");
        return;
    }
    a->lock_ms = BLE_OTA_AUTH_LOCK_MIN_MS << (a->failures - 1u);
    a->locked_at_ms = core->port->now_ms(core->port->ctx);
}

size_t
ble_ota_auth_hello(ble_ota_core_t *core, const uint8_t *request, size_t len, uint8_t *answer, size_t cap)
{
    ble_ota_auth_t *a = &core->auth;
    ble_ota_device_info_t info;
    uint8_t input[sizeof(BLE_OTA_SESSION_LABEL) - 1 + BLE_OTA_DEVICE_ID_LEN + 2 * BLE_OTA_AUTH_NONCE_LEN];
    uint8_t device_nonce[BLE_OTA_AUTH_NONCE_LEN];

    if (cap < 2 + BLE_OTA_AUTH_NONCE_LEN) {
        return 0;
    }
    answer[0] = BLE_OTA_CMD_HELLO | BLE_OTA_ANSWER;
    if (len != BLE_OTA_HELLO_SIZE) {
        ble_ota_auth_failed(core, "HELLO of a wrong length");
        answer[1] = BLE_OTA_ST_BAD_LENGTH;
        return 2;
    }
    if (!core->config.auth_key_set) {
        ble_ota_log(core->port, BLE_OTA_LOG_ERROR, "HELLO: no device key provisioned: updates are off");
        answer[1] = BLE_OTA_ST_NOT_PROVISIONED;
        return 2;
    }
    const uint32_t left = auth_lock_left(core);
    if (left != 0) {
        answer[1] = BLE_OTA_ST_AUTH_LOCKED;
        ble_ota_put_le32(answer + 2, left);
        return 6;
    }
    /* A new session replaces the link's earlier one, if any. */
    memset(&info, 0, sizeof(info));
    core->port->device_info(core->port->ctx, &info);
    core->port->random(core->port->ctx, device_nonce, sizeof(device_nonce));
    size_t n = 0;
    memcpy(input + n, BLE_OTA_SESSION_LABEL, sizeof(BLE_OTA_SESSION_LABEL) - 1);
    n += sizeof(BLE_OTA_SESSION_LABEL) - 1;
    memcpy(input + n, info.device_id, BLE_OTA_DEVICE_ID_LEN);
    n += BLE_OTA_DEVICE_ID_LEN;
    memcpy(input + n, request + 1, BLE_OTA_AUTH_NONCE_LEN);
    n += BLE_OTA_AUTH_NONCE_LEN;
    memcpy(input + n, device_nonce, BLE_OTA_AUTH_NONCE_LEN);
    n += BLE_OTA_AUTH_NONCE_LEN;
    ble_ota_hmac_sha256(core->config.auth_key, sizeof(core->config.auth_key), input, n, input + n, 0, a->session_key);
    a->session = true;
    a->seq = 0;
    answer[1] = BLE_OTA_ST_OK;
    memcpy(answer + 2, device_nonce, sizeof(device_nonce));
    return 2 + BLE_OTA_AUTH_NONCE_LEN;
}

/* HMAC-SHA256(session key, direction || seq u32 || bytes). */
static void
session_mac(const ble_ota_auth_t *a, uint8_t direction, uint32_t seq, const uint8_t *bytes, size_t len,
            uint8_t mac[BLE_OTA_AUTH_MAC_LEN])
{
    uint8_t prefix[5];

    prefix[0] = direction;
    ble_ota_put_le32(prefix + 1, seq);
    ble_ota_hmac_sha256(a->session_key, sizeof(a->session_key), prefix, sizeof(prefix), bytes, len, mac);
}

uint8_t
ble_ota_auth_check(ble_ota_core_t *core, const uint8_t *request, size_t len, size_t base_len)
{
    ble_ota_auth_t *a = &core->auth;
    uint8_t mac[BLE_OTA_AUTH_MAC_LEN];

    a->answer_signed = false;
    if (!core->config.auth) {
        return len == base_len ? BLE_OTA_ST_OK : BLE_OTA_ST_BAD_LENGTH;
    }
    if (len == base_len) {
        ble_ota_auth_failed(core, "no MAC");
        return BLE_OTA_ST_AUTH_REQUIRED;
    }
    if (len != base_len + BLE_OTA_AUTH_MAC_LEN) {
        ble_ota_auth_failed(core, "request of a wrong length");
        return BLE_OTA_ST_BAD_LENGTH;
    }
    if (auth_lock_left(core) != 0) {
        return BLE_OTA_ST_AUTH_LOCKED;
    }
    if (!a->session) {
        ble_ota_auth_failed(core, "no HELLO on this link");
        return BLE_OTA_ST_AUTH_FAILED;
    }
    session_mac(a, BLE_OTA_MAC_REQUEST, a->seq, request, base_len, mac);
    if (!ble_ota_equal_ct(mac, request + base_len, sizeof(mac))) {
        ble_ota_auth_failed(core, "wrong MAC");
        return BLE_OTA_ST_AUTH_FAILED;
    }
    /* Each sequence number serves one request: a recorded one never
     * passes again, in this session or (another key) in any other. */
    a->answer_signed = true;
    a->answer_seq = a->seq++;
    if (!a->authenticated) {
        ble_ota_confirm_account(core); /* the time so far was a stranger's, or the owner's: now it is the owner's */
        a->authenticated = true;
    }
    return BLE_OTA_ST_OK;
}

size_t
ble_ota_auth_seal(ble_ota_core_t *core, uint8_t *answer, size_t len, size_t cap)
{
    ble_ota_auth_t *a = &core->auth;

    if (!a->answer_signed || cap - len < BLE_OTA_AUTH_MAC_LEN) {
        return len;
    }
    session_mac(a, BLE_OTA_MAC_ANSWER, a->answer_seq, answer, len, answer + len);
    a->answer_signed = false; /* one answer per request */
    return len + BLE_OTA_AUTH_MAC_LEN;
}

bool
ble_ota_auth_held_by_stranger(const ble_ota_core_t *core)
{
    return core->config.auth && core->auth.connected && !core->auth.authenticated;
}

void
ble_ota_auth_connected(ble_ota_core_t *core)
{
    ble_ota_auth_t *a = &core->auth;

    memset(a, 0, sizeof(*a));
    a->connected = true;
    a->connected_at_ms = core->port->now_ms(core->port->ctx);
}

void
ble_ota_auth_disconnected(ble_ota_core_t *core)
{
    /* The session key too: nothing of this link outlives it. */
    memset(&core->auth, 0, sizeof(core->auth));
}

void
ble_ota_auth_tick(ble_ota_core_t *core, uint32_t now)
{
    ble_ota_auth_t *a = &core->auth;
    uint32_t timeout = core->config.auth_timeout_ms;

    /* A link asked to end that is still up: the request was lost or the
     * stack refused it (no buffer for the LL_TERMINATE_IND). Ask again,
     * or the link would hold the device, refused everything, for good. */
    if (a->connected && a->dropping) {
        if (now - a->drop_asked_ms >= BLE_OTA_AUTH_DROP_RETRY_MS) {
            if (a->drop_asked_ms == a->dropped_at_ms) { /* said once per link, not every second */
                ble_ota_log(core->port, BLE_OTA_LOG_WARN, "the link has not ended yet: asking again");
            }
            a->drop_asked_ms = now;
            core->port->disconnect(core->port->ctx);
        }
        return;
    }

    if (timeout == 0) {
        timeout = BLE_OTA_AUTH_TIMEOUT_MS;
    }
    if (ble_ota_auth_held_by_stranger(core) && now - a->connected_at_ms >= timeout) {
        ble_ota_auth_drop(core, "the link did not authenticate in time");
    }
}
